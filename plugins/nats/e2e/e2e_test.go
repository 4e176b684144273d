// Package e2e holds the nats adapter's end-to-end tests (issue 8): real
// `mulegate run` nodes, which run the adapter as `mulegate adapter nats`
// under their adapter queues, against a real nats-server process. They
// build the mulegate binary, so they are skipped with -short. They live
// apart from the adapter's own tests so that those never depend on the
// node's packages.
package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/mulegate/mulegate/internal/nodetest"
	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins/nats/internal/natstest"
)

var (
	newProcess   = natstest.NewProcess
	client       = natstest.Client
	createStream = natstest.CreateStream
	publish      = natstest.Publish
	eventually   = servertest.Eventually
	errNotYet    = servertest.ErrNotYet
)

// natsNodeConfig is a gateway node's configuration with the nats adapter
// routing dtn://cloud/logs/** to logs.{src_node}.{service}.
func natsNodeConfig(url string, fetch bool, inbound string) string {
	return fmt.Sprintf(`adapters:
  - name: logs
    builtin: nats
    max_in_flight: 64
    fetch: %v
    config:
      urls: [%q]
      connect_timeout: 1s
      streams:
        - {name: LOGS, subjects: ["logs.>"], duplicates: 10m}
        - {name: INBOUND, subjects: ["to.>"]}
%s
routes:
  - match: "dtn://cloud/logs/**"
    adapter: logs
    options: {subject: "logs.{src_node}.{service}"}
`, fetch, url, inbound)
}

// sendLogs sends n bundles of 1 KiB to dtn://cloud/logs/app<i%3> through
// the node's API, and returns their IDs.
func sendLogs(t *testing.T, n *nodetest.Node, count int) map[string]bool {
	t.Helper()
	c := n.Client(t)
	ids := make([]string, count)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				dst, _ := bundle.ParseEID(fmt.Sprintf("dtn://cloud/logs/app%d", i%3))
				payload := bytes.Repeat([]byte(fmt.Sprintf("log line %08d ", i)), 64)[:1024]
				res, err := c.Send(t.Context(), api.SendParams{Destination: dst, Lifetime: time.Hour}, bytes.NewReader(payload), int64(len(payload)))
				if err != nil {
					errs <- fmt.Errorf("send %d: %w", i, err)
					return
				}
				ids[i] = res.ID
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	set := make(map[string]bool, count)
	for _, id := range ids {
		set[id] = true
	}
	if len(set) != count {
		t.Fatalf("%d distinct bundle IDs for %d sends", len(set), count)
	}
	return set
}

