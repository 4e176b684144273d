package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// fuzzTrusts returns one Trust of each mode, for fuzz targets to throw
// certificates at.
func fuzzTrusts(f *testing.F) []*Trust {
	ca := mustCA(f, "campfire")
	pinned := mustGenerate(f, "dtn://pinned/")
	pins, err := OpenPins(filepath.Join(f.TempDir(), PinsFile))
	if err != nil {
		f.Fatal(err)
	}
	tofu, err := NewTrust(nil, pins)
	if err != nil {
		f.Fatal(err)
	}
	return []*Trust{tofu, certTrust(f, ca.Certificate()), certTrust(f, ca.Certificate(), pinned.Leaf())}
}

func fuzzSeedCerts(f *testing.F) []*x509.Certificate {
	ca := mustCA(f, "campfire")
	c1, _ := makeCert(f, certSpec{cn: "two", uris: []string{"dtn://a/", "ipn:1.0"}})
	c2, _ := makeCert(f, certSpec{cn: "ec", uris: []string{"dtn://ec/"}, key: ecdsaKey(f)})
	return append(member(f, ca, "campfire/alice", "dtn://alice/").Chain(),
		mustGenerate(f, "ipn:7.0").Leaf(), c1, c2)
}

// FuzzParseChain: PEM chains come from files people hand around (issued
// certificates, trust files). Parsing, and verifying whatever parses, never
// panics.
func FuzzParseChain(f *testing.F) {
	trusts := fuzzTrusts(f)
	certs := fuzzSeedCerts(f)
	f.Add(EncodeChain(certs...))
	f.Add(EncodeChain(certs[0], certs[1]))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		chain, err := ParseChain(data)
		if err != nil {
			return
		}
		if len(chain) == 0 || len(chain) > maxChainLen {
			t.Fatalf("ParseChain returned %d certificates without error", len(chain))
		}
		for _, tr := range trusts {
			peer, err := tr.Verify(chain, "")
			if err == nil && peer.NodeID == "" {
				t.Fatalf("accepted a peer without node ID: %+v", peer)
			}
		}
		_, _ = NewTrust(chain, nil)
	})
}

// FuzzPeerCertificate: a peer's certificates arrive as DER in the TLS
// handshake, parsed by crypto/x509 and then judged by Verify, which also
// reads the SAN extension itself. Nothing a peer sends makes it panic.
func FuzzPeerCertificate(f *testing.F) {
	trusts := fuzzTrusts(f)
	for _, c := range fuzzSeedCerts(f) {
		f.Add(c.Raw, "")
		f.Add(c.Raw, "dtn://alice/")
	}
	f.Fuzz(func(t *testing.T, der []byte, expected string) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		for _, tr := range trusts {
			peer, err := tr.Verify([]*x509.Certificate{c}, expected)
			if err == nil && (peer.NodeID == "" || expected != "" && peer.NodeID != expected) {
				t.Fatalf("accepted %+v, expected %q", peer, expected)
			}
		}
		_ = describe(c)
		_, _ = uriSANs(c.Extensions)
	})
}

// FuzzParseRequest: a CA operator parses requests sent by members.
func FuzzParseRequest(f *testing.F) {
	csr, err := mustGenerate(f, "dtn://alice/").Request()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr)
	block, _ := pem.Decode(csr)
	f.Add(block.Bytes)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Raw DER too: wrap what is not PEM, so the fuzzer reaches the
		// request parser without having to discover base64.
		if block, _ := pem.Decode(data); block == nil {
			data = pemEncode(pemRequest, data)
		}
		req, err := ParseRequest(data)
		if err != nil {
			return
		}
		if CheckNodeID(req.NodeID) != nil || len(req.PublicKey) != ed25519.PublicKeySize {
			t.Fatalf("accepted request %+v", req)
		}
	})
}

// FuzzPins: the pins file is read at every start. Whatever it holds, parsing
// does not panic, and what parses writes back to the same pins.
func FuzzPins(f *testing.F) {
	fp := mustGenerate(f, "dtn://a/").Fingerprint()
	f.Add([]byte(`{"version": 1, "pins": {"dtn://a/": {"fingerprint": "` + fp + `", "first_seen": "2025-01-02T03:04:05Z"}}}`))
	f.Add([]byte(`{"version": 1, "pins": null}`))
	f.Add([]byte(`{"version": 1}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pins, err := parsePins(data)
		if err != nil {
			return
		}
		out, err := encodePins(pins)
		if err != nil {
			t.Fatalf("encode parsed pins: %v", err)
		}
		again, err := parsePins(out)
		if err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
		if len(again) != len(pins) {
			t.Fatalf("round trip changed %d pins into %d", len(pins), len(again))
		}
		for id, p := range pins {
			if q := again[id]; q.Fingerprint != p.Fingerprint || !q.FirstSeen.Equal(p.FirstSeen) {
				t.Fatalf("round trip changed %s: %+v → %+v", id, p, q)
			}
		}
	})
}

// FuzzCheckNodeID: every node ID CheckNodeID accepts survives being written
// into a certificate and read back byte for byte, which is what lets node
// IDs be compared as plain strings.
func FuzzCheckNodeID(f *testing.F) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"dtn://alice/", "ipn:12.0", "dtn://a.b-c_d/", "dtn://x", "ipn:0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if CheckNodeID(id) != nil {
			return
		}
		now := time.Now()
		tmpl, err := leafTemplate(id, id, now, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatalf("CreateCertificate for accepted node ID %q: %v", id, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("crypto/x509 cannot parse a certificate for accepted node ID %q: %v", id, err)
		}
		got, err := nodeIDOf(c.Extensions)
		if err != nil || got != id {
			t.Fatalf("node ID %q came back as %q, %v", id, got, err)
		}
	})
}

// FuzzCheckMemberName: every member name CheckMemberName accepts survives the
// Subject common name of an issued certificate.
func FuzzCheckMemberName(f *testing.F) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"campfire/alice", "campfire/kitchen/pi", "campfire", "a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckMemberName(name) != nil {
			return
		}
		u, _ := url.Parse("dtn://x/")
		tmpl := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: name}, URIs: []*url.URL{u},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatalf("CreateCertificate for accepted name %q: %v", name, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("crypto/x509 cannot parse a certificate named %q: %v", name, err)
		}
		if c.Subject.CommonName != name {
			t.Fatalf("name %q came back as %q", name, c.Subject.CommonName)
		}
	})
}
