package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
)

// TestTwoGroupsShareOneMule is issue 6 with five real `mulegate run`
// processes on loopback: two groups, each with its own CA (campfire: alice
// and bob; riverside: carol and dave), share one mule m that trusts both
// CAs and carries every bundle. Each member admits only its own group (and
// the mule, trusted by its certificate), so:
//
//   - alice → bob and carol → dave are carried by m and delivered, with the
//     sender's signature verified through the group CA;
//   - carol → bob (across groups) is carried by m, refused by bob (bob
//     cannot authenticate a riverside signature), and stays on m: carried,
//     not lost.
func TestTwoGroupsShareOneMule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	lap := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }

	m := newTestNode(t, "m")
	alice, bob := newTestNode(t, "alice"), newTestNode(t, "bob")
	carol, dave := newTestNode(t, "carol"), newTestNode(t, "dave")

	// Identities, with the real CLI, before any node's first run.
	tmp := t.TempDir()
	cas := map[string]string{}
	for _, group := range []string{"campfire", "riverside"} {
		cas[group] = filepath.Join(tmp, group+"-ca")
		identityCLI(t, ctx, "ca", "init", group, "--out", cas[group])
	}
	identityCLI(t, ctx, "init", "--node", m.ID(), "--data", m.Data)
	muleCrt := filepath.Join(m.Data, "identity", "node.crt")
	for _, group := range []string{"campfire", "riverside"} {
		identityCLI(t, ctx, "trust", filepath.Join(cas[group], "ca.crt"), "--data", m.Data)
	}
	for _, mb := range []struct {
		n     *testNode
		group string
	}{{alice, "campfire"}, {bob, "campfire"}, {carol, "riverside"}, {dave, "riverside"}} {
		csr := filepath.Join(tmp, mb.n.Name+".csr")
		crt := filepath.Join(tmp, mb.n.Name+".crt")
		identityCLI(t, ctx, "init", "--node", mb.n.ID(), "--data", mb.n.Data)
		identityCLI(t, ctx, "request", "-o", csr, "--data", mb.n.Data)
		identityCLI(t, ctx, "issue", "--ca", cas[mb.group], "--name", mb.group+"/"+mb.n.Name, "--request", csr, "-o", crt)
		identityCLI(t, ctx, "install", crt, "--data", mb.n.Data)
		identityCLI(t, ctx, "trust", filepath.Join(cas[mb.group], "ca.crt"), "--data", mb.n.Data)
		identityCLI(t, ctx, "trust", muleCrt, "--data", mb.n.Data)
		writeNodeConfig(t, mb.n, `acl:
  inbound:
    - allow: "`+mb.group+`/*"
    - allow: "dtn://m/"
  senders:
    - allow: "`+mb.group+`/*"
`)
	}
	lap("identities and configurations ready")

	// alice and carol meet the mule and hand it their bundles.
	m.Start(t)
	alice.Start(t, m)
	carol.Start(t, m)
	lap("m, alice and carol running")
	payload := func(seed byte, size int) (data []byte, file string) {
		data = make([]byte, size)
		for i := range data {
			data[i] = byte(i*int(seed)/7) ^ seed
		}
		file = filepath.Join(t.TempDir(), "payload.bin")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return data, file
	}
	send := func(n *testNode, to, file string) string {
		id := strings.TrimSpace(string(n.mustMG(t, ctx, nil, "send", "--to", to, "--lifetime", "1h", file)))
		if id == "" {
			t.Fatalf("%s: send printed no bundle ID", n.Name)
		}
		return id
	}
	toBobData, toBobFile := payload(31, 200<<10)
	toDaveData, toDaveFile := payload(53, 150<<10)
	_, crossFile := payload(97, 100<<10)
	aliceToBob := send(alice, "dtn://bob/inbox", toBobFile)
	carolToDave := send(carol, "dtn://dave/inbox", toDaveFile)
	carolToBob := send(carol, "dtn://bob/inbox", crossFile)

	muleHolds := func(id string) bool {
		bs, err := m.Client(t).Bundles(ctx, api.BundleQuery{})
		if err != nil {
			return false
		}
		for _, b := range bs {
			if b.ID == id {
				return true
			}
		}
		return false
	}
	eventually(t, 45*time.Second, "the mule takes all three bundles", func() bool {
		return muleHolds(aliceToBob) && muleHolds(carolToDave) && muleHolds(carolToBob)
	})
	lap("m holds the three bundles")
	alice.Stop(t)
	carol.Stop(t)

	// bob and dave meet the mule.
	bob.Start(t, m)
	dave.Start(t, m)
	lap("bob and dave running")
	bobInbox, daveInbox := mustEID(t, "dtn://bob/inbox"), mustEID(t, "dtn://dave/inbox")
	// waiting finds bundle id among the deliveries waiting at ep on n. Every
	// look at bob's inbox also checks that carol's bundle is not there.
	waiting := func(n *testNode, ep bundle.EID, id string) (api.Delivery, bool) {
		ds, err := n.Client(t).Deliveries(ctx, ep, 0)
		if err != nil {
			t.Logf("deliveries of %s: %v", n.Name, err)
			return api.Delivery{}, false
		}
		var found api.Delivery
		ok := false
		for _, d := range ds {
			if d.ID == carolToBob {
				t.Fatalf("%s accepted carol's cross-group bundle %s: %+v", n.Name, carolToBob, d)
			}
			if d.ID == id {
				found, ok = d, true
			}
		}
		return found, ok
	}

	// bob gets alice's bundle, signed by campfire/alice through the CA.
	var fromAlice api.Delivery
	eventually(t, 45*time.Second, "alice's bundle waits at dtn://bob/inbox", func() bool {
		var ok bool
		fromAlice, ok = waiting(bob, bobInbox, aliceToBob)
		return ok
	})
	lap("alice's bundle reached bob")
	if !strings.HasPrefix(fromAlice.Signature, "valid:campfire/alice") {
		t.Errorf("bob's delivery of alice's bundle has signature %q, want valid:campfire/alice…", fromAlice.Signature)
	}
	if fromAlice.Source != alice.ID() {
		t.Errorf("bob's delivery of alice's bundle has source %q, want %s", fromAlice.Source, alice.ID())
	}

	// bob refuses carol's bundle: it cannot authenticate a riverside
	// signature. Both sides say so: bob counts and logs the refusal, and m
	// records bob's refusal as final.
	peerRejected := map[string]string{"door": "peer", "reason": "failed_security_service", "kind": "untrusted_signer"}
	eventually(t, 45*time.Second, "bob refuses carol's cross-group bundle (log and metric)", func() bool {
		return logHas(t, bob, "bundle refused", carolToBob) && bob.metric(t, "mulegate_bundles_rejected_total", map[string]string{"door": "peer"}) >= 1
	})
	if n := bob.metric(t, "mulegate_bundles_rejected_total", peerRejected); n < 1 {
		t.Fatalf("bob counts no bundle refused with %v; its refusal of carol's bundle:\n%s", peerRejected, logLine(t, bob, "bundle refused", carolToBob))
	}
	eventually(t, 20*time.Second, "m records bob's refusal of carol's bundle", func() bool {
		return logHas(t, m, "peer refused a bundle for good", carolToBob)
	})
	lap("bob refused carol's bundle")
	if all, want := bob.metric(t, "mulegate_bundles_rejected_total", map[string]string{"door": "peer"}), bob.metric(t, "mulegate_bundles_rejected_total", peerRejected); all != want {
		t.Errorf("bob rejected %v bundles from peers, %v of them as %v: another rule refused some", all, want, peerRejected)
	}
	if line := logLine(t, bob, "bundle refused", carolToBob); !strings.Contains(line, "signer not trusted") {
		t.Errorf("bob's refusal of carol's bundle does not say the signer is not trusted:\n%s", line)
	}

	// The negative. m looks at every bundle for bob again on each summary
	// tick (routing.summary_interval: 1s here); over five of them, carol's
	// bundle stays on m and never becomes a delivery at bob.
	refusedBefore := bob.metric(t, "mulegate_bundles_rejected_total", peerRejected)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		waiting(bob, bobInbox, "") // fails the test if carol's bundle is there
		if !muleHolds(carolToBob) {
			t.Fatalf("m dropped carol's bundle for bob instead of carrying it")
		}
	}
	t.Logf("bob refused %v bundles from m before the quiet window, %v after it; m counted %v fatal send errors",
		refusedBefore, bob.metric(t, "mulegate_bundles_rejected_total", peerRejected),
		m.metric(t, "mulegate_send_errors_total", map[string]string{"class": "fatal"}))
	lap("carol's bundle stayed on m, unaccepted by bob, for 5 summary intervals")

	// bob takes alice's bundle with the CLI: the same bytes.
	gotBob := recvOne(t, ctx, bob, bobInbox)
	if sha256.Sum256(gotBob) != sha256.Sum256(toBobData) {
		t.Fatalf("bob received %d bytes that differ from alice's %d", len(gotBob), len(toBobData))
	}

	// dave gets carol's bundle, signed by riverside/carol.
	var fromCarol api.Delivery
	eventually(t, 45*time.Second, "carol's bundle waits at dtn://dave/inbox", func() bool {
		var ok bool
		fromCarol, ok = waiting(dave, daveInbox, carolToDave)
		return ok
	})
	if !strings.HasPrefix(fromCarol.Signature, "valid:riverside/carol") {
		t.Errorf("dave's delivery of carol's bundle has signature %q, want valid:riverside/carol…", fromCarol.Signature)
	}
	gotDave := recvOne(t, ctx, dave, daveInbox)
	if sha256.Sum256(gotDave) != sha256.Sum256(toDaveData) {
		t.Fatalf("dave received %d bytes that differ from carol's %d", len(gotDave), len(toDaveData))
	}
	lap("bob and dave received their bundles")

	// Delivery notices purge the delivered copies from m; the refused one
	// stays, and bob still has nothing more waiting.
	eventually(t, 30*time.Second, "m drops its copies of the two delivered bundles", func() bool {
		return !muleHolds(aliceToBob) && !muleHolds(carolToDave)
	})
	if !muleHolds(carolToBob) {
		t.Fatal("m no longer holds carol's bundle for bob: refused by bob, it should still be carried")
	}
	if ds, err := bob.Client(t).Deliveries(ctx, bobInbox, 0); err != nil || len(ds) != 0 {
		t.Fatalf("bob's inbox after recv: %+v, %v; want empty", ds, err)
	}
	lap("done")
}

