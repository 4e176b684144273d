package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/convergence/mem"
	"github.com/mulegate/mulegate/convergence/quic"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/policy/acl"
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
// with group CA certificates; the bundles are crafted. The last row is a
// real node whose sends run into a rate limit: it backs off and gets
// through on its own.
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
	cfg.ACL = acl.Config{
		Inbound: []acl.Entry{{Allow: "campfire/s"}, {Allow: "campfire/ratey"}},
		Senders: []acl.Entry{{Deny: "dtn://blocked/"}},
	}
	cfg.RateLimit = ratelimit.Config{Senders: []ratelimit.Rule{
		{Match: "campfire/ratey", BundlesPerSecond: 1, BundleBurst: 1},
		// One fragment per 100 s: the second is over the limit whatever
		// the machine's speed.
		{Match: "dtn://fragrate/", BundlesPerSecond: 0.01, BundleBurst: 1},
	}}
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
		unlisted := member(t, campfire, "campfire/unlisted", "dtn://unlisted/")
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
			// A valid member certificate, but acl.inbound does not list it.
			{"an unknown peer", unlisted, nil, "peer_denied"},
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
	blockedKey, err := bpsec.KeyOf(member(t, campfire, "campfire/blocked", "dtn://blocked/"))
	if err != nil {
		t.Fatal(err)
	}
	fragRateKey, err := bpsec.KeyOf(member(t, campfire, "campfire/fragrate", "dtn://fragrate/"))
	if err != nil {
		t.Fatal(err)
	}
	// fragment is the fragment of b carrying payload bytes [off, off+n).
	fragment := func(b *bundle.Bundle, p []byte, off, n uint64) (*bundle.Bundle, []byte) {
		f, err := b.Fragment(off, n)
		if err != nil {
			t.Fatal(err)
		}
		return f, p[off : off+n]
	}
	// fragRate is the first fragment, with the signature, of a bundle from
	// dtn://fragrate/.
	fragRate := func(seq uint64) (*bundle.Bundle, []byte) {
		b, p := newBundle("dtn://r/open/x", 100, func(p *bundle.Params) {
			p.Source = bundle.MustParseEID("dtn://fragrate/app")
			p.Sequence = seq
		})
		return fragment(signed(b, p, fragRateKey), p, 0, 50)
	}
	rows := []struct {
		name string
		make func() (*bundle.Bundle, []byte)
		kind string
		// prime, when set, sends what must come before the row's bundle;
		// what it leaves in the store is not the row's doing.
		prime func()
	}{
		{"a forged signature", func() (*bundle.Bundle, []byte) {
			// The signature's last byte is the integrity block's last.
			b, p := newBundle("dtn://r/secure/x", 100)
			signed(b, p, key)
			bib := b.Block(bundle.BlockIntegrity)
			bib.Data[len(bib.Data)-1] ^= 1
			return b, p
		}, "forged_signature", nil},
		{"a tampered payload", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/secure/x", 100)
			signed(b, p, key)
			p[7] ^= 1
			return b, p
		}, "tampered_payload", nil},
		{"a tampered primary block", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/secure/x", 100)
			signed(b, p, key)
			b.Primary.Lifetime += time.Minute
			return b, p
		}, "tampered_primary_block", nil},
		{"an unsigned bundle where signatures are required", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/secure/x", 100)
		}, "unsigned", nil},
		{"an oversized bundle", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/open/x", 2<<20)
		}, "too_large", nil},
		{"an expired bundle", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/open/x", 100, func(p *bundle.Params) { p.Created = clock.Now().Add(-2 * time.Hour) })
		}, "expired", nil},
		{"too many hops", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/open/x", 100)
			b.SetHopCount(bundle.HopCount{Limit: 8, Count: 9})
			return b, p
		}, "hop_limit_exceeded", nil},
		{"a creation time in the future", func() (*bundle.Bundle, []byte) {
			return newBundle("dtn://r/open/x", 100, func(p *bundle.Params) { p.Created = clock.Now().Add(time.Hour) })
		}, "creation_time_in_future", nil},
		// A fragment cannot show a signature (it covers the whole payload):
		// where one is required, a fragment is refused, whoever signed the
		// bundle it came from.
		{"a fragment where signatures are required", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/secure/x", 100)
			return fragment(signed(b, p, key), p, 0, 50)
		}, "fragment_unverifiable", nil},
		// Elsewhere a fragment is judged by the claim of its source, so
		// fragmenting a signed bundle (whose signature no fragment can
		// show) dodges neither the senders' list nor their rate limits.
		{"a fragment from a denied sender", func() (*bundle.Bundle, []byte) {
			b, p := newBundle("dtn://r/open/x", 100, func(p *bundle.Params) { p.Source = bundle.MustParseEID("dtn://blocked/app") })
			return fragment(signed(b, p, blockedKey), p, 0, 50)
		}, "sender_denied", nil},
		{"a fragment over its sender's rate limit", func() (*bundle.Bundle, []byte) {
			return fragRate(501)
		}, "rate_limited", func() {
			// A first fragment spends the source's budget.
			f, fp := fragRate(500)
			if err := sess.Send(ctx, f, bytes.NewReader(fp)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the first fragment to be stored", func() bool { return holds(r, f.ID()) })
		}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if row.prime != nil {
				row.prime()
			}
			before := metricWith(r, "mulegate_bundles_rejected_total", "kind", row.kind)
			stBefore := r.store.Stats()
			b, p := row.make()
			_ = sess.Send(ctx, b, bytes.NewReader(p)) // the refusal may come after the last byte left
			waitFor(t, "the refusal to be counted", func() bool {
				return metricWith(r, "mulegate_bundles_rejected_total", "kind", row.kind) == before+1
			})
			st := r.store.Stats()
			if st.Bundles != stBefore.Bundles || st.Partials != stBefore.Partials || holds(r, b.ID()) {
				t.Fatalf("the refused bundle left something in the store: %+v, before it %+v", st, stBefore)
			}
		})
	}

	// The refusal is transient as the sender sees it: its progress record
	// for r waits for a time in the future instead of failing, and the
	// sender's own retries get both bundles through once the budget refills.
	t.Run("a sender over its rate limit", func(t *testing.T) {
		scfg := testConfig(t, "ratey")
		// Long enough a first backoff to be seen between two polls.
		scfg.Routing.RetryMin = 400 * time.Millisecond
		scfg.Routing.RetryMax = time.Second
		sender, err := New(Options{Config: scfg, Logger: zaptest.NewLogger(t).Named("ratey"), Identity: member(t, campfire, "campfire/ratey", "dtn://ratey/"), Trust: trust})
		if err != nil {
			t.Fatal(err)
		}
		if err := sender.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sender.Close() })
		sender.AddPeer(r.ID(), addr)
		refusedBefore := metricWith(r, "mulegate_bundles_rejected_total", "kind", "rate_limited")
		var ids []bundle.ID
		for i := range 2 {
			body := []byte(fmt.Sprintf("over the limit %d", i))
			id, err := sender.Send(ctx, SendRequest{Destination: bundle.MustParseEID("dtn://r/open/x"), Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		dest := "peer:" + r.ID().String()
		var backedOff store.Progress
		waitFor(t, "both bundles to reach r", func() bool {
			for _, id := range ids {
				ps, _ := sender.store.ProgressOf(ctx, id)
				for _, p := range ps {
					if p.Dest != dest {
						continue
					}
					if p.State == store.Failed {
						t.Fatalf("the sender gave up on %s after a rate limit: %+v", id, p)
					}
					if p.State == store.Pending && p.Attempts > 0 && p.NextAttempt.After(time.Now()) {
						backedOff = p
					}
				}
			}
			return holds(r, ids[0]) && holds(r, ids[1])
		})
		if metricWith(r, "mulegate_bundles_rejected_total", "kind", "rate_limited") <= refusedBefore {
			t.Fatal("r refused nothing for the rate limit; the row tested nothing")
		}
		if backedOff.Attempts == 0 {
			t.Fatal("the sender's progress record never showed a retry due in the future")
		}
		if !strings.Contains(backedOff.LastError, "transient") {
			t.Errorf("the sender recorded the refusal as %q, not as transient", backedOff.LastError)
		}
	})
}

