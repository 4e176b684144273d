package quic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
)

// session is one QUIC connection with an authenticated peer.
type session struct {
	layer *Layer
	conn  *quicgo.Conn
	peer  bundle.EID

	inflight atomic.Int64               // transfers in progress, both ways
	handlers sync.WaitGroup             // the accept loops and the stream handlers
	streams  chan *quicgo.ReceiveStream // to idle workers
	done     chan struct{}
	err      error // set before done is closed

	bundlesSent, bytesSent, sendsRefused, sendsFailed                 atomic.Uint64
	bundlesReceived, bytesReceived, streamsRefused, partialReceptions atomic.Uint64
}

var _ convergence.Session = (*session)(nil)

func newSession(l *Layer, conn *quicgo.Conn, peer bundle.EID) *session {
	return &session{layer: l, conn: conn, peer: peer, streams: make(chan *quicgo.ReceiveStream), done: make(chan struct{})}
}

func (s *session) Peer() bundle.EID      { return s.peer }
func (s *session) RemoteAddr() net.Addr  { return s.conn.RemoteAddr() }
func (s *session) Done() <-chan struct{} { return s.done }

func (s *session) String() string {
	return fmt.Sprintf("qbcl session with %s at %s", s.peer, s.conn.RemoteAddr())
}

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
		BundlesSent:       s.bundlesSent.Load(),
		BytesSent:         s.bytesSent.Load(),
		SendsRefused:      s.sendsRefused.Load(),
		SendsFailed:       s.sendsFailed.Load(),
		BundlesReceived:   s.bundlesReceived.Load(),
		BytesReceived:     s.bytesReceived.Load(),
		StreamsRefused:    s.streamsRefused.Load(),
		PartialReceptions: s.partialReceptions.Load(),
	}
}

// Close closes the connection: with QBCL_NO_ERROR when err is nil and no
// transfer is in progress, otherwise with QBCL_SHUTTING_DOWN and err's text.
func (s *session) Close(err error) error {
	code, msg := CodeNoError, ""
	if err != nil {
		code, msg = CodeShuttingDown, err.Error()
	} else if s.inflight.Load() > 0 {
		code = CodeShuttingDown
	}
	return s.conn.CloseWithError(quicgo.ApplicationErrorCode(code), msg)
}

// run starts the session's goroutines: one accepting bundle streams, one
// watching for bidirectional streams, and one that reports the session down
// once the connection has closed and every handler has returned.
func (s *session) run() {
	s.handlers.Add(2)
	go s.acceptBundles()
	go s.refuseBidirectional()
	go func() {
		<-s.conn.Context().Done()
		s.handlers.Wait()
		s.err = fmt.Errorf("%w: %w", convergence.ErrClosed, context.Cause(s.conn.Context()))
		close(s.done)
		s.layer.down(s)
	}()
}

// acceptBundles hands each incoming stream to an idle worker, or to a new
// one. Workers outlive their stream, so that their stacks, grown deep by
// decoding, serve the next bundle (new goroutines spent a seventh of the
// time of small bundles growing their stacks). Their number follows how
// many streams the peer has open at once, which Options.MaxIncomingStreams
// bounds, and an idle worker ends after workerIdle.
func (s *session) acceptBundles() {
	defer s.handlers.Done()
	defer close(s.streams)
	for {
		str, err := s.conn.AcceptUniStream(context.Background())
		if err != nil {
			return // the connection is closed
		}
		select {
		case s.streams <- str:
		default:
			s.handlers.Add(1)
			go s.worker(str)
		}
	}
}

// workerIdle is how long a worker waits for another stream before it ends.
const workerIdle = 10 * time.Second

func (s *session) worker(str *quicgo.ReceiveStream) {
	defer s.handlers.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		s.receive(str)
		idle.Reset(workerIdle)
		var ok bool
		select {
		case str, ok = <-s.streams:
			if !ok {
				return
			}
		case <-idle.C:
			return
		}
	}
}

// refuseBidirectional closes the connection with QBCL_PROTOCOL_ERROR as soon
// as the peer opens a bidirectional stream, which Qubicle does not use.
func (s *session) refuseBidirectional() {
	defer s.handlers.Done()
	str, err := s.conn.AcceptStream(context.Background())
	if err != nil {
		return
	}
	s.layer.opts.Log.Info("peer opened a bidirectional stream", zap.Stringer("peer", s.peer), zap.Int64("stream", int64(str.StreamID())))
	s.conn.CloseWithError(quicgo.ApplicationErrorCode(CodeProtocolError), "qubicle uses unidirectional streams only")
}

