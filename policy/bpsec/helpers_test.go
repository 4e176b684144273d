package bpsec

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/identity"
)

// testCA is a group CA made directly with crypto/x509, so tests can issue
// certificates identity.CA never would (expired ones).
type testCA struct {
	cert *x509.Certificate
	key  ed25519.PrivateKey
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newTestCA(t testing.TB, group string) *testCA {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: group},
		NotBefore:             time.Now().Add(-48 * time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// issue makes a member certificate for name and nodeID, valid from
// notBefore to notAfter (zero: from an hour ago for a day), and returns the
// signing key with the chain leaf + CA.
func (ca *testCA) issue(t testing.TB, name, nodeID string, notBefore, notAfter time.Time) Key {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ca.issueFor(t, name, nodeID, pub, key, notBefore, notAfter)
}

func (ca *testCA) issueFor(t testing.TB, name, nodeID string, pub ed25519.PublicKey, key crypto.Signer, notBefore, notAfter time.Time) Key {
	t.Helper()
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	u, err := url.Parse(nodeID)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{u},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Signer: key, Chain: []*x509.Certificate{cert, ca.cert}}
}

func (ca *testCA) trust(t testing.TB) *identity.Trust {
	t.Helper()
	tr, err := identity.NewTrust([]*x509.Certificate{ca.cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// newBundle makes a bundle from dtn://alice/app to dtn://bob/inbox with a
// hop count block and CRC-32C, for a payload of n bytes.
func newBundle(t testing.TB, src string, n int) *bundle.Bundle {
	t.Helper()
	b, err := bundle.New(bundle.Params{
		Source:        bundle.MustParseEID(src),
		Destination:   bundle.MustParseEID("dtn://bob/inbox"),
		Created:       time.Now().Add(-time.Minute),
		Sequence:      7,
		Lifetime:      24 * time.Hour,
		CRCType:       bundle.CRC32C,
		HopLimit:      16,
		PayloadLength: uint64(n),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomPayload(t testing.TB, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// roundTrip encodes b with payload and decodes it again, as the next node
// would see it.
func roundTrip(t testing.TB, b *bundle.Bundle, payload []byte) (*bundle.Bundle, []byte) {
	t.Helper()
	wire, err := bundle.Marshal(b, payload)
	if err != nil {
		t.Fatal(err)
	}
	d, p, err := bundle.Unmarshal(wire, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return d, p
}