// streamIDs reads every message of a stream and returns its Nats-Msg-Id
// values, counted.
func streamIDs(t *testing.T, js jetstream.JetStream, stream string) map[string]int {
	t.Helper()
	c, err := js.OrderedConsumer(t.Context(), stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.NumPending)
	ids := map[string]int{}
	for got := 0; got < want; {
		batch, err := c.Fetch(min(want-got, 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			ids[m.Headers().Get("Nats-Msg-Id")]++
			n++
		}
		if n == 0 {
			t.Fatalf("read %d of %d messages of %s", got, want, stream)
		}
		got += n
	}
	return ids
}

// TestE2ETenThousandBundlesSurviveSIGKILL: 10,000 bundles sent to a node
// whose NATS server is down queue up; once the server is up they drain
// into the stream; the node is killed with SIGKILL halfway, with
// deliveries in flight, and restarted; the stream ends with exactly 10,000
// messages, one per bundle, although the restarted node published some of
// them again (dedup by Nats-Msg-Id).
func TestE2ETenThousandBundlesSurviveSIGKILL(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	start := time.Now()
	srv := newProcess(t)
	gw := nodetest.New(t, bin, "gw", natsNodeConfig(srv.URL(), false, ""))
	gw.Start(t)

	const count = 10000
	ids := sendLogs(t, gw, count)
	t.Logf("%d bundles stored by the node in %v, NATS down", count, time.Since(start).Round(time.Millisecond))
	if q := gw.Queued(t); q != count {
		t.Fatalf("%d bundles queued with NATS down, want %d", q, count)
	}

	srv.Start()
	drain := time.Now()
	nc, js := client(t, srv.URL())
	// A plain subscriber sees every publish as it happens, duplicates
	// included (JetStream drops those from the stream, not from the
	// subject). It kills the node: polling the stream, a fast drain could
	// finish between two polls, and the kill would then test nothing.
	// Killing from the callback, as the 5,000th message goes by, also
	// lands before the node can have recorded that message as delivered
	// (that waits for the PubAck, the adapter's answer and an fsync), so
	// the restarted node publishes it again.
	var (
		mu        sync.Mutex
		published = map[string]int{}
		seen      atomic.Int64
		halfway   = make(chan struct{})
		node      = gw.Process()
	)
	sub, err := nc.Subscribe("logs.>", func(m *natsgo.Msg) {
		mu.Lock()
		published[m.Header.Get("Nats-Msg-Id")]++
		mu.Unlock()
		if seen.Add(1) == count/2 {
			_ = node.Kill()
			close(halfway)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil { // never a slow consumer
		t.Fatal(err)
	}
	select {
	case <-halfway:
	case <-time.After(2 * time.Minute):
		t.Fatalf("only %d publishes seen 2 minutes after NATS started", seen.Load())
	}
	gw.Kill(t) // reaps it
	at := streamMsgs(t, js, "LOGS")
	t.Logf("SIGKILL with %d of %d in the stream, %v after NATS started", at, count, time.Since(drain).Round(time.Millisecond))
	if at >= count {
		t.Fatalf("every bundle was in the stream before the SIGKILL: it interrupted no delivery")
	}

	gw.Start(t)
	eventually(t, 3*time.Minute, "the queue drained after the restart", func() error {
		if q := gw.Queued(t); q != 0 {
			return fmt.Errorf("%d still queued", q)
		}
		return nil
	})
	t.Logf("queue drained %v after NATS started", time.Since(drain).Round(time.Millisecond))
	got := streamIDs(t, js, "LOGS")
	total := 0
	for id, n := range got {
		total += n
		if !ids[id] {
			t.Errorf("stream holds %q, which was never sent", id)
		}
		if n > 1 {
			t.Errorf("stream holds %q %d times", id, n)
		}
	}
	if total != count || len(got) != count {
		t.Fatalf("stream holds %d messages for %d bundles, want exactly %d", total, len(got), count)
	}

	// The restarted node published again what the killed one had
	// published without recording it as delivered; the stream, checked
	// above, kept one of each. Without such a repeat, dedup went untested.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the subscriber caught up", func() error {
		if n, _, err := sub.Pending(); err != nil || n != 0 {
			return fmt.Errorf("%d messages pending (%v)", n, err)
		}
		return nil
	})
	mu.Lock()
	repeats := 0
	for _, n := range published {
		repeats += n - 1
	}
	mu.Unlock()
	t.Logf("%d publishes, %d of them repeats of a bundle already published", seen.Load(), repeats)
	if repeats == 0 {
		t.Fatal("no bundle was published twice: the SIGKILL left nothing for Nats-Msg-Id to deduplicate")
	}
}

// streamMsgs is the number of messages in stream.
func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return info.State.Msgs
}

// TestE2EServerDownAtStart: with the server down the bundles wait in the
// queue and the adapter shows unreachable; once the server starts the
// queue drains by itself, nothing lost.
func TestE2EServerDownAtStart(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	srv := newProcess(t)
	gw := nodetest.New(t, bin, "gw", natsNodeConfig(srv.URL(), false, ""))
	gw.Start(t)
	ids := sendLogs(t, gw, 200)

	// The adapter is up but its service is not, and says why; the bundles
	// wait in its queue.
	eventually(t, 20*time.Second, "`mulegate adapters list` shows the adapter unreachable with the bundles queued", func() error {
		r := gw.CLI(t.Context(), nil, "adapters", "list", "--json")
		out := r.Stdout
		if r.Err != nil {
			return fmt.Errorf("mulegate adapters list: %v\n%s", r.Err, r.Stderr)
		}
		var list []struct {
			Name      string `json:"name"`
			LastError string `json:"last_error"`
			Running   bool   `json:"running"`
			Reachable bool   `json:"reachable"`
			Queue     struct {
				Pending  int64 `json:"pending"`
				InFlight int64 `json:"in_flight"`
			} `json:"queue"`
		}
		if err := json.Unmarshal(out, &list); err != nil || len(list) != 1 {
			return fmt.Errorf("adapters list --json: %s (%v)", out, err)
		}
		a := list[0]
		if a.Name != "logs" || !a.Running || a.Reachable || !strings.Contains(a.LastError, "not connected to NATS") ||
			a.Queue.Pending+a.Queue.InFlight != int64(len(ids)) {
			return fmt.Errorf("adapters list: %+v", a)
		}
		return nil
	})
	if r := gw.CLI(t.Context(), nil, "adapters", "list"); r.Err != nil || !regexp.MustCompile(`(?m)^logs\s.*\sunreachable\s`).Match(r.Stdout) {
		t.Errorf("mulegate adapters list (%v):\n%s", r.Err, r.Stdout)
	}
	if q := gw.Queued(t); q != len(ids) {
		t.Fatalf("%d bundles queued with NATS down, want %d", q, len(ids))
	}

	srv.Start()
	eventually(t, time.Minute, "the queue drained by itself", func() error {
		if q := gw.Queued(t); q != 0 {
			return fmt.Errorf("%d still queued", q)
		}
		return nil
	})
	_, js := client(t, srv.URL())
	got := streamIDs(t, js, "LOGS")
	if len(got) != len(ids) {
		t.Fatalf("stream holds %d bundles, want %d", len(got), len(ids))
	}
	for id := range ids {
		if got[id] != 1 {
			t.Errorf("bundle %s is in the stream %d times", id, got[id])
		}
	}
}

// TestE2EInboundThroughMule: a message published to to.nodeC.inbox is
// fetched by the cloud gateway G (acked once G stored it), carried by the
// mule M, which meets G and then C, and received on C with the same bytes.
func TestE2EInboundThroughMule(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	srv := newProcess(t)
	srv.Start()
	_, js := client(t, srv.URL())
	createStream(t, js, jetstream.StreamConfig{Name: "INBOUND", Subjects: []string{"to.>"}})
	body := make([]byte, 200<<10)
	r := rand.New(rand.NewPCG(8, 8))
	for i := range body {
		body[i] = byte(r.Uint32())
	}
	publish(t, js, "to.nodeC.inbox", body, nil)

	inbound := "      inbound: {stream: INBOUND, consumer: gw, ack_wait: 30s}"
	g := nodetest.New(t, bin, "gw", natsNodeConfig(srv.URL(), true, inbound))
	m := nodetest.New(t, bin, "mule", "adapters: []\nroutes: []\n")
	c := nodetest.New(t, bin, "nodeC", "adapters: []\nroutes: []\n")
	g.Start(t)

	// G stores it, and only then is it acknowledged upstream.
	var id string
	eventually(t, 30*time.Second, "G holds the bundle for dtn://nodeC/inbox", func() error {
		l, err := g.Client(t).Bundles(t.Context(), api.BundleQuery{Limit: 100})
		if err != nil {
			return err
		}
		for _, b := range l {
			if b.Destination == "dtn://nodeC/inbox" && b.Length == uint64(len(body)) {
				id = b.ID
				return nil
			}
		}
		return errNotYet
	})
	eventually(t, 10*time.Second, "the message acknowledged", func() error {
		cons, err := js.Consumer(t.Context(), "INBOUND", "gw")
		if err != nil {
			return err
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != 1 {
			return fmt.Errorf("%d pending acks, %d pending, ack floor %d", info.NumAckPending, info.NumPending, info.AckFloor.Stream)
		}
		return nil
	})

	// The mule meets G, takes the bundle, and leaves; then meets C.
	m.Start(t, g)
	m.WaitHolds(t, id, 60*time.Second)
	g.Stop(t)
	c.Start(t, m)
	got := c.RecvOne(t, t.Context(), c.ID()+"inbox", 90*time.Second)
	if sha256.Sum256(got) != sha256.Sum256(body) {
		t.Fatalf("C received %d bytes that differ from the %d published", len(got), len(body))
	}
}

// TestE2EInboundRefusedForGoodIsDeadLettered: a message whose bundle the
// node refuses for good (its Mulegate-Lifetime is over the node's
// limits.max_lifetime) is rejected: the adapter publishes it to the
// dead-letter subject with the node's reason and terminates it, instead of
// its coming back after every Nack. The message behind it is stored as
// usual.
func TestE2EInboundRefusedForGoodIsDeadLettered(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	srv := newProcess(t)
	srv.Start()
	_, js := client(t, srv.URL())
	createStream(t, js, jetstream.StreamConfig{Name: "INBOUND", Subjects: []string{"to.>"}})
	dead := createStream(t, js, jetstream.StreamConfig{Name: "DEAD", Subjects: []string{"dead.>"}})
	publish(t, js, "to.nodeC.inbox", []byte("lives too long"), map[string]string{"Mulegate-Lifetime": "172800000"}) // 48h
	publish(t, js, "to.nodeC.inbox", []byte("fine"), nil)

	// The other message gets the node's default inbound lifetime, 24h.
	// A short nack_delay: were the refused message nacked rather than
	// rejected, it would come back, redelivered, within the test.
	inbound := "      inbound: {stream: INBOUND, consumer: gw, ack_wait: 30s, nack_delay: 200ms, dead_letter: dead.inbound}"
	g := nodetest.New(t, bin, "gw", "limits:\n  max_lifetime: 30h\n"+natsNodeConfig(srv.URL(), true, inbound))
	g.Start(t)

	eventually(t, 30*time.Second, "the refused message dead-lettered and the other stored", func() error {
		if n := streamMsgs(t, js, "DEAD"); n != 1 {
			return fmt.Errorf("%d dead letters", n)
		}
		l, err := g.Client(t).Bundles(t.Context(), api.BundleQuery{Limit: 100})
		if err != nil {
			return err
		}
		if len(l) != 1 || l[0].Destination != "dtn://nodeC/inbox" || l[0].Length != uint64(len("fine")) {
			return fmt.Errorf("G holds %+v", l)
		}
		return nil
	})
	m, err := dead.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	reason := m.Header.Get("Mulegate-Dead-Reason")
	if string(m.Data) != "lives too long" || !strings.Contains(reason, "refused for good") || !strings.Contains(reason, "lifetime") ||
		m.Header.Get("Mulegate-Original-Subject") != "to.nodeC.inbox" || m.Header.Get("Mulegate-Original-Sequence") != "1" {
		t.Fatalf("dead letter %q with headers %v", m.Data, m.Header)
	}
	t.Logf("dead letter's reason: %s", reason)

	// Off the consumer for good: acknowledged or terminated, never
	// redelivered, while the node goes on fetching.
	time.Sleep(2 * time.Second)
	cons, err := js.Consumer(t.Context(), "INBOUND", "gw")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 || info.AckFloor.Stream != 2 {
		t.Fatalf("consumer: %d pending acks, %d pending, %d redelivered, ack floor %d; want 0, 0, 0, 2",
			info.NumAckPending, info.NumPending, info.NumRedelivered, info.AckFloor.Stream)
	}
	if n := streamMsgs(t, js, "DEAD"); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
}