// receive handles one incoming bundle stream, and leaves it read to its end
// or cancelled, with its credit released, whatever happens.
func (s *session) receive(str *quicgo.ReceiveStream) {
	defer str.ReleaseStreamCredit()
	s.inflight.Add(1)
	defer s.inflight.Add(-1)

	res := s.layer.recv.receive(s.layer.ctx, s, str)
	s.bytesReceived.Add(res.read)
	log := s.layer.opts.Log
	switch res.outcome {
	case accepted:
		s.bundlesReceived.Add(1)
	case refused:
		str.CancelRead(quicgo.StreamErrorCode(res.code))
		s.streamsRefused.Add(1)
		log.Info("bundle refused", zap.Stringer("peer", s.peer), zap.Stringer("code", res.code), zap.Error(res.err))
	case interrupted:
		str.CancelRead(quicgo.StreamErrorCode(CodeTransferCancelled))
		if res.partial {
			s.partialReceptions.Add(1)
		}
		log.Debug("transfer interrupted", zap.Stringer("peer", s.peer), zap.Bool("partial", res.partial), zap.Error(res.err))
	case violated:
		str.CancelRead(quicgo.StreamErrorCode(CodeProtocolError))
		log.Info("protocol error", zap.Stringer("peer", s.peer), zap.Error(res.err))
		s.conn.CloseWithError(quicgo.ApplicationErrorCode(CodeProtocolError), res.err.Error())
	}
}

// Bundles whose payload is at most this big are encoded into memory and
// written in one go; larger ones stream their payload straight to QUIC.
const smallPayload = 16 << 10

var smallBuffers = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 2*smallPayload)) }}

// Send opens a unidirectional stream, writes b and its payload in the direct
// form, and closes the stream (FIN).
//
// Success means quic-go has every byte and the FIN, and the peer had not
// stopped the stream by then; quic-go then delivers them unless the
// connection fails. quic-go does not tell when the peer has acknowledged a
// stream's data, so Send cannot wait for that. A peer that refuses a bundle
// from its header or part way through stops the stream, and Send returns a
// *convergence.RejectError; a refusal that arrives after Send returned (the
// usual case for a bundle smaller than the peer's flow control window)
// is not reported. A peer that takes nothing for Options.SendStallTimeout
// makes Send cancel the stream and return an error matching
// convergence.ErrStalled.
func (s *session) Send(ctx context.Context, b *bundle.Bundle, payload io.Reader) error {
	if s.conn.Context().Err() != nil {
		s.sendsFailed.Add(1)
		return fmt.Errorf("quic: send %s: %w", b.ID(), s.closedErr())
	}
	if ctx.Err() != nil {
		s.sendsFailed.Add(1)
		return fmt.Errorf("quic: send %s: %w", b.ID(), context.Cause(ctx))
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)

	// A small bundle is encoded into memory first, and goes to quic-go in
	// one piece.
	var small []byte
	if b.Payload.Length <= smallPayload {
		buf := smallBuffers.Get().(*bytes.Buffer)
		buf.Reset()
		defer func() {
			if buf.Cap() <= 4*smallPayload { // a huge header is not worth keeping
				smallBuffers.Put(buf)
			}
		}()
		if _, err := bundle.Encode(buf, b, payload); err != nil {
			s.sendsFailed.Add(1)
			return fmt.Errorf("quic: send %s: %w", b.ID(), err)
		}
		small = buf.Bytes()
	}

	str, err := s.openStream(ctx)
	if err != nil {
		s.sendsFailed.Add(1)
		return fmt.Errorf("quic: send %s: %w", b.ID(), s.sendError(ctx, nil, err))
	}
	var sent uint64
	queued := false
	if small != nil {
		// Usually the peer's flow control has room for a small bundle, and
		// quic-go takes a copy of it whole at once. Then nothing can block,
		// and there is no context or stall to watch: that spares a context
		// hook and a timer per bundle, a few percent of a small bundle's
		// cost. ErrWouldBlock queues nothing, and the bundle takes the
		// watched path below.
		switch err = str.TryWriteAll(small); {
		case err == nil:
			sent, queued = uint64(len(small)), true
		case errors.Is(err, quicgo.ErrWouldBlock):
			err = nil
		}
	}
	stop := func() bool { return true }
	if err == nil && !queued {
		if ctx.Done() != nil {
			stop = context.AfterFunc(ctx, func() { str.CancelWrite(quicgo.StreamErrorCode(CodeTransferCancelled)) })
		}
		w := &streamWriter{str: str, stall: s.layer.opts.SendStallTimeout}
		if small != nil {
			_, err = w.Write(small)
		} else {
			_, err = bundle.Encode(w, b, payload)
		}
		sent = w.n
	}
	if err == nil {
		err = str.Close()
	}
	cancelled := !stop()
	s.bytesSent.Add(sent)
	if err == nil && !cancelled {
		s.bundlesSent.Add(1)
		return nil
	}
	str.CancelWrite(quicgo.StreamErrorCode(CodeTransferCancelled))
	err = s.sendError(ctx, str, err)
	var rej *convergence.RejectError
	if errors.As(err, &rej) {
		s.sendsRefused.Add(1)
	} else {
		s.sendsFailed.Add(1)
	}
	return fmt.Errorf("quic: send %s: %w", b.ID(), err)
}

