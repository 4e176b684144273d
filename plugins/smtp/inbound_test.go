package smtp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mulegate/mulegate/plugins"
)

// inboundConfig is an inbound-only configuration on a free port with a
// spool in a temporary directory.
func inboundConfig(t testing.TB, more obj) (obj, string, string) {
	t.Helper()
	spool := filepath.Join(t.TempDir(), "spool")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	in := obj{
		"listen":     listen,
		"spool":      spool,
		"domains":    []string{"gw.example.org"},
		"recipients": obj{"ops@example.org": "dtn://nodeC/ops"},
		"nack_delay": "0s",
	}
	for k, v := range more {
		in[k] = v
	}
	return obj{"inbound": in}, listen, spool
}

// mailStage says where a sending failed.
type mailStage struct {
	stage string
	err   error
}

func (m *mailStage) Error() string { return m.stage + ": " + m.err.Error() }
func (m *mailStage) Unwrap() error { return m.err }

// sendMail sends msg with a real SMTP client (go-smtp's), and returns
// nil only after the server's 250 to the message.
func sendMail(addr, from string, to []string, msg []byte, auth sasl.Client, size int64) error {
	c, err := gosmtp.Dial(addr)
	if err != nil {
		return &mailStage{"dial", err}
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		return &mailStage{"EHLO", err}
	}
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return &mailStage{"AUTH", err}
		}
	}
	var opts *gosmtp.MailOptions
	if size > 0 {
		opts = &gosmtp.MailOptions{Size: size}
	}
	if err := c.Mail(from, opts); err != nil {
		return &mailStage{"MAIL", err}
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return &mailStage{"RCPT", err}
		}
	}
	w, err := c.Data()
	if err != nil {
		return &mailStage{"DATA", err}
	}
	if _, err := w.Write(msg); err != nil {
		return &mailStage{"message", err}
	}
	if err := w.Close(); err != nil {
		return &mailStage{"message", err}
	}
	_ = c.Quit()
	return nil
}

func code(err error) (string, int) {
	var ms *mailStage
	var se *gosmtp.SMTPError
	if errors.As(err, &ms) && errors.As(err, &se) {
		return ms.stage, se.Code
	}
	return "", 0
}

// fetched is an inbound message with its payload read.
type fetched struct {
	plugins.Inbound
	data []byte
}

