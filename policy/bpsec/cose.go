package bpsec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/veraison/go-cose"

	"github.com/mulegate/mulegate/bundle"
)

// COSE context parameters, results and header labels.
const (
	paramAdditionalProtected   = 3
	paramAdditionalUnprotected = 4
	paramAADScope              = 5

	resultSign1 = 18 // COSE_Sign1, as its COSE tag

	labelX5Chain = 33 // RFC 9360
	// labelPayloadHashAlg marks a COSE Hash Envelope (RFC 9995): the signed
	// payload is the hash of the content, computed with this algorithm.
	labelPayloadHashAlg = 258
	// labelDigests is private use (RFC 9052 §1.4: labels below -65536): an
	// unprotected [SHA-256 of the external AAD, SHA-256 of the target data]
	// as the signer saw them. Never trusted; it only lets a failed
	// verification say what changed (see verifyCOSE).
	labelDigests = -65537

	algSHA256 = -16 // COSE algorithm SHA-256

	aadMetadata = 1 << 0
	aadBTSD     = 1 << 1

	scopeTarget   = -1 // AAD scope key: the target block
	scopeSecurity = -2 // AAD scope key: the containing security block

	maxChain = 8
)

// defaultScope is the AAD scope mulegate signs with and the draft's default:
// the primary block, and the metadata of the target and of the integrity
// block itself.
var defaultScope = map[int64]uint64{0: aadMetadata, scopeTarget: aadMetadata, scopeSecurity: aadMetadata}

// coseParams are a COSE context ASB's parameters, decoded.
type coseParams struct {
	addProtected []byte      // the additional-protected bstr's content
	protected    map[any]any // additional-protected, decoded
	unprotected  map[any]any // additional-unprotected, decoded
	scope        map[int64]uint64
}

func parseCOSEParams(a *ASB, block uint64) (*coseParams, error) {
	p := &coseParams{scope: defaultScope, protected: map[any]any{}, unprotected: map[any]any{}}
	seen := map[uint64]bool{}
	for _, par := range a.Params {
		if seen[par.ID] {
			return nil, fail(ErrMalformedSecurity, block, "COSE context parameter %d appears twice", par.ID)
		}
		seen[par.ID] = true
		switch par.ID {
		case paramAdditionalProtected, paramAdditionalUnprotected:
			var raw []byte
			if err := decMode.Unmarshal(par.Value, &raw); err != nil {
				return nil, failErr(ErrMalformedSecurity, block, err, "COSE additional header parameter %d must be a byte string", par.ID)
			}
			hdr := p.unprotected
			if par.ID == paramAdditionalProtected {
				p.addProtected, hdr = raw, p.protected
			}
			if len(raw) == 0 {
				continue
			}
			if err := decMode.Unmarshal(raw, &hdr); err != nil {
				return nil, failErr(ErrMalformedSecurity, block, err, "COSE additional header parameter %d must hold a header map", par.ID)
			}
		case paramAADScope:
			var scope map[int64]uint64
			if err := decMode.Unmarshal(par.Value, &scope); err != nil {
				return nil, failErr(ErrMalformedSecurity, block, err, "COSE AAD scope must map integers to unsigned integers")
			}
			p.scope = scope
		default:
			return nil, fail(ErrUnsupportedSecurity, block, "COSE context parameter %d", par.ID)
		}
	}
	for k := range p.protected {
		if _, dup := p.unprotected[k]; dup {
			return nil, fail(ErrMalformedSecurity, block, "COSE header label %v appears in both additional header maps", k)
		}
	}
	return p, nil
}

