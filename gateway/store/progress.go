package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
	bolt "go.etcd.io/bbolt"
)

// State is where a bundle stands with one destination.
type State uint8

// The progress states, and the transitions between them:
//
//	Enqueue       (no record)                  → pending
//	MarkInFlight  pending                      → in_flight, one more attempt
//	MarkRetry     pending, in_flight, failed   → pending, due at the next attempt
//	MarkFailed    pending, in_flight, failed   → failed
//	MarkDone      any state, or no record      → done
//
// Anything else is ErrState: done is final. MarkDone is allowed from
// every state because a verified delivery notice may arrive at any time.
// A restart turns in_flight back into pending.
const (
	Pending State = 1 + iota
	InFlight
	Done
	Failed
)

func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case InFlight:
		return "in_flight"
	case Done:
		return "done"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("state_%d", uint8(s))
}

// StateCounts counts progress records by state, or (in
// Stats.DestinationBytes and Stats.ProgressBytes) the bytes of their
// bundles.
type StateCounts struct {
	Pending, InFlight, Done, Failed int64
}

func (c *StateCounts) plus(o StateCounts) {
	c.Pending += o.Pending
	c.InFlight += o.InFlight
	c.Done += o.Done
	c.Failed += o.Failed
}

func (c *StateCounts) add(s State, n int64) {
	switch s {
	case Pending:
		c.Pending += n
	case InFlight:
		c.InFlight += n
	case Done:
		c.Done += n
	case Failed:
		c.Failed += n
	}
}

// Progress is where a bundle stands with one destination. Destinations
// are plain strings: "peer:<node-id>", "adapter:<name>",
// "local:<endpoint>".
type Progress struct {
	Dest        string
	State       State
	Attempts    int       // how many times it went in flight
	NextAttempt time.Time // when a pending bundle is due; zero: now
	LastError   string
	Updated     time.Time
}

func (p *progressRecord) public(dest string) Progress {
	return Progress{Dest: dest, State: p.state, Attempts: int(p.attempts), NextAttempt: p.next, LastError: p.lastErr, Updated: p.updated}
}

// Queued is a bundle with its progress for one destination.
type Queued struct {
	Meta
	Progress Progress
}

const maxDest = 1024

func checkDest(op, dest string) error {
	if dest == "" || len(dest) > maxDest || strings.IndexByte(dest, 0) >= 0 {
		return newErr(op, ErrInvalid, "", fmt.Sprintf("destination %q must be 1 to %d bytes without NUL", dest, maxDest), nil)
	}
	return nil
}

// Enqueue records that bundle id is to go to each of dests: a pending
// progress record for each, due now. A destination that already has a
// record keeps it as it is.
func (s *Store) Enqueue(ctx context.Context, id bundle.ID, dests ...string) error {
	const op = "enqueue"
	for _, d := range dests {
		if err := checkDest(op, d); err != nil {
			return err
		}
	}
	return s.progressOp(ctx, op, id, func(tx *bolt.Tx, seq uint64, cost int64, d *delta) error {
		now := s.now()
		for _, dest := range dests {
			pk := prefixKey(dest, seq)
			if tx.Bucket(bktProgress).Get(pk) != nil {
				continue
			}
			p := &progressRecord{state: Pending, updated: now}
			if err := putProgress(tx, dest, seq, p); err != nil {
				return err
			}
			d.move(dest, 0, Pending, cost)
		}
		return nil
	})
}

// MarkInFlight records that bundle id is being sent to dest: pending →
// in_flight, one more attempt. It returns the updated progress.
func (s *Store) MarkInFlight(ctx context.Context, id bundle.ID, dest string) (Progress, error) {
	return s.transition(ctx, "mark in flight", id, dest, false, func(p *progressRecord) error {
		if p.state != Pending {
			return fmt.Errorf("%s → in_flight", p.state)
		}
		p.state = InFlight
		p.attempts++
		return nil
	})
}

// MarkDone records that dest has bundle id. Allowed from every state;
// creates the record if there is none.
func (s *Store) MarkDone(ctx context.Context, id bundle.ID, dest string) (Progress, error) {
	return s.transition(ctx, "mark done", id, dest, true, func(p *progressRecord) error {
		p.state = Done
		p.next = time.Time{}
		return nil
	})
}

