package gateway

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/store"
)

// TestLateRefusalReachesSender: a peer that refuses a small bundle after
// the sender's transport already reported it sent (QUIC has every byte
// and the FIN before the refusal comes back) still tells the sender, in
// its next summary. The sender records the refusal as final for that peer
// and stops offering the bundle, instead of resending it every contact.
func TestLateRefusalReachesSender(t *testing.T) {
	ctx := context.Background()
	bcfg := testConfig(t, "b")
	bcfg.Signatures.RequireFor = []string{"dtn://b/secure/**"}
	b := startNode(t, bcfg)
	acfg := testConfig(t, "a")
	acfg.Signatures.Sign = false
	a := startNode(t, acfg)
	a.AddPeer(b.ID(), b.ListenAddrs()[0])

	payload := []byte("unsigned, and b requires a signature for dtn://b/secure/**")
	id, err := a.Send(ctx, SendRequest{Destination: bundle.MustParseEID("dtn://b/secure/x"), Lifetime: time.Hour, Length: uint64(len(payload))}, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	dest := "peer:" + b.ID().String()
	var prog store.Progress
	waitFor(t, "a to record b's refusal", func() bool {
		ps, err := a.store.ProgressOf(ctx, id)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if p.Dest == dest {
				prog = p
			}
		}
		return prog.State == store.Failed
	})
	if !strings.Contains(prog.LastError, "missing_security_service") && !strings.Contains(prog.LastError, "unsigned") && !strings.Contains(prog.LastError, "signature") {
		t.Errorf("a's record of the refusal does not say why: %q", prog.LastError)
	}
	refused := metricWith(b, "mulegate_bundles_rejected_total", "kind", "unsigned")
	if refused < 1 {
		t.Fatalf("b counted %v refusals of unsigned bundles, want at least 1", refused)
	}
	// Over the next five of a's summaries to b, a offers the bundle no more.
	sent := counterValue(a, "mulegate_summaries_sent_total")
	waitFor(t, "five more summaries from a", func() bool { return counterValue(a, "mulegate_summaries_sent_total") >= sent+5 })
	if again := metricWith(b, "mulegate_bundles_rejected_total", "kind", "unsigned"); again != refused {
		t.Errorf("a sent the refused bundle again: b refused it %v times, then %v", refused, again)
	}
	if !holds(a, id) {
		t.Error("a dropped the refused bundle: refused by one peer, it is still carried for others")
	}
}
