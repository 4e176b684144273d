package identity

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTestFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identity")
	ca := mustCA(t, "campfire")
	for _, id := range []*Identity{mustGenerate(t, "dtn://alice/"), member(t, ca, "campfire/bob", "ipn:12.0")} {
		if err := id.Save(dir); err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]os.FileMode{
			dir:                          0o700,
			filepath.Join(dir, KeyFile):  0o600,
			filepath.Join(dir, CertFile): 0o644,
		} {
			if got := mode(t, path); got != want {
				t.Errorf("%s has mode %o, want %o", path, got, want)
			}
		}
		got, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got.NodeID() != id.NodeID() || got.Name() != id.Name() || got.Fingerprint() != id.Fingerprint() || len(got.Chain()) != len(id.Chain()) {
			t.Errorf("loaded %s %q %s (%d certs), saved %s %q %s (%d certs)",
				got.NodeID(), got.Name(), got.Fingerprint(), len(got.Chain()), id.NodeID(), id.Name(), id.Fingerprint(), len(id.Chain()))
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("temporary file %s left behind", e.Name())
			}
		}
	}
}

func TestLoadRefusesBrokenFiles(t *testing.T) {
	alice := mustGenerate(t, "dtn://alice/")
	bob := mustGenerate(t, "dtn://bob/")
	bobKey, err := encodePrivateKey(bob.key)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ecdsaKey(t))
	if err != nil {
		t.Fatal(err)
	}
	goodKey, err := encodePrivateKey(alice.key)
	if err != nil {
		t.Fatal(err)
	}
	truncated := goodKey[:len(goodKey)/2]
	ecdsaCert, _ := makeCert(t, certSpec{cn: "ec", uris: []string{"dtn://alice/"}, key: ecdsaKey(t)})

	tests := []struct {
		name     string
		file     string // which file is replaced
		data     []byte
		want     error // optional kind
		wantFile string
	}{
		{name: "key garbage", file: KeyFile, data: []byte("garbage"), wantFile: KeyFile},
		{name: "key truncated", file: KeyFile, data: truncated, wantFile: KeyFile},
		{name: "key bad DER", file: KeyFile, data: pemEncode(pemPrivateKey, []byte{0x30, 0x03, 1, 2, 3}), wantFile: KeyFile},
		{name: "key wrong PEM type", file: KeyFile, data: EncodeChain(alice.Leaf()), wantFile: KeyFile},
		{name: "key not Ed25519", file: KeyFile, data: pemEncode(pemPrivateKey, ecDER), want: ErrNotEd25519, wantFile: KeyFile},
		{name: "key of someone else", file: KeyFile, data: bobKey, want: ErrKeyMismatch, wantFile: CertFile},
		{name: "cert garbage", file: CertFile, data: []byte("garbage"), wantFile: CertFile},
		{name: "cert bad DER", file: CertFile, data: pemEncode(pemCertificate, []byte("xx")), wantFile: CertFile},
		{name: "cert holds a key", file: CertFile, data: goodKey, wantFile: CertFile},
		{name: "cert of someone else", file: CertFile, data: EncodeChain(bob.Leaf()), want: ErrKeyMismatch, wantFile: CertFile},
		{name: "cert not Ed25519", file: CertFile, data: EncodeChain(ecdsaCert), want: ErrNotEd25519, wantFile: CertFile},
		{name: "cert empty", file: CertFile, data: nil, wantFile: CertFile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := alice.Save(dir); err != nil {
				t.Fatal(err)
			}
			writeTestFile(t, filepath.Join(dir, tc.file), tc.data)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			t.Log(err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Load = %v, want %v", err, tc.want)
			}
			if path := filepath.Join(dir, tc.wantFile); !strings.Contains(err.Error(), path) {
				t.Errorf("Load = %q, which does not name %s", err, path)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "identity init") {
		t.Fatalf("Load of an empty dir = %v, want ErrNotExist and a hint", err)
	}
	// Half an identity is not silently replaced by a new one.
	writeTestFile(t, filepath.Join(dir, CertFile), EncodeChain(mustGenerate(t, "dtn://alice/").Leaf()))
	if _, err := LoadOrCreate(dir, "dtn://alice/"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadOrCreate with only node.crt = %v, want an error about the missing key", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "identity")
	first, err := LoadOrCreate(dir, "dtn://alice/")
	if err != nil {
		t.Fatal(err)
	}
	if first.NodeID() != "dtn://alice/" || first.Name() != "" {
		t.Fatalf("created %s %q", first.NodeID(), first.Name())
	}
	if mode(t, filepath.Join(dir, KeyFile)) != 0o600 || mode(t, dir) != 0o700 {
		t.Fatal("created identity has loose permissions")
	}
	again, err := LoadOrCreate(dir, "dtn://alice/")
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint() != first.Fingerprint() {
		t.Fatal("LoadOrCreate made a new key for an existing identity")
	}
	if _, err := LoadOrCreate(dir, ""); err != nil {
		t.Fatalf("LoadOrCreate with no expectation: %v", err)
	}
	_, err = LoadOrCreate(dir, "dtn://bob/")
	if !errors.Is(err, ErrNodeIDMismatch) || !strings.Contains(err.Error(), "dtn://alice/") || !strings.Contains(err.Error(), "dtn://bob/") {
		t.Fatalf("LoadOrCreate for another node = %v, want ErrNodeIDMismatch naming both", err)
	}
	if _, err := LoadOrCreate(t.TempDir(), ""); err == nil {
		t.Fatal("LoadOrCreate created an identity without a node ID")
	}
}

func TestGenerate(t *testing.T) {
	for _, id := range []string{"dtn://alice/", "ipn:12.0", "dtn://node-1.campfire/"} {
		got, err := Generate(id, time.Hour)
		if err != nil {
			t.Fatalf("Generate(%q): %v", id, err)
		}
		if got.NodeID() != id {
			t.Errorf("Generate(%q).NodeID() = %q", id, got.NodeID())
		}
		leaf := got.Leaf()
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
			t.Errorf("leaf URIs = %v, want [%s]", leaf.URIs, id)
		}
		if !selfSigned(leaf) {
			t.Error("generated leaf is not self-signed")
		}
		tc := got.TLSCertificate()
		if len(tc.Certificate) != 1 || tc.Leaf != leaf || tc.PrivateKey == nil {
			t.Errorf("TLSCertificate = %+v", tc)
		}
	}
	for _, bad := range []string{"", "alice", "dtn://alice", "dtn:none", "ipn:0.0", "ipn:1.1", "DTN://alice/"} {
		if _, err := Generate(bad, time.Hour); err == nil {
			t.Errorf("Generate(%q) succeeded", bad)
		}
	}
	if _, err := Generate("dtn://alice/", 0); err == nil {
		t.Error("Generate with zero validity succeeded")
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := mustCA(t, "campfire")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, filepath.Join(dir, CAKeyFile)); got != 0o600 {
		t.Errorf("ca.key mode %o, want 600", got)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("CA dir mode %o, want 700", got)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Group() != "campfire" || !loaded.Certificate().Equal(ca.Certificate()) {
		t.Fatalf("loaded CA %q", loaded.Group())
	}
	// The loaded CA issues certificates the original's root verifies.
	alice := member(t, loaded, "campfire/alice", "dtn://alice/")
	if _, err := certTrust(t, ca.Certificate()).Verify(alice.Chain(), ""); err != nil {
		t.Fatal(err)
	}

	other := mustCA(t, "campfire")
	otherKey, _ := encodePrivateKey(other.key)
	member := mustGenerate(t, "dtn://alice/")
	for name, tc := range map[string]struct {
		file string
		data []byte
		want error
	}{
		"key garbage":       {CAKeyFile, []byte("xx"), nil},
		"key of another CA": {CAKeyFile, otherKey, ErrKeyMismatch},
		"cert garbage":      {CACertFile, []byte("xx"), nil},
		"cert not a CA":     {CACertFile, EncodeChain(member.Leaf()), nil},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			if err := ca.Save(d); err != nil {
				t.Fatal(err)
			}
			writeTestFile(t, filepath.Join(d, tc.file), tc.data)
			_, err := LoadCA(d)
			if err == nil {
				t.Fatal("LoadCA succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("LoadCA = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), filepath.Join(d, tc.file)) {
				t.Errorf("LoadCA = %q, which does not name %s", err, tc.file)
			}
		})
	}
}

func TestParseChain(t *testing.T) {
	a := mustGenerate(t, "dtn://a/").Leaf()
	b := mustGenerate(t, "dtn://b/").Leaf()
	chain, err := ParseChain(append([]byte("Bag Attributes: junk\n"), EncodeChain(a, b)...))
	if err != nil || len(chain) != 2 || !chain[0].Equal(a) || !chain[1].Equal(b) {
		t.Fatalf("ParseChain = %v, %v", chain, err)
	}
	long := make([]*x509.Certificate, maxChainLen+1)
	for i := range long {
		long[i] = a
	}
	for name, data := range map[string][]byte{
		"empty":    nil,
		"no PEM":   []byte("hello"),
		"key":      pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: []byte{1}}),
		"too long": EncodeChain(long...),
		"bad DER":  pemEncode(pemCertificate, []byte{0x30, 0x00}),
	} {
		if _, err := ParseChain(data); err == nil {
			t.Errorf("ParseChain(%s) succeeded", name)
		}
	}
}