// MarkRetry records a transient failure (or a deferral): the bundle goes
// back to pending for dest, due at next. Allowed from pending, in_flight
// and failed.
func (s *Store) MarkRetry(ctx context.Context, id bundle.ID, dest string, next time.Time, cause error) (Progress, error) {
	return s.transition(ctx, "mark retry", id, dest, false, func(p *progressRecord) error {
		if p.state == Done {
			return fmt.Errorf("%s → pending", p.state)
		}
		p.state = Pending
		p.next = next
		if cause != nil {
			p.lastErr = cause.Error()
		}
		return nil
	})
}

// MarkFailed records a fatal failure: no more attempts for dest. Allowed
// from pending, in_flight and failed.
func (s *Store) MarkFailed(ctx context.Context, id bundle.ID, dest string, cause error) (Progress, error) {
	return s.transition(ctx, "mark failed", id, dest, false, func(p *progressRecord) error {
		if p.state == Done {
			return fmt.Errorf("%s → failed", p.state)
		}
		p.state = Failed
		p.next = time.Time{}
		if cause != nil {
			p.lastErr = cause.Error()
		}
		return nil
	})
}

// transition applies fn to the progress record of (id, dest). fn returns
// an error to refuse the transition, which then becomes ErrState.
func (s *Store) transition(ctx context.Context, op string, id bundle.ID, dest string, create bool, fn func(*progressRecord) error) (Progress, error) {
	if err := checkDest(op, dest); err != nil {
		return Progress{}, err
	}
	var out Progress
	err := s.progressOp(ctx, op, id, func(tx *bolt.Tx, seq uint64, cost int64, d *delta) error {
		p := &progressRecord{}
		if v := tx.Bucket(bktProgress).Get(prefixKey(dest, seq)); v != nil {
			var err error
			if p, err = decodeProgress(v); err != nil {
				return soft(newErr(op, ErrCorrupt, id.String(), "progress record does not decode", err))
			}
		} else if !create {
			return soft(newErr(op, ErrNotFound, id.String(), "no progress for destination "+dest, nil))
		}
		from := p.state
		if err := fn(p); err != nil {
			return soft(newErr(op, ErrState, id.String(), dest+": "+err.Error(), nil))
		}
		p.updated = s.now()
		if err := putProgress(tx, dest, seq, p); err != nil {
			return err
		}
		d.move(dest, from, p.state, cost)
		out = p.public(dest)
		return nil
	})
	return out, err
}

func putProgress(tx *bolt.Tx, dest string, seq uint64, p *progressRecord) error {
	if err := tx.Bucket(bktProgress).Put(prefixKey(dest, seq), encodeProgress(p)); err != nil {
		return err
	}
	return tx.Bucket(bktProgSeq).Put(append(seqKey(seq), dest...), nil)
}

// progressOp runs fn in a group commit on the complete bundle id, with its
// sequence number and its cost (for the bytes by state).
func (s *Store) progressOp(ctx context.Context, op string, id bundle.ID, fn func(tx *bolt.Tx, seq uint64, cost int64, d *delta) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	idStr := id.String()
	k := keyOf(idStr)
	var d delta
	return s.update(func(tx *bolt.Tx) error {
		d = delta{}
		e, r, ok := lookupTx(tx, k)
		if !ok || e.kind != kindBundle {
			return soft(newErr(op, ErrNotFound, idStr, "", nil))
		}
		return fn(tx, e.seq, r.cost(), &d)
	}, func() { s.apply(&d) })
}

// ProgressOf returns the progress records of bundle id, one per
// destination, ordered by destination.
func (s *Store) ProgressOf(ctx context.Context, id bundle.ID) ([]Progress, error) {
	const op = "progress"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	idStr := id.String()
	var out []Progress
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		e, _, ok := lookupTx(tx, keyOf(idStr))
		if !ok || e.kind != kindBundle {
			return nil
		}
		found = true
		sk := seqKey(e.seq)
		pb := tx.Bucket(bktProgress)
		c := tx.Bucket(bktProgSeq).Cursor()
		for k, _ := c.Seek(sk); k != nil && bytes.HasPrefix(k, sk); k, _ = c.Next() {
			dest := string(k[8:])
			if p, err := decodeProgress(pb.Get(prefixKey(dest, e.seq))); err == nil {
				out = append(out, p.public(dest))
			}
		}
		return nil
	})
	if err != nil {
		return nil, ioErr(op, idStr, err)
	}
	if !found {
		return nil, newErr(op, ErrNotFound, idStr, "", nil)
	}
	return out, nil
}

