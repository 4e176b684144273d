package gateway

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/plugins"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// withDirAdapter gives a test node the dir adapter: bundles for
// dtn://NODE/outbox/** become files in out, files in inbox become bundles.
func withDirAdapter(t testing.TB, c *config.Config) (out, inbox string) {
	out, inbox = filepath.Join(c.DataDir, "out"), filepath.Join(c.DataDir, "inbox")
	c.Adapters = []config.Adapter{{
		Name: "files", Builtin: "dir", MaxInFlight: 8, Fetch: true,
		Config: map[string]any{"out": out, "inbox": inbox, "min_age": "0s"},
	}}
	c.Routes = []config.Route{{Match: c.Node + "outbox/**", Adapter: "files", Options: map[string]string{"name": "{src_node}-{bundle_key}"}}}
	c.AdapterCheckInterval = 200 * time.Millisecond
	return out, inbox
}

func TestDirAdapterThroughTheNode(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "gw")
	out, inbox := withDirAdapter(t, cfg)
	self, _ := os.Executable()
	n, err := New(Options{Config: cfg, AdapterExecutable: self, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })

	const count = 200
	var ids []bundle.ID
	for i := 0; i < count; i++ {
		body := []byte(fmt.Sprintf("report %d", i))
		id, err := n.Send(ctx, SendRequest{Destination: bundle.MustParseEID("dtn://gw/outbox/reports"), Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waitFor(t, "every bundle to be written by the adapter", func() bool { return countFiles(out) >= count })
	seen := map[string]bool{}
	for _, id := range ids {
		data, err := os.ReadFile(filepath.Join(out, "gw-"+id.Key()))
		if err != nil {
			t.Fatal(err)
		}
		seen[string(data)] = true
	}
	if got := countFiles(out); got != count || len(seen) != count {
		t.Fatalf("%d files, %d distinct payloads in out; want %d", got, len(seen), count)
	}
	// Delivered bundles are deleted from the store.
	waitFor(t, "delivered bundles to leave the store", func() bool { return n.store.Stats().Bundles == 0 })

	// Inbound: a file dropped in the inbox for dtn://gw/app becomes a
	// bundle there, and the file goes only once the bundle is stored.
	dir := filepath.Join(inbox, "dtn", "gw", "app")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, ".hello.tmp"), []byte("hello from the cloud"), 0o644)
	os.Rename(filepath.Join(dir, ".hello.tmp"), filepath.Join(dir, "hello.txt"))
	app := bundle.MustParseEID("dtn://gw/app")
	waitFor(t, "the inbound file to arrive as a bundle", func() bool {
		got, _ := n.Deliveries(ctx, app, 10)
		return len(got) == 1
	})
	got, _ := n.Deliveries(ctx, app, 10)
	p, _ := n.OpenPayload(ctx, got[0].ID)
	var buf bytes.Buffer
	buf.ReadFrom(p)
	p.Close()
	if buf.String() != "hello from the cloud" {
		t.Fatalf("payload %q", buf.String())
	}
	waitFor(t, "the inbox file to be removed after storing", func() bool {
		_, err := os.Stat(filepath.Join(dir, "hello.txt"))
		return os.IsNotExist(err)
	})
	st := n.Adapters()
	if len(st) != 1 || !st[0].Running || !st[0].Reachable || st[0].Queue.Pending != 0 {
		t.Fatalf("adapter status %+v", st)
	}
}

func countFiles(dir string) int {
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() {
			n++
		}
	}
	return n
}

