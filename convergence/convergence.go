package convergence

import (
	"context"
	"io"
	"net"

	"github.com/mulegate/mulegate/bundle"
)

// Sink receives the bundles that arrive on a layer's sessions. The node
// implements it (with its store) and gives it to the layer when it builds it.
type Sink interface {
	// Receive is called once for each incoming bundle whose header decoded
	// and passed the layer's limits, possibly from many goroutines at once
	// (one per bundle in transfer). b is the bundle's metadata; payload
	// streams its b.Payload.Length payload bytes as they arrive.
	//
	// Receive returns nil only once the bundle is durably stored. It must
	// read payload to io.EOF before that, because io.EOF is what says the
	// payload's CRC matched and the bundle ended properly; a layer reads
	// whatever a sink left unread, and treats a failure there as a refusal.
	//
	// Any other return is a refusal, and the layer passes its reason to the
	// sender: return a *RejectError (see Reject and RejectTransient), or an
	// error from the bundle package (which carries its own reason), or any
	// other error, which counts as transient (see Classify).
	//
	// When payload returns an error that matches ErrInterrupted, the transfer
	// broke off after the number of payload bytes given by the
	// *InterruptedError. The sink keeps them if it can (as the fragment
	// b.Fragment(0, Received)) and returns an error; no byte will follow.
	// Any other payload error means the bundle is bad (CRC mismatch,
	// malformed, too large) and must not be kept.
	//
	// ctx is done when the layer is closing; the end of a session shows up
	// as ErrInterrupted from payload instead, so that a bundle that arrived
	// whole is not cut short while it is being stored. s is the session the
	// bundle came in on; s.Peer() is the authenticated previous hop.
	Receive(ctx context.Context, s Session, b *bundle.Bundle, payload *bundle.PayloadReader) error
}

// Session is an authenticated link to one peer. All its methods are safe for
// concurrent use; in particular, several Sends may be in progress at once,
// each carrying its own bundle.
type Session interface {
	// Peer is the peer's node ID (dtn://node/ or ipn:N.0), as authenticated by
	// the transport.
	Peer() bundle.EID

	// RemoteAddr is the peer's transport address, for logs.
	RemoteAddr() net.Addr

	// Send transmits b, followed by exactly b.Payload.Length payload bytes
	// read from payload. It never holds the payload in memory whole. To send
	// a fragment carrying payload bytes [off, off+n), pass
	// b.Fragment(off, n) and io.NewSectionReader(r, off, n).
	//
	// Send returns nil once the whole bundle has been handed to the
	// transport before the peer refused it: the bundle is transmitted, and
	// the transport delivers it unless the session fails. That is not proof
	// that the peer stored it (see the package documentation).
	//
	// Otherwise the bundle must be considered not sent, and the error says
	// why: a *RejectError if the peer refused it (errors.As; use its
	// Transient field to decide between retrying later and giving up on this
	// peer); an error matching ErrClosed if the session ended first; ctx's
	// error if ctx ended first; an error matching ErrStalled if the peer,
	// though still connected, stopped taking data for longer than the
	// layer allows; or the error from reading payload. A bundle that was
	// cut off half way leaves the peer with the part that arrived, which its
	// sink may keep as a fragment.
	Send(ctx context.Context, b *bundle.Bundle, payload io.Reader) error

	// Stats returns the session's counters so far.
	Stats() Stats

	// Close ends the session. A nil err is an orderly close; otherwise err is
	// the reason given to the peer. Transfers still in progress in either
	// direction fail, and bundles handed to the transport but not yet
	// delivered may be lost. Close does not wait for SessionDown. Closing a
	// closed session does nothing.
	Close(err error) error

	// Done is closed when the session has ended and the last Sink.Receive
	// call for it has returned.
	Done() <-chan struct{}

	// Err is nil until Done is closed; then it says why the session ended,
	// and matches ErrClosed.
	Err() error
}

// Layer is a convergence layer: it makes sessions with peers, by listening
// and by dialling.
type Layer interface {
	// Listen accepts sessions at addr ("host:port"; see the implementation
	// for its default port). Each accepted session is announced with
	// SessionUp. ctx bounds only the setting up of the listener; close the
	// Listener or the Layer to stop.
	Listen(ctx context.Context, addr string) (Listener, error)

	// Dial makes a session with the peer at addr. When expectedPeer is not
	// the zero EID, the peer must authenticate as that node, or Dial fails
	// without a session. SessionUp is announced before Dial returns. Every
	// Dial makes a new session, so two nodes may have several at once.
	Dial(ctx context.Context, addr string, expectedPeer bundle.EID) (Session, error)

	// Close closes every listener and session, and returns once every
	// SessionDown has been delivered, which needs every Sink.Receive call to
	// return: a sink must give up when its ctx is done.
	Close() error
}

// Listener is a listening endpoint of a Layer.
type Listener interface {
	// Addr is the address it listens on, with the port chosen when the
	// requested one was 0.
	Addr() net.Addr
	// Close stops accepting sessions. Sessions already accepted go on.
	Close() error
}

// EventKind says what happened to a session.
type EventKind uint8

const (
	// SessionUp: the session is authenticated and ready. It is delivered
	// before any Sink.Receive call for the session.
	SessionUp EventKind = iota + 1
	// SessionDown: the session has ended (Session.Err says why) and no
	// Sink.Receive call for it is in progress or will follow. Delivered
	// exactly once per session, after its SessionUp.
	SessionDown
)

func (k EventKind) String() string {
	switch k {
	case SessionUp:
		return "up"
	case SessionDown:
		return "down"
	}
	return "unknown"
}

// Event is a session going up or down. A layer delivers events by calling
// the function it was given when it was built, one call at a time per
// session; the function should return quickly and must not call the
// layer's Close.
type Event struct {
	Kind    EventKind
	Session Session
}

// Stats are a session's counters. Bytes are counted on the wire: the
// encoded bundles, headers and trailers included.
type Stats struct {
	// BundlesSent counts Sends that returned nil; BytesSent counts every
	// byte written, those of failed Sends included.
	BundlesSent uint64
	BytesSent   uint64
	// SendsRefused counts Sends the peer refused (a *RejectError);
	// SendsFailed counts the other failed Sends.
	SendsRefused uint64
	SendsFailed  uint64

	// BundlesReceived counts bundles the sink stored; BytesReceived counts
	// every byte read, those of refused and interrupted bundles included.
	BundlesReceived uint64
	BytesReceived   uint64
	// StreamsRefused counts incoming bundles this side refused: over a
	// limit, malformed, or refused by the sink.
	StreamsRefused uint64
	// PartialReceptions counts incoming bundles that broke off after the
	// sink was given them, so the sink could keep the part that arrived.
	PartialReceptions uint64
}
