// Package e2e holds the smtp adapter's end-to-end test: real `mulegate
// run` nodes, a field node, a mule and a cloud gateway that runs the
// adapter as `mulegate adapter smtp` under its adapter queue, against a
// real mailpit process. It builds the mulegate binary, so it is skipped
// with -short. It lives apart from the adapter's own tests so that those
// never depend on the node's packages.
package e2e_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/mulegate/mulegate/internal/nodetest"
	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins/smtp"
	"github.com/mulegate/mulegate/plugins/smtp/internal/mailpittest"
)

var (
	eventually = servertest.Eventually
	errNotYet  = servertest.ErrNotYet
)

// TestE2EFieldToMailThroughMule: a field node sends two bundles to
// dtn://cloud/mail/alice@example.org, a plain note and a complete
// message; a mule takes them from the field node, leaves, and meets the
// cloud gateway, whose route hands them to the smtp adapter; both land in
// mailpit, with the headers that name each bundle, and the gateway's
// queue drains.
func TestE2EFieldToMailThroughMule(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	srv := mailpittest.Start(t)
	cloud := nodetest.New(t, bin, "gw", fmt.Sprintf(`adapters:
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
	field := nodetest.New(t, bin, "field", "adapters: []\nroutes: []\n")
	mule := nodetest.New(t, bin, "mule", "adapters: []\nroutes: []\n")

	field.Start(t)
	dst := bundle.MustParseEID("dtn://cloud/mail/alice@example.org")
	note := []byte("The north well is dry again; we need the pump part by Friday.\n")
	letter := []byte("From: Field Station <station@field.example>\r\nTo: Alice <alice@example.org>\r\n" +
		"Subject: Weekly report\r\nMessage-ID: <weekly-7@field.example>\r\n\r\nAll readings attached below.\r\n")
	var ids []string
	for _, p := range [][]byte{note, letter} {
		res, err := field.Client(t).Send(t.Context(), api.SendParams{Destination: dst, Lifetime: time.Hour}, bytes.NewReader(p), int64(len(p)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}

	// The mule meets the field node and takes both bundles; then the field
	// node goes away, and the mule meets the cloud gateway.
	mule.Start(t, field)
	eventually(t, 60*time.Second, "the mule holds both bundles", func() error {
		for _, id := range ids {
			if _, err := mule.Client(t).Bundle(t.Context(), id); err != nil {
				return err
			}
		}
		return nil
	})
	field.Stop(t)
	mule.Stop(t)
	cloud.Start(t)
	mule.Start(t, cloud)

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
			l, err := cloud.Client(t).Bundles(t.Context(), api.BundleQuery{State: state, Limit: 100})
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
