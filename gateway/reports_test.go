package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/convergence/mem"
	"github.com/mulegate/mulegate/gateway/control"
	"github.com/mulegate/mulegate/policy/identity"
)

// memNode starts a node on an in-memory network.
func memNode(t *testing.T, network *mem.Network, name string, tweak func(*config.Config)) *Node {
	t.Helper()
	cfg := testConfig(t, name)
	if tweak != nil {
		tweak(cfg)
	}
	id, _ := cfg.NodeID()
	ident, err := identity.Generate(id.String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := identity.NewTrust(nil, nil)
	n, err := New(Options{Config: cfg, Identity: ident, Trust: trust, Layer: func(sink convergence.Sink, events func(convergence.Event)) (convergence.Layer, error) {
		return network.NewLayer(id, sink, events), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestStatusReports: a bundle that asks for reception and delivery reports
// gets both, as BPv7 administrative records at its report-to endpoint.
func TestStatusReports(t *testing.T) {
	ctx := context.Background()
	network := mem.NewNetwork()
	a := memNode(t, network, "a", nil)
	b := memNode(t, network, "b", nil)
	if _, err := a.layer.Dial(ctx, b.ListenAddrs()[0], b.ID()); err != nil {
		t.Fatal(err)
	}
	dst := bundle.MustParseEID("dtn://b/inbox")
	body := []byte("please confirm")
	id, err := a.Send(ctx, SendRequest{
		Destination: dst, Lifetime: time.Hour, Length: uint64(len(body)),
		Flags: bundle.FlagReportReception | bundle.FlagReportDelivery | bundle.FlagStatusTimeRequested,
	}, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bundle to reach b", func() bool {
		got, _ := b.Deliveries(ctx, dst, 10)
		return len(got) == 1
	})
	if err := b.Ack(ctx, dst, id); err != nil {
		t.Fatal(err)
	}
	// The reports come back to a's own endpoint (its report-to, the source).
	seen := map[string]bool{}
	waitFor(t, "a reception and a delivery report at a", func() bool {
		got, _ := a.Deliveries(ctx, a.ID(), 10)
		for _, m := range got {
			if !m.Bundle.IsAdminRecord() {
				continue
			}
			p, err := a.OpenPayload(ctx, m.ID)
			if err != nil {
				continue
			}
			data, _ := io.ReadAll(p)
			p.Close()
			r, err := bundle.ParseStatusReport(data)
			if err != nil || r.Subject != id {
				continue
			}
			if r.Received.Asserted && r.Received.Time != 0 {
				seen["received"] = true
			}
			if r.Delivered.Asserted && r.Delivered.Time != 0 {
				seen["delivered"] = true
			}
		}
		return seen["received"] && seen["delivered"]
	})
}

// TestForgedNoticesDeleteNothing: delivery notices that are unsigned, or
// signed by another key than the certificate they carry, do not purge the
// bundle they name, and are counted as rejected.
func TestForgedNoticesDeleteNothing(t *testing.T) {
	ctx := context.Background()
	network := mem.NewNetwork()
	m := memNode(t, network, "m", nil)
	body := []byte("carry me to c")
	id, err := m.Send(ctx, SendRequest{Destination: bundle.MustParseEID("dtn://c/inbox"), Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}

	// The real c's certificate, and a stranger's key.
	c, err := identity.Generate("dtn://c/", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, mallory, _ := ed25519.GenerateKey(rand.Reader)
	unsigned := control.Notice{Subject: id, Destination: bundle.MustParseEID("dtn://c/"), DeliveredAt: bundle.FromTime(time.Now()), Expires: bundle.FromTime(time.Now().Add(time.Hour))}
	forged := unsigned
	if err := forged.Sign(mallory, [][]byte{c.Leaf().Raw}); err != nil {
		t.Fatal(err)
	}

	// A peer passes them on in a summary.
	fake := network.NewLayer(bundle.MustParseEID("dtn://x/"), nullSink{}, nil)
	t.Cleanup(func() { fake.Close() })
	sess, err := fake.Dial(ctx, m.ListenAddrs()[0], m.ID())
	if err != nil {
		t.Fatal(err)
	}
	payload, err := control.MarshalSummary(control.Summary{Epoch: 1, Full: true, Notices: []control.Notice{unsigned, forged}})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bundle.New(bundle.Params{
		Source: bundle.MustParseEID("dtn://x/"), Destination: m.ID(), Flags: bundle.FlagAdminRecord | bundle.FlagMustNotFragment,
		Lifetime: time.Minute, CRCType: bundle.CRC32C, PayloadLength: uint64(len(payload)),
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the contact to be up at m", func() bool { return m.liveContact(bundle.MustParseEID("dtn://x/")) != nil })
	if err := sess.Send(ctx, sb, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both notices to be rejected", func() bool {
		return metricWith(m, "mulegate_delivery_notices_total", "outcome", "rejected") == 2
	})
	if !holds(m, id) {
		t.Fatal("a forged notice purged the bundle")
	}
	if metricWith(m, "mulegate_delivery_notices_total", "outcome", "accepted") != 0 {
		t.Fatal("a forged notice was accepted")
	}
}