// TestUnknownSignerJudgedAsClaimed: under trust on first use, a bundle
// signed by a node this node never met is carried as unsigned, and judged
// as unsigned bundles are, by the claim of its source: a node on the
// senders' blocklist cannot get in by signing with a key nobody pinned,
// nor escape its rate limit that way.
func TestUnknownSignerJudgedAsClaimed(t *testing.T) {
	ctx := context.Background()
	network := mem.NewNetwork()
	r := memNode(t, network, "r", func(c *config.Config) {
		c.ACL.Senders = []acl.Entry{{Deny: "dtn://mallory/"}}
		c.RateLimit.Senders = []ratelimit.Rule{{Match: "dtn://flood/", BundlesPerSecond: 0.01, BundleBurst: 1}}
	})
	// The in-memory link pins nothing, so no signer is known to r.
	x := network.NewLayer(bundle.MustParseEID("dtn://x/"), nullSink{}, nil)
	t.Cleanup(func() { x.Close() })
	sess, err := x.Dial(ctx, r.ListenAddrs()[0], r.ID())
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	// send has the node src sign a bundle with a fresh key and hands it to
	// r, returning r's verdict (the in-memory link reports it).
	send := func(src string) (bundle.ID, error) {
		seq++
		signer, err := identity.Generate(src, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		key, err := bpsec.KeyOf(signer)
		if err != nil {
			t.Fatal(err)
		}
		payload := []byte("signed by a key r never saw")
		b, err := bundle.New(bundle.Params{
			Source: bundle.MustParseEID(src + "app"), Destination: bundle.MustParseEID("dtn://r/inbox"),
			Sequence: seq, Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 8, PayloadLength: uint64(len(payload)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := bpsec.Sign(b, bytes.NewReader(payload), key); err != nil {
			t.Fatal(err)
		}
		return b.ID(), sess.Send(ctx, b, bytes.NewReader(payload))
	}
	for _, tc := range []struct {
		name      string
		source    string
		sends     int    // the last one is judged
		kind      string // "" when it is accepted
		transient bool
	}{
		{"a denied node signing with an unpinned key", "dtn://mallory/", 1, "sender_denied", false},
		{"an unpinned signer over its source's rate limit", "dtn://flood/", 2, "rate_limited", true},
		{"an unpinned signer nobody restricts", "dtn://friend/", 1, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metricWith(r, "mulegate_bundles_rejected_total", "kind", tc.kind)
			var id bundle.ID
			for i := 0; i < tc.sends; i++ {
				if id, err = send(tc.source); i < tc.sends-1 && err != nil {
					t.Fatalf("send %d of %d: %v", i+1, tc.sends, err)
				}
			}
			if tc.kind == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				m, gerr := r.store.Get(ctx, id)
				if gerr != nil {
					t.Fatal(gerr)
				}
				if sig := r.Signature(m); sig != "" {
					t.Errorf("a signature r could not check shows as %q", sig)
				}
				return
			}
			var rej *convergence.RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("accepted (%v); want a refusal of kind %s", err, tc.kind)
			}
			if rej.Transient != tc.transient {
				t.Errorf("refusal transient = %v, want %v: %v", rej.Transient, tc.transient, err)
			}
			if got := metricWith(r, "mulegate_bundles_rejected_total", "kind", tc.kind); got != before+1 {
				t.Errorf("%s refusals counted: %v, want %v", tc.kind, got, before+1)
			}
			if holds(r, id) {
				t.Error("the refused bundle was stored")
			}
		})
	}
}
