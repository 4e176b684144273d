package nats_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/internal/adaptertest"
	"github.com/mulegate/mulegate/plugins/nats"
)

// dtnEpoch is BPv7's epoch; creation times count milliseconds from it.
var dtnEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// testBundle returns bundle i's metadata (routed to "logs.<src node>.<service>",
// as the node would expand "logs.{src_node}.{service}") and payload.
func testBundle(i, size int) (plugins.Meta, []byte) {
	payload := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range payload {
		payload[j] = byte(r.Uint32())
	}
	src := fmt.Sprintf("dtn://mule%d/app", i%5)
	created := uint64(800000000000 + i)
	m := plugins.Meta{
		BundleID:      fmt.Sprintf("%s|%d.%d", src, created, i),
		Source:        src,
		Destination:   fmt.Sprintf("dtn://cloud/logs/app%d", i%3),
		ReportTo:      "dtn:none",
		CreationTime:  created,
		Sequence:      uint64(i),
		Lifetime:      24 * time.Hour,
		PayloadLength: int64(size),
		Route:         "logs",
		Options:       map[string]string{"subject": fmt.Sprintf("logs.mule%d.logs.app%d", i%5, i%3)},
	}
	if i%2 == 0 {
		m.SignatureStatus = "valid:campfire/mule" + strconv.Itoa(i%5)
	}
	return m, payload
}

// deliverAll delivers bundles [0, n) with workers in parallel, retrying
// each until OK as the node's queue would, and returns how many attempts
// were answered Retry.
func deliverAll(t testing.TB, ad plugins.Adapter, n, workers, size int) int64 {
	t.Helper()
	return adaptertest.Deliveries{N: n, Workers: workers, Retries: 100, Pause: 20 * time.Millisecond,
		Bundle: func(i int) (plugins.Meta, []byte) { return testBundle(i, size) }}.Run(t, ad)
}

func streamMsgs(t testing.TB, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestDeliverThroughPlugin: N bundles make N messages with the right
// subjects, headers and bytes; delivering all of them again adds none.
func TestDeliverThroughPlugin(t *testing.T) {
	srv := startEmbedded(t)
	_, js := client(t, srv.URL())
	_, ad := startAdapter(t, obj{
		"urls":    []string{srv.URL()},
		"streams": []obj{{"name": "LOGS", "subjects": []string{"logs.>"}, "duplicates": "10m"}},
	})
	const n, size = 2000, 700
	start := time.Now()
	if r := deliverAll(t, ad, n, 32, size); r != 0 {
		t.Errorf("%d deliveries answered Retry with the server up", r)
	}
	t.Logf("%d bundles in %v", n, time.Since(start))
	stream, err := js.Stream(t.Context(), "LOGS")
	if err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, stream); got != n {
		t.Fatalf("stream holds %d messages, want %d", got, n)
	}

	seen := map[string]bool{}
	for seq := uint64(1); seq <= n; seq++ {
		m, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get("Nats-Msg-Id")
		var i int
		if _, err := fmt.Sscanf(id[strings.LastIndexByte(id, '.')+1:], "%d", &i); err != nil || seen[id] {
			t.Fatalf("message %d: Nats-Msg-Id %q unexpected or seen twice", seq, id)
		}
		seen[id] = true
		meta, payload := testBundle(i, size)
		if id != meta.BundleID {
			t.Fatalf("message %d: Nats-Msg-Id %q, want %q", seq, id, meta.BundleID)
		}
		if m.Subject != meta.Options["subject"] {
			t.Errorf("bundle %d: subject %q, want %q", i, m.Subject, meta.Options["subject"])
		}
		if !bytes.Equal(m.Data, payload) {
			t.Fatalf("bundle %d: payload differs", i)
		}
		want := map[string]string{
			nats.HeaderSource:      meta.Source,
			nats.HeaderDestination: meta.Destination,
			nats.HeaderCreated:     dtnEpoch.Add(time.Duration(meta.CreationTime) * time.Millisecond).Format("2006-01-02T15:04:05.000Z07:00"),
			nats.HeaderLifetime:    "86400000",
			nats.HeaderSignature:   meta.SignatureStatus,
			nats.HeaderReportTo:    "",
			nats.HeaderObject:      "",
		}
		for k, v := range want {
			if got := m.Header.Get(k); got != v {
				t.Errorf("bundle %d: header %s = %q, want %q", i, k, got, v)
			}
		}
	}

	// The node redelivers after a crash or a lost answer: the same
	// bundles again are answered OK and stored no second time.
	if r := deliverAll(t, ad, n, 32, size); r != 0 {
		t.Errorf("%d redeliveries answered Retry", r)
	}
	if got := streamMsgs(t, stream); got != n {
		t.Fatalf("after redelivering every bundle the stream holds %d messages, want %d", got, n)
	}
}

