package nats_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/internal/testpki"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/internal/adaptertest"
	"github.com/mulegate/mulegate/plugins/nats"
)

// A syntactically valid nkey user seed (from nats.go's tests).
const testSeed = "SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY"

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seed := write("user.nk", testSeed+"\n")
	junk := write("junk", "not a key\n")
	ca, cert, key := testpki.Files(t)
	missing := filepath.Join(dir, "missing")

	url := `"urls": ["nats://127.0.0.1:1"]`
	tests := []struct {
		name   string
		config string
		keys   []string // the keys reported, in order; none: valid
	}{
		{"empty", `{}`, []string{"urls"}},
		{"not an object", `[1]`, []string{""}},
		{"unknown key", `{"url": "nats://x:4222"}`, []string{"url", "urls"}},
		{"bad scheme", `{"urls": ["http://x:4222", "nats://ok:4222"]}`, []string{"urls[0]"}},
		{"credentials in the URL", `{"urls": ["nats://u:p@x:4222"]}`, []string{"urls[0]"}},
		{"no host", `{"urls": ["nats://:4222"]}`, []string{"urls[0]"}},
		{"two ways to authenticate", `{` + url + `, "auth": {"token": "t", "user": "u", "password": "p"}}`, []string{"auth.user"}},
		{"password without user", `{` + url + `, "auth": {"password": "p"}}`, []string{"auth.user"}},
		{"user without password", `{` + url + `, "auth": {"user": "u"}}`, []string{"auth.password"}},
		{"missing creds file", `{` + url + `, "auth": {"creds_file": "` + missing + `"}}`, []string{"auth.creds_file"}},
		{"creds file is a directory", `{` + url + `, "auth": {"creds_file": "` + dir + `"}}`, []string{"auth.creds_file"}},
		{"junk nkey seed", `{` + url + `, "auth": {"nkey_seed_file": "` + junk + `"}}`, []string{"auth.nkey_seed_file"}},
		{"typo in auth", `{` + url + `, "auth": {"tokn": "t"}}`, []string{"auth.tokn"}},
		{"cert without key", `{` + url + `, "tls": {"cert_file": "` + cert + `"}}`, []string{"tls.key_file"}},
		{"key without cert", `{` + url + `, "tls": {"key_file": "` + key + `"}}`, []string{"tls.cert_file"}},
		{"cert and key mismatched", `{` + url + `, "tls": {"cert_file": "` + cert + `", "key_file": "` + junk + `"}}`, []string{"tls.cert_file"}},
		{"missing CA", `{` + url + `, "tls": {"ca_file": "` + missing + `"}}`, []string{"tls.ca_file"}},
		{"CA not PEM", `{` + url + `, "tls": {"ca_file": "` + junk + `"}}`, []string{"tls.ca_file"}},
		{"bad durations", `{` + url + `, "connect_timeout": "soon", "publish_timeout": "0s"}`, []string{"connect_timeout", "publish_timeout"}},
		{"subject with wildcard", `{` + url + `, "subject": "logs.>"}`, []string{"subject"}},
		{"subject with unknown placeholder", `{` + url + `, "subject": "logs.{bundle_id}"}`, []string{"subject"}},
		{"subject with empty token", `{` + url + `, "subject": "logs..{service}"}`, []string{"subject"}},
		{"stream problems", `{` + url + `, "streams": [{"name": "a.b", "storage": "disk", "replicas": 7}]}`,
			[]string{"streams[0].name", "streams[0].subjects", "streams[0].storage", "streams[0].replicas"}},
		{"stream subject", `{` + url + `, "streams": [{"name": "A", "subjects": ["ok.>", "a.>.b"]}]}`, []string{"streams[0].subjects[1]"}},
		{"duplicates over max_age", `{` + url + `, "streams": [{"name": "A", "subjects": ["a"], "max_age": "1m", "duplicates": "2m"}]}`, []string{"streams[0].duplicates"}},
		{"stream twice", `{` + url + `, "streams": [{"name": "A", "subjects": ["a"]}, {"name": "A", "subjects": ["b"]}]}`, []string{"streams[1].name"}},
		{"bad bucket", `{` + url + `, "object_store": {"bucket": "my bucket", "storage": "tape"}}`, []string{"object_store.bucket", "object_store.storage"}},
		{"inbound without stream", `{` + url + `, "inbound": {}}`, []string{"inbound.stream"}},
		{"inbound limits", `{` + url + `, "inbound": {"stream": "IN", "batch": 5000, "max_ack_pending": -1, "ack_wait": "10ms"}}`,
			[]string{"inbound.batch", "inbound.max_ack_pending", "inbound.ack_wait"}},
		{"dead letters fetched again", `{` + url + `, "inbound": {"stream": "IN", "dead_letter": "to.dead"}}`, []string{"inbound.dead_letter"}},
		{"empty prefix needs subjects", `{` + url + `, "inbound": {"stream": "IN", "prefix": ""}}`, []string{"inbound.subjects"}},
		{"bad prefix and header", `{` + url + `, "inbound": {"stream": "IN", "prefix": "to.*", "destination_header": "a b", "consumer": "x.y"}}`,
			[]string{"inbound.prefix", "inbound.destination_header", "inbound.consumer"}},

		{"minimal", `{` + url + `}`, nil},
		{"everything", `{"urls": ["nats://127.0.0.1:1", "tls://127.0.0.1:2"], "name": "gw", "connect_timeout": "1s", "publish_timeout": "3s",
			"auth": {"nkey_seed_file": "` + seed + `"},
			"tls": {"ca_file": "` + ca + `", "cert_file": "` + cert + `", "key_file": "` + key + `", "server_name": "localhost"},
			"subject": "logs.{src_node}.{service}",
			"streams": [{"name": "LOGS", "subjects": ["logs.>"], "storage": "memory", "max_age": "24h", "duplicates": "1h", "replicas": 1}],
			"object_store": {"bucket": "big_things-1", "max_age": "48h"},
			"inbound": {"stream": "IN", "consumer": "gw", "subjects": ["to.>", "mail.>"], "prefix": "to", "destination_header": "X-Dest",
				"batch": 10, "max_ack_pending": 100, "ack_wait": "30s", "nack_delay": "0s", "dead_letter": "dead.in", "lifetime": "72h"}}`, nil},
		{"object store off", `{` + url + `, "object_store": {"bucket": ""}}`, nil},
	}
	for _, tc := range tests {
		adaptertest.CheckConfigErrors(t, tc.name, tc.config, tc.keys, func() plugins.Adapter { return nats.New(nil) })
	}
}

