package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/convergence/quic"
	"github.com/mulegate/mulegate/policy/bpsec"
	"github.com/mulegate/mulegate/policy/identity"
	"github.com/mulegate/mulegate/policy/ratelimit"
	"go.uber.org/zap/zaptest"
)

// member makes a node identity whose certificate the group CA issued.
func member(t *testing.T, ca *identity.CA, name, node string) *identity.Identity {
	t.Helper()
	id, err := identity.Generate(node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(name, node, id.PublicKey(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err = id.Install(identity.EncodeChain(cert, ca.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// offsetClock is a node clock the test can move forward.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

type nullSink struct{}

func (nullSink) Receive(context.Context, convergence.Session, *bundle.Bundle, *bundle.PayloadReader) error {
	return convergence.Reject(bundle.ReasonNoInformation, nil)
}

// metricWith sums the series of a counter that carry the label value.
func metricWith(n *Node, name, label, value string) float64 {
	families, _ := n.metrics.reg.Gather()
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// TestPolicyRefusals is the bad-input table of the policy issue: each row
// is refused for its own reason, counted in the metrics under its own
// kind, and leaves nothing in the store. The peers are real QUIC clients
// with group CA certificates; the bundles are crafted.
func TestPolicyRefusals(t *testing.T) {
	ctx := context.Background()
	campfire, err := identity.NewCA("campfire", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	riverside, _ := identity.NewCA("riverside", 24*time.Hour)
	trust, err := identity.NewTrust([]*x509.Certificate{campfire.Certificate()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "r")
	cfg.Limits.MaxBundleSize = 1 << 20
	cfg.Signatures.RequireFor = []string{"dtn://r/secure/**"}
	cfg.RateLimit = ratelimit.Config{Senders: []ratelimit.Rule{{Match: "campfire/ratey", BundlesPerSecond: 1, BundleBurst: 1}}}
	clock := &offsetClock{}
	r, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t), Identity: member(t, campfire, "campfire/r", "dtn://r/"), Trust: trust, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	addr := r.ListenAddrs()[0]

	// dial connects to r as id, presenting chain (id's own when nil).
	dial := func(id *identity.Identity, chain *tls.Certificate) (convergence.Session, error) {
		tc := convergence.IdentityTLS(id, trust)
		if chain != nil {
			client := tc.Client
			tc.Client = func(e bundle.EID) *tls.Config {
				c := client(e)
				c.Certificates = []tls.Certificate{*chain}
				c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return chain, nil }
				return c
			}
		}
		layer, err := quic.New(quic.Options{TLS: tc, Sink: nullSink{}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { layer.Close() })
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return layer.Dial(dctx, addr, r.ID())
	}

	t.Run("peers refused in the handshake", func(t *testing.T) {
		selfSigned, _ := identity.Generate("dtn://stranger/", time.Hour)
		outsider := member(t, riverside, "riverside/carol", "dtn://carol/")
		expiring, _ := identity.Generate("dtn://late/", time.Hour)
		expiredCert, err := campfire.Issue("campfire/late", "dtn://late/", expiring.PublicKey(), time.Nanosecond)
		if err != nil {
			t.Fatal(err)
		}
		expired := expiring.TLSCertificate()
		expired.Certificate = [][]byte{expiredCert.Raw, campfire.Certificate().Raw}
		for _, row := range []struct {
			name  string
			id    *identity.Identity
			chain *tls.Certificate
			kind  string
		}{
			{"an unknown peer (self-signed)", selfSigned, nil, "untrusted_certificate"},
			{"a certificate from an untrusted CA", outsider, nil, "untrusted_certificate"},
			{"an expired certificate", expiring, &expired, "expired_certificate"},
		} {
			t.Run(row.name, func(t *testing.T) {
				before := metricWith(r, "mulegate_peers_refused_total", "kind", row.kind)
				if s, err := dial(row.id, row.chain); err == nil {
					s.Close(nil)
					t.Fatal("the handshake succeeded")
				}
				waitFor(t, "the refusal to be counted", func() bool {
					return metricWith(r, "mulegate_peers_refused_total", "kind", row.kind) == before+1
				})
			})
		}
	})

	s := member(t, campfire, "campfire/s", "dtn://s/")
	sess, err := dial(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := bpsec.KeyOf(s)
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	newBundle := func(dst string, size int, mods ...func(*bundle.Params)) (*bundle.Bundle, []byte) {
		seq++
		p := bundle.Params{
			Source: bundle.MustParseEID("dtn://s/app"), Destination: bundle.MustParseEID(dst),
			Created: clock.Now(), Sequence: seq, Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 8,
			PayloadLength: uint64(size),
		}
		for _, m := range mods {
			m(&p)
		}
		b, err := bundle.New(p)
		if err != nil {
			t.Fatal(err)
		}
		return b, bytes.Repeat([]byte{0x5a}, size)
	}
	signed := func(b *bundle.Bundle, payload []byte, k bpsec.Key) *bundle.Bundle {
		if err := bpsec.Sign(b, bytes.NewReader(payload), k); err != nil {
			t.Fatal(err)
		}
		return b
	}
	rows := []struct {
		name string
		make func() (*bundle.Bundle, []byte)
		kind string
	}{
		{"a forged signature", func() (*bundle.Bundle, []byte) {
			// The signature's last byte is the integrity block's last.
			b, p := newBundle("dtn://r/secure/x", 100)
			signed(b, p, key)
			bib := b.Block(bundle.BlockIntegrity)
			bib.Data[len(bib.Data)-1] ^= 1
			return b, p
		}, "forged_signature"},
		{"a tampered payload", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/secure/x", 100)
			signed(b, p, key)
			p[7] ^= 1
			return b, p
		}, "tampered_payload"},
		{"a tampered primary block", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/secure/x", 100)
			signed(b, p, key)
			b.Primary.Lifetime += time.Minute
			return b, p
		}, "tampered_primary_block"},
		{"an unsigned bundle where signatures are required", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/secure/x", 100)
		}, "unsigned"},
		{"an oversized bundle", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/open/x", 2<<20)
		}, "too_large"},
		{"an expired bundle", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/open/x", 100, func(p *bundle.Params) { p.Created = clock.Now().Add(-2 * time.Hour) })
		}, "expired"},
		{"too many hops", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/open/x", 100)
			b.SetHopCount(bundle.HopCount{Limit: 8, Count: 9})
			return b, p
		}, "hop_limit_exceeded"},
		{"a creation time in the future", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/open/x", 100, func(p *bundle.Params) { p.Created = clock.Now().Add(time.Hour) })
		}, "creation_time_in_future"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			before := metricWith(r, "mulegate_bundles_rejected_total", "kind", row.kind)
			b, p := row.make()
			_ = sess.Send(ctx, b, bytes.NewReader(p)) // the refusal may come after the last byte left
			waitFor(t, "the refusal to be counted", func() bool {
				return metricWith(r, "mulegate_bundles_rejected_total", "kind", row.kind) == before+1
			})
			st := r.store.Stats()
			if st.Bundles != 0 || st.Partials != 0 || holds(r, b.ID()) {
				t.Fatalf("the refused bundle left something in the store: %+v", st)
			}
		})
	}

	t.Run("a sender over its rate limit", func(t *testing.T) {
		ratey := member(t, campfire, "campfire/ratey", "dtn://ratey/")
		rs, err := dial(ratey, nil)
		if err != nil {
			t.Fatal(err)
		}
		rkey, _ := bpsec.KeyOf(ratey)
		mk := func(i uint64) (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/open/x", 100, func(p *bundle.Params) {
				p.Source = bundle.MustParseEID("dtn://ratey/app")
				p.Sequence = 1000 + i
			})
			return signed(b, p, rkey), p
		}
		first, p1 := mk(1)
		if err := rs.Send(ctx, first, bytes.NewReader(p1)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the first bundle to be stored", func() bool { return holds(r, first.ID()) })
		before := metricWith(r, "mulegate_bundles_rejected_total", "kind", "rate_limited")
		second, p2 := mk(2)
		_ = rs.Send(ctx, second, bytes.NewReader(p2))
		waitFor(t, "the second to be refused (transiently)", func() bool {
			return metricWith(r, "mulegate_bundles_rejected_total", "kind", "rate_limited") == before+1
		})
		if holds(r, second.ID()) {
			t.Fatal("the bundle over the limit was stored")
		}
		clock.Advance(2 * time.Second) // the sender backs off
		if err := rs.Send(ctx, second, bytes.NewReader(p2)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the second bundle to be accepted after backing off", func() bool { return holds(r, second.ID()) })
	})
}
