package nats_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/nats"
)

// fetched is an inbound message as the node keeps it.
type fetched struct {
	plugins.Inbound
	data []byte
}

// fetchAll runs one Fetch and reads every offered payload, as the node does.
func fetchAll(t testing.TB, ad plugins.Adapter, req plugins.FetchRequest) []fetched {
	t.Helper()
	var out []fetched
	err := ad.Fetch(t.Context(), req, func(in plugins.Inbound) error {
		data, err := io.ReadAll(in.Payload)
		if err != nil {
			return err
		}
		if int64(len(data)) != in.PayloadLength {
			return fmt.Errorf("payload of %d bytes announced as %d", len(data), in.PayloadLength)
		}
		in.Payload = nil
		out = append(out, fetched{in, data})
		return nil
	})
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return out
}

// inboundSetup starts a server with an inbound stream ("to.>") and a
// dead-letter stream ("dead.>").
func inboundSetup(t testing.TB) (*embedded, jetstream.JetStream) {
	srv := startEmbedded(t)
	_, js := client(t, srv.URL())
	createStream(t, js, jetstream.StreamConfig{Name: "INBOUND", Subjects: []string{"to.>"}})
	createStream(t, js, jetstream.StreamConfig{Name: "DEAD", Subjects: []string{"dead.>"}})
	return srv, js
}

func inboundConfig(srv *embedded, inbound obj) obj {
	in := obj{"stream": "INBOUND", "dead_letter": "dead.inbound", "nack_delay": "0s"}
	for k, v := range inbound {
		in[k] = v
	}
	return obj{"urls": []string{srv.URL()}, "inbound": in}
}

