package bundle

import (
	"fmt"
	"strconv"
	"strings"
)

// Scheme is an endpoint ID's URI scheme code (RFC 9171 §4.2.5.1).
type Scheme uint64

const (
	SchemeDTN Scheme = 1
	SchemeIPN Scheme = 2
)

// EID is an endpoint ID: dtn:none, dtn://node/demux, or ipn:node.service.
// The zero value is not valid; use None for the null endpoint. EIDs are
// comparable and can be map keys.
type EID struct {
	scheme Scheme
	// For dtn: the scheme-specific part after "dtn:", either "none" or
	// "//node/demux". For ipn: empty.
	ssp     string
	node    uint64 // ipn node number
	service uint64 // ipn service number
}

// None is the null endpoint, dtn:none.
var None = EID{scheme: SchemeDTN, ssp: "none"}

// DTN returns dtn://node/demux.
func DTN(node, demux string) (EID, error) {
	return ParseEID("dtn://" + node + "/" + demux)
}

// IPN returns ipn:node.service.
func IPN(node, service uint64) EID {
	return EID{scheme: SchemeIPN, node: node, service: service}
}

// MustParseEID is ParseEID for constants in tests and examples; it panics on
// error.
func MustParseEID(s string) EID {
	e, err := ParseEID(s)
	if err != nil {
		panic(err)
	}
	return e
}

// ParseEID parses the text form of an endpoint ID. A dtn node ID may omit its
// final slash: "dtn://alice" is read as "dtn://alice/".
func ParseEID(s string) (EID, error) {
	switch {
	case s == "dtn:none":
		return None, nil
	case strings.HasPrefix(s, "dtn:"):
		return parseDTN(s)
	case strings.HasPrefix(s, "ipn:"):
		return parseIPN(s)
	case s == "":
		return EID{}, wrap(ErrBadEID, "empty endpoint ID")
	}
	return EID{}, wrap(ErrBadEID, "%q: the scheme must be dtn: or ipn:", s)
}

func parseDTN(s string) (EID, error) {
	rest, ok := strings.CutPrefix(s, "dtn://")
	if !ok {
		return EID{}, wrap(ErrBadEID, "%q: a dtn endpoint is dtn:none or dtn://node/service", s)
	}
	node, demux, hasSlash := strings.Cut(rest, "/")
	if node == "" {
		return EID{}, wrap(ErrBadEID, "%q: the node name is empty", s)
	}
	if node == "~" {
		return EID{}, wrap(ErrBadEID, "%q: a group node name needs a name after ~", s)
	}
	for _, c := range []byte(node) {
		if !nodeNameByte(c) {
			return EID{}, wrap(ErrBadEID, "%q: character %q is not allowed in a node name", s, c)
		}
	}
	for _, c := range []byte(demux) {
		if c <= 0x20 || c >= 0x7f {
			return EID{}, wrap(ErrBadEID, "%q: the service part must be printable ASCII without spaces", s)
		}
	}
	_ = hasSlash // "dtn://node" is the node ID dtn://node/
	return EID{scheme: SchemeDTN, ssp: "//" + node + "/" + demux}, nil
}

// nodeNameByte allows RFC 3986 unreserved and sub-delims characters, "~"
// (group names) and "%" (percent-encoding). Excluding "|" keeps bundle ID
// strings unambiguous.
func nodeNameByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=%:@", c) >= 0
}

func parseIPN(s string) (EID, error) {
	rest := s[len("ipn:"):]
	n, svc, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(svc, ".") {
		return EID{}, wrap(ErrBadEID, "%q: an ipn endpoint is ipn:NODE.SERVICE", s)
	}
	node, err1 := strconv.ParseUint(n, 10, 64)
	service, err2 := strconv.ParseUint(svc, 10, 64)
	if err1 != nil || err2 != nil || !isDecimal(n) || !isDecimal(svc) {
		return EID{}, wrap(ErrBadEID, "%q: node and service numbers must be unsigned decimal integers", s)
	}
	return IPN(node, service), nil
}

