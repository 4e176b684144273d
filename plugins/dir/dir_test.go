package dir_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/dir"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/internal/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m, nil) }

// startDir runs the dir adapter in its own process, as the node does.
func startDir(t testing.TB, config string, opts host.Options) (*host.Manager, plugins.Adapter) {
	t.Helper()
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	}
	m, err := host.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Start(t.Context(), host.Spec{Name: "files", Builtin: "dir", Config: json.RawMessage(config)}); err != nil {
		t.Fatal(err)
	}
	ad, err := m.Adapter("files")
	if err != nil {
		t.Fatal(err)
	}
	return m, ad
}

// bundle i's metadata and payload; sizes cover the empty payload and the
// edges of the 64 KiB chunk.
func testBundle(i int) (plugins.Meta, []byte) {
	sizes := []int{0, 1, plugins.ChunkSize - 1, plugins.ChunkSize, plugins.ChunkSize + 1, 3 * plugins.ChunkSize}
	size := (i * 7919) % 3000
	if i < len(sizes) {
		size = sizes[i]
	}
	payload := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(i), 42))
	for j := range payload {
		payload[j] = byte(r.Uint32())
	}
	return plugins.Meta{
		BundleID:      fmt.Sprintf("dtn://mule%d/files-%d-%d", i%7, 780000000+i, i),
		Source:        fmt.Sprintf("dtn://mule%d/files", i%7),
		Destination:   "dtn://cloud/files",
		ReportTo:      "dtn:none",
		CreationTime:  uint64(780000000000 + i),
		Sequence:      uint64(i),
		Lifetime:      24 * time.Hour,
		PayloadLength: int64(len(payload)),
		HopCount:      2,
		HopLimit:      30,
		Route:         "files",
	}, payload
}

