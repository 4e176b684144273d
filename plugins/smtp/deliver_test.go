package smtp_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mulegate/mulegate/internal/testpki"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/smtp"
	"github.com/mulegate/mulegate/plugins/smtp/internal/mailpittest"
)

// testMeta returns bundle i's metadata, sent from dtn://mule<i%5>/app to
// dest.
func testMeta(i int, dest string, size int) plugins.Meta {
	src := fmt.Sprintf("dtn://mule%d/app", i%5)
	created := uint64(800000000000 + i)
	return plugins.Meta{
		BundleID:        fmt.Sprintf("%s|%d.%d", src, created, i),
		Source:          src,
		Destination:     dest,
		ReportTo:        "dtn:none",
		CreationTime:    created,
		Sequence:        uint64(i),
		Lifetime:        24 * time.Hour,
		PayloadLength:   int64(size),
		SignatureStatus: "valid:campfire/mule" + fmt.Sprint(i%5),
		Route:           "mail",
	}
}

func deliver(t testing.TB, ad plugins.Adapter, meta plugins.Meta, payload []byte) plugins.Result {
	t.Helper()
	meta.PayloadLength = int64(len(payload))
	return ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
}

func one(t testing.TB, srv *mailpittest.Server, msgID string, want int) []mailpittest.Summary {
	t.Helper()
	got := srv.ByMessageID(t, msgID)
	if len(got) != want {
		t.Fatalf("mailpit holds %d messages with Message-ID %s, want %d", len(got), msgID, want)
	}
	return got
}

func header(t testing.TB, h map[string][]string, name string) string {
	t.Helper()
	v := h[name]
	if len(v) != 1 {
		t.Errorf("header %s: %q, want exactly one", name, v)
		return ""
	}
	return v[0]
}

