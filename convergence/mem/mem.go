// Package mem is an in-memory convergence layer: sessions between layers in
// one process, for simulations and tests of routing with many nodes. It
// speaks the convergence interface exactly like a real link — bundles are
// encoded, streamed and decoded — but needs no sockets, certificates or
// ports. Links are not authenticated: the peer is who it says it is.
package mem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
)

// Network joins in-memory layers: a layer listening on an address can be
// dialled by any other layer of the same network.
type Network struct {
	mu        sync.Mutex
	listening map[string]*Layer
}

// NewNetwork returns an empty network.
func NewNetwork() *Network { return &Network{listening: map[string]*Layer{}} }

// Layer is one node's attachment to a Network.
type Layer struct {
	net    *Network
	self   bundle.EID
	sink   convergence.Sink
	events func(convergence.Event)
	limits bundle.Limits

	mu       sync.Mutex
	closed   bool
	addrs    []string
	sessions map[*session]bool
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// NewLayer attaches a node with ID self to the network.
func (nw *Network) NewLayer(self bundle.EID, sink convergence.Sink, events func(convergence.Event)) *Layer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Layer{net: nw, self: self.NodeID(), sink: sink, events: events, sessions: map[*session]bool{}, ctx: ctx, cancel: cancel}
}

type addr string

func (a addr) Network() string { return "mem" }
func (a addr) String() string  { return string(a) }

type listener struct {
	l    *Layer
	addr string
}

func (ln *listener) Addr() net.Addr { return addr(ln.addr) }
func (ln *listener) Close() error {
	ln.l.net.mu.Lock()
	defer ln.l.net.mu.Unlock()
	if ln.l.net.listening[ln.addr] == ln.l {
		delete(ln.l.net.listening, ln.addr)
	}
	return nil
}

// Listen makes the layer dialable at address a (any string; "" picks the
// node ID).
func (l *Layer) Listen(_ context.Context, a string) (convergence.Listener, error) {
	if a == "" || a == "127.0.0.1:0" {
		a = l.self.String()
	}
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	if other, ok := l.net.listening[a]; ok && other != l {
		return nil, fmt.Errorf("mem: address %s in use", a)
	}
	l.net.listening[a] = l
	return &listener{l: l, addr: a}, nil
}

// Dial connects to the layer listening at a.
func (l *Layer) Dial(ctx context.Context, a string, expected bundle.EID) (convergence.Session, error) {
	l.net.mu.Lock()
	remote := l.net.listening[a]
	l.net.mu.Unlock()
	if remote == nil {
		return nil, fmt.Errorf("mem: nobody listens at %s", a)
	}
	if !expected.IsZero() && !expected.SameNode(remote.self) {
		return nil, fmt.Errorf("mem: %s is %s, not the expected %s", a, remote.self, expected)
	}
	mine := &session{layer: l, peer: remote.self, remote: a, done: make(chan struct{}), up: make(chan struct{})}
	theirs := &session{layer: remote, peer: l.self, remote: "mem:" + l.self.String(), done: make(chan struct{}), up: make(chan struct{})}
	mine.other, theirs.other = theirs, mine
	mine.recvIdle, theirs.recvIdle = sync.NewCond(&mine.recvMu), sync.NewCond(&theirs.recvMu)
	if !l.add(mine) {
		return nil, convergence.ErrClosed
	}
	if !remote.add(theirs) {
		l.remove(mine)
		return nil, fmt.Errorf("mem: %s is closed: %w", a, convergence.ErrClosed)
	}
	remote.emit(convergence.Event{Kind: convergence.SessionUp, Session: theirs})
	close(theirs.up)
	l.emit(convergence.Event{Kind: convergence.SessionUp, Session: mine})
	close(mine.up)
	return mine, nil
}

func (l *Layer) add(s *session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.sessions[s] = true
	return true
}

func (l *Layer) remove(s *session) {
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
}

func (l *Layer) emit(ev convergence.Event) {
	if l.events != nil {
		l.events(ev)
	}
}