func isDecimal(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// String gives the text form; ParseEID(e.String()) == e.
func (e EID) String() string {
	switch e.scheme {
	case SchemeDTN:
		return "dtn:" + e.ssp
	case SchemeIPN:
		return "ipn:" + strconv.FormatUint(e.node, 10) + "." + strconv.FormatUint(e.service, 10)
	}
	return "<invalid EID>"
}

// Scheme returns the scheme code.
func (e EID) Scheme() Scheme { return e.scheme }

// IsZero reports whether e is the zero value (no endpoint at all, which is
// not the same as dtn:none).
func (e EID) IsZero() bool { return e.scheme == 0 }

// IsNone reports whether e is the null endpoint dtn:none.
func (e EID) IsNone() bool { return e == None }

// IsSingleton reports whether e names at most one node. dtn node names that
// begin with "~" name groups (RFC 9171 §4.2.5.1.1); ipn endpoints are always
// singletons. dtn:none is not a singleton.
func (e EID) IsSingleton() bool {
	switch e.scheme {
	case SchemeIPN:
		return true
	case SchemeDTN:
		return !e.IsNone() && !strings.HasPrefix(e.ssp, "//~")
	}
	return false
}

// NodeName is the dtn node name (a group's keeps its leading "~") or the ipn
// node number as text. It is "" for dtn:none.
func (e EID) NodeName() string {
	switch e.scheme {
	case SchemeIPN:
		return strconv.FormatUint(e.node, 10)
	case SchemeDTN:
		if e.IsNone() {
			return ""
		}
		node, _, _ := strings.Cut(e.ssp[2:], "/")
		return node
	}
	return ""
}

// Service is the dtn demux part (after the node name's slash) or the ipn
// service number as text.
func (e EID) Service() string {
	switch e.scheme {
	case SchemeIPN:
		return strconv.FormatUint(e.service, 10)
	case SchemeDTN:
		if e.IsNone() {
			return ""
		}
		_, demux, _ := strings.Cut(e.ssp[2:], "/")
		return demux
	}
	return ""
}

// NodeID returns the node ID of the node that owns e: dtn://node/ or
// ipn:node.0. dtn:none is its own node ID.
func (e EID) NodeID() EID {
	switch e.scheme {
	case SchemeIPN:
		return IPN(e.node, 0)
	case SchemeDTN:
		if e.IsNone() {
			return e
		}
		return EID{scheme: SchemeDTN, ssp: "//" + e.NodeName() + "/"}
	}
	return e
}

// IsNodeID reports whether e is a node ID: dtn://node/ or ipn:N.0.
func (e EID) IsNodeID() bool { return !e.IsZero() && !e.IsNone() && e.NodeID() == e }

// SameNode reports whether e and o belong to the same node.
func (e EID) SameNode(o EID) bool {
	if e.scheme != o.scheme {
		return false
	}
	if e.scheme == SchemeIPN {
		return e.node == o.node
	}
	if e.IsNone() || o.IsNone() {
		return e.IsNone() && o.IsNone()
	}
	return e.NodeName() == o.NodeName()
}

// Join returns the endpoint named service on e's node: dtn://node/service.
// For ipn, service must be a decimal service number.
func (e EID) Join(service string) (EID, error) {
	switch e.scheme {
	case SchemeDTN:
		if e.IsNone() {
			return EID{}, wrap(ErrBadEID, "dtn:none has no services")
		}
		return ParseEID("dtn://" + e.NodeName() + "/" + service)
	case SchemeIPN:
		svc, err := strconv.ParseUint(service, 10, 64)
		if err != nil {
			return EID{}, wrap(ErrBadEID, "ipn service %q must be a number", service)
		}
		return IPN(e.node, svc), nil
	}
	return EID{}, wrap(ErrBadEID, "zero endpoint ID")
}

// IPNNumbers returns the node and service numbers of an ipn endpoint.
func (e EID) IPNNumbers() (node, service uint64, ok bool) {
	return e.node, e.service, e.scheme == SchemeIPN
}

// MarshalText and UnmarshalText let EIDs appear as strings in JSON and YAML.
func (e EID) MarshalText() ([]byte, error) {
	if e.IsZero() {
		return []byte{}, nil
	}
	return []byte(e.String()), nil
}

func (e *EID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*e = EID{}
		return nil
	}
	v, err := ParseEID(string(b))
	if err != nil {
		return err
	}
	*e = v
	return nil
}

