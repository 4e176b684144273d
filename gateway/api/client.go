package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway"
)

// Client talks to a node's API. The mulegate CLI is built on it.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Error is an error answer from the API.
type Error struct {
	Status int
	ErrorBody
}

func (e *Error) Error() string {
	msg := e.ErrorBody.Error
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Reason != "" {
		return fmt.Sprintf("%s (%d %s)", msg, e.Status, e.Reason)
	}
	return fmt.Sprintf("%s (%d)", msg, e.Status)
}

// NewClient makes a client for the API at addr: host:port, unix:/path, or
// an http:// URL. token is sent as a bearer token.
func NewClient(addr, token string) (*Client, error) {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		ExpectContinueTimeout: 10 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       time.Minute,
		DisableCompression:    true,
	}
	c := &Client{token: token, hc: &http.Client{Transport: tr}}
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if path == "" {
			return nil, fmt.Errorf("API address %q: want unix:/path/to/socket", addr)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		}
		c.base = "http://mulegate"
	case strings.HasPrefix(addr, "http://"), strings.HasPrefix(addr, "https://"):
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("API address %q: %w", addr, err)
		}
		c.base = strings.TrimSuffix(u.String(), "/")
	default:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("API address %q: want host:port, unix:/path or http://host:port: %v", addr, err)
		}
		c.base = "http://" + addr
	}
	return c, nil
}

// Do sends a request to path (which may carry a query) with the token. The
// caller closes the response body. Error answers (status ≥ 400) are
// returned as *Error, with the body closed.
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, length int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = length
		if length == 0 {
			req.Body = http.NoBody
		}
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if method == http.MethodPost && length > 0 {
		// Let the node refuse the bundle from its header before any
		// payload byte is sent.
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		e := &Error{Status: resp.StatusCode}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(data, &e.ErrorBody) != nil || e.ErrorBody.Error == "" {
			e.ErrorBody.Error = strings.TrimSpace(string(data))
		}
		return nil, e
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	return c.doJSON(ctx, http.MethodGet, path, v)
}

