// Package acl decides who may talk to a node and whose bundles it carries.
//
// Three lists apply at three points:
//
//   - inbound: who may hand this node bundles (op "send") or ask anything of
//     it (op "request": summary vectors, fetches, status). Checked at the TLS
//     handshake (CheckConnect, VerifyConnection) and again for every
//     operation (CheckInbound).
//   - senders: whose bundles this node accepts and carries, judged from the
//     bundle's signature (CheckSender; see policy/bpsec).
//   - outbound: to whom this node hands bundles (CheckOutbound).
//
// # Semantics
//
// Each list is a set of entries, {allow: PATTERN} or {deny: PATTERN} (see
// Pattern). Order does not matter:
//
//  1. If any deny entry matches, the principal is refused (deny overrides).
//  2. Otherwise, if any allow entry matches an authenticated principal, it is
//     admitted.
//  3. Otherwise the list's default applies: a list with at least one allow
//     entry is an allowlist and refuses everyone else; a list of deny
//     entries only is a blocklist and admits everyone else; an absent or
//     empty list admits everyone (TLS trust already decided who is
//     authenticated).
//
// Deny-overrides was chosen over first-match-wins because it cannot be
// defeated by ordering: [allow campfire/*, deny campfire/mallory] keeps
// mallory out whichever line comes first.
//
// An unauthenticated principal (the claimed source of an unsigned bundle) is
// never admitted by an allow entry, so an allowlist refuses it; deny entries
// naming its node ID refuse it too, so a blocklist cannot be dodged by
// simply not signing.
//
// Every refusal wraps ErrPeerDenied, ErrSenderDenied or ErrOutboundDenied,
// each a bundle.Error, and is fatal: retrying will not help until the
// configuration changes.
package acl

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/identity"
)

// Op is an operation an inbound peer asks for.
type Op string

const (
	// OpSend: the peer hands this node bundles.
	OpSend Op = "send"
	// OpRequest: the peer asks for something: a summary vector, bundles,
	// status.
	OpRequest Op = "request"
)

// Ops are all inbound operations.
var Ops = []Op{OpSend, OpRequest}

// Refusals. Each error returned by this package wraps exactly one of them.
//
// There is no BPv7 status report reason for "not authorised"; refusals carry
// ReasonNoInformation so that no report discloses the policy, and the
// message says the rest.
var (
	ErrPeerDenied     = bundle.NewError(bundle.ReasonNoInformation, "peer not allowed")
	ErrSenderDenied   = bundle.NewError(bundle.ReasonNoInformation, "sender not allowed")
	ErrOutboundDenied = bundle.NewError(bundle.ReasonNoInformation, "peer not allowed to receive bundles")
)

// Entry is one line of a list, as configured. Exactly one of Allow and Deny
// is set. Ops, only in the inbound list, restricts the entry to those
// operations; empty means all.
type Entry struct {
	Allow string `yaml:"allow,omitempty" json:"allow,omitempty"`
	Deny  string `yaml:"deny,omitempty" json:"deny,omitempty"`
	Ops   []Op   `yaml:"ops,omitempty" json:"ops,omitempty"`
}

// Config is the YAML shape:
//
//	acl:
//	  inbound:
//	    - allow: campfire/*
//	    - allow: dtn://gateway/
//	      ops: [request]
//	    - deny: campfire/mallory
//	  senders:
//	    - allow: "*"
//	  outbound:
//	    - allow: campfire/*
//	    - allow: dtn://gateway/
type Config struct {
	Inbound  []Entry `yaml:"inbound,omitempty" json:"inbound,omitempty"`
	Senders  []Entry `yaml:"senders,omitempty" json:"senders,omitempty"`
	Outbound []Entry `yaml:"outbound,omitempty" json:"outbound,omitempty"`
}

// ACL is the three lists, ready to check. A nil *ACL admits everyone, so a
// node without an acl section needs no special case. It is immutable and
// safe for concurrent use.
type ACL struct {
	inbound, senders, outbound *List
}

