package nats

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins/nats/internal/natstest"
)

// testPipeline starts a JetStream server with a stream on "p.>", and a
// subscriber on "silent.>" that never answers (so that nobody sends a
// PubAck for a message there, and no "no responders" either), and returns
// a pipeline on its own connection and a JetStream client.
func testPipeline(t *testing.T, window int, stall, ackWait time.Duration) (*pipeline, jetstream.Stream) {
	t.Helper()
	srv := natstest.StartEmbedded(t)
	cnc, js := natstest.Client(t, srv.URL())
	stream := natstest.CreateStream(t, js, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}})
	if _, err := cnc.Subscribe("silent.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := cnc.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := newPipeline(nc, window, stall, ackWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p, stream
}

func pipelineMsg(subject, id string) *nats.Msg {
	return &nats.Msg{Subject: subject, Header: nats.Header{HeaderMsgID: []string{id}}, Data: []byte(id)}
}

// TestPipelineOwnPubAck: with many publishes in flight, more than the
// window holds, each one is answered with the PubAck of its own message.
func TestPipelineOwnPubAck(t *testing.T) {
	p, stream := testPipeline(t, 8, 5*time.Second, 5*time.Second)
	const workers, each = 32, 20
	var mu sync.Mutex
	idAt := map[uint64]string{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("m-%d-%d", w, i)
				ack, err := p.publish(t.Context(), pipelineMsg(fmt.Sprintf("p.%d", w%4), id))
				if err != nil || ack.Duplicate {
					t.Errorf("%s: %v, %+v", id, err, ack)
					return
				}
				mu.Lock()
				if other, dup := idAt[ack.Sequence]; dup {
					t.Errorf("%s and %s both answered with sequence %d", id, other, ack.Sequence)
				}
				idAt[ack.Sequence] = id
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(idAt) != workers*each {
		t.Fatalf("%d PubAcks, want %d", len(idAt), workers*each)
	}
	for seq, id := range idAt {
		m, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get(HeaderMsgID); got != id {
			t.Fatalf("the PubAck for %s names sequence %d, which holds %s", id, seq, got)
		}
	}
	// Published again, the same message is a duplicate, and says so.
	ack, err := p.publish(t.Context(), pipelineMsg("p.0", "m-0-0"))
	if err != nil || !ack.Duplicate {
		t.Fatalf("publishing m-0-0 again: %v, %+v; want a duplicate's PubAck", err, ack)
	}
}

// TestPipelineWindowFull: while the window is full, a publish waits for
// room no longer than its stall wait, and the rest of its batch does not
// wait again; a PubAck that never comes frees its place after ackWait.
func TestPipelineWindowFull(t *testing.T) {
	const stall, ackWait = 100 * time.Millisecond, time.Second
	p, _ := testPipeline(t, 1, stall, ackWait)

	lost := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := p.publish(t.Context(), pipelineMsg("silent.x", "lost"))
		lost <- err
	}()
	servertest.Eventually(t, 5*time.Second, "the window is full", func() error {
		if p.js.PublishAsyncPending() != 1 {
			return servertest.ErrNotYet
		}
		return nil
	})

	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			_, err := p.publish(t.Context(), pipelineMsg("p.x", fmt.Sprint("stalled-", i)))
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				t.Errorf("publish into a full window: %v, want ErrTooManyStalledMsgs", err)
			}
		})
	}
	wg.Wait()
	if waited := time.Since(start); waited > ackWait/2 {
		t.Errorf("three publishes into a full window took %v; each should give up after %v", waited, stall)
	}

	if err := <-lost; !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		t.Fatalf("publish that gets no PubAck: %v, want ErrAsyncPublishTimeout", err)
	}
	if took := time.Since(start); took < ackWait {
		t.Errorf("the publish with no PubAck gave up after %v, before ackWait (%v)", took, ackWait)
	}
	if _, err := p.publish(t.Context(), pipelineMsg("p.x", "after")); err != nil {
		t.Fatalf("publish once the window has room: %v", err)
	}
}

// TestPipelineGiveUp: a delivery whose context ends stops waiting at once,
// and one still waiting when the pipeline closes is answered.
func TestPipelineGiveUp(t *testing.T) {
	p, _ := testPipeline(t, 4, time.Minute, time.Minute)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.publish(ctx, pipelineMsg("silent.x", "given-up")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish whose context ends: %v, want its deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("publish whose context ended after 50ms returned after %v", took)
	}

	waiting := make(chan error, 1)
	go func() {
		_, err := p.publish(t.Context(), pipelineMsg("silent.x", "waiting"))
		waiting <- err
	}()
	servertest.Eventually(t, 5*time.Second, "the second publish is out", func() error {
		if p.js.PublishAsyncPending() != 2 {
			return servertest.ErrNotYet
		}
		return nil
	})
	p.close()
	select {
	case err := <-waiting:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Fatalf("publish waiting when the pipeline closed: %v, want ErrConnectionClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish waiting when the pipeline closed was not answered")
	}
	if _, err := p.publish(t.Context(), pipelineMsg("p.x", "late")); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("publish after close: %v, want ErrConnectionClosed", err)
	}
}
