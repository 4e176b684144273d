package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway/store"
	"go.uber.org/zap/zaptest"
)

// testConfig is a node configuration for tests: loopback, no discovery,
// no adapters, quick summaries.
func testConfig(t testing.TB, name string) *config.Config {
	t.Helper()
	c, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	c.Node = "dtn://" + name + "/"
	c.DataDir = filepath.Join(t.TempDir(), name)
	c.QUIC.Listen = "127.0.0.1:0"
	c.API.Listen = ""
	c.Discovery.Enabled = false
	c.Adapters, c.Routes = nil, nil
	c.Routing.SummaryInterval = 100 * time.Millisecond
	c.Routing.RetryMin = 50 * time.Millisecond
	c.Routing.RetryMax = time.Second
	c.Store.SweepInterval = time.Second
	return c.Expanded()
}

// startNode builds and starts a node; it is closed when the test ends.
func startNode(t testing.TB, cfg *config.Config) *Node {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t).Named(cfg.Node)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		cancel()
		if !closed {
			n.Close()
		}
	})
	return n
}

// waitFor polls cond until it holds or the deadline passes. Routing is
// asynchronous by nature, so conditions are polled, with a generous
// deadline that is a failure bound, not a performance threshold.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func holds(n *Node, id bundle.ID) bool {
	st, err := n.store.Lookup(context.Background(), id)
	return err == nil && st.Held
}

func randomPayload(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// TestMuleCarriesBundle is the mule scenario inside one process: A sends
// to C while C is down; the mule M takes the bundle from A; A stops; C
// starts; M hands the bundle to C; C's delivery notice makes M delete its
// copy.
func TestMuleCarriesBundle(t *testing.T) {
	ctx := context.Background()
	a := startNode(t, testConfig(t, "a"))
	m := startNode(t, testConfig(t, "m"))
	m.AddPeer(a.ID(), a.ListenAddrs()[0])

	payload := randomPayload(1, 3<<20)
	dst := bundle.MustParseEID("dtn://c/inbox")
	id, err := a.Send(ctx, SendRequest{Destination: dst, Lifetime: time.Hour, Length: uint64(len(payload))}, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mule to take the bundle", func() bool { return holds(m, id) })
	a.Close()

	c := startNode(t, testConfig(t, "c"))
	m.AddPeer(c.ID(), c.ListenAddrs()[0])
	var got []store.Meta
	waitFor(t, "the bundle to reach C", func() bool {
		got, _ = c.Deliveries(ctx, dst, 10)
		return len(got) == 1
	})
	if got[0].ID != id {
		t.Fatalf("C got %s, want %s", got[0].ID, id)
	}
	p, err := c.OpenPayload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, p); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if want := sha256.Sum256(payload); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("payload changed on the way")
	}
	if hc, _, _ := got[0].Bundle.HopCount(); hc.Count != 2 {
		t.Errorf("hop count at C = %d, want 2 (A→M, M→C)", hc.Count)
	}
	if prev, _, _ := got[0].Bundle.PreviousNode(); prev != m.ID() {
		t.Errorf("previous node = %s, want %s", prev, m.ID())
	}
	if err := c.Ack(ctx, dst, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mule to delete its copy", func() bool { return !holds(m, id) })
	if holds(c, id) {
		t.Error("C still holds the delivered bundle")
	}
	// The mule refuses the bundle if it comes back.
	if st, _ := m.store.Lookup(ctx, id); !st.Deleted {
		t.Errorf("mule has no tombstone: %+v", st)
	}
}