// identityCLI runs `mulegate identity ARGS…` with the real binary.
func identityCLI(t *testing.T, ctx context.Context, args ...string) []byte {
	t.Helper()
	r := runMulegate(t, ctx, nil, nil, append([]string{"identity"}, args...)...)
	if r.Err != nil {
		t.Fatalf("mulegate identity %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// writeNodeConfig replaces n's configuration file (the one start passes
// with --config) with the shared test configuration plus extra YAML.
func writeNodeConfig(t *testing.T, n *testNode, extra string) {
	t.Helper()
	n.Configure(t, testConfig+extra)
}

// logLine returns the first JSON log line of n whose message is msg and
// whose bundle field is id, or "".
func logLine(t *testing.T, n *testNode, msg, id string) string {
	t.Helper()
	data, err := os.ReadFile(n.Log)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg    string `json:"msg"`
			Bundle string `json:"bundle"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == msg && rec.Bundle == id {
			return sc.Text()
		}
	}
	return ""
}

func logHas(t *testing.T, n *testNode, msg, id string) bool {
	t.Helper()
	return logLine(t, n, msg, id) != ""
}

// recvOne takes one payload from ep on n with `recv --follow --count 1`
// and returns its bytes.
func recvOne(t *testing.T, ctx context.Context, n *testNode, ep bundle.EID) []byte {
	t.Helper()
	return n.RecvOne(t, ctx, ep.String(), 45*time.Second)
}