// TestDeliverThroughPlugin: the adapter, as its own process, sends a
// complete message as it is and wraps a plain body; mailpit's API shows
// the headers, the Message-ID and the body bytes; a redelivery sends a
// message with the same Message-ID.
func TestDeliverThroughPlugin(t *testing.T) {
	srv := mailpittest.Start(t)
	_, ad := startAdapter(t, outbound(srv, obj{"subject": "[{src_node}] {service}"}))
	if err := ad.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}

	t.Run("complete message", func(t *testing.T) {
		body := "Level at gauge 3: 2.41 m\r\n.a line that starts with a dot\r\n..and two\r\nlast line\r\n"
		msg := "From: Field Station <station@field.example>\r\n" +
			"To: Bob <bob@example.org>\r\n" +
			"Cc: carol@example.org\r\n" +
			"Bcc: dave@example.org\r\n" +
			"Subject: Water levels,\r\n folded\r\n" +
			"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
			"Message-ID: <levels-42@field.example>\r\n" +
			"X-Mulegate-Bundle-ID: spoofed\r\n" +
			"X-Custom: kept\r\n" +
			"\r\n" + body
		meta := testMeta(1, "dtn://cloud/mail", 0)
		for attempt := 1; attempt <= 2; attempt++ {
			if res := deliver(t, ad, meta, []byte(msg)); res.Status != plugins.OK {
				t.Fatalf("attempt %d: %v", attempt, res)
			}
			one(t, srv, "levels-42@field.example", attempt) // at least once: the same Message-ID again
		}
		for _, m := range one(t, srv, "levels-42@field.example", 2) {
			h := srv.Headers(t, m.ID)
			for name, want := range map[string]string{
				"X-Mulegate-Bundle-Id":   meta.BundleID,
				"X-Mulegate-Source":      meta.Source,
				"X-Mulegate-Destination": meta.Destination,
				"X-Mulegate-Signature":   meta.SignatureStatus,
				"X-Mulegate-Created":     meta.Created().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
				"X-Custom":               "kept",
				"Message-Id":             "<levels-42@field.example>",
				"Subject":                "Water levels, folded",
				"Return-Path":            "<station@field.example>",
				"Date":                   "Mon, 02 Jan 2006 15:04:05 +0000",
			} {
				if got := header(t, h, name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			// The envelope reached Bcc's address, but Bcc was not sent:
			// mailpit lists the envelope recipients that no header names.
			if got := h["Bcc"]; len(got) != 1 || got[0] != "dave@example.org" {
				t.Errorf("Bcc (mailpit's, from the envelope) = %q, want [dave@example.org]", got)
			}
			raw := srv.Raw(t, m.ID)
			if bytes.Count(raw, []byte("\r\nBcc:")) != 0 || bytes.Count(raw, []byte("Bcc:")) != 1 {
				t.Errorf("the message carried its Bcc field:\n%s", raw)
			}
			if _, got := srv.Parsed(t, m.ID); string(got) != body {
				t.Errorf("body %q, want %q", got, body)
			}
		}
	})

	t.Run("wrapped text body", func(t *testing.T) {
		meta := testMeta(2, "dtn://cloud/mail/alice@example.org", 0)
		body := "hello from the field\nsecond line\n"
		msgID := smtp.MessageIDFor(meta.BundleID, "gw.example.org")
		for attempt := 1; attempt <= 2; attempt++ {
			if res := deliver(t, ad, meta, []byte(body)); res.Status != plugins.OK {
				t.Fatalf("attempt %d: %v", attempt, res)
			}
		}
		for _, m := range one(t, srv, msgID, 2) {
			h := srv.Headers(t, m.ID)
			for name, want := range map[string]string{
				"From":                      "<mule2@gw.example.org>",
				"To":                        "<alice@example.org>",
				"Subject":                   "[mule2] mail.alice@example.org",
				"Message-Id":                msgID,
				"Content-Type":              "text/plain; charset=utf-8",
				"Content-Transfer-Encoding": "7bit",
				"X-Mulegate-Bundle-Id":      meta.BundleID,
				"X-Mulegate-Signature":      meta.SignatureStatus,
				"Date":                      meta.Created().Format(time.RFC1123Z),
			} {
				if got := header(t, h, name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			// Text lines travel with CRLF, as SMTP wants them.
			if _, got := srv.Parsed(t, m.ID); string(got) != strings.ReplaceAll(body, "\n", "\r\n") {
				t.Errorf("body %q", got)
			}
		}
	})

	t.Run("wrapped binary and 8-bit bodies", func(t *testing.T) {
		bin := make([]byte, 3000)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range bin {
			bin[i] = byte(r.Uint32())
		}
		for i, tc := range []struct {
			payload []byte
			ctype   string
		}{
			{bin, "application/octet-stream"},
			{[]byte("Grüße aus dem Feld — ☀\n"), "text/plain; charset=utf-8"}, // mailpit has no 8BITMIME: base64
		} {
			meta := testMeta(10+i, "dtn://cloud/mail/alice@example.org", 0)
			meta.Options = map[string]string{"to": "Bob <bob@example.org>, carol@example.org", "subject": "Grüße"}
			if res := deliver(t, ad, meta, tc.payload); res.Status != plugins.OK {
				t.Fatalf("%d: %v", i, res)
			}
			m := one(t, srv, smtp.MessageIDFor(meta.BundleID, "gw.example.org"), 1)[0]
			hdr, body := srv.Parsed(t, m.ID)
			if hdr.Get("Content-Type") != tc.ctype || hdr.Get("Content-Transfer-Encoding") != "base64" {
				t.Errorf("%d: Content-Type %q, encoding %q", i, hdr.Get("Content-Type"), hdr.Get("Content-Transfer-Encoding"))
			}
			if m.Subject != "Grüße" || hdr.Get("To") != `"Bob" <bob@example.org>, <carol@example.org>` {
				t.Errorf("%d: Subject %q, To %q", i, m.Subject, hdr.Get("To"))
			}
			got, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\r\n", ""))
			if err != nil || !bytes.Equal(got, tc.payload) {
				t.Errorf("%d: decoded body differs (%v)", i, err)
			}
			for _, l := range strings.Split(string(body), "\r\n") {
				if len(l) > 76 {
					t.Fatalf("%d: base64 line of %d characters", i, len(l))
				}
			}
		}
	})
}

// patternReader yields size bytes of CRLF-ended lines of base64 text (so
// that a message body made of it travels byte for byte), without holding
// them, and hashes what it yields.
type patternReader struct {
	r    *rand.Rand
	left int64
	h    hash.Hash
	buf  [78]byte
	line []byte
}

func newPatternReader(seed uint64, size int64) *patternReader {
	return &patternReader{r: rand.New(rand.NewPCG(seed, 99)), left: size, h: sha256.New()}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && p.left > 0 {
		if len(p.line) == 0 {
			var raw [57]byte
			for i := range raw {
				raw[i] = byte(p.r.Uint32())
			}
			p.line = append(base64.StdEncoding.AppendEncode(p.buf[:0], raw[:]), '\r', '\n')
		}
		k := copy(b[n:], p.line)
		k = int(min(int64(k), p.left))
		p.line = p.line[k:]
		n += k
		p.left -= int64(k)
	}
	p.h.Write(b[:n])
	return n, nil
}

// heapWatch samples the heap while a test runs, and returns the peak.
func heapWatch() (stop func() (peak uint64)) {
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		return peak.Load()
	}
}

// TestLargeMessageStreams: a 20 MiB message and a 6 MiB binary body go
// through with the heap growing by far less than their size, and arrive
// intact.
func TestLargeMessageStreams(t *testing.T) {
	srv := mailpittest.Start(t)
	ad := inProcess(t, outbound(srv, nil))
	for _, tc := range []struct {
		name    string
		size    int64
		message bool
	}{
		{"20 MiB message", 78 * (20 << 20 / 78), true}, // whole lines of 78 bytes
		{"6 MiB binary body", 6 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta := testMeta(int(tc.size), "dtn://cloud/mail/big@example.org", 0)
			head := ""
			if tc.message {
				head = "From: station@field.example\r\nTo: big@example.org\r\nSubject: big\r\nMessage-ID: <big-" + tc.name[:2] + "@field.example>\r\n\r\n"
			}
			body := newPatternReader(uint64(tc.size), tc.size)
			var payload io.Reader = io.MultiReader(strings.NewReader(head), body)
			if !tc.message {
				payload = newBinaryReader(tc.size)
			}
			meta.PayloadLength = int64(len(head)) + tc.size
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			stop := heapWatch()
			start := time.Now()
			res := ad.Deliver(t.Context(), meta, payload)
			peak := stop()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if res.Status != plugins.OK {
				t.Fatal(res)
			}
			grew := int64(peak) - int64(before.HeapAlloc)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%s in %v; heap grew by at most %d KiB; %d KiB allocated in all", tc.name, time.Since(start).Round(time.Millisecond), grew>>10, alloc>>10)
			if grew > 2<<20 || alloc > 4<<20 {
				t.Errorf("heap grew by %d bytes, %d allocated: the payload was held, not streamed", grew, alloc)
			}
			msgID := "<big-" + tc.name[:2] + "@field.example>"
			if !tc.message {
				msgID = smtp.MessageIDFor(meta.BundleID, "gw.example.org")
			}
			m := one(t, srv, msgID, 1)[0]
			_, got := srv.Parsed(t, m.ID)
			if tc.message {
				if int64(len(got)) != tc.size || !bytes.Equal(sha(got), body.h.Sum(nil)) {
					t.Fatalf("mailpit holds a body of %d bytes that differs from the %d sent", len(got), tc.size)
				}
				return
			}
			dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(got), "\r\n", ""))
			want := newBinaryReader(tc.size)
			wantSum := sha256.New()
			_, _ = io.Copy(wantSum, want)
			if err != nil || int64(len(dec)) != tc.size || !bytes.Equal(sha(dec), wantSum.Sum(nil)) {
				t.Fatalf("decoded body of %d bytes differs from the %d sent (%v)", len(dec), tc.size, err)
			}
		})
	}
}

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// newBinaryReader yields size pseudo-random bytes, the same for the same
// size.
func newBinaryReader(size int64) io.Reader {
	r := rand.New(rand.NewPCG(uint64(size), 5))
	return io.LimitReader(readerFunc(func(b []byte) (int, error) {
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return len(b), nil
	}), size)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// TestServerDown: with the server down Check fails and Deliver answers
// Retry; once it is up both succeed, without a restart of the adapter;
// and again after it is killed (the pooled session is dead) and restarted.
func TestServerDown(t *testing.T) {
	srv := mailpittest.New(t)
	_, ad := startAdapter(t, outbound(srv, nil))
	meta := testMeta(1, "dtn://cloud/mail/alice@example.org", 0)
	payload := []byte("are you there?\n")
	if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) {
		t.Fatalf("Check with the server down = %v, want ErrUnreachable", err)
	}
	if res := deliver(t, ad, meta, payload); res.Status != plugins.Retry {
		t.Fatalf("Deliver with the server down = %v, want Retry", res)
	}
	for round := range 2 {
		srv.Start()
		if err := ad.Check(t.Context()); err != nil {
			t.Fatalf("round %d: Check with the server up: %v", round, err)
		}
		if res := deliver(t, ad, meta, payload); res.Status != plugins.OK {
			t.Fatalf("round %d: Deliver with the server up = %v", round, res)
		}
		srv.Kill()
		err := ad.Check(t.Context())
		if !errors.Is(err, plugins.ErrUnreachable) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("round %d: Check with the server killed = %v, want ErrUnreachable", round, err)
		}
		res := deliver(t, ad, meta, payload)
		if res.Status != plugins.Retry || res.RetryAfter != 0 {
			t.Fatalf("round %d: Deliver with the server killed = %v, want Retry", round, res)
		}
		t.Logf("round %d: server down: %v", round, res.Reason)
	}
	srv.Start()
	one(t, srv, smtp.MessageIDFor(meta.BundleID, "gw.example.org"), 2)
}