// externalAAD is the COSE external AAD of draft-ietf-dtn-bpsec-cose §2.5.1
// (generating external AAD) for one security operation: the CBOR sequence
//
//	security source EID
//	AAD scope map (deterministically encoded)
//	for each scope entry, block numbers ascending, then -1, -2, …:
//	    metadata flag: block 0 → the whole primary block;
//	                   others  → type code, block number, control flags
//	    BTSD flag:     the block's BTSD as a byte string (not for 0, -1, -2)
//	additional-protected, as a byte string
//
// The payload itself is never AAD: its BTSD is what the operation signs.
func externalAAD(b *bundle.Bundle, src bundle.EID, scope map[int64]uint64, target, sec blockMeta, addProtected []byte, block uint64) ([]byte, error) {
	out, err := src.MarshalCBOR()
	if err != nil {
		return nil, failErr(ErrMalformedSecurity, block, err, "security source")
	}
	enc, err := encMode.Marshal(scope)
	if err != nil {
		return nil, failErr(ErrMalformedSecurity, block, err, "AAD scope")
	}
	out = append(out, enc...)
	var pos, neg []int64
	for k := range scope {
		if k >= 0 {
			pos = append(pos, k)
		} else {
			neg = append(neg, k)
		}
	}
	slices.Sort(pos)
	slices.Sort(neg)
	slices.Reverse(neg)
	for _, k := range append(pos, neg...) {
		flags := scope[k]
		if flags&(aadMetadata|aadBTSD) == 0 {
			return nil, fail(ErrMalformedSecurity, block, "AAD scope entry %d includes nothing", k)
		}
		var meta blockMeta
		var btsd []byte
		switch {
		case k == 0:
			if flags&aadBTSD != 0 {
				return nil, fail(ErrMalformedSecurity, block, "AAD scope asks for the BTSD of the primary block, which has none")
			}
			prim, err := canonicalPrimary(&b.Primary)
			if err != nil {
				return nil, failErr(ErrMalformedSecurity, block, err, "primary block")
			}
			out = append(out, prim...)
			continue
		case k == scopeTarget || k == scopeSecurity:
			if flags&aadBTSD != 0 {
				return nil, fail(ErrMalformedSecurity, block, "AAD scope key %d may include only metadata", k)
			}
			meta = target
			if k == scopeSecurity {
				meta = sec
			}
		case k > 0:
			var ok bool
			if meta, btsd, ok = findBlock(b, uint64(k)); !ok {
				return nil, fail(ErrMalformedSecurity, block, "AAD scope names block %d, which the bundle lacks", k)
			}
			if flags&aadBTSD != 0 && uint64(k) == 1 {
				return nil, fail(ErrUnsupportedSecurity, block, "AAD scope includes the payload's data")
			}
		default:
			return nil, fail(ErrUnsupportedSecurity, block, "AAD scope key %d", k)
		}
		if flags&aadMetadata != 0 {
			out = meta.append(out)
		}
		if flags&aadBTSD != 0 {
			out = appendBstr(out, btsd)
		}
	}
	return appendBstr(out, addProtected), nil
}

// certChain finds the signer's certificate chain: an x5chain in the COSE
// message's headers or in the additional header parameters. A chain under
// signature (the protected header, or additional-protected, which is part of
// the external AAD) is preferred; an unprotected one is accepted only when
// no signed one exists or when it is identical. Otherwise anyone on the path
// could add an unprotected x5chain — which the COSE context would let take
// precedence — and swap the signer's certificate for another one of the
// same key with a different member name.
func certChain(msg *cose.UntaggedSign1Message, params *coseParams, block uint64) ([]*x509.Certificate, error) {
	first := func(hs ...map[any]any) any {
		for _, h := range hs {
			if x, ok := h[int64(labelX5Chain)]; ok {
				return x
			}
		}
		return nil
	}
	v := first(msg.Headers.Protected, params.protected)
	if u := first(msg.Headers.Unprotected, params.unprotected); u != nil {
		if v == nil {
			v = u
		} else if a, b, ok := encodeBoth(v, u); !ok || !bytes.Equal(a, b) {
			return nil, fail(ErrMalformedSecurity, block, "an unprotected x5chain contradicts the signed one")
		}
	}
	var ders [][]byte
	switch x := v.(type) {
	case nil:
		return nil, fail(ErrUntrustedSigner, block, "no x5chain: the signer sent no certificate")
	case []byte:
		ders = [][]byte{x}
	case []any:
		if len(x) == 0 || len(x) > maxChain {
			return nil, fail(ErrMalformedSecurity, block, "x5chain of %d certificates", len(x))
		}
		for _, c := range x {
			der, ok := c.([]byte)
			if !ok {
				return nil, fail(ErrMalformedSecurity, block, "x5chain holds a %T, not a certificate", c)
			}
			ders = append(ders, der)
		}
	default:
		return nil, fail(ErrMalformedSecurity, block, "x5chain is a %T", v)
	}
	chain := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, failErr(ErrMalformedSecurity, block, err, "x5chain certificate %d", i)
		}
		chain[i] = c
	}
	return chain, nil
}

func encodeBoth(x, y any) ([]byte, []byte, bool) {
	a, err1 := encMode.Marshal(x)
	b, err2 := encMode.Marshal(y)
	return a, b, err1 == nil && err2 == nil
}

