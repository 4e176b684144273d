package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// How a peer was authenticated, as reported in Peer.Via.
const (
	ViaCA     = "ca"     // its chain verified to a trusted CA root
	ViaPinned = "pinned" // its key and node ID match an individually trusted certificate
	ViaTOFU   = "tofu"   // trust-on-first-use: pinned on first contact, or matching that pin
)

// Peer is an authenticated peer.
type Peer struct {
	NodeID      string // from the certificate's URI SAN, e.g. dtn://alice/
	Name        string // member name vouched for by a CA (campfire/alice); "" otherwise
	Fingerprint string // SHA-256 of the peer's public key (see Fingerprint)
	Via         string // ViaCA, ViaPinned or ViaTOFU
}

// Trust decides which peers to accept. It holds trusted CA roots, individually
// trusted certificates, and — when neither is configured — a trust-on-first-use
// pin store. It is safe for concurrent use.
type Trust struct {
	cas    []*x509.Certificate
	roots  *x509.CertPool
	pinned []*x509.Certificate
	// pinnedIDs maps a trusted certificate's key fingerprint to the node IDs
	// it was trusted for.
	pinnedIDs map[string][]string
	pins      *PinStore // nil unless trust-on-first-use is on
	now       func() time.Time
}

// NewTrust builds a Trust from trusted certificates: CA certificates become
// roots, any other certificate is trusted individually for its key and node
// ID. With no certificates at all, trust-on-first-use is on and pins, which
// must then be non-nil, records what was seen; with any, pins is ignored.
func NewTrust(certs []*x509.Certificate, pins *PinStore) (*Trust, error) {
	t := &Trust{roots: x509.NewCertPool(), pinnedIDs: map[string][]string{}, now: time.Now}
	for _, c := range certs {
		if c.BasicConstraintsValid && c.IsCA {
			t.cas = append(t.cas, c)
			t.roots.AddCert(c)
			continue
		}
		if _, ok := leafKey(c); !ok {
			return nil, &VerifyError{Kind: ErrNotEd25519, Cert: describe(c), Reason: "a trusted node certificate must hold an Ed25519 key"}
		}
		id, err := nodeIDOf(c.Extensions)
		if err != nil {
			return nil, withCert(err, c)
		}
		fp := Fingerprint(c)
		t.pinned = append(t.pinned, c)
		t.pinnedIDs[fp] = append(t.pinnedIDs[fp], id)
	}
	if len(certs) == 0 {
		if pins == nil {
			return nil, errors.New("identity: no trusted certificates and no pin store: trust-on-first-use needs somewhere to keep its pins")
		}
		t.pins = pins
	}
	return t, nil
}

// LoadTrust reads the trust configuration of an identity directory: every
// trust/*.pem file (each may hold several certificates) and, when that
// yields none, the trust-on-first-use pins in pins.json. Errors name the
// file at fault.
func LoadTrust(dir string) (*Trust, error) {
	files, err := filepath.Glob(filepath.Join(dir, TrustDir, "*.pem"))
	if err != nil {
		return nil, fmt.Errorf("identity: list trusted certificates: %w", err)
	}
	var certs []*x509.Certificate
	for _, f := range files {
		data, err := readFile(f)
		if err != nil {
			return nil, fmt.Errorf("identity: trusted certificate: %w", err)
		}
		chain, err := ParseChain(data)
		if err != nil {
			return nil, fmt.Errorf("identity: trusted certificate %s: %w", f, err)
		}
		certs = append(certs, chain...)
	}
	var pins *PinStore
	if len(certs) == 0 {
		if pins, err = OpenPins(filepath.Join(dir, PinsFile)); err != nil {
			return nil, err
		}
	}
	t, err := NewTrust(certs, pins)
	if err != nil {
		return nil, fmt.Errorf("identity: trusted certificates in %s: %w", filepath.Join(dir, TrustDir), err)
	}
	return t, nil
}

