package gateway

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence/mem"
	"github.com/mulegate/mulegate/policy/bpsec"
	"github.com/mulegate/mulegate/policy/identity"
)

// TestFragmentsReassembledBeforeDelivery: an application only ever gets
// whole bundles. Fragments addressed to this node wait until they cover the
// payload; the bundle rebuilt from them is verified whole (a signature
// covers the whole payload, so no fragment could show it), delivered, and
// the fragments are dropped. A rebuilt bundle whose signature fails is
// refused, and nothing is delivered.
func TestFragmentsReassembledBeforeDelivery(t *testing.T) {
	ctx := context.Background()
	signer, err := identity.Generate("dtn://s/", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := bpsec.KeyOf(signer)
	if err != nil {
		t.Fatal(err)
	}
	dst := bundle.MustParseEID("dtn://r/inbox")
	payload := bytes.Repeat([]byte("fragmented payload "), 10)
	type piece struct{ off, n uint64 }
	for i, tc := range []struct {
		name      string
		pieces    []piece
		tamper    bool   // flip a byte of the last piece's payload
		delivered bool   // a whole bundle is delivered at the end
		kind      string // the refusal counted at the end, if any
	}{
		{"all fragments, in order", []piece{{0, 80}, {80, 110}}, false, true, ""},
		{"all fragments, out of order and overlapping", []piece{{60, 130}, {0, 70}}, false, true, ""},
		{"a fragment missing", []piece{{0, 80}}, false, false, ""},
		{"a fragment tampered with", []piece{{0, 80}, {80, 110}}, true, false, "tampered_payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			network := mem.NewNetwork()
			r := memNode(t, network, "r", nil)
			// r met s directly, so it can check s's signature.
			if _, err := r.trust.Verify(signer.Chain(), "dtn://s/"); err != nil {
				t.Fatal(err)
			}
			x := network.NewLayer(bundle.MustParseEID("dtn://x/"), nullSink{}, nil)
			t.Cleanup(func() { x.Close() })
			sess, err := x.Dial(ctx, r.ListenAddrs()[0], r.ID())
			if err != nil {
				t.Fatal(err)
			}
			b, err := bundle.New(bundle.Params{
				Source: bundle.MustParseEID("dtn://s/app"), Destination: dst, Sequence: uint64(i),
				Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 8, PayloadLength: uint64(len(payload)),
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := bpsec.Sign(b, bytes.NewReader(payload), key); err != nil {
				t.Fatal(err)
			}
			refusedBefore := metricWith(r, "mulegate_bundles_rejected_total", "kind", tc.kind)
			var frags []bundle.ID
			for k, p := range tc.pieces {
				f, err := b.Fragment(p.off, p.n)
				if err != nil {
					t.Fatal(err)
				}
				data := bytes.Clone(payload[p.off : p.off+p.n])
				if tc.tamper && k == len(tc.pieces)-1 {
					data[len(data)/2] ^= 1
				}
				// The in-memory link returns once r has stored (and, with
				// the last piece, reassembled) it.
				if err := sess.Send(ctx, f, bytes.NewReader(data)); err != nil {
					t.Fatalf("fragment [%d, %d): %v", p.off, p.off+p.n, err)
				}
				frags = append(frags, f.ID())
				if k < len(tc.pieces)-1 {
					if got, _ := r.Deliveries(ctx, dst, 10); len(got) != 0 {
						t.Fatalf("a fragment was delivered before the bundle was whole: %v", got[0].ID)
					}
				}
			}
			got, err := r.Deliveries(ctx, dst, 10)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.delivered {
				if len(got) != 0 {
					t.Fatalf("delivered %v", got[0].ID)
				}
				if tc.kind != "" {
					if n := metricWith(r, "mulegate_bundles_rejected_total", "kind", tc.kind); n != refusedBefore+1 {
						t.Fatalf("%s refusals counted: %v, want %v", tc.kind, n, refusedBefore+1)
					}
					for _, id := range frags {
						if holds(r, id) {
							t.Errorf("fragment %s of a refused bundle is still held", id)
						}
					}
				} else {
					for _, id := range frags {
						if !holds(r, id) {
							t.Errorf("fragment %s was dropped while the rest is awaited", id)
						}
					}
				}
				return
			}
			if len(got) != 1 || got[0].ID != b.ID() || got[0].Bundle.Primary.IsFragment() {
				t.Fatalf("deliveries: %v, want the whole bundle %s", got, b.ID())
			}
			if sig := r.Signature(got[0]); !strings.HasPrefix(sig, "valid:dtn://s/") {
				t.Errorf("the reassembled bundle's signature shows as %q, want verified", sig)
			}
			p, err := r.OpenPayload(ctx, b.ID())
			if err != nil {
				t.Fatal(err)
			}
			whole, _ := io.ReadAll(p)
			p.Close()
			if !bytes.Equal(whole, payload) {
				t.Fatal("the reassembled payload differs from the original")
			}
			for _, id := range frags {
				if holds(r, id) {
					t.Errorf("fragment %s is still held beside the whole bundle", id)
				}
			}
		})
	}
}