// checkOut verifies that out holds exactly bundles [0, n), each once, with
// the right bytes and metadata, and nothing else.
func checkOut(t *testing.T, out string, n int) {
	t.Helper()
	want := map[string]bool{}
	for i := range n {
		meta, payload := testBundle(i)
		name := dir.DeliveryName(meta.BundleID, nil)
		want[name] = true
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("bundle %d: %v", i, err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("bundle %d: %d bytes on disk differ from the %d delivered", i, len(got), len(payload))
		}
		raw, err := os.ReadFile(filepath.Join(out, dir.SidecarName(name)))
		if err != nil {
			t.Fatalf("bundle %d metadata: %v", i, err)
		}
		var side struct {
			BundleID      string `json:"bundle_id"`
			PayloadLength int64  `json:"payload_length"`
			Created       string `json:"created"`
		}
		if err := json.Unmarshal(raw, &side); err != nil || side.BundleID != meta.BundleID ||
			side.PayloadLength != meta.PayloadLength || side.Created == "" {
			t.Fatalf("bundle %d metadata = %s (%v)", i, raw, err)
		}
	}
	var extra []string
	err := filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		if strings.HasPrefix(rel, ".meta/") && want[strings.TrimSuffix(strings.TrimPrefix(rel, ".meta/"), ".json")] {
			return nil
		}
		if !want[rel] {
			extra = append(extra, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(extra) > 0 {
		t.Fatalf("out holds %d unexpected files, e.g. %q", len(extra), extra[:min(5, len(extra))])
	}
}

// deliverAll delivers bundles [0, n) with workers in parallel, retrying
// each until OK as a delivery queue would, and returns how many attempts
// were answered Retry.
func deliverAll(t *testing.T, ad plugins.Adapter, n, workers int, delivered func()) int64 {
	t.Helper()
	var retries atomic.Int64
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				meta, payload := testBundle(i)
				for attempt := 0; ; attempt++ {
					res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
					if res.Status == plugins.OK {
						break
					}
					if res.Status == plugins.Reject || attempt > 200 {
						errs <- fmt.Errorf("bundle %d: %v", i, res)
						return
					}
					retries.Add(1)
					// The queue's backoff: what the adapter asked for, or a
					// short pause while it restarts.
					time.Sleep(max(res.RetryAfter, 10*time.Millisecond))
				}
				if delivered != nil {
					delivered()
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

func TestDeliverManyThroughPlugin(t *testing.T) {
	out := t.TempDir()
	_, ad := startDir(t, fmt.Sprintf(`{"out": %q}`, out), host.Options{})
	const n = 10000
	if retries := deliverAll(t, ad, n, 16, nil); retries != 0 {
		t.Errorf("%d deliveries were answered Retry with the adapter healthy", retries)
	}
	checkOut(t, out, n)
}

func TestDeliverEdgeCases(t *testing.T) {
	out := t.TempDir()
	_, ad := startDir(t, fmt.Sprintf(`{"out": %q}`, out), host.Options{})
	tests := []struct {
		name       string
		meta       plugins.Meta
		payload    io.Reader
		wantStatus plugins.Status
		wantFile   string // relative to out; "" for none
		wantBytes  string
	}{
		{
			name:       "route names the file",
			meta:       plugins.Meta{BundleID: "b1", PayloadLength: 5, Options: map[string]string{"name": "mule1/report.txt"}},
			payload:    strings.NewReader("hello"),
			wantStatus: plugins.OK, wantFile: "mule1/report.txt", wantBytes: "hello",
		},
		{
			name:       "a hostile name stays inside out",
			meta:       plugins.Meta{BundleID: "b2", PayloadLength: 3, Options: map[string]string{"name": "../../escape"}},
			payload:    strings.NewReader("abc"),
			wantStatus: plugins.OK, wantFile: "%2E./%2E./escape", wantBytes: "abc",
		},
		{
			name:       "a payload shorter than announced is not committed",
			meta:       plugins.Meta{BundleID: "short", PayloadLength: 10},
			payload:    strings.NewReader("abc"),
			wantStatus: plugins.Retry,
		},
		{
			name:       "a payload reader that fails is not committed",
			meta:       plugins.Meta{BundleID: "broken", PayloadLength: 3 * plugins.ChunkSize},
			payload:    io.MultiReader(bytes.NewReader(make([]byte, plugins.ChunkSize+7)), errReader{}),
			wantStatus: plugins.Retry,
		},
		{
			name:       "a bundle without an ID is rejected",
			meta:       plugins.Meta{PayloadLength: 1},
			payload:    strings.NewReader("x"),
			wantStatus: plugins.Reject,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := ad.Deliver(t.Context(), tt.meta, tt.payload)
			if res.Status != tt.wantStatus {
				t.Fatalf("Deliver = %v, want %v", res, tt.wantStatus)
			}
			if tt.wantFile != "" {
				got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(tt.wantFile)))
				if err != nil || string(got) != tt.wantBytes {
					t.Fatalf("file %s = %q, %v; want %q", tt.wantFile, got, err, tt.wantBytes)
				}
			} else if _, err := os.Stat(filepath.Join(out, dir.DeliveryName(tt.meta.BundleID, tt.meta.Options))); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a file was committed: %v", err)
			}
		})
	}
	// Nothing half-written is left behind by the failed deliveries. The
	// node gives up on a broken delivery at once; the adapter notices the
	// broken stream and cleans up a moment later, so poll for that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var temps []string
		_ = filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), ".mulegate-tmp-") {
				temps = append(temps, p)
			}
			return nil
		})
		if len(temps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("temporary files left: %q", temps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("store read error") }

// TestDeliverSurvivesAdapterKill SIGKILLs the adapter in the middle of a
// delivery run; the delivery loop retries through the restart, and every
// bundle lands once with its bytes. Then everything is delivered again,
// which overwrites in place.
func TestDeliverSurvivesAdapterKill(t *testing.T) {
	out := t.TempDir()
	m, ad := startDir(t, fmt.Sprintf(`{"out": %q}`, out), host.Options{
		Backoff: host.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
	})
	const n = 1500
	first, _ := m.Status("files")
	var count atomic.Int64
	killed := make(chan error, 1)
	retries := deliverAll(t, ad, n, 8, func() {
		if count.Add(1) == n/3 {
			killed <- syscall.Kill(first.PID, syscall.SIGKILL)
		}
	})
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	st, _ := m.Status("files")
	if st.Restarts < 1 || st.PID == first.PID || !st.Running {
		t.Fatalf("status after the kill = %+v, want a restarted adapter", st)
	}
	if retries == 0 {
		t.Error("no delivery was interrupted by the kill; the test did not test anything")
	}
	checkOut(t, out, n)

	if retries := deliverAll(t, ad, n, 8, nil); retries != 0 {
		t.Errorf("redelivery: %d retries", retries)
	}
	checkOut(t, out, n)
}

func TestInbound(t *testing.T) {
	inbox := t.TempDir()
	_, ad := startDir(t, fmt.Sprintf(`{"inbox": %q, "default_destination": "dtn://cloud/inbox", "min_age": "0s", "nack_delay": "0s"}`, inbox), host.Options{})
	files := map[string]string{ // path in inbox → destination ("" for ignored)
		"a.txt":                 "dtn://cloud/inbox",
		"dtn/mule1/chat/hi.txt": "dtn://mule1/chat",
		"ipn/5.1/big.bin":       "ipn:5.1",
		".partial":              "",
		"dtn/mule1/.tmp/x":      "",
		"nowhere/x":             "",
	}
	content := func(p string) []byte {
		if strings.HasSuffix(p, "big.bin") {
			return bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 000 bytes: several chunks
		}
		return []byte("content of " + p)
	}
	for p := range files {
		write(t, filepath.Join(inbox, p), content(p))
	}

	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10})
	if len(got) != 3 {
		t.Fatalf("fetched %d messages, want 3: %v", len(got), keys(got))
	}
	for p, dest := range files {
		in, ok := got[p]
		if dest == "" {
			if ok {
				t.Errorf("%s was fetched; it should be ignored", p)
			}
			continue
		}
		if !ok {
			t.Fatalf("%s was not fetched", p)
		}
		if in.Destination != dest || !bytes.Equal(in.data, content(p)) || in.Headers["filename"] != filepath.Base(p) {
			t.Errorf("%s: got destination %q, %d bytes, headers %v", p, in.Destination, len(in.data), in.Headers)
		}
	}
	if again := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10}); len(again) != 0 {
		t.Errorf("unacknowledged messages offered twice: %v", keys(again))
	}
	for p := range got {
		if !exists(t, filepath.Join(inbox, p)) {
			t.Fatalf("%s was removed before its Ack", p)
		}
	}
	for p, in := range got {
		if err := ad.Ack(t.Context(), in.Receipt); err != nil {
			t.Fatal(err)
		}
		if exists(t, filepath.Join(inbox, p)) {
			t.Errorf("%s is still there after its Ack", p)
		}
		if err := ad.Ack(t.Context(), in.Receipt); err != nil {
			t.Errorf("second Ack of %s: %v", p, err)
		}
	}
	for p, dest := range files {
		if dest == "" && !exists(t, filepath.Join(inbox, p)) {
			t.Errorf("ignored file %s was removed", p)
		}
	}
}