// AddTrusted checks the PEM certificates in data as NewTrust would and copies
// each into dir/trust/ under a name made from its subject and hash. Adding a
// certificate that is already there is not an error. It returns the paths
// of the files, in the order of the certificates.
func AddTrusted(dir string, data []byte) ([]string, error) {
	certs, err := ParseChain(data)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if _, err := NewTrust(certs, nil); err != nil {
		return nil, err
	}
	if err := makePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("identity: create identity directory: %w", err)
	}
	tdir := filepath.Join(dir, TrustDir)
	if err := os.MkdirAll(tdir, 0o755); err != nil {
		return nil, fmt.Errorf("identity: create trust directory: %w", err)
	}
	var paths []string
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		label := c.Subject.CommonName
		if id, err := nodeIDOf(c.Extensions); err == nil && !c.IsCA {
			label = id
		}
		path := filepath.Join(tdir, fileLabel(label)+"-"+hex.EncodeToString(sum[:6])+".pem")
		paths = append(paths, path)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := writeFileAtomic(path, EncodeChain(c), 0o644); err != nil {
			return nil, fmt.Errorf("identity: save trusted certificate: %w", err)
		}
	}
	return paths, nil
}

// fileLabel turns a name into something safe and readable in a file name.
func fileLabel(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "dtn://"), "ipn:")
	b := []byte(s)
	for i, c := range b {
		if !isNameByte(c) || c == '.' && i == 0 {
			b[i] = '_'
		}
	}
	s = strings.Trim(string(b), "_")
	if len(s) > 40 {
		s = s[:40]
	}
	if s == "" {
		s = "cert"
	}
	return s
}

// TOFU reports whether trust-on-first-use is on.
func (t *Trust) TOFU() bool { return t.pins != nil }

// Mode names the trust configuration: "tofu", "ca", "pinned" or "ca+pinned".
func (t *Trust) Mode() string {
	switch {
	case t.pins != nil:
		return "tofu"
	case len(t.cas) > 0 && len(t.pinned) > 0:
		return "ca+pinned"
	case len(t.cas) > 0:
		return "ca"
	default:
		return "pinned"
	}
}

// CAs are the trusted CA roots.
func (t *Trust) CAs() []*x509.Certificate { return slices.Clone(t.cas) }

// Pinned are the individually trusted certificates.
func (t *Trust) Pinned() []*x509.Certificate { return slices.Clone(t.pinned) }

// Pins is the trust-on-first-use pin store, or nil when TOFU is off.
func (t *Trust) Pins() *PinStore { return t.pins }

// Verify decides whether the certificate chain a peer presented (leaf first,
// as crypto/tls hands it over) authenticates a node, and which. An empty
// expectedNodeID accepts any node ID. Every refusal is a *VerifyError.
//
// Verify does not check that the peer holds the private key; the TLS
// handshake does that. Under trust-on-first-use, Verify records the pin when
// it accepts a new node, so it is for handshakes only: a chain that came
// inside data goes to VerifyKnown.
func (t *Trust) Verify(chain []*x509.Certificate, expectedNodeID string) (Peer, error) {
	return t.verify(chain, expectedNodeID, true)
}

// VerifyKnown is Verify for a certificate chain that arrives inside data
// (a delivery notice, say) rather than in a TLS handshake: it never pins.
// Under trust-on-first-use it accepts the chain only if its key is the one
// already pinned for the node, and refuses a node never met directly with
// ErrNotPinned. Pinning from such data would let anyone who can make a
// self-signed certificate claim a node ID before its owner ever connects,
// and then lock the owner out. With CA roots or individually trusted
// certificates it decides exactly as Verify does.
func (t *Trust) VerifyKnown(chain []*x509.Certificate, expectedNodeID string) (Peer, error) {
	return t.verify(chain, expectedNodeID, false)
}

