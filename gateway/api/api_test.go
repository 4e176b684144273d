package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway/api"
)

// Every route but /healthz refuses a request without the right token, with
// 401 and a JSON error that says how to authenticate.
func TestAuthRequired(t *testing.T) {
	a := newTestAPI(t)
	for _, route := range a.srv.Routes() {
		method, path, _ := strings.Cut(route, " ")
		path = strings.ReplaceAll(path, "{id}", url.PathEscape("dtn://a/|1.0"))
		for _, c := range []struct {
			name, header string
		}{
			{"no header", ""},
			{"wrong token", "Bearer " + strings.Repeat("0", len(a.token))},
			{"token prefix", "Bearer " + a.token[:len(a.token)-1]},
			{"basic scheme", "Basic " + a.token},
			{"bare token", a.token},
		} {
			t.Run(route+"/"+c.name, func(t *testing.T) {
				hdr := map[string]string{}
				if c.header != "" {
					hdr["Authorization"] = c.header
				}
				resp, data := a.do(t, method, path, "", strings.NewReader(""), hdr)
				if path == "/healthz" {
					if resp.StatusCode != 200 {
						t.Fatalf("/healthz without a token: %d %s", resp.StatusCode, data)
					}
					return
				}
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("%s with %s: %d, want 401: %s", route, c.name, resp.StatusCode, data)
				}
				if e := errorBody(t, resp, data); e.Reason != "unauthorized" {
					t.Errorf("reason %q, want unauthorized", e.Reason)
				}
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
				}
			})
		}
	}
	// An unknown path is refused without a token too: the API's shape is not
	// probed without one.
	resp, data := a.do(t, "GET", "/v1/secret", "", nil, nil)
	if resp.StatusCode != 401 {
		t.Errorf("unknown route without a token: %d %s", resp.StatusCode, data)
	}
	// And the right token opens the door.
	resp, data = a.do(t, "GET", "/v1/status", a.token, nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status with the token: %d %s", resp.StatusCode, data)
	}
}

