package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func TestPutGet(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		size      int
		inlineMax int64
		wantFile  bool
	}{
		{"empty", 0, 0, false},
		{"one byte", 1, 0, false},
		{"1 KiB inline", 1 << 10, 0, false},
		{"at the inline threshold", DefaultInlineMax, 0, false},
		{"just over the threshold", DefaultInlineMax + 1, 0, true},
		{"1 MiB file", 1 << 20, 0, true},
		{"small, inline disabled", 100, -1, true},
		{"custom threshold", 5000, 4096, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{InlineMax: tc.inlineMax})
			b := mkBundle(t, uint64(i), tc.size)
			want := mustPut(t, e.s, b)
			check := func() {
				t.Helper()
				m, err := e.s.Get(ctx, b.ID())
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				encLen, _ := b.EncodedLen()
				if m.ID != b.ID() || m.From != "test" || m.Bundle.Payload.Length != uint64(tc.size) ||
					m.EncodedLen != encLen || !m.ReceivedAt.Equal(t0) || !m.ExpiresAt.Equal(t0.Add(time.Hour)) {
					t.Errorf("Get = %+v", m)
				}
				got, err := readPayload(t, e.s, b.ID())
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("payload: %d bytes, err %v; want %d bytes", len(got), err, len(want))
				}
				p, err := e.s.OpenPayload(ctx, b.ID())
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				if p.Size() != int64(tc.size) {
					t.Errorf("Size = %d", p.Size())
				}
				if tc.size > 10 {
					sec, err := io.ReadAll(io.NewSectionReader(p, 3, 7))
					if err != nil || !bytes.Equal(sec, want[3:10]) {
						t.Errorf("section [3,10) = %x, %v", sec, err)
					}
				}
				files, _ := os.ReadDir(filepath.Join(e.dir, "data"))
				if (len(files) == 1) != tc.wantFile {
					t.Errorf("%d payload files, want file: %v", len(files), tc.wantFile)
				}
				st, err := e.s.Lookup(ctx, b.ID())
				if err != nil || !st.Held || st.Received != uint64(tc.size) {
					t.Errorf("Lookup = %+v, %v", st, err)
				}
				s := e.s.Stats()
				if s.Bundles != 1 || s.BundleBytes != int64(tc.size)+int64(len(mustHeader(t, b))) || s.Receiving != 0 || s.ReservedB != 0 {
					t.Errorf("Stats = %+v", s)
				}
			}
			check()
			e.reopen()
			check()
		})
	}
}

