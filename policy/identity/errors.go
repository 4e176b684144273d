package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// The kinds of refusal. Each *VerifyError carries exactly one of them as its
// Kind, so errors.Is(err, ErrExpired) and friends tell the cases apart; the
// log line, the metric label and the API error can all use the same kind.
var (
	// ErrNoCertificate: the peer presented no certificate at all.
	ErrNoCertificate = errors.New("no certificate")
	// ErrNoNodeID: the certificate carries no usable node ID URI SAN.
	ErrNoNodeID = errors.New("no node ID in certificate")
	// ErrMultipleNodeIDs: the certificate claims more than one node ID, so it
	// is unclear which node it speaks for.
	ErrMultipleNodeIDs = errors.New("more than one node ID in certificate")
	// ErrNodeIDMismatch: the node ID is not the one that was expected.
	ErrNodeIDMismatch = errors.New("node ID mismatch")
	// ErrExpired: the certificate (or one in its chain) is past NotAfter.
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid: the certificate (or one in its chain) is before
	// NotBefore; often a sign of a wrong clock.
	ErrNotYetValid = errors.New("certificate not yet valid")
	// ErrUntrusted: the certificate does not chain to a trusted CA and is not
	// individually trusted.
	ErrUntrusted = errors.New("certificate not trusted")
	// ErrKeyUsage: the chain does not allow TLS client and server
	// authentication, which every DTN peer does both of.
	ErrKeyUsage = errors.New("certificate not allowed for peer authentication")
	// ErrPinMismatch: trust-on-first-use pinned this node ID to another key.
	ErrPinMismatch = errors.New("key differs from the pinned key")
	// ErrNotPinned: under trust-on-first-use, a certificate that arrived in
	// data (not in a handshake) names a node this node never met, so there
	// is no pinned key to check it against.
	ErrNotPinned = errors.New("node never met: no pinned key")
	// ErrPinStoreFull: trust-on-first-use cannot pin another node.
	ErrPinStoreFull = errors.New("pin store full")
	// ErrBadSelfSignature: trust-on-first-use needs a certificate signed by
	// the key it presents, and this one is not.
	ErrBadSelfSignature = errors.New("bad self-signature")
	// ErrNotEd25519: mulegate identities are Ed25519 keys.
	ErrNotEd25519 = errors.New("key is not Ed25519")
	// ErrKeyMismatch: a private key does not belong to the certificate it is
	// stored or installed with.
	ErrKeyMismatch = errors.New("private key does not match certificate")
)

// VerifyError is a refused certificate: what kind of refusal, which
// certificate, and why.
type VerifyError struct {
	Kind   error  // one of the Err values of this package
	Cert   string // the certificate, described for people; "" when there was none
	Reason string // what exactly was wrong, for people
	Err    error  // the underlying error, if there is one
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString("identity: ")
	if e.Cert != "" {
		b.WriteString("certificate ")
		b.WriteString(e.Cert)
		b.WriteString(": ")
	}
	b.WriteString(e.Kind.Error())
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is match both the Kind and the underlying error.
func (e *VerifyError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// describe names a certificate in messages: its subject, or its serial number
// when the subject is empty, and the node ID when there is one.
func describe(c *x509.Certificate) string {
	name := c.Subject.String()
	if name == "" && c.SerialNumber != nil {
		name = "serial " + c.SerialNumber.Text(16)
	}
	s := fmt.Sprintf("%q", name)
	if id, err := nodeIDOf(c.Extensions); err == nil && !strings.Contains(name, id) {
		s += " (" + id + ")"
	}
	return s
}
