package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// certSpec describes an arbitrary certificate for tests that need one the
// package itself would never make.
type certSpec struct {
	cn        string
	uris      []string
	notBefore time.Time // zero: an hour ago
	notAfter  time.Time // zero: in a day
	key       crypto.Signer
	parent    *x509.Certificate // nil: self-signed
	parentKey crypto.Signer
	eku       []x509.ExtKeyUsage
	noEKU     bool
	isCA      bool
}

func makeCert(t testing.TB, s certSpec) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	if s.key == nil {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s.key = k
	}
	now := time.Now()
	if s.notBefore.IsZero() {
		s.notBefore = now.Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = now.Add(24 * time.Hour)
	}
	if s.eku == nil && !s.noEKU && !s.isCA {
		s.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.cn},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           s.eku,
		BasicConstraintsValid: true,
		IsCA:                  s.isCA,
	}
	if s.isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	for _, u := range s.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	parent, parentKey := tmpl, s.key
	if s.parent != nil {
		parent, parentKey = s.parent, s.parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, s.key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, s.key
}

// corruptSignature returns c with the last byte of its signature flipped.
func corruptSignature(t testing.TB, c *x509.Certificate) *x509.Certificate {
	t.Helper()
	der := append([]byte(nil), c.Raw...)
	der[len(der)-1] ^= 0xff
	bad, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

func ecdsaKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustGenerate(t testing.TB, nodeID string) *Identity {
	t.Helper()
	id, err := Generate(nodeID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustCA(t testing.TB, group string) *CA {
	t.Helper()
	ca, err := NewCA(group, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// member makes an identity for nodeID and has ca issue it memberName, going
// through the request flow a real member uses.
func member(t testing.TB, ca *CA, memberName, nodeID string) *Identity {
	t.Helper()
	id := mustGenerate(t, nodeID)
	csr, err := id.Request()
	if err != nil {
		t.Fatal(err)
	}
	req, err := ParseRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(memberName, req.NodeID, req.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	installed, err := id.Install(EncodeChain(leaf, ca.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	return installed
}

func tofuTrust(t testing.TB) *Trust {
	t.Helper()
	pins, err := OpenPins(filepath.Join(t.TempDir(), PinsFile))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrust(nil, pins)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func certTrust(t testing.TB, certs ...*x509.Certificate) *Trust {
	t.Helper()
	tr, err := NewTrust(certs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func leafChain(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c} }

func bigOne() *big.Int { return big.NewInt(1) }
