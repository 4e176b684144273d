package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// TestStatsByState walks bundles through the progress states and checks,
// after every step, the counts and bytes by state that Stats gives for
// each destination and in total, and that a reopen rebuilds the same
// figures (with in_flight back to pending).
func TestStatsByState(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{MaxBytes: 1 << 30, MaxBundles: 100})
	const peerA, peerB = "peer:dtn://a/", "adapter:s3"
	// Three bundles of different sizes, inline and in a file, so that a
	// byte figure tells which bundles it counts.
	bs := []*bundle.Bundle{mkBundle(t, 1, 100), mkBundle(t, 2, 2000), mkBundle(t, 3, 100_000)}
	cost := make([]int64, len(bs))
	for i, b := range bs {
		mustPut(t, e.s, b)
		cost[i] = int64(len(mustHeader(t, b))) + int64(b.Payload.Length)
	}
	id := func(i int) bundle.ID { return bs[i].ID() }
	must := func(_ Progress, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	type want struct{ n, bytes StateCounts }
	steps := []struct {
		name string
		do   func(t *testing.T)
		want map[string]want
	}{
		{"enqueued", func(t *testing.T) {
			for _, q := range []struct {
				i     int
				dests []string
			}{{0, []string{peerA, peerB}}, {1, []string{peerA}}, {2, []string{peerB}}} {
				if err := e.s.Enqueue(ctx, id(q.i), q.dests...); err != nil {
					t.Fatal(err)
				}
			}
		}, map[string]want{
			peerA: {StateCounts{Pending: 2}, StateCounts{Pending: cost[0] + cost[1]}},
			peerB: {StateCounts{Pending: 2}, StateCounts{Pending: cost[0] + cost[2]}},
		}},
		{"in flight", func(t *testing.T) { must(e.s.MarkInFlight(ctx, id(0), peerA)) }, map[string]want{
			peerA: {StateCounts{Pending: 1, InFlight: 1}, StateCounts{Pending: cost[1], InFlight: cost[0]}},
			peerB: {StateCounts{Pending: 2}, StateCounts{Pending: cost[0] + cost[2]}},
		}},
		{"done", func(t *testing.T) { must(e.s.MarkDone(ctx, id(0), peerA)) }, map[string]want{
			peerA: {StateCounts{Pending: 1, Done: 1}, StateCounts{Pending: cost[1], Done: cost[0]}},
			peerB: {StateCounts{Pending: 2}, StateCounts{Pending: cost[0] + cost[2]}},
		}},
		{"failed", func(t *testing.T) {
			must(e.s.MarkInFlight(ctx, id(2), peerB))
			must(e.s.MarkFailed(ctx, id(2), peerB, errors.New("rejected")))
		}, map[string]want{
			peerA: {StateCounts{Pending: 1, Done: 1}, StateCounts{Pending: cost[1], Done: cost[0]}},
			peerB: {StateCounts{Pending: 1, Failed: 1}, StateCounts{Pending: cost[0], Failed: cost[2]}},
		}},
		{"retried", func(t *testing.T) {
			must(e.s.MarkRetry(ctx, id(2), peerB, t0.Add(time.Minute), errors.New("try again")))
		}, map[string]want{
			peerA: {StateCounts{Pending: 1, Done: 1}, StateCounts{Pending: cost[1], Done: cost[0]}},
			peerB: {StateCounts{Pending: 2}, StateCounts{Pending: cost[0] + cost[2]}},
		}},
		{"in flight, then reopened", func(t *testing.T) {
			must(e.s.MarkInFlight(ctx, id(1), peerA))
			e.reopen()
		}, map[string]want{
			peerA: {StateCounts{Pending: 1, Done: 1}, StateCounts{Pending: cost[1], Done: cost[0]}},
			peerB: {StateCounts{Pending: 2}, StateCounts{Pending: cost[0] + cost[2]}},
		}},
		{"first bundle deleted", func(t *testing.T) {
			if err := e.s.Delete(ctx, id(0), 0); err != nil {
				t.Fatal(err)
			}
		}, map[string]want{
			peerA: {StateCounts{Pending: 1}, StateCounts{Pending: cost[1]}},
			peerB: {StateCounts{Pending: 1}, StateCounts{Pending: cost[2]}},
		}},
		{"reopened", func(t *testing.T) { e.reopen() }, map[string]want{
			peerA: {StateCounts{Pending: 1}, StateCounts{Pending: cost[1]}},
			peerB: {StateCounts{Pending: 1}, StateCounts{Pending: cost[2]}},
		}},
		{"all expired", func(t *testing.T) {
			if _, err := e.s.Sweep(ctx, t0.Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, map[string]want{}},
	}
	for _, st := range steps {
		st.do(t)
		s := e.s.Stats()
		var total, totalBytes StateCounts
		for dest, w := range st.want {
			if got := s.Destinations[dest]; got != w.n {
				t.Errorf("%s: %s counts = %+v, want %+v", st.name, dest, got, w.n)
			}
			if got := s.DestinationBytes[dest]; got != w.bytes {
				t.Errorf("%s: %s bytes = %+v, want %+v", st.name, dest, got, w.bytes)
			}
			if got := e.s.Counts(dest); got != w.n {
				t.Errorf("%s: Counts(%s) = %+v, want %+v", st.name, dest, got, w.n)
			}
			total.plus(w.n)
			totalBytes.plus(w.bytes)
		}
		if len(s.Destinations) != len(st.want) || len(s.DestinationBytes) != len(st.want) {
			t.Errorf("%s: destinations %v and %v, want %d", st.name, s.Destinations, s.DestinationBytes, len(st.want))
		}
		if s.Progress != total || s.ProgressBytes != totalBytes {
			t.Errorf("%s: totals %+v, %+v bytes; want %+v, %+v bytes", st.name, s.Progress, s.ProgressBytes, total, totalBytes)
		}
	}

	// By kind, and the quota: a bundle held, a partial reception, and a
	// reception in progress.
	b := mkBundle(t, 10, 500, withLifetime(3*time.Hour))
	mustPut(t, e.s, b)
	pb := mkBundle(t, 11, 1000, withLifetime(3*time.Hour))
	w, err := e.s.BeginPut(ctx, pb, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(true); err != nil {
		t.Fatal(err)
	}
	rb := mkBundle(t, 12, 700, withLifetime(3*time.Hour))
	rw, err := e.s.BeginPut(ctx, rb, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Abort(false)
	s := e.s.Stats()
	held := int64(len(mustHeader(t, b))) + 500
	partial := int64(len(mustHeader(t, pb))) + 300
	reserved := int64(len(mustHeader(t, rb))) + 700
	if s.Bundles != 1 || s.BundleBytes != held || s.Partials != 1 || s.PartialBytes != partial ||
		s.Receiving != 1 || s.ReservedB != reserved {
		t.Errorf("by kind: %+v; want 1 bundle of %d bytes, 1 partial of %d, 1 reception of %d", s, held, partial, reserved)
	}
	if s.UsedBundles != 3 || s.UsedBytes != held+partial+reserved || s.MaxBytes != 1<<30 || s.MaxBundles != 100 {
		t.Errorf("quota: %d bundles and %d bytes of %d and %d; want 3 and %d", s.UsedBundles, s.UsedBytes, s.MaxBundles, s.MaxBytes, held+partial+reserved)
	}
}