func fetchAll(t testing.TB, ad plugins.Adapter, wait time.Duration) []fetched {
	t.Helper()
	var out []fetched
	err := ad.Fetch(t.Context(), plugins.FetchRequest{MaxMessages: 100, Wait: wait}, func(in plugins.Inbound) error {
		data, err := io.ReadAll(in.Payload)
		if err != nil {
			return err
		}
		if int64(len(data)) != in.PayloadLength {
			return fmt.Errorf("payload of %d bytes, announced %d", len(data), in.PayloadLength)
		}
		in.Payload = nil
		out = append(out, fetched{in, data})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func spoolFiles(t testing.TB, spool, sub string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(spool, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func testMail(subject string, body string) []byte {
	return []byte("From: Alice <alice@example.com>\r\nTo: nodeC+inbox@gw.example.org\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@example.com>\r\n\r\n" + strings.TrimSuffix(body, "\r\n") + "\r\n")
}

// TestInboundThroughPlugin: mail sent to the adapter's server (the adapter
// as its own process) is offered by Fetch with its destination and its
// bytes; the spool file stays through a Nack and goes only with the Ack;
// an unknown recipient is refused with 550 at RCPT.
func TestInboundThroughPlugin(t *testing.T) {
	cfg, addr, spool := inboundConfig(t, nil)
	_, ad := startAdapter(t, cfg)
	if err := ad.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}

	msg := testMail("gauge report", "level 2.41 m\r\n.dot line\r\n")
	if err := sendMail(addr, "alice@example.com", []string{"nodeC+inbox@gw.example.org"}, msg, nil, 0); err != nil {
		t.Fatal(err)
	}
	err := sendMail(addr, "alice@example.com", []string{"stranger@elsewhere.net"}, msg, nil, 0)
	if stage, c := code(err); stage != "RCPT" || c != 550 {
		t.Fatalf("unknown recipient: %v, want 550 at RCPT", err)
	}
	err = sendMail(addr, "alice@example.com", []string{"bad..local@gw.example.org"}, msg, nil, 0)
	if stage, c := code(err); stage != "RCPT" || c != 550 {
		t.Fatalf("a local part that maps to no EID: %v, want 550 at RCPT", err)
	}

	got := fetchAll(t, ad, time.Second)
	if len(got) != 1 {
		t.Fatalf("fetched %d messages, want 1", len(got))
	}
	in := got[0]
	if in.Destination != "dtn://nodeC/inbox" || !bytes.Equal(in.data, msg) {
		t.Fatalf("fetched %q for %s, want the bytes sent for dtn://nodeC/inbox", in.data, in.Destination)
	}
	for k, v := range map[string]string{"mail_from": "alice@example.com", "rcpt_to": "nodeC+inbox@gw.example.org",
		"subject": "gauge report", "from": "Alice <alice@example.com>", "message_id": "<gauge-report@example.com>", "content_type": "message/rfc822"} {
		if in.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, in.Headers[k], v)
		}
	}
	if !strings.HasPrefix(in.MessageID, "smtp:") {
		t.Errorf("MessageID %q", in.MessageID)
	}
	// Leased: not offered again until Ack or Nack.
	if again := fetchAll(t, ad, 0); len(again) != 0 {
		t.Fatalf("a fetched message was offered again before Ack or Nack")
	}
	if files := spoolFiles(t, spool, "msgs"); len(files) != 2 {
		t.Fatalf("spool holds %q, want the message and its entry", files)
	}
	if err := ad.Nack(t.Context(), in.Receipt, "store full"); err != nil {
		t.Fatal(err)
	}
	again := fetchAll(t, ad, time.Second)
	if len(again) != 1 || again[0].MessageID != in.MessageID || !bytes.Equal(again[0].data, msg) {
		t.Fatalf("after a Nack: %d messages", len(again))
	}
	if err := ad.Ack(t.Context(), again[0].Receipt); err != nil {
		t.Fatal(err)
	}
	if files := spoolFiles(t, spool, "msgs"); len(files) != 0 {
		t.Fatalf("after the Ack the spool holds %q", files)
	}
	if err := ad.Ack(t.Context(), again[0].Receipt); err != nil {
		t.Fatalf("a second Ack: %v", err)
	}
	if err := ad.Ack(t.Context(), "../../etc/passwd"); !errors.Is(err, plugins.ErrInvalid) {
		t.Fatalf("Ack of a bad receipt = %v, want ErrInvalid", err)
	}
}

// TestInboundSurvivesSIGKILL: mail the server answered with 250 is in the
// spool when the adapter process dies with SIGKILL right after, and the
// restarted adapter offers it, byte for byte.
func TestInboundSurvivesSIGKILL(t *testing.T) {
	cfg, addr, _ := inboundConfig(t, nil)
	m, ad := startAdapter(t, cfg)
	var sent [][]byte
	for i := range 5 {
		msg := testMail(fmt.Sprintf("report %d", i), strings.Repeat(fmt.Sprintf("line %d\r\n", i), 1000*i))
		if err := sendMail(addr, "alice@example.com", []string{"nodeC+inbox@gw.example.org", "ops@example.org"}, msg, nil, 0); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, msg)
	}
	st, _ := m.Status("mail")
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the adapter restarted", func() error {
		now, _ := m.Status("mail")
		if !now.Running || now.PID == st.PID {
			return errNotYet
		}
		return nil
	})
	var got []fetched
	eventually(t, 10*time.Second, "the restarted adapter offers the mail", func() error {
		got = append(got, fetchAll(t, ad, 0)...)
		if len(got) < 10 {
			return fmt.Errorf("%d of 10 offered", len(got))
		}
		return nil
	})
	byDest := map[string][][]byte{}
	for _, f := range got {
		byDest[f.Destination] = append(byDest[f.Destination], f.data)
		if err := ad.Ack(t.Context(), f.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"dtn://nodeC/inbox", "dtn://nodeC/ops"} {
		if !slices.EqualFunc(byDest[d], sent, bytes.Equal) {
			t.Errorf("%s: %d messages, not the ones sent", d, len(byDest[d]))
		}
	}
}