func (t *Trust) verify(chain []*x509.Certificate, expectedNodeID string, learn bool) (Peer, error) {
	if len(chain) == 0 || chain[0] == nil {
		return Peer{}, &VerifyError{Kind: ErrNoCertificate, Reason: "the peer presented none"}
	}
	leaf := chain[0]
	if _, ok := leafKey(leaf); !ok {
		return Peer{}, &VerifyError{Kind: ErrNotEd25519, Cert: describe(leaf), Reason: fmt.Sprintf("its key is %s; mulegate identities are Ed25519", leaf.PublicKeyAlgorithm)}
	}
	nodeID, err := nodeIDOf(leaf.Extensions)
	if err != nil {
		return Peer{}, withCert(err, leaf)
	}
	if expectedNodeID != "" && nodeID != expectedNodeID {
		return Peer{}, &VerifyError{Kind: ErrNodeIDMismatch, Cert: describe(leaf),
			Reason: fmt.Sprintf("expected %s, got %s", expectedNodeID, nodeID)}
	}
	now := t.now()
	if err := checkValidity(leaf, now); err != nil {
		return Peer{}, err
	}
	peer := Peer{NodeID: nodeID, Fingerprint: Fingerprint(leaf)}

	if t.pins != nil {
		if !learn {
			return t.verifyPinned(leaf, peer)
		}
		return t.verifyTOFU(leaf, peer)
	}
	if slices.Contains(t.pinnedIDs[peer.Fingerprint], nodeID) {
		peer.Via = ViaPinned
		return peer, nil
	}
	if len(t.cas) > 0 {
		return t.verifyCA(chain, peer, now)
	}
	return Peer{}, &VerifyError{Kind: ErrUntrusted, Cert: describe(leaf),
		Reason: fmt.Sprintf("key %s is not one of the %d individually trusted certificates for %s, and no CA is trusted",
			peer.Fingerprint, len(t.pinned), nodeID)}
}

func (t *Trust) verifyTOFU(leaf *x509.Certificate, peer Peer) (Peer, error) {
	// The self-signature is what makes pinning safe before the handshake has
	// proved key possession (crypto/tls calls VerifyConnection first): only
	// the key's holder can bind that key to this node ID.
	if !selfSigned(leaf) {
		reason := "it is not signed by the key it presents"
		if leaf.Issuer.String() != leaf.Subject.String() {
			reason = fmt.Sprintf("it is issued by %q, and trust-on-first-use accepts only self-signed certificates; trust that CA with `mulegate identity trust CA.crt`", leaf.Issuer)
		}
		return Peer{}, &VerifyError{Kind: ErrBadSelfSignature, Cert: describe(leaf), Reason: reason}
	}
	pinned, err := t.pins.pin(peer.NodeID, peer.Fingerprint, t.now())
	if err != nil {
		return Peer{}, withCert(err, leaf)
	}
	if pinned != peer.Fingerprint {
		return Peer{}, &VerifyError{Kind: ErrPinMismatch, Cert: describe(leaf),
			Reason: fmt.Sprintf("%s was pinned to key %s on first contact but now presents key %s; if that node really has a new key, remove its entry from %s",
				peer.NodeID, pinned, peer.Fingerprint, t.pins.Path())}
	}
	peer.Via = ViaTOFU
	return peer, nil
}

// verifyPinned accepts a leaf under trust-on-first-use only if its key is
// the one pinned for its node ID, and leaves the pins as they are.
func (t *Trust) verifyPinned(leaf *x509.Certificate, peer Peer) (Peer, error) {
	pin, ok := t.pins.Lookup(peer.NodeID)
	if !ok {
		return Peer{}, &VerifyError{Kind: ErrNotPinned, Cert: describe(leaf),
			Reason: fmt.Sprintf("%s never connected to this node directly, so its key is unknown; trust-on-first-use learns keys only in handshakes (configure a group CA to verify nodes never met)", peer.NodeID)}
	}
	if pin.Fingerprint != peer.Fingerprint {
		return Peer{}, &VerifyError{Kind: ErrPinMismatch, Cert: describe(leaf),
			Reason: fmt.Sprintf("%s is pinned to key %s, but this certificate holds key %s", peer.NodeID, pin.Fingerprint, peer.Fingerprint)}
	}
	peer.Via = ViaTOFU
	return peer, nil
}

