package s3_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mulegate/mulegate/internal/testpki"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/s3/internal/s3test"
)

// TestTLS runs the adapter, in its own process as the node does, against
// a server that speaks HTTPS only, with a certificate for 127.0.0.1 from
// a private CA. With that CA in tls.ca_file, Check succeeds and bundles
// (on the session and streamed) land with their bytes. Without it, or
// with another CA, the certificate is refused: Check fails as unreachable
// and tells the operator to set tls.ca_file, and a delivery is Retry (a
// fixed configuration delivers it), with nothing written; so too for an
// endpoint the certificate does not name, with the fix being endpoint. A
// tls.ca_file that is missing or holds no certificate is refused by
// Configure, by key.
func TestTLS(t *testing.T) {
	srv := s3test.StartTLSServer(t, bucket)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("-----BEGIN NOTHING-----\nnot a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The same server, by a name its certificate does not hold.
	byName := strings.Replace(srv.URL(), "127.0.0.1", "localhost", 1)

	// What an operator reads in the node's status when the certificate is
	// refused: what is wrong, and which key fixes it.
	untrusted := []string{"certificate is not trusted", "set tls.ca_file"}
	tests := []struct {
		name     string
		endpoint string // "" for srv.URL()
		caFile   string // tls.ca_file; "" leaves tls out
		// configErr, if set, is what Configure must say about
		// tls.ca_file; the adapter must then not start.
		configErr string
		// refused is what Check and every Deliver must say, the
		// certificate being refused; nil: Check succeeds and bundles
		// land.
		refused []string
	}{
		{name: "the server's CA in tls.ca_file", caFile: srv.CAFile()},
		{name: "no tls.ca_file", refused: untrusted},
		{name: "another CA in tls.ca_file", caFile: testpki.NewCA(t, "another CA").File, refused: untrusted},
		{name: "endpoint not in the certificate", endpoint: byName, caFile: srv.CAFile(),
			refused: []string{"certificate does not match the endpoint", "use a host name or address in endpoint"}},
		{name: "tls.ca_file missing", caFile: filepath.Join(dir, "missing.pem"), configErr: "cannot be read"},
		{name: "tls.ca_file not PEM", caFile: junk, configErr: "holds no PEM certificate"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := serverConfig(srv, nil)
			if tc.endpoint != "" {
				cfg["endpoint"] = tc.endpoint
			}
			if tc.caFile != "" {
				cfg["tls"] = obj{"ca_file": tc.caFile}
			}
			if tc.configErr != "" {
				_, err := launchAdapter(t, cfg)
				var ce plugins.ConfigErrors
				if !errors.As(err, &ce) {
					t.Fatalf("Start = %v, want the adapter to refuse its configuration", err)
				}
				if len(ce) != 1 || ce[0].Key != "tls.ca_file" || !strings.Contains(ce[0].Message, tc.configErr) {
					t.Fatalf("Configure = %q, want one error on tls.ca_file saying %q", ce, tc.configErr)
				}
				return
			}
			_, ad := startAdapter(t, cfg)

			// Bundles of their own for each case, one small enough for the
			// session and one streamed (over its 64 KiB), so that a case
			// sees only what it wrote.
			bundles := []int{2 * i, 2*i + 1}
			sizes := []int{1 << 10, 200 << 10}

			err := ad.Check(t.Context())
			if tc.refused == nil {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				for j, n := range bundles {
					meta, payload := testBundle(n, sizes[j])
					if res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload)); res.Status != plugins.OK {
						t.Fatalf("bundle %d: Deliver = %v, want OK", n, res)
					}
					key := expectedKey(t, meta)
					o, ok := srv.Get(bucket, key)
					if !ok {
						t.Fatalf("bundle %d: no object at %q", n, key)
					}
					if !bytes.Equal(o.Body, payload) {
						t.Fatalf("bundle %d: %d bytes at %q that differ from its %d", n, len(o.Body), key, len(payload))
					}
				}
				return
			}

			if !errors.Is(err, plugins.ErrUnreachable) {
				t.Fatalf("Check = %v, want ErrUnreachable", err)
			}
			if msg := err.Error(); !containsAll(msg, tc.refused) {
				t.Errorf("Check = %q, want it to say %q", msg, tc.refused)
			}
			for j, n := range bundles {
				meta, payload := testBundle(n, sizes[j])
				res := ad.Deliver(t.Context(), meta, bytes.NewReader(payload))
				if res.Status != plugins.Retry || !containsAll(res.Reason, tc.refused) {
					t.Errorf("bundle %d: Deliver = %v, want Retry saying %q", n, res, tc.refused)
				}
				if key := expectedKey(t, meta); srv.ETag(bucket, key) != "" {
					t.Errorf("bundle %d: an object at %q, though the adapter refused the server's certificate", n, key)
				}
			}
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
