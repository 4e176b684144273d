package nats_test

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/nats"
)

// benchConcurrency is the node's max_in_flight for the adapter: how many
// deliveries are in flight at once.
const benchConcurrency = 64

// benchRun numbers the bundles of each run apart, so that no run's
// messages are duplicates of an earlier one's.
var benchRun atomic.Int64

func benchMeta(run int64, i int, size int) plugins.Meta {
	src := "dtn://mule" + strconv.Itoa(i%16) + "/app"
	return plugins.Meta{
		BundleID:      src + "|" + strconv.FormatInt(800000000000+run, 10) + "." + strconv.Itoa(i),
		Source:        src,
		Destination:   "dtn://cloud/logs/app",
		CreationTime:  uint64(800000000000 + run),
		Sequence:      uint64(i),
		Lifetime:      time.Hour,
		PayloadLength: int64(size),
		Options:       map[string]string{"subject": "bench.mule" + strconv.Itoa(i%16) + ".logs.app"},
	}
}

// cpuTime is the CPU time (user and system) process pid has used.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// syscalls is the number of read and write system calls process pid has
// made (all kinds: sockets, files, pipes), from /proc/PID/io.
func syscalls(pid int) (reads, writes int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// procs are the processes whose CPU time a benchmark reports per bundle.
type procs map[string]int

// usage is what procs measures of each process.
type usage struct {
	cpu           time.Duration
	reads, writes int64
}

func (ps procs) usage() map[string]usage {
	u := map[string]usage{}
	for name, pid := range ps {
		r, w := syscalls(pid)
		u[name] = usage{cpu: cpuTime(pid), reads: r, writes: w}
	}
	return u
}

// run does work(i) for i in [0, b.N) on benchConcurrency goroutines, and
// reports bundles/s and each process's CPU time per bundle.
func (ps procs) run(b *testing.B, work func(i int) error) float64 {
	b.SetBytes(1 << 10)
	before := ps.usage()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	start := time.Now()
	for range benchConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N || failed.Load() != nil {
					return
				}
				if err := work(i); err != nil {
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	ps.report(b, before, elapsed)
	return float64(b.N) / elapsed.Seconds()
}

// report reports bundles/s, and per bundle each process's CPU time and its
// read and write system calls (fewer than one per bundle means batching).
func (ps procs) report(b *testing.B, before map[string]usage, elapsed time.Duration) {
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "bundles/s")
	for name, u := range ps.usage() {
		was := before[name]
		b.ReportMetric(float64((u.cpu-was.cpu).Microseconds())/float64(b.N), name+"-cpu-µs/op")
		b.ReportMetric(float64(u.reads-was.reads)/float64(b.N), name+"-reads/op")
		b.ReportMetric(float64(u.writes-was.writes)/float64(b.N), name+"-writes/op")
	}
}

// BenchmarkDeliver1KiB compares bundles/s through the adapter, across the
// plugin boundary with max_in_flight (64) deliveries in flight, against
// plain nats.go JetStream publishing with the same concurrency (64
// goroutines publishing synchronously, and async publishing with a window
// of 64), to the same nats-server process, with 1 KiB payloads and the
// same headers. For reference it also runs the adapter in process, and a
// do-nothing adapter across the boundary (the boundary's own cost). Each
// sub-benchmark reports the CPU each process spent per bundle.
//
// Run all of it at once, with enough bundles for steady numbers:
//
//	go test -run '^$' -bench Deliver1KiB -benchtime 20000x ./plugins/nats
//
// With MULEGATE_TEST_ADAPTER_CPUPROFILE=FILE (or _TRACE=FILE), each adapter
// process writes its CPU profile (or execution trace) to FILE.<pid>; the
// test binary's own -cpuprofile covers the node's side.
func BenchmarkDeliver1KiB(b *testing.B) {
	const size = 1 << 10
	payload := bytes.Repeat([]byte("x"), size)
	srv := newProcess(b)
	srv.Start()
	nc, js := client(b, srv.URL())
	streamCfg := jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}}
	createStream(b, js, streamCfg)
	// fresh gives each sub-benchmark an empty stream and an empty duplicate
	// window. Sharing one, each ran slower than the one before it, as the
	// server's per-stream state grew: the order decided the comparison.
	fresh := func(b *testing.B) {
		if err := js.DeleteStream(b.Context(), streamCfg.Name); err != nil {
			b.Fatal(err)
		}
		createStream(b, js, streamCfg)
	}
	m, ad := startAdapter(b, obj{"urls": []string{srv.URL()}})
	self, server := os.Getpid(), srv.PID()

	rates := map[string]float64{}
	deliver := func(ad plugins.Adapter) func(b *testing.B) {
		return func(b *testing.B) {
			fresh(b)
			run := benchRun.Add(1)
			ps := procs{"node": self, "server": server}
			if pid := adapterPID(m); pid != 0 {
				ps["adapter"] = pid
			}
			rates[b.Name()] = ps.run(b, func(i int) error {
				res := ad.Deliver(b.Context(), benchMeta(run, i, size), bytes.NewReader(payload))
				if res.Status != plugins.OK {
					return fmt.Errorf("bundle %d: %v", i, res)
				}
				return nil
			})
		}
	}
	b.Run("adapter", deliver(ad))

	b.Run("natsgo-sync", func(b *testing.B) {
		fresh(b)
		run := benchRun.Add(1)
		rates[b.Name()] = procs{"node": self, "server": server}.run(b, func(i int) error {
			m := benchMeta(run, i, size)
			_, err := js.PublishMsg(b.Context(), &natsgo.Msg{Subject: m.Options["subject"], Header: nats.OutboundHeaders(m), Data: payload})
			return err
		})
	})
	b.Run("natsgo-async", func(b *testing.B) {
		fresh(b)
		run := benchRun.Add(1)
		b.SetBytes(size)
		ajs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(benchConcurrency))
		if err != nil {
			b.Fatal(err)
		}
		ps := procs{"node": self, "server": server}
		before := ps.usage()
		start := time.Now()
		for i := range b.N {
			m := benchMeta(run, i, size)
			if _, err := ajs.PublishMsgAsync(&natsgo.Msg{Subject: m.Options["subject"], Header: nats.OutboundHeaders(m), Data: payload}); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-ajs.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("async publishes not acknowledged")
		}
		elapsed := time.Since(start)
		ps.report(b, before, elapsed)
		rates[b.Name()] = float64(b.N) / elapsed.Seconds()
	})

	// For reference: where the difference goes.
	inproc := inProcess(b, obj{"urls": []string{srv.URL()}})
	b.Run("adapter-in-process", func(b *testing.B) {
		fresh(b)
		run := benchRun.Add(1)
		rates[b.Name()] = procs{"node": self, "server": server}.run(b, func(i int) error {
			res := inproc.Deliver(b.Context(), benchMeta(run, i, size), bytes.NewReader(payload))
			if res.Status != plugins.OK {
				return fmt.Errorf("bundle %d: %v", i, res)
			}
			return nil
		})
	})
	b.Setenv(envNullAdapter, "1")
	nm, null := startAdapter(b, obj{})
	b.Run("null-adapter", func(b *testing.B) {
		ps := procs{"node": self}
		if pid := adapterPID(nm); pid != 0 {
			ps["adapter"] = pid
		}
		rates[b.Name()] = ps.run(b, func(i int) error {
			if res := null.Deliver(b.Context(), benchMeta(0, i, size), bytes.NewReader(payload)); res.Status != plugins.OK {
				return fmt.Errorf("%v", res)
			}
			return nil
		})
	})

	a, s, as := rates[b.Name()+"/adapter"], rates[b.Name()+"/natsgo-sync"], rates[b.Name()+"/natsgo-async"]
	if a > 0 && s > 0 && as > 0 {
		b.Logf("adapter %.0f bundles/s = %.0f%% of nats.go with %d goroutines (%.0f/s), %.0f%% of nats.go async with a window of %d (%.0f/s); in process %.0f/s; the boundary alone (null adapter) %.0f/s",
			a, 100*a/s, benchConcurrency, s, 100*a/as, benchConcurrency, as,
			rates[b.Name()+"/adapter-in-process"], rates[b.Name()+"/null-adapter"])
	}
}

func adapterPID(m *host.Manager) int {
	st, _ := m.Status("logs")
	return st.PID
}