func (c *Client) doJSON(ctx context.Context, method, path string, v any) error {
	var body io.Reader
	if method == http.MethodPost {
		body = http.NoBody
	}
	resp, err := c.Do(ctx, method, path, body, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Send sends a bundle whose payload is the length bytes of payload, and
// returns once the node has stored it durably.
func (c *Client) Send(ctx context.Context, p SendParams, payload io.Reader, length int64) (SendResult, error) {
	var res SendResult
	if payload == nil {
		payload = http.NoBody
	}
	resp, err := c.Do(ctx, http.MethodPost, "/v1/bundles?"+p.Query(), payload, length)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("reading the answer to a send: %w", err)
	}
	return res, nil
}

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (gateway.Status, error) {
	var s gateway.Status
	return s, c.getJSON(ctx, "/v1/status", &s)
}

// Peers is GET /v1/peers.
func (c *Client) Peers(ctx context.Context) ([]gateway.PeerStatus, error) {
	var p Peers
	return p.Peers, c.getJSON(ctx, "/v1/peers", &p)
}

// Bundles is GET /v1/bundles.
func (c *Client) Bundles(ctx context.Context, q BundleQuery) ([]gateway.BundleInfo, error) {
	var b Bundles
	path := "/v1/bundles"
	if qs := q.Query(); qs != "" {
		path += "?" + qs
	}
	return b.Bundles, c.getJSON(ctx, path, &b)
}

// Bundle is GET /v1/bundles/{id}.
func (c *Client) Bundle(ctx context.Context, id string) (gateway.BundleInfo, error) {
	var b gateway.BundleInfo
	return b, c.getJSON(ctx, BundlePath(id), &b)
}

// Endpoints is GET /v1/endpoints.
func (c *Client) Endpoints(ctx context.Context) (Endpoints, error) {
	var e Endpoints
	return e, c.getJSON(ctx, "/v1/endpoints", &e)
}

// Register is POST /v1/endpoints?endpoint=EID.
func (c *Client) Register(ctx context.Context, endpoint bundle.EID) (Endpoints, error) {
	var e Endpoints
	return e, c.doJSON(ctx, http.MethodPost, "/v1/endpoints?"+url.Values{"endpoint": {endpoint.String()}}.Encode(), &e)
}

// Deliveries is GET /v1/deliveries?endpoint=EID.
func (c *Client) Deliveries(ctx context.Context, endpoint bundle.EID, limit int) ([]Delivery, error) {
	q := url.Values{"endpoint": {endpoint.String()}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var d Deliveries
	return d.Deliveries, c.getJSON(ctx, "/v1/deliveries?"+q.Encode(), &d)
}

// Ack is POST /v1/deliveries/{id}/ack?endpoint=EID.
func (c *Client) Ack(ctx context.Context, endpoint bundle.EID, id string) error {
	var r AckResult
	return c.doJSON(ctx, http.MethodPost, AckPath(id, endpoint.String()), &r)
}

// Payload is a payload being downloaded.
type Payload struct {
	io.ReadCloser
	// Length is the payload's length in bytes.
	Length int64
	// CRC32C is the stored payload's CRC-32C (Castagnoli), to check what
	// was read against; HasCRC says whether the node sent it.
	CRC32C uint32
	HasCRC bool
}

// OpenPayload is GET /v1/bundles/{id}/payload. The caller closes it.
func (c *Client) OpenPayload(ctx context.Context, id string) (*Payload, error) {
	resp, err := c.Do(ctx, http.MethodGet, PayloadPath(id), nil, 0)
	if err != nil {
		return nil, err
	}
	p := &Payload{ReadCloser: resp.Body, Length: resp.ContentLength}
	if v := resp.Header.Get(PayloadChecksumHeader); v != "" {
		if n, err := strconv.ParseUint(v, 16, 32); err == nil {
			p.CRC32C, p.HasCRC = uint32(n), true
		}
	}
	return p, nil
}

// Ready is GET /readyz: nil when the node is serving.
func (c *Client) Ready(ctx context.Context) error {
	var r Ready
	return c.getJSON(ctx, "/readyz", &r)
}

// Stream follows GET /v1/deliveries/stream?endpoint=EID and calls fn for
// each delivery, in order, until ctx ends (it then returns ctx.Err()), fn
// fails, or the stream breaks.
func (c *Client) Stream(ctx context.Context, endpoint bundle.EID, fn func(Delivery) error) error {
	resp, err := c.Do(ctx, http.MethodGet, "/v1/deliveries/stream?"+url.Values{"endpoint": {endpoint.String()}}.Encode(), nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("the delivery stream answered with %q, not text/event-stream", ct)
	}
	err = ReadEvents(resp.Body, func(ev Event) error {
		switch ev.Name {
		case "delivery":
			var d Delivery
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return fmt.Errorf("a delivery event: %w", err)
			}
			return fn(d)
		case "error":
			var e ErrorBody
			_ = json.Unmarshal(ev.Data, &e)
			return &Error{Status: http.StatusInternalServerError, ErrorBody: e}
		}
		return nil
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		err = errors.New("the node ended the delivery stream")
	}
	return err
}

// Event is one Server-Sent Event.
type Event struct {
	Name string
	ID   string
	Data []byte
}

// MaxEventLine bounds one line of an event stream.
const MaxEventLine = 1 << 20

// ReadEvents parses a Server-Sent Events stream (the subset the API
// writes: event, id, data and comment lines) and calls fn for each event.
// It returns nil at the end of r.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), MaxEventLine)
	sc.Split(scanEventLines)
	var ev Event
	var data [][]byte
	has := false
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if has {
				ev.Data = bytes.Join(data, []byte("\n"))
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, data, has = Event{}, nil, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.Name, has = string(value), true
		case "id":
			ev.ID, has = string(value), true
		case "data":
			data, has = append(data, bytes.Clone(value)), true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the event stream: %w", err)
	}
	return nil
}

// scanEventLines splits at CRLF, LF or a lone CR, the line ends of the
// event stream format.
func scanEventLines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // a CR at the end: is an LF next?
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// Adapters is GET /v1/adapters.
func (c *Client) Adapters(ctx context.Context) ([]Adapter, error) {
	var a Adapters
	return a.Adapters, c.getJSON(ctx, "/v1/adapters", &a)
}

// CheckAdapter is POST /v1/adapters/{name}/check.
func (c *Client) CheckAdapter(ctx context.Context, name string) (AdapterCheck, error) {
	var res AdapterCheck
	return res, c.doJSON(ctx, http.MethodPost, "/v1/adapters/"+url.PathEscape(name)+"/check", &res)
}