// TestRefusals: a recipient the server refuses with 5xx is a Reject with
// the server's words, and nothing is sent, even to the recipients it
// took; a 4xx is a Retry after retry_after; a bundle that cannot make a
// message is rejected before any server is asked.
func TestRefusals(t *testing.T) {
	srv := mailpittest.Start(t, "--smtp-allowed-recipients", `@example\.org$`)
	_, ad := startAdapter(t, outbound(srv, obj{"retry_after": "42s", "max_message_size": 100000}))
	tests := []struct {
		name    string
		dest    string
		opts    map[string]string
		payload string
		want    plugins.Status
		reason  []string
	}{
		{"refused recipient", "dtn://cloud/mail/eve@elsewhere.net", nil, "hi", plugins.Reject,
			[]string{"RCPT TO:<eve@elsewhere.net>", "550", "mailbox unavailable"}},
		{"one of two refused", "dtn://cloud/mail", map[string]string{"to": "bob@example.org, eve@elsewhere.net"}, "hi", plugins.Reject,
			[]string{"RCPT TO:<eve@elsewhere.net>", "550"}},
		{"no recipient", "dtn://cloud/mail", nil, "hi", plugins.Reject, []string{"no recipient"}},
		{"bad to option", "dtn://cloud/mail", map[string]string{"to": "not an address"}, "hi", plugins.Reject, []string{"to option"}},
		{"not a message", "dtn://cloud/mail/bob@example.org", map[string]string{"format": "message"}, "just text", plugins.Reject, []string{"header block"}},
		{"bad header address", "dtn://cloud/mail", nil, "To: <<<\r\nSubject: x\r\n\r\nbody", plugins.Reject, []string{"To header"}},
		{"too large", "dtn://cloud/mail/bob@example.org", nil, strings.Repeat("x", 100001), plugins.Reject, []string{"max_message_size"}},
		{"fine", "dtn://cloud/mail", map[string]string{"to": "bob@example.org"}, "hi", plugins.OK, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Count(t)
			meta := testMeta(100+i, tc.dest, 0)
			meta.Options = tc.opts
			res := deliver(t, ad, meta, []byte(tc.payload))
			if res.Status != tc.want {
				t.Fatalf("Deliver = %v, want %v", res, tc.want)
			}
			for _, r := range tc.reason {
				if !strings.Contains(res.Reason, r) {
					t.Errorf("reason %q lacks %q", res.Reason, r)
				}
			}
			sent := 0
			if tc.want == plugins.OK {
				sent = 1
			}
			if got := srv.Count(t) - before; got != sent {
				t.Errorf("%d messages stored, want %d", got, sent)
			}
			t.Logf("%v", res)
		})
	}

	t.Run("4xx", func(t *testing.T) {
		busy := mailpittest.Start(t, "--chaos-triggers", "Recipient:451:100")
		ad := inProcess(t, outbound(busy, obj{"retry_after": "42s"}))
		res := deliver(t, ad, testMeta(1, "dtn://cloud/mail/bob@example.org", 0), []byte("hi"))
		if res.Status != plugins.Retry || res.RetryAfter != 42*time.Second || !strings.Contains(res.Reason, "451") {
			t.Fatalf("Deliver against a 451 = %v, want Retry after 42s with the server's reply", res)
		}
		if n := busy.Count(t); n != 0 {
			t.Fatalf("%d messages stored", n)
		}
	})
}

