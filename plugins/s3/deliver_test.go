package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/internal/heapwatch"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/s3"
	"github.com/mulegate/mulegate/plugins/s3/internal/s3test"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// expectedKey is where bundle i of testBundle lands: its route's key
// option, or the default template with the node's own {bundle_key}.
func expectedKey(t testing.TB, m plugins.Meta) string {
	t.Helper()
	if k := m.Options["key"]; k != "" {
		return k
	}
	id, err := bundle.ParseID(m.BundleID)
	if err != nil {
		t.Fatal(err)
	}
	if id.Key() != sdk.BundleKey(m.BundleID) {
		t.Fatalf("the adapter's {bundle_key} %s differs from the node's %s", sdk.BundleKey(m.BundleID), id.Key())
	}
	src, _, _ := strings.Cut(strings.TrimPrefix(m.Source, "dtn://"), "/")
	return fmt.Sprintf("bundles/%s/%s/%s", src, m.Created().UTC().Format("2006-01-02"), id.Key())
}

// deliverAll delivers bundles [0, n) with workers in parallel, retrying
// each until OK as the node's queue would, and returns how many attempts
// were answered Retry.
func deliverAll(t testing.TB, ad plugins.Adapter, n, workers int, size func(i int) int) int64 {
	t.Helper()
	var retries, next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				meta, payload := testBundle(i, size(i))
				for attempt := 0; ; attempt++ {
					res := ad.Deliver(context.Background(), meta, bytes.NewReader(payload))
					if res.Status == plugins.OK {
						break
					}
					if res.Status == plugins.Reject || attempt > 20 {
						errs <- fmt.Errorf("bundle %d: %v", i, res)
						return
					}
					retries.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return retries.Load()
}

// TestDeliverThroughPlugin: bundles delivered through the plugin boundary
// (small ones on the session, larger ones streamed) land one object each,
// at the route's key or the adapter's template, with the bundle's
// metadata and bytes; delivering all of them again adds no object and
// changes no byte.
func TestDeliverThroughPlugin(t *testing.T) {
	srv := startServer(t, bucket)
	_, ad := startAdapter(t, serverConfig(srv, nil))
	if err := ad.Check(t.Context()); err != nil {
		t.Fatalf("Check = %v", err)
	}
	const n = 150
	size := func(i int) int {
		if i%10 == 3 {
			return 200 << 10 // over the session's 64 KiB: a Deliver stream
		}
		return 700 + i
	}
	start := time.Now()
	if r := deliverAll(t, ad, n, 16, size); r != 0 {
		t.Errorf("%d deliveries answered Retry with the server up", r)
	}
	t.Logf("%d bundles in %v", n, time.Since(start))

	check := func(round string) {
		keys := srv.Keys(bucket, "")
		if len(keys) != n {
			t.Fatalf("%s: bucket holds %d objects, want %d: %q", round, len(keys), n, keys[:min(len(keys), 10)])
		}
		for i := range n {
			meta, payload := testBundle(i, size(i))
			key := expectedKey(t, meta)
			o, ok := srv.Get(bucket, key)
			if !ok {
				t.Fatalf("%s: bundle %d: no object at %q", round, i, key)
			}
			if !bytes.Equal(o.Body, payload) {
				t.Fatalf("%s: bundle %d: %d bytes that differ from its %d", round, i, len(o.Body), len(payload))
			}
			want := map[string]string{
				s3.MetaBundleID:    meta.BundleID,
				s3.MetaSource:      meta.Source,
				s3.MetaDestination: meta.Destination,
				s3.MetaCreated:     meta.Created().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
				s3.MetaLifetime:    "86400000",
				s3.MetaSignature:   meta.SignatureStatus,
				s3.MetaReportTo:    "",
			}
			if meta.ReportTo != "dtn:none" {
				want[s3.MetaReportTo] = meta.ReportTo
			}
			for k, v := range want {
				if got := s3.ParseMetaValue(o.Metadata[k]); got != v {
					t.Errorf("%s: bundle %d: metadata %s = %q, want %q", round, i, k, got, v)
				}
			}
			wantType := "application/octet-stream"
			if meta.Options["content_type"] != "" {
				wantType = meta.Options["content_type"]
			}
			if o.ContentType != wantType {
				t.Errorf("%s: bundle %d: Content-Type %q, want %q", round, i, o.ContentType, wantType)
			}
		}
	}
	check("first delivery")

	// The node redelivers after a crash or a lost answer: the same
	// bundles land on the same keys, overwriting with the same bytes.
	if r := deliverAll(t, ad, n, 16, size); r != 0 {
		t.Errorf("%d redeliveries answered Retry", r)
	}
	check("redelivery")
}

// vmHWM is a process's peak resident set size.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// objectSum streams an object and returns its SHA-256 and size.
func objectSum(t testing.TB, srv *s3test.Server, key string) ([32]byte, int64) {
	t.Helper()
	out, err := srv.Client().GetObject(t.Context(), &awss3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GetObject %s: %v", key, err)
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, n
}

// TestLargePayloadMultipart: a 100 MiB payload, generated as it is sent,
// goes through the plugin boundary as a multipart upload of 5 MiB parts,
// and comes back with the same SHA-256; the adapter process's peak RSS
// stays far below the payload. Delivering it again finds the object and
// sends nothing.
func TestLargePayloadMultipart(t *testing.T) {
	srv := startServer(t, bucket)
	m, ad := startAdapter(t, serverConfig(srv, obj{"part_size": "5MiB", "limits": obj{"part_concurrency": 2}}))
	if err := ad.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	pid := adapterPID(m)
	before := vmHWM(t, pid)

	const size = 100 << 20
	meta, _ := testBundle(1, 0)
	meta.PayloadLength = size
	key := expectedKey(t, meta)
	start := time.Now()
	src := newPatternReader(1, size)
	if res := ad.Deliver(t.Context(), meta, src); res.Status != plugins.OK {
		t.Fatalf("Deliver: %v", res)
	}
	took := time.Since(start)
	peak := vmHWM(t, pid)
	t.Logf("100 MiB delivered in %v (%.0f MiB/s); adapter peak RSS %d MiB (%d MiB before)", took, 100/took.Seconds(), peak>>20, before>>20)
	if peak > 80<<20 && !raceEnabled {
		t.Errorf("the adapter's peak RSS reached %d MiB delivering a 100 MiB payload in 5 MiB parts", peak>>20)
	}
	sum, n := objectSum(t, srv, key)
	if n != size || sum != sumOf(1, size) {
		t.Fatalf("object: %d bytes, SHA-256 %x; want %d bytes, %x", n, sum, size, sumOf(1, size))
	}
	if u := srv.Uploads(bucket); len(u) != 0 {
		t.Errorf("incomplete uploads left: %q", u)
	}

	// Again: the object is there whole, so nothing is sent.
	start = time.Now()
	if res := ad.Deliver(t.Context(), meta, newPatternReader(1, size)); res.Status != plugins.OK {
		t.Fatalf("redelivery: %v", res)
	}
	t.Logf("redelivery answered in %v", time.Since(start))
	if keys := srv.Keys(bucket, ""); len(keys) != 1 || keys[0] != key {
		t.Fatalf("bucket holds %q, want just %q", keys, key)
	}
	if sum, n := objectSum(t, srv, key); n != size || sum != sumOf(1, size) {
		t.Fatal("the object changed on redelivery")
	}
}

// TestMultipartHeapBounded: in process, the heap the adapter uses to
// deliver a 100 MiB payload is bounded by its part buffers, not the
// payload.
func TestMultipartHeapBounded(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"part_size": "5MiB", "limits": obj{"part_concurrency": 2}}))
	const size = 100 << 20
	meta, _ := testBundle(2, 0)
	meta.PayloadLength = size
	w := heapwatch.Start()
	res := ad.Deliver(t.Context(), meta, newPatternReader(2, size))
	_, p := w.Stop()
	if res.Status != plugins.OK {
		t.Fatal(res)
	}
	// Three 5 MiB buffers (two parts in flight, one being filled), and
	// what the SDK and garbage not yet collected add.
	t.Logf("peak live heap above the start while delivering 100 MiB: %.1f MiB", float64(p)/(1<<20))
	if p > 40<<20 {
		t.Errorf("the heap grew by %d MiB delivering a 100 MiB payload in 5 MiB parts", p>>20)
	}
	if sum, n := objectSum(t, srv, expectedKey(t, meta)); n != size || sum != sumOf(2, size) {
		t.Fatal("the object's bytes differ from the payload")
	}
}

