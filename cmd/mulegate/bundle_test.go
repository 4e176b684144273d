package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// runCLI runs the mulegate command tree in process.
func runCLI(t *testing.T, stdin []byte, args ...string) (stdout []byte, err error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetIn(bytes.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err = root.Execute()
	return out.Bytes(), err
}

func TestBundleCreateShow(t *testing.T) {
	dir := t.TempDir()
	payload := bytes.Repeat([]byte("mule "), 1000)
	in := filepath.Join(dir, "payload")
	if err := os.WriteFile(in, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	for _, crc := range []string{"16", "32", "none"} {
		t.Run("crc "+crc, func(t *testing.T) {
			out := filepath.Join(dir, "b-"+crc)
			// The creation time is the clock's when the bundle is made.
			notBefore := bundle.FromTime(time.Now())
			if _, err := runCLI(t, nil, "bundle", "create", "--src", "dtn://alice/app", "--dst", "ipn:9.1", "--lifetime", "2h", "--crc", crc, "--hop-limit", "7", "--payload", in, "-o", out); err != nil {
				t.Fatal(err)
			}
			notAfter := bundle.FromTime(time.Now())
			js, err := runCLI(t, nil, "bundle", "show", "--json", out)
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(js, &v); err != nil {
				t.Fatal(err)
			}
			wantCRC := map[string]string{"16": "crc16", "32": "crc32c", "none": "crc16"}[crc]
			checks := map[string]any{
				"source": "dtn://alice/app", "destination": "ipn:9.1", "report_to": "dtn://alice/app",
				"lifetime_ms": 7200000.0, "payload_length": float64(len(payload)),
				"payload_sha256": hex.EncodeToString(sum[:]), "crc_type": wantCRC, "sequence": 0.0, "flags": 0.0,
			}
			for k, want := range checks {
				if v[k] != want {
					t.Errorf("%s = %v, want %v", k, v[k], want)
				}
			}
			// creation_time is DTN time: milliseconds since 2000-01-01.
			// (A float64 holds such a count exactly.)
			if ct, ok := v["creation_time"].(float64); !ok || ct < float64(notBefore) || ct > float64(notAfter) {
				t.Errorf("creation_time = %v, want DTN time (ms) between %d and %d", v["creation_time"], notBefore, notAfter)
			}
			blocks, _ := v["blocks"].([]any)
			if len(blocks) != 2 {
				t.Fatalf("blocks = %v, want the hop count and payload blocks", v["blocks"])
			}
			for i, blk := range blocks {
				for _, k := range []string{"type", "number", "flags", "crc_type"} {
					if _, ok := blk.(map[string]any)[k]; !ok {
						t.Errorf("block %d: field %q missing", i, k)
					}
				}
			}
			human, err := runCLI(t, nil, "bundle", "show", out)
			if err != nil || !strings.Contains(string(human), "0 of 7 hops") {
				t.Errorf("human output:\n%s\n%v", human, err)
			}
		})
	}
	t.Run("stdin to stdout", func(t *testing.T) {
		enc, err := runCLI(t, []byte("hi"), "bundle", "create", "--src", "dtn://a/", "--dst", "dtn://b/")
		if err != nil {
			t.Fatal(err)
		}
		js, err := runCLI(t, enc, "bundle", "show", "--json", "-")
		if err != nil || !strings.Contains(string(js), `"payload_length": 2`) {
			t.Fatalf("%s %v", js, err)
		}
	})
	t.Run("invalid bundles exit non-zero with the reason", func(t *testing.T) {
		good, _ := runCLI(t, []byte("hi"), "bundle", "create", "--src", "dtn://a/", "--dst", "dtn://b/")
		bad := bytes.Clone(good)
		bad[len(bad)-3] ^= 0xff
		for name, tc := range map[string]struct {
			data []byte
			want string
		}{
			"CRC":      {bad, "CRC mismatch"},
			"trailing": {append(bytes.Clone(good), 0), "data after the end"},
			"garbage":  {[]byte("hello"), "not a BPv7 bundle"},
		} {
			if _, err := runCLI(t, tc.data, "bundle", "show", "-"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: err = %v, want %q", name, err, tc.want)
			}
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		if _, err := runCLI(t, nil, "bundle", "create", "--src", "nope", "--dst", "dtn://b/"); err == nil || !strings.Contains(err.Error(), "--src") {
			t.Errorf("err = %v", err)
		}
	})
}