// Malformed requests get a 4xx with a JSON body that says what is wrong,
// naming the parameter; refusals by the node carry the BPv7 reason.
func TestMalformedRequests(t *testing.T) {
	a := newTestAPI(t, func(c *config.Config) { c.Limits.MaxBundleSize = 1 << 20 })
	unknownID := url.PathEscape("dtn://a/|12345.6")
	cases := []struct {
		name      string
		method    string
		path      string
		body      string
		hdr       map[string]string
		chunked   bool
		status    int
		reason    string
		param     string
		errSubstr string
	}{
		{name: "send without destination", method: "POST", path: "/v1/bundles", status: 400, reason: "bad_parameter", param: "destination", errSubstr: "required"},
		{name: "send to a non-EID", method: "POST", path: "/v1/bundles?destination=mailto:bob", status: 400, param: "destination", errSubstr: "not an endpoint ID"},
		{name: "send to dtn:none", method: "POST", path: "/v1/bundles?destination=dtn:none", status: 400, param: "destination", errSubstr: "dtn:none"},
		{name: "lifetime not a duration", method: "POST", path: "/v1/bundles?destination=dtn://c/x&lifetime=forever", status: 400, param: "lifetime", errSubstr: "not a duration"},
		{name: "negative lifetime", method: "POST", path: "/v1/bundles?destination=dtn://c/x&lifetime=-5m", status: 400, param: "lifetime", errSubstr: "at least"},
		{name: "unknown report", method: "POST", path: "/v1/bundles?destination=dtn://c/x&report=sometimes", status: 400, param: "report", errSubstr: "sometimes"},
		{name: "flag a sender may not set", method: "POST", path: "/v1/bundles?destination=dtn://c/x&flags=is_fragment", status: 400, param: "flags", errSubstr: "is_fragment"},
		{name: "report_to without report", method: "POST", path: "/v1/bundles?destination=dtn://c/x&report_to=dtn://a/reports", status: 400, param: "report_to", errSubstr: "without report"},
		{name: "hop limit zero", method: "POST", path: "/v1/bundles?destination=dtn://c/x&hop_limit=0", status: 400, param: "hop_limit", errSubstr: "1 to 255"},
		{name: "hop limit too high", method: "POST", path: "/v1/bundles?destination=dtn://c/x&hop_limit=256", status: 400, param: "hop_limit", errSubstr: "1 to 255"},
		{name: "sign not a bool", method: "POST", path: "/v1/bundles?destination=dtn://c/x&sign=maybe", status: 400, param: "sign", errSubstr: "true or false"},
		{name: "unknown parameter", method: "POST", path: "/v1/bundles?destination=dtn://c/x&colour=red", status: 400, param: "colour", errSubstr: "unknown parameter"},
		{name: "parameter twice", method: "POST", path: "/v1/bundles?destination=dtn://c/x&destination=dtn://c/y", status: 400, param: "destination", errSubstr: "2 times"},
		{name: "bad query string", method: "POST", path: "/v1/bundles?destination=%zz", status: 400, param: "query", errSubstr: "query string"},
		{name: "chunked upload", method: "POST", path: "/v1/bundles?destination=dtn://c/x", body: "hello", chunked: true, status: 411, reason: "length_required", errSubstr: "Content-Length"},
		{name: "lifetime over the node's maximum", method: "POST", path: "/v1/bundles?destination=dtn://c/x&lifetime=1000d", body: "hi", status: 422, reason: "no_information", errSubstr: "lifetime exceeds"},
		{name: "source on another node", method: "POST", path: "/v1/bundles?destination=dtn://c/x&source=dtn://b/app", body: "hi", status: 422, errSubstr: "not an endpoint of this node"},
		{name: "source a group", method: "POST", path: "/v1/bundles?destination=dtn://c/x&source=dtn://~g/app", body: "hi", status: 400, param: "source"},
		{name: "bundles with an unknown state", method: "GET", path: "/v1/bundles?state=lost", status: 400, param: "state", errSubstr: "pending"},
		{name: "bundles limit zero", method: "GET", path: "/v1/bundles?limit=0", status: 400, param: "limit"},
		{name: "bundles limit not a number", method: "GET", path: "/v1/bundles?limit=ten", status: 400, param: "limit"},
		{name: "bundle ID malformed", method: "GET", path: "/v1/bundles/garbage", status: 400, param: "id", errSubstr: "SOURCE|TIME.SEQ"},
		{name: "bundle not held", method: "GET", path: "/v1/bundles/" + unknownID, status: 404, reason: "not_found"},
		{name: "payload not held", method: "GET", path: "/v1/bundles/" + unknownID + "/payload", status: 404, reason: "not_found"},
		{name: "deliveries without endpoint", method: "GET", path: "/v1/deliveries", status: 400, param: "endpoint", errSubstr: "required"},
		{name: "deliveries of another node", method: "GET", path: "/v1/deliveries?endpoint=dtn://b/inbox", status: 400, param: "endpoint", errSubstr: "belongs to node dtn://b/"},
		{name: "deliveries of an unregistered group", method: "GET", path: "/v1/deliveries?endpoint=dtn://~g/chat", status: 404, reason: "not_registered", param: "endpoint"},
		{name: "stream without endpoint", method: "GET", path: "/v1/deliveries/stream", status: 400, param: "endpoint"},
		{name: "ack of nothing", method: "POST", path: "/v1/deliveries/" + unknownID + "/ack?endpoint=dtn://a/inbox", status: 404, reason: "not_found"},
		{name: "ack without endpoint", method: "POST", path: "/v1/deliveries/" + unknownID + "/ack", status: 400, param: "endpoint"},
		{name: "register another node's endpoint", method: "POST", path: "/v1/endpoints?endpoint=dtn://b/x", status: 400, param: "endpoint", errSubstr: "belongs to node"},
		{name: "register dtn:none", method: "POST", path: "/v1/endpoints?endpoint=dtn:none", status: 400, param: "endpoint"},
		{name: "status with a parameter", method: "GET", path: "/v1/status?verbose=1", status: 400, param: "verbose"},
		{name: "no such route", method: "GET", path: "/v1/nope", status: 404, reason: "not_found"},
		{name: "wrong method", method: "DELETE", path: "/v1/bundles", status: 405, reason: "method_not_allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(c.body)
			if c.chunked {
				body = io.MultiReader(strings.NewReader(c.body)) // unknown length: sent chunked
			}
			resp, data := a.do(t, c.method, c.path, a.token, body, c.hdr)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, data)
			}
			e := errorBody(t, resp, data)
			if c.reason != "" && e.Reason != c.reason {
				t.Errorf("reason %q, want %q", e.Reason, c.reason)
			}
			if e.Param != c.param {
				t.Errorf("param %q, want %q (error %q)", e.Param, c.param, e.Error)
			}
			if !strings.Contains(e.Error, c.errSubstr) {
				t.Errorf("error %q does not say %q", e.Error, c.errSubstr)
			}
		})
	}

	// A POST with no Content-Length and no body at all (curl -X POST) is
	// refused as well: only the Go client always sends the header.
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/bundles?destination=dtn://c/x HTTP/1.1\r\nHost: mulegate\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", a.token)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusLengthRequired || errorBody(t, resp, data).Reason != "length_required" {
		t.Errorf("POST without Content-Length: %d %s", resp.StatusCode, data)
	}

	// Nothing any of these did was stored.
	if list, err := a.client.Bundles(context.Background(), api.BundleQuery{}); err != nil || len(list) != 0 {
		t.Errorf("after refused requests the node holds %d bundles (%v)", len(list), err)
	}
}

