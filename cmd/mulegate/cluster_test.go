package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/internal/nodetest"
	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// mulegateBin is the mulegate binary TestMain builds once for the tests
// that run real processes.
var mulegateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mulegate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mulegateBin, err = nodetest.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "building mulegate for the tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testNode is a real `mulegate run` process on loopback ports.
type testNode struct{ *nodetest.Node }

// testConfig is the configuration every test node shares, after
// nodetest.BaseConfig: no adapters and no routes.
const testConfig = "adapters: []\nroutes: []\n"

// newTestNode prepares a node (started by Start) in its own directory.
func newTestNode(t *testing.T, name string) *testNode {
	t.Helper()
	return &testNode{nodetest.New(t, mulegateBin, name, testConfig)}
}

// Start runs the node with peers as its static peers and waits until its
// API is ready.
func (n *testNode) Start(t *testing.T, peers ...*testNode) {
	t.Helper()
	nodes := make([]*nodetest.Node, len(peers))
	for i, p := range peers {
		nodes[i] = p.Node
	}
	n.Node.Start(t, nodes...)
}

// freeTCP is a free loopback host:port.
func freeTCP(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
}

// runMulegate runs the mulegate binary with args, in the environment
// without MULEGATE_ variables plus env.
func runMulegate(t *testing.T, ctx context.Context, stdin []byte, env []string, args ...string) nodetest.Run {
	t.Helper()
	return nodetest.Command(ctx, mulegateBin, stdin, env, args...)
}

// mg runs a client command against node n.
func (n *testNode) mg(t *testing.T, ctx context.Context, stdin []byte, args ...string) nodetest.Run {
	t.Helper()
	return n.CLI(ctx, stdin, args...)
}

func (n *testNode) mustMG(t *testing.T, ctx context.Context, stdin []byte, args ...string) []byte {
	t.Helper()
	r := n.mg(t, ctx, stdin, args...)
	if r.Err != nil {
		t.Fatalf("mulegate %s (node %s): %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), n.Name, r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// metric scrapes n's /metrics and returns the sum of name over the
// samples that carry all the given labels.
func (n *testNode) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := n.Client(t).Do(context.Background(), "GET", "/metrics", nil, 0)
	if err != nil {
		t.Fatalf("scraping %s: %v", n.Name, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the metrics of %s: %v", n.Name, err)
	}
	sum := 0.0
next:
	for _, m := range fams[name].GetMetric() {
		matched := 0
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; ok {
				if v != l.GetValue() {
					continue next
				}
				matched++
			}
		}
		if matched != len(labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

// eventually polls cond until it holds or the deadline passes. Use it only
// where the system is asynchronous.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustEID(t *testing.T, s string) bundle.EID {
	t.Helper()
	e, err := bundle.ParseEID(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
