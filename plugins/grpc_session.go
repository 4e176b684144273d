package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	adapterpb "github.com/mulegate/mulegate/plugins/proto"
)

// The DeliverSession stream carries small deliveries, many at a time, in
// both directions: the node sends bundles under ids, the adapter answers
// ids, and each side packs whatever is ready into one message. See
// adapter.proto for the contract and plugins/README.md for why it exists.

const (
	// sessionBatchDeliveries and sessionBatchBytes bound one SessionRequest:
	// far below gRPC's default 4 MiB limit on a received message, and small
	// enough that one batch does not hold the stream for long.
	sessionBatchDeliveries = 64
	sessionBatchBytes      = 256 << 10
	// sessionBatchResults bounds one SessionResponse. With reasons of at
	// most MaxReasonLength bytes, a message stays under 100 KiB however
	// many answers wait: a node that cannot receive a message fails the
	// session, and with it every delivery on it.
	sessionBatchResults = 64
)

// clientSession is the node's end of a DeliverSession stream. Deliver calls
// queue their bundle, encoded, and wait for its answer; a sender goroutine
// packs the queue into messages, and a receiver goroutine hands answers out.
type clientSession struct {
	c      *GRPCClient
	stream adapterpb.Adapter_DeliverSessionClient
	cancel context.CancelFunc // ends the stream and both goroutines
	wake   chan struct{}      // capacity 1: the sender has something to send

	mu      sync.Mutex
	err     error                   // why the session ended; nil while it works
	pending map[uint64]*sessionCall // queued or sent, not answered yet
	queue   []*sessionCall          // not sent yet, oldest first
	cancels []uint64                // ids to send in SessionRequest.cancel
	// watches end the pending calls of each context when it ends, keyed
	// by its Done channel (comparable, unlike some contexts).
	watches map[<-chan struct{}]*ctxWatch
}

// ctxWatch answers, when its context ends, every pending call of the
// session that waits under it. The deliveries to an adapter mostly share
// one context (their queue's): one watch serves them all, and each caller
// waits on its own channel alone. Selecting on the context's channel as
// well made each delivery lock that channel, which every caller shares,
// twice: a tenth of the node's CPU for small bundles.
type ctxWatch struct {
	done  <-chan struct{}
	stop  func() bool // context.AfterFunc's
	calls int         // pending calls with this watch
}

// sessionCall is one delivery on a session. Calls are pooled (sessionCalls),
// channel included: once its caller has the answer, or gave up, no part of
// the session holds a call any more.
type sessionCall struct {
	id   uint64
	buf  mem.Buffer         // the encoded delivery (encodeDelivery)
	size int                // its payload's length
	done chan sessionAnswer // capacity 1; receives exactly one answer
	// Guarded by clientSession.mu:
	taken bool      // the sender took it: cancelling it takes a message
	watch *ctxWatch // the watch of its context; nil if that never ends
}

var sessionCalls = sync.Pool{New: func() any { return &sessionCall{done: make(chan sessionAnswer, 1)} }}

// sessionAnswer is the adapter's answer to a delivery, or why the session
// could not carry it.
type sessionAnswer struct {
	res Result
	err error
}

// sessionCodec is forced on the session, whatever the connection's
// codec: the node's messages on it (sessionBatch) are made for the
// contract's codec. The bytes are plain protobuf all the same.
var sessionCodec = grpc.ForceCodecV2(codec{})

