package bpsec

import (
	"bytes"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/mulegate/mulegate/bundle"
)

// Security context identifiers (IANA "BPSec Security Context Identifiers").
const (
	ContextHMACSHA2 int64 = 1 // BIB-HMAC-SHA2, RFC 9173 §3
	ContextCOSE     int64 = 3 // COSE context, draft-ietf-dtn-bpsec-cose
)

// flagParamsPresent is bit 0 of the security context flags (RFC 9172 §3.6).
const flagParamsPresent = 0x01

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// RFC 9172 and both contexts want core deterministic encoding (RFC 8949
	// §4.2.1): shortest heads, definite lengths, sorted map keys.
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:  16,
		MaxArrayElements: 1024,
		MaxMapPairs:      64,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IntDec:           cbor.IntDecConvertSigned,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// ASB is an abstract security block (RFC 9172 §3.6): the block-type-specific
// data of a BIB or BCB.
type ASB struct {
	// Targets are the numbers of the blocks the security operations apply
	// to; 0 is the primary block.
	Targets []uint64
	Context int64 // security context ID
	// Flags are the security context flags. Marshal sets bit 0 (parameters
	// present) from Params.
	Flags  uint64
	Source bundle.EID // security source
	Params []Param
	// Results hold one list of results per target, in the order of Targets.
	Results [][]Result
}

// Param is a security context parameter: an ID and its CBOR-encoded value.
type Param struct {
	ID    uint64
	Value cbor.RawMessage
}

// Result is a security result: an ID and its CBOR-encoded value.
type Result struct {
	ID    uint64
	Value cbor.RawMessage
}

type pair struct {
	_     struct{} `cbor:",toarray"`
	ID    uint64
	Value cbor.RawMessage
}

// ParseASB parses the block-type-specific data of a security block: a CBOR
// sequence of targets, context ID, flags, source, optional parameters and
// results. It checks the structure RFC 9172 §3.6 prescribes — at least one
// target, no target twice, one list of results per target — and nothing
// that depends on the security context. Every error wraps
// ErrMalformedSecurity.
func ParseASB(data []byte) (*ASB, error) {
	a := &ASB{}
	rest := data
	next := func(what string, v any) error {
		if len(rest) == 0 {
			return fail(ErrMalformedSecurity, 0, "abstract security block ends before its %s", what)
		}
		var err error
		if rest, err = decMode.UnmarshalFirst(rest, v); err != nil {
			return failErr(ErrMalformedSecurity, 0, err, "abstract security block %s", what)
		}
		return nil
	}
	if err := next("security targets", &a.Targets); err != nil {
		return nil, err
	}
	if len(a.Targets) == 0 {
		return nil, fail(ErrMalformedSecurity, 0, "no security targets")
	}
	seen := make(map[uint64]bool, len(a.Targets))
	for _, t := range a.Targets {
		if seen[t] {
			return nil, fail(ErrMalformedSecurity, 0, "block %d is a security target twice", t)
		}
		seen[t] = true
	}
	if err := next("security context ID", &a.Context); err != nil {
		return nil, err
	}
	if err := next("security context flags", &a.Flags); err != nil {
		return nil, err
	}
	var src cbor.RawMessage
	if err := next("security source", &src); err != nil {
		return nil, err
	}
	if err := a.Source.UnmarshalCBOR(src); err != nil {
		return nil, failErr(ErrMalformedSecurity, 0, err, "security source")
	}
	if a.Flags&flagParamsPresent != 0 {
		var ps []pair
		if err := next("security context parameters", &ps); err != nil {
			return nil, err
		}
		if len(ps) == 0 {
			return nil, fail(ErrMalformedSecurity, 0, "parameters flagged present but the list is empty")
		}
		for _, p := range ps {
			a.Params = append(a.Params, Param{ID: p.ID, Value: p.Value})
		}
	}
	var rs [][]pair
	if err := next("security results", &rs); err != nil {
		return nil, err
	}
	if len(rs) != len(a.Targets) {
		return nil, fail(ErrMalformedSecurity, 0, "%d security targets but %d lists of results", len(a.Targets), len(rs))
	}
	for _, list := range rs {
		out := make([]Result, len(list))
		for i, r := range list {
			out[i] = Result{ID: r.ID, Value: r.Value}
		}
		a.Results = append(a.Results, out)
	}
	if len(rest) != 0 {
		return nil, fail(ErrMalformedSecurity, 0, "%d bytes after the security results", len(rest))
	}
	return a, nil
}

// Marshal encodes the ASB as block-type-specific data.
func (a *ASB) Marshal() ([]byte, error) {
	if len(a.Targets) == 0 || len(a.Results) != len(a.Targets) {
		return nil, fmt.Errorf("bpsec: an ASB needs targets and one list of results for each")
	}
	var buf bytes.Buffer
	put := func(v any) error {
		b, err := encMode.Marshal(v)
		buf.Write(b)
		return err
	}
	flags := a.Flags &^ flagParamsPresent
	if len(a.Params) > 0 {
		flags |= flagParamsPresent
	}
	src, err := a.Source.MarshalCBOR()
	if err != nil {
		return nil, err
	}
	if err := put(a.Targets); err != nil {
		return nil, err
	}
	if err := put(a.Context); err != nil {
		return nil, err
	}
	if err := put(flags); err != nil {
		return nil, err
	}
	buf.Write(src)
	if len(a.Params) > 0 {
		ps := make([]pair, len(a.Params))
		for i, p := range a.Params {
			ps[i] = pair{ID: p.ID, Value: p.Value}
		}
		if err := put(ps); err != nil {
			return nil, err
		}
	}
	rs := make([][]pair, len(a.Results))
	for i, list := range a.Results {
		rs[i] = make([]pair, len(list))
		for j, r := range list {
			rs[i][j] = pair{ID: r.ID, Value: r.Value}
		}
	}
	if err := put(rs); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Param returns the value of parameter id and whether it is present. A
// parameter present more than once is an error (the COSE context forbids
// it, and RFC 9173 gives no meaning to it).
func (a *ASB) Param(id uint64) (cbor.RawMessage, bool, error) {
	var v cbor.RawMessage
	found := false
	for _, p := range a.Params {
		if p.ID != id {
			continue
		}
		if found {
			return nil, true, fail(ErrMalformedSecurity, 0, "parameter %d appears more than once", id)
		}
		v, found = p.Value, true
	}
	return v, found, nil
}

// targetIndex is the position of block number n among the targets, or -1.
func (a *ASB) targetIndex(n uint64) int {
	for i, t := range a.Targets {
		if t == n {
			return i
		}
	}
	return -1
}

func mustMarshal(v any) cbor.RawMessage {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
