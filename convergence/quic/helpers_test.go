package quic

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/policy/identity"
)

// node is one test endpoint: an identity, a layer, a sink, and the events
// the layer delivered.
type node struct {
	id     *identity.Identity
	eid    bundle.EID
	layer  *Layer
	sink   *memSink
	events chan convergence.Event
	addr   string // where it listens, if it does
}

func mustIdentity(t testing.TB, nodeID string) *identity.Identity {
	t.Helper()
	id, err := identity.Generate(nodeID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// pinnedTrust trusts exactly the given identities' certificates.
func pinnedTrust(t testing.TB, ids ...*identity.Identity) *identity.Trust {
	t.Helper()
	var certs []*x509.Certificate
	for _, id := range ids {
		certs = append(certs, id.Leaf())
	}
	tr, err := identity.NewTrust(certs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// newNode makes a layer for id that trusts trusted. tune, if not nil,
// adjusts the options before the layer is built.
func newNode(t testing.TB, id *identity.Identity, trust *identity.Trust, tune func(*Options)) *node {
	t.Helper()
	n := &node{id: id, eid: bundle.MustParseEID(id.NodeID()), sink: newMemSink(), events: make(chan convergence.Event, 64)}
	opts := Options{
		TLS:    convergence.IdentityTLS(id, trust),
		Sink:   n.sink,
		Events: func(ev convergence.Event) { n.events <- ev },
	}
	if tune != nil {
		tune(&opts)
	}
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	n.layer = l
	t.Cleanup(func() { l.Close() })
	return n
}

func (n *node) listen(t testing.TB, addr string) {
	t.Helper()
	ln, err := n.layer.Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
}

// next returns the next event, or fails the test when ctx ends first.
func (n *node) next(ctx context.Context, t testing.TB) convergence.Event {
	t.Helper()
	select {
	case ev := <-n.events:
		return ev
	case <-ctx.Done():
		t.Fatalf("%s: no session event: %v", n.eid, ctx.Err())
		return convergence.Event{}
	}
}

// noEvent fails the test if an event is waiting.
func (n *node) noEvent(t testing.TB) {
	t.Helper()
	select {
	case ev := <-n.events:
		t.Fatalf("%s: unexpected session %s with %s", n.eid, ev.Kind, ev.Session.Peer())
	default:
	}
}

// pair is two nodes, alice and bob, that trust each other; bob listens on
// loopback, alice dials him.
type pair struct {
	alice, bob *node
	ab, ba     convergence.Session // alice's session with bob, bob's with alice
}

func newPair(ctx context.Context, t testing.TB, tuneAlice, tuneBob func(*Options)) *pair {
	t.Helper()
	aliceID, bobID := mustIdentity(t, "dtn://alice/"), mustIdentity(t, "dtn://bob/")
	p := &pair{
		alice: newNode(t, aliceID, pinnedTrust(t, bobID), tuneAlice),
		bob:   newNode(t, bobID, pinnedTrust(t, aliceID), tuneBob),
	}
	p.bob.listen(t, "127.0.0.1:0")
	var err error
	p.ab, err = p.alice.layer.Dial(ctx, p.bob.addr, p.bob.eid)
	if err != nil {
		t.Fatal(err)
	}
	if ev := p.alice.next(ctx, t); ev.Kind != convergence.SessionUp || ev.Session != p.ab {
		t.Fatalf("alice: first event is %v, not her session going up", ev.Kind)
	}
	ev := p.bob.next(ctx, t)
	if ev.Kind != convergence.SessionUp {
		t.Fatalf("bob: first event is %v", ev.Kind)
	}
	p.ba = ev.Session
	return p
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// memSink is an in-memory store: it hashes every payload, and keeps the
// bytes of small ones and of interrupted ones when keep is set.
type memSink struct {
	keep   bool
	refuse func(*bundle.Bundle) error // nil accepts everything

	progress atomic.Uint64 // payload bytes read, all bundles together
	mu       sync.Mutex
	changed  chan struct{}
	got      map[bundle.ID]stored
	partials []partial
	refused  int
	calls    int
}

type stored struct {
	b    *bundle.Bundle
	peer bundle.EID
	n    uint64
	sum  [32]byte
	data []byte
}

type partial struct {
	b        *bundle.Bundle
	received uint64 // as the InterruptedError says
	n        uint64 // as counted here
	data     []byte
	err      error
}

func newMemSink() *memSink {
	return &memSink{got: map[bundle.ID]stored{}, changed: make(chan struct{}, 1)}
}

func (m *memSink) Receive(ctx context.Context, s convergence.Session, b *bundle.Bundle, payload *bundle.PayloadReader) error {
	m.mu.Lock()
	m.calls++
	keep, refuse := m.keep, m.refuse
	m.mu.Unlock()
	if refuse != nil {
		if err := refuse(b); err != nil {
			m.update(func() { m.refused++ })
			return err
		}
	}
	h := sha256.New()
	var buf bytes.Buffer
	w := &progressWriter{m: m, w: h}
	if keep {
		w.w = io.MultiWriter(h, &buf)
	}
	n, err := io.Copy(w, payload)
	if err != nil {
		var ie *convergence.InterruptedError
		if errors.As(err, &ie) {
			m.update(func() {
				m.partials = append(m.partials, partial{b: b, received: ie.Received, n: uint64(n), data: buf.Bytes(), err: err})
			})
		}
		return err
	}
	st := stored{b: b, peer: s.Peer(), n: uint64(n), data: buf.Bytes()}
	h.Sum(st.sum[:0])
	m.update(func() { m.got[b.ID()] = st })
	return nil
}

// setKeep makes the sink keep payload bytes, not just their hash.
func (m *memSink) setKeep() { m.update(func() { m.keep = true }) }

// setRefuse makes the sink refuse the bundles f returns an error for.
func (m *memSink) setRefuse(f func(*bundle.Bundle) error) { m.update(func() { m.refuse = f }) }

func (m *memSink) update(f func()) {
	m.mu.Lock()
	f()
	m.mu.Unlock()
	m.notify()
}

func (m *memSink) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// wait waits until cond, called under the sink's lock, holds.
func (m *memSink) wait(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	for {
		m.mu.Lock()
		ok := cond()
		m.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-m.changed:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

type progressWriter struct {
	m *memSink
	w io.Writer
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.m.progress.Add(uint64(n))
	p.m.notify()
	return n, err
}

// newBundle makes the metadata of a bundle from alice with n payload bytes.
func newBundle(t testing.TB, seq, n uint64) *bundle.Bundle {
	t.Helper()
	b, err := bundle.New(bundle.Params{
		Source:        bundle.MustParseEID("dtn://alice/chat"),
		Destination:   bundle.MustParseEID("dtn://bob/chat"),
		Created:       time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		Sequence:      seq,
		Lifetime:      24 * time.Hour,
		CRCType:       bundle.CRC32C,
		HopLimit:      16,
		PayloadLength: n,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed, n uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	r.Read(b)
	return b
}

// rawDial connects to addr with quic-go directly, as id, speaking Qubicle's
// ALPN, so that a test can do what the layer never would.
func rawDial(ctx context.Context, t testing.TB, addr string, id *identity.Identity, trust *identity.Trust) *quicgo.Conn {
	t.Helper()
	conn, err := quicgo.DialAddr(ctx, addr, identity.ClientConfig(id, trust, []string{ALPN}, ""), &quicgo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

// stallingReader returns data, then blocks until stop is closed.
type stallingReader struct {
	stop <-chan struct{}
	data []byte
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	<-s.stop
	return 0, errors.New("payload source stopped")
}
