package smtp_test

import (
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/mulegate/mulegate/internal/testpki"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/internal/adaptertest"
	"github.com/mulegate/mulegate/plugins/smtp"
)

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, cert, key := testpki.Files(t)
	missing := filepath.Join(dir, "missing")
	spool := filepath.Join(dir, "spool")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	listen := func() string { return `"127.0.0.1:` + itoa(freePort(t)) + `"` }

	out := `"server": "127.0.0.1:1", "domain": "gw.example.org"`
	tests := []struct {
		name   string
		config string
		keys   []string // the keys reported, in order; none: valid
	}{
		{"empty", `{}`, []string{"server"}},
		{"not an object", `[1]`, []string{""}},
		{"unknown key", `{"servr": "x:25", "domain": "d.org"}`, []string{"servr", "server"}},
		{"server without port", `{"server": "smtp.example.org", "domain": "d.org"}`, []string{"server"}},
		{"server with a bad port", `{"server": "smtp.example.org:smtpx", "domain": "d.org"}`, []string{"server"}},
		{"no domain", `{"server": "x:25"}`, []string{"domain"}},
		{"bad domain", `{"server": "x:25", "domain": "a b"}`, []string{"domain"}},
		{"bad tls mode", `{` + out + `, "tls": {"mode": "sometimes"}}`, []string{"tls.mode"}},
		{"missing CA", `{` + out + `, "tls": {"ca_file": "` + missing + `"}}`, []string{"tls.ca_file"}},
		{"CA not PEM", `{` + out + `, "tls": {"ca_file": "` + junk + `"}}`, []string{"tls.ca_file"}},
		{"CA with TLS off", `{` + out + `, "tls": {"mode": "off", "ca_file": "` + ca + `"}}`, []string{"tls.mode"}},
		{"auth without password", `{` + out + `, "auth": {"username": "u"}}`, []string{"auth.password"}},
		{"auth in the clear", `{` + out + `, "tls": {"mode": "off"}, "auth": {"username": "u", "password": "p"}}`, []string{"auth.allow_insecure"}},
		{"typo in auth", `{` + out + `, "auth": {"user": "u", "password": "p"}}`, []string{"auth.user", "auth.username"}},
		{"bad helo name", `{` + out + `, "helo_name": "not a host"}`, []string{"helo_name"}},
		{"from not an address", `{` + out + `, "from": "nobody"}`, []string{"from"}},
		{"from with unknown placeholder", `{` + out + `, "from": "{user}@{domain}"}`, []string{"from"}},
		{"envelope_from not an address", `{` + out + `, "envelope_from": "a b c"}`, []string{"envelope_from"}},
		{"subject on two lines", `{` + out + `, "subject": "a\nb"}`, []string{"subject"}},
		{"bad format", `{` + out + `, "format": "mime"}`, []string{"format"}},
		{"bad durations", `{` + out + `, "connect_timeout": "soon", "command_timeout": "0s", "data_timeout": "0s", "idle_timeout": "-1s"}`,
			[]string{"connect_timeout", "idle_timeout", "command_timeout", "data_timeout"}},
		{"bad sizes", `{` + out + `, "max_message_size": -1, "max_header_bytes": 10, "max_connections": 0}`,
			[]string{"max_message_size", "max_header_bytes", "max_connections"}},
		{"inbound without listen and spool", `{"inbound": {"domains": ["gw.example.org"]}}`, []string{"inbound.listen", "inbound.spool"}},
		{"inbound relative spool", `{"inbound": {"listen": ` + listen() + `, "spool": "spool", "domains": ["d.org"]}}`, []string{"inbound.spool"}},
		{"inbound maps nobody", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `"}}`, []string{"inbound.domains"}},
		{"inbound bad recipients", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `", "recipients": {"not an address": "dtn://a/b", "ops@d.org": "http://x", "ok@d.org": "dtn://nodeC/ops"}}}`,
			[]string{"inbound.recipients.not an address", "inbound.recipients.ops@d.org"}},
		{"inbound bad domain and service", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `", "domains": ["ok.org", "bad domain"], "default_service": "a b"}}`,
			[]string{"inbound.domains[1]", "inbound.default_service"}},
		{"inbound bad listen", `{"inbound": {"listen": "127.0.0.1", "spool": "` + spool + `", "domains": ["d.org"]}}`, []string{"inbound.listen"}},
		{"inbound address in use", `{"inbound": {"listen": "` + busy.Addr().String() + `", "spool": "` + spool + `", "domains": ["d.org"]}}`, []string{"inbound.listen"}},
		{"inbound spool is a file", `{"inbound": {"listen": ` + listen() + `, "spool": "` + junk + `", "domains": ["d.org"]}}`, []string{"inbound.spool"}},
		{"inbound limits", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `", "domains": ["d.org"], "max_message_size": 100, "max_bytes": 10, "max_recipients": -1, "lease": "10ms"}}`,
			[]string{"inbound.max_recipients", "inbound.max_message_size", "inbound.lease"}},
		{"inbound auth in the clear", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `", "domains": ["d.org"], "auth": {"username": "u", "password": "p"}}}`,
			[]string{"inbound.allow_insecure_auth"}},
		{"inbound tls without key", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `", "domains": ["d.org"], "tls": {"cert_file": "` + cert + `"}}}`,
			[]string{"inbound.tls.key_file"}},
		{"inbound tls junk", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `", "domains": ["d.org"], "tls": {"cert_file": "` + junk + `", "key_file": "` + key + `"}}}`,
			[]string{"inbound.tls.cert_file"}},

		{"minimal", `{` + out + `}`, nil},
		{"everything", `{"server": "smtp.example.org:465", "domain": "gw.example.org", "helo_name": "gw.example.org",
			"tls": {"mode": "implicit", "ca_file": "` + ca + `", "server_name": "localhost"},
			"auth": {"username": "u", "password": "p"}, "from": "{src_node}+{service}@{domain}", "envelope_from": "bounces@{domain}",
			"subject": "[{src_node}] {service}", "format": "body", "connect_timeout": "1s", "command_timeout": "5s", "data_timeout": "1m",
			"max_message_size": 1048576, "max_header_bytes": 4096, "max_connections": 2, "idle_timeout": "5s", "retry_after": "10s",
			"inbound": {"listen": ` + listen() + `, "hostname": "mx.example.org", "domains": ["gw.example.org"], "recipients": {"Ops@Example.org": "dtn://nodeC/ops", "five@example.org": "ipn:5.1"},
				"default_service": "", "spool": "` + spool + `", "max_message_size": 1000, "max_recipients": 5, "max_messages": 10, "max_bytes": 100000,
				"max_connections": 4, "read_timeout": "10s", "write_timeout": "10s", "auth": {"username": "u", "password": "p"},
				"tls": {"cert_file": "` + cert + `", "key_file": "` + key + `"}, "lifetime": "24h", "nack_delay": "0s", "lease": "1m"}}`, nil},
		{"inbound only", `{"inbound": {"listen": ` + listen() + `, "spool": "` + spool + `", "domains": ["d.org"]}}`, nil},
	}
	for _, tc := range tests {
		adaptertest.CheckConfigErrors(t, tc.name, tc.config, tc.keys, func() plugins.Adapter { return smtp.New(nil) })
	}
}

// TestConfigureKeepsPreviousOnError: a bad block leaves the one in force.
func TestConfigureKeepsPreviousOnError(t *testing.T) {
	ad := smtp.New(nil)
	defer ad.Close()
	if err := ad.Configure(t.Context(), json.RawMessage(`{"server": "127.0.0.1:1", "domain": "d.org", "tls": {"mode": "off"}}`)); err != nil {
		t.Fatal(err)
	}
	if err := ad.Configure(t.Context(), json.RawMessage(`{"server": "x"}`)); err == nil {
		t.Fatal("a bad block was accepted")
	}
	// Still configured: Check runs (and fails: nothing listens on port 1).
	if err := ad.Check(t.Context()); !errors.Is(err, plugins.ErrUnreachable) {
		t.Fatalf("Check = %v, want ErrUnreachable from the first configuration", err)
	}
}

func itoa(i int) string { return big.NewInt(int64(i)).String() }
