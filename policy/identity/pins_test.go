package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPinsSurviveReload(t *testing.T) {
	dir := t.TempDir()
	bob := mustGenerate(t, "dtn://bob/")
	impostor := mustGenerate(t, "dtn://bob/")

	tr, err := LoadTrust(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Verify(bob.Chain(), ""); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, filepath.Join(dir, PinsFile)); got != 0o600 {
		t.Errorf("pins file mode %o, want 600", got)
	}

	// A restarted node remembers bob's key.
	tr, err = LoadTrust(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := tr.Pins().Lookup("dtn://bob/"); !ok || p.Fingerprint != bob.Fingerprint() || p.FirstSeen.IsZero() {
		t.Fatalf("after reload, pin = %+v, %v", p, ok)
	}
	if _, err := tr.Verify(impostor.Chain(), ""); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("after reload, another key for dtn://bob/ = %v, want ErrPinMismatch", err)
	}
	if peer, err := tr.Verify(bob.Chain(), ""); err != nil || peer.Via != ViaTOFU {
		t.Fatalf("after reload, bob = %+v, %v", peer, err)
	}

	// Removing the pin accepts a new key, and that too survives a reload.
	if err := tr.Pins().Remove("dtn://bob/"); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Verify(impostor.Chain(), ""); err != nil {
		t.Fatalf("after Remove: %v", err)
	}
	tr, err = LoadTrust(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := tr.Pins().Lookup("dtn://bob/"); p.Fingerprint != impostor.Fingerprint() {
		t.Fatalf("after Remove and reload, pin = %s, want %s", p.Fingerprint, impostor.Fingerprint())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestPinsFileRefused(t *testing.T) {
	fp := mustGenerate(t, "dtn://a/").Fingerprint()
	tests := map[string]string{
		"not JSON":        "{",
		"wrong version":   `{"version": 2, "pins": {}}`,
		"no version":      `{"pins": {}}`,
		"bad node ID":     `{"version": 1, "pins": {"alice": {"fingerprint": "` + fp + `"}}}`,
		"bad fingerprint": `{"version": 1, "pins": {"dtn://a/": {"fingerprint": "sha256:XYZ"}}}`,
		"upper-case hex":  `{"version": 1, "pins": {"dtn://a/": {"fingerprint": "` + strings.ToUpper(fp) + `"}}}`,
		"array":           `[]`,
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), PinsFile)
			writeTestFile(t, path, []byte(data))
			_, err := OpenPins(path)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("OpenPins = %v, want an error naming %s", err, path)
			}
		})
	}
	path := filepath.Join(t.TempDir(), PinsFile)
	writeTestFile(t, path, []byte(`{"version": 1, "pins": {"dtn://a/": {"fingerprint": "`+fp+`"}}}`))
	s, err := OpenPins(path)
	if err != nil || s.Len() != 1 {
		t.Fatalf("OpenPins of a good file = %v, %v", s, err)
	}
}

func TestPinStoreFull(t *testing.T) {
	tr := tofuTrust(t)
	tr.Pins().max = 2
	for _, id := range []string{"ipn:1.0", "ipn:2.0"} {
		if _, err := tr.Verify(mustGenerate(t, id).Chain(), ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err := tr.Verify(mustGenerate(t, "ipn:3.0").Chain(), "")
	if !errors.Is(err, ErrPinStoreFull) || !strings.Contains(err.Error(), "ipn:3.0") {
		t.Fatalf("third pin = %v, want ErrPinStoreFull naming ipn:3.0", err)
	}
	if tr.Pins().Len() != 2 {
		t.Fatalf("store holds %d pins", tr.Pins().Len())
	}
}

// If the pin cannot be written, the peer is refused rather than accepted with
// a pin that a restart would forget.
func TestPinSaveFailureRefuses(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "sub")
	pins, err := OpenPins(filepath.Join(sub, PinsFile))
	if err != nil {
		t.Fatal(err)
	}
	// The pins file's directory becomes a regular file: every save fails.
	writeTestFile(t, sub, nil)
	tr, err := NewTrust(nil, pins)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Verify(mustGenerate(t, "dtn://bob/").Chain(), ""); err == nil {
		t.Fatal("peer accepted although its pin could not be saved")
	}
	if pins.Len() != 0 {
		t.Fatal("unsaved pin kept in memory")
	}
}

func TestPinsEncodeRoundTrip(t *testing.T) {
	fp := mustGenerate(t, "dtn://a/").Fingerprint()
	in := map[string]Pin{
		"dtn://a/": {Fingerprint: fp, FirstSeen: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
		"ipn:9.0":  {Fingerprint: fp},
	}
	data, err := encodePins(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := parsePins(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("round trip: %v", out)
	}
	for k, v := range in {
		if got := out[k]; got.Fingerprint != v.Fingerprint || !got.FirstSeen.Equal(v.FirstSeen) {
			t.Errorf("%s: %+v, want %+v", k, got, v)
		}
	}
}