func TestInboundNackAndLimits(t *testing.T) {
	inbox := t.TempDir()
	_, ad := startDir(t, fmt.Sprintf(`{"inbox": %q, "default_destination": "dtn://cloud/inbox", "min_age": "0s", "nack_delay": "0s"}`, inbox), host.Options{})
	for i := range 5 {
		write(t, filepath.Join(inbox, fmt.Sprintf("m%d", i)), bytes.Repeat([]byte{'x'}, 100))
	}
	if got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 2}); len(got) != 2 {
		t.Errorf("MaxMessages 2 gave %d", len(got))
	}
	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, MaxBytes: 250})
	if len(got) != 2 {
		t.Errorf("MaxBytes 250 with 100-byte messages gave %d", len(got))
	}
	for p, in := range got {
		if err := ad.Nack(t.Context(), in.Receipt, "store full"); err != nil {
			t.Fatal(err)
		}
		if !exists(t, filepath.Join(inbox, p)) {
			t.Errorf("%s removed by Nack", p)
		}
	}
	// The Nacked two and the fifth, never offered, are offered now.
	if again := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10}); len(again) != 3 {
		t.Errorf("after Nack: %d offered, want 3: %v", len(again), keys(again))
	}
	if err := ad.Ack(t.Context(), "not a receipt"); !errors.Is(err, plugins.ErrInvalid) {
		t.Errorf("Ack(garbage) = %v, want ErrInvalid", err)
	}
}