// A bundle over the node's size limit is refused from its header: with
// Expect: 100-continue the payload is never sent.
func TestOversizedRefusedBeforePayload(t *testing.T) {
	a := newTestAPI(t, func(c *config.Config) { c.Limits.MaxBundleSize = 1 << 20 })
	body := &countReader{r: io.LimitReader(zeros{}, 8<<20)}
	_, err := a.client.Send(context.Background(), api.SendParams{Destination: bundle.MustParseEID("dtn://c/x")}, body, 8<<20)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge || ae.Reason != "depleted_storage" {
		t.Fatalf("send of 8 MiB over a 1 MiB limit: %v, want 413 depleted_storage", err)
	}
	if !strings.Contains(ae.ErrorBody.Error, "too large") {
		t.Errorf("error %q does not say the bundle is too large", ae.ErrorBody.Error)
	}
	if body.n > 0 {
		t.Errorf("the client sent %d payload bytes of a bundle refused from its header", body.n)
	}
	if v, _ := a.metric(t, "mulegate_bundles_rejected_total", map[string]string{"door": "api", "reason": "depleted_storage"}); v != 1 {
		t.Errorf("mulegate_bundles_rejected_total{door=api,reason=depleted_storage} = %v, want 1", v)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// The whole application flow: register a group, send to it and to an
// endpoint of the node, follow the stream, fetch the payload, acknowledge.
func TestSendDeliverAck(t *testing.T) {
	a := newTestAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := a.client
	group := bundle.MustParseEID("dtn://~campfire/chat")
	eps, err := c.Register(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if eps.Node != "dtn://a/" || len(eps.Endpoints) != 1 || eps.Endpoints[0] != group.String() {
		t.Fatalf("after registering: %+v", eps)
	}

	// Follow the group before anything is sent.
	got := make(chan api.Delivery, 4)
	streamErr := make(chan error, 1)
	sctx, scancel := context.WithCancel(ctx)
	go func() {
		streamErr <- c.Stream(sctx, group, func(d api.Delivery) error { got <- d; return nil })
	}()

	payload := make([]byte, 300<<10) // larger than the store's inline limit
	rand.Read(payload)
	res, err := c.Send(ctx, api.SendParams{Destination: group, Lifetime: time.Hour, Reports: bundle.FlagReportDelivery}, bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Destination != group.String() || res.Source != "dtn://a/" || res.Length != uint64(len(payload)) || res.URL != api.BundlePath(res.ID) {
		t.Errorf("send answered %+v", res)
	}
	// The answer came after Node.Send: the bundle is held now.
	bi, err := c.Bundle(ctx, res.ID)
	if err != nil {
		t.Fatalf("the bundle just sent: %v", err)
	}
	if bi.Length != uint64(len(payload)) || bi.From != "api" {
		t.Errorf("held bundle: %+v", bi)
	}

	var d api.Delivery
	select {
	case d = <-got:
	case err := <-streamErr:
		t.Fatalf("the stream ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no delivery on the stream")
	}
	if d.ID != res.ID || d.Endpoint != group.String() || d.Source != "dtn://a/" || d.Length != uint64(len(payload)) || d.HopCount == nil || d.HopCount.Count != 0 {
		t.Errorf("delivery %+v", d)
	}
	list, err := c.Deliveries(ctx, group, 0)
	if err != nil || len(list) != 1 || list[0].ID != res.ID {
		t.Fatalf("deliveries: %v %+v", err, list)
	}

	p, err := c.OpenPayload(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(p)
	p.Close()
	if err != nil || !bytes.Equal(data, payload) {
		t.Fatalf("payload: %v, %d bytes, equal %v", err, len(data), bytes.Equal(data, payload))
	}
	if !p.HasCRC || p.CRC32C != crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)) || p.Length != int64(len(payload)) {
		t.Errorf("payload length %d, CRC-32C %08x (sent: %v)", p.Length, p.CRC32C, p.HasCRC)
	}
	// A range, to resume a download.
	resp, part := a.do(t, "GET", d.PayloadURL, a.token, nil, map[string]string{"Range": "bytes=100-199"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, payload[100:200]) {
		t.Errorf("range request: %d, %d bytes", resp.StatusCode, len(part))
	}

	if err := c.Ack(ctx, group, d.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(ctx, group, d.ID); err != nil {
		t.Errorf("a second ack is not idempotent: %v", err)
	}
	if list, err := c.Deliveries(ctx, group, 0); err != nil || len(list) != 0 {
		t.Errorf("after the ack: %v %+v", err, list)
	}

	// A second bundle, to an endpoint of the node itself (no registering),
	// arrives on a stream opened after it was stored.
	inbox := bundle.MustParseEID("dtn://a/inbox")
	res2, err := c.Send(ctx, api.SendParams{Destination: inbox}, strings.NewReader("hello"), 5)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Stream(ctx, inbox, func(d api.Delivery) error {
		if d.ID != res2.ID || d.Length != 5 {
			t.Errorf("inbox delivery %+v", d)
		}
		return io.EOF
	})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("inbox stream: %v", err)
	}
	if err := c.Ack(ctx, inbox, res2.ID); err != nil {
		t.Fatal(err)
	}
	// Delivered at its destination node and taken: deleted.
	if _, err := c.Bundle(ctx, res2.ID); !isStatus(err, 404) {
		t.Errorf("a delivered bundle is still held: %v", err)
	}

	scancel()
	if err := <-streamErr; !errors.Is(err, context.Canceled) {
		t.Errorf("stream after cancel: %v", err)
	}
	if v, _ := a.metric(t, "mulegate_api_requests_total", map[string]string{"route": "send", "code": "201"}); v != 2 {
		t.Errorf("mulegate_api_requests_total{route=send,code=201} = %v, want 2", v)
	}
	if v, _ := a.metric(t, "mulegate_bundles_stored_total", map[string]string{"door": "api"}); v != 2 {
		t.Errorf("mulegate_bundles_stored_total{door=api} = %v, want 2", v)
	}
	if v, _ := a.metric(t, "mulegate_bundles_delivered_total", map[string]string{"to": "local"}); v != 2 {
		t.Errorf("mulegate_bundles_delivered_total{to=local} = %v, want 2", v)
	}
}

func isStatus(err error, status int) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Status == status
}

// A client that goes away halfway through its upload leaves nothing behind:
// no bundle, no reservation, no temporary file.
func TestUploadCutOffStoresNothing(t *testing.T) {
	a := newTestAPI(t)
	const length = 8 << 20
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/bundles?destination=dtn://a/inbox HTTP/1.1\r\nHost: mulegate\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", a.token, length)
	if _, err := io.CopyN(conn, zeros{}, length/2); err != nil {
		t.Fatal(err)
	}
	// The node has begun storing it: its reservation is held.
	eventually(t, 10*time.Second, "the upload never started storing", func() bool {
		return a.node.Store().Stats().Receiving == 1
	})
	conn.Close()

	// The handler answers (to nobody) once Node.Send has given up.
	eventually(t, 10*time.Second, "the cut-off upload was never answered", func() bool {
		v, _ := a.metric(t, "mulegate_api_requests_total", map[string]string{"route": "send", "code": "400"})
		return v == 1
	})
	st := a.node.Store().Stats()
	if st.Bundles != 0 || st.Receiving != 0 || st.UsedBytes != 0 || st.Partials != 0 {
		t.Errorf("after a cut-off upload the store holds %+v", st)
	}
	list, err := a.client.Bundles(context.Background(), api.BundleQuery{})
	if err != nil || len(list) != 0 {
		t.Errorf("after a cut-off upload: %v %+v", err, list)
	}
	if d, err := a.client.Deliveries(context.Background(), bundle.MustParseEID("dtn://a/inbox"), 0); err != nil || len(d) != 0 {
		t.Errorf("deliveries after a cut-off upload: %v %+v", err, d)
	}
	tmp, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, "store", "tmp"))
	if len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	if v, _ := a.metric(t, "mulegate_bundles_stored_total", map[string]string{"door": "api"}); v != 0 {
		t.Errorf("stored_total{door=api} = %v after a cut-off upload", v)
	}

	// The same upload, whole, is stored: the checks above can see a bundle.
	res, err := a.client.Send(context.Background(), api.SendParams{Destination: bundle.MustParseEID("dtn://a/inbox")}, io.LimitReader(zeros{}, length), length)
	if err != nil {
		t.Fatal(err)
	}
	if st := a.node.Store().Stats(); st.Bundles != 1 {
		t.Errorf("after a whole upload (%s) the store holds %d bundles", res.ID, st.Bundles)
	}
}

// /readyz says whether the node has started; /healthz only that the
// process answers.
func TestReadiness(t *testing.T) {
	n, cfg := newNode(t)
	a := startAPI(t, n, cfg, false)
	resp, data := a.do(t, "GET", "/readyz", a.token, nil, nil)
	if resp.StatusCode != 503 || errorBody(t, resp, data).Reason != "not_ready" {
		t.Fatalf("readyz before Start: %d %s", resp.StatusCode, data)
	}
	if resp, data := a.do(t, "GET", "/healthz", "", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("healthz before Start: %d %s", resp.StatusCode, data)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.client.Ready(context.Background()); err != nil {
		t.Fatalf("readyz after Start: %v", err)
	}
	cancel()
	resp, data = a.do(t, "GET", "/readyz", a.token, nil, nil)
	if resp.StatusCode != 503 || !strings.Contains(string(data), "shutting down") {
		t.Fatalf("readyz after the node's context ended: %d %s", resp.StatusCode, data)
	}
}

// The token is made once, private, and kept; a token file others can read
// is made private.
func TestToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tok, tightened, err := api.LoadOrCreateToken(dir)
	if err != nil || tightened || len(tok) != 64 {
		t.Fatalf("first run: %q %v %v", tok, tightened, err)
	}
	st, err := os.Stat(api.TokenPath(dir))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	again, _, err := api.LoadOrCreateToken(dir)
	if err != nil || again != tok {
		t.Fatalf("second run: %q %v, want the same token", again, err)
	}
	if err := os.Chmod(api.TokenPath(dir), 0o644); err != nil {
		t.Fatal(err)
	}
	again, tightened, err = api.LoadOrCreateToken(dir)
	if err != nil || again != tok || !tightened {
		t.Fatalf("readable token: %q %v %v", again, tightened, err)
	}
	if st, _ := os.Stat(api.TokenPath(dir)); st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v after tightening", st.Mode().Perm())
	}
	if read, err := api.ReadToken(dir); err != nil || read != tok {
		t.Errorf("ReadToken: %q %v", read, err)
	}
	other := t.TempDir()
	if tok2, _, _ := api.LoadOrCreateToken(other); tok2 == tok {
		t.Error("two nodes got the same token")
	}
}

