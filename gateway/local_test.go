package gateway

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence/mem"
)

// TestLocalDeliveryAtMostOnceAcrossRestart: a bundle an application took
// (delivered and acknowledged) at C is not delivered again when C restarts
// from its data directory and a peer offers the same bundle once more, as
// a mule that has not heard the delivery notice yet would.
func TestLocalDeliveryAtMostOnceAcrossRestart(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		endpoint bundle.EID
		register bool // a group endpoint must be registered
	}{
		// Deleted once delivered; a tombstone refuses the copy.
		{"an endpoint of the node", bundle.MustParseEID("dtn://c/inbox"), false},
		// Kept to travel to the group's other members; its progress record
		// says it was delivered here.
		{"a group endpoint", bundle.MustParseEID("dtn://~friends/chat"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			network := mem.NewNetwork()
			cfg := testConfig(t, "c")
			c := memNodeFrom(t, network, cfg, nil)
			if tc.register {
				if err := c.Register(ctx, tc.endpoint); err != nil {
					t.Fatal(err)
				}
			}
			payload := []byte("deliver me once")
			b, err := bundle.New(bundle.Params{
				Source: bundle.MustParseEID("dtn://m/app"), Destination: tc.endpoint,
				Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 8, PayloadLength: uint64(len(payload)),
			})
			if err != nil {
				t.Fatal(err)
			}
			// offer has the mule hand the bundle to the node now in place
			// of C, and returns C's verdict: the in-memory link returns
			// once C has dealt with it.
			offer := func(to *Node) error {
				t.Helper()
				m := network.NewLayer(bundle.MustParseEID("dtn://m/"), nullSink{}, nil)
				defer m.Close()
				sess, err := m.Dial(ctx, to.ListenAddrs()[0], to.ID())
				if err != nil {
					t.Fatal(err)
				}
				return sess.Send(ctx, b, bytes.NewReader(payload))
			}
			if err := offer(c); err != nil {
				t.Fatalf("offering the bundle: %v", err)
			}
			got, err := c.Deliveries(ctx, tc.endpoint, 10)
			if err != nil || len(got) != 1 || got[0].ID != b.ID() {
				t.Fatalf("deliveries before the restart: %v, %v; want the bundle", got, err)
			}
			if err := c.Ack(ctx, tc.endpoint, b.ID()); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			c2 := memNodeFrom(t, network, cfg, nil)
			// Taken as a duplicate, or refused as already delivered (C
			// signed a delivery notice for it): either way, not again.
			if err := offer(c2); err != nil && !errors.Is(err, ErrDelivered) {
				t.Fatalf("offering the bundle again: %v", err)
			}
			if got, err := c2.Deliveries(ctx, tc.endpoint, 10); err != nil || len(got) != 0 {
				t.Fatalf("after the restart and a second offer, %d deliveries wait (%v); the bundle was delivered already", len(got), err)
			}
			if d := counterValue(c2, "mulegate_bundles_delivered_total"); d != 0 {
				t.Fatalf("the restarted node delivered %v bundles, want none", d)
			}
		})
	}
}