// New checks c and builds the ACL. Errors name the offending key, as
// "acl.inbound[2].allow: bad pattern …", for the config package to pass on.
func New(c Config) (*ACL, error) {
	var errs []error
	a := &ACL{}
	var err error
	if a.inbound, err = newList("acl.inbound", c.Inbound, true); err != nil {
		errs = append(errs, err)
	}
	if a.senders, err = newList("acl.senders", c.Senders, false); err != nil {
		errs = append(errs, err)
	}
	if a.outbound, err = newList("acl.outbound", c.Outbound, false); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

// CheckConnect decides whether a peer that completed the TLS handshake may
// keep its connection: the inbound list must admit it for at least one
// operation. Each operation on the connection is then checked on its own,
// with CheckInbound for what the peer asks of this node and CheckOutbound
// before this node hands it a bundle. (A peer this node only hands bundles
// to still asks for them — it sends its summary vector — so it needs
// "request".)
func (a *ACL) CheckConnect(p identity.Peer) error {
	if a == nil {
		return nil
	}
	pr := FromPeer(p)
	var first error
	for _, op := range Ops {
		err := a.inbound.check(pr, op, ErrPeerDenied)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// CheckInbound decides whether peer p may perform op.
func (a *ACL) CheckInbound(p Principal, op Op) error {
	if a == nil {
		return nil
	}
	return a.inbound.check(p, op, ErrPeerDenied)
}

// CheckSender decides whether this node accepts and carries bundles from
// original sender p: FromPeer(signer) for a verified signature, Claimed(source
// node ID) for an unsigned bundle.
func (a *ACL) CheckSender(p Principal) error {
	if a == nil {
		return nil
	}
	return a.senders.check(p, "", ErrSenderDenied)
}

// CheckOutbound decides whether this node may hand bundles to peer p.
func (a *ACL) CheckOutbound(p Principal) error {
	if a == nil {
		return nil
	}
	return a.outbound.check(p, "", ErrOutboundDenied)
}

// List is one configured list.
type List struct {
	name    string // acl.inbound
	entries []entry
	allows  bool // has at least one allow entry: refuse by default
}

type entry struct {
	allow   bool
	pattern Pattern
	ops     []Op // nil: every op
}

func (e entry) String() string {
	verb := "deny"
	if e.allow {
		verb = "allow"
	}
	s := verb + " " + e.pattern.String()
	if len(e.ops) > 0 {
		ops := make([]string, len(e.ops))
		for i, op := range e.ops {
			ops[i] = string(op)
		}
		s += " (ops " + strings.Join(ops, ", ") + ")"
	}
	return s
}

func newList(name string, es []Entry, withOps bool) (*List, error) {
	l := &List{name: name}
	var errs []error
	for i, e := range es {
		key := fmt.Sprintf("%s[%d]", name, i)
		var en entry
		var raw string
		switch {
		case e.Allow != "" && e.Deny != "":
			errs = append(errs, fmt.Errorf("%s: set either allow or deny, not both", key))
			continue
		case e.Allow != "":
			en.allow, raw, key = true, e.Allow, key+".allow"
		case e.Deny != "":
			raw, key = e.Deny, key+".deny"
		default:
			errs = append(errs, fmt.Errorf("%s: want {allow: PATTERN} or {deny: PATTERN}", key))
			continue
		}
		p, err := ParsePattern(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			continue
		}
		en.pattern = p
		if len(e.Ops) > 0 {
			if !withOps {
				errs = append(errs, fmt.Errorf("%s[%d].ops: only inbound entries have operations", name, i))
				continue
			}
			for j, op := range e.Ops {
				if !slices.Contains(Ops, op) {
					errs = append(errs, fmt.Errorf("%s[%d].ops[%d]: unknown operation %q; want send or request", name, i, j, op))
				}
			}
			en.ops = slices.Clone(e.Ops)
		}
		l.entries = append(l.entries, en)
		l.allows = l.allows || en.allow
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return l, nil
}

// check applies the list to p for op ("" for lists without operations).
func (l *List) check(p Principal, op Op, kind *bundle.Error) error {
	if l == nil {
		return nil
	}
	applies := func(e entry) bool {
		return len(e.ops) == 0 || op == "" || slices.Contains(e.ops, op)
	}
	allowed := -1
	for i, e := range l.entries {
		if !applies(e) || !e.pattern.Match(p) {
			continue
		}
		if !e.allow {
			return fmt.Errorf("%w: %s%s is refused by %s[%d] (%s)", kind, p, forOp(op), l.name, i, e)
		}
		if p.Authenticated && allowed < 0 {
			allowed = i
		}
	}
	if allowed >= 0 || !l.allows {
		return nil
	}
	if !p.Authenticated {
		return fmt.Errorf("%w: %s%s: %s admits only authenticated principals it names", kind, p, forOp(op), l.name)
	}
	return fmt.Errorf("%w: %s%s matches no allow entry of %s", kind, p, forOp(op), l.name)
}

func forOp(op Op) string {
	if op == "" {
		return ""
	}
	return " (op " + string(op) + ")"
}