// The API serves on a Unix socket, private to its user, and removes it on
// shutdown.
func TestUnixSocket(t *testing.T) {
	n, cfg := newNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	sock := filepath.Join(t.TempDir(), "api.sock")
	srv, err := api.New(api.Options{Node: n, Token: strings.Repeat("t", 32)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := api.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v)", st.Mode().Perm(), err)
	}
	c, err := api.NewClient("unix:"+sock, strings.Repeat("t", 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Node != cfg.Node {
		t.Fatalf("status over the socket: %+v %v", st, err)
	}
	// A second server on a live socket is refused.
	if _, err := api.Listen("unix:" + sock); err == nil {
		t.Error("a second listener took over a live socket")
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after shutdown: %v", err)
	}
	// A stale socket file (a crash) is replaced.
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := api.Listen("unix:" + sock); err == nil {
		ln.Close()
		t.Error("a regular file at the socket path was replaced")
	}
}

// Shutdown ends delivery streams rather than waiting for them forever.
func TestShutdownEndsStreams(t *testing.T) {
	n, cfg := newNode(t)
	a := startAPI(t, n, cfg, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := a.client.Do(ctx, "GET", "/v1/deliveries/stream?endpoint=dtn://a/inbox", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ": deliveries for dtn://a/inbox") {
		t.Fatalf("stream opening: %q %v", line, err)
	}
	// Idle, it sends keep-alive comments.
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, ": keep-alive") {
			break
		}
	}
	start := time.Now()
	if err := a.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a stream open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown waited %v for the stream", d)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Logf("stream ended with %v", err)
	}
}

// Bundle IDs round-trip through paths, fragments included.
func TestPaths(t *testing.T) {
	for _, id := range []string{"dtn://a/|797000000000.0", "ipn:12.0|5.1|0+10", "dtn://~g/x|1.2"} {
		p := api.PayloadPath(id)
		u, err := url.Parse("http://x" + p)
		if err != nil {
			t.Fatal(err)
		}
		seg := strings.TrimSuffix(strings.TrimPrefix(u.EscapedPath(), "/v1/bundles/"), "/payload")
		if got, _ := url.PathUnescape(seg); got != id || strings.Contains(seg, "/") {
			t.Errorf("%s → %s → %q", id, p, got)
		}
	}
	var d api.Delivery
	if err := json.Unmarshal([]byte(`{"ack_url":"x"}`), &d); err != nil || d.AckURL != "x" {
		t.Error(err)
	}
}
