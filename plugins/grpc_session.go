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
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

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
// queue their bundle and wait for its answer; a sender goroutine packs the
// queue into messages, and a receiver goroutine hands answers out.
type clientSession struct {
	c      *GRPCClient
	stream adapterpb.Adapter_DeliverSessionClient
	cancel context.CancelFunc // ends the stream and both goroutines
	wake   chan struct{}      // capacity 1: the sender has something to send

	mu      sync.Mutex
	err     error                   // why the session ended; nil while it works
	lastID  uint64                  // the last id handed out
	pending map[uint64]*sessionCall // queued or sent, not answered yet
	queue   []*sessionCall          // not sent yet, oldest first
	cancels []uint64                // ids to send in SessionRequest.cancel
}

// sessionCall is one delivery on a session.
type sessionCall struct {
	req  *adapterpb.SessionDelivery
	done chan sessionAnswer // capacity 1; receives exactly one answer
	// Guarded by clientSession.mu:
	taken     bool // the sender took req, so it may still be reading its payload
	abandoned bool // the caller gave up before it was taken: do not send it
}

// sessionAnswer is the adapter's answer to a delivery, or why the session
// could not carry it.
type sessionAnswer struct {
	resp *adapterpb.DeliverResponse
	err  error
	// taken: the sender took the request before the session failed, so the
	// payload may still be in use.
	taken bool
}

// deliverSession delivers a payload of at most SessionPayloadMax bytes on the
// session, opening it if need be.
func (c *GRPCClient) deliverSession(ctx context.Context, meta Meta, payload io.Reader) Result {
	if err := ctx.Err(); err != nil {
		return failed(fmt.Errorf("deliver: %w", err))
	}
	bp := buffers.Get(int(meta.PayloadLength))
	data := *bp
	if _, err := io.ReadFull(payload, data); err != nil {
		buffers.Put(bp)
		return failed(shortPayload(err, 0, meta.PayloadLength))
	}
	req := &adapterpb.SessionDelivery{Meta: metaToPB(meta), Payload: data}
	if deadline, ok := ctx.Deadline(); ok {
		// At least 1 ms: 0 would mean no deadline at all.
		req.TimeoutMs = uint64(max(time.Until(deadline).Milliseconds(), 1))
	}
	ans := c.callSession(ctx, req)
	if ans.err == nil {
		buffers.Put(bp)
		return resultFromPB(ans.resp)
	}
	var res Result
	if status.Code(ans.err) == codes.Unimplemented && ctx.Err() == nil {
		// An adapter built before DeliverSession existed (the contract
		// forbids that answer otherwise): this payload, already read, and
		// every later one go through Deliver.
		c.streamOnly.Store(true)
		res = c.deliverStream(ctx, meta, bytes.NewReader(data))
	} else {
		res = failed(fromStatus(ctx, "deliver", ans.err))
	}
	// A request the sender took may still be being marshalled; its buffer
	// is left to the garbage collector rather than handed out again.
	if !ans.taken {
		buffers.Put(bp)
	}
	return res
}

// callSession sends req on the session and waits for its answer, or for ctx
// to end.
func (c *GRPCClient) callSession(ctx context.Context, req *adapterpb.SessionDelivery) sessionAnswer {
	s, err := c.session(ctx)
	if err != nil {
		return sessionAnswer{err: err}
	}
	call, err := s.start(req)
	if err != nil {
		return sessionAnswer{err: err}
	}
	select {
	case ans := <-call.done:
		return ans
	case <-ctx.Done():
	}
	taken := s.abandon(call)
	select {
	case ans := <-call.done:
		if ans.err == nil {
			return ans // the answer raced the cancellation: it still counts
		}
	default:
	}
	return sessionAnswer{err: ctx.Err(), taken: taken}
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
	stream, err := c.rpc.DeliverSession(sctx)
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

// start queues req for sending.
func (s *clientSession) start(req *adapterpb.SessionDelivery) (*sessionCall, error) {
	call := &sessionCall{req: req, done: make(chan sessionAnswer, 1)}
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, s.err
	}
	s.lastID++
	req.Id = s.lastID
	s.pending[req.Id] = call
	s.queue = append(s.queue, call)
	s.mu.Unlock()
	s.signal()
	return call, nil
}

