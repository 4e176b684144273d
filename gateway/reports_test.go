package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/convergence/mem"
	"github.com/mulegate/mulegate/convergence/quic"
	"github.com/mulegate/mulegate/gateway/control"
	"github.com/mulegate/mulegate/policy/identity"
	"github.com/mulegate/mulegate/policy/ratelimit"
	"go.uber.org/zap/zaptest"
)

// memNode starts a node on an in-memory network.
func memNode(t *testing.T, network *mem.Network, name string, tweak func(*config.Config)) *Node {
	t.Helper()
	cfg := testConfig(t, name)
	if tweak != nil {
		tweak(cfg)
	}
	return memNodeFrom(t, network, cfg, nil)
}

// memNodeFrom starts a node from cfg on an in-memory network, with the
// clock now (time.Now when nil). Starting another from the same cfg, once
// the first is closed, is a restart: same data directory.
func memNodeFrom(t *testing.T, network *mem.Network, cfg *config.Config, now func() time.Time) *Node {
	t.Helper()
	id, _ := cfg.NodeID()
	ident, err := identity.Generate(id.String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// No Trust: the node loads its trust-on-first-use pins from its data
	// directory, as a real node does.
	n, err := New(Options{Config: cfg, Identity: ident, Now: now, Logger: zaptest.NewLogger(t).Named(cfg.Node), Layer: func(sink convergence.Sink, events func(convergence.Event)) (convergence.Layer, error) {
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
		for _, r := range statusReports(a, a.ID()) {
			if r.Subject != id {
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

// noticeSink is a peer's sink that keeps the delivery notices in the
// summaries it receives, and refuses everything else.
type noticeSink struct {
	mu      sync.Mutex
	notices []control.Notice
}

func (s *noticeSink) Receive(_ context.Context, _ convergence.Session, b *bundle.Bundle, payload *bundle.PayloadReader) error {
	if !b.IsAdminRecord() {
		return convergence.Reject(bundle.ReasonNoInformation, errors.New("this test peer takes summaries only"))
	}
	data, err := io.ReadAll(payload)
	if err != nil {
		return err
	}
	rec, err := bundle.UnmarshalAdminRecord(data)
	if err != nil || rec.Type != control.RecordSummary {
		return nil
	}
	sum, err := control.UnmarshalSummary(rec.Content)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.notices = append(s.notices, sum.Notices...)
	s.mu.Unlock()
	return nil
}

func (s *noticeSink) has(sig []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, nt := range s.notices {
		if bytes.Equal(nt.Signature, sig) {
			return true
		}
	}
	return false
}

// TestForgedNoticesDeleteNothing: delivery notices that are unsigned,
// signed by another key than the certificate they carry, or signed by a
// node the carrier never met (under trust on first use, anyone can make a
// self-signed certificate for dtn://c/) do not purge the bundle they name.
// The first two are counted as rejected; the third is passed on but not
// acted upon, and above all does not pin the forger's key: the real C still
// connects afterwards, gets the bundle, and its own notice purges the copy.
// The nodes talk QUIC, whose handshake is where pins are made and checked.
func TestForgedNoticesDeleteNothing(t *testing.T) {
	ctx := context.Background()
	m := startNode(t, testConfig(t, "m"))
	dst := bundle.MustParseEID("dtn://c/inbox")
	body := []byte("carry me to c")
	id, err := m.Send(ctx, SendRequest{Destination: dst, Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}

	// The real C's identity, made in its data directory before it runs;
	// a stranger's key; a forger's self-signed certificate for dtn://c/.
	ccfg := testConfig(t, "c")
	c, err := identity.LoadOrCreate(filepath.Join(ccfg.DataDir, identity.DirName), "dtn://c/")
	if err != nil {
		t.Fatal(err)
	}
	_, mallory, _ := ed25519.GenerateKey(rand.Reader)
	forger, err := identity.Generate("dtn://c/", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forgerKey := forger.TLSCertificate().PrivateKey.(ed25519.PrivateKey)
	base := control.Notice{Subject: id, Destination: bundle.MustParseEID("dtn://c/"), DeliveredAt: bundle.FromTime(time.Now()), Expires: bundle.FromTime(time.Now().Add(time.Hour))}
	sign := func(key ed25519.PrivateKey, cert *x509.Certificate) control.Notice {
		nt := base
		if err := nt.Sign(key, [][]byte{cert.Raw}); err != nil {
			t.Fatal(err)
		}
		return nt
	}

	// A peer, x, passes them on in its summaries.
	xIdent, err := identity.Generate("dtn://x/", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	xPins, err := identity.OpenPins(filepath.Join(t.TempDir(), identity.PinsFile))
	if err != nil {
		t.Fatal(err)
	}
	xTrust, err := identity.NewTrust(nil, xPins)
	if err != nil {
		t.Fatal(err)
	}
	fromM := &noticeSink{}
	xLayer, err := quic.New(quic.Options{TLS: convergence.IdentityTLS(xIdent, xTrust), Sink: fromM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { xLayer.Close() })
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	sess, err := xLayer.Dial(dctx, m.ListenAddrs()[0], m.ID())
	if err != nil {
		t.Fatal(err)
	}
	x := bundle.MustParseEID("dtn://x/")
	waitFor(t, "the contact to be up at m", func() bool { return m.liveContact(x) != nil })

	for i, tc := range []struct {
		name    string
		notice  control.Notice
		outcome string // of mulegate_delivery_notices_total at m
		relayed bool   // m passes it on
	}{
		{"unsigned", base, "rejected", false},
		{"signed with another key than its certificate's", sign(mallory, c.Leaf()), "rejected", false},
		{"signed by a self-signed dtn://c/ that m never met", sign(forgerKey, forger.Leaf()), "unverified", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metricWith(m, "mulegate_delivery_notices_total", "outcome", tc.outcome)
			payload, err := control.MarshalSummary(control.Summary{Epoch: uint64(i + 1), Full: true, Notices: []control.Notice{tc.notice}})
			if err != nil {
				t.Fatal(err)
			}
			sb, err := bundle.New(bundle.Params{
				Source: x, Destination: m.ID(), Flags: bundle.FlagAdminRecord | bundle.FlagMustNotFragment,
				Sequence: uint64(i), Lifetime: time.Minute, CRCType: bundle.CRC32C, PayloadLength: uint64(len(payload)),
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := sess.Send(ctx, sb, bytes.NewReader(payload)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the notice to be counted as "+tc.outcome, func() bool {
				return metricWith(m, "mulegate_delivery_notices_total", "outcome", tc.outcome) == before+1
			})
			if !holds(m, id) {
				t.Fatal("the notice purged the bundle")
			}
			if tc.relayed {
				waitFor(t, "m to pass the notice on", func() bool { return fromM.has(tc.notice.Signature) })
			}
		})
	}
	if got := metricWith(m, "mulegate_delivery_notices_total", "outcome", "accepted"); got != 0 {
		t.Fatalf("%v forged notices accepted", got)
	}
	if st, _ := m.store.Lookup(ctx, id); st.Deleted {
		t.Fatal("m holds a tombstone: a forged notice would refuse the bundle if it came back")
	}

	// The real C comes: m lets it in (the forger pinned nothing), hands it
	// the bundle, and C's own notice, checked against the key pinned in
	// that handshake, purges m's copy.
	cn := startNode(t, ccfg)
	m.AddPeer(cn.ID(), cn.ListenAddrs()[0])
	waitFor(t, "the bundle to reach the real C", func() bool {
		got, _ := cn.Deliveries(ctx, dst, 10)
		return len(got) == 1 && got[0].ID == id
	})
	waitFor(t, "C's own notice to purge m's copy", func() bool { return !holds(m, id) })
	if got := metricWith(m, "mulegate_delivery_notices_total", "outcome", "accepted"); got != 1 {
		t.Fatalf("m accepted %v notices, want C's one", got)
	}
	if fromM.has(base.Signature) || fromM.has(sign(mallory, c.Leaf()).Signature) {
		t.Error("m passed on a notice it rejected")
	}
}

// TestRefusalReports: a bundle this node refuses for good is deleted, so a
// "deleted" status report with the refusal's reason goes to its report-to
// endpoint when it asked for deletion reports (RFC 9171 §5.10, §6.1). An
// unknown block flagged "report if unprocessable" makes the reception
// report say block_unsupported, once. A transient refusal deletes nothing
// and reports nothing.
func TestRefusalReports(t *testing.T) {
	ctx := context.Background()
	network := mem.NewNetwork()
	r := memNode(t, network, "r", func(c *config.Config) {
		c.Signatures.RequireFor = []string{"dtn://r/secure/**"}
		c.RateLimit.Senders = []ratelimit.Rule{{Match: "dtn://ratey/", BundlesPerSecond: 0.01, BundleBurst: 1}}
	})
	// The reports go to an endpoint of r itself, where the test reads them.
	reportTo := bundle.MustParseEID("dtn://r/reports")
	x := network.NewLayer(bundle.MustParseEID("dtn://x/"), nullSink{}, nil)
	t.Cleanup(func() { x.Close() })
	sess, err := x.Dial(ctx, r.ListenAddrs()[0], r.ID())
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	mk := func(src, dst string, flags bundle.BundleFlags, blockFlags bundle.BlockFlags, hops uint64) *bundle.Bundle {
		seq++
		b, err := bundle.New(bundle.Params{
			Source: bundle.MustParseEID(src), Destination: bundle.MustParseEID(dst), ReportTo: reportTo,
			Flags: flags, Sequence: seq, Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 8, PayloadLength: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		if blockFlags != 0 {
			b.Blocks = append(b.Blocks, bundle.Block{Type: 200, Number: nextNumber(b), Flags: blockFlags, CRCType: bundle.CRC32C, Data: []byte{0x01}})
		}
		if hops > 0 {
			b.SetHopCount(bundle.HopCount{Limit: 8, Count: hops})
		}
		return b
	}
	const (
		reception = bundle.FlagReportReception
		deletion  = bundle.FlagReportDeletion
	)
	// reports lists the reports r made about id, as "kind:reason".
	reports := func(id bundle.ID) []string {
		var out []string
		for _, rep := range statusReports(r, reportTo) {
			if rep.Subject != id {
				continue
			}
			for kind, a := range map[string]bundle.StatusAssertion{"received": rep.Received, "forwarded": rep.Forwarded, "delivered": rep.Delivered, "deleted": rep.Deleted} {
				if a.Asserted {
					out = append(out, kind+":"+rep.Reason.String())
				}
			}
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		name    string
		make    func() *bundle.Bundle
		before  func() // sends what must come first
		refused bool
		want    []string
	}{
		{"an unknown block that asks to delete the bundle and to report", func() *bundle.Bundle {
			return mk("dtn://x/app", "dtn://r/inbox", reception|deletion, bundle.BlockDeleteIfUnproc|bundle.BlockReportIfUnproc, 0)
		}, nil, true, []string{"deleted:block_unsupported", "received:block_unsupported"}},
		{"an unknown block that asks to delete the bundle only", func() *bundle.Bundle {
			return mk("dtn://x/app", "dtn://r/inbox", reception|deletion, bundle.BlockDeleteIfUnproc, 0)
		}, nil, true, []string{"deleted:block_unsupported"}},
		{"an unknown block that asks to delete it, no reports asked for", func() *bundle.Bundle {
			return mk("dtn://x/app", "dtn://r/inbox", 0, bundle.BlockDeleteIfUnproc|bundle.BlockReportIfUnproc, 0)
		}, nil, true, nil},
		{"an unknown block that asks for a report, bundle kept", func() *bundle.Bundle {
			return mk("dtn://x/app", "dtn://r/inbox", reception|deletion, bundle.BlockReportIfUnproc, 0)
		}, nil, false, []string{"received:block_unsupported"}},
		{"a bundle kept, reception asked for", func() *bundle.Bundle {
			return mk("dtn://x/app", "dtn://r/inbox", reception|deletion, 0, 0)
		}, nil, false, []string{"received:no_information"}},
		{"too many hops", func() *bundle.Bundle {
			return mk("dtn://x/app", "dtn://r/inbox", deletion, 0, 9)
		}, nil, true, []string{"deleted:hop_limit_exceeded"}},
		{"unsigned where a signature is required", func() *bundle.Bundle {
			return mk("dtn://x/app", "dtn://r/secure/x", deletion, 0, 0)
		}, nil, true, []string{"deleted:missing_security_service"}},
		{"over its sender's rate limit (transient: nothing deleted)", func() *bundle.Bundle {
			return mk("dtn://ratey/app", "dtn://r/inbox", deletion, 0, 0)
		}, func() {
			if err := sess.Send(ctx, mk("dtn://ratey/app", "dtn://r/inbox", 0, 0, 0), bytes.NewReader([]byte("1234"))); err != nil {
				t.Fatal(err)
			}
		}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			b := tc.make()
			// The in-memory link returns r's verdict, after r has sent
			// whatever reports it sends.
			err := sess.Send(ctx, b, bytes.NewReader([]byte("1234")))
			if refused := err != nil; refused != tc.refused {
				t.Fatalf("refused = %v (%v), want %v", refused, err, tc.refused)
			}
			if got := reports(b.ID()); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("reports about the bundle: %v, want %v", got, tc.want)
			}
		})
	}
}

// statusReports returns the status reports waiting for delivery at
// endpoint ep of n (at most 1000), skipping whatever else is there.
func statusReports(n *Node, ep bundle.EID) []bundle.StatusReport {
	ctx := context.Background()
	var out []bundle.StatusReport
	got, _ := n.Deliveries(ctx, ep, 1000)
	for _, m := range got {
		if !m.Bundle.IsAdminRecord() {
			continue
		}
		p, err := n.OpenPayload(ctx, m.ID)
		if err != nil {
			continue
		}
		data, _ := io.ReadAll(p)
		p.Close()
		if r, err := bundle.ParseStatusReport(data); err == nil {
			out = append(out, r)
		}
	}
	return out
}
