package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mulegate/mulegate/bundle"
)

// receivePartial writes the first n of b's payload bytes and keeps them as
// a partial reception.
func receivePartial(t *testing.T, s *Store, b *bundle.Bundle, n int) []byte {
	t.Helper()
	full := payloadFor(b.ID().String(), int(b.Payload.Length))
	w, err := s.BeginPut(context.Background(), b, "peer:dtn://m/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(full[:n]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background()); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Commit of a partial payload: %v", err)
	}
	if err := w.Abort(true); err != nil {
		t.Fatalf("Abort(true): %v", err)
	}
	return full
}

func wantPartial(t *testing.T, s *Store, id bundle.ID, n uint64) {
	t.Helper()
	ps, err := s.Partials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].ID != id || ps[0].Received != n {
		t.Fatalf("Partials = %+v, want %s with %d bytes", ps, id, n)
	}
	st, err := s.Lookup(context.Background(), id)
	if err != nil || !st.Partial || st.Held || st.Received != n {
		t.Fatalf("Lookup = %+v, %v", st, err)
	}
	if _, err := s.Get(context.Background(), id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a partial: %v", err)
	}
}

func TestPartialResume(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		size   int
		first  int // bytes in the first reception
		second int // bytes in an interrupted resumption (0: none)
		reopen bool
	}{
		{"inline", 1000, 300, 0, false},
		{"inline, resumed twice, reopened", 1000, 300, 200, true},
		{"file", 300 << 10, 100 << 10, 0, false},
		{"file, resumed twice, reopened", 300 << 10, 100 << 10, 50 << 10, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			b := mkBundle(t, uint64(i), tc.size)
			id := b.ID()
			full := receivePartial(t, e.s, b, tc.first)
			wantPartial(t, e.s, id, uint64(tc.first))
			if s := e.s.Stats(); s.Partials != 1 || s.PartialBytes != int64(tc.first+len(mustHeader(t, b))) {
				t.Errorf("Stats = %+v", s)
			}
			if tc.reopen {
				e.reopen()
				wantPartial(t, e.s, id, uint64(tc.first))
			}
			held := tc.first
			if tc.second > 0 {
				w, err := e.s.Resume(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if w.Offset() != uint64(held) {
					t.Fatalf("Offset = %d, want %d", w.Offset(), held)
				}
				w.Write(full[held : held+tc.second])
				if err := w.Abort(true); err != nil {
					t.Fatal(err)
				}
				held += tc.second
				wantPartial(t, e.s, id, uint64(held))
				if tc.reopen {
					e.reopen()
					wantPartial(t, e.s, id, uint64(held))
				}
			}
			// A resumption that is abandoned leaves the partial as it was.
			w, err := e.s.Resume(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(full[held : held+10])
			w.Abort(false)
			wantPartial(t, e.s, id, uint64(held))

			// The rest arrives, say in a fragment carrying [held, size).
			w, err = e.s.Resume(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.s.Resume(ctx, id); !errors.Is(err, ErrInProgress) {
				t.Errorf("second Resume: %v", err)
			}
			if w.Offset() != uint64(held) {
				t.Fatalf("Offset = %d, want %d", w.Offset(), held)
			}
			if _, err := w.Write(full[held:]); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(ctx); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			got, err := readPayload(t, e.s, id)
			if err != nil || !bytes.Equal(got, full) {
				t.Fatalf("payload after resume: %d bytes, %v", len(got), err)
			}
			if ps, _ := e.s.Partials(ctx); len(ps) != 0 {
				t.Errorf("Partials after commit: %v", ps)
			}
			s := e.s.Stats()
			if s.Partials != 0 || s.PartialBytes != 0 || s.Bundles != 1 || s.BundleBytes != int64(tc.size+len(mustHeader(t, b))) || s.ReservedB != 0 {
				t.Errorf("Stats = %+v", s)
			}
			e.reopen()
			if got, err := readPayload(t, e.s, id); err != nil || !bytes.Equal(got, full) {
				t.Fatalf("payload after reopen: %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestPartialToFragment(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		size    int
		n       int
		mods    []func(*bundle.Params)
		wantErr error
	}{
		{"inline", 1000, 400, nil, nil},
		{"file", 200 << 10, 70 << 10, nil, nil},
		{"file holding less than the inline threshold", 200 << 10, 10, nil, nil},
		{"must not fragment", 1000, 400, []func(*bundle.Params){func(p *bundle.Params) { p.Flags |= bundle.FlagMustNotFragment }}, bundle.ErrNotFragmentable},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			b := mkBundle(t, uint64(i), tc.size, tc.mods...)
			full := receivePartial(t, e.s, b, tc.n)
			m, err := e.s.PartialToFragment(ctx, b.ID())
			if tc.wantErr != nil {
				wantKind(t, err, tc.wantErr)
				wantPartial(t, e.s, b.ID(), uint64(tc.n))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := b.Fragment(0, uint64(tc.n))
			if m.ID != want.ID() || !m.ID.Fragment || m.ID.Offset != 0 || m.ID.Length != uint64(tc.n) {
				t.Fatalf("fragment ID %v, want %v", m.ID, want.ID())
			}
			for round := 0; round < 2; round++ {
				got, err := readPayload(t, e.s, m.ID)
				if err != nil || !bytes.Equal(got, full[:tc.n]) {
					t.Fatalf("fragment payload: %d bytes, %v", len(got), err)
				}
				gm, err := e.s.Get(ctx, m.ID)
				if err != nil || gm.Bundle.Primary.TotalADULength != uint64(tc.size) || !gm.Bundle.Primary.IsFragment() {
					t.Fatalf("Get(fragment) = %+v, %v", gm, err)
				}
				if _, err := e.s.Get(ctx, b.ID()); !errors.Is(err, ErrNotFound) {
					t.Errorf("whole bundle: %v", err)
				}
				if ps, _ := e.s.Partials(ctx); len(ps) != 0 {
					t.Errorf("Partials = %v", ps)
				}
				e.reopen()
			}
			// The rest can now arrive as another fragment, and the
			// whole bundle is the fragments reassembled.
			rest, _ := b.Fragment(uint64(tc.n), uint64(tc.size-tc.n))
			if err := e.s.Put(ctx, rest, "test", bytes.NewReader(full[tc.n:])); err != nil {
				t.Fatal(err)
			}
			p1, _ := e.s.OpenPayload(ctx, m.ID)
			p2, _ := e.s.OpenPayload(ctx, rest.ID())
			defer p1.Close()
			defer p2.Close()
			_, r, err := bundle.Reassemble([]bundle.Part{{Bundle: m.Bundle, Payload: p1}, {Bundle: rest, Payload: p2}})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			buf.ReadFrom(r)
			if !bytes.Equal(buf.Bytes(), full) {
				t.Error("reassembled payload differs")
			}
		})
	}
}

func TestPartialEdgeCases(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})

	// Nothing received: nothing kept.
	b := mkBundle(t, 1, 100)
	w, _ := e.s.BeginPut(ctx, b, "test")
	w.Abort(true)
	if st, _ := e.s.Lookup(ctx, b.ID()); st != (Status{}) {
		t.Errorf("empty abort left %+v", st)
	}
	if _, err := e.s.Resume(ctx, b.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resume of nothing: %v", err)
	}
	if _, err := e.s.PartialToFragment(ctx, b.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("PartialToFragment of nothing: %v", err)
	}

	// A crash while resuming leaves the file longer than the partial:
	// reopen cuts it back.
	b = mkBundle(t, 2, 300<<10)
	full := receivePartial(t, e.s, b, 100<<10)
	w, err := e.s.Resume(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(full[100<<10 : 150<<10])
	w.f.Sync()
	path := w.path
	w.f.Close() // the process dies here: no Abort, no Commit
	w.f = nil
	e.s.unclaim(w.key)
	e.reopen()
	if fi, err := os.Stat(path); err != nil || fi.Size() != 100<<10 {
		t.Fatalf("partial file after reopen: %v, %v", fi.Size(), err)
	}
	wantPartial(t, e.s, b.ID(), 100<<10)
	w, err = e.s.Resume(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(full[100<<10:])
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := readPayload(t, e.s, b.ID()); err != nil || !bytes.Equal(got, full) {
		t.Fatalf("payload: %v", err)
	}

	// Deleting a partial while it is being resumed makes the resumption
	// fail, and leaves a tombstone.
	b = mkBundle(t, 3, 300<<10)
	receivePartial(t, e.s, b, 10)
	w, _ = e.s.Resume(ctx, b.ID())
	if err := e.s.Delete(ctx, b.ID(), 0); err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 300<<10-10))
	wantKind(t, w.Commit(ctx), ErrNotFound)
	if st, _ := e.s.Lookup(ctx, b.ID()); !st.Deleted || st.Partial {
		t.Errorf("Lookup = %+v", st)
	}
	if files, _ := os.ReadDir(filepath.Join(e.dir, "data")); len(files) != 1 {
		t.Errorf("%d payload files, want 1", len(files))
	}
	if s := e.s.Stats(); s.Partials != 0 || s.ReservedB != 0 || s.Receiving != 0 {
		t.Errorf("Stats = %+v", s)
	}
}
