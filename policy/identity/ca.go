package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// Files in a CA directory. The CA key is the group's crown jewel: it lives
// apart from any node's data directory, ideally on the organiser's machine
// only.
const (
	CAKeyFile  = "ca.key" // PKCS#8 PEM Ed25519 private key, mode 0600
	CACertFile = "ca.crt" // PEM self-signed CA certificate, given to members
)

// caUnit marks a certificate as a mulegate group CA in its Subject, so that
// `openssl x509 -text` tells a person what it is.
const caUnit = "mulegate group CA"

// CA is a group's certificate authority: it issues member certificates named
// GROUP/MEMBER. Its certificate's common name is the group name.
type CA struct {
	group string
	key   ed25519.PrivateKey
	cert  *x509.Certificate
}

// NewCA makes a key and a self-signed CA certificate for group.
func NewCA(group string, validity time.Duration) (*CA, error) {
	if err := CheckGroupName(group); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("identity: validity must be positive, not %v", validity)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: group, OrganizationalUnit: []string{caUnit}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		IsCA:         true,
		// Members are issued directly by the group CA; there is no reason
		// for it to delegate to intermediates.
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("identity: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: parse new CA certificate: %w", err)
	}
	return &CA{group: group, key: key, cert: cert}, nil
}

// LoadCA reads the CA in dir (ca.key and ca.crt). Errors name the file at
// fault.
func LoadCA(dir string) (*CA, error) {
	keyPath := filepath.Join(dir, CAKeyFile)
	certPath := filepath.Join(dir, CACertFile)
	keyPEM, err := readFile(keyPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("identity: no CA in %s (%s is missing); create one with `mulegate identity ca init GROUP --out DIR`: %w", dir, CAKeyFile, err)
		}
		return nil, fmt.Errorf("identity: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", keyPath, err)
	}
	certPEM, err := readFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	chain, err := ParseChain(certPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", certPath, err)
	}
	cert := chain[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("identity: %s: %s is not a CA certificate", certPath, describe(cert))
	}
	if pub, ok := leafKey(cert); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("identity: %s does not match the certificate in %s: %w", keyPath, certPath, ErrKeyMismatch)
	}
	group := cert.Subject.CommonName
	if err := CheckGroupName(group); err != nil {
		return nil, fmt.Errorf("identity: %s: the CA's common name is not a group name: %w", certPath, err)
	}
	return &CA{group: group, key: key, cert: cert}, nil
}

// Save writes the CA into dir (created 0700 if needed): ca.key mode 0600 and
// ca.crt mode 0644.
func (ca *CA) Save(dir string) error {
	if err := makePrivateDir(dir); err != nil {
		return fmt.Errorf("identity: create CA directory: %w", err)
	}
	keyPEM, err := encodePrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("identity: encode CA key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("identity: save CA key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), EncodeChain(ca.cert), 0o644); err != nil {
		return fmt.Errorf("identity: save CA certificate: %w", err)
	}
	return nil
}

// Group is the name of the CA's group.
func (ca *CA) Group() string { return ca.group }

// Certificate is the CA's certificate, the trust root members install.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Issue signs a member certificate binding memberName (GROUP/MEMBER, in this
// CA's group) and nodeID to pub. The certificate never outlives the CA's own.
func (ca *CA) Issue(memberName, nodeID string, pub ed25519.PublicKey, validity time.Duration) (*x509.Certificate, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("identity: validity must be positive, not %v", validity)
	}
	now := time.Now()
	return ca.issue(memberName, nodeID, pub, now.Add(-backdate), now.Add(validity))
}

func (ca *CA) issue(memberName, nodeID string, pub ed25519.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if err := CheckMemberName(memberName); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if g := GroupOf(memberName); g != ca.group {
		return nil, fmt.Errorf("identity: this CA issues names in group %q, not %q; use a name like %s/%s",
			ca.group, g, ca.group, memberName[len(g)+1:])
	}
	if err := CheckNodeID(nodeID); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("identity: %w: public key has %d bytes", ErrNotEd25519, len(pub))
	}
	if !time.Now().Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("identity: the CA certificate of group %s expired at %s; make a new CA", ca.group, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	// A member certificate that outlives its CA would fail verification
	// anyway; clamping makes the printed expiry date the true one.
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl, err := leafTemplate(memberName, nodeID, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	tmpl.Subject.Organization = []string{ca.group}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("identity: issue certificate for %s: %w", memberName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: parse issued certificate for %s: %w", memberName, err)
	}
	return cert, nil
}

// Request is a member's verified certificate request: the node ID it asks for
// and the Ed25519 key it proved it holds.
type Request struct {
	NodeID    string
	PublicKey ed25519.PublicKey
}

// ParseRequest parses and checks a PEM PKCS#10 certificate request as made by
// Identity.Request: it must be signed by the Ed25519 key it carries and name
// exactly one node ID. The request's subject is ignored — the CA operator, not
// the requester, chooses the member name.
func ParseRequest(data []byte) (*Request, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("identity: no PEM block found; not a certificate request (make one with `mulegate identity request`)")
	}
	if block.Type != pemRequest && block.Type != "NEW "+pemRequest {
		return nil, fmt.Errorf("identity: PEM block is %q, want %q", block.Type, pemRequest)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identity: malformed certificate request: %w", err)
	}
	pub, ok := csr.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("identity: certificate request: %w: its key is %s", ErrNotEd25519, csr.PublicKeyAlgorithm)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("identity: certificate request is not signed by the key it carries: %w", err)
	}
	nodeID, err := nodeIDOf(csr.Extensions)
	if err != nil {
		return nil, fmt.Errorf("identity: certificate request: %w", err)
	}
	return &Request{NodeID: nodeID, PublicKey: pub}, nil
}