// deliverSession delivers a payload of at most SessionPayloadMax bytes on the
// session, opening it if need be.
func (c *GRPCClient) deliverSession(ctx context.Context, meta Meta, payload io.Reader) Result {
	if err := ctx.Err(); err != nil {
		return failed(fmt.Errorf("deliver: %w", err))
	}
	var timeoutMs uint64
	if deadline, ok := ctx.Deadline(); ok {
		// At least 1 ms: 0 would mean no deadline at all.
		timeoutMs = uint64(max(time.Until(deadline).Milliseconds(), 1))
	}
	// Ids come from the client rather than the session, so that the
	// delivery can be encoded before it knows its session: never reused
	// by the client, they are never reused within a session either.
	id := c.lastID.Add(1)
	buf, data, err := encodeDelivery(id, &meta, timeoutMs, payload)
	if err != nil {
		return failed(err)
	}
	// The sender takes a reference of its own for a message, so the buffer
	// goes back to the pool only once both are done with it.
	defer buf.Free()
	call := sessionCalls.Get().(*sessionCall)
	call.id, call.buf, call.size, call.taken = id, buf, int(meta.PayloadLength), false
	ans := c.callSession(ctx, call)
	call.buf = nil
	sessionCalls.Put(call)
	if ans.err == nil {
		return ans.res
	}
	if status.Code(ans.err) == codes.Unimplemented && ctx.Err() == nil {
		// An adapter built before DeliverSession existed (the contract
		// forbids that answer otherwise): this payload, already read, and
		// every later one go through Deliver.
		c.streamOnly.Store(true)
		return c.deliverStream(ctx, meta, bytes.NewReader(data))
	}
	return failed(fromStatus(ctx, "deliver", ans.err))
}

// callSession sends call on the session and waits for its answer, or for
// ctx to end.
func (c *GRPCClient) callSession(ctx context.Context, call *sessionCall) sessionAnswer {
	s, err := c.session(ctx)
	if err != nil {
		return sessionAnswer{err: err}
	}
	if err := s.start(ctx, call); err != nil {
		return sessionAnswer{err: err}
	}
	// The answer, or the session's failure, or ctx's end (ctxWatch):
	// whichever comes first under the session's lock is the one.
	return <-call.done
}

// session returns the open session, or opens one. Opening waits no longer
// than ctx, the delivery's context, although the session outlives it.
func (c *GRPCClient) session(ctx context.Context) (*clientSession, error) {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	stream, err := c.rpc.DeliverSession(sctx, sessionCodec)
	if !stop() {
		cancel()
		return nil, ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s = &clientSession{
		c:       c,
		stream:  stream,
		cancel:  cancel,
		wake:    make(chan struct{}, 1),
		pending: map[uint64]*sessionCall{},
		watches: map[<-chan struct{}]*ctxWatch{},
	}
	c.mu.Lock()
	if other := c.sess; other != nil {
		// Another delivery opened one meanwhile: use that.
		c.mu.Unlock()
		cancel()
		return other, nil
	}
	c.sess = s
	c.mu.Unlock()
	go s.send(sctx)
	go s.receive()
	return s, nil
}

// start queues call for sending, to be answered when ctx ends if not
// before.
func (s *clientSession) start(ctx context.Context, call *sessionCall) error {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	call.watch = nil
	if done := ctx.Done(); done != nil {
		w := s.watches[done]
		if w == nil {
			w = &ctxWatch{done: done}
			// Run at once, in a goroutine of its own, if ctx has ended.
			w.stop = context.AfterFunc(ctx, func() { s.expire(w, ctx.Err()) })
			s.watches[done] = w
		}
		w.calls++
		call.watch = w
	}
	s.pending[call.id] = call
	s.queue = append(s.queue, call)
	first := len(s.queue) == 1
	s.mu.Unlock()
	// The sender takes the whole queue once woken: only the first
	// delivery of a queue needs to wake it. (Each needless wake-up cost
	// the sender a round through the scheduler for nothing.)
	if first {
		s.signal()
	}
	return nil
}

// forgetLocked takes a call out of the pending ones: from now on, its
// answer is for whoever did this to give.
func (s *clientSession) forgetLocked(call *sessionCall) {
	delete(s.pending, call.id)
	if w := call.watch; w != nil {
		if w.calls--; w.calls == 0 {
			// A context that outlives its deliveries (a queue's, say)
			// gets a new watch with the next one.
			w.stop()
			delete(s.watches, w.done)
		}
	}
}

// expire answers the calls of w, whose context ended with err: those not
// sent yet never are, and the adapter cancels those it has.
func (s *clientSession) expire(w *ctxWatch, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || w.calls == 0 {
		return // failed, and answered, with the session; or all answered
	}
	delete(s.watches, w.done)
	queued := false
	for id, call := range s.pending {
		if call.watch != w {
			continue
		}
		if call.taken {
			s.cancels = append(s.cancels, id)
		} else {
			queued = true
		}
		delete(s.pending, id)
		call.done <- sessionAnswer{err: err}
	}
	if queued {
		s.queue = slices.DeleteFunc(s.queue, func(c *sessionCall) bool { return c.watch == w })
	}
	w.calls = 0
	if len(s.cancels) > 0 {
		s.signal()
	}
}

func (s *clientSession) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// send is the sender goroutine. Whatever queues up while it sends goes in
// the next message: under load, many deliveries to a write.
func (s *clientSession) send(ctx context.Context) {
	var msg sessionBatch // reused: the codec is done with it when SendMsg returns
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
		// Let the goroutines that are ready to run queue their deliveries
		// first: they go in this message instead of one each. Without
		// this, Go's scheduler runs the sender as soon as the first
		// caller waits, and batches stay near one delivery. With no other
		// delivery on the session, none can join: yielding would only
		// wake the other CPU's scheduler for nothing.
		if s.others() {
			runtime.Gosched()
		}
		for {
			// What this take finds needs no wake-up of its own: one a
			// delivery gave meanwhile would find the queue empty.
			select {
			case <-s.wake:
			default:
			}
			if !s.take(&msg) {
				break
			}
			if err := s.stream.SendMsg(&msg); err != nil {
				// io.EOF: the stream is over, and the receiver learns
				// why from Recv.
				if !errors.Is(err, io.EOF) {
					s.fail(err)
				}
				return
			}
		}
	}
}

