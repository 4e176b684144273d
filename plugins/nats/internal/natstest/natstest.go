// Package natstest starts the NATS servers the nats adapter's tests talk
// to: a JetStream server inside the test process (server.NewServer), or a
// nats-server process from the binary scripts/test-servers installs. Both
// listen on loopback on a fixed port and store directory, so that a test
// can stop a server and start it again.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Embedded is a JetStream server inside the test process.
type Embedded struct {
	// Opts are the server's options; change them before Start.
	Opts server.Options
	t    testing.TB
	s    *server.Server
}

// NewEmbedded returns a JetStream server on a free port with a temporary
// store, not started yet. The test's cleanup stops it.
func NewEmbedded(t testing.TB) *Embedded {
	t.Helper()
	e := &Embedded{t: t, Opts: server.Options{
		ServerName: "test",
		Host:       "127.0.0.1",
		Port:       FreePort(t),
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	}}
	t.Cleanup(e.Stop)
	return e
}

// StartEmbedded starts a fresh JetStream server.
func StartEmbedded(t testing.TB) *Embedded {
	e := NewEmbedded(t)
	e.Start()
	return e
}

// URL is the server's client URL.
func (e *Embedded) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", e.Opts.Port) }

// Start starts the server and waits until it takes connections.
func (e *Embedded) Start() {
	e.t.Helper()
	opts := e.Opts
	s, err := server.NewServer(&opts)
	if err != nil {
		e.t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		e.t.Fatal("nats-server did not start")
	}
	e.s = s
}

// Stop shuts the server down; Start starts it again.
func (e *Embedded) Stop() {
	if e.s != nil {
		e.s.Shutdown()
		e.s.WaitForShutdown()
		e.s = nil
	}
}

// Process is a nats-server running as its own process.
type Process struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// NewProcess prepares a nats-server process on a free port with a
// temporary store; Start runs it. The test's cleanup kills it.
func NewProcess(t testing.TB) *Process {
	p := &Process{t: t, port: FreePort(t), dir: t.TempDir()}
	t.Cleanup(p.Kill)
	return p
}

// URL is the server's client URL.
func (p *Process) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

// PID is the running server's process ID, 0 when it is not running.
func (p *Process) PID() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Start runs nats-server with JetStream and waits until JetStream answers.
func (p *Process) Start() {
	p.t.Helper()
	cmd := exec.Command(Binary(p.t), "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(p.port), "-sd", p.dir)
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(p.done)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := jetStreamAnswers(p.URL())
		if err == nil {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("nats-server exited at start: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("nats-server on port %d not ready: %v", p.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func jetStreamAnswers(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Kill stops the server abruptly, as a crash would; Start starts it
// again on the same port and store.
func (p *Process) Kill() {
	if p.cmd != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.cmd = nil
	}
}

// Binary finds nats-server in $MULEGATE_TOOLS_BIN, on $PATH, or in the
// module's .cache/bin, where scripts/test-servers installs it.
func Binary(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("MULEGATE_TOOLS_BIN"); dir != "" {
		if p := filepath.Join(dir, "nats-server"); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if p := filepath.Join(d, ".cache", "bin", "nats-server"); isExecutable(p) {
			return p
		}
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
			break
		}
	}
	t.Fatal("nats-server not found in $MULEGATE_TOOLS_BIN, $PATH or .cache/bin: run ./scripts/test-servers (or make test-servers)")
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// Client is a plain nats.go connection for a test to look at the server
// with; the test's cleanup closes it.
func Client(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// CreateStream creates a stream.
func CreateStream(t testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	s, err := js.CreateStream(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Publish publishes data with headers to subject, through JetStream.
func Publish(t testing.TB, js jetstream.JetStream, subject string, data []byte, hdr map[string]string) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}

// ErrNotYet is what a condition returns when it has nothing better to say.
var ErrNotYet = errors.New("not yet")

// Eventually polls cond until it returns nil, and fails the test with
// cond's last error if that takes longer than within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