func consumerInfo(t testing.TB, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(t.Context(), "INBOUND", "mulegate")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestFetchThroughPlugin: a message for to.nodeC.inbox reaches the node
// as a message for dtn://nodeC/inbox with the same bytes; it stays pending
// until Ack and is not offered twice meanwhile; after a Nack it comes
// again.
func TestFetchThroughPlugin(t *testing.T) {
	srv, js := inboundSetup(t)
	_, ad := startAdapter(t, inboundConfig(srv, nil))
	body := []byte("hello, node C")
	publish(t, js, "to.nodeC.inbox", body, map[string]string{"X-Trace": "abc"})

	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(got) != 1 {
		t.Fatalf("Fetch offered %d messages, want 1", len(got))
	}
	in := got[0]
	if in.Destination != "dtn://nodeC/inbox" || !bytes.Equal(in.data, body) || in.MessageID != "nats:INBOUND:1" {
		t.Fatalf("offered %+v %q", in.Inbound, in.data)
	}
	if in.Headers["subject"] != "to.nodeC.inbox" || in.Headers["header.X-Trace"] != "abc" || in.Headers["stream_seq"] != "1" {
		t.Errorf("headers %v", in.Headers)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 1 {
		t.Fatalf("before Ack: %d pending acks, want 1", info.NumAckPending)
	}
	if again := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 100 * time.Millisecond}); len(again) != 0 {
		t.Fatalf("offered again before Ack or Nack: %+v", again[0].Inbound)
	}
	if err := ad.Ack(t.Context(), in.Receipt); err != nil {
		t.Fatal(err)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != 1 {
		t.Fatalf("after Ack: %d pending acks, %d pending, ack floor %d; want 0, 0, 1", info.NumAckPending, info.NumPending, info.AckFloor.Stream)
	}
	if err := ad.Ack(t.Context(), in.Receipt); err != nil {
		t.Errorf("second Ack of the same receipt = %v, want nil", err)
	}

	// Nack: the message comes again, with the same identity.
	publish(t, js, "to.nodeC.inbox", []byte("second"), nil)
	first := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(first) != 1 {
		t.Fatalf("Fetch offered %d messages, want 1", len(first))
	}
	if err := ad.Nack(t.Context(), first[0].Receipt, "disk full"); err != nil {
		t.Fatal(err)
	}
	second := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(second) != 1 || second[0].MessageID != first[0].MessageID || !bytes.Equal(second[0].data, []byte("second")) {
		t.Fatalf("after Nack: %+v, want %s again", second, first[0].MessageID)
	}
	if second[0].Receipt == first[0].Receipt {
		t.Error("a redelivery has the first delivery's receipt")
	}
	if err := ad.Ack(t.Context(), second[0].Receipt); err != nil {
		t.Fatal(err)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("after Ack: %d pending acks, %d redelivered", info.NumAckPending, info.NumRedelivered)
	}

	for _, r := range []string{"nope", "$JS.ACK.OTHER.mulegate.1.1.1.1.0", "$JS.ACK.INBOUND.other.1.1.1.1.0"} {
		if err := ad.Ack(t.Context(), r); !errors.Is(err, plugins.ErrUnknownReceipt) {
			t.Errorf("Ack(%q) = %v, want ErrUnknownReceipt", r, err)
		}
		if err := ad.Nack(t.Context(), r, "x"); !errors.Is(err, plugins.ErrUnknownReceipt) {
			t.Errorf("Nack(%q) = %v, want ErrUnknownReceipt", r, err)
		}
	}
}

// TestFetchDestinations: the destination header wins over the subject;
// a message with no usable destination goes to the dead-letter subject
// with the reason and leaves the consumer, and is never offered.
func TestFetchDestinations(t *testing.T) {
	srv, js := inboundSetup(t)
	ad := inProcess(t, inboundConfig(srv, nil))
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	tests := []struct {
		subject, header string
		want            string // destination, or "" for a dead letter
		reason          string
	}{
		{"to.nodeC.inbox", "", "dtn://nodeC/inbox", ""},
		{"to.nodeC.chat.room1", "", "dtn://nodeC/chat/room1", ""},
		{"to.nodeC", "", "dtn://nodeC/", ""},
		{"to.~campfire.chat", "", "dtn://~campfire/chat", ""},
		{"to.x.y", "ipn:5.1", "ipn:5.1", ""},
		{"to.x.y", "dtn://gw.example.org/in", "dtn://gw.example.org/in", ""},
		{"to.no|de.inbox", "", "", "not allowed in a node name"},
		{"to.nodé.inbox", "", "", "must be ASCII"},
		{"to.nodeC.ïnbox", "", "", "printable ASCII"},
		{"to.x.y", "mailto:a@b", "", "Mulegate-Destination"},
		{"to.x.y", "dtn:none", "", "Mulegate-Destination"},
	}
	for i, tc := range tests {
		var hdr map[string]string
		if tc.header != "" {
			hdr = map[string]string{nats.HeaderDestination: tc.header}
		}
		publish(t, js, tc.subject, []byte(fmt.Sprint(i)), hdr)
	}
	var got []fetched
	for len(got) < 6 {
		batch := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 100, Wait: 5 * time.Second})
		if len(batch) == 0 {
			t.Fatalf("Fetch offered %d of 6 messages", len(got))
		}
		got = append(got, batch...)
	}
	byIndex := map[string]fetched{}
	for _, f := range got {
		byIndex[string(f.data)] = f
		if err := ad.Ack(t.Context(), f.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	dead, err := js.Stream(t.Context(), "DEAD")
	if err != nil {
		t.Fatal(err)
	}
	deadSeq := uint64(0)
	for i, tc := range tests {
		f, offered := byIndex[fmt.Sprint(i)]
		if tc.want != "" {
			if !offered || f.Destination != tc.want {
				t.Errorf("%s (header %q): offered %v to %q, want %q", tc.subject, tc.header, offered, f.Destination, tc.want)
			}
			continue
		}
		if offered {
			t.Errorf("%s (header %q): offered to %q, want a dead letter", tc.subject, tc.header, f.Destination)
			continue
		}
		deadSeq++
		m, err := dead.GetMsg(t.Context(), deadSeq)
		if err != nil {
			t.Fatalf("%s: dead letter: %v", tc.subject, err)
		}
		if string(m.Data) != fmt.Sprint(i) || m.Header.Get(nats.HeaderOriginalSubject) != tc.subject ||
			!strings.Contains(m.Header.Get(nats.HeaderDeadReason), tc.reason) || m.Header.Get(nats.HeaderOriginalStream) != "INBOUND" {
			t.Errorf("%s: dead letter %q with headers %v; want reason with %q", tc.subject, m.Data, m.Header, tc.reason)
		}
	}
	if n := streamMsgs(t, dead); n != deadSeq {
		t.Errorf("dead-letter stream holds %d messages, want %d", n, deadSeq)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer: %d pending acks, %d pending; want none", info.NumAckPending, info.NumPending)
	}
}

// TestFetchTermWithoutDeadLetter: with no dead_letter subject, a message
// with no destination is terminated with the reason, which the server
// announces; it is neither offered nor redelivered.
func TestFetchTermWithoutDeadLetter(t *testing.T) {
	srv, js := inboundSetup(t)
	ad := inProcess(t, inboundConfig(srv, obj{"dead_letter": ""}))
	nc, _ := client(t, srv.URL())
	advisories, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.INBOUND.mulegate")
	if err != nil {
		t.Fatal(err)
	}
	publish(t, js, "to.bad|node.x", []byte("lost?"), nil)
	publish(t, js, "to.nodeC.inbox", []byte("fine"), nil)
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(got) != 1 || string(got[0].data) != "fine" {
		t.Fatalf("offered %+v, want only the good message", got)
	}
	m, err := advisories.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no termination advisory: %v", err)
	}
	if !strings.Contains(string(m.Data), "not allowed in a node name") || !strings.Contains(string(m.Data), `"stream_seq":1`) {
		t.Errorf("advisory %s", m.Data)
	}
	if err := ad.Ack(t.Context(), got[0].Receipt); err != nil {
		t.Fatal(err)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: %d pending acks, %d pending, %d redelivered; want none", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
}

// TestAckSurvivesAdapterCrash: a receipt from before the adapter process
// died still acknowledges its message.
func TestAckSurvivesAdapterCrash(t *testing.T) {
	srv, js := inboundSetup(t)
	m, ad := startAdapter(t, inboundConfig(srv, nil))
	publish(t, js, "to.nodeC.inbox", []byte("x"), nil)
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 1, Wait: 5 * time.Second})
	if len(got) != 1 {
		t.Fatalf("offered %d messages", len(got))
	}
	st, _ := m.Status("logs")
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the adapter restarted", func() error {
		if now, _ := m.Status("logs"); !now.Running || now.PID == st.PID {
			return errNotYet
		}
		return nil
	})
	if err := ad.Ack(t.Context(), got[0].Receipt); err != nil {
		t.Fatalf("Ack after the adapter restarted: %v", err)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 0 {
		t.Errorf("%d pending acks after Ack", info.NumAckPending)
	}
}