func mustHeader(t testing.TB, b *bundle.Bundle) []byte {
	h, err := b.MarshalHeader()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPutPayloadLength(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	tests := []struct {
		name    string
		size    int
		give    int
		wantErr error
	}{
		{"short inline", 100, 50, ErrIncomplete},
		{"short file", 100 << 10, 99 << 10, ErrIncomplete},
		{"exact", 100, 100, nil},
		{"longer reader is cut at the declared length", 200, 300, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := mkBundle(t, uint64(100+i), tc.size)
			p := payloadFor(b.ID().String(), tc.give)
			err := e.s.Put(ctx, b, "test", bytes.NewReader(p))
			if tc.wantErr != nil {
				wantKind(t, err, tc.wantErr)
				if _, err := e.s.Get(ctx, b.ID()); !errors.Is(err, ErrNotFound) {
					t.Errorf("after a short put, Get: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := readPayload(t, e.s, b.ID())
			if err != nil || !bytes.Equal(got, p[:tc.size]) {
				t.Errorf("payload differs (%v)", err)
			}
		})
	}
	if s := e.s.Stats(); s.Receiving != 0 || s.ReservedB != 0 {
		t.Errorf("reservations left: %+v", s)
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(tmp) != 0 {
		t.Errorf("%d files left in tmp/", len(tmp))
	}
}

func TestWriterTooLong(t *testing.T) {
	e := newEnv(t, Options{})
	for _, size := range []int{10, 100 << 10} {
		b := mkBundle(t, uint64(size), size)
		w, err := e.s.BeginPut(context.Background(), b, "test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, size+1)); !errors.Is(err, ErrTooLong) || !errors.Is(err, bundle.ErrPayloadLength) {
			t.Errorf("size %d: oversize write: %v", size, err)
		}
		if err := w.Commit(context.Background()); !errors.Is(err, ErrIncomplete) {
			t.Errorf("size %d: commit of nothing: %v", size, err)
		}
		if err := w.Abort(false); err != nil {
			t.Error(err)
		}
	}
}

func TestDuplicates(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		size int
		// setup runs before the second put of bundle b.
		setup   func(t *testing.T, e *env, b *bundle.Bundle)
		wantErr error // of the second put; nil: accepted
	}{
		{"held inline", 10, func(t *testing.T, e *env, b *bundle.Bundle) { mustPut(t, e.s, b) }, ErrDuplicate},
		{"held in a file", 200 << 10, func(t *testing.T, e *env, b *bundle.Bundle) { mustPut(t, e.s, b) }, ErrDuplicate},
		{"held, after reopen", 10, func(t *testing.T, e *env, b *bundle.Bundle) { mustPut(t, e.s, b); e.reopen() }, ErrDuplicate},
		{"deleted: tombstone", 10, func(t *testing.T, e *env, b *bundle.Bundle) {
			mustPut(t, e.s, b)
			if err := e.s.Delete(ctx, b.ID(), bundle.ReasonNoInformation); err != nil {
				t.Fatal(err)
			}
		}, ErrDuplicate},
		{"deleted, after reopen and a sweep before expiry", 200 << 10, func(t *testing.T, e *env, b *bundle.Bundle) {
			mustPut(t, e.s, b)
			if err := e.s.Delete(ctx, b.ID(), bundle.ReasonNoInformation); err != nil {
				t.Fatal(err)
			}
			e.reopen()
			if _, err := e.s.Sweep(ctx, e.clk.Add(30*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}, ErrDuplicate},
		{"tombstone for a bundle never seen", 10, func(t *testing.T, e *env, b *bundle.Bundle) {
			if err := e.s.Tombstone(ctx, b.ID(), t0.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, ErrDuplicate},
		{"being received", 10, func(t *testing.T, e *env, b *bundle.Bundle) {
			w, err := e.s.BeginPut(ctx, b, "other")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Abort(false) })
		}, ErrInProgress},
		{"partial: discarded, new reception accepted", 10, func(t *testing.T, e *env, b *bundle.Bundle) {
			w, err := e.s.BeginPut(ctx, b, "other")
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("abc"))
			if err := w.Abort(true); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"deleted and expired: refused as expired", 10, func(t *testing.T, e *env, b *bundle.Bundle) {
			mustPut(t, e.s, b)
			e.s.Delete(ctx, b.ID(), 0)
			e.clk.Add(2 * time.Hour)
			e.s.Sweep(ctx, e.clk.Now())
		}, ErrExpired},
		{"nothing", 10, func(*testing.T, *env, *bundle.Bundle) {}, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			b := mkBundle(t, uint64(i), tc.size)
			tc.setup(t, e, b)
			var r io.Reader = panicReader{t}
			if tc.wantErr == nil {
				r = bytes.NewReader(payloadFor(b.ID().String(), tc.size))
			}
			err := e.s.Put(ctx, b, "test", r)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("second put: %v", err)
				}
				if got, err := readPayload(t, e.s, b.ID()); err != nil || len(got) != tc.size {
					t.Fatalf("payload %d bytes, %v", len(got), err)
				}
				if ps, _ := e.s.Partials(ctx); len(ps) != 0 {
					t.Errorf("partials left: %v", ps)
				}
				return
			}
			wantKind(t, err, tc.wantErr)
		})
	}
}

func TestDeleteWhileReceiving(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	for _, size := range []int{10, 100 << 10} {
		b := mkBundle(t, uint64(size), size)
		w, err := e.s.BeginPut(ctx, b, "peer:dtn://m/")
		if err != nil {
			t.Fatal(err)
		}
		w.Write(payloadFor(b.ID().String(), size))
		// A delivery notice arrives while the bundle is still coming in.
		if err := e.s.Delete(ctx, b.ID(), bundle.ReasonNoInformation); err != nil {
			t.Fatalf("Delete while receiving: %v", err)
		}
		if err := w.Commit(ctx); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("Commit after Delete: %v", err)
		}
		if _, err := e.s.Get(ctx, b.ID()); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get: %v", err)
		}
	}
	if err := e.s.Delete(ctx, mkBundle(t, 999, 1).ID(), 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of an unknown ID: %v", err)
	}
	if s := e.s.Stats(); s.Receiving != 0 || s.UsedBytes != 0 || s.Tombstones != 2 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestFragmentsAreDistinct(t *testing.T) {
	e := newEnv(t, Options{})
	whole := mkBundle(t, 1, 100)
	mustPut(t, e.s, whole)
	for _, r := range [][2]uint64{{0, 50}, {50, 50}} {
		f, err := whole.Fragment(r[0], r[1])
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, e.s, f)
		if err := e.s.Put(context.Background(), f, "test", panicReader{t}); !errors.Is(err, ErrDuplicate) {
			t.Errorf("fragment %v again: %v", r, err)
		}
	}
	if s := e.s.Stats(); s.Bundles != 3 {
		t.Errorf("%d bundles, want 3", s.Bundles)
	}
}

