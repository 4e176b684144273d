package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
)

// ALPN is Qubicle's TLS application protocol name.
const ALPN = "qbcl"

// DefaultPort is the UDP port used when an address names none: 4556, the
// port IANA assigned to DTN bundle convergence layers ("dtn-bundle", over
// TCP, UDP and DCCP). TCPCL uses the same number over TCP.
const DefaultPort = 4556

// DefaultMaxBundleSize bounds an incoming bundle, all of it, when
// Options.MaxBundleSize is 0.
const DefaultMaxBundleSize uint64 = 4 << 30

// Options configure a Layer. TLS and Sink are required; every other field
// has a default.
type Options struct {
	// TLS authenticates peers; see convergence.IdentityTLS.
	TLS convergence.TLS
	// Sink receives every incoming bundle.
	Sink convergence.Sink
	// Events, if not nil, hears of every session going up and down.
	Events func(convergence.Event)
	// Log gets session events and refusals; nil logs nothing.
	Log *zap.Logger

	// MaxBundleSize is the most bytes an incoming bundle may take on the
	// wire (default DefaultMaxBundleSize). A stream that goes over is
	// stopped with QBCL_BUNDLE_TOO_LARGE while it is read.
	MaxBundleSize uint64
	// Limits bound what the bundle decoder accepts; Limits.MaxPayload
	// defaults to MaxBundleSize. A payload header over it is refused before
	// any payload byte is read.
	Limits bundle.Limits

	// MaxIncomingStreams is how many bundles a peer may have in transfer to
	// this node at once, per session (default 100). A stream's credit goes
	// back to the peer only once its bundle is stored or refused.
	MaxIncomingStreams int64
	// StreamReceiveWindow and ConnectionReceiveWindow bound the data QUIC
	// buffers for one incoming bundle (default 6 MiB) and for a session
	// (default 15 MiB). The windows start at 512 KiB and 768 KiB, or at
	// the bound when it is smaller, and grow towards it while the sink
	// keeps up.
	StreamReceiveWindow     uint64
	ConnectionReceiveWindow uint64

	// HandshakeTimeout bounds the QUIC and TLS handshake (default 10 s).
	HandshakeTimeout time.Duration
	// IdleTimeout ends a session that has heard nothing from its peer for
	// this long (default 30 s; the smaller of both peers' values applies).
	IdleTimeout time.Duration
	// KeepAlive is how often to send a PING on a quiet session, so that it
	// outlives IdleTimeout while the peer is in reach (default half of
	// IdleTimeout; negative: never).
	KeepAlive time.Duration

	// SendStallTimeout is how long a Send waits for the peer to take more
	// of its bundle before it gives up: for the peer's stream credit to
	// open the bundle's stream, then for its flow control credit to write
	// each next byte (default DefaultSendStallTimeout; negative: for ever).
	// A peer whose store is stuck stops reading but still answers PINGs, so
	// neither IdleTimeout nor KeepAlive ends the session, and without this
	// bound each Send to it, with the node's send slot it holds, would wait
	// as long as the session lasts. The clock restarts whenever a byte gets
	// through, so a slow link is not a stalled one (a stall is found one
	// to two timeouts after the last byte went), and the time Send spends
	// reading the payload does not count. A stalled Send cancels its
	// stream (QBCL_TRANSFER_CANCELLED, so the peer may keep the part that
	// arrived) and returns an error matching convergence.ErrStalled: a
	// transient failure, not a refusal; the session stays up.
	SendStallTimeout time.Duration
}

// DefaultSendStallTimeout is Options.SendStallTimeout when it is 0: twice
// the default IdleTimeout, so that a peer that vanished is found out by the
// idle timeout first, and a stall means a peer that is there but not
// reading.
const DefaultSendStallTimeout = 60 * time.Second

