// Package e2e holds the smtp adapter's end-to-end test: real `mulegate
// run` nodes, a field node, a mule and a cloud gateway that runs the
// adapter as `mulegate adapter smtp` under its adapter queue, against a
// real mailpit process. It builds the mulegate binary, so it is skipped
// with -short. It lives apart from the adapter's own tests so that those
// never depend on the node's packages.
package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/mulegate/mulegate/plugins/smtp"
	"github.com/mulegate/mulegate/plugins/smtp/internal/mailpittest"
)

var (
	freePort   = mailpittest.FreePort
	eventually = mailpittest.Eventually
	errNotYet  = mailpittest.ErrNotYet
)

// buildMulegate builds the mulegate binary (with this adapter built in)
// into a temporary directory.
func buildMulegate(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: builds mulegate and runs real nodes")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "mulegate")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mulegate")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building mulegate: %v\n%s", err, out)
	}
	return bin
}

// node is a real `mulegate run` process on loopback ports.
type node struct {
	bin, name, dir, data, api, quic, logf string
	cmd                                   *exec.Cmd
	done                                  chan error
	token                                 string
}

func newNode(t *testing.T, bin, name, config string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{bin: bin, name: name, dir: dir, data: filepath.Join(dir, "data"), logf: filepath.Join(dir, "node.log"),
		api: fmt.Sprintf("127.0.0.1:%d", freePort(t)), quic: freeUDP(t)}
	base := "routing:\n  summary_interval: 1s\n  retry_min: 200ms\n  retry_max: 2s\nadapter_check_interval: 300ms\nlog:\n  level: info\n  format: json\n"
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(base+config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			data, _ := os.ReadFile(n.logf)
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			t.Logf("last log lines of %s:\n%s", n.name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
	})
	return n
}

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func (n *node) id() string { return "dtn://" + n.name + "/" }

func (n *node) start(t *testing.T, peers ...*node) {
	t.Helper()
	args := []string{"run", "--config", filepath.Join(n.dir, "config.yaml"), "--node", n.id(), "--data", n.data,
		"--listen-quic", n.quic, "--api", n.api, "--discovery=false"}
	for _, p := range peers {
		args = append(args, "--peer", p.id()+"@"+p.quic)
	}
	logf, err := os.OpenFile(n.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	n.cmd = exec.Command(n.bin, args...)
	n.cmd.Env = env()
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(n.cmd, n.done)
	eventually(t, 30*time.Second, "node "+n.name+" ready", func() error {
		select {
		case err := <-n.done:
			n.done <- err
			data, _ := os.ReadFile(n.logf)
			t.Fatalf("node %s exited while starting: %v\n%s", n.name, err, data)
		default:
		}
		tok, err := api.ReadToken(n.data)
		if err != nil {
			return err
		}
		c, err := api.NewClient(n.api, tok)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.Ready(ctx); err != nil {
			return err
		}
		n.token = tok
		return nil
	})
}

// stop ends the node with SIGTERM.
func (n *node) stop(t *testing.T) {
	t.Helper()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
		t.Errorf("node %s did not stop within 20s of SIGTERM", n.name)
	}
	n.cmd = nil
}

func (n *node) client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.NewClient(n.api, n.token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func env() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MULEGATE_") {
			out = append(out, kv)
		}
	}
	return out
}

