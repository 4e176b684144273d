package nats_test

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/internal/adaptertest"
	"github.com/mulegate/mulegate/plugins/internal/plugintest"
	"github.com/mulegate/mulegate/plugins/nats"
	"github.com/mulegate/mulegate/plugins/nats/internal/natstest"
)

// TestMain lets the test binary be the nats adapter the host launches
// (`<test binary> adapter nats`), and the other test adapters plugintest
// knows.
func TestMain(m *testing.M) {
	plugintest.Main(m, nil, plugintest.Builtin{Name: "nats", New: func(log *zap.Logger) plugins.Adapter { return nats.New(log) }})
}

// Shorthands for the servers and helpers of natstest and servertest.
type (
	embedded = natstest.Embedded
	process  = natstest.Process
)

var (
	freePort      = servertest.FreePort
	newEmbedded   = natstest.NewEmbedded
	startEmbedded = natstest.StartEmbedded
	newProcess    = natstest.NewProcess
	client        = natstest.Client
	createStream  = natstest.CreateStream
	publish       = natstest.Publish
	eventually    = servertest.Eventually
	errNotYet     = servertest.ErrNotYet
)

// startAdapter runs the nats adapter in its own process, as the node does,
// configured with cfg (marshalled to JSON).
func startAdapter(t testing.TB, cfg any) (*host.Manager, plugins.Adapter) {
	t.Helper()
	return adaptertest.Start(t, host.Spec{Name: "logs", Builtin: "nats", Config: adaptertest.Config(t, cfg)},
		host.Options{CheckInterval: time.Hour}) // the tests call Check themselves
}

// inProcess returns the adapter as a plain Go value, configured.
func inProcess(t testing.TB, cfg any) *nats.Adapter {
	t.Helper()
	return adaptertest.Configure(t, nats.New(adaptertest.Logger(t)), cfg)
}

// obj is a JSON object literal, for configurations.
type obj = map[string]any