func (o *Options) setDefaults() error {
	if err := o.TLS.Check(); err != nil {
		return err
	}
	if o.Sink == nil {
		return errors.New("quic: Options.Sink is required")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.MaxBundleSize == 0 {
		o.MaxBundleSize = DefaultMaxBundleSize
	}
	if o.Limits.MaxPayload == 0 || o.Limits.MaxPayload > o.MaxBundleSize {
		o.Limits.MaxPayload = o.MaxBundleSize
	}
	if o.MaxIncomingStreams <= 0 {
		o.MaxIncomingStreams = 100
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	switch {
	case o.KeepAlive == 0:
		o.KeepAlive = o.IdleTimeout / 2
	case o.KeepAlive < 0:
		o.KeepAlive = 0
	}
	switch {
	case o.SendStallTimeout == 0:
		o.SendStallTimeout = DefaultSendStallTimeout
	case o.SendStallTimeout < 0:
		o.SendStallTimeout = 0 // from here on, 0 means no bound
	}
	return nil
}

// quicConfig is the QUIC configuration for o, after setDefaults, for both
// listening and dialling. The benchmark's raw quic-go baseline uses it too,
// so that the comparison is of the protocol, not of the settings.
func (o *Options) quicConfig() *quicgo.Config {
	// quic-go starts its windows at 512 KiB (stream) and 768 KiB
	// (connection) and grows them up to the maximums, whatever those are:
	// a maximum below the start would not bound anything without the
	// start lowered to it.
	const initialStream, initialConnection = 512 << 10, 768 << 10
	var streamStart, connStart uint64
	if o.StreamReceiveWindow != 0 && o.StreamReceiveWindow < initialStream {
		streamStart = o.StreamReceiveWindow
	}
	if o.ConnectionReceiveWindow != 0 && o.ConnectionReceiveWindow < initialConnection {
		connStart = o.ConnectionReceiveWindow
	}
	return &quicgo.Config{
		HandshakeIdleTimeout:           o.HandshakeTimeout,
		MaxIdleTimeout:                 o.IdleTimeout,
		KeepAlivePeriod:                o.KeepAlive,
		InitialStreamReceiveWindow:     streamStart,
		MaxStreamReceiveWindow:         o.StreamReceiveWindow,
		InitialConnectionReceiveWindow: connStart,
		MaxConnectionReceiveWindow:     o.ConnectionReceiveWindow,
		MaxIncomingUniStreams:          o.MaxIncomingStreams,
		RequireStreamCreditRelease:     true,
		// The draft asks peers not to open bidirectional streams, and to
		// close with QBCL_PROTOCOL_ERROR if one does. Allowing one lets
		// us see it and answer with that code; allowing none would make
		// QUIC itself answer, with STREAM_LIMIT_ERROR.
		MaxIncomingStreams: 1,
	}
}

// Layer is the Qubicle convergence layer (draft-ek-dtn-qubicle): QUIC with
// ALPN "qbcl" and mutual TLS 1.3; each bundle on its own unidirectional
// stream, in the draft's direct form (the bundle's bytes, ended by FIN).
// It receives the wrapped form too.
type Layer struct {
	opts   Options
	quic   *quicgo.Config
	tokens quicgo.TokenStore // address validation tokens from servers, for the next dial
	recv   receiver
	ctx    context.Context // ends when the layer closes; given to the sink
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	endpoints []*endpoint // listeners, and the dialling socket
	dialer    *endpoint
	sessions  map[*session]struct{}
	running   sync.WaitGroup // sessions not yet down, and accept loops
}

var _ convergence.Layer = (*Layer)(nil)

// New makes a Layer. It opens no socket until Listen or Dial.
func New(opts Options) (*Layer, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Layer{
		opts:     opts,
		quic:     opts.quicConfig(),
		recv:     receiver{limits: opts.Limits, maxBundle: opts.MaxBundleSize, sink: opts.Sink},
		tokens:   quicgo.NewLRUTokenStore(64, 4),
		ctx:      ctx,
		cancel:   cancel,
		sessions: map[*session]struct{}{},
	}
	return l, nil
}

// endpoint is one UDP socket and the QUIC transport on it.
type endpoint struct {
	layer *Layer
	udp   *net.UDPConn
	tr    *quicgo.Transport
	ln    *quicgo.Listener // nil for the dialling socket
	once  sync.Once
}

// Addr is where the endpoint listens.
func (e *endpoint) Addr() net.Addr { return e.udp.LocalAddr() }

// Close stops accepting sessions. Sessions already accepted keep the socket
// until the layer closes.
func (e *endpoint) Close() error {
	if e.ln == nil {
		return nil
	}
	return e.ln.Close()
}

// shutdown releases the socket, ending every session on it.
func (e *endpoint) shutdown() {
	e.once.Do(func() {
		if e.ln != nil {
			e.ln.Close()
		}
		e.tr.Close()
		e.udp.Close()
	})
}

func (l *Layer) newEndpoint(addr string) (*endpoint, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	return &endpoint{layer: l, udp: udp, tr: &quicgo.Transport{Conn: udp}}, nil
}

// Listen accepts sessions at addr: "host:port", "[v6addr]:port", or a host
// or address alone for DefaultPort. Port 0 picks a free port (see
// Listener.Addr).
func (l *Layer) Listen(ctx context.Context, addr string) (convergence.Listener, error) {
	addr = withDefaultPort(addr)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e, err := l.newEndpoint(addr)
	if err != nil {
		return nil, fmt.Errorf("quic: listen %s: %w", addr, err)
	}
	e.ln, err = e.tr.Listen(l.tlsConfig(l.opts.TLS.Server), l.quic)
	if err != nil {
		e.shutdown()
		return nil, fmt.Errorf("quic: listen %s: %w", addr, err)
	}
	if !l.track(e) {
		e.shutdown()
		return nil, fmt.Errorf("quic: listen %s: %w", addr, convergence.ErrClosed)
	}
	go l.accept(e)
	l.opts.Log.Info("listening", zap.Stringer("addr", e.Addr()))
	return e, nil
}

// track records a new endpoint, and counts its accept loop as running.
func (l *Layer) track(e *endpoint) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.endpoints = append(l.endpoints, e)
	if e.ln != nil {
		l.running.Add(1)
	}
	return true
}

func (l *Layer) accept(e *endpoint) {
	defer l.running.Done()
	for {
		conn, err := e.ln.Accept(l.ctx)
		if err != nil {
			return
		}
		if _, err := l.start(conn, bundle.EID{}); err != nil {
			l.opts.Log.Info("session refused", zap.Stringer("remote", conn.RemoteAddr()), zap.Error(err))
		}
	}
}

// Dial makes a session with the peer at addr ("host:port", or a host alone
// for DefaultPort). Dialled sessions share one UDP socket, on a port of the
// system's choosing.
func (l *Layer) Dial(ctx context.Context, addr string, expectedPeer bundle.EID) (convergence.Session, error) {
	addr = withDefaultPort(addr)
	e, err := l.dialEndpoint()
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	conf := l.quic.Clone()
	accepted := &acceptSignal{TokenStore: l.tokens, ch: make(chan struct{})}
	conf.TokenStore = accepted
	conn, err := e.tr.Dial(ctx, ua, l.tlsConfig(l.opts.TLS.Client(expectedPeer)), conf)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	if err := accepted.wait(ctx, conn); err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	s, err := l.start(conn, expectedPeer)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	return s, nil
}

// acceptSignal learns that a server accepted this side's certificate.
//
// In TLS 1.3 the client finishes its handshake before the server has
// checked the client's certificate, so quic-go's Dial returns even when the
// server is about to refuse it. A quic-go server that accepts completes its
// handshake and sends a NEW_TOKEN frame at once, which quic-go hands to the
// connection's TokenStore: that is the signal. A server that refuses closes
// the connection instead. A server that sends no token (other
// implementations may not) is taken to accept once it has had three round
// trips, and at least minAcceptWait, to refuse.
type acceptSignal struct {
	quicgo.TokenStore // the layer's store, so that tokens still serve the next dial
	once              sync.Once
	ch                chan struct{}
}

const minAcceptWait = 250 * time.Millisecond

func (a *acceptSignal) Put(key string, token *quicgo.ClientToken) {
	a.TokenStore.Put(key, token)
	a.once.Do(func() { close(a.ch) })
}

func (a *acceptSignal) wait(ctx context.Context, conn *quicgo.Conn) error {
	grace := time.NewTimer(max(3*conn.ConnectionStats().SmoothedRTT, minAcceptWait))
	defer grace.Stop()
	select {
	case <-a.ch:
		return nil
	case <-grace.C:
		return nil
	case <-conn.Context().Done():
		return fmt.Errorf("peer refused the handshake: %w", context.Cause(conn.Context()))
	case <-ctx.Done():
		conn.CloseWithError(quicgo.ApplicationErrorCode(CodeTransferCancelled), "dial cancelled")
		return context.Cause(ctx)
	}
}

func (l *Layer) dialEndpoint() (*endpoint, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, convergence.ErrClosed
	}
	if l.dialer == nil {
		e, err := l.newEndpoint(":0")
		if err != nil {
			return nil, err
		}
		l.dialer = e
		l.endpoints = append(l.endpoints, e)
	}
	return l.dialer, nil
}

