package store

import (
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit. Every change to the index goes through one goroutine,
// commitLoop, as a txn. The loop takes whatever has queued up while the
// previous commit was running (up to Options.MaxBatch), runs all of it in
// one bbolt read-write transaction, and commits once: one fsync for the
// whole group. A lone writer waits for one commit; many concurrent writers
// share each commit. No timer is involved, unlike bolt.DB.Batch, so a lone
// writer is not delayed.

// txn is one operation's part of a group commit.
type txn struct {
	// fn makes the change. It may return soft(err) to refuse the change,
	// but only before it has written anything: the rest of the group
	// still commits. Any other error rolls the group back; the group is
	// then run again without fn. fn may run more than once and must
	// reset what it records on each run.
	fn func(*bolt.Tx) error
	// after runs once the change is durable, before the caller hears of
	// it. It updates the in-memory counters.
	after  func()
	result error
	done   chan error
}

// softError is a refusal that leaves the transaction untouched.
type softError struct{ err error }

func (e softError) Error() string { return e.err.Error() }

func soft(err error) error { return softError{err} }

// update runs fn in the next group commit and returns when the change is
// durable. The caller must be inside enter/leave.
func (s *Store) update(fn func(*bolt.Tx) error, after func()) error {
	t := &txn{fn: fn, after: after, done: make(chan error, 1)}
	s.queue <- t
	return <-t.done
}

func (s *Store) commitLoop() {
	defer close(s.committerDone)
	batch := make([]*txn, 0, s.maxBatch)
	var (
		lastSize int           // operations in the previous commit
		lastTook time.Duration // how long it took
	)
	for t := range s.queue {
		batch = append(batch[:0], t)
	fill:
		for len(batch) < s.maxBatch {
			select {
			case t, ok := <-s.queue:
				if !ok {
					break fill
				}
				batch = append(batch, t)
			default:
				break fill
			}
		}
		// The writers the previous commit released are on their way back
		// with their next operation. If only a few have made it yet,
		// wait for the rest a little (at most half a commit's time, and
		// never more than linger) rather than commit the stragglers alone
		// and make everyone else wait for that commit: with many writers,
		// commits would otherwise alternate between big and tiny.
		if len(batch) < lastSize/2 {
			timer := time.NewTimer(min(lastTook/2, linger))
		wait:
			for len(batch) < lastSize && len(batch) < s.maxBatch {
				select {
				case t, ok := <-s.queue:
					if !ok {
						break wait
					}
					batch = append(batch, t)
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		start := time.Now()
		s.runBatch(batch)
		lastSize, lastTook = len(batch), time.Since(start)
	}
}

// linger bounds how long a commit waits for more operations to join it.
const linger = time.Millisecond

func (s *Store) runBatch(batch []*txn) {
	for len(batch) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, t := range batch {
				t.result = nil
				if err := t.fn(tx); err != nil {
					if se, ok := err.(softError); ok {
						t.result = se.err
						continue
					}
					failed = i
					return err
				}
			}
			return nil
		})
		if err == nil {
			s.commits.Add(1)
			s.committedOps.Add(int64(len(batch)))
			for _, t := range batch {
				if t.result == nil && t.after != nil {
					t.after()
				}
				t.done <- t.result
			}
			return
		}
		if failed < 0 {
			// The commit itself failed (disk full, I/O error): nothing
			// of the group happened.
			err = ioErr("commit", "", err)
			for _, t := range batch {
				t.done <- err
			}
			return
		}
		batch[failed].done <- ioErr("commit", "", err)
		rest := make([]*txn, 0, len(batch)-1)
		rest = append(rest, batch[:failed]...)
		batch = append(rest, batch[failed+1:]...)
	}
}

// bumpSeq records that sequence numbers up to seq are in use, so that a
// reopened store never hands one out twice.
func bumpSeq(tx *bolt.Tx, seq uint64) error {
	m := tx.Bucket(bktMeta)
	if v := m.Get(metaSeq); len(v) == 8 && binary.BigEndian.Uint64(v) >= seq {
		return nil
	}
	return m.Put(metaSeq, seqKey(seq))
}
