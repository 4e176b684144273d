package store

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func TestQuota(t *testing.T) {
	ctx := context.Background()
	hdr := int64(len(mustHeader(t, mkBundle(t, 1, 1000))))
	tests := []struct {
		name string
		opts Options
		// fill puts what the scenario needs; then next must fail with
		// ErrFull, and after freeing, succeed.
		fill func(t *testing.T, e *env) (free func())
		next *bundle.Bundle
	}{
		{
			name: "bytes",
			opts: Options{MaxBytes: 3 * (1000 + hdr)},
			fill: func(t *testing.T, e *env) func() {
				for i := 1; i <= 3; i++ {
					mustPut(t, e.s, mkBundle(t, uint64(i), 1000))
				}
				return func() { e.s.Delete(ctx, mkBundle(t, 2, 1000).ID(), 0) }
			},
			next: mkBundle(t, 9, 1000),
		},
		{
			name: "bytes, file payloads",
			opts: Options{MaxBytes: 2 * (200<<10 + int64(len(mustHeader(t, mkBundle(t, 1, 200<<10)))))},
			fill: func(t *testing.T, e *env) func() {
				mustPut(t, e.s, mkBundle(t, 1, 200<<10))
				mustPut(t, e.s, mkBundle(t, 2, 200<<10))
				return func() { e.s.Delete(ctx, mkBundle(t, 1, 200<<10).ID(), 0) }
			},
			next: mkBundle(t, 9, 100<<10),
		},
		{
			name: "count",
			opts: Options{MaxBundles: 2},
			fill: func(t *testing.T, e *env) func() {
				mustPut(t, e.s, mkBundle(t, 1, 10))
				mustPut(t, e.s, mkBundle(t, 2, 10))
				return func() { e.s.Delete(ctx, mkBundle(t, 1, 10).ID(), 0) }
			},
			next: mkBundle(t, 9, 10),
		},
		{
			name: "a partial counts; deleting it frees room",
			opts: Options{MaxBundles: 2},
			fill: func(t *testing.T, e *env) func() {
				mustPut(t, e.s, mkBundle(t, 1, 10))
				receivePartial(t, e.s, mkBundle(t, 2, 1000), 10)
				return func() { e.s.Delete(ctx, mkBundle(t, 2, 1000).ID(), 0) }
			},
			next: mkBundle(t, 9, 10),
		},
		{
			name: "a reception in progress reserves its declared size; abort frees it",
			opts: Options{MaxBytes: 2 * (1000 + hdr)},
			fill: func(t *testing.T, e *env) func() {
				mustPut(t, e.s, mkBundle(t, 1, 1000))
				w, err := e.s.BeginPut(ctx, mkBundle(t, 2, 1000), "test")
				if err != nil {
					t.Fatal(err)
				}
				return func() { w.Abort(false) }
			},
			next: mkBundle(t, 9, 1000),
		},
		{
			name: "expiry frees room",
			opts: Options{MaxBundles: 1},
			fill: func(t *testing.T, e *env) func() {
				mustPut(t, e.s, mkBundle(t, 1, 10, withLifetime(time.Minute)))
				return func() {
					if dels, err := e.s.Sweep(ctx, e.clk.Add(time.Minute)); err != nil || len(dels) != 1 {
						t.Fatalf("Sweep = %v, %v", dels, err)
					}
				}
			},
			next: mkBundle(t, 9, 10),
		},
		{
			name: "a bundle larger than the whole quota",
			opts: Options{MaxBytes: 1 << 20},
			fill: func(t *testing.T, e *env) func() { return func() {} },
			next: mkBundle(t, 9, 2<<20),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			free := tc.fill(t, e)
			err := e.s.Put(ctx, tc.next, "test", panicReader{t})
			wantKind(t, err, ErrFull)
			if r := bundle.ReasonOf(err); r != bundle.ReasonDepletedStorage {
				t.Errorf("ReasonOf = %v", r)
			}
			if r := Reason(err); r != bundle.ReasonDepletedStorage {
				t.Errorf("Reason = %v", r)
			}
			// Everything but storing goes on while full.
			var ids []bundle.ID
			e.s.EachHeld(ctx, func(h Held) error {
				ids = append(ids, h.ID)
				return nil
			})
			for _, id := range ids {
				if _, err := e.s.Get(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("Get while full: %v", err)
				}
				if err := e.s.Enqueue(ctx, id, "peer:x"); err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("Enqueue while full: %v", err)
				}
			}
			if _, err := e.s.Sweep(ctx, e.clk.Now()); err != nil {
				t.Errorf("Sweep while full: %v", err)
			}
			free()
			if tc.next.Payload.Length > 1<<20 {
				return
			}
			mustPut(t, e.s, tc.next)
			s := e.s.Stats()
			if (s.MaxBytes > 0 && s.UsedBytes > s.MaxBytes) || (s.MaxBundles > 0 && s.UsedBundles > s.MaxBundles) {
				t.Errorf("over quota: %+v", s)
			}
		})
	}
}

// TestQuotaConcurrent has many writers race for a small quota while
// others delete: nobody blocks, the quota is never exceeded, and after
// the dust settles a delete makes room for the next put.
func TestQuotaConcurrent(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int{100, 100 << 10} {
		const limit = 8
		e := newEnv(t, Options{MaxBundles: limit})
		var (
			wg            sync.WaitGroup
			mu            sync.Mutex
			stored        []bundle.ID
			full, success int
		)
		done := make(chan struct{})
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					b := mkBundle(t, uint64(g*1000+i), size)
					err := e.s.Put(ctx, b, "test", bytes.NewReader(payloadFor(b.ID().String(), size)))
					mu.Lock()
					switch {
					case err == nil:
						success++
						stored = append(stored, b.ID())
					case errors.Is(err, ErrFull):
						full++
					default:
						t.Errorf("Put: %v", err)
					}
					// Delete one now and then, as a router would.
					var victim *bundle.ID
					if i%3 == 0 && len(stored) > 0 {
						victim = &stored[0]
						stored = stored[1:]
					}
					mu.Unlock()
					if victim != nil {
						if err := e.s.Delete(ctx, *victim, 0); err != nil {
							t.Errorf("Delete: %v", err)
						}
					}
					if s := e.s.Stats(); s.UsedBundles > limit {
						t.Errorf("%d bundles in use, limit %d", s.UsedBundles, limit)
					}
				}
			}()
		}
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("puts against a full store did not finish: deadlock")
		}
		if full == 0 || success == 0 {
			t.Errorf("size %d: %d stored, %d refused as full; want both", size, success, full)
		}
		s := e.s.Stats()
		if s.Bundles != int64(len(stored)) || s.Receiving != 0 || s.ReservedB != 0 {
			t.Errorf("Stats = %+v, %d stored", s, len(stored))
		}
		// Fill it to the brim, then a delete frees room for the next.
		for i := 0; s.UsedBundles < limit; i++ {
			mustPut(t, e.s, mkBundle(t, uint64(1e6+i), size))
			s = e.s.Stats()
		}
		next := mkBundle(t, 2e6, size)
		wantKind(t, e.s.Put(ctx, next, "test", panicReader{t}), ErrFull)
		var first bundle.ID
		e.s.EachHeld(ctx, func(h Held) error { first = h.ID; return errors.New("stop") })
		if err := e.s.Delete(ctx, first, 0); err != nil {
			t.Fatal(err)
		}
		mustPut(t, e.s, next)
	}
}
