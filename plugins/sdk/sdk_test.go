package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/plugins"
)

type tlsConfig struct {
	CAFile string `json:"ca_file"`
	Verify *bool  `json:"verify"`
}

type embedded struct {
	Region string `json:"region"`
}

type testConfig struct {
	embedded
	URL     string            `json:"url"`
	Port    int               `json:"port"`
	Timeout Duration          `json:"timeout"`
	TLS     tlsConfig         `json:"tls"`
	Extra   *tlsConfig        `json:"extra"`
	Servers []string          `json:"servers"`
	Headers map[string]string `json:"headers"`
	Ignored string            `json:"-"`
	NoTag   string
}

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		want  testConfig  // checked when no errors are expected
		errAt []string    // keys of the expected errors, sorted
		msgs  []string    // substrings of the error text
		pre   *testConfig // dst before decoding
	}{
		{name: "empty means defaults", raw: ``, pre: &testConfig{Port: 25}, want: testConfig{Port: 25}},
		{name: "all fields", raw: `{"url": "https://x", "port": 587, "timeout": "1m30s", "region": "eu",
			"tls": {"ca_file": "/ca.pem", "verify": false}, "extra": {"ca_file": "e"}, "servers": ["a", "b"],
			"headers": {"X": "1"}, "NoTag": "n"}`,
			want: testConfig{embedded: embedded{Region: "eu"}, URL: "https://x", Port: 587, Timeout: Duration(90 * time.Second),
				TLS: tlsConfig{CAFile: "/ca.pem", Verify: new(bool)}, Extra: &tlsConfig{CAFile: "e"}, Servers: []string{"a", "b"},
				Headers: map[string]string{"X": "1"}, NoTag: "n"}},
		{name: "every unknown key, nested too", raw: `{"urll": 1, "tls": {"cafile": "x"}, "extra": {"zzz": 1}, "Ignored": "x"}`,
			errAt: []string{"Ignored", "extra.zzz", "tls.cafile", "urll"},
			msgs:  []string{`urll: unknown key (did you mean "url"?)`, `tls.cafile: unknown key (did you mean "ca_file"?)`}},
		{name: "case matters", raw: `{"URL": "x"}`, errAt: []string{"URL"}, msgs: []string{`did you mean "url"?`}},
		{name: "every type error", raw: `{"port": "25", "url": 5, "timeout": "soon", "servers": "a", "tls": {"verify": "yes"}}`,
			errAt: []string{"port", "servers", "timeout", "tls.verify", "url"},
			msgs:  []string{"port: must be a whole number, not string", `timeout: must be a duration such as "30s" or "5m", not "soon"`}},
		{name: "not an object", raw: `[1]`, errAt: []string{""}, msgs: []string{"must be a JSON object"}},
		{name: "not JSON", raw: `{"url": `, errAt: []string{""}, msgs: []string{"not valid JSON"}},
		{name: "trailing data", raw: `{} {}`, errAt: []string{""}},
		{name: "null keeps defaults", raw: `null`, errAt: []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got testConfig
			if tt.pre != nil {
				got = *tt.pre
			}
			err := DecodeConfig(json.RawMessage(tt.raw), &got)
			if tt.errAt == nil {
				if err != nil {
					t.Fatal(err)
				}
				a, _ := json.Marshal(got)
				b, _ := json.Marshal(tt.want)
				if !bytes.Equal(a, b) || got.Region != tt.want.Region || got.NoTag != tt.want.NoTag {
					t.Errorf("got %s\nwant %s", a, b)
				}
				return
			}
			var ce plugins.ConfigErrors
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want ConfigErrors", err)
			}
			var keys []string
			for _, e := range ce {
				keys = append(keys, e.Key)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tt.errAt) {
				t.Errorf("error keys %q, want %q (%v)", keys, tt.errAt, err)
			}
			for _, m := range tt.msgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%q does not contain %q", err, m)
				}
			}
		})
	}
}

// FuzzDecodeConfig feeds arbitrary bytes as a configuration block: the
// decoder must never panic and must answer nil or ConfigErrors, never
// anything else, and an accepted block must decode the same way twice.
func FuzzDecodeConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"url": "x", "tls": {"verify": true}}`, `{"port": 1e99}`, `{"timeout": "-1s"}`,
		`{"extra": null}`, `{"servers": [1]}`, `{"a": {"b": {"c": 1}}}`, `[]`, `"x"`, `{"tls": []}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c testConfig
		err := DecodeConfig(raw, &c)
		if err != nil {
			var ce plugins.ConfigErrors
			if !errors.As(err, &ce) || len(ce) == 0 {
				t.Fatalf("DecodeConfig(%q) = %T %v, want ConfigErrors", raw, err, err)
			}
			return
		}
		var again testConfig
		if err := DecodeConfig(raw, &again); err != nil {
			t.Fatalf("second decode of %q: %v", raw, err)
		}
		a, _ := json.Marshal(c)
		b, _ := json.Marshal(again)
		if !bytes.Equal(a, b) {
			t.Fatalf("decoding %q twice differs: %s vs %s", raw, a, b)
		}
	})
}

func TestCopyPayload(t *testing.T) {
	tests := []struct {
		name    string
		src     io.Reader
		length  int64
		wantErr bool
	}{
		{"exact", strings.NewReader("hello"), 5, false},
		{"empty", strings.NewReader(""), 0, false},
		{"short", strings.NewReader("hell"), 5, true},
		{"long", strings.NewReader("hello!"), 5, true},
		{"large exact", bytes.NewReader(make([]byte, 3*plugins.ChunkSize+1)), 3*plugins.ChunkSize + 1, false},
		{"negative", strings.NewReader(""), -1, true},
	}
	for _, tt := range tests {
		var dst bytes.Buffer
		err := CopyPayload(&dst, tt.src, tt.length)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v", tt.name, err)
		}
		if err == nil && int64(dst.Len()) != tt.length {
			t.Errorf("%s: copied %d", tt.name, dst.Len())
		}
	}
}

func TestServeRefusesToRunByHand(t *testing.T) {
	t.Setenv(plugins.MagicCookieKey, "")
	if err := Serve(nil); !errors.Is(err, ErrNotStartedByNode) {
		t.Fatalf("Serve without the node's cookie = %v", err)
	}
}