// others reports whether the session carries more than one delivery.
func (s *clientSession) others() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 1
}

// take moves the next message's worth from the queue into msg, and
// reports whether there is anything to send.
func (s *clientSession) take(msg *sessionBatch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	msg.cancel, s.cancels = s.cancels, nil
	n := min(len(s.queue), sessionBatchDeliveries)
	if n == 0 {
		msg.deliveries = nil
		return len(msg.cancel) > 0
	}
	// One more for the cancellations: marshal adds them to this slice,
	// which gRPC keeps until it has written the message.
	msg.deliveries = make(mem.BufferSlice, 0, n+1)
	size := 0
	for _, call := range s.queue[:n] {
		if len(msg.deliveries) > 0 && size+call.size > sessionBatchBytes {
			break
		}
		call.taken = true
		// The message's own reference: the caller may give up, and free
		// its one, while gRPC still writes the message.
		call.buf.Ref()
		msg.deliveries = append(msg.deliveries, call.buf)
		size += call.size
	}
	s.queue = slices.Delete(s.queue, 0, len(msg.deliveries))
	return len(msg.deliveries) > 0 || len(msg.cancel) > 0
}

// receive is the receiver goroutine: it hands each answer to its call.
func (s *clientSession) receive() {
	var resp sessionResponse
	var answered []*sessionCall // answers[i] is for answered[i], if not nil
	for {
		resp.reset()
		if err := s.stream.RecvMsg(&resp); err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the adapter ended the delivery session")
			}
			s.fail(err)
			return
		}
		answers := resp.get()
		answered = slices.Grow(answered[:0], len(answers))[:len(answers)]
		s.mu.Lock()
		for i := range answers {
			// An id not pending is a delivery whose context ended.
			if answered[i] = s.pending[answers[i].id]; answered[i] != nil {
				s.forgetLocked(answered[i])
			}
		}
		s.mu.Unlock()
		// Outside the lock: each answer readies a caller, which wants the
		// lock at once for its next delivery.
		for i, call := range answered {
			if call != nil {
				call.done <- sessionAnswer{res: answers[i].result()}
				answered[i] = nil
			}
		}
	}
}

// fail ends the session: every delivery still pending gets err, and the
// next one opens a new session.
func (s *clientSession) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	for _, call := range s.pending {
		call.done <- sessionAnswer{err: err}
	}
	for _, w := range s.watches {
		w.stop()
	}
	s.pending, s.watches, s.queue, s.cancels = nil, nil, nil, nil
	s.mu.Unlock()
	s.cancel()
	s.c.mu.Lock()
	if s.c.sess == s {
		s.c.sess = nil
	}
	s.c.mu.Unlock()
}