// openStream opens a stream for a bundle, waiting for the peer's stream
// credit at most Options.SendStallTimeout. A peer holds a stream's credit
// until its sink has stored the bundle, so a peer whose store is stuck
// soon has none to give.
func (s *session) openStream(ctx context.Context) (*quicgo.SendStream, error) {
	// Usually there is credit to spare, and this costs no timer. OpenUniStream
	// fails while other Sends are waiting, so it never jumps the queue.
	str, err := s.conn.OpenUniStream()
	var limited *quicgo.StreamLimitReachedError
	if err == nil || !errors.As(err, &limited) {
		return str, err
	}
	stall := s.layer.opts.SendStallTimeout
	if stall <= 0 {
		return s.conn.OpenUniStreamSync(ctx)
	}
	octx, cancel := context.WithTimeoutCause(ctx, stall, errStalledOpen)
	defer cancel()
	str, err = s.conn.OpenUniStreamSync(octx)
	if err != nil && ctx.Err() == nil && context.Cause(octx) == errStalledOpen {
		return nil, fmt.Errorf("%w: it granted no stream for %v (its store may be stuck; SendStallTimeout)", convergence.ErrStalled, stall)
	}
	return str, err
}

var errStalledOpen = errors.New("stream credit stalled")

// sendError tells why a Send failed with err: the peer stopped the stream,
// ctx ended, the connection closed, or the payload could not be read.
func (s *session) sendError(ctx context.Context, str *quicgo.SendStream, err error) error {
	if str != nil {
		// A STOP_SENDING from the peer is recorded in the stream's context,
		// even when what failed was Close, which does not return it.
		var se *quicgo.StreamError
		if errors.As(context.Cause(str.Context()), &se) && se.Remote {
			return rejection(Code(se.ErrorCode), se)
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if s.conn.Context().Err() != nil {
		return s.closedErr()
	}
	return err
}

func (s *session) closedErr() error {
	return fmt.Errorf("%w: %w", convergence.ErrClosed, context.Cause(s.conn.Context()))
}

// streamWriter writes a bundle to its stream, counts the bytes written,
// and gives up when the peer lets no byte through for stall (0: never).
type streamWriter struct {
	str   deadlineWriter // a *quicgo.SendStream; a fake in tests
	stall time.Duration
	n     uint64
}

type deadlineWriter interface {
	io.Writer
	SetWriteDeadline(time.Time) error
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if w.stall <= 0 {
		n, err := w.str.Write(p)
		w.n += uint64(n)
		return n, err
	}
	written := 0
	for {
		// The clock starts afresh at each call, so the time the caller
		// spends reading the payload between calls is not held against
		// the peer.
		w.str.SetWriteDeadline(time.Now().Add(w.stall))
		n, err := w.str.Write(p[written:])
		written += n
		w.n += uint64(n)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return written, err
		}
		if n == 0 {
			return written, fmt.Errorf("%w: not one byte of the bundle could be written for %v (its store may be stuck; SendStallTimeout)", convergence.ErrStalled, w.stall)
		}
		// Some bytes got through before the deadline: the link is slow,
		// not stalled. A stall is therefore found between one and two
		// stall timeouts after the last byte went.
	}
}