// startGateway starts a node whose built-in adapters are served by this
// test binary (see TestMain), with a logger at level (and, if obs is not
// nil, into obs as well); it is closed when the test ends.
func startGateway(t *testing.T, cfg *config.Config, level zapcore.Level, obs zapcore.Core) *Node {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	core := zaptest.NewLogger(t, zaptest.Level(level)).Core()
	if obs != nil {
		core = zapcore.NewTee(core, obs)
	}
	n, err := New(Options{Config: cfg, AdapterExecutable: self, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// sendOutbox sends count bundles of size bytes each to dtn://NODE/outbox/x,
// from workers goroutines at once, and returns their IDs in order.
func sendOutbox(t *testing.T, n *Node, count, size, workers int, flags bundle.BundleFlags) []bundle.ID {
	t.Helper()
	dst, err := n.ID().Join("outbox/x")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]bundle.ID, count)
	errs := make(chan error, workers)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				body := payloadOf(i, size)
				id, err := n.Send(context.Background(), SendRequest{Destination: dst, Lifetime: time.Hour, Flags: flags, Length: uint64(len(body))}, bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// payloadOf is bundle i's payload: size bytes (at least enough to name i),
// different for every i.
func payloadOf(i, size int) []byte {
	b := []byte(fmt.Sprintf("bundle %d;", i))
	for len(b) < size {
		b = append(b, byte('a'+i%26))
	}
	return b
}

// progress returns bundle id's progress towards the adapter "files", as the
// API shows it.
func progress(t *testing.T, n *Node, id bundle.ID) (ProgressInfo, bool) {
	t.Helper()
	bi, err := n.Bundle(context.Background(), id)
	if err != nil {
		return ProgressInfo{}, false
	}
	for _, p := range bi.Progress {
		if p.Destination == "adapter:files" {
			return p, true
		}
	}
	return ProgressInfo{}, false
}

// gaugeWith sums the values (gauge or counter) of the series of metric
// name whose labels include all of labels.
func gaugeWith(n *Node, name string, labels map[string]string) float64 {
	families, _ := n.metrics.reg.Gather()
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			total += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return total
}

// hasSeries reports whether metric name has a series with these labels.
func hasSeries(n *Node, name string, labels map[string]string) bool {
	families, _ := n.metrics.reg.Gather()
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := 0
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
					match++
				}
			}
			if match == len(labels) {
				return true
			}
		}
	}
	return false
}

// TestAdapterOutageFlushesQueue: the service behind an adapter goes down
// in the middle of a run and comes back. While it is down, bundles are not
// attempted (an attempt that was in flight as it went counts once, with no
// backoff); once it is back the queue flushes at once, including bundles
// that were backing off for ten minutes before the outage. Either the
// host's Check notices the outage, or (its Check interval an hour) only the
// deliveries that fail do: the queue then asks Check itself.
func TestAdapterOutageFlushesQueue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check time.Duration // the host's Check interval
	}{
		{"host notices", 100 * time.Millisecond},
		{"only deliveries notice", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "gw")
			sc, out, _ := withScripted(t, cfg, "scripted")
			cfg.AdapterCheckInterval = tc.check
			// A backoff waited out would outlast the test many times over.
			cfg.Routing.RetryMax = 10 * time.Minute
			// The service is busy: each bundle's first delivery is told to
			// come back in ten minutes.
			sc.set(scriptControl{RetryTimes: 1, RetryAfterMs: 600_000})
			n := startGateway(t, cfg, zapcore.InfoLevel, nil)
			busy := sendOutbox(t, n, 5, 100, 1, 0)
			waitFor(t, "every busy bundle to be told to come back in ten minutes", func() bool {
				for _, id := range busy {
					p, ok := progress(t, n, id)
					if !ok || p.State != "pending" || p.Attempts != 1 || time.Until(p.NextAttempt) < 5*time.Minute {
						return false
					}
				}
				return true
			})

			// The service goes down.
			sc.set(scriptControl{Down: true})
			checks := sc.total("check")
			down := sendOutbox(t, n, 5, 100, 1, 0)
			// Five Checks later, by the host or the queue, the queue has had
			// every chance to misbehave.
			waitFor(t, "five Checks of the dead service", func() bool { return sc.total("check") >= checks+5 })
			attempts := sc.count("attempt")
			for _, id := range down {
				if a := attempts[id.String()]; a > 1 {
					t.Errorf("%s: %d attempts while the service was down; want at most 1 (the one that found it down)", id, a)
				}
				if p, _ := progress(t, n, id); p.State != "pending" || time.Until(p.NextAttempt) > time.Second {
					t.Errorf("%s: %s, next attempt in %v; want pending, due at once (no backoff for an outage)", id, p.State, time.Until(p.NextAttempt))
				}
			}
			for _, id := range busy {
				if a := attempts[id.String()]; a != 1 {
					t.Errorf("%s: %d attempts while backing off; want 1", id, a)
				}
			}

			// It comes back: everything goes at once, ten-minute backoff or
			// not.
			sc.set(scriptControl{})
			waitFor(t, "the queue to drain", func() bool { return countFiles(out) == len(busy)+len(down) })
			attempts = sc.count("attempt")
			for _, id := range busy {
				if a := attempts[id.String()]; a != 2 {
					t.Errorf("busy %s: %d attempts; want 2 (busy, then delivered)", id, a)
				}
			}
			for _, id := range down {
				if a := attempts[id.String()]; a < 1 || a > 2 {
					t.Errorf("%s: %d attempts; want 1 or 2", id, a)
				}
			}
			// The files are written before the node records each answer.
			waitFor(t, "the queue to record every delivery", func() bool {
				st := n.Adapters()[0]
				return st.Queue.Pending == 0 && st.Queue.InFlight == 0
			})
		})
	}
}