// killAfter reads r and kills the server once it has yielded n bytes.
type killAfter struct {
	r    io.Reader
	n    int64
	srv  *s3test.Server
	done bool
}

func (k *killAfter) Read(p []byte) (int, error) {
	m, err := k.r.Read(p)
	k.n -= int64(m)
	if k.n <= 0 && !k.done {
		k.done = true
		k.srv.Kill()
	}
	return m, err
}

// TestServerDown: with the server down, Check fails and deliveries answer
// Retry; once it is up the adapter delivers without a restart. A server
// that dies in the middle of a multipart upload leaves no object behind
// (the delivery answers Retry), and once it is back the bundle is
// delivered whole, and the upload that was cut off is cleaned up.
func TestServerDown(t *testing.T) {
	srv := newServer(t)
	srv.Start()
	srv.CreateBucket(bucket)
	srv.Kill()
	_, ad := startAdapter(t, serverConfig(srv, obj{"part_size": "5MiB", "connect_timeout": "1s", "max_attempts": 2}))

	if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("Check with the server down = %v, want ErrUnreachable saying it cannot reach it", err)
	}
	small, payload := testBundle(1, 1000)
	if res := ad.Deliver(t.Context(), small, bytes.NewReader(payload)); res.Status != plugins.Retry {
		t.Fatalf("Deliver with the server down = %v, want Retry", res)
	}
	large, _ := testBundle(2, 0)
	large.PayloadLength = 40 << 20
	if res := ad.Deliver(t.Context(), large, newPatternReader(2, large.PayloadLength)); res.Status != plugins.Retry {
		t.Fatalf("multipart Deliver with the server down = %v, want Retry", res)
	}

	srv.Start()
	eventually(t, 10*time.Second, "Check passes once the server is up", func() error { return ad.Check(t.Context()) })
	if res := ad.Deliver(t.Context(), small, bytes.NewReader(payload)); res.Status != plugins.OK {
		t.Fatalf("Deliver with the server up = %v", res)
	}

	// The server dies 12 MiB into a 40 MiB upload.
	key := expectedKey(t, large)
	res := ad.Deliver(t.Context(), large, &killAfter{r: newPatternReader(2, large.PayloadLength), n: 12 << 20, srv: srv})
	if res.Status != plugins.Retry {
		t.Fatalf("Deliver cut off by the server's death = %v, want Retry", res)
	}
	t.Logf("cut off: %v", res)
	if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) {
		t.Fatalf("Check with the server killed = %v", err)
	}
	srv.Start()
	eventually(t, 10*time.Second, "Check passes once the server is back", func() error { return ad.Check(t.Context()) })
	if _, ok := srv.Get(bucket, key); ok {
		t.Fatal("half an object is visible after the upload was cut off")
	}
	left := srv.Uploads(bucket)
	t.Logf("incomplete uploads after the cut: %d", len(left))
	if res := ad.Deliver(t.Context(), large, newPatternReader(2, large.PayloadLength)); res.Status != plugins.OK {
		t.Fatalf("redelivery with the server back = %v", res)
	}
	if sum, n := objectSum(t, srv, key); n != large.PayloadLength || sum != sumOf(2, large.PayloadLength) {
		t.Fatal("the object's bytes differ from the payload")
	}
	if u := srv.Uploads(bucket); len(u) != 0 {
		t.Errorf("incomplete uploads left after a complete delivery: %q", u)
	}
	if keys := srv.Keys(bucket, ""); len(keys) != 2 {
		t.Errorf("bucket holds %q, want two objects", keys)
	}
}

