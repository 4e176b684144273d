package nats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/internal/plugintest"
	"github.com/mulegate/mulegate/plugins/nats"
	"github.com/mulegate/mulegate/plugins/nats/internal/natstest"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// TestMain lets the test binary be the nats adapter the host launches
// (`<test binary> adapter nats`), and the other test adapters plugintest
// knows.
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" && os.Args[2] == "nats" {
		if p := os.Getenv("MULEGATE_TEST_ADAPTER_CPUPROFILE"); p != "" {
			// To see where the adapter's own time goes in a benchmark.
			if f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid())); err == nil {
				_ = pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
		}
		if p := os.Getenv("MULEGATE_TEST_ADAPTER_TRACE"); p != "" {
			// To see what the adapter's goroutines wait for.
			if f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid())); err == nil {
				_ = trace.Start(f)
				defer trace.Stop()
			}
		}
		log := sdk.NewLogger()
		var ad plugins.Adapter = nats.New(log)
		if os.Getenv(envNullAdapter) != "" {
			ad = nullAdapter{}
		}
		if err := sdk.Serve(ad, sdk.WithLogger(log)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	plugintest.Main(m, nil)
}

// envNullAdapter makes the adapter process serve nullAdapter instead, to
// measure the plugin boundary alone.
const envNullAdapter = "MULEGATE_TEST_NULL_ADAPTER"

// nullAdapter takes every bundle and does nothing with it.
type nullAdapter struct{ sdk.DeliverOnly }

func (nullAdapter) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "nats", Version: "null", Deliver: true}, nil
}
func (nullAdapter) Configure(context.Context, json.RawMessage) error { return nil }
func (nullAdapter) Check(context.Context) error                      { return nil }
func (nullAdapter) Deliver(_ context.Context, m plugins.Meta, r io.Reader) plugins.Result {
	if err := sdk.CopyPayload(io.Discard, r, m.PayloadLength); err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	return plugins.Delivered()
}

// Shorthands for the servers and helpers of natstest.
type (
	embedded = natstest.Embedded
	process  = natstest.Process
)

var (
	freePort      = natstest.FreePort
	newEmbedded   = natstest.NewEmbedded
	startEmbedded = natstest.StartEmbedded
	newProcess    = natstest.NewProcess
	client        = natstest.Client
	createStream  = natstest.CreateStream
	publish       = natstest.Publish
	eventually    = natstest.Eventually
	errNotYet     = natstest.ErrNotYet
)

// startAdapter runs the nats adapter in its own process, as the node does,
// configured with cfg (marshalled to JSON).
func startAdapter(t testing.TB, cfg any) (*host.Manager, plugins.Adapter) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := host.New(host.Options{
		Log:           zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
		CheckInterval: time.Hour, // the tests call Check themselves
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Start(t.Context(), host.Spec{Name: "logs", Builtin: "nats", Config: raw}); err != nil {
		t.Fatal(err)
	}
	ad, err := m.Adapter("logs")
	if err != nil {
		t.Fatal(err)
	}
	return m, ad
}

// inProcess returns the adapter as a plain Go value, configured.
func inProcess(t testing.TB, cfg any) *nats.Adapter {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ad := nats.New(zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)))
	if err := ad.Configure(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	return ad
}

// obj is a JSON object literal, for configurations.
type obj = map[string]any
