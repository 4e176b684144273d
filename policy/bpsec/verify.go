package bpsec

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/identity"
)

// ViaHMAC is Signer.Via for a BIB-HMAC-SHA2 block: the source holds a key
// this node shares with it.
const ViaHMAC = "hmac"

// Signer is who signed a bundle, as verification established.
type Signer struct {
	// Peer holds the node ID and member name from the signer's certificate
	// (the member name only when a trusted group CA vouches for it), the key
	// fingerprint, and Via: identity.ViaCA, ViaPinned, ViaTOFU, or ViaHMAC.
	identity.Peer
	Source  bundle.EID // the integrity block's security source: the bundle source's node ID
	Context int64      // ContextCOSE or ContextHMACSHA2
	Block   uint64     // the integrity block's number
}

// Principal is the signer as the ACL and rate limits see it.
func (s Signer) Principal() acl.Principal { return acl.FromPeer(s.Peer) }

// Verifier checks bundle signatures. Its zero value refuses every signature
// as untrusted and requires none.
type Verifier struct {
	// Trust authenticates COSE context signers by their certificate chain,
	// offline: group CA roots, individually trusted certificates, or — under
	// trust-on-first-use — the keys pinned when nodes connected directly.
	// A signature never creates a pin: anyone can put any self-signed
	// certificate into a bundle that mules carry, and pinning from it would
	// let a stranger claim a node ID before its owner ever connects.
	Trust *identity.Trust
	// HMACKey returns the key shared with a BIB-HMAC-SHA2 security source,
	// or nil if there is none.
	HMACKey func(source bundle.EID) []byte
	// Require says which bundles must be signed; nil requires none.
	Require *Requirement
	// Now is the clock for certificate validity under trust-on-first-use
	// (time.Now when nil). With CA roots or trusted certificates,
	// identity.Trust checks validity against its own clock.
	Now func() time.Time
}

// Verify checks b's signature over its payload, read from payload (exactly
// b.Payload.Length bytes, read once). An unsigned bundle that the policy does
// not require to be signed passes with the zero Signer.
func (v *Verifier) Verify(b *bundle.Bundle, payload io.Reader) (Signer, error) {
	c, err := v.Start(b)
	if err != nil {
		return Signer{}, err
	}
	if _, err := io.Copy(c, payload); err != nil {
		return Signer{}, fmt.Errorf("bpsec: reading the payload: %w", err)
	}
	return c.Finish()
}

// Check is a verification in progress. Start does everything the header
// allows — finds and parses the integrity block, authenticates the signer's
// certificate, verifies targets other than the payload — so that a bundle
// can be refused before its payload is read. The payload is then written to
// the Check as it streams past (to the store, say), and Finish verifies the
// signature before the caller commits.
type Check struct {
	b      *bundle.Bundle
	signed bool
	signer Signer
	h      hash.Hash              // the payload's digest or MAC
	verify func(sum []byte) error // checks h's sum
	n      uint64
	done   bool
}

