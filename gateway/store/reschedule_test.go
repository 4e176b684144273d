package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func TestReschedule(t *testing.T) {
	ctx := context.Background()
	const dest, other = "adapter:files", "peer:dtn://other/"
	later := t0.Add(10 * time.Minute)
	earlier := t0.Add(-time.Minute)
	// Each row is one bundle's history with dest (from pending, due now,
	// no attempts) before Reschedule(dest, t0), and where it must stand
	// after.
	rows := []struct {
		name     string
		history  func(p progressOps)
		state    State
		next     time.Time
		attempts int
	}{
		{"pending, backing off", func(p progressOps) { p.inFlight(); p.retry(later) }, Pending, t0, 1},
		{"pending, backing off twice", func(p progressOps) {
			p.inFlight()
			p.retry(later)
			p.inFlight()
			p.retry(later.Add(time.Hour))
		}, Pending, t0, 2},
		{"pending, due already", func(p progressOps) { p.inFlight(); p.retry(earlier) }, Pending, earlier, 1},
		{"pending, never tried", func(progressOps) {}, Pending, time.Time{}, 0},
		{"in flight", func(p progressOps) { p.inFlight() }, InFlight, time.Time{}, 1},
		{"failed", func(p progressOps) { p.inFlight(); p.fail() }, Failed, time.Time{}, 1},
		{"done", func(p progressOps) { p.inFlight(); p.done() }, Done, time.Time{}, 1},
	}
	// Batches of one and two make Reschedule span several commits.
	for _, batch := range []int{4096, 1, 2} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) {
			old := rescheduleBatch
			rescheduleBatch = batch
			t.Cleanup(func() { rescheduleBatch = old })
			e := newEnv(t, Options{})
			var ids []bundle.ID
			for i, r := range rows {
				b := mkBundle(t, uint64(i), 10)
				mustPut(t, e.s, b)
				if err := e.s.Enqueue(ctx, b.ID(), dest, other); err != nil {
					t.Fatal(err)
				}
				r.history(progressOps{t, e.s, b.ID(), dest})
				ids = append(ids, b.ID())
			}
			// Another destination's backoff is its own business.
			o := progressOps{t, e.s, ids[0], other}
			o.inFlight()
			o.retry(later)

			commits := e.s.Stats().Commits
			n, err := e.s.Reschedule(ctx, dest, t0)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.s.Stats().Commits - commits; batch == 1 && got < 2 {
				t.Errorf("with batches of one, two changes took %d commits", got)
			}
			if n != 2 {
				t.Errorf("Reschedule changed %d records, want 2 (the two backing off)", n)
			}
			for i, r := range rows {
				p := progressFor(t, e.s, ids[i], dest)
				if p.State != r.state || !p.NextAttempt.Equal(r.next) || p.Attempts != r.attempts {
					t.Errorf("%s: after Reschedule %s, next %v, %d attempts; want %s, next %v, %d attempts",
						r.name, p.State, p.NextAttempt, p.Attempts, r.state, r.next, r.attempts)
				}
			}
			if p := progressFor(t, e.s, ids[0], other); !p.NextAttempt.Equal(later) {
				t.Errorf("the other destination's next attempt moved to %v", p.NextAttempt)
			}
			due, err := e.s.Due(ctx, dest, t0, 0)
			if err != nil || len(due) != 4 {
				t.Errorf("Due after Reschedule: %d bundles, %v; want 4 (every pending one)", len(due), err)
			}
			if n, err := e.s.Reschedule(ctx, dest, t0); n != 0 || err != nil {
				t.Errorf("second Reschedule = %d, %v; want 0, nil", n, err)
			}
			// Durable: the new times survive a restart.
			e.reopen()
			if p := progressFor(t, e.s, ids[1], dest); !p.NextAttempt.Equal(t0) || p.Attempts != 2 {
				t.Errorf("after reopen: next attempt %v, %d attempts; want %v, 2", p.NextAttempt, p.Attempts, t0)
			}
		})
	}
	t.Run("bad destination", func(t *testing.T) {
		e := newEnv(t, Options{})
		_, err := e.s.Reschedule(ctx, "", t0)
		wantKind(t, err, ErrInvalid)
	})
}

// progressOps moves one bundle's progress for one destination along.
type progressOps struct {
	t    testing.TB
	s    *Store
	id   bundle.ID
	dest string
}

func (o progressOps) check(_ Progress, err error) {
	o.t.Helper()
	if err != nil {
		o.t.Fatal(err)
	}
}

func (o progressOps) inFlight() { o.check(o.s.MarkInFlight(context.Background(), o.id, o.dest)) }
func (o progressOps) done()     { o.check(o.s.MarkDone(context.Background(), o.id, o.dest)) }
func (o progressOps) fail() {
	o.check(o.s.MarkFailed(context.Background(), o.id, o.dest, errors.New("refused")))
}
func (o progressOps) retry(next time.Time) {
	o.check(o.s.MarkRetry(context.Background(), o.id, o.dest, next, errors.New("busy")))
}

func progressFor(t testing.TB, s *Store, id bundle.ID, dest string) Progress {
	t.Helper()
	ps, err := s.ProgressOf(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Dest == dest {
			return p
		}
	}
	t.Fatalf("no progress of %s for %s", id, dest)
	return Progress{}
}