// patternReader yields size pseudo-random bytes without holding them, and
// hashes what it yields.
type patternReader struct {
	r    *rand.Rand
	left int64
	h    hash.Hash
}

func newPatternReader(seed uint64, size int64) *patternReader {
	return &patternReader{r: rand.New(rand.NewPCG(seed, 99)), left: size, h: sha256.New()}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		b[i] = byte(p.r.Uint32())
	}
	p.left -= int64(len(b))
	p.h.Write(b)
	return len(b), nil
}

func sumOf(seed uint64, size int64) []byte {
	p := newPatternReader(seed, size)
	_, _ = io.Copy(io.Discard, p)
	return p.h.Sum(nil)
}

// readRef follows a reference message to its object and returns the
// object's SHA-256 and size.
func readRef(t testing.TB, js jetstream.JetStream, m *jetstream.RawStreamMsg) ([]byte, uint64) {
	t.Helper()
	bucket, name, err := nats.ParseObjectHeader(m.Header.Get(nats.HeaderObject))
	if err != nil {
		t.Fatalf("reference message: %v (headers %v)", err, m.Header)
	}
	ref, err := nats.ParseObjectRef(m.Data)
	if err != nil || ref.Bucket != bucket || ref.Name != name {
		t.Fatalf("reference body %s: %+v, %v", m.Data, ref, err)
	}
	obs, err := js.ObjectStore(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	res, err := obs.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	h := sha256.New()
	n, err := io.Copy(h, res)
	if err != nil {
		t.Fatal(err)
	}
	if size := m.Header.Get(nats.HeaderObjectSize); size != strconv.FormatInt(n, 10) || ref.Size != uint64(n) {
		t.Errorf("object is %d bytes; the reference says %s / %d", n, size, ref.Size)
	}
	return h.Sum(nil), uint64(n)
}

// TestLargePayloadThroughObjectStore: a 20 MiB payload goes to the object
// store, streamed, and the reference message leads back to the same
// bytes; delivering it again stores neither a second message nor a second
// copy.
func TestLargePayloadThroughObjectStore(t *testing.T) {
	srv := startEmbedded(t)
	_, js := client(t, srv.URL())
	stream := createStream(t, js, jetstream.StreamConfig{Name: "LOGS", Subjects: []string{"logs.>"}})
	_, ad := startAdapter(t, obj{"urls": []string{srv.URL()}, "object_store": obj{"bucket": "big"}})

	const size = 20 << 20
	meta, _ := testBundle(1, 0)
	meta.PayloadLength = size
	for attempt := range 2 {
		start := time.Now()
		res := ad.Deliver(t.Context(), meta, newPatternReader(1, size))
		if res.Status != plugins.OK {
			t.Fatalf("attempt %d: %v", attempt, res)
		}
		t.Logf("attempt %d: 20 MiB delivered in %v", attempt, time.Since(start))
		if got := streamMsgs(t, stream); got != 1 {
			t.Fatalf("attempt %d: stream holds %d messages, want 1", attempt, got)
		}
	}
	m, err := stream.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Nats-Msg-Id") != meta.BundleID || m.Header.Get(nats.HeaderSource) != meta.Source {
		t.Errorf("reference message headers: %v", m.Header)
	}
	sum, n := readRef(t, js, m)
	if n != size || !bytes.Equal(sum, sumOf(1, size)) {
		t.Fatalf("object: %d bytes, SHA-256 %x; want %d bytes, %x", n, sum, size, sumOf(1, size))
	}
	// One object, stored once: its chunks plus one metadata message.
	objStream, err := js.Stream(t.Context(), "OBJ_big")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := streamMsgs(t, objStream), uint64(size/(128<<10)+1); got != want {
		t.Errorf("object store stream holds %d messages, want %d (one copy)", got, want)
	}
}