// Due lists the bundles due for dest at now: pending, with a next attempt
// at or before now, in order of arrival, at most limit of them
// (DefaultLimit when limit ≤ 0).
func (s *Store) Due(ctx context.Context, dest string, now time.Time, limit int) ([]Queued, error) {
	return s.scanDest(ctx, "due", dest, 0, limit, func(p *progressRecord) bool {
		return p.state == Pending && !p.next.After(now)
	})
}

// NotDone lists the bundles not yet done for dest (pending, in flight or
// failed), in order of arrival, starting after the bundle whose Arrival
// is after (0 for the start), at most limit of them.
func (s *Store) NotDone(ctx context.Context, dest string, after uint64, limit int) ([]Queued, error) {
	return s.scanDest(ctx, "not done", dest, after, limit, func(p *progressRecord) bool {
		return p.state != Done
	})
}

func (s *Store) scanDest(ctx context.Context, op, dest string, after uint64, limit int, want func(*progressRecord) bool) ([]Queued, error) {
	if err := checkDest(op, dest); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(op); err != nil {
		return nil, err
	}
	defer s.leave()
	limit = clampLimit(limit)
	prefix := prefixOf(dest)
	var out []Queued
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktProgress).Cursor()
		for k, v := c.Seek(prefixKey(dest, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
			seq, ok := seqFromPrefixKey(k)
			if !ok || len(k) != len(prefix)+8 {
				continue
			}
			p, err := decodeProgress(v)
			if err != nil || !want(p) {
				continue
			}
			r, ok := recordAt(tx, seq)
			if !ok || r.kind != kindBundle {
				continue
			}
			m, err := metaOf(seq, r)
			if err != nil {
				continue
			}
			out = append(out, Queued{Meta: m, Progress: p.public(dest)})
		}
		return nil
	})
	if err != nil {
		return nil, ioErr(op, "", err)
	}
	return out, nil
}

// rescheduleBatch bounds the records Reschedule changes in one commit, so
// that a long queue does not hold the index's write lock (and every other
// writer) for one huge transaction. A variable so that a test can make
// batches small.
var rescheduleBatch = 4096

// Reschedule makes every pending bundle for dest that is due after at due
// at at instead, and returns how many it changed. Attempts, last errors and
// the other states are left alone. It is for a destination that was
// unreachable and is back: the backoff its bundles earned while it was down
// (or just before anyone noticed) is no longer owed, and its queue should
// flush at once rather than wait it out.
func (s *Store) Reschedule(ctx context.Context, dest string, at time.Time) (int, error) {
	const op = "reschedule"
	if err := checkDest(op, dest); err != nil {
		return 0, err
	}
	prefix := prefixOf(dest)
	total := 0
	for after := uint64(0); ; {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		if err := s.enter(op); err != nil {
			return total, err
		}
		var (
			changed int
			more    bool
			last    uint64
		)
		err := s.update(func(tx *bolt.Tx) error {
			// fn may run more than once: start from the same place each time.
			changed, more, last = 0, false, after
			b := tx.Bucket(bktProgress)
			type change struct {
				key []byte
				p   *progressRecord
			}
			var todo []change
			c := b.Cursor()
			for k, v := c.Seek(prefixKey(dest, after+1)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				seq, ok := seqFromPrefixKey(k)
				if !ok || len(k) != len(prefix)+8 {
					continue
				}
				if len(todo) == rescheduleBatch {
					more = true
					break
				}
				last = seq
				p, err := decodeProgress(v)
				if err != nil || p.state != Pending || !p.next.After(at) {
					continue
				}
				p.next = at
				p.updated = s.now()
				// Put after the scan: changing a bucket under its cursor is
				// not safe in bbolt.
				todo = append(todo, change{key: bytes.Clone(k), p: p})
			}
			for _, ch := range todo {
				if err := b.Put(ch.key, encodeProgress(ch.p)); err != nil {
					return err
				}
			}
			changed = len(todo)
			return nil
		}, func() {})
		s.leave()
		if err != nil {
			return total, ioErr(op, "", err)
		}
		total += changed
		if !more {
			return total, nil
		}
		after = last
	}
}
