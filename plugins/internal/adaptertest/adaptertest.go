// Package adaptertest is what the adapters' tests share: an adapter run
// in its own process as the node runs it, or configured in process; a
// configuration block and the keys it must be refused by; and many
// bundles delivered at once, retried as a delivery queue would.
//
// The test binary serves the adapter itself: see plugintest.Main.
package adaptertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
)

// Logger is a logger for an adapter or a manager under test: warnings and
// errors, in the test's log.
func Logger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
}

// Config marshals an adapter's configuration block to JSON.
func Config(t testing.TB, cfg any) json.RawMessage {
	t.Helper()
	if raw, ok := cfg.(json.RawMessage); ok {
		return raw
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Start runs an adapter in its own process under a host.Manager, as the
// node does (with opts; Log defaults to Logger), and returns the manager
// and the adapter. The test's cleanup closes the manager, which stops the
// process.
func Start(t testing.TB, spec host.Spec, opts host.Options) (*host.Manager, plugins.Adapter) {
	t.Helper()
	if opts.Log == nil {
		opts.Log = Logger(t)
	}
	m, err := host.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Start(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	ad, err := m.Adapter(spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	return m, ad
}

// PID is the process ID of adapter name under m, 0 when it is not running.
func PID(m *host.Manager, name string) int {
	st, _ := m.Status(name)
	return st.PID
}

// Configure configures ad, a plain Go value, with cfg (marshalled to
// JSON), and returns it. The test's cleanup closes it.
func Configure[A interface {
	plugins.Adapter
	io.Closer
}](t testing.TB, ad A, cfg any) A {
	t.Helper()
	if err := ad.Configure(t.Context(), Config(t, cfg)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	return ad
}

// CheckConfigErrors runs a subtest called name that configures a new
// adapter (from newAdapter; closed afterwards) with the block config. With
// keys, Configure must refuse it with plugins.ConfigErrors naming exactly
// those keys, in order, each with a message, and leave the adapter
// unconfigured. Without, it must take it, contacting nothing: a server
// being down is Check's business.
func CheckConfigErrors(t *testing.T, name, config string, keys []string, newAdapter func() plugins.Adapter) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		ad := newAdapter()
		if c, ok := ad.(io.Closer); ok {
			defer c.Close()
		}
		err := ad.Configure(t.Context(), json.RawMessage(config))
		if keys == nil {
			if err != nil {
				t.Fatalf("Configure = %v, want nil (the server being down is Check's business)", err)
			}
			return
		}
		var ce plugins.ConfigErrors
		if !errors.As(err, &ce) {
			t.Fatalf("Configure = %v, want ConfigErrors", err)
		}
		var got []string
		for _, e := range ce {
			got = append(got, e.Key)
			if e.Message == "" {
				t.Errorf("key %q: no message", e.Key)
			}
		}
		if !slices.Equal(got, keys) {
			t.Errorf("Configure reported keys %q, want %q:\n%v", got, keys, err)
		}
		if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrNotConfigured) {
			t.Errorf("Check after a failed Configure = %v, want ErrNotConfigured", err)
		}
	})
}

// Deliveries delivers bundles [0, N) on Workers goroutines, retrying each
// until it is delivered, as a delivery queue would.
type Deliveries struct {
	N, Workers int
	// Bundle returns bundle i's metadata and payload.
	Bundle func(i int) (plugins.Meta, []byte)
	// Retries bounds the attempts of one bundle: after Retries+1 attempts
	// answered Retry, the next that is not OK fails the test. A Reject
	// fails it at once.
	Retries int
	// Pause is the least wait after a Retry; the adapter may ask for more.
	Pause time.Duration
	// Delivered, if set, is called after each bundle is delivered.
	Delivered func()
}

// Run delivers the bundles to ad and returns how many attempts were
// answered Retry.
func (d Deliveries) Run(t testing.TB, ad plugins.Adapter) int64 {
	t.Helper()
	var retries, next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, d.Workers)
	for range d.Workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= d.N {
					return
				}
				meta, payload := d.Bundle(i)
				if err := d.deliver(t, ad, meta, payload, &retries); err != nil {
					errs <- fmt.Errorf("bundle %d: %v", i, err)
					return
				}
				if d.Delivered != nil {
					d.Delivered()
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

func (d Deliveries) deliver(t testing.TB, ad plugins.Adapter, meta plugins.Meta, payload []byte, retries *atomic.Int64) error {
	for attempt := 0; ; attempt++ {
		res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
		if res.Status == plugins.OK {
			return nil
		}
		if res.Status == plugins.Reject || attempt > d.Retries {
			return fmt.Errorf("%v", res)
		}
		retries.Add(1)
		time.Sleep(max(res.RetryAfter, d.Pause))
	}
}
