package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// testAPI is a real node (no peers, no QUIC listener) with its API served
// on a loopback port.
type testAPI struct {
	node   *gateway.Node
	srv    *api.Server
	base   string
	token  string
	client *api.Client
	cfg    *config.Config
}

type nodeOpt func(*config.Config)

func newNode(t *testing.T, opts ...nodeOpt) (*gateway.Node, *config.Config) {
	t.Helper()
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node = "dtn://a/"
	cfg.DataDir = t.TempDir()
	cfg.QUIC.Listen = ""
	cfg.Discovery.Enabled = false
	cfg.Adapters, cfg.Routes = nil, nil
	for _, o := range opts {
		o(cfg)
	}
	cfg = cfg.Expanded()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, err := gateway.New(gateway.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return n, cfg
}

// startAPI serves n's API; start says whether to start the node first.
func startAPI(t *testing.T, n *gateway.Node, cfg *config.Config, start bool) *testAPI {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if start {
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	token, _, err := api.LoadOrCreateToken(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Node: n, Token: token, KeepAlive: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := api.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		cancel()
		if err := n.Close(); err != nil {
			t.Errorf("closing the node: %v", err)
		}
	})
	c, err := api.NewClient(ln.Addr().String(), token)
	if err != nil {
		t.Fatal(err)
	}
	return &testAPI{node: n, srv: srv, base: "http://" + ln.Addr().String(), token: token, client: c, cfg: cfg}
}

func newTestAPI(t *testing.T, opts ...nodeOpt) *testAPI {
	t.Helper()
	n, cfg := newNode(t, opts...)
	return startAPI(t, n, cfg, true)
}

// do sends a raw request; token "" sends none.
func (a *testAPI) do(t *testing.T, method, path, token string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, a.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, data
}

// errorBody decodes an error answer, failing the test if it is not one.
func errorBody(t *testing.T, resp *http.Response, data []byte) api.ErrorBody {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error answer with Content-Type %q: %s", ct, data)
	}
	var e api.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error answer is not an ErrorBody: %v: %s", err, data)
	}
	if e.Error == "" || e.Reason == "" {
		t.Fatalf("error answer without error or reason: %s", data)
	}
	return e
}

// metric reads one sample from the node's /metrics: the value of name with
// exactly the given labels (all of them, others ignored); ok is false if
// there is none.
func (a *testAPI) metric(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	resp, data := a.do(t, "GET", "/metrics", a.token, nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, data)
	}
	return sample(t, data, name, labels)
}

func sample(t *testing.T, data []byte, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// eventually polls cond until it holds or the deadline passes. Use it only
// where the system is asynchronous.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
