package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The whole request flow, through files: the member's key never leaves its
// identity directory, and the result verifies against the group's root.
func TestRequestIssueInstall(t *testing.T) {
	caDir, aliceDir := t.TempDir(), t.TempDir()
	ca := mustCA(t, "campfire")
	if err := ca.Save(caDir); err != nil {
		t.Fatal(err)
	}
	alice, err := LoadOrCreate(aliceDir, "dtn://alice/")
	if err != nil {
		t.Fatal(err)
	}

	csr, err := alice.Request()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(csr), "PRIVATE") {
		t.Fatal("the request contains a private key")
	}

	loadedCA, err := LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ParseRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	if req.NodeID != "dtn://alice/" || !req.PublicKey.Equal(alice.PublicKey()) {
		t.Fatalf("request for %s with another key", req.NodeID)
	}
	leaf, err := loadedCA.Issue("campfire/alice", req.NodeID, req.PublicKey, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "campfire/alice" || leaf.IsCA {
		t.Fatalf("issued %v (CA %v)", leaf.Subject, leaf.IsCA)
	}
	if got, want := leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("issued EKU %v, want %v", got, want)
	}

	installed, err := alice.Install(EncodeChain(leaf, loadedCA.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	if alice.Name() != "" || len(alice.Chain()) != 1 {
		t.Fatal("Install changed the receiver")
	}
	if err := installed.Save(aliceDir); err != nil {
		t.Fatal(err)
	}
	reloaded, err := Load(aliceDir)
	if err != nil {
		t.Fatal(err)
	}
	if reloaded.Name() != "campfire/alice" || reloaded.NodeID() != "dtn://alice/" || reloaded.Fingerprint() != alice.Fingerprint() {
		t.Fatalf("reloaded %s %q %s", reloaded.NodeID(), reloaded.Name(), reloaded.Fingerprint())
	}
	chain := reloaded.Chain()
	if len(chain) != 2 || !chain[1].Equal(ca.Certificate()) {
		t.Fatalf("node.crt holds %d certificates, want leaf + CA", len(chain))
	}
	peer, err := certTrust(t, ca.Certificate()).Verify(chain, "dtn://alice/")
	if err != nil || peer.Name != "campfire/alice" || peer.Via != ViaCA {
		t.Fatalf("Verify = %+v, %v", peer, err)
	}
}

func TestInstallRefused(t *testing.T) {
	ca := mustCA(t, "campfire")
	other := mustCA(t, "campfire")
	alice := mustGenerate(t, "dtn://alice/")
	bob := mustGenerate(t, "dtn://bob/")
	now := time.Now()
	issue := func(name, nodeID string, pub ed25519.PublicKey, nb, na time.Time) *x509.Certificate {
		c, err := ca.issue(name, nodeID, pub, nb, na)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	forAlice := issue("campfire/alice", "dtn://alice/", alice.PublicKey(), now.Add(-time.Hour), now.Add(time.Hour))

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"another key", EncodeChain(issue("campfire/bob", "dtn://bob/", bob.PublicKey(), now.Add(-time.Hour), now.Add(time.Hour)), ca.Certificate()), ErrKeyMismatch},
		{"another node ID", EncodeChain(issue("campfire/alice", "dtn://mallory/", alice.PublicKey(), now.Add(-time.Hour), now.Add(time.Hour)), ca.Certificate()), ErrNodeIDMismatch},
		{"expired", EncodeChain(issue("campfire/alice", "dtn://alice/", alice.PublicKey(), now.Add(-2*time.Hour), now.Add(-time.Hour)), ca.Certificate()), ErrExpired},
		{"wrong CA appended", EncodeChain(forAlice, other.Certificate()), nil},
		{"not a certificate", []byte("hello"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := alice.Install(tc.data)
			if err == nil {
				t.Fatalf("Install succeeded: %s", got.Name())
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Install = %v, want %v", err, tc.want)
			}
		})
	}
	// The leaf alone (no CA appended) is fine: peers hold the root anyway.
	if _, err := alice.Install(EncodeChain(forAlice)); err != nil {
		t.Fatalf("Install of leaf only: %v", err)
	}
}

func TestIssueRefused(t *testing.T) {
	ca := mustCA(t, "campfire")
	pub := mustGenerate(t, "dtn://x/").PublicKey()
	tests := []struct {
		name, member, nodeID string
		pub                  ed25519.PublicKey
		validity             time.Duration
		wantMsg              string
	}{
		{"other group", "kitchen/alice", "dtn://alice/", pub, time.Hour, "campfire/alice"},
		{"no member part", "campfire", "dtn://alice/", pub, time.Hour, "GROUP/MEMBER"},
		{"empty member", "campfire/", "dtn://alice/", pub, time.Hour, "GROUP/MEMBER"},
		{"bad node ID", "campfire/alice", "alice", pub, time.Hour, "node ID"},
		{"short key", "campfire/alice", "dtn://alice/", pub[:5], time.Hour, "Ed25519"},
		{"zero validity", "campfire/alice", "dtn://alice/", pub, 0, "validity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.Issue(tc.member, tc.nodeID, tc.pub, tc.validity)
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Issue = %v, want an error mentioning %q", err, tc.wantMsg)
			}
		})
	}
}

func TestIssueNeverOutlivesCA(t *testing.T) {
	ca := mustCA(t, "campfire") // valid for a day
	leaf, err := ca.Issue("campfire/alice", "dtn://alice/", mustGenerate(t, "dtn://alice/").PublicKey(), 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Fatalf("leaf valid until %v, CA until %v", leaf.NotAfter, ca.Certificate().NotAfter)
	}
}

func TestParseRequestRefused(t *testing.T) {
	alice := mustGenerate(t, "dtn://alice/")
	good, err := alice.Request()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	badSig := append([]byte(nil), block.Bytes...)
	badSig[len(badSig)-1] ^= 0xff

	request := func(key any, uris ...string) []byte {
		tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}
		for _, u := range uris {
			pu, _ := url.Parse(u)
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return pemEncode(pemRequest, der)
	}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"garbage", []byte("garbage"), nil},
		{"a certificate", EncodeChain(alice.Leaf()), nil},
		{"bad DER", pemEncode(pemRequest, []byte{1, 2, 3}), nil},
		{"bad signature", pemEncode(pemRequest, badSig), nil},
		{"no node ID", request(alice.key), ErrNoNodeID},
		{"two node IDs", request(alice.key, "dtn://a/", "dtn://b/"), ErrMultipleNodeIDs},
		{"ECDSA key", request(ecdsaKey(t), "dtn://alice/"), ErrNotEd25519},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRequest(tc.data)
			if err == nil {
				t.Fatal("ParseRequest succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("ParseRequest = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewCARefused(t *testing.T) {
	for _, g := range []string{"", "camp/fire", "camp fire", strings.Repeat("a", 65)} {
		if _, err := NewCA(g, time.Hour); err == nil {
			t.Errorf("NewCA(%q) succeeded", g)
		}
	}
	if _, err := LoadCA(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "ca init") {
		t.Errorf("LoadCA of a missing dir = %v, want a hint", err)
	}
}