// TestDeliverRefusals: what no retry can fix is rejected with a reason,
// before anything is written; a missing bucket also makes Check fail.
func TestDeliverRefusals(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"inbound": obj{}}))
	nosuch := inProcess(t, serverConfig(srv, obj{"bucket": "no-such-bucket"}))

	if err := nosuch.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) || !strings.Contains(err.Error(), `"no-such-bucket" does not exist`) {
		t.Errorf("Check of a missing bucket = %v", err)
	}
	for _, size := range []int{10, 20 << 20} {
		meta, _ := testBundle(3, 0)
		meta.PayloadLength = int64(size)
		res := nosuch.Deliver(t.Context(), meta, newPatternReader(3, int64(size)))
		if res.Status != plugins.Reject || !strings.Contains(res.Reason, `bucket "no-such-bucket" does not exist`) {
			t.Errorf("%d bytes to a missing bucket: %v, want Reject naming the bucket", size, res)
		}
		t.Logf("missing bucket, %d bytes: %v", size, res)
	}

	tests := []struct {
		name   string
		meta   func(*plugins.Meta)
		reason string
	}{
		{"dot-dot segment", func(m *plugins.Meta) { m.Options = map[string]string{"key": "a/../b"} }, `".." segment`},
		{"empty segment", func(m *plugins.Meta) { m.Options = map[string]string{"key": "a//b"} }, "empty segment"},
		{"leading slash", func(m *plugins.Meta) { m.Options = map[string]string{"key": "/a"} }, "empty segment"},
		{"key too long", func(m *plugins.Meta) { m.Options = map[string]string{"key": strings.Repeat("k", 1025)} }, "at most 1024"},
		{"into the inbox", func(m *plugins.Meta) { m.Options = map[string]string{"key": "inbox/nodeC/x"} }, "inbound.prefix"},
		{"into the rejected prefix", func(m *plugins.Meta) { m.Options = map[string]string{"key": "rejected/x"} }, "inbound.rejected_prefix"},
		{"content type", func(m *plugins.Meta) { m.Options = map[string]string{"content_type": "text/\u00e9"} }, "content_type"},
		{"no bundle ID", func(m *plugins.Meta) { m.BundleID = "" }, "no ID"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			meta, payload := testBundle(10+i, 10)
			tc.meta(&meta)
			res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
			if res.Status != plugins.Reject || !strings.Contains(res.Reason, tc.reason) {
				t.Fatalf("Deliver = %v, want Reject with %q", res, tc.reason)
			}
		})
	}
	if keys := srv.Keys(bucket, ""); len(keys) != 0 {
		t.Errorf("refused deliveries left %q", keys)
	}
}

