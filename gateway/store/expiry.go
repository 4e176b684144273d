package store

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/mulegate/mulegate/bundle"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Deleted is a bundle or partial reception that the store deleted.
type Deleted struct {
	Meta
	Partial  bool   // it was a partial reception
	Received uint64 // payload bytes it held
	Reason   bundle.StatusReason
}

// Delete removes bundle id (or the partial reception of id): its payload,
// its index entries and its progress records. A tombstone remembers the
// ID until the bundle's expiry, so that a copy brought back later is
// refused as a duplicate. reason is logged. Deleting an ID that is only a
// tombstone already succeeds; an ID the store never saw is ErrNotFound,
// unless it is being received: then the tombstone makes that reception's
// Commit fail with ErrDuplicate.
func (s *Store) Delete(ctx context.Context, id bundle.ID, reason bundle.StatusReason) error {
	const op = "delete"
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	idStr := id.String()
	k := keyOf(idStr)
	s.mu.Lock()
	recvExp, receiving := s.receiving[k]
	s.mu.Unlock()
	var (
		d      delta
		file   uint64
		hasSeq bool
	)
	err := s.update(func(tx *bolt.Tx) error {
		d, hasSeq = delta{}, false
		now := s.now()
		e, r, ok := lookupTx(tx, k)
		switch {
		case ok && e.kind == kindTomb:
			return nil
		case ok:
			if !r.inline {
				file, hasSeq = e.seq, true
			}
			return removeRecord(tx, e.seq, r, r.expires.After(now), &d)
		case receiving && recvExp.After(now):
			return putTombstone(tx, k, s.seq.Add(1), recvExp, &d)
		}
		return soft(newErr(op, ErrNotFound, idStr, "", nil))
	}, func() { s.apply(&d) })
	if err != nil {
		return err
	}
	if hasSeq {
		os.Remove(s.dataPath(file))
	}
	s.log.Debug("bundle deleted", zap.String("id", idStr), zap.Stringer("reason", reason))
	return nil
}

// Tombstone records that id must be refused as a duplicate until until,
// whether or not the store has seen it: for a delivery notice about a
// bundle this node does not (yet) carry. If the store holds id, it is
// deleted as by Delete. An existing tombstone is extended, never
// shortened.
func (s *Store) Tombstone(ctx context.Context, id bundle.ID, until time.Time) error {
	const op = "tombstone"
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.leave()
	idStr := id.String()
	k := keyOf(idStr)
	var (
		d      delta
		file   uint64
		hasSeq bool
	)
	err := s.update(func(tx *bolt.Tx) error {
		d, hasSeq = delta{}, false
		now := s.now()
		e, r, ok := lookupTx(tx, k)
		switch {
		case ok && e.kind == kindTomb:
			if !until.After(e.exp) {
				return nil
			}
			if err := tx.Bucket(bktExpiry).Delete(expiryKey(e.exp, e.seq)); err != nil {
				return err
			}
			d.u.tombstones--
			return putTombstone(tx, k, e.seq, until, &d)
		case ok:
			if !r.inline {
				file, hasSeq = e.seq, true
			}
			return removeRecord(tx, e.seq, r, r.expires.After(now), &d)
		case until.After(now):
			return putTombstone(tx, k, s.seq.Add(1), until, &d)
		}
		return nil
	}, func() { s.apply(&d) })
	if err != nil {
		return err
	}
	if hasSeq {
		os.Remove(s.dataPath(file))
	}
	return nil
}

func putTombstone(tx *bolt.Tx, k idKey, seq uint64, until time.Time, d *delta) error {
	if err := tx.Bucket(bktIDs).Put(k[:], idEntry{kind: kindTomb, seq: seq, exp: until}.encode()); err != nil {
		return err
	}
	if err := tx.Bucket(bktExpiry).Put(expiryKey(until, seq), expiryValue(kindTomb, k)); err != nil {
		return err
	}
	d.u.tombstones++
	return bumpSeq(tx, seq)
}

// sweepBatch is how many expired entries one sweep transaction handles.
const sweepBatch = 512