// parseSign1 decodes a COSE_Sign1 result and checks it is one this node can
// verify: detached, EdDSA, over a SHA-256 hash envelope.
func parseSign1(r Result, block uint64) (*cose.UntaggedSign1Message, error) {
	if r.ID != resultSign1 {
		return nil, fail(ErrUnsupportedSecurity, block, "COSE result %d; only COSE_Sign1 (18) is supported in an integrity block", r.ID)
	}
	var raw []byte
	if err := decMode.Unmarshal(r.Value, &raw); err != nil {
		return nil, failErr(ErrMalformedSecurity, block, err, "COSE result must be a byte string")
	}
	msg := &cose.UntaggedSign1Message{}
	if err := msg.UnmarshalCBOR(raw); err != nil {
		return nil, failErr(ErrMalformedSecurity, block, err, "COSE_Sign1")
	}
	if msg.Payload != nil {
		return nil, fail(ErrMalformedSecurity, block, "COSE_Sign1 carries its payload; the COSE context requires it detached")
	}
	alg, err := msg.Headers.Protected.Algorithm()
	if err != nil {
		return nil, failErr(ErrMalformedSecurity, block, err, "COSE_Sign1 algorithm")
	}
	if alg != cose.AlgorithmEdDSA {
		return nil, fail(ErrUnsupportedSecurity, block, "COSE algorithm %v; mulegate signatures are EdDSA (Ed25519)", alg)
	}
	if h, ok := msg.Headers.Protected[int64(labelPayloadHashAlg)]; !ok || h != int64(algSHA256) {
		return nil, fail(ErrUnsupportedSecurity, block, "COSE_Sign1 is not a SHA-256 hash envelope (protected header 258 = -16); signing the payload itself cannot be verified without holding it in memory")
	}
	crit, err := msg.Headers.Protected.Critical()
	if err != nil {
		return nil, failErr(ErrMalformedSecurity, block, err, "COSE critical headers")
	}
	for _, l := range crit {
		if l != int64(labelPayloadHashAlg) {
			return nil, fail(ErrUnsupportedSecurity, block, "COSE critical header %v", l)
		}
	}
	return msg, nil
}

// coseTarget is one security operation of a COSE context BIB being
// verified.
type coseTarget struct {
	block uint64
	msg   *cose.UntaggedSign1Message
	aad   []byte
	pub   ed25519.PublicKey
}

// verify checks the signature over data's SHA-256 digest. On failure it
// uses the signer's (unauthenticated) digests to say what changed: they can
// only choose which failure is reported, never turn a failure into success.
func (t *coseTarget) verify(digest []byte) error {
	verifier, err := cose.NewVerifier(cose.AlgorithmEdDSA, t.pub)
	if err != nil {
		return failErr(ErrUntrustedSigner, t.block, err, "signer's key")
	}
	t.msg.Payload = digest
	err = t.msg.Verify(t.aad, verifier)
	t.msg.Payload = nil
	if err == nil {
		return nil
	}
	if h, ok := t.msg.Headers.Unprotected[int64(labelDigests)].([]any); ok && len(h) == 2 {
		aadSum := sha256.Sum256(t.aad)
		claimedAAD, ok1 := h[0].([]byte)
		claimedData, ok2 := h[1].([]byte)
		switch {
		case ok1 && !bytes.Equal(claimedAAD, aadSum[:]):
			return failErr(ErrTamperedPrimary, t.block, err, "the primary block, the security source or the block metadata differ from what was signed")
		case ok2 && !bytes.Equal(claimedData, digest):
			return failErr(ErrTamperedPayload, t.block, err, "SHA-256 %x, signed %x", digest, claimedData)
		case ok1 && ok2:
			return failErr(ErrForgedSignature, t.block, err, "the signed data is unchanged, but the signature was not made with the certificate's key")
		}
	}
	return failErr(ErrForgedSignature, t.block, err, "the signature does not verify: the signed data or the key differ")
}

// signCOSE makes the COSE_Sign1 result for one target.
func signCOSE(key Key, aad, digest []byte) (Result, error) {
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, key.Signer)
	if err != nil {
		return Result{}, fmt.Errorf("bpsec: signing key: %w", err)
	}
	aadSum := sha256.Sum256(aad)
	msg := &cose.UntaggedSign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{
				cose.HeaderLabelAlgorithm:  cose.AlgorithmEdDSA,
				cose.HeaderLabelCritical:   []any{int64(labelPayloadHashAlg)},
				int64(labelPayloadHashAlg): int64(algSHA256),
			},
			Unprotected: cose.UnprotectedHeader{
				int64(labelDigests): []any{aadSum[:], digest},
			},
		},
		Payload: digest,
	}
	if err := msg.Sign(rand.Reader, aad, signer); err != nil {
		return Result{}, fmt.Errorf("bpsec: sign: %w", err)
	}
	msg.Payload = nil // detached
	enc, err := msg.MarshalCBOR()
	if err != nil {
		return Result{}, fmt.Errorf("bpsec: encode COSE_Sign1: %w", err)
	}
	return Result{ID: resultSign1, Value: mustMarshal(enc)}, nil
}

// x5chainParam is the additional-protected parameter carrying the chain
// (RFC 9360 x5chain: one certificate as a byte string, several as an
// array).
func x5chainParam(chain []*x509.Certificate) Param {
	var v any
	if len(chain) == 1 {
		v = chain[0].Raw
	} else {
		ders := make([][]byte, len(chain))
		for i, c := range chain {
			ders[i] = c.Raw
		}
		v = ders
	}
	hdr := mustMarshal(map[int64]any{labelX5Chain: v})
	return Param{ID: paramAdditionalProtected, Value: mustMarshal([]byte(hdr))}
}