// A file the node refuses for good moves to inbox/rejected/, keeping its
// path, with the reason beside it, and is never offered again; an earlier
// rejected file of the same name is kept; a file replaced since the fetch
// stays (it is a new message); a file alone over the fetch's byte cap is
// left alone and does not hold back the files behind it.
func TestInboundReject(t *testing.T) {
	inbox := t.TempDir()
	_, ad := startDir(t, fmt.Sprintf(`{"inbox": %q, "default_destination": "dtn://cloud/inbox", "min_age": "0s", "nack_delay": "0s"}`, inbox), host.Options{})
	rej, ok := ad.(plugins.Rejecter)
	if !ok {
		t.Fatalf("the host's adapter %T does not offer Reject", ad)
	}
	write(t, filepath.Join(inbox, "good.txt"), []byte("good"))
	write(t, filepath.Join(inbox, "bad.txt"), []byte("bad, again"))
	write(t, filepath.Join(inbox, "dtn/mule1/chat/bad.txt"), []byte("bad, nested"))
	write(t, filepath.Join(inbox, "replaced.txt"), []byte("first version"))
	// Rejected before, by hand or by an earlier run: kept as it is.
	write(t, filepath.Join(inbox, "rejected/bad.txt"), []byte("bad, first"))
	write(t, filepath.Join(inbox, "rejected/bad.txt.reason"), []byte("first reason"))

	got := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10})
	if len(got) != 4 {
		t.Fatalf("fetched %d messages, want 4 (nothing from rejected/): %v", len(got), keys(got))
	}
	write(t, filepath.Join(inbox, "replaced.txt"), []byte("second version, longer"))
	reasons := map[string]string{
		"bad.txt":                "destination refused: no such node",
		"dtn/mule1/chat/bad.txt": "lifetime 48h exceeds max_lifetime 24h",
		"replaced.txt":           "refused",
	}
	for p, reason := range reasons {
		if err := rej.Reject(t.Context(), got[p].Receipt, reason); err != nil {
			t.Fatalf("Reject %s: %v", p, err)
		}
	}
	if err := ad.Ack(t.Context(), got["good.txt"].Receipt); err != nil {
		t.Fatal(err)
	}

	files := []struct {
		path, content, reason string // reason "": no reason file
	}{
		{"rejected/bad.txt", "bad, first", "first reason"},
		{"rejected/bad.txt.1", "bad, again", reasons["bad.txt"]},
		{"rejected/dtn/mule1/chat/bad.txt", "bad, nested", reasons["dtn/mule1/chat/bad.txt"]},
		{"replaced.txt", "second version, longer", ""},
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(inbox, f.path))
		if err != nil || string(data) != f.content {
			t.Errorf("%s: %q, %v; want %q", f.path, data, err, f.content)
		}
		r, err := os.ReadFile(filepath.Join(inbox, f.path+".reason"))
		switch {
		case f.reason == "" && err == nil:
			t.Errorf("%s has a reason file: %q", f.path, r)
		case f.reason != "" && (err != nil || !strings.HasPrefix(string(r), f.reason)):
			t.Errorf("%s.reason: %q, %v; want it to start with %q", f.path, r, err, f.reason)
		}
	}
	for _, p := range []string{"bad.txt", "dtn/mule1/chat/bad.txt", "good.txt"} {
		if exists(t, filepath.Join(inbox, p)) {
			t.Errorf("%s is still in the inbox", p)
		}
	}
	// Only the replaced file comes back; rejected ones never do.
	again := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10})
	if len(again) != 1 || string(again["replaced.txt"].data) != "second version, longer" {
		t.Errorf("after Reject, offered %v; want only the replaced file", keys(again))
	}
	if err := rej.Reject(t.Context(), got["bad.txt"].Receipt, "again"); err != nil {
		t.Errorf("second Reject of a file already moved: %v", err)
	}
	if err := rej.Reject(t.Context(), "not a receipt", "x"); !errors.Is(err, plugins.ErrInvalid) {
		t.Errorf("Reject(garbage) = %v, want ErrInvalid", err)
	}

	// Oversized, and older than the small one: the small one is offered.
	if err := ad.Nack(t.Context(), again["replaced.txt"].Receipt, "later"); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(inbox, "huge.bin"), bytes.Repeat([]byte("x"), 1000))
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(inbox, "huge.bin"), old, old); err != nil {
		t.Fatal(err)
	}
	small := fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 10, MaxBytes: 100})
	if _, ok := small["replaced.txt"]; !ok || len(small) != 1 {
		t.Errorf("with a 100-byte cap behind a 1000-byte file, offered %v; want replaced.txt", keys(small))
	}
	if !exists(t, filepath.Join(inbox, "huge.bin")) {
		t.Error("the oversized file was removed")
	}
}

