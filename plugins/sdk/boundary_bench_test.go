package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// TestMain lets the test binary be the null adapter that the boundary
// benchmark launches (`<test binary> adapter null`).
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" && os.Args[2] == "null" {
		if p := os.Getenv(envAdapterProfile); p != "" {
			// To see where the adapter's side of the boundary spends its time.
			if f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid())); err == nil {
				_ = pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
		}
		log := sdk.NewLogger()
		if err := sdk.Serve(nullAdapter{}, sdk.WithLogger(log)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

// envAdapterProfile names a file prefix; the null adapter writes its CPU
// profile to PREFIX.PID.
const envAdapterProfile = "MULEGATE_TEST_ADAPTER_CPUPROFILE"

// nullAdapter takes every bundle, reads its payload, and does nothing with
// it: what is left is the cost of the plugin boundary itself.
type nullAdapter struct{ sdk.DeliverOnly }

func (nullAdapter) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "null", Version: "bench", Deliver: true}, nil
}
func (nullAdapter) Configure(context.Context, json.RawMessage) error { return nil }
func (nullAdapter) Check(context.Context) error                      { return nil }
func (nullAdapter) Deliver(_ context.Context, m plugins.Meta, r io.Reader) plugins.Result {
	if err := sdk.CopyPayload(io.Discard, r, m.PayloadLength); err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	return plugins.Delivered()
}

// BenchmarkBoundary delivers bundles of several sizes to a null adapter in
// its own process, through host.Manager as the node does (go-plugin, gRPC
// over a Unix socket with mutual TLS), one at a time and with 64 in flight
// (the node's default max_in_flight). It reports bundles/s and the CPU the
// node and the adapter process each spent per bundle: the price of the
// boundary, which a real adapter pays on top of its own work.
//
//	go test -run '^$' -bench Boundary -benchtime 20000x ./plugins/sdk
//
// MULEGATE_TEST_ADAPTER_CPUPROFILE=/tmp/a makes the adapter write its CPU
// profile to /tmp/a.PID; -cpuprofile gives the node's.
func BenchmarkBoundary(b *testing.B) {
	m, err := host.New(host.Options{
		Log:           zaptest.NewLogger(b, zaptest.Level(zapcore.WarnLevel)),
		CheckInterval: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	if err := m.Start(b.Context(), host.Spec{Name: "null", Builtin: "null"}); err != nil {
		b.Fatal(err)
	}
	ad, err := m.Adapter("null")
	if err != nil {
		b.Fatal(err)
	}
	st, _ := m.Status("null")
	self, pid := os.Getpid(), st.PID

	for _, size := range []int{0, 1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 10 << 20} {
		for _, conc := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/inflight=%d", sizeName(size), conc), func(b *testing.B) {
				payload := bytes.Repeat([]byte("mulegate"), size/8)
				b.SetBytes(int64(size))
				var next atomic.Int64
				var failed atomic.Pointer[plugins.Result]
				var wg sync.WaitGroup
				node0, adapter0 := cpuTime(self), cpuTime(pid)
				b.ResetTimer()
				start := time.Now()
				for range conc {
					wg.Go(func() {
						for {
							i := int(next.Add(1) - 1)
							if i >= b.N || failed.Load() != nil {
								return
							}
							meta := plugins.Meta{
								BundleID:      "dtn://mule1/app|800000000000." + strconv.Itoa(i),
								Source:        "dtn://mule1/app",
								Destination:   "dtn://cloud/logs/app",
								CreationTime:  800000000000,
								Sequence:      uint64(i),
								Lifetime:      time.Hour,
								PayloadLength: int64(size),
								Route:         "logs",
								Options:       map[string]string{"subject": "logs.mule1.app"},
							}
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
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "bundles/s")
				b.ReportMetric(float64((cpuTime(self)-node0).Microseconds())/float64(b.N), "node-cpu-µs/op")
				b.ReportMetric(float64((cpuTime(pid)-adapter0).Microseconds())/float64(b.N), "adapter-cpu-µs/op")
			})
		}
	}
}

// cpuTime is the CPU time (user and system) process pid has used, with the
// kernel's clock-tick resolution (10 ms).
func cpuTime(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
