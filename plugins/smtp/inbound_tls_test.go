package smtp_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	netsmtp "net/smtp"
	"net/textproto"
	"strings"
	"testing"

	"github.com/mulegate/mulegate/internal/testpki"
)

// ehloFeatures is what an EHLO reply advertised, of what these tests
// look at.
type ehloFeatures struct{ startTLS, auth bool }

func featuresOf(c *netsmtp.Client) ehloFeatures {
	st, _ := c.Extension("STARTTLS")
	au, _ := c.Extension("AUTH")
	return ehloFeatures{startTLS: st, auth: au}
}

// startTLSSession is what a client saw of the server, before and after
// STARTTLS.
type startTLSSession struct {
	plain, secure ehloFeatures
	state         tls.ConnectionState // zero when the session stayed plain
}

// sendMailStartTLS sends msg with the standard library's SMTP client,
// which, unlike go-smtp's, can run STARTTLS on a session it has already
// greeted and completes the handshake inside StartTLS, so a trust failure
// shows as STARTTLS's error. With tlsCfg nil the session stays plain; with
// auth nil it sends no AUTH. It returns nil only after the server's 250 to
// the message; a failure is a *mailStage wrapping the client's error
// (a *textproto.Error for an SMTP reply).
func sendMailStartTLS(addr string, tlsCfg *tls.Config, auth netsmtp.Auth, from string, to []string, msg []byte) (startTLSSession, error) {
	var seen startTLSSession
	c, err := netsmtp.Dial(addr)
	if err != nil {
		return seen, &mailStage{"dial", fmt.Errorf("dial %s: %w", addr, err)}
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		return seen, &mailStage{"EHLO", err}
	}
	seen.plain = featuresOf(c)
	if tlsCfg != nil {
		if err := c.StartTLS(tlsCfg); err != nil {
			return seen, &mailStage{"STARTTLS", err}
		}
		seen.state, _ = c.TLSConnectionState()
		seen.secure = featuresOf(c)
	}
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return seen, &mailStage{"AUTH", err}
		}
	}
	if err := c.Mail(from); err != nil {
		return seen, &mailStage{"MAIL", err}
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return seen, &mailStage{"RCPT", err}
		}
	}
	w, err := c.Data()
	if err != nil {
		return seen, &mailStage{"DATA", err}
	}
	if _, err := w.Write(msg); err != nil {
		return seen, &mailStage{"message", err}
	}
	if err := w.Close(); err != nil {
		return seen, &mailStage{"message", err}
	}
	_ = c.Quit()
	return seen, nil
}

// textReply is the stage and the SMTP reply of a sendMailStartTLS error.
func textReply(err error) (stage string, code int, msg string) {
	var ms *mailStage
	var te *textproto.Error
	if errors.As(err, &ms) && errors.As(err, &te) {
		return ms.stage, te.Code, te.Msg
	}
	return "", 0, ""
}

