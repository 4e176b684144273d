package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/gateway"
	"github.com/mulegate/mulegate/gateway/api"
)

// writeRandomFile writes size pseudo-random bytes to path and returns their
// SHA-256.
func writeRandomFile(t *testing.T, path string, size int64, seed uint64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'm', 'u', 'l', 'e'})
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, rng, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// The acceptance run: a 200 MiB file sent with `mulegate send` on node A
// is carried by a mule M, which meets C only after A has gone; `mulegate
// recv` on C writes it, and its SHA-256 matches. The metrics of all three
// show the bundle's way.
func TestCLIMuleCarries200MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("200 MiB through three real nodes")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	const size = 200 << 20
	src := filepath.Join(tmp, "big.bin")
	want := writeRandomFile(t, src, size, 200)

	a, m, c := newTestNode(t, "a"), newTestNode(t, "m"), newTestNode(t, "c")
	m.Start(t)
	a.Start(t, m)
	t.Logf("nodes up after %v", time.Since(start).Round(time.Millisecond))

	// 1. A stores it: the ID is printed once the node has it durably.
	sent := time.Now()
	res := a.mg(t, ctx, nil, "send", "--to", c.ID()+"inbox", "--lifetime", "1h", src)
	if res.Err != nil {
		t.Fatalf("send: %v\n%s", res.Err, res.Stderr)
	}
	id := strings.TrimSpace(string(res.Stdout))
	if !strings.HasPrefix(id, a.ID()+"|") {
		t.Fatalf("send printed %q, want a bundle ID of %s", res.Stdout, a.ID())
	}
	if strings.Contains(string(res.Stderr), "%") || strings.Contains(string(res.Stderr), "\r") {
		t.Errorf("a progress bar on a stderr that is not a terminal: %q", res.Stderr)
	}
	t.Logf("send of 200 MiB took %v", time.Since(sent).Round(time.Millisecond))
	var bi gateway.BundleInfo
	if err := json.Unmarshal(a.mustMG(t, ctx, nil, "bundles", id, "--json"), &bi); err != nil || bi.Length != size || bi.From != "api" {
		t.Fatalf("bundles ID --json on A: %+v %v", bi, err)
	}
	if v := a.metric(t, "mulegate_bundles_stored_total", map[string]string{"door": "api"}); v < 1 {
		t.Errorf("A: mulegate_bundles_stored_total{door=api} = %v", v)
	}
	if v := a.metric(t, "mulegate_payload_bytes_received_total", map[string]string{"door": "api"}); v < size {
		t.Errorf("A: mulegate_payload_bytes_received_total{door=api} = %v", v)
	}
	// A request is counted once its handler returns, which may be after
	// the client has its answer.
	eventually(t, 10*time.Second, "A: mulegate_api_requests_total{route=send,code=201} = 1", func() bool {
		return a.metric(t, "mulegate_api_requests_total", map[string]string{"route": "send", "code": "201"}) == 1
	})

	// 2. The mule picks it up; then A goes away.
	eventually(t, 60*time.Second, "the mule never got the bundle", func() bool {
		_, err := m.Client(t).Bundle(ctx, id)
		return err == nil
	})
	t.Logf("on the mule after %v", time.Since(sent).Round(time.Millisecond))
	// The mule's next summary confirms it to A: forwarded.
	eventually(t, 15*time.Second, "A never counted the bundle forwarded", func() bool {
		return a.metric(t, "mulegate_bundles_forwarded_total", nil) >= 1
	})
	a.Stop(t)

	// 3. C appears, meets only the mule, and receives it.
	c.Start(t, m)
	out := filepath.Join(tmp, "received")
	recv := c.mg(t, ctx, nil, "recv", "--endpoint", c.ID()+"inbox", "--follow", "--count", "1", "--out", out)
	if recv.Err != nil {
		t.Fatalf("recv: %v\n%s", recv.Err, recv.Stderr)
	}
	t.Logf("received on C after %v", time.Since(sent).Round(time.Millisecond))
	written := strings.TrimSpace(string(recv.Stdout))
	if filepath.Dir(written) != out || !strings.HasPrefix(filepath.Base(written), "a-") {
		t.Fatalf("recv printed %q, want a file in %s named after its source", written, out)
	}
	if strings.Contains(string(recv.Stderr), "\r") {
		t.Errorf("a progress bar on a stderr that is not a terminal: %q", recv.Stderr)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 {
		t.Errorf("the output directory holds %d entries, want 1", len(entries))
	}
	if st, err := os.Stat(written); err != nil || st.Size() != size {
		t.Fatalf("received file: %v %v", st, err)
	}
	if got := fileSHA256(t, written); got != want {
		t.Fatalf("SHA-256 of the received file %s, sent %s", got, want)
	}

	// Taken and acknowledged: nothing waits at C any more.
	if d, err := c.Client(t).Deliveries(ctx, mustEID(t, c.ID()+"inbox"), 0); err != nil || len(d) != 0 {
		t.Errorf("deliveries at C after recv: %v %+v", err, d)
	}
	for _, check := range []struct {
		n      *testNode
		metric string
		labels map[string]string
	}{
		{m, "mulegate_bundles_stored_total", map[string]string{"door": "peer"}},
		{c, "mulegate_bundles_stored_total", map[string]string{"door": "peer"}},
		{c, "mulegate_bundles_delivered_total", map[string]string{"to": "local"}},
		{c, "mulegate_api_requests_total", map[string]string{"route": "ack", "code": "200"}},
	} {
		eventually(t, 10*time.Second, fmt.Sprintf("%s: %s%v ≥ 1", check.n.Name, check.metric, check.labels), func() bool {
			return check.n.metric(t, check.metric, check.labels) >= 1
		})
	}
	if v := c.metric(t, "mulegate_payload_bytes_received_total", map[string]string{"door": "peer"}); v < size {
		t.Errorf("C: payload bytes received from peers = %v, want ≥ %d", v, size)
	}

	eventually(t, 15*time.Second, "the mule never counted the bundle forwarded", func() bool {
		return m.metric(t, "mulegate_bundles_forwarded_total", nil) >= 1
	})
	// Delete on delivery: C's delivery notice reaches the mule, which drops
	// its copy.
	eventually(t, 30*time.Second, "the mule still carries a delivered bundle", func() bool {
		_, err := m.Client(t).Bundle(ctx, id)
		return isAPIStatus(err, 404)
	})

	// 4. Standard input in, standard output out.
	small := []byte("a line from the mule's own keyboard\n")
	id2 := strings.TrimSpace(string(m.mustMG(t, ctx, small, "send", "--to", c.ID()+"inbox", "-")))
	recv = c.mg(t, ctx, nil, "recv", "--endpoint", c.ID()+"inbox", "--follow", "--count", "1", "--out", "-")
	if recv.Err != nil || string(recv.Stdout) != string(small) {
		t.Fatalf("recv --out -: %v: %q\n%s", recv.Err, recv.Stdout, recv.Stderr)
	}
	if !strings.Contains(string(recv.Stderr), id2) {
		t.Errorf("recv --out - did not name the bundle on stderr: %q", recv.Stderr)
	}
	// Without --follow, with nothing waiting, recv ends at once.
	recv = c.mg(t, ctx, nil, "recv", "--endpoint", c.ID()+"inbox")
	if recv.Err != nil || len(recv.Stdout) != 0 || !strings.Contains(string(recv.Stderr), "nothing waiting") {
		t.Errorf("recv with nothing waiting: %v %q %q", recv.Err, recv.Stdout, recv.Stderr)
	}

	// The inspection commands, human and JSON.
	var st gateway.Status
	if err := json.Unmarshal(m.mustMG(t, ctx, nil, "status", "--json"), &st); err != nil || st.Node != m.ID() || st.Contacts != 1 {
		t.Errorf("status --json on M: %+v %v", st, err)
	}
	text := string(m.mustMG(t, ctx, nil, "status"))
	for _, want := range []string{"node", m.ID(), "peers", "quota", "store"} {
		if !strings.Contains(text, want) {
			t.Errorf("status on M does not show %q:\n%s", want, text)
		}
	}
	var peers []gateway.PeerStatus
	if err := json.Unmarshal(m.mustMG(t, ctx, nil, "peers", "--json"), &peers); err != nil {
		t.Fatal(err)
	}
	byNode := map[string]gateway.PeerStatus{}
	for _, p := range peers {
		byNode[p.Node] = p
	}
	if !byNode[c.ID()].Connected || byNode[a.ID()].Connected || byNode[a.ID()].Contacts < 1 {
		t.Errorf("peers --json on M: %+v", peers)
	}
	if text := string(m.mustMG(t, ctx, nil, "peers")); !strings.Contains(text, c.ID()) || !strings.Contains(text, "up ") {
		t.Errorf("peers on M:\n%s", text)
	}
	var bundles []gateway.BundleInfo
	if err := json.Unmarshal(c.mustMG(t, ctx, nil, "bundles", "--json", "--state", "pending"), &bundles); err != nil || len(bundles) != 0 {
		t.Errorf("bundles --state pending on C: %v %+v", err, bundles)
	}
	t.Logf("whole run %v", time.Since(start).Round(time.Millisecond))
}

func isAPIStatus(err error, status int) bool {
	ae, ok := err.(*api.Error)
	return ok && ae.Status == status
}
