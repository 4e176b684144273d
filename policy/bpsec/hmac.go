package bpsec

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"hash"

	"github.com/mulegate/mulegate/bundle"
)

// SHAVariant selects the HMAC of BIB-HMAC-SHA2 (RFC 9173 §3.3.1), by its
// COSE algorithm code.
type SHAVariant uint64

const (
	HMAC256 SHAVariant = 5 // HMAC 256/256
	HMAC384 SHAVariant = 6 // HMAC 384/384, the RFC's default
	HMAC512 SHAVariant = 7 // HMAC 512/512
)

func (v SHAVariant) hash() func() hash.Hash {
	switch v {
	case HMAC256:
		return sha256.New
	case HMAC384:
		return sha512.New384
	case HMAC512:
		return sha512.New
	}
	return nil
}

// ScopeFlags are BIB-HMAC-SHA2's integrity scope flags (RFC 9173 §3.3.3):
// what besides the target's data the MAC covers.
type ScopeFlags uint64

const (
	ScopePrimary        ScopeFlags = 1 << 0 // the primary block
	ScopeTargetHeader   ScopeFlags = 1 << 1 // the target's type, number and flags
	ScopeSecurityHeader ScopeFlags = 1 << 2 // the BIB's type, number and flags
	ScopeAll                       = ScopePrimary | ScopeTargetHeader | ScopeSecurityHeader
)

// BIB-HMAC-SHA2 parameter and result IDs (RFC 9173 §3.3, §3.4).
const (
	hmacParamVariant    = 1
	hmacParamWrappedKey = 2
	hmacParamScope      = 3
	hmacResultMAC       = 1
)

// HMACKey is a shared key for BIB-HMAC-SHA2, and how to use it.
type HMACKey struct {
	// Source is the security source named in the BIB; the zero EID means
	// the bundle's source node ID.
	Source bundle.EID
	Key    []byte
	// Variant is the HMAC; zero means HMAC384, the RFC's default.
	Variant SHAVariant
	// Scope says what the MAC covers besides the target's data. Zero is
	// nothing else (RFC 9173 Appendix A.1); ScopeAll binds the MAC to the
	// primary block and to both blocks' headers, and is what to use unless
	// reproducing an example.
	Scope ScopeFlags
}

// ipptPrefix is the integrity-protected plaintext (RFC 9173 §3.7) up to the
// target's data: the scope flags, then the primary block, the target's
// header and the BIB's header as the flags select. The target's data
// follows as a CBOR byte string, whose head appendHead writes and whose
// content may be streamed.
func ipptPrefix(b *bundle.Bundle, scope ScopeFlags, target, sec blockMeta) ([]byte, error) {
	scope &= ScopeAll // unassigned bits count as 0
	out := appendUint(nil, uint64(scope))
	if scope&ScopePrimary != 0 {
		prim, err := canonicalPrimary(&b.Primary)
		if err != nil {
			return nil, err
		}
		out = append(out, prim...)
	}
	if scope&ScopeTargetHeader != 0 {
		out = target.append(out)
	}
	if scope&ScopeSecurityHeader != 0 {
		out = sec.append(out)
	}
	return out, nil
}

// newMAC starts the MAC of one target whose data is n bytes long: after it,
// write exactly the target's data.
func newMAC(b *bundle.Bundle, v SHAVariant, key []byte, scope ScopeFlags, target, sec blockMeta, n uint64) (hash.Hash, error) {
	prefix, err := ipptPrefix(b, scope, target, sec)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(v.hash(), key)
	mac.Write(appendHead(prefix, 2, n))
	return mac, nil
}

// hmacParams are a BIB-HMAC-SHA2 ASB's parameters, decoded and defaulted.
type hmacParams struct {
	variant SHAVariant
	scope   ScopeFlags
}

func parseHMACParams(a *ASB, block uint64) (*hmacParams, error) {
	p := &hmacParams{variant: HMAC384, scope: ScopeAll}
	seen := map[uint64]bool{}
	for _, par := range a.Params {
		if seen[par.ID] {
			return nil, fail(ErrMalformedSecurity, block, "BIB-HMAC-SHA2 parameter %d appears twice", par.ID)
		}
		seen[par.ID] = true
		switch par.ID {
		case hmacParamVariant:
			if err := decMode.Unmarshal(par.Value, &p.variant); err != nil || p.variant.hash() == nil {
				return nil, fail(ErrUnsupportedSecurity, block, "BIB-HMAC-SHA2 SHA variant %x", []byte(par.Value))
			}
		case hmacParamScope:
			if err := decMode.Unmarshal(par.Value, &p.scope); err != nil {
				return nil, failErr(ErrMalformedSecurity, block, err, "BIB-HMAC-SHA2 integrity scope flags")
			}
		case hmacParamWrappedKey:
			return nil, fail(ErrUnsupportedSecurity, block, "BIB-HMAC-SHA2 wrapped keys (AES key wrap) are not implemented; use the shared key directly")
		default:
			return nil, fail(ErrUnsupportedSecurity, block, "BIB-HMAC-SHA2 parameter %d", par.ID)
		}
	}
	return p, nil
}

// hmacParamsOf encodes k's parameters. Both are always written, even with
// their default values, as RFC 9173's examples do.
func (k HMACKey) params() []Param {
	return []Param{
		{ID: hmacParamVariant, Value: mustMarshal(uint64(k.Variant))},
		{ID: hmacParamScope, Value: mustMarshal(uint64(k.Scope & ScopeAll))},
	}
}