// TestInboundStartTLS runs real STARTTLS sessions against the inbound
// server, configured with a server certificate from a CA made here: a
// client that trusts the CA upgrades and its mail is fetched as sent; a
// client that does not, or that expects another name, fails the handshake
// and nothing is spooled.
//
// There is no setting that requires TLS before MAIL, and none is added: an
// inbound server that takes mail for its domains is an MX, and RFC 3207
// forbids a publicly referenced server to require STARTTLS for local
// delivery, so a plain client without AUTH is still accepted (a case
// below). AUTH is where TLS matters, and it is already refused in the
// clear when inbound.tls is set: go-smtp does not advertise AUTH before
// STARTTLS and answers an AUTH sent anyway with 523 5.7.10 ("Encryption
// Needed") unless inbound.allow_insecure_auth is set, which is the
// operator's explicit choice; and with inbound.auth, MAIL before AUTH gets
// 530 5.7.0. So a server with inbound.auth takes no mail from a plain
// session at all. No behaviour changed, and 523 is kept rather than 538
// 5.7.11: go-smtp refuses AUTH before it reaches the session, and the only
// way to answer it ourselves would be to advertise AUTH in the clear. The
// cases below hold all of this in place.
func TestInboundStartTLS(t *testing.T) {
	ca := testpki.NewCA(t, "mulegate test CA")
	srvCert := ca.IssueServer(t, "127.0.0.1", "::1", "localhost")
	leaf, certFile, keyFile := srvCert.Cert, srvCert.CertFile, srvCert.KeyFile
	stranger := testpki.NewCA(t, "some other CA")
	login := netsmtp.PlainAuth("", "field", "s3cret", "127.0.0.1")

	trusting := func(name string) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool, ServerName: name, MinVersion: tls.VersionTLS12}
	}
	isUnknownAuthority := func(err error) bool {
		var ua x509.UnknownAuthorityError
		return errors.As(err, &ua)
	}
	// With no system roots at all, the client fails before it looks
	// for an authority; either way the server is not trusted.
	isUntrustedBySystem := func(err error) bool {
		var sr x509.SystemRootsError
		return isUnknownAuthority(err) || errors.As(err, &sr)
	}
	isWrongName := func(err error) bool {
		var he x509.HostnameError
		return errors.As(err, &he)
	}

	tests := []struct {
		name string
		auth bool                 // the server requires AUTH (inbound.auth, no allow_insecure_auth)
		tls  *tls.Config          // the client's; nil: it never sends STARTTLS
		cred netsmtp.Auth         // nil: no AUTH
		fail string               // the stage that fails; "": the mail is delivered
		code int                  // the server's reply there (0: not a reply)
		text string               // the reply's text, enhanced code first
		is   func(err error) bool // for a failure that is not a reply
	}{
		{name: "trusts the CA, verifies 127.0.0.1", tls: trusting("127.0.0.1")},
		{name: "trusts the CA, verifies localhost", tls: trusting("localhost")},
		{name: "trusts another CA", tls: &tls.Config{RootCAs: stranger.Pool, ServerName: "127.0.0.1"}, fail: "STARTTLS", is: isUnknownAuthority},
		{name: "trusts the system's roots", tls: &tls.Config{ServerName: "127.0.0.1"}, fail: "STARTTLS", is: isUntrustedBySystem},
		{name: "trusts the CA, expects another name", tls: trusting("mx.example.org"), fail: "STARTTLS", is: isWrongName},
		{name: "plain, no AUTH configured: accepted (RFC 3207)"},
		{name: "AUTH after STARTTLS", auth: true, tls: trusting("127.0.0.1"), cred: login},
		{name: "AUTH without STARTTLS", auth: true, cred: login, fail: "AUTH", code: 523, text: "5.7.10 TLS is required"},
		{name: "MAIL without STARTTLS or AUTH", auth: true, fail: "MAIL", code: 530, text: "5.7.0 Authentication required"},
		{name: "STARTTLS but no AUTH", auth: true, tls: trusting("127.0.0.1"), fail: "MAIL", code: 530, text: "5.7.0 Authentication required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			more := obj{"tls": obj{"cert_file": certFile, "key_file": keyFile}}
			if tc.auth {
				more["auth"] = obj{"username": "field", "password": "s3cret"}
			}
			cfg, addr, spool := inboundConfig(t, more)
			ad := inProcess(t, cfg)
			msg := testMail("tide gauge", "level 1.93 m\r\n.dot line\r\n")

			seen, err := sendMailStartTLS(addr, tc.tls, tc.cred, "alice@example.com", []string{"nodeC+inbox@gw.example.org"}, msg)

			// What EHLO advertises, whatever the outcome: STARTTLS
			// only before it, AUTH only after it (and only when the
			// server wants it).
			if want := (ehloFeatures{startTLS: true}); seen.plain != want {
				t.Errorf("EHLO before STARTTLS advertised %+v, want %+v", seen.plain, want)
			}
			if seen.state.HandshakeComplete {
				if want := (ehloFeatures{auth: tc.auth}); seen.secure != want {
					t.Errorf("EHLO after STARTTLS advertised %+v, want %+v", seen.secure, want)
				}
			}

			if tc.fail != "" {
				_, code, text := textReply(err)
				var ms *mailStage
				switch {
				case err == nil:
					t.Fatalf("the mail was accepted, want a failure at %s", tc.fail)
				case !errors.As(err, &ms) || ms.stage != tc.fail:
					t.Fatalf("failed with %v, want a failure at %s", err, tc.fail)
				case tc.is != nil && !tc.is(err):
					t.Fatalf("failed at %s with %v (%T), not the expected kind of error", tc.fail, err, errors.Unwrap(err))
				case tc.code != 0 && (code != tc.code || text != tc.text):
					t.Fatalf("reply at %s: %d %q, want %d %q", tc.fail, code, text, tc.code, tc.text)
				}
				if seen.state.HandshakeComplete && tc.fail == "STARTTLS" {
					t.Fatal("the handshake completed")
				}
				if files := spoolFiles(t, spool, "msgs"); len(files) != 0 {
					t.Fatalf("refused mail left %q in the spool", files)
				}
				if files := spoolFiles(t, spool, "tmp"); len(files) != 0 {
					t.Fatalf("refused mail left %q in the spool's tmp", files)
				}
				if got := fetchAll(t, ad, 0); len(got) != 0 {
					t.Fatalf("Fetch offered %d messages after a refusal", len(got))
				}
				return
			}

			if err != nil {
				t.Fatal(err)
			}
			if tc.tls != nil {
				// The session was really encrypted, with the
				// configured certificate, verified up to the CA.
				st := seen.state
				if !st.HandshakeComplete || st.Version < tls.VersionTLS12 {
					t.Fatalf("TLS state after STARTTLS: complete %v, version %x", st.HandshakeComplete, st.Version)
				}
				if len(st.PeerCertificates) == 0 || !st.PeerCertificates[0].Equal(leaf) {
					t.Fatal("the server did not present the configured certificate")
				}
				if len(st.VerifiedChains) == 0 || !st.VerifiedChains[0][len(st.VerifiedChains[0])-1].Equal(ca.Cert) {
					t.Fatal("the server's certificate was not verified up to the test CA")
				}
			}
			got := fetchAll(t, ad, 0) // the 250 came after the spool's fsync
			if len(got) != 1 {
				t.Fatalf("fetched %d messages, want 1", len(got))
			}
			in := got[0]
			if in.Destination != "dtn://nodeC/inbox" || !bytes.Equal(in.data, msg) {
				t.Fatalf("fetched %q for %s, want the bytes sent for dtn://nodeC/inbox", in.data, in.Destination)
			}
			for k, v := range map[string]string{"mail_from": "alice@example.com", "rcpt_to": "nodeC+inbox@gw.example.org",
				"subject": "tide gauge", "from": "Alice <alice@example.com>", "message_id": "<tide-gauge@example.com>",
				"content_type": "message/rfc822", "helo": "client.example"} {
				if in.Headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, in.Headers[k], v)
				}
			}
			if !strings.HasPrefix(in.MessageID, "smtp:") {
				t.Errorf("MessageID %q", in.MessageID)
			}
			if err := ad.Ack(t.Context(), in.Receipt); err != nil {
				t.Fatal(err)
			}
			if files := spoolFiles(t, spool, "msgs"); len(files) != 0 {
				t.Fatalf("after the Ack the spool holds %q", files)
			}
		})
	}
}
