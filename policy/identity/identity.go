package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Names of the files in an identity directory, and of the directory inside a
// node's data directory.
const (
	DirName  = "identity"  // DATA/identity holds everything below
	KeyFile  = "node.key"  // PKCS#8 PEM Ed25519 private key, mode 0600
	CertFile = "node.crt"  // PEM certificate chain, leaf first
	TrustDir = "trust"     // *.pem: trusted CA roots and pinned certificates
	PinsFile = "pins.json" // trust-on-first-use pins
)

// DefaultValidity is how long a self-signed identity made by LoadOrCreate
// lasts. It is long because a node in a disconnected group may have no way to
// renew, and trust-on-first-use pins the key, not the certificate.
const DefaultValidity = 10 * 365 * 24 * time.Hour

// backdate is how far before "now" a new certificate's NotBefore is put.
// Nodes in a DTN often have poor clocks; without it, a peer whose clock is a
// little behind would refuse a certificate made a minute ago.
const backdate = time.Hour

// Identity is a node's Ed25519 private key and its certificate chain. It is
// immutable, and so safe for concurrent use.
type Identity struct {
	key    ed25519.PrivateKey
	chain  []*x509.Certificate // leaf first
	nodeID string
	name   string // member name from a CA-issued leaf, or ""
}

// Generate makes a new key and a self-signed certificate for nodeID, valid
// from now (less a small allowance for clock skew) for validity.
func Generate(nodeID string, validity time.Duration) (*Identity, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("identity: validity must be positive, not %v", validity)
	}
	now := time.Now()
	return generate(nodeID, now.Add(-backdate), now.Add(validity))
}

func generate(nodeID string, notBefore, notAfter time.Time) (*Identity, error) {
	if err := CheckNodeID(nodeID); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	tmpl, err := leafTemplate(nodeID, nodeID, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("identity: create certificate for %s: %w", nodeID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: parse new certificate for %s: %w", nodeID, err)
	}
	return newIdentity(key, []*x509.Certificate{leaf})
}

// leafTemplate is the certificate every node presents: its node ID as a URI
// SAN, usable as both TLS client and server because a node both dials and
// accepts.
func leafTemplate(commonName, nodeID string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	u, err := url.Parse(nodeID)
	if err != nil || u.String() != nodeID {
		// CheckNodeID should have made this impossible.
		return nil, fmt.Errorf("identity: node ID %q does not survive URI encoding", nodeID)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}, nil
}

// newIdentity checks that key belongs to the chain's leaf and that the leaf
// names exactly one node.
func newIdentity(key ed25519.PrivateKey, chain []*x509.Certificate) (*Identity, error) {
	if len(chain) == 0 {
		return nil, ErrNoCertificate
	}
	leaf := chain[0]
	pub, ok := leafKey(leaf)
	if !ok {
		return nil, &VerifyError{Kind: ErrNotEd25519, Cert: describe(leaf), Reason: fmt.Sprintf("its key is %s", leaf.PublicKeyAlgorithm)}
	}
	if !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w (key %s, certificate %s %s)",
			ErrKeyMismatch, keyFingerprint(key.Public().(ed25519.PublicKey)), describe(leaf), Fingerprint(leaf))
	}
	nodeID, err := nodeIDOf(leaf.Extensions)
	if err != nil {
		return nil, withCert(err, leaf)
	}
	return &Identity{key: key, chain: chain, nodeID: nodeID, name: memberName(leaf)}, nil
}

// memberName is the leaf's member name, if a CA vouches for it. A self-signed
// certificate can claim any common name, so its name means nothing.
func memberName(leaf *x509.Certificate) string {
	cn := leaf.Subject.CommonName
	if CheckMemberName(cn) != nil || selfSigned(leaf) {
		return ""
	}
	return cn
}

// withCert fills in the certificate of a *VerifyError.
func withCert(err error, c *x509.Certificate) error {
	var ve *VerifyError
	if errors.As(err, &ve) && ve.Cert == "" {
		ve.Cert = describe(c)
	}
	return err
}

// NodeID is the node ID in the leaf certificate, such as dtn://alice/.
func (id *Identity) NodeID() string { return id.nodeID }

// Name is the member name (campfire/alice) of a CA-issued identity, or "" for
// a self-signed one.
func (id *Identity) Name() string { return id.name }

// SelfSigned reports whether the leaf is signed by the identity's own key,
// that is, not (yet) issued by a group CA.
func (id *Identity) SelfSigned() bool { return selfSigned(id.chain[0]) }

// Fingerprint is the SHA-256 fingerprint of the identity's public key, the
// value peers pin.
func (id *Identity) Fingerprint() string { return Fingerprint(id.chain[0]) }

// PublicKey is the identity's Ed25519 public key.
func (id *Identity) PublicKey() ed25519.PublicKey { return id.key.Public().(ed25519.PublicKey) }

// Leaf is the identity's own certificate.
func (id *Identity) Leaf() *x509.Certificate { return id.chain[0] }