// TestFetchObjectReference: a reference message is offered with the
// object's bytes.
func TestFetchObjectReference(t *testing.T) {
	srv, js := inboundSetup(t)
	_, ad := startAdapter(t, inboundConfig(srv, nil))
	const size = 3 << 20
	meta, payload := testBundle(1, size)
	meta.Destination = "dtn://nodeC/big" // the header names it, before the subject
	meta.Options = map[string]string{"subject": "to.nodeC.big-payloads"}
	if res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.OK {
		t.Fatal(res)
	}
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 1, Wait: 5 * time.Second})
	if len(got) != 1 || got[0].Destination != "dtn://nodeC/big" || sha256.Sum256(got[0].data) != sha256.Sum256(payload) {
		for _, f := range got {
			t.Logf("offered %d bytes to %s, headers %v", len(f.data), f.Destination, f.Headers)
		}
		t.Fatalf("offered %d messages; want one of %d bytes to dtn://nodeC/big", len(got), size)
	}
	if got[0].Headers["header."+nats.HeaderObject] == "" {
		t.Errorf("headers %v lack the reference", got[0].Headers)
	}
	if err := ad.Ack(t.Context(), got[0].Receipt); err != nil {
		t.Fatal(err)
	}

	// A reference into another bucket, or to a missing object, is a dead
	// letter: the adapter does not fetch objects from elsewhere.
	other, err := js.CreateObjectStore(t.Context(), jetstream.ObjectStoreConfig{Bucket: "secrets"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.PutString(t.Context(), "key", "s3cret"); err != nil {
		t.Fatal(err)
	}
	publish(t, js, "to.nodeC.x", []byte(`{}`), map[string]string{nats.HeaderObject: "secrets/key"})
	publish(t, js, "to.nodeC.y", []byte(`{}`), map[string]string{nats.HeaderObject: "mulegate-payloads/nothing-here"})
	if got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 200 * time.Millisecond}); len(got) != 0 {
		t.Fatalf("offered %d messages with bad references", len(got))
	}
	dead, err := js.Stream(t.Context(), "DEAD")
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: "not this adapter's object store", 2: "not in bucket"} {
		m, err := dead.GetMsg(t.Context(), seq)
		if err != nil || !strings.Contains(m.Header.Get(nats.HeaderDeadReason), want) {
			t.Errorf("dead letter %d: %v %v; want a reason with %q", seq, m, err, want)
		}
	}
}

