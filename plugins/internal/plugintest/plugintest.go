// Package plugintest lets a test binary act as the adapters its tests
// launch, so that tests run real adapter processes without building
// anything: the host starts built-ins as `<test binary> adapter NAME`, and
// external adapters are symlinks to the test binary named "adapter-NAME".
package plugintest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/dir"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// EnvHost makes Main run the host function instead of the tests, for tests
// that need the node to be a separate process they can kill.
const EnvHost = "MULEGATE_TEST_HOST"

// With these set to a file prefix, every adapter process a test binary
// serves writes its CPU profile (or its execution trace) to PREFIX.PID: to
// see where an adapter's side of a benchmark spends its time, or what its
// goroutines wait for. The test binary's own -cpuprofile covers the
// node's side.
const (
	EnvAdapterCPUProfile = "MULEGATE_TEST_ADAPTER_CPUPROFILE"
	EnvAdapterTrace      = "MULEGATE_TEST_ADAPTER_TRACE"
)

// Builtin is an adapter a test binary serves as `<test binary> adapter
// NAME`, besides the test adapters plugintest knows: the adapter under
// test, say.
type Builtin struct {
	Name string
	New  func(log *zap.Logger) plugins.Adapter
	// Options are given to sdk.Serve beside its logger.
	Options []sdk.Option
}

// Main is the test binary's TestMain: it serves an adapter when started as
// one (one of builtins, or a test adapter: "dir", "null", "noisy",
// "noisy-nonl", "dies"), runs host when EnvHost is set, and runs the tests
// otherwise.
func Main(m *testing.M, host func() int, builtins ...Builtin) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" {
		os.Exit(serve(os.Args[2], builtins))
	}
	if name, ok := strings.CutPrefix(filepath.Base(os.Args[0]), "adapter-"); ok {
		os.Exit(serve(name, builtins))
	}
	if os.Getenv(EnvHost) != "" && host != nil {
		os.Exit(host())
	}
	os.Exit(m.Run())
}

// The adapters a test binary can be.
func serve(name string, builtins []Builtin) int {
	defer profile()()
	log := sdk.NewLogger()
	opts := []sdk.Option{sdk.WithLogger(log)}
	var ad plugins.Adapter
	for _, b := range builtins {
		if b.Name == name {
			ad = b.New(log)
			opts = append(opts, b.Options...)
		}
	}
	switch {
	case ad != nil:
	case name == "dir":
		ad = dir.New(log)
	case name == "null":
		ad = Null{}
	case name == "noisy":
		// A common mistake: a stray print before the handshake.
		fmt.Println("hello")
		ad = dir.New(log)
	case name == "noisy-nonl":
		fmt.Print("hello")
		ad = dir.New(log)
	case name == "dies":
		fmt.Fprintln(os.Stderr, "panic: cannot open the frobnicator")
		return 2
	default:
		fmt.Fprintf(os.Stderr, "plugintest: no test adapter %q\n", name)
		return 2
	}
	if err := sdk.Serve(ad, opts...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// profile starts what EnvAdapterCPUProfile and EnvAdapterTrace ask for,
// and returns what stops it.
func profile() (stop func()) {
	var stops []func()
	if p := os.Getenv(EnvAdapterCPUProfile); p != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid())); err == nil && pprof.StartCPUProfile(f) == nil {
			stops = append(stops, pprof.StopCPUProfile)
		}
	}
	if p := os.Getenv(EnvAdapterTrace); p != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid())); err == nil && trace.Start(f) == nil {
			stops = append(stops, trace.Stop)
		}
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// Null is the "null" test adapter: it takes every bundle, reads its
// payload, and does nothing with it, so that what a delivery costs it is
// the price of the plugin boundary alone.
type Null struct{ sdk.DeliverOnly }

func (Null) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "null", Version: "bench", Deliver: true}, nil
}
func (Null) Configure(context.Context, json.RawMessage) error { return nil }
func (Null) Check(context.Context) error                      { return nil }
func (Null) Deliver(_ context.Context, m plugins.Meta, r io.Reader) plugins.Result {
	if err := sdk.CopyPayload(io.Discard, r, m.PayloadLength); err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	return plugins.Delivered()
}

// LinkAdapter makes an external adapter called name in pluginDir (a
// symlink to the test binary, which then serves adapter name) and returns
// its file name and SHA-256.
func LinkAdapter(t testing.TB, pluginDir, name string) (file, sum string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	file = "adapter-" + name
	if err := os.Symlink(self, filepath.Join(pluginDir, file)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return file, hex.EncodeToString(h.Sum(nil))
}