// TestTLSAndToken: tls.ca_file and auth.token reach a server that needs
// both; without the CA the server is not trusted, and Check says why.
func TestTLSAndToken(t *testing.T) {
	ca, cert, key := testpki.Files(t)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := newEmbedded(t)
	srv.Opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.Opts.TLS = true
	srv.Opts.Authorization = "s3cret-token"
	srv.Start()

	good := inProcess(t, obj{"urls": []string{srv.URL()}, "auth": obj{"token": "s3cret-token"}, "tls": obj{"ca_file": ca},
		"streams": []obj{{"name": "LOGS", "subjects": []string{"logs.>"}}}})
	eventually(t, 10*time.Second, "Check over TLS", func() error { return good.Check(t.Context()) })
	meta, payload := testBundle(1, 10)
	if res := good.Deliver(t.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.OK {
		t.Fatal(res)
	}

	untrusted := inProcess(t, obj{"urls": []string{srv.URL()}, "auth": obj{"token": "s3cret-token"}, "tls": obj{"server_name": "localhost"}})
	wrongToken := inProcess(t, obj{"urls": []string{srv.URL()}, "auth": obj{"token": "wrong"}, "tls": obj{"ca_file": ca}})
	// The reason is known once a connection attempt in the background
	// has failed.
	for _, c := range []struct {
		ad   *nats.Adapter
		why  string
		want string
	}{{untrusted, "without the CA", "certificate"}, {wrongToken, "with a wrong token", "authorization"}} {
		eventually(t, 10*time.Second, "Check "+c.why+" names the reason", func() error {
			err := c.ad.Check(t.Context())
			if !errors.Is(err, plugins.ErrUnreachable) || !strings.Contains(strings.ToLower(err.Error()), c.want) {
				return fmt.Errorf("Check = %v, want ErrUnreachable naming %q", err, c.want)
			}
			return nil
		})
	}
}
