package nats_test

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/internal/adaptertest"
	"github.com/mulegate/mulegate/plugins/internal/benchtest"
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

// BenchmarkDeliver1KiB compares bundles/s through the adapter, across the
// plugin boundary with max_in_flight (64) deliveries in flight, against
// a plain nats.go JetStream publish loop (one goroutine publishing
// synchronously), and against nats.go with the same concurrency (64
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
	run := func(b *testing.B, ps benchtest.Procs, work func(i int) error) float64 {
		b.SetBytes(size)
		return ps.Run(b, benchConcurrency, "bundles/s", work)
	}

	rates := map[string]float64{}
	deliver := func(ad plugins.Adapter) func(b *testing.B) {
		return func(b *testing.B) {
			fresh(b)
			seq := benchRun.Add(1)
			ps := benchtest.Procs{"node": self, "server": server}
			if pid := adaptertest.PID(m, "logs"); pid != 0 {
				ps["adapter"] = pid
			}
			rates[b.Name()] = run(b, ps, func(i int) error {
				res := ad.Deliver(b.Context(), benchMeta(seq, i, size), bytes.NewReader(payload))
				if res.Status != plugins.OK {
					return fmt.Errorf("bundle %d: %v", i, res)
				}
				return nil
			})
		}
	}
	b.Run("adapter", deliver(ad))

	// The plain publish loop: one goroutine, one synchronous publish after
	// another, as a program without the node would publish its logs.
	b.Run("natsgo-loop", func(b *testing.B) {
		fresh(b)
		seq := benchRun.Add(1)
		b.SetBytes(size)
		rates[b.Name()] = benchtest.Procs{"node": self, "server": server}.Run(b, 1, "bundles/s", func(i int) error {
			m := benchMeta(seq, i, size)
			_, err := js.PublishMsg(b.Context(), &natsgo.Msg{Subject: m.Options["subject"], Header: nats.OutboundHeaders(m), Data: payload})
			return err
		})
	})
	b.Run("natsgo-sync", func(b *testing.B) {
		fresh(b)
		seq := benchRun.Add(1)
		rates[b.Name()] = run(b, benchtest.Procs{"node": self, "server": server}, func(i int) error {
			m := benchMeta(seq, i, size)
			_, err := js.PublishMsg(b.Context(), &natsgo.Msg{Subject: m.Options["subject"], Header: nats.OutboundHeaders(m), Data: payload})
			return err
		})
	})
	b.Run("natsgo-async", func(b *testing.B) {
		fresh(b)
		seq := benchRun.Add(1)
		b.SetBytes(size)
		ajs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(benchConcurrency))
		if err != nil {
			b.Fatal(err)
		}
		ps := benchtest.Procs{"node": self, "server": server}
		before := ps.Usage()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			m := benchMeta(seq, i, size)
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
		b.StopTimer()
		rates[b.Name()] = float64(b.N) / elapsed.Seconds()
		b.ReportMetric(rates[b.Name()], "bundles/s")
		ps.Report(b, before)
	})

	// For reference: where the difference goes.
	inproc := inProcess(b, obj{"urls": []string{srv.URL()}})
	b.Run("adapter-in-process", func(b *testing.B) {
		fresh(b)
		seq := benchRun.Add(1)
		rates[b.Name()] = run(b, benchtest.Procs{"node": self, "server": server}, func(i int) error {
			res := inproc.Deliver(b.Context(), benchMeta(seq, i, size), bytes.NewReader(payload))
			if res.Status != plugins.OK {
				return fmt.Errorf("bundle %d: %v", i, res)
			}
			return nil
		})
	})
	nm, null := adaptertest.Start(b, host.Spec{Name: "null", Builtin: "null"}, host.Options{CheckInterval: time.Hour})
	b.Run("null-adapter", func(b *testing.B) {
		ps := benchtest.Procs{"node": self}
		if pid := adaptertest.PID(nm, "null"); pid != 0 {
			ps["adapter"] = pid
		}
		rates[b.Name()] = run(b, ps, func(i int) error {
			if res := null.Deliver(b.Context(), benchMeta(0, i, size), bytes.NewReader(payload)); res.Status != plugins.OK {
				return fmt.Errorf("%v", res)
			}
			return nil
		})
	})

	a, l, s, as := rates[b.Name()+"/adapter"], rates[b.Name()+"/natsgo-loop"], rates[b.Name()+"/natsgo-sync"], rates[b.Name()+"/natsgo-async"]
	if a > 0 && l > 0 && s > 0 && as > 0 {
		b.Logf("adapter %.0f bundles/s = %.0f%% of a plain nats.go publish loop (%.0f/s), %.0f%% of nats.go with %d goroutines (%.0f/s), %.0f%% of nats.go async with a window of %d (%.0f/s); in process %.0f/s; the boundary alone (null adapter) %.0f/s",
			a, 100*a/l, l, 100*a/s, benchConcurrency, s, 100*a/as, benchConcurrency, as,
			rates[b.Name()+"/adapter-in-process"], rates[b.Name()+"/null-adapter"])
	}
}