func TestInboundLongPoll(t *testing.T) {
	inbox := t.TempDir()
	_, ad := startDir(t, fmt.Sprintf(`{"inbox": %q, "min_age": "0s"}`, inbox), host.Options{})
	done := make(chan map[string]inbound, 1)
	go func() { done <- fetchAll(t, ad, plugins.FetchRequest{MaxMessages: 1, Wait: 20 * time.Second}) }()
	// Written the careful way: hidden while incomplete, then renamed.
	dst := filepath.Join(inbox, "dtn", "mule2", "chat", "late.txt")
	tmp := filepath.Join(inbox, "dtn", "mule2", "chat", ".late.txt")
	write(t, tmp, []byte("arrived late"))
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	got := <-done
	in, ok := got["dtn/mule2/chat/late.txt"]
	if !ok || string(in.data) != "arrived late" || in.Destination != "dtn://mule2/chat" {
		t.Fatalf("long poll got %v", got)
	}
}

type inbound struct {
	plugins.Inbound
	data []byte
}

func fetchAll(t *testing.T, ad plugins.Adapter, req plugins.FetchRequest) map[string]inbound {
	t.Helper()
	got := map[string]inbound{}
	err := ad.Fetch(t.Context(), req, func(in plugins.Inbound) error {
		data, err := io.ReadAll(in.Payload)
		if err != nil {
			return err
		}
		if int64(len(data)) != in.PayloadLength {
			return fmt.Errorf("%s: %d bytes, announced %d", in.Headers["path"], len(data), in.PayloadLength)
		}
		got[in.Headers["path"]] = inbound{Inbound: in, data: data}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

func exists(t *testing.T, p string) bool {
	_, err := os.Stat(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func keys(m map[string]inbound) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// BenchmarkDeliver compares delivering to the dir adapter through the
// plugin boundary (gRPC over a Unix socket with mutual TLS, in another
// process) with calling the same adapter in process, for 1 KiB and 10 MiB
// payloads, one delivery at a time and with 64 in flight (the node's queue
// runs up to the adapter's max_in_flight deliveries at once; the example
// configurations set 64). Each "plugin" result reports its rate as a
// percentage of the "in-process" run just before it (%-of-in-process):
// the two runs are seconds apart, so the ratio holds even when other work
// on the machine makes the absolute rates drift. (With -count N, the N
// runs of a case come one after the other, so only the first "plugin" run
// follows an "in-process" one; compare medians then.) Both fsync every
// delivery; set MULEGATE_BENCH_DIR to a tmpfs to see the boundary's own
// cost without the disk's.
//
//	go test -run '^$' -bench 'Deliver$' -benchtime 3s -count 3 ./plugins/dir
func BenchmarkDeliver(b *testing.B) {
	for _, size := range []int{1 << 10, 10 << 20} {
		payload := bytes.Repeat([]byte("mulegate"), size/8)
		for _, conc := range []int{1, 64} {
			rates := map[string]float64{}
			for _, mode := range []string{"in-process", "plugin"} {
				b.Run(fmt.Sprintf("%s/inflight=%d/%s", sizeName(size), conc, mode), func(b *testing.B) {
					out, err := os.MkdirTemp(os.Getenv("MULEGATE_BENCH_DIR"), "bench")
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = os.RemoveAll(out) })
					config := fmt.Sprintf(`{"out": %q, "sidecar": false}`, out)
					var ad plugins.Adapter
					if mode == "plugin" {
						_, ad = startDir(b, config, host.Options{})
					} else {
						d := dir.New(nil)
						if err := d.Configure(b.Context(), json.RawMessage(config)); err != nil {
							b.Fatal(err)
						}
						ad = d
					}
					rate := deliverConcurrently(b, ad, payload, conc)
					rates[mode] = rate
					if in := rates["in-process"]; mode == "plugin" && in > 0 {
						b.ReportMetric(100*rate/in, "%-of-in-process")
					}
				})
			}
		}
	}
}

// deliverConcurrently delivers b.N copies of payload to ad, conc at a time,
// reports bundles/s, and returns it. Each of the conc workers delivers
// under one name over and over, so that the directory does not grow with
// b.N; a redelivery replaces the file, as it would in service.
func deliverConcurrently(b *testing.B, ad plugins.Adapter, payload []byte, conc int) float64 {
	b.SetBytes(int64(len(payload)))
	var next atomic.Int64
	var failed atomic.Pointer[plugins.Result]
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N || failed.Load() != nil {
					return
				}
				// Concurrent deliveries never share a name: two writers of
				// one file would measure the rename race, not delivery.
				meta := plugins.Meta{BundleID: fmt.Sprintf("dtn://m/b-%d-0", w), PayloadLength: int64(len(payload))}
				if res := ad.Deliver(b.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.OK {
					failed.Store(&res)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if res := failed.Load(); res != nil {
		b.Fatal(*res)
	}
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "bundles/s")
	return rate
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