// TestObjectStoreThreshold: the adapter learns max_payload from the
// connection; a payload that fits goes inline, one that does not (with
// the headers) goes to the object store, and a stream's own smaller
// max_msg_size sends a payload there too. With the object store off, a
// payload that cannot fit is rejected.
func TestObjectStoreThreshold(t *testing.T) {
	srv := newEmbedded(t)
	srv.Opts.MaxPayload = 64 << 10
	srv.Start()
	_, js := client(t, srv.URL())
	logs := createStream(t, js, jetstream.StreamConfig{Name: "LOGS", Subjects: []string{"logs.>"}})
	small := createStream(t, js, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 4 << 10})
	ad := inProcess(t, obj{"urls": []string{srv.URL()}})
	off := inProcess(t, obj{"urls": []string{srv.URL()}, "object_store": obj{"bucket": ""}})
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	eventually(t, 10*time.Second, "connected", func() error { return off.Check(t.Context()) })

	tests := []struct {
		name    string
		ad      plugins.Adapter
		subject string
		size    int
		stream  jetstream.Stream
		want    plugins.Status
		inline  bool
	}{
		{"fits", ad, "logs.a", 60 << 10, logs, plugins.OK, true},
		{"over max_payload with headers", ad, "logs.b", 64<<10 - 100, logs, plugins.OK, false},
		{"far over", ad, "logs.c", 300 << 10, logs, plugins.OK, false},
		{"over the stream's max_msg_size", ad, "small.a", 8 << 10, small, plugins.OK, false},
		{"object store off, over max_payload", off, "logs.d", 100 << 10, logs, plugins.Reject, false},
		{"object store off, over max_msg_size", off, "small.b", 8 << 10, small, plugins.Reject, false},
		{"object store off, fits", off, "small.c", 1 << 10, small, plugins.OK, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			meta, payload := testBundle(100+i, tc.size)
			meta.Options = map[string]string{"subject": tc.subject}
			before := streamMsgs(t, tc.stream)
			res := tc.ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
			if res.Status != tc.want {
				t.Fatalf("Deliver = %v, want %v", res, tc.want)
			}
			if tc.want != plugins.OK {
				if streamMsgs(t, tc.stream) != before {
					t.Error("a rejected bundle left a message")
				}
				return
			}
			m, err := tc.stream.GetLastMsgForSubject(t.Context(), tc.subject)
			if err != nil {
				t.Fatal(err)
			}
			if tc.inline {
				if m.Header.Get(nats.HeaderObject) != "" || !bytes.Equal(m.Data, payload) {
					t.Fatalf("want the payload inline; got headers %v and %d bytes", m.Header, len(m.Data))
				}
				return
			}
			want := sha256.Sum256(payload)
			if sum, _ := readRef(t, js, m); !bytes.Equal(sum, want[:]) {
				t.Fatal("the object's bytes differ from the payload")
			}
		})
	}
}

// TestDeliverRefusals: what no retry can fix is rejected with a reason;
// what may pass is retried.
func TestDeliverRefusals(t *testing.T) {
	srv := startEmbedded(t)
	_, js := client(t, srv.URL())
	createStream(t, js, jetstream.StreamConfig{Name: "LOGS", Subjects: []string{"logs.>"}})
	sealed := createStream(t, js, jetstream.StreamConfig{Name: "SEALED", Subjects: []string{"sealed.>"}})
	cfg := sealed.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	ad := inProcess(t, obj{"urls": []string{srv.URL()}, "subject": "logs.{src_node}.{service}"})
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })

	tests := []struct {
		name   string
		meta   func(*plugins.Meta)
		want   plugins.Status
		reason string
	}{
		{"no stream for the subject", func(m *plugins.Meta) { m.Options["subject"] = "nowhere.x" }, plugins.Reject, "not bound to any JetStream stream"},
		{"wildcard subject", func(m *plugins.Meta) { m.Options["subject"] = "logs.*" }, plugins.Reject, "wildcards"},
		{"subject with a space", func(m *plugins.Meta) { m.Options["subject"] = "logs.a b" }, plugins.Reject, "spaces"},
		{"sealed stream", func(m *plugins.Meta) { m.Options["subject"] = "sealed.x" }, plugins.Reject, "sealed"},
		{"no bundle ID", func(m *plugins.Meta) { m.BundleID = "" }, plugins.Reject, "no ID"},
		{"default subject template", func(m *plugins.Meta) { m.Options = nil }, plugins.OK, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			meta, payload := testBundle(200+i, 10)
			tc.meta(&meta)
			res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
			if res.Status != tc.want || !strings.Contains(res.Reason, tc.reason) {
				t.Fatalf("Deliver = %v, want %v with %q", res, tc.want, tc.reason)
			}
		})
	}
	// The default template put the bundle where the route would have.
	meta, _ := testBundle(200+len(tests)-1, 0)
	s, _ := js.Stream(t.Context(), "LOGS")
	m, err := s.GetLastMsgForSubject(t.Context(), meta.Options["subject"])
	if err != nil || m.Header.Get(nats.HeaderMsgID) != meta.BundleID {
		t.Errorf("default subject: want the bundle on %s: %v %v", meta.Options["subject"], m, err)
	}
}