// tlsConfig is c with Qubicle's ALPN and TLS 1.3 at least.
func (l *Layer) tlsConfig(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.NextProtos = []string{ALPN}
	if c.MinVersion < tls.VersionTLS13 {
		c.MinVersion = tls.VersionTLS13
	}
	return c
}

// start turns a connection whose handshake completed into a session, or
// closes it.
func (l *Layer) start(conn *quicgo.Conn, expected bundle.EID) (*session, error) {
	cs := conn.ConnectionState().TLS
	refuse := func(err error) (*session, error) {
		conn.CloseWithError(quicgo.ApplicationErrorCode(CodeProtocolError), err.Error())
		return nil, err
	}
	if cs.NegotiatedProtocol != ALPN {
		return refuse(fmt.Errorf("peer did not negotiate ALPN %q", ALPN))
	}
	if len(cs.PeerCertificates) == 0 {
		return refuse(errors.New("peer presented no certificate"))
	}
	peer, err := l.opts.TLS.PeerID(cs)
	if err != nil {
		return refuse(fmt.Errorf("peer's node ID: %w", err))
	}
	if !peer.IsNodeID() {
		return refuse(fmt.Errorf("peer's certificate names %s, which is not a node ID", peer))
	}
	if !expected.IsZero() && peer != expected {
		return refuse(fmt.Errorf("peer is %s, not the expected %s", peer, expected))
	}
	s := newSession(l, conn, peer)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return refuse(convergence.ErrClosed)
	}
	l.sessions[s] = struct{}{}
	l.running.Add(1)
	l.mu.Unlock()
	l.opts.Log.Info("session up", zap.Stringer("peer", peer), zap.Stringer("remote", conn.RemoteAddr()))
	l.event(convergence.Event{Kind: convergence.SessionUp, Session: s})
	s.run()
	return s, nil
}