// Close ends every session and stops listening.
func (l *Layer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	var ss []*session
	for s := range l.sessions {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	l.net.mu.Lock()
	for a, owner := range l.net.listening {
		if owner == l {
			delete(l.net.listening, a)
		}
	}
	l.net.mu.Unlock()
	l.cancel()
	for _, s := range ss {
		s.Close(nil)
	}
	l.wg.Wait()
	return nil
}

// session is one side of an in-memory link.
type session struct {
	layer  *Layer
	peer   bundle.EID
	remote string
	other  *session

	once sync.Once
	done chan struct{}
	err  error
	// up is closed once the session's SessionUp has been delivered: the
	// peer may send at once from its own SessionUp, and the interface
	// promises that no Receive comes before this side's SessionUp.
	up chan struct{}

	// receiving counts bundles being received; once the session ended no
	// new one starts, and SessionDown waits for the count to reach zero.
	recvMu    sync.Mutex
	recvIdle  *sync.Cond
	receiving int
	ended     bool

	bundlesSent, bytesSent, refused, failed atomic.Uint64
	bundlesRecv, bytesRecv, streamsRefused  atomic.Uint64
}

func (s *session) Peer() bundle.EID      { return s.peer }
func (s *session) RemoteAddr() net.Addr  { return addr(s.remote) }
func (s *session) Done() <-chan struct{} { return s.done }

func (s *session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *session) Stats() convergence.Stats {
	return convergence.Stats{
		BundlesSent: s.bundlesSent.Load(), BytesSent: s.bytesSent.Load(), SendsRefused: s.refused.Load(), SendsFailed: s.failed.Load(),
		BundlesReceived: s.bundlesRecv.Load(), BytesReceived: s.bytesRecv.Load(), StreamsRefused: s.streamsRefused.Load(),
	}
}

// Close ends both sides of the link.
func (s *session) Close(err error) error {
	s.end(err)
	s.other.end(err)
	return nil
}

func (s *session) end(err error) {
	s.once.Do(func() {
		if err == nil {
			err = convergence.ErrClosed
		} else {
			err = fmt.Errorf("%w: %v", convergence.ErrClosed, err)
		}
		s.err = err
		close(s.done)
		s.recvMu.Lock()
		s.ended = true
		s.recvMu.Unlock()
		s.layer.wg.Add(1)
		go func() {
			defer s.layer.wg.Done()
			s.recvMu.Lock()
			for s.receiving > 0 {
				s.recvIdle.Wait()
			}
			s.recvMu.Unlock()
			s.layer.remove(s)
			s.layer.emit(convergence.Event{Kind: convergence.SessionDown, Session: s})
		}()
	})
}

// Send encodes b into a pipe whose other end the peer's sink reads, and
// returns the sink's verdict: unlike QUIC, an in-memory link knows whether
// the peer stored the bundle.
func (s *session) Send(ctx context.Context, b *bundle.Bundle, payload io.Reader) error {
	select {
	case <-s.done:
		s.failed.Add(1)
		return convergence.ErrClosed
	default:
	}
	peer := s.other
	if !peer.beginReceive() {
		s.failed.Add(1)
		return convergence.ErrClosed
	}
	pr, pw := io.Pipe()
	result := make(chan error, 1)
	go func() {
		defer peer.endReceive()
		result <- peer.receive(pr)
	}()
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(context.Cause(ctx)) })
	defer stop()
	cw := &countingWriter{w: pw}
	_, err := bundle.Encode(cw, b, payload)
	pw.CloseWithError(err)
	s.bytesSent.Add(cw.n)
	rerr := <-result
	if err == nil && rerr != nil {
		reason, transient := convergence.Classify(rerr)
		err = &convergence.RejectError{Reason: reason, Transient: transient, Err: rerr}
		s.refused.Add(1)
		return err
	}
	if err != nil {
		s.failed.Add(1)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
	s.bundlesSent.Add(1)
	return nil
}

func (s *session) beginReceive() bool {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if s.ended {
		return false
	}
	s.receiving++
	return true
}

func (s *session) endReceive() {
	s.recvMu.Lock()
	s.receiving--
	s.recvIdle.Broadcast()
	s.recvMu.Unlock()
}

// receive decodes one bundle and gives it to the sink.
func (s *session) receive(r io.Reader) error {
	cr := &countingReader{r: r}
	b, payload, err := bundle.Decode(cr, s.layer.limits)
	if err != nil {
		io.Copy(io.Discard, cr)
		s.streamsRefused.Add(1)
		return err
	}
	select {
	case <-s.up:
		err = s.layer.sink.Receive(s.layer.ctx, s, b, payload)
	case <-s.done:
		err = convergence.ErrClosed
	}
	io.Copy(io.Discard, payload)
	io.Copy(io.Discard, cr)
	s.bytesRecv.Add(cr.n)
	if err != nil {
		s.streamsRefused.Add(1)
		return err
	}
	s.bundlesRecv.Add(1)
	return nil
}

type countingWriter struct {
	w io.Writer
	n uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	if errors.Is(err, io.ErrClosedPipe) {
		err = &convergence.InterruptedError{Err: err}
	}
	return n, err
}