// TestAdapterQueueResumesAfterLateOutage: a delivery's "adapter down"
// answer is recorded after the host already restarted the adapter and its
// first Check said the service was reachable, the order in which a cached
// reachability flag would stay false for good. The queue holds until a
// Check after that answer succeeds, then delivers.
func TestAdapterQueueResumesAfterLateOutage(t *testing.T) {
	cfg := testConfig(t, "gw")
	_, out, _ := withScripted(t, cfg, "scripted")
	cfg.AdapterCheckInterval = 100 * time.Millisecond
	n := startGateway(t, cfg, zapcore.InfoLevel, nil)
	q := n.queues["files"]
	waitFor(t, "the adapter to be up", q.up)

	// The late answer, as deliver records it.
	q.noteOutage(time.Now(), fmt.Errorf("adapter %q is restarting: %w", "files", plugins.ErrUnavailable))
	if q.up() {
		t.Fatal("the queue delivers right after a delivery found the adapter down, before any Check")
	}
	ids := sendOutbox(t, n, 5, 100, 1, 0)
	waitFor(t, "the queue to resume and deliver", func() bool { return countFiles(out) == len(ids) })
}

// TestAdapterMetrics: the adapter's state, restarts, and the store's bytes
// by kind and by progress state are exported, and move.
func TestAdapterMetrics(t *testing.T) {
	cfg := testConfig(t, "gw")
	sc, out, _ := withScripted(t, cfg, "scripted")
	cfg.AdapterCheckInterval = 100 * time.Millisecond
	n := startGateway(t, cfg, zapcore.InfoLevel, nil)
	files := map[string]string{"adapter": "files"}
	state := func(s string) float64 {
		return gaugeWith(n, "mulegate_adapter_state", map[string]string{"adapter": "files", "state": s})
	}
	waitFor(t, "mulegate_adapter_up 1", func() bool { return gaugeWith(n, "mulegate_adapter_up", files) == 1 && state("up") == 1 })

	sc.set(scriptControl{Down: true})
	waitFor(t, "mulegate_adapter_up 0", func() bool {
		return gaugeWith(n, "mulegate_adapter_up", files) == 0 && state("unreachable") == 1 && state("up") == 0
	})
	const count, size = 3, 1000
	sendOutbox(t, n, count, size, 1, 0)
	pending := map[string]string{"destination": "adapter:files", "state": "pending"}
	for _, m := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"mulegate_queue_depth", pending, count},
		{"mulegate_queue_bytes", pending, count * size},
		{"mulegate_store_progress_bytes", map[string]string{"state": "pending"}, count * size},
		{"mulegate_store_bytes", map[string]string{"kind": "bundles"}, count * size},
		{"mulegate_store_bytes", map[string]string{"kind": "used"}, count * size},
		{"mulegate_store_bundles", map[string]string{"kind": "bundles"}, count},
	} {
		// Routing (which makes the queue's records) may finish just after
		// the send is acknowledged.
		waitFor(t, fmt.Sprintf("%s%v to reach %v with %d bundles of %d bytes queued", m.name, m.labels, m.min, count, size),
			func() bool { return gaugeWith(n, m.name, m.labels) >= m.min })
	}
	for _, kind := range []string{"partials", "reserved", "quota"} {
		if !hasSeries(n, "mulegate_store_bytes", map[string]string{"kind": kind}) {
			t.Errorf("no mulegate_store_bytes{kind=%q}", kind)
		}
	}

	sc.set(scriptControl{})
	waitFor(t, "the queue to drain", func() bool { return countFiles(out) == count })
	waitFor(t, "the queue's bytes to fall to 0", func() bool {
		return gaugeWith(n, "mulegate_queue_bytes", pending) == 0 && gaugeWith(n, "mulegate_store_bytes", map[string]string{"kind": "bundles"}) == 0
	})
	if v := gaugeWith(n, "mulegate_adapter_restarts_total", files); v != 0 {
		t.Errorf("mulegate_adapter_restarts_total = %v before any crash", v)
	}

	pid := n.Adapters()[0].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restart to be counted, and the adapter up again", func() bool {
		st := n.Adapters()[0]
		return gaugeWith(n, "mulegate_adapter_restarts_total", files) == 1 && st.Restarts == 1 && st.PID != pid &&
			gaugeWith(n, "mulegate_adapter_up", files) == 1
	})
}

