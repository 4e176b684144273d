// Package mailpittest starts the mailpit processes the smtp adapter's tests
// deliver to, from the binary scripts/test-servers installs, on loopback
// ports in a temporary directory, and reads the mail back through
// mailpit's HTTP API.
package mailpittest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Server is a mailpit process.
type Server struct {
	// Args are extra command-line arguments; change them before Start.
	Args []string
	t    testing.TB
	smtp int
	http int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	out  *bytes.Buffer
}

// New prepares mailpit on free ports with a temporary database; Start
// runs it. The test's cleanup kills it.
func New(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{Args: args, t: t, smtp: FreePort(t), http: FreePort(t), dir: t.TempDir()}
	t.Cleanup(s.Kill)
	return s
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

// PID is the running server's process ID, 0 when it is not running.
func (s *Server) PID() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Start runs mailpit and waits until both its SMTP port and its API
// answer.
func (s *Server) Start() {
	s.t.Helper()
	args := append([]string{
		"--smtp", s.SMTPAddr(), "--listen", "127.0.0.1:" + strconv.Itoa(s.http),
		"--database", filepath.Join(s.dir, "mail.db"),
		"--smtp-auth-accept-any", "--disable-version-check", "--max", "0",
	}, s.Args...)
	if !slices.ContainsFunc(s.Args, func(a string) bool { return strings.HasPrefix(a, "--smtp-require-") }) {
		// mailpit refuses it beside the TLS requirements.
		args = append(args, "--smtp-auth-allow-insecure")
	}
	cmd := exec.Command(Binary(s.t), args...)
	s.out = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.ready()
		if err == nil {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("mailpit exited at start: %v\n%s", cmd.ProcessState, s.out)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("mailpit on ports %d/%d not ready: %v\n%s", s.smtp, s.http, err, s.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
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

// Kill stops mailpit abruptly; Start starts it again on the same ports
// and database.
func (s *Server) Kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
	}
}

// Binary finds mailpit in $MULEGATE_TOOLS_BIN, on $PATH, or in the
// module's .cache/bin, where scripts/test-servers installs it. With
// MULEGATE_TOOLS_BIN set (make test), a missing binary fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("MULEGATE_TOOLS_BIN"); dir != "" {
		if p := filepath.Join(dir, "mailpit"); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if p := filepath.Join(d, ".cache", "bin", "mailpit"); isExecutable(p) {
			return p
		}
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
			break
		}
	}
	t.Fatal("mailpit not found in $MULEGATE_TOOLS_BIN, $PATH or .cache/bin: run ./scripts/test-servers (or make test-servers)")
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
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

// ErrNotYet is what a condition returns when it has nothing better to say.
var ErrNotYet = errors.New("not yet")

// Eventually polls cond until it returns nil, and fails the test with
// cond's last error if that takes longer than within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
