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
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/internal/benchtest"
	adapterpb "github.com/mulegate/mulegate/plugins/proto"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// TestMain lets the test binary be the null adapters that the boundary
// benchmarks launch (`<test binary> adapter null`, `… adapter null-stream`).
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" && (os.Args[2] == "null" || os.Args[2] == "null-stream") {
		if p := os.Getenv(envAdapterProfile); p != "" {
			// To see where the adapter's side of the boundary spends its time.
			if f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid())); err == nil {
				_ = pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
		}
		log := sdk.NewLogger()
		opts := []sdk.Option{sdk.WithLogger(log)}
		if os.Args[2] == "null-stream" {
			// An adapter that serves Deliver only, as one built before
			// DeliverSession, or in a language whose author left it out:
			// the node sends it every bundle as a Deliver stream.
			opts = append(opts, sdk.WithServerOptions(grpc.ChainStreamInterceptor(refuseSession)))
		}
		if err := sdk.Serve(nullAdapter{}, opts...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

func refuseSession(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod == adapterpb.Adapter_DeliverSession_FullMethodName {
		return status.Error(codes.Unimplemented, "DeliverSession is not served by this adapter")
	}
	return handler(srv, ss)
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
// (max_in_flight: 64, as the example configurations set). It reports bundles/s and the CPU the
// node and the adapter process each spent per bundle: the price of the
// boundary, which a real adapter pays on top of its own work.
//
//	go test -run '^$' -bench 'Boundary$' -benchtime 2s ./plugins/sdk
//
// MULEGATE_TEST_ADAPTER_CPUPROFILE=/tmp/a makes the adapter write its CPU
// profile to /tmp/a.PID; -cpuprofile gives the node's.
func BenchmarkBoundary(b *testing.B) {
	ad, pid := startNull(b, "null")
	for _, size := range []int{0, 1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 10 << 20} {
		for _, conc := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/inflight=%d", benchtest.SizeName(size), conc), func(b *testing.B) {
				deliverAll(b, ad, pid, size, conc)
			})
		}
	}
}

// BenchmarkBoundarySession compares the two ways a small bundle crosses the
// boundary: the DeliverSession stream, which batches deliveries, and a
// Deliver stream of its own, which the node falls back to for an adapter
// that answers DeliverSession with UNIMPLEMENTED. Each "stream" result
// reports its rate as a percentage of the "session" run just before it
// (with -count N, the N runs of a case come one after the other: compare
// medians then).
//
//	go test -run '^$' -bench BoundarySession -benchtime 2s -count 3 ./plugins/sdk
func BenchmarkBoundarySession(b *testing.B) {
	session, sessionPID := startNull(b, "null")
	stream, streamPID := startNull(b, "null-stream")
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, conc := range []int{1, 64} {
			name := fmt.Sprintf("%s/inflight=%d", benchtest.SizeName(size), conc)
			var sessionRate float64
			b.Run(name+"/session", func(b *testing.B) {
				sessionRate = deliverAll(b, session, sessionPID, size, conc)
			})
			b.Run(name+"/stream", func(b *testing.B) {
				rate := deliverAll(b, stream, streamPID, size, conc)
				if sessionRate > 0 {
					b.ReportMetric(100*rate/sessionRate, "%-of-session")
				}
			})
		}
	}
}

// startNull starts the test binary as adapter builtin ("null" or
// "null-stream") under a host.Manager, and returns it and its PID.
func startNull(b *testing.B, builtin string) (plugins.Adapter, int) {
	m, err := host.New(host.Options{
		Log:           zaptest.NewLogger(b, zaptest.Level(zapcore.WarnLevel)),
		CheckInterval: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	if err := m.Start(b.Context(), host.Spec{Name: builtin, Builtin: builtin}); err != nil {
		b.Fatal(err)
	}
	ad, err := m.Adapter(builtin)
	if err != nil {
		b.Fatal(err)
	}
	st, ok := m.Status(builtin)
	if !ok || st.PID == 0 {
		b.Fatalf("adapter %s: no process: %+v", builtin, st)
	}
	return ad, st.PID
}

// deliverAll delivers b.N bundles of size bytes to ad, conc at a time, and
// reports bundles/s and the CPU the node (this process) and the adapter
// (process pid) spent per bundle. It returns the rate.
func deliverAll(b *testing.B, ad plugins.Adapter, pid, size, conc int) float64 {
	payload := bytes.Repeat([]byte("mulegate"), size/8)
	b.SetBytes(int64(size))
	// System calls per bundle are reported too: fewer than one means
	// batching.
	ps := benchtest.Procs{"node": os.Getpid(), "adapter": pid}
	return ps.Run(b, conc, "bundles/s", func(i int) error {
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
			return fmt.Errorf("bundle %d: %v", i, res)
		}
		return nil
	})
}