// Start begins verifying b (see Check). It refuses at once — returning an
// *Error — a bundle that must be signed and is not, a malformed or
// unsupported integrity block, or a signer that is not trusted or is not
// the bundle's source.
func (v *Verifier) Start(b *bundle.Bundle) (*Check, error) {
	bib, a, err := findBIB(b)
	if err != nil {
		return nil, err
	}
	required := v.Require.Required(b.Primary.Destination)
	if a == nil {
		if b.Primary.IsFragment() && required {
			return nil, fail(ErrFragment, 0, "the bundle must be signed, and only the reassembled bundle shows whether it is")
		}
		if required {
			return nil, fail(ErrMissingSignature, 0, "bundles to %s must be signed", b.Primary.Destination)
		}
		return &Check{b: b}, nil
	}
	if b.Primary.IsFragment() {
		return nil, fail(ErrFragment, bib.Number, "verify the reassembled bundle")
	}
	// RFC 9172 names the security source by an EID; mulegate signs with the
	// source's node ID, RFC 9173's examples use the source endpoint itself.
	if !a.Source.SameNode(b.Primary.Source) || a.Source.IsNone() {
		return nil, fail(ErrSignerMismatch, bib.Number, "signed by %s, but the bundle's source is %s", a.Source, b.Primary.Source)
	}
	for i := range a.Results {
		if len(a.Results[i]) != 1 {
			return nil, fail(ErrMalformedSecurity, bib.Number, "target %d has %d results; the context allows exactly one", a.Targets[i], len(a.Results[i]))
		}
	}
	c := &Check{b: b, signed: true}
	switch a.Context {
	case ContextCOSE:
		err = v.startCOSE(c, b, bib, a)
	case ContextHMACSHA2:
		err = v.startHMAC(c, b, bib, a)
	default:
		err = fail(ErrUnsupportedSecurity, bib.Number, "security context %d", a.Context)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// findBIB finds the integrity block whose targets include the payload.
func findBIB(b *bundle.Bundle) (blockMeta, *ASB, error) {
	var bib blockMeta
	var found *ASB
	for i := range b.Blocks {
		blk := &b.Blocks[i]
		if blk.Type != bundle.BlockIntegrity && blk.Type != bundle.BlockConfidential {
			continue
		}
		a, err := ParseASB(blk.Data)
		if err != nil {
			if e := kindOf(err); e != nil {
				e.Block = blk.Number
			}
			return bib, nil, err
		}
		if a.targetIndex(1) < 0 {
			continue
		}
		if blk.Type == bundle.BlockConfidential {
			return bib, nil, fail(ErrUnsupportedSecurity, blk.Number, "the payload is encrypted (BCB)")
		}
		if found != nil {
			return bib, nil, fail(ErrConflictingSecurity, blk.Number, "blocks %d and %d both protect the payload's integrity", bib.Number, blk.Number)
		}
		found, bib = a, blockMeta{Type: blk.Type, Number: blk.Number, Flags: blk.Flags}
	}
	return bib, found, nil
}

// targetData returns the metadata and, for a target other than the payload,
// the data of target t.
func targetData(b *bundle.Bundle, t uint64, bib uint64) (blockMeta, []byte, error) {
	if t == 0 {
		return blockMeta{}, nil, fail(ErrUnsupportedSecurity, bib, "the primary block as a security target")
	}
	meta, data, ok := findBlock(b, t)
	if !ok {
		return meta, nil, fail(ErrMalformedSecurity, bib, "security target %d is not in the bundle", t)
	}
	if meta.Type == bundle.BlockIntegrity || meta.Type == bundle.BlockConfidential {
		return meta, nil, fail(ErrUnsupportedSecurity, bib, "security target %d is itself a security block", t)
	}
	return meta, data, nil
}

func (v *Verifier) startCOSE(c *Check, b *bundle.Bundle, bib blockMeta, a *ASB) error {
	params, err := parseCOSEParams(a, bib.Number)
	if err != nil {
		return err
	}
	var signer *Signer
	var pub ed25519.PublicKey
	for i, t := range a.Targets {
		meta, data, err := targetData(b, t, bib.Number)
		if err != nil {
			return err
		}
		msg, err := parseSign1(a.Results[i][0], bib.Number)
		if err != nil {
			return err
		}
		chain, err := certChain(msg, params, bib.Number)
		if err != nil {
			return err
		}
		if signer == nil {
			peer, err := v.authenticate(chain, a.Source, bib.Number)
			if err != nil {
				return err
			}
			pub = chain[0].PublicKey.(ed25519.PublicKey) // authenticate checked
			signer = &Signer{Peer: peer, Source: a.Source, Context: ContextCOSE, Block: bib.Number}
		} else if identity.Fingerprint(chain[0]) != signer.Fingerprint {
			return fail(ErrConflictingSecurity, bib.Number, "targets signed with different certificates")
		}
		aad, err := externalAAD(b, a.Source, params.scope, meta, bib, params.addProtected, bib.Number)
		if err != nil {
			return err
		}
		op := &coseTarget{block: bib.Number, msg: msg, aad: aad, pub: pub}
		if t != 1 {
			sum := sha256.Sum256(data)
			if err := op.verify(sum[:]); err != nil {
				return err
			}
			continue
		}
		c.h, c.verify = sha256.New(), op.verify
	}
	c.signer = *signer
	return nil
}

func (v *Verifier) startHMAC(c *Check, b *bundle.Bundle, bib blockMeta, a *ASB) error {
	params, err := parseHMACParams(a, bib.Number)
	if err != nil {
		return err
	}
	var key []byte
	if v.HMACKey != nil {
		key = v.HMACKey(a.Source)
	}
	if len(key) == 0 {
		return fail(ErrUntrustedSigner, bib.Number, "no key is shared with %s", a.Source)
	}
	for i, t := range a.Targets {
		meta, data, err := targetData(b, t, bib.Number)
		if err != nil {
			return err
		}
		r := a.Results[i][0]
		var want []byte
		if r.ID != hmacResultMAC || decMode.Unmarshal(r.Value, &want) != nil {
			return fail(ErrMalformedSecurity, bib.Number, "BIB-HMAC-SHA2 result must be [1, MAC]")
		}
		n := uint64(len(data))
		if t == 1 {
			n = b.Payload.Length
		}
		mac, err := newMAC(b, params.variant, key, params.scope, meta, bib, n)
		if err != nil {
			return failErr(ErrMalformedSecurity, bib.Number, err, "integrity-protected plaintext")
		}
		check := func(sum []byte) error {
			if !hmac.Equal(sum, want) {
				return fail(ErrIntegrity, bib.Number, "target %d", t)
			}
			return nil
		}
		if t != 1 {
			mac.Write(data)
			if err := check(mac.Sum(nil)); err != nil {
				return err
			}
			continue
		}
		c.h, c.verify = mac, check
	}
	c.signer = Signer{Peer: identity.Peer{NodeID: a.Source.NodeID().String(), Via: ViaHMAC}, Source: a.Source, Context: ContextHMACSHA2, Block: bib.Number}
	return nil
}

// authenticate decides whether chain authenticates the security source src.
func (v *Verifier) authenticate(chain []*x509.Certificate, src bundle.EID, block uint64) (identity.Peer, error) {
	if v.Trust == nil {
		return identity.Peer{}, fail(ErrUntrustedSigner, block, "this node trusts no certificates")
	}
	if _, ok := chain[0].PublicKey.(ed25519.PublicKey); !ok {
		return identity.Peer{}, fail(ErrUntrustedSigner, block, "the signer's key is %s; mulegate signatures are Ed25519", chain[0].PublicKeyAlgorithm)
	}
	nodeID := src.NodeID().String()
	if v.Trust.TOFU() {
		return v.pinned(chain[0], nodeID, block)
	}
	peer, err := v.Trust.Verify(chain, nodeID)
	if err != nil {
		kind := ErrUntrustedSigner
		switch {
		case errors.Is(err, identity.ErrExpired), errors.Is(err, identity.ErrNotYetValid):
			kind = ErrExpiredSigner
		case errors.Is(err, identity.ErrNodeIDMismatch):
			kind = ErrSignerMismatch
		}
		return identity.Peer{}, failErr(kind, block, err, "signer's certificate")
	}
	return peer, nil
}

// pinned authenticates a signer under trust-on-first-use: only a node whose
// key was pinned by a direct connection is known.
func (v *Verifier) pinned(leaf *x509.Certificate, nodeID string, block uint64) (identity.Peer, error) {
	id, err := certNodeID(leaf)
	if err != nil {
		return identity.Peer{}, failErr(ErrUntrustedSigner, block, err, "signer's certificate")
	}
	if id != nodeID {
		return identity.Peer{}, fail(ErrSignerMismatch, block, "the certificate is for %s, the security source is %s", id, nodeID)
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return identity.Peer{}, fail(ErrExpiredSigner, block, "valid from %s to %s, and it is now %s",
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	fp := identity.Fingerprint(leaf)
	pin, ok := v.Trust.Pins().Lookup(nodeID)
	if !ok {
		return identity.Peer{}, fail(ErrUntrustedSigner, block, "%s is not pinned: trust-on-first-use learns a node's key only when the node connects directly", nodeID)
	}
	if pin.Fingerprint != fp {
		return identity.Peer{}, fail(ErrUntrustedSigner, block, "%s is pinned to key %s, but signed with key %s", nodeID, pin.Fingerprint, fp)
	}
	return identity.Peer{NodeID: nodeID, Fingerprint: fp, Via: identity.ViaTOFU}, nil
}

// certNodeID is the node ID a certificate carries as a URI SAN.
func certNodeID(c *x509.Certificate) (string, error) {
	var ids []string
	for _, u := range c.URIs {
		if s := u.String(); identity.CheckNodeID(s) == nil {
			ids = append(ids, s)
		}
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("certificate carries %d node IDs; it must carry one", len(ids))
	}
	return ids[0], nil
}

// Signed reports whether the bundle carries a signature over its payload.
// An unsigned Check exists only when the policy does not require one.
func (c *Check) Signed() bool { return c.signed }

// Signer is who signed, as far as the header shows: the certificate chain
// is already authenticated, but until Finish returns nil the signature
// itself is not verified. It lets the node apply the sender ACL and rate
// limits before reading the payload. The zero Signer for an unsigned bundle.
func (c *Check) Signer() Signer { return c.signer }

// Principal is the original sender for the ACL and rate limits: the signer,
// or — for an unsigned bundle — an unauthenticated claim of the source's
// node ID.
func (c *Check) Principal() acl.Principal {
	if c.signed {
		return c.signer.Principal()
	}
	return acl.Claimed(c.b.Primary.Source.NodeID().String())
}

// Write feeds payload bytes to the verification, every byte once and in
// order.
func (c *Check) Write(p []byte) (int, error) {
	if c.done {
		return 0, errors.New("bpsec: write after Finish")
	}
	c.n += uint64(len(p))
	if c.h != nil {
		c.h.Write(p)
	}
	return len(p), nil
}

// Finish verifies the signature over the payload written. It returns the
// signer, or an *Error saying what is wrong.
func (c *Check) Finish() (Signer, error) {
	if c.done {
		return Signer{}, errors.New("bpsec: Finish called twice")
	}
	c.done = true
	if c.n != c.b.Payload.Length {
		return Signer{}, fmt.Errorf("%w: verified %d payload bytes of %d", bundle.ErrPayloadLength, c.n, c.b.Payload.Length)
	}
	if !c.signed {
		return Signer{}, nil
	}
	if err := c.verify(c.h.Sum(nil)); err != nil {
		return Signer{}, err
	}
	return c.signer, nil
}
