package smtp_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
	"github.com/mulegate/mulegate/plugins/smtp"
)

// FuzzCompose: whatever the payload, the message the adapter would send
// parses as mail; it names the bundle once; it has a Message-ID, and the
// same one (the same bytes, in fact) every time; a payload read as a
// message keeps its body byte for byte after the header block ScanHeader
// found, and a wrapped body decodes to the payload exactly.
func FuzzCompose(f *testing.F) {
	for _, s := range []string{
		"", "hello\n", "Subject: hi\r\n\r\nbody\r\n", "Subject: hi\n\nbody", "From: a@b.c\r\nTo: d@e.f\r\n",
		"Note: not mail\n\nbody", "Subject: x\r\n folded\r\nX-Mulegate-Bundle-ID: spoof\r\n\r\n", "To: <<<\r\n\r\n",
		"Subject: caf\xc3\xa9\r\n\r\nGr\xc3\xbc\xc3\x9fe", "\x00\x01\x02binary", "Subject: a\rb\r\n\r\n", strings.Repeat("x", 1200) + "\n",
		"Message-ID: <own@x>\r\nBcc: hidden@x.org\r\n\r\n.dot\r\n",
	} {
		f.Add([]byte(s), "", false)
		f.Add([]byte(s), "body", true)
	}
	f.Add([]byte("Subject: x\r\n\r\n"), "message", false)
	f.Fuzz(func(t *testing.T, payload []byte, format string, eightBit bool) {
		meta := plugins.Meta{
			BundleID: "dtn://mule1/app|800000000000.7", Source: "dtn://mule1/app",
			Destination: "dtn://cloud/mail/alice@example.org", CreationTime: 800000000000,
			PayloadLength: int64(len(payload)), SignatureStatus: "valid:campfire/mule1",
		}
		cfg := smtp.Config{Domain: "gw.example.org", MaxHeaderBytes: 1024}
		opts := map[string]string{"format": format}
		var out bytes.Buffer
		env, err := smtp.Compose(&out, meta, bytes.NewReader(payload), cfg, opts, eightBit)
		if err != nil {
			return // refused for good, with a reason
		}
		if len(env.To) == 0 || env.From == "" {
			t.Fatalf("envelope %+v", env)
		}
		var again bytes.Buffer
		if _, err := smtp.Compose(&again, meta, bytes.NewReader(payload), cfg, opts, eightBit); err != nil || !bytes.Equal(again.Bytes(), out.Bytes()) {
			t.Fatalf("composing the same bundle twice gave different messages (%v)", err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("the message does not parse: %v\n%q", err, out.Bytes())
		}
		if ids := msg.Header[textproto.CanonicalMIMEHeaderKey(smtp.HeaderBundleID)]; len(ids) != 1 || ids[0] != meta.BundleID {
			t.Fatalf("%s: %q", smtp.HeaderBundleID, ids)
		}
		if len(msg.Header["Message-Id"]) == 0 {
			t.Fatalf("no Message-ID in\n%q", out.Bytes())
		}
		if len(msg.Header["Bcc"]) != 0 {
			t.Fatalf("Bcc sent")
		}
		body, _ := io.ReadAll(msg.Body)
		n, isMessage := smtp.ScanHeader(payload[:min(len(payload), cfg.MaxHeaderBytes)], len(payload) <= cfg.MaxHeaderBytes)
		if format == "body" || (format != "message" && !isMessage) {
			if msg.Header.Get("Message-Id") != smtp.MessageIDFor(meta.BundleID, "gw.example.org") {
				t.Fatalf("wrapped: Message-ID %q", msg.Header.Get("Message-Id"))
			}
			got := body
			if msg.Header.Get("Content-Transfer-Encoding") == "base64" {
				got, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\r\n", ""))
				if err != nil {
					t.Fatalf("base64 body: %v", err)
				}
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("wrapped body %q, want %q", got, payload)
			}
			return
		}
		if !isMessage {
			t.Fatalf("format %q sent a payload without a header block as a message", format)
		}
		// net/mail reads from the header block's end; the block may end at
		// the payload's end with no empty line.
		if want := payload[n:]; !bytes.Equal(body, want) {
			t.Fatalf("message body %q, want %q", body, want)
		}
	})
}

// FuzzRecipientMapping: every address maps to an EID the node accepts or
// to ErrNoSuchRecipient; a mapped local part is node+service (or the node
// with the default service), kept as it was; and the address made from
// the EID maps back to it.
func FuzzRecipientMapping(f *testing.F) {
	for _, s := range []string{"nodeC+inbox@gw.example.org", "nodeC@GW.example.org", "a+b/c.d@gw.example.org", "a+b+c@gw.example.org",
		"ops@example.org", "OPS@Example.ORG", "\"quoted\"@gw.example.org", "a..b@gw.example.org", "x@other.org", "@gw.example.org",
		"node+@gw.example.org", "~@gw.example.org", "nöde@gw.example.org", "a b@gw.example.org", "a|b@gw.example.org", ""} {
		f.Add(s)
	}
	m := smtp.Mapping{
		Recipients:     map[string]string{"ops@example.org": "dtn://nodeC/ops"},
		Domains:        map[string]bool{"gw.example.org": true},
		DefaultService: "mail",
	}
	f.Fuzz(func(t *testing.T, addr string) {
		eid, err := m.Destination(addr)
		if err != nil {
			return
		}
		if _, perr := bundle.ParseEID(eid); perr != nil {
			t.Fatalf("Destination(%q) = %q, which the node refuses: %v", addr, eid, perr)
		}
		if sdk.CheckEID(eid) != nil {
			t.Fatalf("Destination(%q) = %q, which CheckEID refuses", addr, eid)
		}
		if strings.EqualFold(addr, "ops@example.org") {
			if eid != "dtn://nodeC/ops" {
				t.Fatalf("table: %q", eid)
			}
			return
		}
		at := strings.LastIndexByte(addr, '@')
		local := addr[:at]
		node, svc, plus := strings.Cut(local, "+")
		if !plus {
			svc = "mail"
		}
		if eid != "dtn://"+node+"/"+svc {
			t.Fatalf("Destination(%q) = %q, want dtn://%s/%s", addr, eid, node, svc)
		}
		back := node + "+" + svc + "@gw.example.org"
		if again, err := m.Destination(back); err != nil || again != eid {
			t.Fatalf("round trip of %q through %q: %q, %v", eid, back, again, err)
		}
	})
}
