package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
)

// TestExampleAsExternalAdapter follows plugins/README.md: build the
// example, pin its SHA-256, run it from a plugin directory, deliver.
func TestExampleAsExternalAdapter(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the example with")
	}
	pluginDir := t.TempDir()
	bin := filepath.Join(pluginDir, "mulegate-webhook")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)

	var mu sync.Mutex
	got := map[string]string{} // Idempotency-Key → body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		body, _ := io.ReadAll(r.Body)
		key := r.Header.Get("Idempotency-Key")
		switch {
		case strings.HasPrefix(key, "busy"):
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusServiceUnavailable)
		case strings.HasPrefix(key, "bad"):
			w.WriteHeader(http.StatusBadRequest)
		default:
			mu.Lock()
			got[key] = string(body)
			mu.Unlock()
		}
	}))
	defer srv.Close()

	m, err := host.New(host.Options{PluginDir: pluginDir, Log: zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	var ce plugins.ConfigErrors
	err = m.Start(t.Context(), host.Spec{Name: "hook", Path: "mulegate-webhook", SHA256: hex.EncodeToString(sum[:]),
		Config: json.RawMessage(`{"url": "ftp://x", "timout": "1s"}`)})
	if !errors.As(err, &ce) || len(ce) != 2 {
		t.Fatalf("bad config: %v, want errors for url and timout", err)
	}

	err = m.Start(t.Context(), host.Spec{Name: "hook", Path: "mulegate-webhook", SHA256: hex.EncodeToString(sum[:]),
		Config: json.RawMessage(fmt.Sprintf(`{"url": %q}`, srv.URL))})
	if err != nil {
		t.Fatal(err)
	}
	ad, _ := m.Adapter("hook")
	if err := ad.Check(t.Context()); err != nil {
		t.Errorf("Check: %v", err)
	}
	tests := []struct {
		id     string
		want   plugins.Status
		after  time.Duration
		stored bool
	}{
		{"dtn://a/x-1-0", plugins.OK, 0, true},
		{"busy-1", plugins.Retry, 7 * time.Second, false},
		{"bad-1", plugins.Reject, 0, false},
	}
	for _, tt := range tests {
		body := "payload of " + tt.id
		res := ad.Deliver(t.Context(), plugins.Meta{BundleID: tt.id, PayloadLength: int64(len(body))}, strings.NewReader(body))
		if res.Status != tt.want || res.RetryAfter != tt.after {
			t.Errorf("%s: %v, want %v after %v", tt.id, res, tt.want, tt.after)
		}
		mu.Lock()
		stored := got[tt.id] == body
		mu.Unlock()
		if stored != tt.stored {
			t.Errorf("%s: stored = %v", tt.id, stored)
		}
	}
	if err := ad.Fetch(t.Context(), plugins.FetchRequest{}, func(plugins.Inbound) error { return nil }); !errors.Is(err, plugins.ErrUnsupported) {
		t.Errorf("Fetch = %v, want ErrUnsupported", err)
	}
}
