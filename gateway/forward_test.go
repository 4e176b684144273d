package gateway

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence/mem"
	"github.com/mulegate/mulegate/gateway/store"
)

// TestForwardable: whatever the strategy says, a bundle never goes back to
// the node it came from, never past its hop limit, never once expired, and
// never onwards from its destination.
func TestForwardable(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	n := &Node{id: bundle.MustParseEID("dtn://here/"), now: func() time.Time { return now }}
	peer := bundle.MustParseEID("dtn://p/")
	// held is a bundle this node holds, as the store describes it.
	held := func(dst string, mods ...func(*store.Meta)) store.Meta {
		b, err := bundle.New(bundle.Params{
			Source: bundle.MustParseEID("dtn://src/app"), Destination: bundle.MustParseEID(dst),
			Created: now.Add(-time.Minute), Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 3, PayloadLength: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		m := store.Meta{ID: b.ID(), Bundle: b, From: "peer:dtn://q/", ReceivedAt: now.Add(-time.Minute), ExpiresAt: now.Add(59 * time.Minute)}
		for _, mod := range mods {
			mod(&m)
		}
		return m
	}
	hops := func(count uint64) func(*store.Meta) {
		return func(m *store.Meta) { m.Bundle.SetHopCount(bundle.HopCount{Limit: 3, Count: count}) }
	}
	for _, tc := range []struct {
		name string
		meta store.Meta
		want bool
	}{
		{"to a peer it did not come from", held("dtn://far/inbox"), true},
		{"to its destination", held("dtn://p/inbox"), true},
		{"back to the peer it came from", held("dtn://far/inbox", func(m *store.Meta) { m.From = "peer:" + peer.String() }), false},
		{"back to the previous node its block names", held("dtn://far/inbox", func(m *store.Meta) {
			m.From = "api"
			if err := m.Bundle.SetPreviousNode(peer); err != nil {
				t.Fatal(err)
			}
		}), false},
		{"with one hop left", held("dtn://far/inbox", hops(2)), true},
		{"at its hop limit", held("dtn://far/inbox", hops(3)), false},
		{"expiring later", held("dtn://far/inbox", func(m *store.Meta) { m.ExpiresAt = now.Add(time.Second) }), true},
		{"expired, before the sweeper deleted it", held("dtn://far/inbox", func(m *store.Meta) { m.ExpiresAt = now }), false},
		{"from its destination, this node", held("dtn://here/inbox"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := n.forwardable(tc.meta, peer); got != tc.want {
				t.Fatalf("forwardable = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAgeGrowsOnForwarding: a bundle with no creation time (a source
// without a clock) carries its age in a bundle age block, and each hop
// adds the time it spent there (RFC 9171 §4.4.2), or it would never expire.
func TestAgeGrowsOnForwarding(t *testing.T) {
	const initialAge, residence = time.Minute, 10 * time.Minute
	ctx := context.Background()
	network := mem.NewNetwork()
	clock := &offsetClock{}
	a := memNodeFrom(t, network, testConfig(t, "a"), clock.Now)

	x := network.NewLayer(bundle.MustParseEID("dtn://x/"), nullSink{}, nil)
	t.Cleanup(func() { x.Close() })
	sess, err := x.Dial(ctx, a.ListenAddrs()[0], a.ID())
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("from a source without a clock")
	b, err := bundle.New(bundle.Params{
		Source: bundle.MustParseEID("dtn://x/sensor"), Destination: bundle.MustParseEID("dtn://c/inbox"),
		Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 8, PayloadLength: uint64(len(payload)),
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Primary.Creation.Time = 0
	b.SetAge(initialAge)
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := sess.Send(ctx, b, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(residence) // the bundle spends ten minutes at a

	c := memNode(t, network, "b", nil)
	if _, err := c.layer.Dial(ctx, a.ListenAddrs()[0], a.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bundle to reach b", func() bool { return holds(c, b.ID()) })
	m, err := c.store.Get(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	age, ok, err := m.Bundle.Age()
	if err != nil || !ok {
		t.Fatalf("the forwarded bundle has no age block (present %v): %v", ok, err)
	}
	if age < initialAge+residence || age > initialAge+residence+time.Minute {
		t.Fatalf("age at b = %v, want %v plus the ten minutes at a (%v) and little more", age, initialAge, initialAge+residence)
	}
}
