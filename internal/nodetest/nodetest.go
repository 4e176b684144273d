// Package nodetest runs real `mulegate run` processes on loopback ports,
// for the end-to-end tests of the command and of the adapters: each node
// in its own directory, started with static peers, stopped with SIGTERM
// as systemd would, or killed with SIGKILL as a crash would.
package nodetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mulegate/mulegate/gateway/api"
	"github.com/mulegate/mulegate/internal/servertest"
)

// BaseConfig starts every node's configuration: summaries every second
// and short retries, so that bundles move in seconds rather than minutes,
// and JSON logs, which a failing test prints the tail of.
const BaseConfig = `routing:
  summary_interval: 1s
  retry_min: 200ms
  retry_max: 2s
adapter_check_interval: 300ms
log:
  level: info
  format: json
`

// Build builds the mulegate binary (with the built-in adapters) into dir
// and returns its path. It runs the go command, so a test binary calls it
// once, from TestMain or through BuildForTest.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "mulegate")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/mulegate/mulegate/cmd/mulegate")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building mulegate: %w\n%s", err, out)
	}
	return bin, nil
}

// BuildForTest builds the mulegate binary for one test, which is skipped
// with -short: it builds the binary and runs real nodes.
func BuildForTest(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: builds mulegate and runs real nodes")
	}
	bin, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Node is one `mulegate run` process with its own directory and ports.
type Node struct {
	Bin   string // the mulegate binary
	Name  string // the node name: its ID is dtn://NAME/
	Dir   string // holds config.yaml, the data directory and the log
	Data  string // the data directory (--data)
	API   string // the API's host:port
	QUIC  string // the QUIC listener's host:port
	Log   string // the node's stdout and stderr
	Token string // the API token, once started

	cmd  *exec.Cmd
	done chan error // receives the process's exit; whoever takes it puts it back
}

// New prepares a node (Start runs it) whose configuration is BaseConfig
// followed by config. When the test ends the node is stopped, and if the
// test failed, the tail of its log is printed.
func New(t *testing.T, bin, name, config string) *Node {
	t.Helper()
	dir := t.TempDir()
	n := &Node{Bin: bin, Name: name, Dir: dir, Data: filepath.Join(dir, "data"), Log: filepath.Join(dir, "node.log"),
		API: fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)), QUIC: servertest.FreeUDP(t)}
	n.Configure(t, config)
	t.Cleanup(func() {
		n.Stop(t)
		if t.Failed() {
			t.Logf("last log lines of %s:\n%s", n.Name, n.LogTail(30))
		}
	})
	return n
}

// Configure replaces the node's configuration, for its next Start, with
// BaseConfig followed by config.
func (n *Node) Configure(t *testing.T, config string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(n.Dir, "config.yaml"), []byte(BaseConfig+config), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ID is the node's ID, dtn://NAME/.
func (n *Node) ID() string { return "dtn://" + n.Name + "/" }

// Start runs the node with peers as its static peers and waits until its
// API answers ready. It fails the test if the node exits meanwhile.
func (n *Node) Start(t *testing.T, peers ...*Node) {
	t.Helper()
	args := []string{"run", "--config", filepath.Join(n.Dir, "config.yaml"), "--node", n.ID(), "--data", n.Data,
		"--listen-quic", n.QUIC, "--api", n.API, "--discovery=false"}
	for _, p := range peers {
		args = append(args, "--peer", p.ID()+"@"+p.QUIC)
	}
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	n.cmd = exec.Command(n.Bin, args...)
	n.cmd.Env = Env()
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(n.cmd, n.done)
	servertest.Eventually(t, 30*time.Second, "node "+n.Name+" ready", func() error {
		select {
		case err := <-n.done:
			n.done <- err
			t.Fatalf("node %s exited while starting: %v\n%s", n.Name, err, n.LogTail(50))
		default:
		}
		tok, err := api.ReadToken(n.Data)
		if err != nil {
			return err
		}
		c, err := api.NewClient(n.API, tok)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.Ready(ctx); err != nil {
			return err
		}
		n.Token = tok
		return nil
	})
}

// Process is the running node's process, for a test that must kill it
// from a callback; Kill then reaps it.
func (n *Node) Process() *os.Process {
	if n.cmd == nil {
		return nil
	}
	return n.cmd.Process
}

// Kill ends the node with SIGKILL, a crash, and waits for it to exit.
func (n *Node) Kill(t *testing.T) {
	t.Helper()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// Stop ends the node with SIGTERM, as systemd would, and fails the test
// if it exits with an error or not within 20 seconds.
func (n *Node) Stop(t *testing.T) {
	t.Helper()
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done: // it had already exited
		n.cmd = nil
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("node %s exited with %v after SIGTERM", n.Name, err)
		}
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
		t.Errorf("node %s did not stop within 20s of SIGTERM", n.Name)
	}
	n.cmd = nil
}

// Client is an API client for the started node.
func (n *Node) Client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.NewClient(n.API, n.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CLI runs a mulegate client command against the node, with stdin (if
// not nil) as its input.
func (n *Node) CLI(ctx context.Context, stdin []byte, args ...string) Run {
	return Command(ctx, n.Bin, stdin, nil, append(args, "--api", n.API, "--data", n.Data)...)
}

// Queued counts the node's bundles still pending or in flight.
func (n *Node) Queued(t *testing.T) int {
	t.Helper()
	total := 0
	for _, state := range []string{"pending", "in_flight"} {
		l, err := n.Client(t).Bundles(t.Context(), api.BundleQuery{State: state, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		total += len(l)
	}
	return total
}

// LogTail is the last lines of the node's log.
func (n *Node) LogTail(lines int) string {
	data, _ := os.ReadFile(n.Log)
	all := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// Run is what a mulegate command printed, and how it ended.
type Run struct {
	Stdout, Stderr []byte
	Err            error
}

// Command runs the mulegate binary bin with args, in Env plus env.
func Command(ctx context.Context, bin string, stdin []byte, env []string, args ...string) Run {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(Env(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	return Run{Stdout: out.Bytes(), Stderr: errb.Bytes(), Err: err}
}

// Env is this process's environment without MULEGATE_ variables, so that
// the nodes and commands a test runs do not depend on the developer's
// shell.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MULEGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// RecvOne waits (up to within) for one payload at the node's endpoint
// with `mulegate recv --follow --count 1`, and returns its bytes.
func (n *Node) RecvOne(t *testing.T, ctx context.Context, endpoint string, within time.Duration) []byte {
	t.Helper()
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	if r := n.CLI(ctx, nil, "recv", "--endpoint", endpoint, "--follow", "--count", "1", "--out", out); r.Err != nil {
		t.Fatalf("recv on %s: %v\n%s", n.Name, r.Err, r.Stderr)
	}
	entries, err := os.ReadDir(out)
	if err != nil || len(entries) != 1 {
		t.Fatalf("recv on %s wrote %v (%v), want one file", n.Name, entries, err)
	}
	got, err := os.ReadFile(filepath.Join(out, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// WaitHolds waits (up to within) until the node holds the bundle id.
func (n *Node) WaitHolds(t *testing.T, id string, within time.Duration) {
	t.Helper()
	servertest.Eventually(t, within, n.Name+" holds "+id, func() error {
		_, err := n.Client(t).Bundle(t.Context(), id)
		return err
	})
}
