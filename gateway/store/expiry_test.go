package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// ageBundle makes a bundle whose creation time is unknown (0): its bundle
// age block says it was age old on arrival.
func ageBundle(t *testing.T, seq uint64, n int, lifetime, age time.Duration) *bundle.Bundle {
	t.Helper()
	b := mkBundle(t, seq, n, withLifetime(lifetime))
	b.Primary.Creation.Time = 0
	b.SetAge(age)
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSweep(t *testing.T) {
	ctx := context.Background()
	type item struct {
		b       *bundle.Bundle
		partial int  // >0: keep only this many bytes, as a partial
		deleted bool // delete it after storing: leaves a tombstone
	}
	tests := []struct {
		name  string
		items func(t *testing.T) []item
		// at each of these offsets from t0, the IDs expected gone (by
		// index into items) and the tombstones left.
		steps []struct {
			at         time.Duration
			gone       []int
			tombstones int64
		}
	}{
		{
			name: "lifetimes",
			items: func(t *testing.T) []item {
				return []item{
					{b: mkBundle(t, 1, 10, withLifetime(time.Minute))},
					{b: mkBundle(t, 2, 200<<10, withLifetime(2*time.Minute))},
					{b: mkBundle(t, 3, 10, withLifetime(time.Hour))},
				}
			},
			steps: []struct {
				at         time.Duration
				gone       []int
				tombstones int64
			}{
				{30 * time.Second, nil, 0},
				{time.Minute, []int{0}, 0},
				{90 * time.Minute, []int{1, 2}, 0},
			},
		},
		{
			name: "creation time 0: the age block decides",
			items: func(t *testing.T) []item {
				return []item{
					// 1 h lifetime, 40 min old on arrival: 20 min left.
					{b: ageBundle(t, 1, 10, time.Hour, 40*time.Minute)},
					// 1 h lifetime, 10 min old: 50 min left.
					{b: ageBundle(t, 2, 200<<10, time.Hour, 10*time.Minute)},
				}
			},
			steps: []struct {
				at         time.Duration
				gone       []int
				tombstones int64
			}{
				{19 * time.Minute, nil, 0},
				{20 * time.Minute, []int{0}, 0},
				{49 * time.Minute, nil, 0},
				{50 * time.Minute, []int{1}, 0},
			},
		},
		{
			name: "partials expire",
			items: func(t *testing.T) []item {
				return []item{
					{b: mkBundle(t, 1, 1000, withLifetime(time.Minute)), partial: 100},
					{b: mkBundle(t, 2, 300<<10, withLifetime(2*time.Minute)), partial: 100 << 10},
				}
			},
			steps: []struct {
				at         time.Duration
				gone       []int
				tombstones int64
			}{
				{time.Minute, []int{0}, 0},
				{2 * time.Minute, []int{1}, 0},
			},
		},
		{
			name: "tombstones last until the bundle's expiry",
			items: func(t *testing.T) []item {
				return []item{
					{b: mkBundle(t, 1, 10, withLifetime(time.Minute)), deleted: true},
					{b: mkBundle(t, 2, 200<<10, withLifetime(time.Hour)), deleted: true},
					{b: mkBundle(t, 3, 10, withLifetime(time.Hour))},
				}
			},
			steps: []struct {
				at         time.Duration
				gone       []int
				tombstones int64
			}{
				{0, nil, 2},
				{time.Minute, nil, 1},
				{time.Hour, []int{2}, 0},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			items := tc.items(t)
			for _, it := range items {
				switch {
				case it.partial > 0:
					receivePartial(t, e.s, it.b, it.partial)
				default:
					mustPut(t, e.s, it.b)
				}
				if it.deleted {
					if err := e.s.Delete(ctx, it.b.ID(), 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			gone := map[int]bool{}
			for _, st := range tc.steps {
				now := t0.Add(st.at)
				dels, err := e.s.Sweep(ctx, now)
				if err != nil {
					t.Fatal(err)
				}
				var got []int
				for _, d := range dels {
					i := slices.IndexFunc(items, func(it item) bool { return it.b.ID() == d.ID })
					got = append(got, i)
					if d.Reason != bundle.ReasonLifetimeExpired || d.Partial != (items[i].partial > 0) ||
						d.Bundle == nil || d.Bundle.Primary.ReportTo != srcEID {
						t.Errorf("Deleted = %+v", d)
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, st.gone) {
					t.Fatalf("at +%v swept %v, want %v", st.at, got, st.gone)
				}
				for _, i := range st.gone {
					gone[i] = true
				}
				for i, it := range items {
					stt, _ := e.s.Lookup(ctx, it.b.ID())
					present := stt.Held || stt.Partial
					if want := !gone[i] && !it.deleted; present != want {
						t.Errorf("at +%v item %d present=%v, want %v", st.at, i, present, want)
					}
				}
				if s := e.s.Stats(); s.Tombstones != st.tombstones {
					t.Errorf("at +%v %d tombstones, want %d", st.at, s.Tombstones, st.tombstones)
				}
				// Nothing is swept twice, and reopening agrees.
				if again, _ := e.s.Sweep(ctx, now); len(again) != 0 {
					t.Errorf("second sweep deleted %d", len(again))
				}
				e.reopen()
				if s := e.s.Stats(); s.Tombstones != st.tombstones {
					t.Errorf("after reopen %d tombstones, want %d", s.Tombstones, st.tombstones)
				}
			}
			s := e.s.Stats()
			if s.Bundles != 0 || s.Partials != 0 || s.UsedBytes != 0 {
				t.Errorf("at the end: %+v", s)
			}
			if files, _ := os.ReadDir(filepath.Join(e.dir, "data")); len(files) != 0 {
				t.Errorf("%d payload files left", len(files))
			}
		})
	}
}

func TestSweepLarge(t *testing.T) {
	// More than one sweep batch.
	ctx := context.Background()
	e := newEnv(t, Options{})
	const n = 2*sweepBatch + 7
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		w, err := e.s.BeginPut(ctx, mkBundle(t, uint64(i), 1, withLifetime(time.Minute)), "test")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte{1})
		wg.Go(func() {
			if err := w.Commit(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	dels, err := e.s.Sweep(ctx, t0.Add(time.Minute))
	if err != nil || len(dels) != n {
		t.Fatalf("swept %d, %v; want %d", len(dels), err, n)
	}
}

func TestRunSweeper(t *testing.T) {
	e := newEnv(t, Options{})
	mustPut(t, e.s, mkBundle(t, 1, 10, withLifetime(time.Minute)))
	e.clk.Add(time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan []Deleted, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- e.s.RunSweeper(ctx, time.Hour, func(d []Deleted) { got <- d })
	}()
	if d := <-got; len(d) != 1 {
		t.Errorf("first sweep deleted %d", len(d))
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("RunSweeper: %v", err)
	}
}

func TestTombstone(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	b := mkBundle(t, 1, 10)
	// A delivery notice for a bundle we do not carry.
	if err := e.s.Tombstone(ctx, b.ID(), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Extended, never shortened.
	e.s.Tombstone(ctx, b.ID(), t0.Add(2*time.Minute))
	e.s.Tombstone(ctx, b.ID(), t0.Add(30*time.Second))
	if st, _ := e.s.Lookup(ctx, b.ID()); !st.Deleted || !st.Until.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("Lookup = %+v", st)
	}
	e.s.Sweep(ctx, t0.Add(time.Minute))
	wantKind(t, e.s.Put(ctx, b, "test", panicReader{t}), ErrDuplicate)
	e.s.Sweep(ctx, t0.Add(2*time.Minute))
	if s := e.s.Stats(); s.Tombstones != 0 {
		t.Errorf("%d tombstones", s.Tombstones)
	}
	e.clk.Add(2 * time.Minute)
	mustPut(t, e.s, b) // the tombstone is gone; the bundle is still alive
	// Tombstone on a held bundle deletes it.
	if err := e.s.Tombstone(ctx, b.ID(), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.s.Lookup(ctx, b.ID()); !st.Deleted || st.Held {
		t.Errorf("Lookup = %+v", st)
	}
}