// TestFetchLimits: Fetch takes at most MaxMessages; a message the node
// declines (ErrFetchLimit) is offered again at once; a Fetch waiting for
// a first message returns with it as soon as it is published.
func TestFetchLimits(t *testing.T) {
	srv, js := inboundSetup(t)
	ad := inProcess(t, inboundConfig(srv, obj{"batch": 2}))
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	for i := range 5 {
		publish(t, js, "to.nodeC.inbox", []byte{byte(i)}, nil)
	}
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 3, Wait: time.Second})
	if len(got) != 3 {
		t.Fatalf("MaxMessages 3: offered %d", len(got))
	}
	var taken []plugins.Inbound
	err := ad.Fetch(t.Context(), plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second}, func(in plugins.Inbound) error {
		if len(taken) == 1 {
			return plugins.ErrFetchLimit
		}
		taken = append(taken, in)
		return nil
	})
	if err != nil || len(taken) != 1 {
		t.Fatalf("Fetch = %v with %d taken, want nil and 1", err, len(taken))
	}
	rest := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: time.Second})
	if len(rest) != 1 || rest[0].data[0] != 4 {
		t.Fatalf("after ErrFetchLimit: %d offered, want message 4 again", len(rest))
	}
	if info := consumerInfo(t, js); info.NumAckPending != 5 {
		t.Errorf("%d pending acks, want 5", info.NumAckPending)
	}

	// Waiting: publish once the pull request is at the server.
	done := make(chan []fetched, 1)
	start := time.Now()
	go func() { done <- fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 20 * time.Second}) }()
	eventually(t, 10*time.Second, "a waiting pull request", func() error {
		if consumerInfo(t, js).NumWaiting == 0 {
			return errNotYet
		}
		return nil
	})
	publish(t, js, "to.nodeC.inbox", []byte("late"), nil)
	if late := <-done; len(late) != 1 || string(late[0].data) != "late" {
		t.Fatalf("waiting Fetch: %+v", late)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("waiting Fetch took %v for a message published while it waited", d)
	}

	// A message the node declines as the first of a fetch is larger than
	// any fetch: it is held back rather than offered again at once.
	publish(t, js, "to.nodeC.inbox", []byte("too big"), nil)
	declined := 0
	began := time.Now()
	err = ad.Fetch(t.Context(), plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second}, func(plugins.Inbound) error {
		declined++
		return plugins.ErrFetchLimit
	})
	if err != nil || declined != 1 {
		t.Fatalf("Fetch = %v after %d offers, want nil after 1", err, declined)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("Fetch went on waiting for %v after the node said it was full", d)
	}
	if again := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 300 * time.Millisecond}); len(again) != 0 {
		t.Errorf("a message declined as too large was offered again at once")
	}
}

// TestFetchRecreatesConsumer: a consumer deleted behind the adapter's back
// is set up again, and fetching resumes.
func TestFetchRecreatesConsumer(t *testing.T) {
	srv, js := inboundSetup(t)
	ad := inProcess(t, inboundConfig(srv, nil))
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	publish(t, js, "to.nodeC.inbox", []byte("one"), nil)
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 1, Wait: 5 * time.Second})
	if len(got) != 1 {
		t.Fatalf("offered %d", len(got))
	}
	if err := ad.Ack(t.Context(), got[0].Receipt); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(t.Context(), "INBOUND", "mulegate"); err != nil {
		t.Fatal(err)
	}
	publish(t, js, "to.nodeC.inbox", []byte("two"), nil)
	eventually(t, 10*time.Second, "the second message fetched through a new consumer", func() error {
		var seen []string
		err := ad.Fetch(t.Context(), plugins.FetchRequest{MaxMessages: 10, Wait: 100 * time.Millisecond}, func(in plugins.Inbound) error {
			data, _ := io.ReadAll(in.Payload)
			seen = append(seen, string(data))
			return nil
		})
		if slices.Contains(seen, "two") {
			return nil
		}
		return fmt.Errorf("Fetch = %v, offered %q", err, seen)
	})
}