// TestAdapterRejectsBundle: a bundle the adapter refuses for good stays in
// the failed state for adapter:files, visible with the reason through the
// inspection the API serves, and a "deleted" status report goes to its
// report-to endpoint because it asked for one.
func TestAdapterRejectsBundle(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "gw")
	sc, out, _ := withScripted(t, cfg, "scripted")
	sc.set(scriptControl{Reject: true})
	n := startGateway(t, cfg, zapcore.InfoLevel, nil)
	asked := sendOutbox(t, n, 1, 10, 1, bundle.FlagReportDeletion|bundle.FlagStatusTimeRequested)[0]
	quiet := sendOutbox(t, n, 1, 10, 1, 0)[0]

	for _, id := range []bundle.ID{asked, quiet} {
		waitFor(t, "the bundle to fail", func() bool {
			p, ok := progress(t, n, id)
			return ok && p.State == "failed"
		})
		p, _ := progress(t, n, id)
		if p.Attempts != 1 || !strings.Contains(p.LastError, "refuses this bundle") || !p.NextAttempt.IsZero() {
			t.Errorf("%s: %+v; want failed after 1 attempt, with the adapter's reason, no next attempt", id, p)
		}
	}
	failed, err := n.Bundles(ctx, BundleFilter{State: "failed"})
	if err != nil || len(failed) != 2 {
		t.Errorf("bundles in the failed state: %d, %v; want 2", len(failed), err)
	}
	if st := n.Adapters()[0]; st.Queue.Failed != 2 {
		t.Errorf("adapter queue %+v; want 2 failed", st.Queue)
	}

	// The report goes to the bundle's report-to, here the node itself.
	reports := func() map[bundle.ID]bundle.StatusReport {
		got := map[bundle.ID]bundle.StatusReport{}
		for _, r := range statusReports(n, n.ID()) {
			got[r.Subject] = r
		}
		return got
	}
	waitFor(t, "a deleted report", func() bool { _, ok := reports()[asked]; return ok })
	r := reports()[asked]
	if !r.Deleted.Asserted || r.Deleted.Time == 0 || r.Reason != bundle.ReasonTransmissionCanceled {
		t.Errorf("report %+v; want deleted, with its time, reason transmission canceled", r)
	}
	if _, ok := reports()[quiet]; ok {
		t.Errorf("a report about %s, which asked for none", quiet)
	}
	if countFiles(out) != 0 {
		t.Errorf("%d files delivered", countFiles(out))
	}
	// Failed is final: no more attempts.
	if a := sc.count("attempt"); a[asked.String()] != 1 || a[quiet.String()] != 1 {
		t.Errorf("attempts %v; want one each", a)
	}
}