// TestE2EFieldToMailThroughMule: a field node sends two bundles to
// dtn://cloud/mail/alice@example.org, a plain note and a complete
// message; a mule takes them from the field node, leaves, and meets the
// cloud gateway, whose route hands them to the smtp adapter; both land in
// mailpit, with the headers that name each bundle, and the gateway's
// queue drains.
func TestE2EFieldToMailThroughMule(t *testing.T) {
	bin := buildMulegate(t)
	srv := mailpittest.Start(t)
	cloud := newNode(t, bin, "gw", fmt.Sprintf(`adapters:
  - name: mail
    builtin: smtp
    max_in_flight: 8
    config:
      server: %q
      tls: {mode: "off"}
      domain: gw.example.org
      connect_timeout: 2s
routes:
  - match: "dtn://cloud/mail/**"
    adapter: mail
    options: {subject: "note from {src_node}"}
`, srv.SMTPAddr()))
	field := newNode(t, bin, "field", "adapters: []\nroutes: []\n")
	mule := newNode(t, bin, "mule", "adapters: []\nroutes: []\n")

	field.start(t)
	dst := bundle.MustParseEID("dtn://cloud/mail/alice@example.org")
	note := []byte("The north well is dry again; we need the pump part by Friday.\n")
	letter := []byte("From: Field Station <station@field.example>\r\nTo: Alice <alice@example.org>\r\n" +
		"Subject: Weekly report\r\nMessage-ID: <weekly-7@field.example>\r\n\r\nAll readings attached below.\r\n")
	var ids []string
	for _, p := range [][]byte{note, letter} {
		res, err := field.client(t).Send(t.Context(), api.SendParams{Destination: dst, Lifetime: time.Hour}, bytes.NewReader(p), int64(len(p)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}

	// The mule meets the field node and takes both bundles; then the field
	// node goes away, and the mule meets the cloud gateway.
	mule.start(t, field)
	eventually(t, 60*time.Second, "the mule holds both bundles", func() error {
		for _, id := range ids {
			if _, err := mule.client(t).Bundle(t.Context(), id); err != nil {
				return err
			}
		}
		return nil
	})
	field.stop(t)
	mule.stop(t)
	cloud.start(t)
	mule.start(t, cloud)

	noteID := smtp.MessageIDFor(ids[0], "gw.example.org")
	eventually(t, 90*time.Second, "both bundles land in mailpit", func() error {
		if len(srv.ByMessageID(t, noteID)) == 0 || len(srv.ByMessageID(t, "weekly-7@field.example")) == 0 {
			return errNotYet
		}
		return nil
	})
	for i, msgID := range []string{noteID, "weekly-7@field.example"} {
		m := srv.ByMessageID(t, msgID)[0]
		h := srv.Headers(t, m.ID)
		hdr, body := srv.Parsed(t, m.ID)
		if got := h["X-Mulegate-Bundle-Id"]; len(got) != 1 || got[0] != ids[i] {
			t.Errorf("message %d: X-Mulegate-Bundle-ID %q, want %q", i, got, ids[i])
		}
		if got := hdr.Get("X-Mulegate-Source"); !strings.HasPrefix(got, "dtn://field/") {
			t.Errorf("message %d: X-Mulegate-Source %q", i, got)
		}
		if got := hdr.Get("X-Mulegate-Signature"); got == "" {
			t.Errorf("message %d: no X-Mulegate-Signature", i)
		}
		t.Logf("message %d: Subject %q, signature %q, source %q", i, m.Subject, hdr.Get("X-Mulegate-Signature"), hdr.Get("X-Mulegate-Source"))
		switch i {
		case 0:
			if m.Subject != "note from field" || !bytes.Equal(body, bytes.ReplaceAll(note, []byte("\n"), []byte("\r\n"))) {
				t.Errorf("note: Subject %q, body %q", m.Subject, body)
			}
		case 1:
			if m.Subject != "Weekly report" || string(body) != "All readings attached below.\r\n" {
				t.Errorf("letter: Subject %q, body %q", m.Subject, body)
			}
		}
	}
	eventually(t, 30*time.Second, "the gateway's queue drained", func() error {
		for _, state := range []string{"pending", "in_flight"} {
			l, err := cloud.client(t).Bundles(t.Context(), api.BundleQuery{State: state, Limit: 100})
			if err != nil {
				return err
			}
			if len(l) != 0 {
				return fmt.Errorf("%d bundles %s", len(l), state)
			}
		}
		return nil
	})
	if n := srv.Count(t); n != 2 {
		t.Errorf("mailpit holds %d messages, want 2", n)
	}
}
