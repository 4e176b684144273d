// Package natstest starts the NATS servers the nats adapter's tests talk
// to: a JetStream server inside the test process (server.NewServer), or a
// nats-server process from the binary scripts/test-servers installs (run
// by servertest). Both listen on loopback on a fixed port and store
// directory, so that a test can stop a server and start it again.
package natstest

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/internal/servertest"
)

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
		Port:       servertest.FreePort(t),
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
	*servertest.Process // PID, Kill
	port                int
}

// NewProcess prepares a nats-server process on a free port with a
// temporary store; Start runs it. The test's cleanup kills it.
func NewProcess(t testing.TB) *Process {
	return &Process{Process: servertest.NewProcess(t, "nats-server"), port: servertest.FreePort(t)}
}

// URL is the server's client URL.
func (p *Process) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

// Start runs nats-server with JetStream and waits until JetStream
// answers. Kill stops it abruptly, as a crash would; Start starts it
// again on the same port and store.
func (p *Process) Start() {
	p.Run(func() error { return jetStreamAnswers(p.URL()) }, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(p.port), "-sd", p.Dir())
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