// DeliverSession serves the adapter's end of a session: deliveries run
// concurrently on worker goroutines, and a sender goroutine packs the
// answers.
func (s *grpcServer) DeliverSession(stream adapterpb.Adapter_DeliverSessionServer) error {
	ss := &serverSession{
		impl:    s.impl,
		stream:  stream,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		running: map[uint64]context.CancelFunc{},
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		ss.send()
	}()
	ss.pool.run = ss.deliver
	ss.pool.cond.L = &ss.pool.mu
	// Deliveries run under contexts of their own, which the session
	// cancels itself when it breaks: derived from the stream's context,
	// each would register with it, and every delivery would take and
	// release its lock twice.
	err := ss.receive(context.WithoutCancel(stream.Context()))
	if err == nil {
		// The node closed its side: finish what runs, and answer it.
		ss.pool.close(false)
		ss.pool.workers.Wait()
	} else {
		// The session broke: what still runs on it is cancelled, and
		// what has not started never starts. Its answers could not be
		// sent, so the handler does not wait for a delivery that ignores
		// its context; workers never touch the stream themselves.
		for _, job := range ss.pool.close(true) {
			job.cancel()
			if job.buf != nil {
				buffers.Put(job.buf)
			}
		}
		ss.mu.Lock()
		for _, cancel := range ss.running {
			cancel()
		}
		ss.mu.Unlock()
	}
	// Only the sender uses the stream, and it must not outlive the handler.
	close(ss.stop)
	<-sent
	return err
}

type serverSession struct {
	impl   Adapter
	stream adapterpb.Adapter_DeliverSessionServer
	pool   workerPool    // runs the deliveries
	wake   chan struct{} // capacity 1: answers are waiting
	stop   chan struct{} // closed when no more answers will come
	// ownCodec: requests arrive through the contract's codec, so answers
	// can leave through it too (sessionAnswers); set before any answer.
	ownCodec atomic.Bool

	mu      sync.Mutex
	running map[uint64]context.CancelFunc
	results []wireAnswer
}

// sessionJob is one delivery of a session, from its decoding to its answer.
type sessionJob struct {
	id        uint64
	timeoutMs uint64
	meta      Meta
	hasMeta   bool
	payload   []byte
	buf       *[]byte // the pooled buffer payload is in; nil if none
	ctx       context.Context
	cancel    context.CancelFunc
	reader    payloadReader // what the adapter reads payload through
}

// sessionRequest receives a SessionRequest. The contract's codec decodes it
// itself, each delivery into a pooled buffer that its payload is read from
// and that goes back to the pool once the delivery is answered; see
// chunkFrame for why. Decoded by any other codec, it is the plain
// SessionRequest it embeds.
type sessionRequest struct {
	adapterpb.SessionRequest
	decoded    bool
	deliveries []*sessionJob
	cancel     []uint64
}

// items returns the request's deliveries and cancellations.
func (r *sessionRequest) items() ([]*sessionJob, []uint64) {
	if r.decoded {
		return r.deliveries, r.cancel
	}
	jobs := make([]*sessionJob, len(r.GetDeliveries()))
	for i, d := range r.GetDeliveries() {
		jobs[i] = &sessionJob{id: d.GetId(), timeoutMs: d.GetTimeoutMs(), hasMeta: d.GetMeta() != nil, payload: d.GetPayload()}
		if d.GetMeta() != nil {
			jobs[i].meta = metaFromPB(d.GetMeta())
		}
	}
	return jobs, r.GetCancel()
}

// decode decodes a SessionRequest from data, as proto.Unmarshal would.
func (r *sessionRequest) decode(data mem.BufferSlice) (err error) {
	defer func() {
		if err != nil {
			for _, job := range r.deliveries {
				buffers.Put(job.buf)
			}
			r.deliveries = nil
		}
	}()
	br := bufferReader{bufs: data}
	for br.more() {
		num, typ, err := br.tag()
		if err != nil {
			return err
		}
		switch {
		case num == 1 && typ == protowire.BytesType: // deliveries
			n, err := br.length()
			if err != nil {
				return err
			}
			bp := buffers.Get(n)
			if _, err := io.ReadFull(&br, *bp); err != nil {
				buffers.Put(bp)
				return err
			}
			job := &sessionJob{buf: bp}
			if err := decodeDelivery(*bp, job); err != nil {
				buffers.Put(bp)
				return err
			}
			r.deliveries = append(r.deliveries, job)
		case num == 2 && typ == protowire.BytesType: // cancel, packed
			n, err := br.length()
			if err != nil {
				return err
			}
			packed := make([]byte, n)
			if _, err := io.ReadFull(&br, packed); err != nil {
				return err
			}
			for len(packed) > 0 {
				v, k := protowire.ConsumeVarint(packed)
				if k < 0 {
					return errMalformed
				}
				r.cancel, packed = append(r.cancel, v), packed[k:]
			}
		case num == 2 && typ == protowire.VarintType: // cancel, unpacked
			v, err := br.varint()
			if err != nil {
				return err
			}
			r.cancel = append(r.cancel, v)
		default:
			if err := br.skipField(num, typ, 0); err != nil {
				return err
			}
		}
	}
	r.decoded = true
	return nil
}

