package s3_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/s3"
)

// offered is an inbound message as the node saw it, payload read.
type offered struct {
	plugins.Inbound
	body []byte
}

// fetch runs one Fetch and returns what it offered, by key.
func fetch(t testing.TB, ad plugins.Adapter, req plugins.FetchRequest) map[string]offered {
	t.Helper()
	got := map[string]offered{}
	err := ad.Fetch(t.Context(), req, func(in plugins.Inbound) error {
		body, err := io.ReadAll(io.LimitReader(in.Payload, in.PayloadLength))
		if err != nil {
			return err
		}
		if int64(len(body)) != in.PayloadLength {
			t.Errorf("%s: %d bytes of %d", in.Headers["key"], len(body), in.PayloadLength)
		}
		got[in.Headers["key"]] = offered{Inbound: in, body: body}
		return nil
	})
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return got
}

func keysOf(m map[string]offered) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestFetchThroughPlugin: objects under the inbox prefix are offered
// through the plugin boundary with the destination their key or metadata
// names and their bytes; each stays until acked, comes back after a
// Nack, and moves to the rejected prefix with the reason when rejected;
// objects that name no destination are moved there at once.
func TestFetchThroughPlugin(t *testing.T) {
	srv := startServer(t, bucket)
	_, ad := startAdapter(t, serverConfig(srv, obj{"inbound": obj{"poll_interval": "50ms", "nack_delay": "1s", "lease": "1m"}}))
	report := randomBytes(1, 300<<10)
	srv.Put(bucket, "inbox/nodeC/inbox/hello.txt", []byte("hello"), nil)
	srv.Put(bucket, "inbox/nodeC/report.bin", report, nil)
	srv.Put(bucket, "inbox/any/x.bin", []byte("to ipn"), map[string]string{s3.MetaDestination: "ipn:5.1", s3.MetaLifetime: "3600000", "colour": "blue"})
	srv.Put(bucket, "inbox/bad|node/x", []byte("no node"), nil)
	srv.Put(bucket, "inbox/loose.txt", []byte("no node either"), nil)
	srv.Put(bucket, "inbox/nodeD/y.txt", []byte("bad metadata"), map[string]string{s3.MetaDestination: "mailto:someone"})

	got := fetch(t, ad, plugins.FetchRequest{MaxMessages: 10, Wait: 2 * time.Second})
	want := map[string]struct {
		dest     string
		body     []byte
		lifetime time.Duration
	}{
		"inbox/nodeC/inbox/hello.txt": {"dtn://nodeC/inbox", []byte("hello"), 0},
		"inbox/nodeC/report.bin":      {"dtn://nodeC/", report, 0},
		"inbox/any/x.bin":             {"ipn:5.1", []byte("to ipn"), time.Hour},
	}
	if !slices.Equal(keysOf(got), []string{"inbox/any/x.bin", "inbox/nodeC/inbox/hello.txt", "inbox/nodeC/report.bin"}) {
		t.Fatalf("offered %q", keysOf(got))
	}
	for key, w := range want {
		o := got[key]
		etag := srv.ETag(bucket, key)
		if o.Destination != w.dest || !bytes.Equal(o.body, w.body) || o.Lifetime != w.lifetime {
			t.Errorf("%s: offered for %q, %d bytes, lifetime %v; want %q, %d bytes, %v", key, o.Destination, len(o.body), o.Lifetime, w.dest, len(w.body), w.lifetime)
		}
		if o.MessageID != s3.MessageID(bucket, key, etag) {
			t.Errorf("%s: MessageID %q, want %q", key, o.MessageID, s3.MessageID(bucket, key, etag))
		}
	}
	if h := got["inbox/any/x.bin"].Headers; h["meta.colour"] != "blue" || h["filename"] != "x.bin" || h["bucket"] != bucket {
		t.Errorf("headers %v", h)
	}

	// Objects with no destination were moved aside at once, with why.
	for key, why := range map[string]string{
		"bad|node/x":  "not allowed in a node name",
		"loose.txt":   "names no node",
		"nodeD/y.txt": "metadata " + s3.MetaDestination,
	} {
		if _, ok := srv.Get(bucket, "inbox/"+key); ok {
			t.Errorf("inbox/%s is still in the inbox", key)
		}
		o, ok := srv.Get(bucket, "rejected/"+key)
		if !ok {
			t.Errorf("rejected/%s is missing", key)
			continue
		}
		reason := s3.ParseMetaValue(o.Metadata[s3.MetaRejectedReason])
		if !strings.Contains(reason, "no destination") || !strings.Contains(reason, why) || s3.ParseMetaValue(o.Metadata[s3.MetaOriginalKey]) != "inbox/"+key {
			t.Errorf("rejected/%s: metadata %v", key, o.Metadata)
		}
	}

	// Offered, not settled: all still there, and not offered again.
	for key := range want {
		if _, ok := srv.Get(bucket, key); !ok {
			t.Errorf("%s is gone before any Ack", key)
		}
	}
	if again := fetch(t, ad, plugins.FetchRequest{MaxMessages: 10}); len(again) != 0 {
		t.Errorf("offered again before Ack or Nack: %q", keysOf(again))
	}

	// Ack deletes, and only that one.
	hello := got["inbox/nodeC/inbox/hello.txt"]
	if err := ad.Ack(t.Context(), hello.Receipt); err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.Get(bucket, "inbox/nodeC/inbox/hello.txt"); ok {
		t.Error("acked object still there")
	}
	if err := ad.Ack(t.Context(), hello.Receipt); err != nil {
		t.Errorf("second Ack = %v, want nil", err)
	}

	// Nack keeps it, and it comes back after nack_delay.
	rep := got["inbox/nodeC/report.bin"]
	if err := ad.Nack(t.Context(), rep.Receipt, "store full"); err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.Get(bucket, "inbox/nodeC/report.bin"); !ok {
		t.Fatal("nacked object is gone")
	}
	if again := fetch(t, ad, plugins.FetchRequest{MaxMessages: 10}); len(again) != 0 {
		t.Errorf("offered again at once after a Nack: %q", keysOf(again))
	}
	var back map[string]offered
	eventually(t, 5*time.Second, "the nacked object is offered again", func() error {
		back = fetch(t, ad, plugins.FetchRequest{MaxMessages: 10})
		if len(back) == 0 {
			return servertest.ErrNotYet
		}
		return nil
	})
	if o := back["inbox/nodeC/report.bin"]; len(back) != 1 || o.MessageID != rep.MessageID || !bytes.Equal(o.body, report) {
		t.Fatalf("offered again: %q (MessageID %q, was %q)", keysOf(back), o.MessageID, rep.MessageID)
	}

	// Reject moves it aside with the node's reason, keeping its metadata
	// and bytes.
	x := got["inbox/any/x.bin"]
	reason := "refused for good: bundle lifetime exceeds this node's maximum: 1h0m0s asked, at most 30m0s allowed — déjà vu"
	if err := ad.(plugins.Rejecter).Reject(t.Context(), x.Receipt, reason); err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.Get(bucket, "inbox/any/x.bin"); ok {
		t.Error("rejected object still in the inbox")
	}
	o, ok := srv.Get(bucket, "rejected/any/x.bin")
	if !ok {
		t.Fatal("rejected object not under rejected/")
	}
	if s3.ParseMetaValue(o.Metadata[s3.MetaRejectedReason]) != reason || o.Metadata["colour"] != "blue" ||
		o.Metadata[s3.MetaDestination] != "ipn:5.1" || string(o.Body) != "to ipn" {
		t.Errorf("rejected object: %q with metadata %v", o.Body, o.Metadata)
	}

	if err := ad.Ack(t.Context(), back["inbox/nodeC/report.bin"].Receipt); err != nil {
		t.Fatal(err)
	}
	if keys := srv.Keys(bucket, "inbox/"); len(keys) != 0 {
		t.Errorf("inbox holds %q after everything was settled", keys)
	}
	if again := fetch(t, ad, plugins.FetchRequest{MaxMessages: 10}); len(again) != 0 {
		t.Errorf("offered after everything was settled: %q", keysOf(again))
	}

	// Receipts the adapter cannot read, or that are not its own.
	for r, want := range map[string]error{
		"no-slash":            plugins.ErrInvalid,
		"etag/outside/prefix": plugins.ErrUnknownReceipt,
		"etag/rejected/x":     plugins.ErrUnknownReceipt,
	} {
		if err := ad.Ack(t.Context(), r); !errors.Is(err, want) {
			t.Errorf("Ack(%q) = %v, want %v", r, err, want)
		}
	}
}

