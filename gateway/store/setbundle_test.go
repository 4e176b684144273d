package store

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/mulegate/mulegate/bundle"
)

func TestWriterSetBundle(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		size  int
		quota int64
		mut   func(b *bundle.Bundle)
		want  error
	}{
		{"adds a block", 100, 0, func(b *bundle.Bundle) {
			b.Blocks = append(b.Blocks, bundle.Block{Type: 200, Number: 9, CRCType: bundle.CRC32C, Data: bytes.Repeat([]byte{7}, 300)})
		}, nil},
		{"adds a block to a file payload", 100 << 10, 0, func(b *bundle.Bundle) {
			b.Blocks = append(b.Blocks, bundle.Block{Type: 200, Number: 9, CRCType: bundle.CRC32C, Data: []byte{1}})
		}, nil},
		{"no room for the bigger header", 100, 0, func(b *bundle.Bundle) {
			b.Blocks = append(b.Blocks, bundle.Block{Type: 200, Number: 9, CRCType: bundle.CRC32C, Data: bytes.Repeat([]byte{7}, 5000)})
		}, ErrFull},
		{"another bundle", 100, 0, func(b *bundle.Bundle) { b.Primary.Creation.Sequence++ }, ErrInvalid},
		{"another length", 100, 0, func(b *bundle.Bundle) { b.Payload.Length++ }, ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{}
			if tt.want == ErrFull {
				opts.MaxBytes = 2000
			}
			e := newEnv(t, opts)
			b := mkBundle(t, 1, tt.size)
			w, err := e.s.BeginPut(ctx, b, "api")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort(false)
			payload := bytes.Repeat([]byte{0xaa}, tt.size)
			if _, err := w.Write(payload); err != nil {
				t.Fatal(err)
			}
			changed := b.Clone()
			tt.mut(changed)
			err = w.SetBundle(changed)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("SetBundle = %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			if err := w.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			m, err := e.s.Get(ctx, b.ID())
			if err != nil {
				t.Fatal(err)
			}
			if m.Bundle.Block(200) == nil {
				t.Fatal("the committed metadata lacks the block added by SetBundle")
			}
			if want, _ := changed.EncodedLen(); m.EncodedLen != want {
				t.Fatalf("encoded length %d, want %d", m.EncodedLen, want)
			}
			e.reopen()
			if m, err := e.s.Get(ctx, b.ID()); err != nil || m.Bundle.Block(200) == nil {
				t.Fatalf("after reopen: %v", err)
			}
		})
	}
}