// Sweep deletes what has expired at now: bundles, partial receptions, and
// tombstones whose bundle's lifetime is over. A bundle whose creation
// time is 0 expires by its bundle age block (bundle.Bundle.ExpiresAt). It
// returns the bundles and partials it deleted, for deletion status reports
// and metrics; tombstones go silently. Sweep works in batches, each its
// own transaction, so the store stays responsive while it runs.
func (s *Store) Sweep(ctx context.Context, now time.Time) ([]Deleted, error) {
	var out []Deleted
	for {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		n, dels, err := s.sweepOnce(now)
		out = append(out, dels...)
		if err != nil || n < sweepBatch {
			return out, err
		}
	}
}

func (s *Store) sweepOnce(now time.Time) (int, []Deleted, error) {
	const op = "sweep"
	if err := s.enter(op); err != nil {
		return 0, nil, err
	}
	defer s.leave()
	bound := sortableMillis(now)
	var (
		d     delta
		n     int
		dels  []Deleted
		files []uint64
	)
	err := s.update(func(tx *bolt.Tx) error {
		d, n, dels, files = delta{}, 0, nil, nil
		type entry struct {
			k, v []byte
		}
		var batch []entry
		c := tx.Bucket(bktExpiry).Cursor()
		for k, v := c.First(); k != nil && len(batch) < sweepBatch; k, v = c.Next() {
			if len(k) == 16 && beUint64(k) > bound {
				break
			}
			batch = append(batch, entry{append([]byte(nil), k...), append([]byte(nil), v...)})
		}
		n = len(batch)
		ids, exp := tx.Bucket(bktIDs), tx.Bucket(bktExpiry)
		for _, en := range batch {
			_, seq, kind, key, err := decodeExpiry(en.k, en.v)
			if err != nil {
				s.log.Error("dropping undecodable expiry entry", zap.Error(err))
				if err := exp.Delete(en.k); err != nil {
					return err
				}
				continue
			}
			if kind == kindTomb {
				if e, err := decodeIDEntry(ids.Get(key[:])); err == nil && e.kind == kindTomb && e.seq == seq {
					if err := ids.Delete(key[:]); err != nil {
						return err
					}
					d.u.tombstones--
				}
				if err := exp.Delete(en.k); err != nil {
					return err
				}
				continue
			}
			r, ok := recordAt(tx, seq)
			if !ok {
				if err := exp.Delete(en.k); err != nil {
					return err
				}
				continue
			}
			if err := removeRecord(tx, seq, r, false, &d); err != nil {
				return err
			}
			// removeRecord deleted the expiry key of r.expires; make
			// sure this one goes too if they ever differ.
			if err := exp.Delete(en.k); err != nil {
				return err
			}
			if !r.inline {
				files = append(files, seq)
			}
			m, err := metaOf(seq, r)
			if err != nil {
				m = Meta{From: r.from, ReceivedAt: r.received, ExpiresAt: r.expires, Arrival: seq}
				if id, perr := bundle.ParseID(r.id); perr == nil {
					m.ID = id
				}
			}
			dels = append(dels, Deleted{Meta: m, Partial: r.kind == kindPartial, Received: r.held, Reason: bundle.ReasonLifetimeExpired})
		}
		return nil
	}, func() { s.apply(&d) })
	if err != nil {
		return 0, nil, err
	}
	for _, seq := range files {
		os.Remove(s.dataPath(seq))
	}
	for _, del := range dels {
		s.log.Debug("expired bundle deleted", zap.Stringer("id", del.ID), zap.Bool("partial", del.Partial))
	}
	return n, dels, nil
}

// RunSweeper sweeps at once and then every interval until ctx ends or
// the store closes, passing what each sweep deleted to onDeleted (which
// may be nil). It returns ctx.Err() or the error that stopped it.
func (s *Store) RunSweeper(ctx context.Context, interval time.Duration, onDeleted func([]Deleted)) error {
	if interval <= 0 {
		return newErr("sweeper", ErrInvalid, "", "interval must be positive", nil)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		dels, err := s.Sweep(ctx, s.now())
		if len(dels) > 0 && onDeleted != nil {
			onDeleted(dels)
		}
		switch {
		case errors.Is(err, ErrClosed):
			return err
		case err != nil && ctx.Err() == nil:
			s.log.Error("sweep failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