// TestFetchLimits: an object larger than the node takes is left alone
// while the others are offered; max messages is honoured; an object the
// node's fn declines is not kept leased.
func TestFetchLimits(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"inbound": obj{}}))
	srv.Put(bucket, "inbox/n/a", randomBytes(1, 5000), nil)
	srv.Put(bucket, "inbox/n/b", []byte("small"), nil)
	srv.Put(bucket, "inbox/n/c", []byte("small too"), nil)

	got := fetch(t, ad, plugins.FetchRequest{MaxMessages: 10, MaxBytes: 1000})
	if !slices.Equal(keysOf(got), []string{"inbox/n/b", "inbox/n/c"}) {
		t.Fatalf("with max_bytes 1000: offered %q", keysOf(got))
	}
	declined := 0
	err := ad.Fetch(t.Context(), plugins.FetchRequest{MaxMessages: 10}, func(in plugins.Inbound) error {
		declined++
		return plugins.ErrFetchLimit
	})
	if err != nil || declined != 1 {
		t.Fatalf("Fetch whose fn declines = %v after %d offers, want nil after 1", err, declined)
	}
	one := fetch(t, ad, plugins.FetchRequest{MaxMessages: 1})
	if !slices.Equal(keysOf(one), []string{"inbox/n/a"}) {
		t.Fatalf("after a decline, with max_messages 1: offered %q", keysOf(one))
	}
}

