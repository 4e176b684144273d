package acl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mulegate/mulegate/policy/identity"
)

// Principal is who authentication established: a peer from its TLS
// certificate, or the original sender of a bundle from the certificate that
// signed it.
//
// A principal that is not Authenticated carries only a claim — the source
// node ID of an unsigned bundle — which deny entries and node-ID patterns
// may match but which no allow entry ever accepts.
type Principal struct {
	NodeID        string // dtn://alice/ or ipn:12.0
	Name          string // member name vouched for by a group CA (campfire/alice); "" otherwise
	Authenticated bool
}

// FromPeer is the principal a verified identity.Peer (or a verified bundle
// signer, which has the same fields) establishes.
func FromPeer(p identity.Peer) Principal {
	return Principal{NodeID: p.NodeID, Name: p.Name, Authenticated: true}
}

// Claimed is the principal of an unauthenticated claim, such as the source
// node ID of an unsigned bundle.
func Claimed(nodeID string) Principal {
	return Principal{NodeID: nodeID}
}

// String names the principal for logs: "campfire/alice (dtn://alice/)",
// "dtn://alice/", or "unauthenticated dtn://alice/".
func (p Principal) String() string {
	switch {
	case !p.Authenticated && p.NodeID == "":
		return "anonymous"
	case !p.Authenticated:
		return "unauthenticated " + p.NodeID
	case p.Name != "":
		return p.Name + " (" + p.NodeID + ")"
	}
	return p.NodeID
}

// Key identifies the principal in maps (rate-limit buckets): an
// authenticated principal and an unauthenticated claim of the same node ID
// are different keys, so that a forger cannot spend the real node's budget.
func (p Principal) Key() string {
	if p.Authenticated {
		return "a\x00" + p.NodeID + "\x00" + p.Name
	}
	return "c\x00" + p.NodeID
}

type patternKind uint8

const (
	patAnyone patternKind = iota + 1 // *
	patNodeID                        // dtn://alice/, ipn:12.0
	patMember                        // campfire/alice
	patPrefix                        // campfire/*, campfire/kitchen/*
)

// Pattern selects principals by name. The forms are:
//
//	pattern           selects
//	"*"               any authenticated principal
//	dtn://alice/      the node with that node ID (also ipn:12.0)
//	campfire/alice    the member with that member name
//	campfire/*        every member of the group campfire
//	campfire/pi/*     every member whose name starts with campfire/pi/
//
// A "*" is allowed only as the whole pattern or as the last path element.
// Names and node IDs are compared exactly, case included. Member names come
// only from certificates a trusted group CA issued, so member patterns never
// match a self-signed (trust-on-first-use or pinned) node: name those by node
// ID.
//
// The zero Pattern matches nothing.
type Pattern struct {
	kind  patternKind
	value string // node ID, member name, or prefix ending in "/"
}

// ErrBadPattern is what every pattern parsing error wraps.
var ErrBadPattern = errors.New("bad pattern")

// ParsePattern parses a pattern.
func ParsePattern(s string) (Pattern, error) {
	switch {
	case s == "":
		return Pattern{}, fmt.Errorf("%w: empty; use \"*\" for anyone authenticated", ErrBadPattern)
	case s == "*":
		return Pattern{kind: patAnyone}, nil
	case strings.Contains(s, ":"):
		if strings.Contains(s, "*") {
			return Pattern{}, fmt.Errorf("%w %q: node IDs are matched exactly; name groups of nodes by member name (campfire/*)", ErrBadPattern, s)
		}
		if err := identity.CheckNodeID(s); err != nil {
			return Pattern{}, fmt.Errorf("%w: %v", ErrBadPattern, err)
		}
		return Pattern{kind: patNodeID, value: s}, nil
	}
	if prefix, ok := strings.CutSuffix(s, "/*"); ok {
		if strings.Contains(prefix, "*") {
			return Pattern{}, fmt.Errorf("%w %q: \"*\" may only end a pattern", ErrBadPattern, s)
		}
		if !strings.Contains(prefix, "/") {
			if err := identity.CheckGroupName(prefix); err != nil {
				return Pattern{}, fmt.Errorf("%w %q: %v", ErrBadPattern, s, err)
			}
		} else if err := identity.CheckMemberName(prefix); err != nil {
			return Pattern{}, fmt.Errorf("%w %q: %v", ErrBadPattern, s, err)
		}
		return Pattern{kind: patPrefix, value: prefix + "/"}, nil
	}
	if strings.Contains(s, "*") {
		return Pattern{}, fmt.Errorf("%w %q: \"*\" may only be the whole pattern or its last element (campfire/*)", ErrBadPattern, s)
	}
	if err := identity.CheckMemberName(s); err != nil {
		return Pattern{}, fmt.Errorf("%w %q: want *, a node ID (dtn://alice/, ipn:12.0), a member name (campfire/alice) or a group (campfire/*): %v", ErrBadPattern, s, err)
	}
	return Pattern{kind: patMember, value: s}, nil
}

// MustParsePattern is ParsePattern for constants in tests; it panics on
// error.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Match reports whether p selects principal pr. Only node-ID patterns match
// an unauthenticated claim.
func (p Pattern) Match(pr Principal) bool {
	switch p.kind {
	case patAnyone:
		return pr.Authenticated
	case patNodeID:
		return pr.NodeID != "" && pr.NodeID == p.value
	case patMember:
		return pr.Authenticated && pr.Name != "" && pr.Name == p.value
	case patPrefix:
		return pr.Authenticated && strings.HasPrefix(pr.Name, p.value) && len(pr.Name) > len(p.value)
	}
	return false
}

// String gives the pattern as it was written.
func (p Pattern) String() string {
	switch p.kind {
	case patAnyone:
		return "*"
	case patPrefix:
		return p.value + "*"
	}
	return p.value
}

// MarshalText and UnmarshalText let patterns appear as strings in YAML and
// JSON.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p *Pattern) UnmarshalText(b []byte) error {
	v, err := ParsePattern(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}