// payloadReader reads a payload that sits in a buffer another delivery gets
// once this one is answered; close stops it before that.
type payloadReader struct {
	mu   sync.Mutex
	data []byte
	err  error
}

func (r *payloadReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// close makes every later Read fail. It reports false if a Read is still
// running (an adapter that kept reading after it answered): the buffer must
// then be left alone.
func (r *payloadReader) close() bool {
	if !r.mu.TryLock() {
		return false
	}
	r.err, r.data = errReaderClosed, nil
	r.mu.Unlock()
	return true
}

// receive reads requests and starts their deliveries, under contexts
// derived from ctx, until the node closes its side (nil) or the stream
// fails.
func (ss *serverSession) receive(ctx context.Context) error {
	for {
		var req sessionRequest
		if err := ss.stream.RecvMsg(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if req.decoded {
			ss.ownCodec.Store(true)
		}
		deliveries, cancels := req.items()
		if err := ss.start(ctx, deliveries, cancels); err != nil {
			return err
		}
	}
}

// start cancels what the node gave up on, and hands a message's deliveries
// to the workers: under one hold of each lock, rather than one a delivery.
func (ss *serverSession) start(ctx context.Context, deliveries []*sessionJob, cancels []uint64) error {
	for _, job := range deliveries {
		// Never UNIMPLEMENTED: the node would take that for an adapter
		// that predates DeliverSession.
		if !job.hasMeta {
			return status.Errorf(codes.InvalidArgument, "deliver session: delivery %d carries no meta", job.id)
		}
		if got := int64(len(job.payload)); got != job.meta.PayloadLength {
			return status.Errorf(codes.InvalidArgument, "deliver session: delivery %d has a payload of %d bytes, but meta.payload_length says %d", job.id, got, uint64(job.meta.PayloadLength))
		}
	}
	for _, job := range deliveries {
		if t := job.timeoutMs; t > 0 {
			job.ctx, job.cancel = context.WithTimeout(ctx, msDuration(t))
		} else {
			job.ctx, job.cancel = context.WithCancel(ctx)
		}
	}
	ss.mu.Lock()
	for _, id := range cancels {
		if cancel := ss.running[id]; cancel != nil {
			cancel()
		}
	}
	for i, job := range deliveries {
		if ss.running[job.id] != nil {
			ss.mu.Unlock()
			// None of this message runs; what it registered is
			// cancelled with the session, which this error ends.
			for _, job := range deliveries[i:] {
				job.cancel()
			}
			return status.Errorf(codes.InvalidArgument, "deliver session: delivery %d is already running", job.id)
		}
		ss.running[job.id] = job.cancel
	}
	ss.mu.Unlock()
	ss.pool.push(deliveries...)
	return nil
}

// workerPool runs a session's deliveries concurrently, on as many worker
// goroutines as deliveries have been running at once. Workers live as long
// as the session, so their stacks stay grown (a new goroutine per delivery
// spent a tenth of a NATS adapter's time growing its stack); a worker may
// outlive a failed session, until its delivery returns.
//
// At most one worker is on its way to the queue at a time (woken, or just
// started), and a worker that takes a delivery wakes the next one only if
// more wait. A delivery that blocks (on the service's answer, say) thus
// still has the next one started by another worker at once, but when
// deliveries return quickly, the workers already running take the queue
// between them, instead of each delivery waking a worker of its own: a
// wake-up, with the other CPU's scheduler woken to run it, cost more than
// a small delivery's own work.
type workerPool struct {
	run     func(*sessionJob)
	workers sync.WaitGroup

	mu     sync.Mutex
	cond   sync.Cond     // idle workers wait on it; its L is &mu
	queue  []*sessionJob // from head on
	head   int
	idle   int  // workers waiting on cond
	waking bool // a worker is on its way: signalled, or started
	closed bool
}

// push queues deliveries, and makes sure that a worker comes for them.
func (p *workerPool) push(jobs ...*sessionJob) {
	p.mu.Lock()
	p.queue = append(p.queue, jobs...)
	p.wakeLocked()
	p.mu.Unlock()
}

// wakeLocked sends a worker to the queue, unless one is on its way or the
// queue is empty. Whenever the pool's lock is free and the queue holds a
// delivery, a worker is on its way, or running and bound to come back.
func (p *workerPool) wakeLocked() {
	if p.waking || p.head == len(p.queue) {
		return
	}
	p.waking = true
	if p.idle > 0 {
		p.cond.Signal()
		return
	}
	p.workers.Go(p.worker)
}

// close stops the pool: workers exit once the queue is empty. With drop,
// it empties the queue and returns the deliveries no worker will start
// now.
func (p *workerPool) close(drop bool) []*sessionJob {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.cond.Broadcast()
	if !drop {
		return nil
	}
	left := p.queue[p.head:]
	p.queue, p.head = nil, 0
	return left
}

func (p *workerPool) worker() {
	p.mu.Lock()
	p.waking = false // this worker was the one on its way
	for {
		if p.head == len(p.queue) {
			if p.closed {
				p.mu.Unlock()
				return
			}
			p.idle++
			p.cond.Wait()
			p.idle--
			if !p.closed {
				p.waking = false // woken by wakeLocked's Signal
			}
			continue
		}
		job := p.queue[p.head]
		p.queue[p.head] = nil
		if p.head++; p.head == len(p.queue) {
			p.queue, p.head = p.queue[:0], 0
		}
		p.wakeLocked()
		p.mu.Unlock()
		p.run(job)
		p.mu.Lock()
	}
}

func (ss *serverSession) deliver(job *sessionJob) {
	job.reader.data = job.payload
	res := ss.impl.Deliver(job.ctx, job.meta, &job.reader)
	job.cancel()
	if job.reader.close() && job.buf != nil {
		buffers.Put(job.buf)
	}
	answer := answerOf(job.id, res)
	ss.mu.Lock()
	delete(ss.running, job.id)
	ss.results = append(ss.results, answer)
	first := len(ss.results) == 1
	ss.mu.Unlock()
	// As in clientSession.start: the sender takes every answer waiting
	// once woken, so only the first needs to wake it.
	if first {
		select {
		case ss.wake <- struct{}{}:
		default:
		}
	}
}

// send is the sender goroutine: it sends whatever answers are waiting, at
// most sessionBatchResults to a message, until stop. After a failed Send
// it drops answers; the receiver sees the stream fail too.
func (ss *serverSession) send() {
	broken := false
	var msg sessionAnswers // reused: the codec is done with it when SendMsg returns
	flush := func() {
		for {
			select { // as in clientSession.send
			case <-ss.wake:
			default:
			}
			msg.answers = ss.takeResults(msg.answers)
			if len(msg.answers) == 0 {
				return
			}
			if broken {
				continue // dropped: they cannot be sent
			}
			var err error
			if ss.ownCodec.Load() {
				err = ss.stream.SendMsg(&msg)
			} else {
				err = ss.stream.Send(msg.proto())
			}
			if err != nil {
				broken = true
			}
		}
	}
	for {
		select {
		case <-ss.wake:
			// As in clientSession.send: let ready answers join, if a
			// delivery still runs that could give one.
			if ss.busy() {
				runtime.Gosched()
			}
			flush()
		case <-ss.stop:
			flush()
			return
		}
	}
}

// busy reports whether a delivery of the session is still running.
func (ss *serverSession) busy() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.running) > 0
}

// takeResults moves the next message's worth of answers into into.
func (ss *serverSession) takeResults(into []wireAnswer) []wireAnswer {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := min(len(ss.results), sessionBatchResults)
	into = append(into[:0], ss.results[:n]...)
	// Rarely more than a message's worth wait; the rest moves up.
	ss.results = ss.results[:copy(ss.results, ss.results[n:])]
	return into
}