// TestFetchWaits: a Fetch with nothing to offer waits for an object, up
// to its Wait, and offers it when it comes.
func TestFetchWaits(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"inbound": obj{"poll_interval": "50ms", "default_destination": "dtn://nodeC/inbox"}}))
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv.Put(bucket, "inbox/late.txt", []byte("late"), nil)
	}()
	start := time.Now()
	got := fetch(t, ad, plugins.FetchRequest{MaxMessages: 1, Wait: 5 * time.Second})
	if o := got["inbox/late.txt"]; len(got) != 1 || o.Destination != "dtn://nodeC/inbox" || string(o.body) != "late" {
		t.Fatalf("offered %v", got)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("offered %v after it was put", took)
	}
	start = time.Now()
	if again := fetch(t, ad, plugins.FetchRequest{MaxMessages: 1, Wait: 200 * time.Millisecond}); len(again) != 0 {
		t.Fatalf("offered %q", keysOf(again))
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("an empty Fetch with Wait 200ms returned after %v", took)
	}
}

// TestReplacedObjectIsKept: an object replaced after it was offered is
// neither deleted by the Ack nor moved by the Reject of the old version,
// and is offered anew.
func TestReplacedObjectIsKept(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"inbound": obj{}}))
	srv.Put(bucket, "inbox/n/a", []byte("version 1"), nil)
	srv.Put(bucket, "inbox/n/b", []byte("version 1"), nil)
	first := fetch(t, ad, plugins.FetchRequest{MaxMessages: 10})
	srv.Put(bucket, "inbox/n/a", []byte("version 2"), nil)
	srv.Put(bucket, "inbox/n/b", []byte("version 2"), nil)
	if err := ad.Ack(t.Context(), first["inbox/n/a"].Receipt); err != nil {
		t.Fatal(err)
	}
	if err := ad.Reject(t.Context(), first["inbox/n/b"].Receipt, "refused"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"inbox/n/a", "inbox/n/b"} {
		if o, ok := srv.Get(bucket, k); !ok || string(o.Body) != "version 2" {
			t.Errorf("%s: the new version is gone", k)
		}
	}
	if keys := srv.Keys(bucket, "rejected/"); len(keys) != 0 {
		t.Errorf("the new version was set aside: %q", keys)
	}
	again := fetch(t, ad, plugins.FetchRequest{MaxMessages: 10})
	for _, k := range []string{"inbox/n/a", "inbox/n/b"} {
		if o := again[k]; string(o.body) != "version 2" || o.MessageID == first[k].MessageID {
			t.Errorf("%s offered again as %q, MessageID %q (was %q)", k, o.body, o.MessageID, first[k].MessageID)
		}
	}
}