// TestAdapterRetryBackoff: an adapter that answers Retry gets the bundle
// again after a jittered exponential backoff: each delay in [d/2, d] with
// d doubling from retry_min, capped at retry_max; then it is delivered.
func TestAdapterRetryBackoff(t *testing.T) {
	cfg := testConfig(t, "gw")
	sc, out, _ := withScripted(t, cfg, "scripted")
	cfg.Routing.RetryMin = 100 * time.Millisecond
	cfg.Routing.RetryMax = 400 * time.Millisecond
	const retries = 5
	sc.set(scriptControl{RetryTimes: retries})
	obs, logs := observer.New(zapcore.DebugLevel)
	n := startGateway(t, cfg, zapcore.InfoLevel, obs)
	id := sendOutbox(t, n, 1, 10, 1, 0)[0]
	waitFor(t, "the bundle to be delivered at last", func() bool { return countFiles(out) == 1 })

	var seen []observer.LoggedEntry
	for _, e := range logs.FilterMessage("delivery to be retried").All() {
		if e.ContextMap()["bundle"] == id.String() {
			seen = append(seen, e)
		}
	}
	if len(seen) != retries {
		t.Fatalf("%d retries recorded; want %d", len(seen), retries)
	}
	d := cfg.Routing.RetryMin
	for i, e := range seen {
		fields := e.ContextMap()
		attempts, delay := fields["attempts"].(int64), fields["delay"].(time.Duration)
		if attempts != int64(i+1) {
			t.Errorf("retry %d: attempts %d", i+1, attempts)
		}
		if delay < d/2 || delay > d || delay > cfg.Routing.RetryMax {
			t.Errorf("retry %d: delay %v; want within [%v, %v] (retry_max %v)", i+1, delay, d/2, d, cfg.Routing.RetryMax)
		}
		d = min(2*d, cfg.Routing.RetryMax)
	}
	if a := sc.count("attempt")[id.String()]; a != retries+1 {
		t.Errorf("%d attempts; want %d", a, retries+1)
	}
}

// TestAdapterKilledWhileDraining: the adapter process is SIGKILLed while
// the node's queue is draining. It is restarted, the queue drains, every
// bundle is delivered as exactly one file with its payload, and only
// bundles in flight at the kill were written twice (a redelivery overwrites
// the same file).
func TestAdapterKilledWhileDraining(t *testing.T) {
	cfg := testConfig(t, "gw")
	sc, out, _ := withScripted(t, cfg, "scripted")
	cfg.AdapterCheckInterval = 100 * time.Millisecond
	// The service is away while the bundles are sent, so that the whole
	// run is still ahead when the adapter is killed.
	sc.set(scriptControl{Down: true})
	n := startGateway(t, cfg, zapcore.InfoLevel, nil)
	const count = 600
	ids := sendOutbox(t, n, count, 100, 8, 0)
	sc.set(scriptControl{DelayMs: 5})
	waitFor(t, "the queue to be draining", func() bool { return sc.total("delivered") >= 100 })
	pid := n.Adapters()[0].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := sc.total("delivered"); got >= count {
		t.Fatalf("the queue had drained (%d delivered) before the kill; slow the adapter down", got)
	}
	waitFor(t, "every bundle to be delivered", func() bool { return len(sc.count("delivered")) == count })
	if st := n.Adapters()[0]; st.Restarts != 1 || st.PID == pid || !st.Running {
		t.Errorf("adapter after the kill: %+v; want running again, restarted once", st)
	}
	for i, id := range ids {
		data, err := os.ReadFile(filepath.Join(out, "gw-"+id.Key()))
		if err != nil || !bytes.Equal(data, payloadOf(i, 100)) {
			t.Fatalf("bundle %d: %q, %v", i, data, err)
		}
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), "gw-") || strings.HasPrefix(e.Name(), ".mulegate-tmp-") {
			t.Errorf("stray file in out: %s", e.Name())
		}
	}
	if got := countFiles(out); got != count {
		t.Errorf("%d files in out; want %d", got, count)
	}
	twice := 0
	for _, k := range sc.count("delivered") {
		if k > 1 {
			twice++
		}
	}
	if twice > cfg.Adapters[0].MaxInFlight {
		t.Errorf("%d bundles written more than once; only those in flight at the kill (at most %d) should be", twice, cfg.Adapters[0].MaxInFlight)
	}
	waitFor(t, "delivered bundles to leave the store", func() bool { return n.store.Stats().Bundles == 0 })
}