// TestPayloadMustArriveWhole: a payload that breaks off, or runs long,
// sends nothing: the final dot is never sent.
func TestPayloadMustArriveWhole(t *testing.T) {
	srv := mailpittest.Start(t)
	ad := inProcess(t, outbound(srv, nil))
	for _, size := range []int64{1000, 3 << 20} {
		meta := testMeta(int(size), "dtn://cloud/mail/bob@example.org", 0)
		meta.PayloadLength = size
		short := io.MultiReader(io.LimitReader(newBinaryReader(size), size-1), readerFunc(func([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }))
		if res := ad.Deliver(t.Context(), meta, short); res.Status != plugins.Retry {
			t.Errorf("%d bytes, broken off: %v, want Retry", size, res)
		}
		if res := ad.Deliver(t.Context(), meta, newBinaryReader(size+1)); res.Status != plugins.Retry {
			t.Errorf("%d bytes, one too many: %v, want Retry", size, res)
		}
		// A sound delivery afterwards works (the broken sessions were not
		// pooled).
		if res := ad.Deliver(t.Context(), meta, newBinaryReader(size)); res.Status != plugins.OK {
			t.Errorf("%d bytes, whole: %v", size, res)
		}
	}
	if n := srv.Count(t); n != 2 {
		t.Errorf("mailpit holds %d messages, want the 2 whole ones", n)
	}
}

// TestTLS: STARTTLS required, with the server's CA; a server without
// STARTTLS fails Check in that mode and works in opportunistic mode;
// implicit TLS; AUTH PLAIN over TLS; an unknown CA is unreachable, not a
// reason to reject bundles.
func TestTLS(t *testing.T) {
	ca, cert, key := testpki.Files(t)
	starttls := mailpittest.Start(t, "--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-require-starttls")
	implicit := mailpittest.Start(t, "--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-require-tls")
	plain := mailpittest.Start(t)
	auth := obj{"username": "gw", "password": "s3cret"}
	tests := []struct {
		name string
		srv  *mailpittest.Server
		tls  obj
		ok   bool
		why  string
	}{
		{"starttls with CA and auth", starttls, obj{"mode": "starttls", "ca_file": ca}, true, ""},
		{"starttls, unknown CA", starttls, obj{"mode": "starttls"}, false, "certificate"},
		{"starttls required, not offered", plain, obj{"mode": "starttls"}, false, "does not offer STARTTLS"},
		{"opportunistic, not offered", plain, obj{"mode": "opportunistic"}, true, ""},
		{"opportunistic, offered", starttls, obj{"mode": "opportunistic", "ca_file": ca}, true, ""},
		{"implicit", implicit, obj{"mode": "implicit", "ca_file": ca}, true, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := outbound(tc.srv, obj{"tls": tc.tls})
			if tc.name != "opportunistic, not offered" {
				cfg["auth"] = auth
			}
			ad := inProcess(t, cfg)
			err := ad.Check(t.Context())
			meta := testMeta(200+i, "dtn://cloud/mail/bob@example.org", 0)
			res := deliver(t, ad, meta, []byte("secret news\n"))
			if tc.ok {
				if err != nil || res.Status != plugins.OK {
					t.Fatalf("Check = %v, Deliver = %v", err, res)
				}
				one(t, tc.srv, smtp.MessageIDFor(meta.BundleID, "gw.example.org"), 1)
				return
			}
			if !errors.Is(err, plugins.ErrUnreachable) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("Check = %v, want ErrUnreachable with %q", err, tc.why)
			}
			if res.Status != plugins.Retry {
				t.Fatalf("Deliver = %v, want Retry", res)
			}
		})
	}
}