// TestInboundLimits: an oversized message gets 552 (at MAIL when it says
// its SIZE, after DATA otherwise); a full spool gets 452 until the node
// takes something; nothing refused is kept.
func TestInboundLimits(t *testing.T) {
	cfg, addr, spool := inboundConfig(t, obj{"max_message_size": 2000, "max_messages": 2})
	ad := inProcess(t, cfg)
	big := testMail("big", strings.Repeat("xxxxxxxxx\r\n", 300))
	err := sendMail(addr, "a@example.com", []string{"nodeC@gw.example.org"}, big, nil, 0)
	if stage, c := code(err); stage != "message" || c != 552 {
		t.Fatalf("oversized message: %v, want 552 after DATA", err)
	}
	err = sendMail(addr, "a@example.com", []string{"nodeC@gw.example.org"}, big, nil, int64(len(big)))
	if stage, c := code(err); stage != "MAIL" || c != 552 {
		t.Fatalf("oversized message with SIZE: %v, want 552 at MAIL", err)
	}
	err = sendMail(addr, "a@example.com", []string{"nodeC@gw.example.org"}, testMail("long", strings.Repeat("x", 2500)), nil, 0)
	if stage, c := code(err); stage != "message" || c != 500 {
		t.Fatalf("a line of 2500 bytes (go-smtp takes 2000): %v, want 500 after DATA", err)
	}
	if files := spoolFiles(t, spool, "msgs"); len(files) != 0 {
		t.Fatalf("refused mail left %q in the spool", files)
	}
	if files := spoolFiles(t, spool, "tmp"); len(files) != 0 {
		t.Fatalf("refused mail left %q in the spool's tmp", files)
	}
	for i := range 2 {
		if err := sendMail(addr, "a@example.com", []string{"nodeC@gw.example.org"}, testMail(fmt.Sprint(i), "small"), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	err = sendMail(addr, "a@example.com", []string{"nodeC@gw.example.org"}, testMail("third", "small"), nil, 0)
	if stage, c := code(err); stage != "MAIL" || c != 452 {
		t.Fatalf("a full spool: %v, want 452 at MAIL", err)
	}
	got := fetchAll(t, ad, 0)
	if len(got) != 2 || got[0].Destination != "dtn://nodeC/mail" {
		t.Fatalf("fetched %+v", got)
	}
	if err := ad.Ack(t.Context(), got[0].Receipt); err != nil {
		t.Fatal(err)
	}
	if err := sendMail(addr, "a@example.com", []string{"nodeC@gw.example.org"}, testMail("third", "small"), nil, 0); err != nil {
		t.Fatalf("after an Ack the spool has room again: %v", err)
	}
}

// TestInboundReject: a message the node refuses for good moves to
// spool/rejected with the reason, and is never offered again; a message
// for two destinations stays until both are taken.
func TestInboundReject(t *testing.T) {
	cfg, addr, spool := inboundConfig(t, nil)
	ad := inProcess(t, cfg)
	msg := testMail("two", "for two destinations")
	if err := sendMail(addr, "a@example.com", []string{"nodeC+inbox@gw.example.org", "OPS@example.org", "nodeC+inbox@GW.example.org"}, msg, nil, 0); err != nil {
		t.Fatal(err)
	}
	got := fetchAll(t, ad, time.Second)
	if len(got) != 2 {
		t.Fatalf("fetched %d, want one per destination", len(got))
	}
	var inbox, ops fetched
	for _, f := range got {
		switch f.Destination {
		case "dtn://nodeC/inbox":
			inbox = f
		case "dtn://nodeC/ops":
			ops = f
		}
		if !bytes.Equal(f.data, msg) {
			t.Errorf("%s: bytes differ", f.Destination)
		}
	}
	if inbox.Headers["rcpt_to"] != "nodeC+inbox@gw.example.org, nodeC+inbox@GW.example.org" || ops.Headers["rcpt_to"] != "OPS@example.org" {
		t.Fatalf("recipients: %q, %q", inbox.Headers["rcpt_to"], ops.Headers["rcpt_to"])
	}
	reason := "refused for good: bundle lifetime exceeds this node's maximum"
	if err := ad.Reject(t.Context(), inbox.Receipt, reason); err != nil {
		t.Fatal(err)
	}
	if files := spoolFiles(t, spool, "msgs"); len(files) != 2 {
		t.Fatalf("with one destination left the spool holds %q, want the message and one entry", files)
	}
	if err := ad.Ack(t.Context(), ops.Receipt); err != nil {
		t.Fatal(err)
	}
	if files := spoolFiles(t, spool, "msgs"); len(files) != 0 {
		t.Fatalf("spool holds %q after both destinations", files)
	}
	rej := spoolFiles(t, spool, "rejected")
	want := []string{inbox.Receipt + ".eml", inbox.Receipt + ".json", inbox.Receipt + ".reason"}
	if !slices.Equal(rej, want) {
		t.Fatalf("rejected/ holds %q, want %q", rej, want)
	}
	data, _ := os.ReadFile(filepath.Join(spool, "rejected", inbox.Receipt+".eml"))
	note, _ := os.ReadFile(filepath.Join(spool, "rejected", inbox.Receipt+".reason"))
	if !bytes.Equal(data, msg) || !strings.Contains(string(note), reason) || !strings.Contains(string(note), "dtn://nodeC/inbox") {
		t.Fatalf("rejected message %q with reason %q", data, note)
	}
	if err := ad.Reject(t.Context(), inbox.Receipt, reason); err != nil {
		t.Fatalf("a second Reject: %v", err)
	}
	// Never offered again, not even by a new adapter on the same spool.
	_ = ad.Close()
	ad2 := inProcess(t, cfg)
	if again := fetchAll(t, ad2, 0); len(again) != 0 {
		t.Fatalf("offered %d messages after Reject and Ack", len(again))
	}
}

// TestInboundAuth: with inbound.auth, MAIL needs AUTH PLAIN first, and the
// right password.
func TestInboundAuth(t *testing.T) {
	cfg, addr, _ := inboundConfig(t, obj{"auth": obj{"username": "field", "password": "s3cret"}, "allow_insecure_auth": true})
	ad := inProcess(t, cfg)
	msg := testMail("authed", "hi")
	to := []string{"nodeC@gw.example.org"}
	if stage, c := code(sendMail(addr, "a@example.com", to, msg, nil, 0)); stage != "MAIL" || c != 530 {
		t.Fatalf("without AUTH: %s %d, want 530 at MAIL", stage, c)
	}
	if stage, c := code(sendMail(addr, "a@example.com", to, msg, sasl.NewPlainClient("", "field", "wrong"), 0)); stage != "AUTH" || c != 535 {
		t.Fatalf("wrong password: %s %d, want 535 at AUTH", stage, c)
	}
	if err := sendMail(addr, "a@example.com", to, msg, sasl.NewPlainClient("", "field", "s3cret"), 0); err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, ad, time.Second); len(got) != 1 {
		t.Fatalf("fetched %d", len(got))
	}
}

// TestFetchWaitsForMail: a waiting Fetch returns as soon as mail arrives.
func TestFetchWaitsForMail(t *testing.T) {
	cfg, addr, _ := inboundConfig(t, nil)
	ad := inProcess(t, cfg)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = sendMail(addr, "a@example.com", []string{"nodeC@gw.example.org"}, testMail("late", "x"), nil, 0)
	}()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	n := 0
	err := ad.Fetch(ctx, plugins.FetchRequest{MaxMessages: 1, Wait: 10 * time.Second}, func(in plugins.Inbound) error {
		n++
		_, err := io.Copy(io.Discard, in.Payload)
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("Fetch = %v with %d messages", err, n)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Fetch returned %v after the mail arrived", took)
	}
}
