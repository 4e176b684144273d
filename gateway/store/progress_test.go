package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func TestQueries(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	// seq → destination and lifetime
	put := []struct {
		dst  string
		life time.Duration
		size int
	}{
		{"dtn://a/mail", 3 * time.Hour, 10},
		{"dtn://b/logs", 1 * time.Hour, 10},
		{"dtn://a/logs", 2 * time.Hour, 200 << 10},
		{"dtn://a/mail", 5 * time.Hour, 10},
		{"ipn:7.1", 4 * time.Hour, 10},
		{"ipn:7.2", 6 * time.Hour, 10},
	}
	var ids []bundle.ID
	for i, p := range put {
		b := mkBundle(t, uint64(i), p.size, withDst(p.dst), withLifetime(p.life))
		mustPut(t, e.s, b)
		ids = append(ids, b.ID())
	}
	// A partial is held but is not a bundle.
	pb := mkBundle(t, 99, 1000, withDst("dtn://a/mail"))
	receivePartial(t, e.s, pb, 10)

	idx := func(ms []Meta) []int {
		var out []int
		for _, m := range ms {
			for i, id := range ids {
				if m.ID == id {
					out = append(out, i)
				}
			}
		}
		return out
	}
	eq := func(a, b []int) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	tests := []struct {
		name string
		run  func() ([]Meta, error)
		want []int
	}{
		{"by destination", func() ([]Meta, error) {
			return e.s.ByDestination(ctx, bundle.MustParseEID("dtn://a/mail"), 0, 0)
		}, []int{0, 3}},
		{"by destination, ipn", func() ([]Meta, error) {
			return e.s.ByDestination(ctx, bundle.MustParseEID("ipn:7.2"), 0, 0)
		}, []int{5}},
		{"by destination, nothing", func() ([]Meta, error) {
			return e.s.ByDestination(ctx, bundle.MustParseEID("dtn://a/"), 0, 0)
		}, nil},
		{"by node", func() ([]Meta, error) {
			return e.s.ByNode(ctx, bundle.MustParseEID("dtn://a/whatever"), 0, 0)
		}, []int{0, 2, 3}},
		{"by node, paged", func() ([]Meta, error) {
			first, err := e.s.ByNode(ctx, bundle.MustParseEID("dtn://a/"), 0, 2)
			if err != nil || len(first) != 2 {
				return first, err
			}
			return e.s.ByNode(ctx, bundle.MustParseEID("dtn://a/"), first[1].Arrival, 2)
		}, []int{3}},
		{"by node, ipn", func() ([]Meta, error) {
			return e.s.ByNode(ctx, bundle.MustParseEID("ipn:7.0"), 0, 0)
		}, []int{4, 5}},
		{"by expiry", func() ([]Meta, error) {
			return e.s.ByExpiry(ctx, t0.Add(4*time.Hour), 0)
		}, []int{1, 2, 0, 4}},
		{"by expiry, limited", func() ([]Meta, error) {
			return e.s.ByExpiry(ctx, t0.Add(100*time.Hour), 2)
		}, []int{1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := tc.run()
			if err != nil {
				t.Fatal(err)
			}
			if got := idx(ms); !eq(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			for _, m := range ms {
				if m.Bundle == nil || m.Bundle.ID() != m.ID || m.From != "test" {
					t.Errorf("bad Meta %+v", m)
				}
			}
		})
	}

	t.Run("each held", func(t *testing.T) {
		var held []Held
		if err := e.s.EachHeld(ctx, func(h Held) error { held = append(held, h); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(held) != len(ids)+1 {
			t.Fatalf("%d held, want %d", len(held), len(ids)+1)
		}
		for i, id := range ids {
			if held[i].ID != id || held[i].Partial || held[i].Received != uint64(put[i].size) {
				t.Errorf("held[%d] = %+v", i, held[i])
			}
		}
		if last := held[len(ids)]; last.ID != pb.ID() || !last.Partial || last.Received != 10 || last.Length != 1000 {
			t.Errorf("partial = %+v", last)
		}
		stop := errors.New("stop")
		n := 0
		if err := e.s.EachHeld(ctx, func(Held) error { n++; return stop }); err != stop || n != 1 {
			t.Errorf("EachHeld stopped after %d with %v", n, err)
		}
	})
}

func TestProgressTransitions(t *testing.T) {
	ctx := context.Background()
	const dest = "peer:dtn://m/"
	type step struct {
		op      string // enqueue, inflight, done, retry, failed
		want    State
		wantErr error
	}
	tests := []struct {
		name         string
		steps        []step
		wantAttempts int
	}{
		{"happy path", []step{{"enqueue", Pending, nil}, {"inflight", InFlight, nil}, {"done", Done, nil}}, 1},
		{"retry then done", []step{{"enqueue", Pending, nil}, {"inflight", InFlight, nil}, {"retry", Pending, nil},
			{"inflight", InFlight, nil}, {"done", Done, nil}}, 2},
		{"fatal", []step{{"enqueue", Pending, nil}, {"inflight", InFlight, nil}, {"failed", Failed, nil}}, 1},
		{"failed, then retried by an operator", []step{{"enqueue", Pending, nil}, {"failed", Failed, nil}, {"retry", Pending, nil}}, 0},
		{"done by delivery notice, without a queue", []step{{"done", Done, nil}}, 0},
		{"enqueue is idempotent", []step{{"enqueue", Pending, nil}, {"inflight", InFlight, nil}, {"enqueue", InFlight, nil}}, 1},
		{"in flight twice", []step{{"enqueue", Pending, nil}, {"inflight", InFlight, nil}, {"inflight", InFlight, ErrState}}, 1},
		{"done is final", []step{{"enqueue", Pending, nil}, {"done", Done, nil}, {"inflight", Done, ErrState},
			{"retry", Done, ErrState}, {"failed", Done, ErrState}, {"done", Done, nil}}, 0},
		{"not enqueued", []step{{"inflight", 0, ErrNotFound}, {"retry", 0, ErrNotFound}, {"failed", 0, ErrNotFound}}, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			b := mkBundle(t, uint64(i), 10)
			mustPut(t, e.s, b)
			id := b.ID()
			next := t0.Add(time.Minute)
			for j, st := range tc.steps {
				var err error
				switch st.op {
				case "enqueue":
					err = e.s.Enqueue(ctx, id, dest)
				case "inflight":
					_, err = e.s.MarkInFlight(ctx, id, dest)
				case "done":
					_, err = e.s.MarkDone(ctx, id, dest)
				case "retry":
					_, err = e.s.MarkRetry(ctx, id, dest, next, errors.New("connection reset"))
				case "failed":
					_, err = e.s.MarkFailed(ctx, id, dest, errors.New("rejected"))
				}
				if st.wantErr != nil {
					wantKind(t, err, st.wantErr)
				} else if err != nil {
					t.Fatalf("step %d %s: %v", j, st.op, err)
				}
				ps, err := e.s.ProgressOf(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if st.want == 0 {
					if len(ps) != 0 {
						t.Fatalf("step %d: progress %+v, want none", j, ps)
					}
					continue
				}
				if len(ps) != 1 || ps[0].Dest != dest || ps[0].State != st.want {
					t.Fatalf("step %d %s: progress %+v, want %v", j, st.op, ps, st.want)
				}
				c := e.s.Counts(dest)
				var wantC StateCounts
				wantC.add(st.want, 1)
				if c != wantC {
					t.Errorf("step %d: Counts = %+v, want %+v", j, c, wantC)
				}
			}
			ps, _ := e.s.ProgressOf(ctx, id)
			if len(ps) == 1 && ps[0].Attempts != tc.wantAttempts {
				t.Errorf("%d attempts, want %d", ps[0].Attempts, tc.wantAttempts)
			}
		})
	}
}

func TestDueAndRestart(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	const (
		peer  = "peer:dtn://m/"
		smtp  = "adapter:smtp"
		local = "local:dtn://me/chat"
	)
	var ids []bundle.ID
	for i := 0; i < 6; i++ {
		b := mkBundle(t, uint64(i), 10)
		mustPut(t, e.s, b)
		ids = append(ids, b.ID())
		if err := e.s.Enqueue(ctx, b.ID(), peer, smtp); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.s.Enqueue(ctx, ids[0], local); err != nil {
		t.Fatal(err)
	}
	due := func(dest string, at time.Time, limit int) []int {
		t.Helper()
		qs, err := e.s.Due(ctx, dest, at, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for _, q := range qs {
			for i, id := range ids {
				if q.ID == id {
					out = append(out, i)
				}
			}
			if q.Progress.Dest != dest || q.Progress.State != Pending {
				t.Errorf("Due returned %+v", q.Progress)
			}
		}
		return out
	}
	eq := func(got []int, want ...int) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("got %v, want %v", got, want)
			}
		}
	}
	eq(due(peer, t0, 0), 0, 1, 2, 3, 4, 5)
	eq(due(peer, t0, 3), 0, 1, 2)
	// 0 goes out; 1 fails transiently, due in 5 minutes; 2 fails for good;
	// 3 is delivered.
	e.s.MarkInFlight(ctx, ids[0], peer)
	e.s.MarkInFlight(ctx, ids[1], peer)
	e.s.MarkRetry(ctx, ids[1], peer, t0.Add(5*time.Minute), errors.New("timeout"))
	e.s.MarkInFlight(ctx, ids[2], peer)
	e.s.MarkFailed(ctx, ids[2], peer, errors.New("refused"))
	e.s.MarkInFlight(ctx, ids[3], peer)
	e.s.MarkDone(ctx, ids[3], peer)
	eq(due(peer, t0, 0), 4, 5)
	eq(due(peer, t0.Add(5*time.Minute), 0), 1, 4, 5)
	eq(due(smtp, t0, 0), 0, 1, 2, 3, 4, 5)
	eq(due(local, t0, 0), 0)
	if c := e.s.Counts(peer); c != (StateCounts{Pending: 3, InFlight: 1, Done: 1, Failed: 1}) {
		t.Errorf("Counts = %+v", c)
	}
	nd, err := e.s.NotDone(ctx, peer, 0, 0)
	if err != nil || len(nd) != 5 {
		t.Errorf("NotDone = %d, %v", len(nd), err)
	}
	nd2, _ := e.s.NotDone(ctx, peer, nd[1].Arrival, 2)
	if len(nd2) != 2 || nd2[0].Arrival != nd[2].Arrival {
		t.Errorf("NotDone paged = %+v", nd2)
	}

	// The node stops while 0 is in flight: after a restart it is pending
	// again, and everything else is as it was.
	e.reopen()
	eq(due(peer, t0, 0), 0, 4, 5)
	ps, _ := e.s.ProgressOf(ctx, ids[0])
	for _, p := range ps {
		if p.Dest == peer && (p.State != Pending || p.Attempts != 1 || p.LastError == "") {
			t.Errorf("after restart %+v", p)
		}
	}
	if c := e.s.Counts(peer); c != (StateCounts{Pending: 4, Done: 1, Failed: 1}) {
		t.Errorf("Counts after restart = %+v", c)
	}
	ps, _ = e.s.ProgressOf(ctx, ids[1])
	// Ordered by destination: adapter:smtp, then peer:….
	if len(ps) != 2 || ps[0].Dest != smtp || ps[1].Dest != peer || ps[1].LastError != "timeout" ||
		!ps[1].NextAttempt.Equal(t0.Add(5*time.Minute)) || ps[1].Attempts != 1 {
		t.Errorf("progress of 1 after restart: %+v", ps)
	}

	// Deleting a bundle removes its progress, and the counts follow.
	if err := e.s.Delete(ctx, ids[0], 0); err != nil {
		t.Fatal(err)
	}
	if c := e.s.Counts(peer); c != (StateCounts{Pending: 3, Done: 1, Failed: 1}) {
		t.Errorf("Counts after delete = %+v", c)
	}
	if c := e.s.Counts(local); c != (StateCounts{}) {
		t.Errorf("Counts(local) after delete = %+v", c)
	}
	if _, ok := e.s.Stats().Destinations[local]; ok {
		t.Errorf("empty destination still listed")
	}
	e.reopen()
	if c := e.s.Counts(peer); c != (StateCounts{Pending: 3, Done: 1, Failed: 1}) {
		t.Errorf("Counts after delete and reopen = %+v", c)
	}
	if c := e.s.Counts(smtp); c != (StateCounts{Pending: 5}) {
		t.Errorf("Counts(smtp) = %+v", c)
	}

	// Bad destinations and unknown bundles.
	wantKind(t, e.s.Enqueue(ctx, ids[1], ""), ErrInvalid)
	wantKind(t, e.s.Enqueue(ctx, ids[1], "a\x00b"), ErrInvalid)
	wantKind(t, e.s.Enqueue(ctx, mkBundle(t, 77, 1).ID(), peer), ErrNotFound)
	_, err = e.s.ProgressOf(ctx, ids[0])
	wantKind(t, err, ErrNotFound)
}
