package s3_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/mulegate/mulegate/internal/testpki"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/internal/adaptertest"
	"github.com/mulegate/mulegate/plugins/s3"
)

func TestConfigErrors(t *testing.T) {
	// Configure never contacts anything, but the default credential chain
	// must not even think of the EC2 metadata service.
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	const ep = `"endpoint": "http://127.0.0.1:1", "path_style": true, `
	const b = `"bucket": "mulegate"`

	tests := []struct {
		name   string
		config string
		keys   []string // the keys reported, in order; none: valid
	}{
		{"empty", `{}`, []string{"bucket"}},
		{"not an object", `[1]`, []string{""}},
		{"not JSON", `{"bucket": `, []string{""}},
		{"unknown key", `{"bukket": "x"}`, []string{"bukket", "bucket"}},
		{"bad bucket", `{"bucket": "a b"}`, []string{"bucket"}},
		{"short bucket", `{"bucket": "ab"}`, []string{"bucket"}},
		{"bucket ends with a dash", `{"bucket": "abc-"}`, []string{"bucket"}},
		{"bucket of the wrong type", `{"bucket": 7}`, []string{"bucket"}},
		{"endpoint scheme", `{"endpoint": "ftp://x", ` + b + `}`, []string{"endpoint"}},
		{"endpoint with credentials", `{"endpoint": "http://a:b@x", ` + b + `}`, []string{"endpoint"}},
		{"endpoint with a query", `{"endpoint": "http://x/?a=b", ` + b + `}`, []string{"endpoint"}},
		{"IP endpoint without path style", `{"endpoint": "http://127.0.0.1:9000", ` + b + `}`, []string{"endpoint"}},
		{"bad region", `{"region": "us east", ` + b + `}`, []string{"region"}},
		{"secret without key id", `{` + b + `, "credentials": {"secret_access_key": "s"}}`, []string{"credentials.access_key_id"}},
		{"key id without secret", `{` + b + `, "credentials": {"access_key_id": "k"}}`, []string{"credentials.secret_access_key"}},
		{"typo in credentials", `{` + b + `, "credentials": {"access_key": "k", "access_key_id": "k", "secret_access_key": "s"}}`, []string{"credentials.access_key"}},
		{"missing CA", `{"endpoint": "https://s3.example.com", ` + b + `, "tls": {"ca_file": "` + missing + `"}}`, []string{"tls.ca_file"}},
		{"CA not PEM", `{"endpoint": "https://s3.example.com", ` + b + `, "tls": {"ca_file": "` + junk + `"}}`, []string{"tls.ca_file"}},
		{"key template placeholder", `{` + b + `, "key": "x/{bundle_id}"}`, []string{"key"}},
		{"key template without bundle key", `{` + b + `, "key": "x/{src_node}"}`, []string{"key"}},
		{"key template with dot segment", `{` + b + `, "key": "x/../{bundle_key}"}`, []string{"key"}},
		{"key template with empty segment", `{` + b + `, "key": "/x/{bundle_key}"}`, []string{"key"}},
		{"sizes", `{` + b + `, "part_size": "1MiB", "multipart_threshold": "6GiB"}`, []string{"part_size", "multipart_threshold"}},
		{"size not a size", `{` + b + `, "part_size": "big"}`, []string{"part_size"}},
		{"negative size", `{` + b + `, "part_size": -5}`, []string{"part_size"}},
		{"durations", `{` + b + `, "connect_timeout": "soon", "response_timeout": "0s"}`, []string{"connect_timeout", "response_timeout"}},
		{"attempts", `{` + b + `, "max_attempts": 0}`, []string{"max_attempts"}},
		{"limits", `{` + b + `, "limits": {"part_concurrency": 0, "max_scan": 0}}`, []string{"limits.part_concurrency", "limits.max_scan"}},
		{"buffer too small", `{` + b + `, "limits": {"max_buffer": "20MiB"}}`, []string{"limits.max_buffer"}},
		{"content type", `{` + b + `, "content_type": "text/plain\u00e9"}`, []string{"content_type"}},
		{"inbound prefix without slash", `{` + b + `, "inbound": {"prefix": "inbox"}}`, []string{"inbound.prefix"}},
		{"inbound prefixes nested", `{` + b + `, "inbound": {"prefix": "in/", "rejected_prefix": "in/rejected/"}}`, []string{"inbound.rejected_prefix"}},
		{"outbound keys under the inbox", `{` + b + `, "key": "inbox/{bundle_key}", "inbound": {}}`, []string{"key"}},
		{"inbound settings", `{` + b + `, "inbound": {"default_destination": "mailto:x", "lease": "10ms", "poll_interval": "1ms", "nack_delay": "soon"}}`,
			[]string{"inbound.nack_delay", "inbound.default_destination", "inbound.lease", "inbound.poll_interval"}},
		{"typo in inbound", `{` + b + `, "inbound": {"prefx": "x/"}}`, []string{"inbound.prefx"}},

		{"minimal: AWS, default chain", `{` + b + `}`, nil},
		{"everything", `{` + ep + `"region": "eu-west-3", ` + b + `,
			"credentials": {"access_key_id": "k", "secret_access_key": "s", "session_token": "t"},
			"key": "logs/{src_node}/{service}/{date}/{seq}-{bundle_key}", "content_type": "application/cbor", "checksums": false,
			"part_size": "16MiB", "multipart_threshold": 33554432, "connect_timeout": "2s", "response_timeout": "30s", "max_attempts": 5,
			"limits": {"max_buffer": "1GiB", "part_concurrency": 4, "max_scan": 500},
			"inbound": {"prefix": "to/", "rejected_prefix": "dead/", "default_destination": "ipn:5.1", "lifetime": "72h",
				"poll_interval": "500ms", "lease": "1m", "nack_delay": "5s"}}`, nil},
		{"https endpoint with a CA", `{"endpoint": "https://minio.local:9000", ` + b + `, "tls": {"ca_file": "` + testpki.NewCA(t, "test CA").File + `"}}`, nil},
	}
	for _, tc := range tests {
		adaptertest.CheckConfigErrors(t, tc.name, tc.config, tc.keys, func() plugins.Adapter { return s3.New(nil) })
	}
}

// A bad block leaves the configuration in force as it was.
func TestBadReconfigurationKeepsTheOld(t *testing.T) {
	ad := s3.New(nil)
	defer ad.Close()
	if err := ad.Configure(t.Context(), json.RawMessage(`{"bucket": "first", "credentials": {"access_key_id": "k", "secret_access_key": "s"}}`)); err != nil {
		t.Fatal(err)
	}
	if err := ad.Configure(t.Context(), json.RawMessage(`{"bucket": "x y"}`)); err == nil {
		t.Fatal("a bad block was accepted")
	}
	meta, _ := testBundle(0, 0)
	if key, err := ad.KeyFor(meta); err != nil || key == "" {
		t.Fatalf("after a refused reconfiguration: KeyFor = %q, %v", key, err)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "8MiB": 8 << 20, "8 MiB": 8 << 20, "16MB": 16e6, "5GiB": 5 << 30, "512KiB": 512 << 10, "7B": 7, "1TB": 1e12,
	} {
		if got, err := s3.ParseByteSize(in); err != nil || int64(got) != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "8 mib", "99999999999TiB", "x"} {
		if got, err := s3.ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
	for v, want := range map[int64]string{8 << 20: "8MiB", 5 << 30: "5GiB", 1536: "1536B", 3 << 10: "3KiB", 0: "0B"} {
		if got := s3.ByteSize(v).String(); got != want {
			t.Errorf("ByteSize(%d) = %q, want %q", v, got, want)
		}
	}
}
