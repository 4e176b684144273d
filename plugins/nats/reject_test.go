package nats_test

import (
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/nats"
)

// refusal is a reason as the node gives it when it rejects an inbound
// message.
const refusal = "refused for good: bundle lifetime exceeds this node's maximum: 2h0m0s asked, at most 1h0m0s allowed"

// rejecter is the adapter's optional Reject, as the node finds it.
func rejecter(t testing.TB, ad plugins.Adapter) plugins.Rejecter {
	t.Helper()
	r, ok := ad.(plugins.Rejecter)
	if !ok {
		t.Fatalf("%T has no Reject", ad)
	}
	return r
}

// terminated is the part of the server's MSG_TERMINATED advisory the tests
// read.
type terminated struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason"`
}

// terminations subscribes to the inbound consumer's MSG_TERMINATED
// advisories.
func terminations(t testing.TB, url string) *natsgo.Subscription {
	t.Helper()
	nc, _ := client(t, url)
	sub, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.INBOUND.mulegate")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

func nextTermination(t testing.TB, sub *natsgo.Subscription) terminated {
	t.Helper()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no termination advisory: %v", err)
	}
	var adv terminated
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		t.Fatalf("advisory %s: %v", m.Data, err)
	}
	return adv
}

// notRedelivered checks that the consumer holds nothing of the inbound
// stream any more: nothing pending, nothing awaiting an ack, nothing
// redelivered, and a fetch that outwaits ack_wait gets nothing.
func notRedelivered(t testing.TB, ad plugins.Adapter, js jetstream.JetStream, ackWait time.Duration) {
	t.Helper()
	if again := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: ackWait + time.Second}); len(again) != 0 {
		t.Fatalf("offered again after Reject: %+v", again[0].Inbound)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Fatalf("consumer: %d pending acks, %d pending, %d redelivered; want none", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
}

// TestRejectDeadLetter: a message the node rejects, through the plugin
// boundary, goes to the dead-letter subject with its bytes, its headers
// and the node's reason, and only then is terminated: never offered
// again. A receipt from before the adapter process restarted works too
// (the message is read back from the stream); rejecting twice makes no
// second dead letter.
func TestRejectDeadLetter(t *testing.T) {
	srv, js := inboundSetup(t)
	const ackWait = time.Second
	m, ad := startAdapter(t, inboundConfig(srv, obj{"ack_wait": ackWait.String()}))
	advisories := terminations(t, srv.URL())
	dead, err := js.Stream(t.Context(), "DEAD")
	if err != nil {
		t.Fatal(err)
	}
	checkDeadLetter := func(seq uint64, data, subject string, origSeq string) {
		t.Helper()
		dl, err := dead.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		h := dl.Header
		if string(dl.Data) != data || dl.Subject != "dead.inbound" || h.Get(nats.HeaderDeadReason) != refusal ||
			h.Get(nats.HeaderOriginalSubject) != subject || h.Get(nats.HeaderOriginalStream) != "INBOUND" ||
			h.Get(nats.HeaderOriginalSequence) != origSeq || h.Get(nats.HeaderLifetime) != "7200000" ||
			h.Get("X-Trace") != "abc" || h.Get(nats.HeaderMsgID) != "dead:nats:INBOUND:"+origSeq {
			t.Errorf("dead letter %d on %s: %q with headers %v", seq, dl.Subject, dl.Data, h)
		}
	}
	hdr := map[string]string{nats.HeaderLifetime: "7200000", "X-Trace": "abc"}

	publish(t, js, "to.nodeC.inbox", []byte("too long a life"), hdr)
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(got) != 1 || got[0].Lifetime != 2*time.Hour {
		t.Fatalf("offered %+v, want one message with a lifetime of 2h", got)
	}
	if err := rejecter(t, ad).Reject(t.Context(), got[0].Receipt, refusal); err != nil {
		t.Fatalf("Reject: %v", err)
	}
	checkDeadLetter(1, "too long a life", "to.nodeC.inbox", "1")
	if adv := nextTermination(t, advisories); adv.StreamSeq != 1 || !strings.Contains(adv.Reason, "dead.inbound") || !strings.Contains(adv.Reason, refusal) {
		t.Errorf("termination advisory %+v; want stream_seq 1, the dead-letter subject and the reason", adv)
	}
	notRedelivered(t, ad, js, ackWait)

	// Rejected again (the node retrying after a lost answer): nothing new.
	if err := rejecter(t, ad).Reject(t.Context(), got[0].Receipt, refusal); err != nil {
		t.Errorf("second Reject of the same receipt = %v, want nil", err)
	}
	if n := streamMsgs(t, dead); n != 1 {
		t.Errorf("dead-letter stream holds %d messages after a second Reject, want 1", n)
	}
	if adv := nextTermination(t, advisories); adv.StreamSeq != 1 { // terminated again: harmless
		t.Errorf("termination advisory %+v; want stream_seq 1", adv)
	}

	// A receipt the restarted adapter never saw.
	publish(t, js, "to.nodeC.other", []byte("fetched before a crash"), hdr)
	got = fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(got) != 1 {
		t.Fatalf("offered %d messages, want 1", len(got))
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
	if err := rejecter(t, ad).Reject(t.Context(), got[0].Receipt, refusal); err != nil {
		t.Fatalf("Reject after the adapter restarted: %v", err)
	}
	checkDeadLetter(2, "fetched before a crash", "to.nodeC.other", "2")
	if adv := nextTermination(t, advisories); adv.StreamSeq != 2 {
		t.Errorf("termination advisory %+v; want stream_seq 2", adv)
	}
	notRedelivered(t, ad, js, ackWait)
	if n := streamMsgs(t, dead); n != 2 {
		t.Errorf("dead-letter stream holds %d messages, want 2", n)
	}

	for _, r := range []string{"nope", "$JS.ACK.OTHER.mulegate.1.1.1.1.0", "$JS.ACK.INBOUND.other.1.1.1.1.0"} {
		if err := rejecter(t, ad).Reject(t.Context(), r, refusal); !errors.Is(err, plugins.ErrUnknownReceipt) {
			t.Errorf("Reject(%q) = %v, want ErrUnknownReceipt", r, err)
		}
	}
}

// TestRejectWithoutDeadLetter: with no dead_letter subject, a message the
// node rejects is terminated with the node's reason, which the server
// announces; it is not redelivered.
func TestRejectWithoutDeadLetter(t *testing.T) {
	srv, js := inboundSetup(t)
	const ackWait = time.Second
	_, ad := startAdapter(t, inboundConfig(srv, obj{"dead_letter": "", "ack_wait": ackWait.String()}))
	advisories := terminations(t, srv.URL())
	publish(t, js, "to.nodeC.inbox", []byte("refused"), map[string]string{nats.HeaderLifetime: "7200000"})
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(got) != 1 {
		t.Fatalf("offered %d messages, want 1", len(got))
	}
	if err := rejecter(t, ad).Reject(t.Context(), got[0].Receipt, refusal); err != nil {
		t.Fatalf("Reject: %v", err)
	}
	adv := nextTermination(t, advisories)
	if adv.Stream != "INBOUND" || adv.Consumer != "mulegate" || adv.StreamSeq != 1 || adv.Reason != refusal {
		t.Errorf("termination advisory %+v; want stream_seq 1 with reason %q", adv, refusal)
	}
	notRedelivered(t, ad, js, ackWait)
	dead, err := js.Stream(t.Context(), "DEAD")
	if err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, dead); n != 0 {
		t.Errorf("dead-letter stream holds %d messages, want none", n)
	}
}

// TestRejectDeadLetterUnbound: when the dead letter cannot be published
// (its subject is bound to no stream), Reject fails and the message is
// neither terminated nor lost: the node's Nack brings it back.
func TestRejectDeadLetterUnbound(t *testing.T) {
	srv, js := inboundSetup(t)
	ad := inProcess(t, inboundConfig(srv, obj{"dead_letter": "nowhere.dead", "ack_wait": "30s"}))
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	publish(t, js, "to.nodeC.inbox", []byte("keep me"), nil)
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(got) != 1 {
		t.Fatalf("offered %d messages, want 1", len(got))
	}
	if err := ad.Reject(t.Context(), got[0].Receipt, refusal); err == nil || !strings.Contains(err.Error(), "nowhere.dead") {
		t.Fatalf("Reject with an unbound dead-letter subject = %v, want an error naming it", err)
	}
	if info := consumerInfo(t, js); info.NumAckPending != 1 {
		t.Fatalf("after a failed Reject: %d pending acks, want 1", info.NumAckPending)
	}
	if err := ad.Nack(t.Context(), got[0].Receipt, refusal); err != nil {
		t.Fatal(err)
	}
	again := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 5 * time.Second})
	if len(again) != 1 || string(again[0].data) != "keep me" || again[0].MessageID != got[0].MessageID {
		t.Fatalf("after a failed Reject and a Nack: offered %+v, want the message again", again)
	}
}
