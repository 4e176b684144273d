package nats

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishWindow bounds the messages published and still waiting for their
// PubAck. The node's max_in_flight bounds the deliveries waiting; this
// bounds, besides, the publishes whose delivery stopped waiting (its
// context ended): they stay in the window until their PubAck comes or
// publish_timeout passes.
const publishWindow = 256

// pipeline publishes the messages of concurrent deliveries together, and
// tells each delivery when its own message's PubAck came.
//
// A synchronous JetStream publish is a request: its goroutine writes one
// message and sleeps until the PubAck. With many deliveries in flight,
// nats.go's flusher ran each time one of them went to sleep, so most
// messages went out in a write system call of their own, and the server
// read them a few at a time. Here deliveries queue their messages, and
// one goroutine publishes whatever is queued back to back with
// PublishMsgAsync, so that the flusher writes them all at once. The rule
// does not change: a delivery is answered when the PubAck for its own
// message arrives (or an error for it), never before.
//
// The answers come from nats.go's asynchronous ack and error handlers
// rather than from each publish's PubAckFuture: waiting on a future costs
// two channels and a second sleep per delivery.
type pipeline struct {
	js    jetstream.JetStream // the pipeline's own, for its handlers
	stall jetstream.PublishOpt
	wake  chan struct{} // capacity 1: messages are queued
	stop  chan struct{} // closed by close

	mu      sync.Mutex
	closed  bool
	queue   []*queued             // not published yet, oldest first
	waiting map[*nats.Msg]*queued // published, no PubAck or error yet
}

// queued is one delivery's message.
type queued struct {
	ctx  context.Context // the delivery's: not published once it is done
	msg  *nats.Msg
	done chan published // capacity 1; receives exactly one answer
}

// published is what became of a message: its PubAck, or an error.
type published struct {
	ack *jetstream.PubAck
	err error
}

// newPipeline starts a pipeline publishing on nc, with at most window
// messages waiting for their PubAck. A publish waits at most stall for
// room in the window, and then at most ackWait for its PubAck.
func newPipeline(nc *nats.Conn, window int, stall, ackWait time.Duration) (*pipeline, error) {
	p := &pipeline{
		stall:   jetstream.WithStallWait(stall),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		waiting: map[*nats.Msg]*queued{},
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(window),
		// Without it, a PubAck that never comes (the server refused the
		// message, or lost it) would hold its place in the window for
		// good, and its delivery would learn nothing.
		jetstream.WithPublishAsyncTimeout(ackWait),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			p.answer(m, published{ack: ack})
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			p.answer(m, published{err: err})
		}),
	)
	if err != nil {
		return nil, err
	}
	p.js = js
	go p.run()
	return p, nil
}

// publish publishes msg and waits for its PubAck. msg must be a message
// of its own, not published before, and must not change afterwards:
// answers are matched to deliveries by it, and nats.go publishes it again
// if no stream answered the first time, even after publish returned. An
// error is the publish's own (a *jetstream.APIError,
// jetstream.ErrAsyncPublishTimeout, jetstream.ErrTooManyStalledMsgs, …)
// or ctx's.
func (p *pipeline) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	q := &queued{ctx: ctx, msg: msg, done: make(chan published, 1)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nats.ErrConnectionClosed
	}
	p.queue = append(p.queue, q)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-q.done:
		return r.ack, r.err
	case <-ctx.Done():
		// The message is skipped if it is still queued; if it is out,
		// its PubAck or error is dropped when it comes. Either way the
		// node delivers the bundle again, and JetStream drops the copy.
		return nil, ctx.Err()
	}
}

// close stops the pipeline: every delivery still waiting is answered
// nats.ErrConnectionClosed, and so are later ones.
func (p *pipeline) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	waiting := p.waiting
	p.waiting = map[*nats.Msg]*queued{}
	p.mu.Unlock()
	for _, q := range waiting {
		q.done <- published{err: nats.ErrConnectionClosed}
	}
}

// run is the publishing goroutine.
func (p *pipeline) run() {
	for {
		select {
		case <-p.wake:
		case <-p.stop:
			for _, q := range p.take() {
				q.done <- published{err: nats.ErrConnectionClosed}
			}
			return
		}
		// Let the deliveries that are ready to run queue their messages
		// first, so that they go out in one write rather than one each.
		// (Both ends of DeliverSession do this, for the same reason.)
		runtime.Gosched()
		for {
			batch := p.take()
			if len(batch) == 0 {
				break
			}
			p.publishAll(batch)
		}
	}
}

// take empties the queue.
func (p *pipeline) take() []*queued {
	p.mu.Lock()
	defer p.mu.Unlock()
	batch := p.queue
	p.queue = nil
	return batch
}

// publishAll publishes a batch.
func (p *pipeline) publishAll(batch []*queued) {
	var stalled error
	for _, q := range batch {
		switch {
		case q.ctx.Err() != nil:
			q.done <- published{err: q.ctx.Err()}
			continue
		case stalled != nil:
			// The window stayed full for the whole stall wait: the rest
			// of the batch would each wait as long, one after the other.
			q.done <- published{err: stalled}
			continue
		}
		// Waiting before it is published: its PubAck may come back
		// before PublishMsgAsync returns.
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			q.done <- published{err: nats.ErrConnectionClosed}
			continue
		}
		p.waiting[q.msg] = q
		p.mu.Unlock()
		if _, err := p.js.PublishMsgAsync(q.msg, p.stall); err != nil {
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				stalled = err
			}
			p.answer(q.msg, published{err: err})
		}
	}
}

// answer gives a published message's delivery its answer, unless it has
// one already.
func (p *pipeline) answer(m *nats.Msg, r published) {
	p.mu.Lock()
	q := p.waiting[m]
	delete(p.waiting, m)
	p.mu.Unlock()
	if q != nil {
		q.done <- r
	}
}
