package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// TestConcurrent runs every kind of operation at once (run it with -race):
// puts of both sizes, partials and resumptions, reads, deletes, progress,
// sweeps, queries, scrubs and stats. At the end the counters agree with
// the index, and a reopen agrees with both.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{MaxBytes: 8 << 20})
	const workers, each = 8, 40
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < workers; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			var mine []bundle.ID
			for i := 0; i < each; i++ {
				size := rng.IntN(3000)
				if rng.IntN(5) == 0 {
					size = DefaultInlineMax + rng.IntN(100<<10)
				}
				life := time.Hour
				if rng.IntN(4) == 0 {
					life = time.Minute
				}
				b := mkBundle(t, uint64(g*1000+i), size, withLifetime(life),
					withDst([]string{"dtn://a/x", "dtn://b/y", "ipn:3.4"}[rng.IntN(3)]))
				id := b.ID()
				full := payloadFor(id.String(), size)
				if rng.IntN(6) == 0 && size > 0 {
					w, err := e.s.BeginPut(ctx, b, "test")
					if errors.Is(err, ErrFull) || errors.Is(err, ErrExpired) {
						continue
					}
					if err != nil {
						t.Error(err)
						continue
					}
					w.Write(full[:size/2])
					w.Abort(true)
					if rng.IntN(2) == 0 {
						w, err := e.s.Resume(ctx, id)
						if err == nil {
							w.Write(full[w.Offset():])
							if err := w.Commit(ctx); err != nil && !errors.Is(err, ErrNotFound) {
								t.Errorf("resume commit: %v", err)
							}
						} else if !errors.Is(err, ErrFull) && !errors.Is(err, ErrNotFound) {
							t.Errorf("Resume: %v", err)
						}
					} else if size/2 > 0 {
						if _, err := e.s.PartialToFragment(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
							t.Errorf("PartialToFragment: %v", err)
						}
					}
					continue
				}
				err := e.s.Put(ctx, b, "test", bytes.NewReader(full))
				if errors.Is(err, ErrFull) || errors.Is(err, ErrExpired) {
					continue
				}
				if err != nil {
					t.Errorf("Put: %v", err)
					continue
				}
				mine = append(mine, id)
				e.s.Enqueue(ctx, id, "peer:p", "adapter:s3")
				if _, err := e.s.MarkInFlight(ctx, id, "peer:p"); err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("MarkInFlight: %v", err)
				}
				// Read a random earlier one: intact, unless swept or
				// deleted meanwhile.
				pick := mine[rng.IntN(len(mine))]
				if p, err := e.s.OpenPayload(ctx, pick); err == nil {
					got, err := io.ReadAll(p)
					p.Close()
					if err != nil || !bytes.Equal(got, payloadFor(pick.String(), len(got))) {
						t.Errorf("payload of %s: %v", pick, err)
					}
				} else if !errors.Is(err, ErrNotFound) {
					t.Errorf("OpenPayload: %v", err)
				}
				switch rng.IntN(4) {
				case 0:
					if err := e.s.Delete(ctx, pick, 0); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Delete: %v", err)
					}
				case 1:
					e.s.MarkDone(ctx, pick, "peer:p")
				}
			}
		})
	}
	// Background readers and housekeeping until the writers are done.
	var bg sync.WaitGroup
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.s.Sweep(ctx, e.clk.Add(200*time.Millisecond))
			e.s.Due(ctx, "peer:p", e.clk.Now(), 50)
			e.s.ByNode(ctx, bundle.MustParseEID("dtn://a/"), 0, 50)
			e.s.EachHeld(ctx, func(Held) error { return nil })
			e.s.Stats()
			e.s.Partials(ctx)
		}
	})
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if rep, err := e.s.Scrub(ctx); err != nil || rep.Corrupt != 0 {
				t.Errorf("Scrub = %+v, %v", rep, err)
			}
		}
	})
	wg.Wait()
	close(stop)
	bg.Wait()

	check := func(when string) {
		s := e.s.Stats()
		var bundles, partials, bytesUsed int64
		var ids []bundle.ID
		e.s.EachHeld(ctx, func(h Held) error {
			if h.Partial {
				partials++
			} else {
				bundles++
				ids = append(ids, h.ID)
			}
			return nil
		})
		// The progress records in the index, by destination and state,
		// counted and weighed by their bundles' cost.
		counts, weights := map[string]StateCounts{}, map[string]StateCounts{}
		for _, id := range ids {
			m, err := e.s.Get(ctx, id)
			if err != nil {
				t.Fatalf("%s: Get: %v", when, err)
			}
			h, _ := m.Bundle.MarshalHeader()
			cost := int64(len(h)) + int64(m.Bundle.Payload.Length)
			bytesUsed += cost
			ps, err := e.s.ProgressOf(ctx, id)
			if err != nil {
				t.Fatalf("%s: ProgressOf: %v", when, err)
			}
			for _, p := range ps {
				c, w := counts[p.Dest], weights[p.Dest]
				c.add(p.State, 1)
				w.add(p.State, cost)
				counts[p.Dest], weights[p.Dest] = c, w
			}
		}
		for d, c := range counts {
			if s.Destinations[d] != c || s.DestinationBytes[d] != weights[d] {
				t.Errorf("%s: %s: Stats says %+v, %+v bytes; the index %+v, %+v bytes", when, d, s.Destinations[d], s.DestinationBytes[d], c, weights[d])
			}
		}
		if len(s.Destinations) != len(counts) || len(s.DestinationBytes) != len(counts) {
			t.Errorf("%s: Stats has destinations %v; the index %v", when, s.Destinations, counts)
		}
		if s.Bundles != bundles || s.Partials != partials || s.BundleBytes != bytesUsed || s.Receiving != 0 || s.ReservedB != 0 {
			t.Errorf("%s: Stats %+v; index: %d bundles of %d bytes, %d partials", when, s, bundles, bytesUsed, partials)
		}
		if s.UsedBytes > s.MaxBytes {
			t.Errorf("%s: %d bytes used, quota %d", when, s.UsedBytes, s.MaxBytes)
		}
		if s.Quarantined != 0 {
			t.Errorf("%s: %d quarantined", when, s.Quarantined)
		}
	}
	check("before reopen")
	before := e.s.Stats()
	e.reopen()
	check("after reopen")
	after := e.s.Stats()
	if before.Tombstones != after.Tombstones {
		t.Errorf("tombstones %d before reopen, %d after", before.Tombstones, after.Tombstones)
	}
	inFlightAsPending := func(c StateCounts) StateCounts {
		c.Pending += c.InFlight
		c.InFlight = 0
		return c
	}
	for d, c := range before.Destinations {
		if c := inFlightAsPending(c); after.Destinations[d] != c {
			t.Errorf("%s: %+v before reopen (in flight counted as pending), %+v after", d, c, after.Destinations[d])
		}
		if w := inFlightAsPending(before.DestinationBytes[d]); after.DestinationBytes[d] != w {
			t.Errorf("%s: %+v bytes before reopen (in flight counted as pending), %+v after", d, w, after.DestinationBytes[d])
		}
	}
	t.Logf("at the end: %d bundles, %d partials, %d tombstones, %d bytes used of %d; %d commits carried %d operations",
		before.Bundles, before.Partials, before.Tombstones, before.UsedBytes, before.MaxBytes, before.Commits, before.CommittedOps)
}

// TestGroupCommit checks that concurrent puts share commits: fewer
// commits (fsyncs) than puts.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	const n = 64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Go(func() {
			<-start
			b := mkBundle(t, uint64(i), 1024)
			if err := e.s.Put(ctx, b, "test", bytes.NewReader(payloadFor(b.ID().String(), 1024))); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	s := e.s.Stats()
	if s.Bundles != n || s.CommittedOps != n {
		t.Fatalf("Stats = %+v", s)
	}
	if s.Commits > n/2 {
		t.Errorf("%d puts took %d commits; want them to share", n, s.Commits)
	}
	t.Logf("%d puts, %d commits", n, s.Commits)
}