// TestWrongCredentials: a wrong secret is an operator's problem, not the
// bundle's: Check fails saying access is denied, and deliveries answer
// Retry, not Reject.
func TestWrongCredentials(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"credentials": obj{"access_key_id": s3test.AccessKey, "secret_access_key": "wrong"}}))
	if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) || !strings.Contains(err.Error(), "denied") {
		t.Errorf("Check with a wrong secret = %v", err)
	}
	meta, payload := testBundle(1, 10)
	if res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.Retry {
		t.Errorf("Deliver with a wrong secret = %v, want Retry", res)
	} else {
		t.Logf("wrong secret: %v", res)
	}
}

// TestDeliverPayloadMustArriveWhole: a payload that breaks off or runs
// long commits nothing, in one request or in parts.
func TestDeliverPayloadMustArriveWhole(t *testing.T) {
	srv := startServer(t, bucket)
	ad := inProcess(t, serverConfig(srv, obj{"part_size": "5MiB", "multipart_threshold": "1MiB"}))
	for _, size := range []int64{1000, 12 << 20} {
		meta, _ := testBundle(int(size), 0)
		meta.PayloadLength = size
		short := io.MultiReader(io.LimitReader(newPatternReader(1, size), size-1), errReader{io.ErrUnexpectedEOF})
		if res := ad.Deliver(t.Context(), meta, short); res.Status != plugins.Retry || !strings.Contains(res.Reason, "did not arrive whole") {
			t.Errorf("%d bytes, broken off: %v, want Retry", size, res)
		}
		ended := io.LimitReader(newPatternReader(1, size), size/2)
		if res := ad.Deliver(t.Context(), meta, ended); res.Status != plugins.Retry {
			t.Errorf("%d bytes, ended half way: %v, want Retry", size, res)
		}
		long := newPatternReader(1, size+1)
		if res := ad.Deliver(t.Context(), meta, long); res.Status != plugins.Retry || !strings.Contains(res.Reason, "longer") {
			t.Errorf("%d bytes, one too many: %v, want Retry", size, res)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancelled := &cancelAfter{r: newPatternReader(1, size), n: size / 2, cancel: cancel}
		if res := ad.Deliver(ctx, meta, cancelled); res.Status != plugins.Retry {
			t.Errorf("%d bytes, cancelled half way: %v, want Retry", size, res)
		}
	}
	if keys := srv.Keys(bucket, ""); len(keys) != 0 {
		t.Errorf("broken deliveries left objects: %q", keys)
	}
	if u := srv.Uploads(bucket); len(u) != 0 {
		t.Errorf("broken deliveries left incomplete uploads: %q", u)
	}
}

// cancelAfter reads r and cancels a context once it has yielded n bytes.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	m, err := c.r.Read(p)
	if c.n -= int64(m); c.n <= 0 {
		c.cancel()
	}
	return m, err
}

// TestKeyFor: the default key template is filled as the node fills route
// options, and a bundle without a clock keeps one key.
func TestKeyFor(t *testing.T) {
	ad := s3.New(nil)
	defer ad.Close()
	if err := ad.Configure(t.Context(), []byte(`{"bucket": "bkt", "credentials": {"access_key_id": "k", "secret_access_key": "s"},
		"key": "x/{src_node}/{dst_node}/{service}/{date}/{seq}/{bundle_key}"}`)); err != nil {
		t.Fatal(err)
	}
	meta, _ := testBundle(2, 0)
	key, err := ad.KeyFor(meta)
	want := "x/mule2/cloud/files.app2/" + meta.Created().UTC().Format("2006-01-02") + "/2/" + sdk.BundleKey(meta.BundleID)
	if err != nil || key != want {
		t.Errorf("KeyFor = %q, %v; want %q", key, err, want)
	}
	meta.CreationTime, meta.Destination, meta.Source = 0, "dtn://cloud/", "dtn:none"
	key, err = ad.KeyFor(meta)
	want = "x/none/cloud/none/undated/2/" + sdk.BundleKey(meta.BundleID)
	if err != nil || key != want {
		t.Errorf("KeyFor without a clock = %q, %v; want %q", key, err, want)
	}
}
