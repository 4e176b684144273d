// Package mailpittest starts the mailpit processes the smtp adapter's tests
// deliver to, from the binary scripts/test-servers installs (run by
// servertest), on loopback ports in a temporary directory, and reads the
// mail back through mailpit's HTTP API.
package mailpittest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/internal/servertest"
)

// Server is a mailpit process.
type Server struct {
	*servertest.Process // PID, Kill
	// Args are extra command-line arguments; change them before Start.
	Args []string
	t    testing.TB
	smtp int
	http int
}

// New prepares mailpit on free ports with a temporary database; Start
// runs it. The test's cleanup kills it.
func New(t testing.TB, args ...string) *Server {
	t.Helper()
	return &Server{Process: servertest.NewProcess(t, "mailpit"), Args: args, t: t, smtp: servertest.FreePort(t), http: servertest.FreePort(t)}
}

// Start starts a fresh mailpit with the given extra arguments.
func Start(t testing.TB, args ...string) *Server {
	s := New(t, args...)
	s.Start()
	return s
}

// SMTPAddr is the SMTP server's host:port.
func (s *Server) SMTPAddr() string { return "127.0.0.1:" + strconv.Itoa(s.smtp) }

// APIURL is the HTTP API's base URL.
func (s *Server) APIURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.http) }

// Start runs mailpit and waits until both its SMTP port and its API
// answer. Kill stops it abruptly; Start starts it again on the same ports
// and database.
func (s *Server) Start() {
	s.t.Helper()
	args := append([]string{
		"--smtp", s.SMTPAddr(), "--listen", "127.0.0.1:" + strconv.Itoa(s.http),
		"--database", filepath.Join(s.Dir(), "mail.db"),
		"--smtp-auth-accept-any", "--disable-version-check", "--max", "0",
	}, s.Args...)
	if !slices.ContainsFunc(s.Args, func(a string) bool { return strings.HasPrefix(a, "--smtp-require-") }) {
		// mailpit refuses it beside the TLS requirements.
		args = append(args, "--smtp-auth-allow-insecure")
	}
	s.Run(s.ready, args...)
}

func (s *Server) ready() error {
	c, err := net.DialTimeout("tcp", s.SMTPAddr(), time.Second)
	if err != nil {
		return err
	}
	c.Close()
	resp, err := http.Get(s.APIURL() + "/api/v1/info")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API: %s", resp.Status)
	}
	return nil
}

// Summary is a message as mailpit lists it.
type Summary struct {
	ID        string `json:"ID"`
	MessageID string `json:"MessageID"`
	Subject   string `json:"Subject"`
	Size      int64  `json:"Size"`
}

// Messages lists every message mailpit holds, newest first.
func (s *Server) Messages(t testing.TB) []Summary {
	t.Helper()
	var out []Summary
	for start := 0; ; {
		var page struct {
			Total    int       `json:"messages_count"`
			Messages []Summary `json:"messages"`
		}
		s.getJSON(t, fmt.Sprintf("/api/v1/messages?start=%d&limit=1000", start), &page)
		out = append(out, page.Messages...)
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return out
		}
	}
}

// Count is how many messages mailpit holds.
func (s *Server) Count(t testing.TB) int {
	t.Helper()
	var page struct {
		Total int `json:"messages_count"`
	}
	s.getJSON(t, "/api/v1/messages?limit=1", &page)
	return page.Total
}

// Headers returns a message's header fields, as mailpit parsed them.
func (s *Server) Headers(t testing.TB, id string) map[string][]string {
	t.Helper()
	var h map[string][]string
	s.getJSON(t, "/api/v1/message/"+id+"/headers", &h)
	return h
}

// Raw returns a message as mailpit stored it (with the Received and
// Return-Path fields it adds).
func (s *Server) Raw(t testing.TB, id string) []byte {
	t.Helper()
	resp, err := http.Get(s.APIURL() + "/api/v1/message/" + id + "/raw")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("raw %s: %s %v", id, resp.Status, err)
	}
	return b
}

// Parsed returns a message's header and its body bytes, undecoded.
func (s *Server) Parsed(t testing.TB, id string) (mail.Header, []byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(s.Raw(t, id)))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	return m.Header, body
}

// ByMessageID returns the messages whose Message-ID (without angle
// brackets) is id.
func (s *Server) ByMessageID(t testing.TB, id string) []Summary {
	t.Helper()
	var out []Summary
	for _, m := range s.Messages(t) {
		if m.MessageID == strings.Trim(id, "<>") {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) getJSON(t testing.TB, path string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.APIURL()+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
