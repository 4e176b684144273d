package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// config is the adapter's block in the node's configuration:
//
//	config:
//	  url: https://example.com/ingest   # required
//	  headers: {Authorization: "Bearer …"}
//	  timeout: 30s
type config struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Timeout sdk.Duration      `json:"timeout"`
}

// webhook POSTs each bundle's payload to a URL. It only delivers, so it
// embeds sdk.DeliverOnly for Fetch, Ack and Nack.
type webhook struct {
	sdk.DeliverOnly
	log *zap.Logger

	mu     sync.Mutex
	cfg    *config
	client *http.Client
}

func newWebhook(log *zap.Logger) *webhook { return &webhook{log: log} }

func (w *webhook) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "webhook", Version: "0.1.0", Deliver: true}, nil
}

// Configure validates the block and reports every problem by key.
func (w *webhook) Configure(_ context.Context, raw json.RawMessage) error {
	cfg := config{Timeout: sdk.Duration(30 * time.Second)}
	errs, ok := sdk.DecodeConfigErrors(raw, &cfg)
	if !ok {
		return errs // not a JSON object: nothing to validate
	}
	if !errs.Has("url") {
		if u, err := url.Parse(cfg.URL); cfg.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = errs.Add("url", "must be an http:// or https:// URL, not %q", cfg.URL)
		}
	}
	if err := errs.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	w.cfg = &cfg
	w.client = &http.Client{Timeout: time.Duration(cfg.Timeout)}
	w.mu.Unlock()
	w.log.Info("configured", zap.String("url", cfg.URL))
	return nil
}

func (w *webhook) current() (*config, *http.Client, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cfg == nil {
		return nil, nil, plugins.ErrNotConfigured
	}
	return w.cfg, w.client, nil
}

// Check calls the service reachable when it answers HTTP at all.
func (w *webhook) Check(ctx context.Context) error {
	cfg, client, err := w.current()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, cfg.URL, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", plugins.ErrUnreachable, err)
	}
	_ = resp.Body.Close()
	return nil
}

// Deliver streams the payload as the request body. The bundle ID goes in
// Idempotency-Key, so a receiver can drop the redeliveries that
// at-least-once delivery brings.
func (w *webhook) Deliver(ctx context.Context, meta plugins.Meta, payload io.Reader) plugins.Result {
	cfg, client, err := w.current()
	if err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, io.NopCloser(payload))
	if err != nil {
		return plugins.Rejected(err.Error())
	}
	req.ContentLength = meta.PayloadLength
	if meta.PayloadLength == 0 {
		req.Body = http.NoBody
	}
	for k, v := range cfg.Headers {
		req.Header.Set(k, v)
	}
	ctype := meta.Options["content_type"]
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Idempotency-Key", meta.BundleID)
	req.Header.Set("X-Mulegate-Source", meta.Source)
	req.Header.Set("X-Mulegate-Destination", meta.Destination)
	resp, err := client.Do(req)
	if err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return plugins.Delivered()
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return plugins.RetryLater(retryAfter(resp.Header.Get("Retry-After")), resp.Status)
	default:
		// Another 4xx: sending the same bundle again will not help.
		return plugins.Rejected(resp.Status)
	}
}

// retryAfter reads a Retry-After header given in seconds.
func retryAfter(h string) time.Duration {
	if s, err := strconv.Atoi(h); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}