// TestReceiptsSurviveRestart: a receipt from one adapter process works
// in the next one; a rejected name that is taken gets a number.
func TestReceiptsSurviveRestart(t *testing.T) {
	srv := startServer(t, bucket)
	cfg := serverConfig(srv, obj{"inbound": obj{}})
	before := inProcess(t, cfg)
	srv.Put(bucket, "inbox/n/a", []byte("a"), nil)
	srv.Put(bucket, "inbox/n/b", []byte("b1"), nil)
	got := fetch(t, before, plugins.FetchRequest{MaxMessages: 10})
	_ = before.Close()

	after := inProcess(t, cfg)
	if err := after.Ack(t.Context(), got["inbox/n/a"].Receipt); err != nil {
		t.Fatal(err)
	}
	if err := after.Reject(t.Context(), got["inbox/n/b"].Receipt, "first"); err != nil {
		t.Fatal(err)
	}
	srv.Put(bucket, "inbox/n/b", []byte("b2"), nil)
	second := fetch(t, after, plugins.FetchRequest{MaxMessages: 10})
	if err := after.Reject(t.Context(), second["inbox/n/b"].Receipt, "second"); err != nil {
		t.Fatal(err)
	}
	if keys := srv.Keys(bucket, ""); !slices.Equal(keys, []string{"rejected/n/b", "rejected/n/b.1"}) {
		t.Fatalf("bucket holds %q", keys)
	}
	for k, want := range map[string]string{"rejected/n/b": "b1", "rejected/n/b.1": "b2"} {
		if o, _ := srv.Get(bucket, k); string(o.Body) != want {
			t.Errorf("%s holds %q, want %q", k, o.Body, want)
		}
	}
}

// TestFetchServerDown: with the server down, Fetch fails as unreachable,
// and works again once it is back.
func TestFetchServerDown(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"inbound": obj{}, "connect_timeout": "1s", "max_attempts": 1}))
	srv.Put(bucket, "inbox/n/a", []byte("a"), nil)
	srv.Kill()
	err := ad.Fetch(t.Context(), plugins.FetchRequest{MaxMessages: 1}, func(plugins.Inbound) error { return nil })
	if !errors.Is(err, plugins.ErrUnreachable) {
		t.Fatalf("Fetch with the server down = %v, want ErrUnreachable", err)
	}
	srv.Start()
	if got := fetch(t, ad, plugins.FetchRequest{MaxMessages: 1}); len(got) != 1 {
		t.Fatalf("offered %q once the server was back", keysOf(got))
	}
}

// TestFetchScansInPages: with more objects than max_scan, later fetches
// go on where the last one stopped, so that leased objects at the front
// do not hide the rest.
func TestFetchScansInPages(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"inbound": obj{}, "limits": obj{"max_scan": 3}}))
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		srv.Put(bucket, "inbox/n/"+k, []byte(k), nil)
	}
	var seen []string
	for range 4 {
		for k := range fetch(t, ad, plugins.FetchRequest{MaxMessages: 10}) {
			seen = append(seen, k)
		}
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"inbox/n/a", "inbox/n/b", "inbox/n/c", "inbox/n/d", "inbox/n/e"}) {
		t.Fatalf("offered %q over four fetches", seen)
	}
}