// MarshalCBOR encodes e as RFC 9171 §4.2.5.1 specifies: [1, 0] for dtn:none,
// [1, "//node/demux"] for dtn, [2, [node, service]] for ipn.
func (e EID) MarshalCBOR() ([]byte, error) {
	switch e.scheme {
	case SchemeDTN:
		if e.IsNone() {
			return []byte{0x82, 0x01, 0x00}, nil
		}
		return encMode.Marshal([]any{uint64(SchemeDTN), e.ssp})
	case SchemeIPN:
		return encMode.Marshal([]any{uint64(SchemeIPN), []uint64{e.node, e.service}})
	}
	return nil, wrap(ErrBadEID, "cannot encode the zero endpoint ID")
}

// UnmarshalCBOR decodes and validates an encoded EID. It reads the CBOR
// heads directly: EIDs are in every block of every bundle, and decoding them
// by reflection was a tenth of the CPU a small bundle costs.
func (e *EID) UnmarshalCBOR(data []byte) error {
	d := sliceDecoder{b: data}
	if n, err := d.arrayHead(); err != nil || n != 2 {
		return wrap(ErrBadEID, "an endpoint ID is a two-element array")
	}
	scheme, err := d.uint()
	if err != nil {
		return wrap(ErrBadEID, "scheme code is not an unsigned integer")
	}
	switch Scheme(scheme) {
	case SchemeDTN:
		major, arg, indef, err := d.reader().readHead()
		if err != nil || indef {
			return wrap(ErrBadEID, "dtn scheme-specific part is neither 0 nor text")
		}
		switch major {
		case majorUint:
			if arg != 0 {
				return wrap(ErrBadEID, "dtn scheme-specific part %d: only 0 (dtn:none) may be a number", arg)
			}
			if d.off != len(data) {
				return wrap(ErrBadEID, "trailing bytes after the endpoint ID")
			}
			*e = None
			return nil
		case majorText:
			if arg > uint64(len(data)-d.off) {
				return wrap(ErrBadEID, "dtn scheme-specific part is truncated")
			}
			ssp := string(data[d.off : d.off+int(arg)])
			d.off += int(arg)
			if d.off != len(data) {
				return wrap(ErrBadEID, "trailing bytes after the endpoint ID")
			}
			if ssp == "none" {
				return wrap(ErrBadEID, "dtn:none must be encoded as [1, 0]")
			}
			v, err := ParseEID("dtn:" + ssp)
			if err != nil {
				return err
			}
			if v.ssp != ssp {
				return wrap(ErrBadEID, "%q: a dtn node name must be followed by '/'", ssp)
			}
			*e = v
			return nil
		}
		return wrap(ErrBadEID, "dtn scheme-specific part is neither 0 nor text")
	case SchemeIPN:
		if n, err := d.arrayHead(); err != nil || n != 2 {
			return wrap(ErrBadEID, "ipn scheme-specific part must be [node, service]")
		}
		node, err1 := d.uint()
		service, err2 := d.uint()
		if err1 != nil || err2 != nil {
			return wrap(ErrBadEID, "ipn scheme-specific part must be [node, service]")
		}
		if d.off != len(data) {
			return wrap(ErrBadEID, "trailing bytes after the endpoint ID")
		}
		*e = IPN(node, service)
		return nil
	}
	return wrap(ErrBadEID, "unknown URI scheme code %d", scheme)
}

// Format implements fmt.Formatter so %v and %s print the text form.
func (e EID) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", e.String())
	default:
		fmt.Fprint(f, e.String())
	}
}