func (l *Layer) event(ev convergence.Event) {
	if l.opts.Events != nil {
		l.opts.Events(ev)
	}
}

// down is called by a session once it has ended and its last Receive
// returned.
func (l *Layer) down(s *session) {
	l.opts.Log.Info("session down", zap.Stringer("peer", s.peer), zap.Error(s.Err()))
	l.event(convergence.Event{Kind: convergence.SessionDown, Session: s})
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
	l.running.Done()
}

// Close closes every listener and session, releases the sockets, and
// returns once every session's SessionDown has been delivered.
func (l *Layer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.running.Wait()
		return nil
	}
	l.closed = true
	sessions := make([]*session, 0, len(l.sessions))
	for s := range l.sessions {
		sessions = append(sessions, s)
	}
	endpoints := l.endpoints
	l.mu.Unlock()

	l.cancel()
	for _, s := range sessions {
		s.Close(nil)
	}
	for _, e := range endpoints {
		e.shutdown()
	}
	l.running.Wait()
	return nil
}

// withDefaultPort adds DefaultPort to an address that has no port:
// "example.org", "192.0.2.1", "2001:db8::1", "[2001:db8::1]", "host:".
func withDefaultPort(addr string) string {
	port := strconv.Itoa(DefaultPort)
	host, p, err := net.SplitHostPort(addr)
	switch {
	case err == nil && p == "":
		return net.JoinHostPort(host, port)
	case err == nil:
		return addr
	case len(addr) > 1 && addr[0] == '[' && addr[len(addr)-1] == ']':
		return net.JoinHostPort(addr[1:len(addr)-1], port)
	}
	return net.JoinHostPort(addr, port)
}