func (t *Trust) verifyCA(chain []*x509.Certificate, peer Peer, now time.Time) (Peer, error) {
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c != nil {
			inter.AddCert(c)
		}
	}
	// Extended key usage is checked below, for client and server at once.
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         t.roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return Peer{}, t.chainError(leaf, err, now)
	}
	var lastErr error
	for _, ch := range chains {
		if err := checkPeerUsage(ch); err != nil {
			lastErr = err
			continue
		}
		root := ch[len(ch)-1]
		// A member name is only as good as the CA vouching for it, and a
		// group's CA speaks for that group alone: campfire's CA cannot name
		// someone "kitchen/bob".
		if name := leaf.Subject.CommonName; CheckMemberName(name) == nil {
			if GroupOf(name) != root.Subject.CommonName {
				lastErr = &VerifyError{Kind: ErrUntrusted, Cert: describe(leaf),
					Reason: fmt.Sprintf("member name %s is outside the group of its CA %q", name, root.Subject)}
				continue
			}
			peer.Name = name
		}
		peer.Via = ViaCA
		return peer, nil
	}
	return Peer{}, lastErr
}

// chainError turns an x509 verification failure into a VerifyError of the
// right kind, naming the certificate at fault.
func (t *Trust) chainError(leaf *x509.Certificate, err error, now time.Time) error {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired && inv.Cert != nil {
		if e := checkValidity(inv.Cert, now); e != nil {
			return e
		}
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		names := make([]string, len(t.cas))
		for i, c := range t.cas {
			names[i] = fmt.Sprintf("%q", c.Subject)
		}
		trusted := strings.Join(names, ", ")
		if leaf.Issuer.String() == leaf.Subject.String() && selfSigned(leaf) {
			return &VerifyError{Kind: ErrUntrusted, Cert: describe(leaf),
				Reason: fmt.Sprintf("it is self-signed and not individually trusted, and this node accepts only certificates issued by %s; have the group CA issue one, or trust this certificate with `mulegate identity trust`", trusted)}
		}
		return &VerifyError{Kind: ErrUntrusted, Cert: describe(leaf),
			Reason: fmt.Sprintf("issued by %q, which is not a trusted CA (trusted: %s); if you trust it, add its certificate with `mulegate identity trust`",
				leaf.Issuer, trusted)}
	}
	return &VerifyError{Kind: ErrUntrusted, Cert: describe(leaf), Err: err}
}

// checkPeerUsage checks that every certificate in a verified chain allows
// both TLS client and server authentication: a DTN node dials and accepts, so
// a certificate good for only one role would work or fail depending on who
// happened to call whom.
func checkPeerUsage(chain []*x509.Certificate) error {
	for _, c := range chain {
		if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
			continue // no restriction
		}
		if slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) ||
			slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			continue
		}
		return &VerifyError{Kind: ErrKeyUsage, Cert: describe(c),
			Reason: "its extended key usage does not allow both TLS client and server authentication"}
	}
	return nil
}

// checkValidity refuses a certificate outside its validity period at now.
func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return &VerifyError{Kind: ErrNotYetValid, Cert: describe(c),
			Reason: fmt.Sprintf("valid from %s, but it is now %s; check this node's clock",
				c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	if now.After(c.NotAfter) {
		return &VerifyError{Kind: ErrExpired, Cert: describe(c),
			Reason: fmt.Sprintf("valid until %s, and it is now %s",
				c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	return nil
}