// abandon forgets a call whose caller stopped waiting, and tells the adapter
// to cancel it if it was sent. It returns whether the sender took the call.
func (s *clientSession) abandon(call *sessionCall) (taken bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.pending[call.req.Id] != call {
		return call.taken // answered, or failed with the session
	}
	delete(s.pending, call.req.Id)
	if !call.taken {
		call.abandoned = true
		return false
	}
	s.cancels = append(s.cancels, call.req.Id)
	s.signal()
	return true
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
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
		// Let the goroutines that are ready to run queue their deliveries
		// first: they go in this message instead of one each. Without
		// this, Go's scheduler runs the sender as soon as the first
		// caller waits, and batches stay near one delivery.
		runtime.Gosched()
		for {
			msg := s.take()
			if msg == nil {
				break
			}
			if err := s.stream.Send(msg); err != nil {
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

// take removes the next message's worth from the queue.
func (s *clientSession) take() *adapterpb.SessionRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil
	}
	msg := &adapterpb.SessionRequest{Cancel: s.cancels}
	s.cancels = nil
	size, n := 0, 0
	for ; n < len(s.queue) && len(msg.Deliveries) < sessionBatchDeliveries; n++ {
		call := s.queue[n]
		if call.abandoned {
			continue
		}
		if len(msg.Deliveries) > 0 && size+len(call.req.Payload) > sessionBatchBytes {
			break
		}
		call.taken = true
		msg.Deliveries = append(msg.Deliveries, call.req)
		size += len(call.req.Payload)
	}
	s.queue = slices.Delete(s.queue, 0, n)
	if len(msg.Deliveries) == 0 && len(msg.Cancel) == 0 {
		return nil
	}
	return msg
}

// receive is the receiver goroutine: it hands each answer to its call.
func (s *clientSession) receive() {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the adapter ended the delivery session")
			}
			s.fail(err)
			return
		}
		s.mu.Lock()
		for _, r := range resp.GetResults() {
			// An id not pending is a delivery the caller abandoned.
			if call := s.pending[r.GetId()]; call != nil {
				delete(s.pending, r.GetId())
				call.done <- sessionAnswer{resp: r.GetResult()}
			}
		}
		s.mu.Unlock()
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
	for id, call := range s.pending {
		call.done <- sessionAnswer{err: err, taken: call.taken}
		delete(s.pending, id)
	}
	s.queue, s.cancels = nil, nil
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
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	ss := &serverSession{
		impl:    s.impl,
		stream:  stream,
		work:    make(chan sessionJob),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		running: map[uint64]context.CancelFunc{},
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		ss.send()
	}()
	err := ss.receive(ctx)
	close(ss.work) // idle workers exit
	if err == nil {
		// The node closed its side: finish what runs, and answer it.
		ss.workers.Wait()
	} else {
		// The session broke: what still runs on it is cancelled. Its
		// answers could not be sent, so the handler does not wait for a
		// delivery that ignores its context; workers never touch the
		// stream themselves.
		cancel()
	}
	// Only the sender uses the stream, and it must not outlive the handler.
	close(ss.stop)
	<-sent
	return err
}

type serverSession struct {
	impl   Adapter
	stream adapterpb.Adapter_DeliverSessionServer
	// work hands a delivery to an idle worker. There are as many workers
	// as deliveries have been in flight at once; they live as long as the
	// session, so their stacks stay grown (a new goroutine per delivery
	// spent a tenth of a NATS adapter's time growing its stack). A worker
	// may outlive a failed session, until its delivery returns.
	work    chan sessionJob
	workers sync.WaitGroup
	wake    chan struct{} // capacity 1: answers are waiting
	stop    chan struct{} // closed when no more answers will come

	mu      sync.Mutex
	running map[uint64]context.CancelFunc
	results []*adapterpb.SessionResult
}

// sessionJob is one delivery for a worker.
type sessionJob struct {
	d       *adapterpb.SessionDelivery // its id, meta and timeout
	payload []byte
	buf     *[]byte // the pooled buffer payload is in; nil if none
	ctx     context.Context
	cancel  context.CancelFunc
}

// sessionRequest receives a SessionRequest. The contract's codec decodes it
// itself, each delivery into a pooled buffer that its payload is read from
// and that goes back to the pool once the delivery is answered; see
// chunkFrame for why. Decoded by any other codec, it is the plain
// SessionRequest it embeds.
type sessionRequest struct {
	adapterpb.SessionRequest
	decoded    bool
	deliveries []sessionJob
	cancel     []uint64
}