// TestPublishPermissionDenied: a subject this user may not publish to is
// rejected, not retried forever.
func TestPublishPermissionDenied(t *testing.T) {
	srv := newEmbedded(t)
	srv.Opts.Users = []*server.User{{
		Username: "mule", Password: "s3cret",
		Permissions: &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{"logs.>", "$JS.API.>"}}},
	}}
	srv.Start()
	nc, err := natsgo.Connect(srv.URL(), natsgo.UserInfo("mule", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	createStream(t, js, jetstream.StreamConfig{Name: "ALL", Subjects: []string{"logs.>", "secret.>"}})

	ad := inProcess(t, obj{"urls": []string{srv.URL()}, "publish_timeout": "1s",
		"auth": obj{"user": "mule", "password": "s3cret"}})
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	meta, payload := testBundle(1, 10)
	if res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.OK {
		t.Fatalf("allowed subject: %v", res)
	}
	meta.Options["subject"] = "secret.x"
	res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
	if res.Status != plugins.Reject || !strings.Contains(res.Reason, "not permitted") {
		t.Fatalf("denied subject: %v, want Reject", res)
	}
}

// TestDeliverWithoutPubAck: a message nobody acknowledges (a plain
// subscriber, no stream, takes it) is retried after publish_timeout, not
// counted as delivered.
func TestDeliverWithoutPubAck(t *testing.T) {
	srv := startEmbedded(t)
	nc, _ := client(t, srv.URL())
	if _, err := nc.Subscribe("silent.>", func(*natsgo.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ad := inProcess(t, obj{"urls": []string{srv.URL()}, "publish_timeout": "300ms"})
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	meta, payload := testBundle(1, 10)
	meta.Options["subject"] = "silent.x"
	start := time.Now()
	res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
	if res.Status != plugins.Retry || !strings.Contains(res.Reason, "no PubAck") {
		t.Fatalf("Deliver with no PubAck = %v, want Retry", res)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("Deliver with no PubAck answered after %v; publish_timeout is 300ms", took)
	}
}

// TestDeliverPayloadMustArriveWhole: a payload that breaks off or runs
// long commits nothing, inline or to the object store.
func TestDeliverPayloadMustArriveWhole(t *testing.T) {
	srv := startEmbedded(t)
	_, js := client(t, srv.URL())
	stream := createStream(t, js, jetstream.StreamConfig{Name: "LOGS", Subjects: []string{"logs.>"}})
	ad := inProcess(t, obj{"urls": []string{srv.URL()}})
	eventually(t, 10*time.Second, "connected", func() error { return ad.Check(t.Context()) })
	for _, size := range []int64{1000, 3 << 20} {
		meta, _ := testBundle(int(size), 0)
		meta.PayloadLength = size
		short := io.MultiReader(io.LimitReader(newPatternReader(1, size), size-1), errReader{io.ErrUnexpectedEOF})
		if res := ad.Deliver(t.Context(), meta, short); res.Status != plugins.Retry {
			t.Errorf("%d bytes, broken off: %v, want Retry", size, res)
		}
		long := newPatternReader(1, size+1)
		if res := ad.Deliver(t.Context(), meta, long); res.Status != plugins.Retry {
			t.Errorf("%d bytes, one too many: %v, want Retry", size, res)
		}
	}
	if n := streamMsgs(t, stream); n != 0 {
		t.Errorf("stream holds %d messages after only broken deliveries", n)
	}
	if obs, err := js.ObjectStore(t.Context(), "mulegate-payloads"); err == nil {
		if l, _ := obs.List(t.Context()); len(l) != 0 {
			t.Errorf("object store holds %d objects after only broken deliveries", len(l))
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestConnectivity: the adapter starts with the server down, says so, and
// answers Retry; once the server is up it passes Check and delivers,
// without a restart; and again after the server is killed and comes back.
func TestConnectivity(t *testing.T) {
	srv := newProcess(t)
	_, ad := startAdapter(t, obj{
		"urls":            []string{srv.URL()},
		"connect_timeout": "1s",
		"streams":         []obj{{"name": "LOGS", "subjects": []string{"logs.>"}}},
	})
	if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) {
		t.Fatalf("Check with the server down = %v, want ErrUnreachable", err)
	}
	meta, payload := testBundle(1, 100)
	if res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.Retry {
		t.Fatalf("Deliver with the server down = %v, want Retry", res)
	}

	for round := range 2 {
		start := time.Now()
		srv.Start()
		eventually(t, 15*time.Second, "Check passes once the server is up", func() error { return ad.Check(t.Context()) })
		t.Logf("round %d: reachable %v after the server started", round, time.Since(start))
		res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
		if res.Status != plugins.OK {
			t.Fatalf("round %d: Deliver with the server up = %v", round, res)
		}
		srv.Kill()
		eventually(t, 15*time.Second, "Check fails once the server is gone", func() error {
			if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) {
				return fmt.Errorf("Check = %v", err)
			}
			return nil
		})
		if res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.Retry {
			t.Fatalf("round %d: Deliver with the server killed = %v, want Retry", round, res)
		}
	}
	// The stream kept the one bundle through both restarts.
	srv.Start()
	_, js := client(t, srv.URL())
	s, err := js.Stream(t.Context(), "LOGS")
	if err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, s); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}