// TestTenThousandBundlesThroughTheNode: 10,000 bundles through the node
// and the plugin boundary to the dir adapter: each delivered exactly once
// (one file, written once), and never more than max_in_flight at once.
func TestTenThousandBundlesThroughTheNode(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 deliveries, each fsynced")
	}
	cfg := testConfig(t, "gw")
	sc, out, _ := withScripted(t, cfg, "scripted")
	cfg.Adapters[0].MaxInFlight = 16
	cfg.Adapters[0].Config["sidecar"] = false
	// A service a little slower than the node, so that deliveries pile up
	// to max_in_flight and a queue that exceeded it would show.
	sc.set(scriptControl{DelayMs: 3})
	n := startGateway(t, cfg, zapcore.WarnLevel, nil)
	const count = 10_000
	start := time.Now()
	ids := sendOutbox(t, n, count, 64, 16, 0)
	waitFor(t, "every bundle to be delivered", func() bool { return countFiles(out) == count })
	t.Logf("10,000 bundles sent and delivered in %v", time.Since(start).Round(time.Second))
	waitFor(t, "delivered bundles to leave the store", func() bool { return n.store.Stats().Bundles == 0 })
	delivered := sc.count("delivered")
	for i, id := range ids {
		if k := delivered[id.String()]; k != 1 {
			t.Fatalf("bundle %d delivered %d times", i, k)
		}
	}
	if got := countFiles(out); got != count {
		t.Errorf("%d files in out; want %d", got, count)
	}
	for i := 0; i < count; i += 997 {
		data, err := os.ReadFile(filepath.Join(out, "gw-"+ids[i].Key()))
		if err != nil || !bytes.Equal(data, payloadOf(i, 64)) {
			t.Errorf("bundle %d: %q, %v", i, data, err)
		}
	}
	top := 0
	for k := range sc.count("max_in_flight") {
		v, _ := strconv.Atoi(k)
		top = max(top, v)
	}
	if top > cfg.Adapters[0].MaxInFlight || top < 2 {
		t.Errorf("at most %d deliveries at once; want 2 to max_in_flight %d", top, cfg.Adapters[0].MaxInFlight)
	}
	t.Logf("at most %d deliveries in flight at once (max_in_flight %d)", top, cfg.Adapters[0].MaxInFlight)
}