// Chain is the certificate chain, leaf first. The slice is a copy.
func (id *Identity) Chain() []*x509.Certificate {
	return append([]*x509.Certificate(nil), id.chain...)
}

// TLSCertificate is the identity in the form crypto/tls presents it.
func (id *Identity) TLSCertificate() tls.Certificate {
	raw := make([][]byte, len(id.chain))
	for i, c := range id.chain {
		raw[i] = c.Raw
	}
	return tls.Certificate{Certificate: raw, PrivateKey: id.key, Leaf: id.chain[0]}
}

// Save writes the identity into dir (created 0700 if needed): node.key mode
// 0600 and node.crt mode 0644, each replaced atomically.
func (id *Identity) Save(dir string) error {
	if err := makePrivateDir(dir); err != nil {
		return fmt.Errorf("identity: create identity directory: %w", err)
	}
	keyPEM, err := encodePrivateKey(id.key)
	if err != nil {
		return fmt.Errorf("identity: encode private key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("identity: save private key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CertFile), EncodeChain(id.chain...), 0o644); err != nil {
		return fmt.Errorf("identity: save certificate: %w", err)
	}
	return nil
}

// Exists reports whether dir holds (part of) an identity. A half-present
// identity counts: overwriting it could destroy the only copy of a key.
func Exists(dir string) bool {
	for _, f := range []string{KeyFile, CertFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}

// Load reads the identity in dir and checks that the key matches the
// certificate. Errors name the file at fault.
func Load(dir string) (*Identity, error) {
	keyPath := filepath.Join(dir, KeyFile)
	certPath := filepath.Join(dir, CertFile)
	keyPEM, err := readFile(keyPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("identity: no identity in %s (%s is missing); create one with `mulegate identity init --node EID`: %w", dir, KeyFile, err)
		}
		return nil, fmt.Errorf("identity: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w (restore it from a backup, or make a new identity with `mulegate identity init --force`; peers that pinned the old key will then refuse this node)", keyPath, err)
	}
	certPEM, err := readFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	chain, err := ParseChain(certPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", certPath, err)
	}
	id, err := newIdentity(key, chain)
	if err != nil {
		return nil, fmt.Errorf("identity: %s and %s do not form an identity: %w", keyPath, certPath, err)
	}
	return id, nil
}

// LoadOrCreate loads the identity in dir, or, if there is none at all, makes
// a self-signed one for nodeID and saves it. A loaded identity for another
// node is an error (ErrNodeIDMismatch): silently using it would make this node
// speak under someone else's name. An empty nodeID accepts any loaded
// identity but cannot create one.
func LoadOrCreate(dir, nodeID string) (*Identity, error) {
	if !Exists(dir) {
		if nodeID == "" {
			return nil, fmt.Errorf("identity: no identity in %s and no node ID to create one for", dir)
		}
		id, err := Generate(nodeID, DefaultValidity)
		if err != nil {
			return nil, err
		}
		if err := id.Save(dir); err != nil {
			return nil, err
		}
		return id, nil
	}
	id, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if nodeID != "" && id.nodeID != nodeID {
		return nil, fmt.Errorf("identity: %s holds the identity of %s, but this node is configured as %s; correct the node ID or use another data directory: %w",
			dir, id.nodeID, nodeID, ErrNodeIDMismatch)
	}
	return id, nil
}

// Request returns a PEM PKCS#10 certificate request for this identity, signed
// with its key and carrying its node ID, for a group CA to issue from. The
// private key never leaves the node.
func (id *Identity) Request() ([]byte, error) {
	u, err := url.Parse(id.nodeID)
	if err != nil {
		return nil, fmt.Errorf("identity: node ID %q: %w", id.nodeID, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.nodeID},
		URIs:    []*url.URL{u},
	}, id.key)
	if err != nil {
		return nil, fmt.Errorf("identity: create certificate request: %w", err)
	}
	return pemEncode(pemRequest, der), nil
}

// Install returns the identity with an issued certificate chain (PEM, leaf
// first, normally leaf + CA) in place of its current one; the receiver is
// unchanged. The leaf must hold this identity's key and node ID and be valid
// now, and each certificate must be signed by the next, so a wrong or
// corrupted file is refused before it replaces a working certificate.
func (id *Identity) Install(chainPEM []byte) (*Identity, error) {
	chain, err := ParseChain(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: install: %w", err)
	}
	next, err := newIdentity(id.key, chain)
	if err != nil {
		return nil, fmt.Errorf("identity: install: the certificate was not issued for this identity (%s): %w", id.nodeID, err)
	}
	if next.nodeID != id.nodeID {
		return nil, fmt.Errorf("identity: install: the certificate is for %s, but this identity is %s: %w", next.nodeID, id.nodeID, ErrNodeIDMismatch)
	}
	if err := checkValidity(chain[0], time.Now()); err != nil {
		return nil, fmt.Errorf("identity: install: %w", err)
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, fmt.Errorf("identity: install: %s is not signed by %s, the next certificate in the file: %w",
				describe(chain[i]), describe(chain[i+1]), err)
		}
	}
	return next, nil
}
