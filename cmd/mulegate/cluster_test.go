package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
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
	mulegateBin = filepath.Join(dir, "mulegate")
	build := exec.Command("go", "build", "-o", mulegateBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building mulegate for the tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testNode is a real `mulegate run` process on loopback ports.
type testNode struct {
	name  string // the node name: its ID is dtn://NAME/
	data  string
	api   string // host:port
	quic  string // host:port
	log   string // its log file
	cmd   *exec.Cmd
	done  chan error
	token string
}

func (n *testNode) id() string { return "dtn://" + n.name + "/" }

// freePort finds a free loopback port for network ("tcp" or "udp").
func freePort(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testConfig is the configuration every test node shares: no adapters, and
// summaries every second so that bundles move quickly.
const testConfig = `adapters: []
routes: []
routing:
  summary_interval: 1s
  retry_min: 200ms
log:
  level: info
  format: json
`

// newTestNode prepares a node (started by start) in its own directory.
func newTestNode(t *testing.T, name string) *testNode {
	t.Helper()
	dir := t.TempDir()
	n := &testNode{
		name: name, data: filepath.Join(dir, "data"), log: filepath.Join(dir, "node.log"),
		api: freePort(t, "tcp"), quic: freePort(t, "udp"),
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// start runs the node with static peers and waits until its API is ready.
func (n *testNode) start(t *testing.T, peers ...*testNode) {
	t.Helper()
	args := []string{"run", "--config", filepath.Join(filepath.Dir(n.data), "config.yaml"),
		"--node", n.id(), "--data", n.data, "--listen-quic", n.quic, "--api", n.api, "--discovery=false"}
	for _, p := range peers {
		args = append(args, "--peer", p.id()+"@"+p.quic)
	}
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(mulegateBin, args...)
	n.cmd.Env = cleanEnv()
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	n.done = make(chan error, 1)
	go func() { n.done <- n.cmd.Wait() }()
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			data, _ := os.ReadFile(n.log)
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			t.Logf("last log lines of %s:\n%s", n.name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-n.done:
			n.done <- err
			data, _ := os.ReadFile(n.log)
			t.Fatalf("node %s exited while starting: %v\n%s", n.name, err, data)
		default:
		}
		if tok, err := api.ReadToken(n.data); err == nil {
			c, _ := api.NewClient(n.api, tok)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.Ready(ctx)
			cancel()
			if err == nil {
				n.token = tok
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready after 30s", n.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the node with SIGTERM, as systemd would.
func (n *testNode) stop(t *testing.T) {
	t.Helper()
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case err := <-n.done:
		n.done <- err
		return // already stopped
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		n.done <- err
		if err != nil {
			t.Errorf("node %s exited with %v after SIGTERM", n.name, err)
		}
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
		t.Errorf("node %s did not stop within 20s of SIGTERM", n.name)
	}
}

func (n *testNode) client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.NewClient(n.api, n.token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cleanEnv is the environment without MULEGATE_ variables, so that the
// tests do not depend on the developer's shell.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MULEGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// cli runs the mulegate binary against n's API (n may be nil) and returns
// its stdout and stderr.
type cliRun struct {
	stdout, stderr []byte
	err            error
}

func runMulegate(t *testing.T, ctx context.Context, stdin []byte, env []string, args ...string) cliRun {
	t.Helper()
	cmd := exec.CommandContext(ctx, mulegateBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	return cliRun{stdout: out.Bytes(), stderr: errb.Bytes(), err: err}
}

// on runs a client command against node n.
func (n *testNode) mg(t *testing.T, ctx context.Context, stdin []byte, args ...string) cliRun {
	t.Helper()
	return runMulegate(t, ctx, stdin, nil, append(args, "--api", n.api, "--data", n.data)...)
}

func (n *testNode) mustMG(t *testing.T, ctx context.Context, stdin []byte, args ...string) []byte {
	t.Helper()
	r := n.mg(t, ctx, stdin, args...)
	if r.err != nil {
		t.Fatalf("mulegate %s (node %s): %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), n.name, r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// metric scrapes n's /metrics and returns the sum of name over the
// samples that carry all the given labels.
func (n *testNode) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := n.client(t).Do(context.Background(), "GET", "/metrics", nil, 0)
	if err != nil {
		t.Fatalf("scraping %s: %v", n.name, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the metrics of %s: %v", n.name, err)
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