// TestPoisonInboundMessage: an inbox file the node refuses for good (its
// destination is not an endpoint ID) is refused once. The dir adapter sets
// it aside in inbox/rejected/ with the reason; an adapter without Reject
// gets Nacks, and the node neither takes the message in again nor spins on
// it. Good files before and after it arrive either way.
func TestPoisonInboundMessage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		builtin string
		reject  bool
	}{
		{"adapter rejects", "scripted", true},
		{"adapter cannot reject", "scripted-noreject", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := testConfig(t, "gw")
			sc, _, inbox := withScripted(t, cfg, tc.builtin)
			// Offered again at once after a Nack: only the node can keep
			// that from spinning.
			cfg.Adapters[0].Config["nack_delay"] = "0s"
			n := startGateway(t, cfg, zapcore.InfoLevel, nil)
			app := bundle.MustParseEID("dtn://gw/app")
			drop := func(rel, body string) {
				p := filepath.Join(inbox, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				tmp := filepath.Join(filepath.Dir(p), ".tmp")
				if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, p); err != nil {
					t.Fatal(err)
				}
			}
			arrived := func(want int) func() bool {
				return func() bool { got, _ := n.Deliveries(ctx, app, 10); return len(got) == want }
			}
			const poison = "dtn/bad|node/poison.txt"
			drop("dtn/gw/app/first.txt", "first")
			drop(poison, "never a bundle")
			waitFor(t, "the good file to arrive", arrived(1))
			refused := func() float64 {
				return gaugeWith(n, "mulegate_bundles_rejected_total", map[string]string{"door": "adapter"})
			}
			waitFor(t, "the poison to be refused", func() bool { return refused() >= 1 })

			if tc.reject {
				waitFor(t, "the poison to move to rejected/", func() bool {
					_, err := os.Stat(filepath.Join(inbox, "rejected", poison))
					return err == nil
				})
				reason, err := os.ReadFile(filepath.Join(inbox, "rejected", poison+".reason"))
				if err != nil || !strings.Contains(string(reason), "'|' is not allowed") {
					t.Errorf("reason file: %q, %v; want the node's reason", reason, err)
				}
				if _, err := os.Stat(filepath.Join(inbox, poison)); !os.IsNotExist(err) {
					t.Errorf("the poison is still in the inbox: %v", err)
				}
				// Counted once Reject has returned, which may be after the
				// adapter moved the file.
				refusedRejected := func() float64 {
					return gaugeWith(n, "mulegate_adapter_inbound_refused_total", map[string]string{"adapter": "files", "class": "fatal", "action": "reject"})
				}
				waitFor(t, "the rejection to be counted", func() bool { return refusedRejected() >= 1 })
				if v := refusedRejected(); v != 1 {
					t.Errorf("inbound refused {fatal, reject} = %v; want 1", v)
				}
			} else {
				// Offered again and again; each time nacked at once with the
				// first refusal's reason, never taken in again.
				waitFor(t, "the poison to be nacked five times", func() bool { return len(nacks(sc)) >= 5 })
				ns := nacks(sc)
				for _, e := range ns {
					if !strings.Contains(e.arg, "refused for good") {
						t.Errorf("nack reason %q; want it to say the refusal is for good", e.arg)
					}
				}
				// No hot loop: between the second nack and the fifth, the
				// fetch loop backed off (at least 25+50+100 ms with
				// retry_min 50ms; without backoff it is a few ms).
				if gap := ns[4].at.Sub(ns[1].at); gap < 175*time.Millisecond {
					t.Errorf("nacks 2 to 5 of the poison came within %v: the fetch loop spins on it", gap)
				}
				if _, err := os.Stat(filepath.Join(inbox, poison)); err != nil {
					t.Errorf("the poison left the inbox of an adapter that cannot reject: %v", err)
				}
			}
			drop("dtn/gw/app/second.txt", "second")
			waitFor(t, "a good file after the poison to arrive", arrived(2))
			if v := refused(); v != 1 {
				t.Errorf("mulegate_bundles_rejected_total{door=adapter} = %v; want 1 (refused once, not at every offer)", v)
			}
		})
	}
}

// nacks returns the journal's nacks of the poison file.
func nacks(sc *script) []journalEntry {
	var out []journalEntry
	for _, e := range sc.entries() {
		if e.event == "nack" && strings.Contains(e.arg, "poison.txt") {
			out = append(out, e)
		}
	}
	return out
}
