package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// t0 is the test clock's starting time.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// env is a store in a temporary directory with a test clock.
type env struct {
	t    testing.TB
	dir  string
	clk  *clock
	opts Options
	s    *Store
}

func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clk: newClock(), opts: opts}
	if e.opts.Now == nil {
		e.opts.Now = e.clk.Now
	}
	if e.opts.Logger == nil {
		if tt, ok := t.(*testing.T); ok {
			e.opts.Logger = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
		}
	}
	e.open()
	t.Cleanup(func() {
		if e.s != nil {
			e.s.Close()
		}
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	s, err := Open(context.Background(), e.dir, e.opts)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.s = s
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.s = nil
	e.open()
}

var (
	srcEID = bundle.MustParseEID("dtn://src/app")
	dstEID = bundle.MustParseEID("dtn://dst/inbox")
)

// mkBundle makes bundle metadata created at t0 with a one-hour lifetime
// and an n-byte payload; mods adjust the parameters.
func mkBundle(t testing.TB, seq uint64, n int, mods ...func(*bundle.Params)) *bundle.Bundle {
	t.Helper()
	p := bundle.Params{
		Source:        srcEID,
		Destination:   dstEID,
		Created:       t0,
		Sequence:      seq,
		Lifetime:      time.Hour,
		CRCType:       bundle.CRC32C,
		PayloadLength: uint64(n),
	}
	for _, m := range mods {
		m(&p)
	}
	b, err := bundle.New(p)
	if err != nil {
		t.Fatalf("bundle.New: %v", err)
	}
	return b
}

func withDst(s string) func(*bundle.Params) {
	return func(p *bundle.Params) { p.Destination = bundle.MustParseEID(s) }
}

func withLifetime(d time.Duration) func(*bundle.Params) {
	return func(p *bundle.Params) { p.Lifetime = d }
}

// payloadFor is the deterministic payload of a bundle ID.
func payloadFor(id string, n int) []byte {
	out := make([]byte, n)
	payloadReader(id).Read(out)
	return out
}

func payloadReader(id string) io.Reader {
	return rand.NewChaCha8(sha256.Sum256([]byte(id)))
}

func mustPut(t testing.TB, s *Store, b *bundle.Bundle) []byte {
	t.Helper()
	p := payloadFor(b.ID().String(), int(b.Payload.Length))
	if err := s.Put(context.Background(), b, "test", bytes.NewReader(p)); err != nil {
		t.Fatalf("Put %s: %v", b.ID(), err)
	}
	return p
}

func readPayload(t testing.TB, s *Store, id bundle.ID) ([]byte, error) {
	t.Helper()
	p, err := s.OpenPayload(context.Background(), id)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return io.ReadAll(p)
}

func wantKind(t testing.TB, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v, want kind %v", err, kind)
	}
}

// panicReader fails the test if anything reads it.
type panicReader struct{ t testing.TB }

func (p panicReader) Read([]byte) (int, error) {
	p.t.Errorf("payload read although the put should have been refused first")
	return 0, io.ErrUnexpectedEOF
}
