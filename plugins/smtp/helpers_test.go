package smtp_test

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/internal/plugintest"
	"github.com/mulegate/mulegate/plugins/sdk"
	"github.com/mulegate/mulegate/plugins/smtp"
	"github.com/mulegate/mulegate/plugins/smtp/internal/mailpittest"
)

// TestMain lets the test binary be the smtp adapter the host launches
// (`<test binary> adapter smtp`).
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" && os.Args[2] == "smtp" {
		log := sdk.NewLogger()
		if err := sdk.Serve(smtp.New(log), sdk.WithLogger(log)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	plugintest.Main(m, nil)
}

var (
	freePort   = servertest.FreePort
	eventually = servertest.Eventually
	errNotYet  = servertest.ErrNotYet
)

// startAdapter runs the smtp adapter in its own process, as the node does,
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
		Backoff:       host.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Start(t.Context(), host.Spec{Name: "mail", Builtin: "smtp", Config: raw}); err != nil {
		t.Fatal(err)
	}
	ad, err := m.Adapter("mail")
	if err != nil {
		t.Fatal(err)
	}
	return m, ad
}

// inProcess returns the adapter as a plain Go value, configured.
func inProcess(t testing.TB, cfg any) *smtp.Adapter {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ad := smtp.New(zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)))
	if err := ad.Configure(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	return ad
}

// outbound is a configuration delivering to srv without TLS.
func outbound(srv *mailpittest.Server, more obj) obj {
	cfg := obj{"server": srv.SMTPAddr(), "tls": obj{"mode": "off"}, "domain": "gw.example.org", "connect_timeout": "2s", "command_timeout": "10s"}
	for k, v := range more {
		cfg[k] = v
	}
	return cfg
}

// obj is a JSON object literal, for configurations.
type obj = map[string]any