// items returns the request's deliveries and cancellations.
func (r *sessionRequest) items() ([]sessionJob, []uint64) {
	if r.decoded {
		return r.deliveries, r.cancel
	}
	jobs := make([]sessionJob, len(r.GetDeliveries()))
	for i, d := range r.GetDeliveries() {
		jobs[i] = sessionJob{d: d, payload: d.GetPayload()}
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
			job, err := decodeDelivery(*bp)
			if err != nil {
				buffers.Put(bp)
				return err
			}
			job.buf = bp
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

// decodeDelivery decodes a SessionDelivery from b, with its payload left in
// b.
func decodeDelivery(b []byte) (sessionJob, error) {
	job := sessionJob{d: &adapterpb.SessionDelivery{}}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return job, errMalformed
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			job.d.Id, n = protowire.ConsumeVarint(b)
		case num == 2 && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				if job.d.Meta == nil {
					job.d.Meta = &adapterpb.BundleMeta{}
				}
				// A message field that occurs twice is merged.
				if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, job.d.Meta); err != nil {
					return job, err
				}
			}
		case num == 3 && typ == protowire.BytesType:
			job.payload, n = protowire.ConsumeBytes(b)
		case num == 4 && typ == protowire.VarintType:
			job.d.TimeoutMs, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return job, errMalformed
		}
		b = b[n:]
	}
	return job, nil
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

// receive reads requests and starts their deliveries until the node closes
// its side (nil) or the stream fails.
func (ss *serverSession) receive(ctx context.Context) error {
	for {
		var req sessionRequest
		if err := ss.stream.RecvMsg(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		deliveries, cancels := req.items()
		ss.mu.Lock()
		for _, id := range cancels {
			if cancel := ss.running[id]; cancel != nil {
				cancel()
			}
		}
		ss.mu.Unlock()
		for _, job := range deliveries {
			if err := ss.start(ctx, job); err != nil {
				return err
			}
		}
	}
}

// start hands a delivery to a worker.
func (ss *serverSession) start(ctx context.Context, job sessionJob) error {
	// Never UNIMPLEMENTED: the node would take that for an adapter that
	// predates DeliverSession.
	d := job.d
	pm := d.GetMeta()
	if pm == nil {
		return status.Errorf(codes.InvalidArgument, "deliver session: delivery %d carries no meta", d.GetId())
	}
	if got := uint64(len(job.payload)); got != pm.GetPayloadLength() {
		return status.Errorf(codes.InvalidArgument, "deliver session: delivery %d has a payload of %d bytes, but meta.payload_length says %d", d.GetId(), got, pm.GetPayloadLength())
	}
	if t := d.GetTimeoutMs(); t > 0 {
		job.ctx, job.cancel = context.WithTimeout(ctx, msDuration(t))
	} else {
		job.ctx, job.cancel = context.WithCancel(ctx)
	}
	ss.mu.Lock()
	if ss.running[d.GetId()] != nil {
		ss.mu.Unlock()
		job.cancel()
		return status.Errorf(codes.InvalidArgument, "deliver session: delivery %d is already running", d.GetId())
	}
	ss.running[d.GetId()] = job.cancel
	ss.mu.Unlock()
	select {
	case ss.work <- job:
	default:
		ss.workers.Go(func() { ss.worker(job) })
	}
	return nil
}

// worker runs job, then whatever work comes, until the session ends.
func (ss *serverSession) worker(job sessionJob) {
	for ok := true; ok; job, ok = <-ss.work {
		ss.deliver(job)
	}
}

func (ss *serverSession) deliver(job sessionJob) {
	d := job.d
	r := &payloadReader{data: job.payload}
	res := ss.impl.Deliver(job.ctx, metaFromPB(d.GetMeta()), r)
	job.cancel()
	if r.close() && job.buf != nil {
		buffers.Put(job.buf)
	}
	answer := &adapterpb.SessionResult{Id: d.GetId(), Result: resultToPB(res)}
	ss.mu.Lock()
	delete(ss.running, d.GetId())
	ss.results = append(ss.results, answer)
	ss.mu.Unlock()
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

// send is the sender goroutine: it sends whatever answers are waiting, at
// most sessionBatchResults to a message, until stop. After a failed Send
// it drops answers; the receiver sees the stream fail too.
func (ss *serverSession) send() {
	broken := false
	flush := func() {
		for {
			results := ss.takeResults()
			if len(results) == 0 {
				return
			}
			if broken {
				continue // dropped: they cannot be sent
			}
			if err := ss.stream.Send(&adapterpb.SessionResponse{Results: results}); err != nil {
				broken = true
			}
		}
	}
	for {
		select {
		case <-ss.wake:
			runtime.Gosched() // as in clientSession.send: let ready answers join
			flush()
		case <-ss.stop:
			flush()
			return
		}
	}
}

// takeResults removes the next message's worth of answers.
func (ss *serverSession) takeResults() []*adapterpb.SessionResult {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	results := ss.results
	if len(results) <= sessionBatchResults {
		ss.results = nil
		return results
	}
	// The rest keeps the backing array; answers appended later cannot
	// reach the part handed out, which is capped at its length.
	ss.results = results[sessionBatchResults:]
	return results[:sessionBatchResults:sessionBatchResults]
}