func TestExpiredOnArrival(t *testing.T) {
	e := newEnv(t, Options{})
	b := mkBundle(t, 1, 10, withLifetime(time.Minute))
	e.clk.Add(time.Minute)
	err := e.s.Put(context.Background(), b, "test", panicReader{t})
	wantKind(t, err, ErrExpired)
	if r := bundle.ReasonOf(err); r != bundle.ReasonLifetimeExpired {
		t.Errorf("ReasonOf = %v", r)
	}
}

func TestCancelledPut(t *testing.T) {
	e := newEnv(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	b := mkBundle(t, 1, 1<<20)
	// The connection's context ends after the first chunk arrived.
	r := &cancelAfter{r: payloadReader("x"), cancel: cancel}
	if err := e.s.Put(ctx, b, "test", r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v", err)
	}
	if r.reads != 1 {
		t.Errorf("%d reads after the context ended", r.reads-1)
	}
	if s := e.s.Stats(); s.UsedBytes != 0 || s.Receiving != 0 {
		t.Errorf("Stats = %+v", s)
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(tmp) != 0 {
		t.Errorf("%d files left in tmp/", len(tmp))
	}
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	b := mkBundle(t, 1, 10)
	mustPut(t, e.s, b)
	w, err := e.s.BeginPut(ctx, mkBundle(t, 2, 10), "test")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 10))
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	wantKind(t, w.Commit(ctx), ErrClosed)
	wantKind(t, e.s.Put(ctx, mkBundle(t, 3, 1), "test", bytes.NewReader([]byte{1})), ErrClosed)
	_, err = e.s.Get(ctx, b.ID())
	wantKind(t, err, ErrClosed)
	wantKind(t, e.s.Delete(ctx, b.ID(), 0), ErrClosed)
	_, err = e.s.Sweep(ctx, t0)
	wantKind(t, err, ErrClosed)
	e.s = nil
}

// cancelAfter cancels a context once its first Read has returned data.
type cancelAfter struct {
	r      io.Reader
	cancel func()
	reads  int
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	c.reads++
	n, err := c.r.Read(p[:min(len(p), 1000)])
	c.cancel()
	return n, err
}
