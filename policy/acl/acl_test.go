package acl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/identity"
	"go.yaml.in/yaml/v3"
)

var (
	alice   = Principal{NodeID: "dtn://alice/", Name: "campfire/alice", Authenticated: true}
	mallory = Principal{NodeID: "dtn://mallory/", Name: "campfire/mallory", Authenticated: true}
	pi      = Principal{NodeID: "ipn:12.0", Name: "campfire/kitchen/pi", Authenticated: true}
	bob     = Principal{NodeID: "dtn://bob/", Name: "orchard/bob", Authenticated: true}
	tofu    = Principal{NodeID: "dtn://gateway/", Authenticated: true} // self-signed, no member name
	claimed = Claimed("dtn://alice/")                                  // unsigned bundle claiming alice
	spoofed = Principal{NodeID: "dtn://x/", Name: "campfire/alice"}    // a name without authentication is worthless
)

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []Principal
		miss    []Principal
	}{
		{"*", []Principal{alice, bob, tofu, pi}, []Principal{claimed, spoofed, {}}},
		{"campfire/*", []Principal{alice, mallory, pi}, []Principal{bob, tofu, claimed, spoofed}},
		{"campfire/alice", []Principal{alice}, []Principal{mallory, pi, bob, claimed, spoofed}},
		{"campfire/kitchen/*", []Principal{pi}, []Principal{alice, bob}},
		{"dtn://alice/", []Principal{alice, claimed}, []Principal{mallory, bob, tofu}},
		{"dtn://gateway/", []Principal{tofu}, []Principal{alice}},
		{"ipn:12.0", []Principal{pi}, []Principal{alice}},
		{"orchard/*", []Principal{bob}, []Principal{alice, {Name: "orchard/", Authenticated: true}}},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if p.String() != tc.pattern {
			t.Errorf("ParsePattern(%q).String() = %q", tc.pattern, p)
		}
		for _, pr := range tc.match {
			if !p.Match(pr) {
				t.Errorf("%q does not match %v", tc.pattern, pr)
			}
		}
		for _, pr := range tc.miss {
			if p.Match(pr) {
				t.Errorf("%q matches %v", tc.pattern, pr)
			}
		}
	}
	if (Pattern{}).Match(alice) {
		t.Error("the zero pattern matches")
	}
}

func TestParsePatternErrors(t *testing.T) {
	for _, s := range []string{"", "**", "campfire/**", "*/alice", "camp*", "campfire/a*", "dtn://alice", "dtn://*/",
		"ipn:12.1", "ipn:0.0", "alice", "campfire/", "bad group/*", "dtn://al ice/", "campfire/ali ce"} {
		if p, err := ParsePattern(s); err == nil {
			t.Errorf("ParsePattern(%q) = %v, want an error", s, p)
		} else if !errors.Is(err, ErrBadPattern) {
			t.Errorf("ParsePattern(%q): %v does not wrap ErrBadPattern", s, err)
		}
	}
}

func TestLists(t *testing.T) {
	cfg := Config{
		Inbound: []Entry{
			{Allow: "campfire/*"},
			{Deny: "campfire/mallory"}, // after the allow: deny still overrides
			{Allow: "dtn://gateway/", Ops: []Op{OpRequest}},
		},
		Senders: []Entry{
			{Deny: "dtn://alice/"}, // a blocklist: everyone else is fine
		},
		Outbound: []Entry{
			{Allow: "campfire/kitchen/*"},
			{Allow: "orchard/bob"},
		},
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	type check struct {
		name  string
		fn    func(Principal) error
		p     Principal
		allow bool
		kind  error
	}
	inbound := func(op Op) func(Principal) error {
		return func(p Principal) error { return a.CheckInbound(p, op) }
	}
	for _, c := range []check{
		{"member sends", inbound(OpSend), alice, true, nil},
		{"member requests", inbound(OpRequest), pi, true, nil},
		{"denied member sends", inbound(OpSend), mallory, false, ErrPeerDenied},
		{"denied member requests", inbound(OpRequest), mallory, false, ErrPeerDenied},
		{"other group", inbound(OpSend), bob, false, ErrPeerDenied},
		{"gateway requests", inbound(OpRequest), tofu, true, nil},
		{"gateway may not send", inbound(OpSend), tofu, false, ErrPeerDenied},
		{"unauthenticated", inbound(OpRequest), claimed, false, ErrPeerDenied},

		{"signed sender", a.CheckSender, bob, true, nil},
		{"blocked signed sender", a.CheckSender, alice, false, ErrSenderDenied},
		{"blocked unsigned claim", a.CheckSender, claimed, false, ErrSenderDenied},
		{"other unsigned claim", a.CheckSender, Claimed("dtn://carol/"), true, nil},

		{"outbound prefix", a.CheckOutbound, pi, true, nil},
		{"outbound exact", a.CheckOutbound, bob, true, nil},
		{"outbound not listed", a.CheckOutbound, alice, false, ErrOutboundDenied},
	} {
		err := c.fn(c.p)
		if c.allow {
			if err != nil {
				t.Errorf("%s: %v refused: %v", c.name, c.p, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: %v admitted", c.name, c.p)
			continue
		}
		if !errors.Is(err, c.kind) {
			t.Errorf("%s: %v does not wrap %v", c.name, err, c.kind)
		}
		if bundle.ReasonOf(err) != bundle.ReasonNoInformation {
			t.Errorf("%s: reason %v", c.name, bundle.ReasonOf(err))
		}
	}

	// The refusal says which entry decided.
	if err := a.CheckInbound(mallory, OpSend); !strings.Contains(err.Error(), "acl.inbound[1] (deny campfire/mallory)") {
		t.Errorf("refusal does not name the entry: %v", err)
	}

	// The handshake admits a peer allowed any inbound operation.
	for _, tc := range []struct {
		p    identity.Peer
		want bool
	}{
		{identity.Peer{NodeID: "dtn://alice/", Name: "campfire/alice"}, true},
		{identity.Peer{NodeID: "dtn://gateway/"}, true}, // request only
		{identity.Peer{NodeID: "dtn://mallory/", Name: "campfire/mallory"}, false},
		{identity.Peer{NodeID: "dtn://bob/", Name: "orchard/bob"}, false}, // outbound only
	} {
		if err := a.CheckConnect(tc.p); (err == nil) != tc.want {
			t.Errorf("CheckConnect(%v) = %v, want admitted %v", tc.p, err, tc.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	var none *ACL
	if none.CheckConnect(identity.Peer{NodeID: "dtn://x/"}) != nil || none.CheckSender(Claimed("dtn://x/")) != nil ||
		none.CheckInbound(alice, OpSend) != nil || none.CheckOutbound(alice) != nil {
		t.Error("a nil ACL refuses")
	}
	empty, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if empty.CheckSender(claimed) != nil || empty.CheckInbound(tofu, OpSend) != nil {
		t.Error("an empty ACL refuses")
	}
	allowAll, err := New(Config{Senders: []Entry{{Allow: "*"}}})
	if err != nil {
		t.Fatal(err)
	}
	if allowAll.CheckSender(tofu) != nil {
		t.Error("* refuses an authenticated sender")
	}
	if !errors.Is(allowAll.CheckSender(claimed), ErrSenderDenied) {
		t.Error("* admits an unsigned bundle")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Inbound: []Entry{{}}}, "acl.inbound[0]: want {allow: PATTERN} or {deny: PATTERN}"},
		{Config{Senders: []Entry{{Allow: "*", Deny: "*"}}}, "acl.senders[0]: set either allow or deny"},
		{Config{Outbound: []Entry{{Allow: "ok/x"}, {Deny: "camp*"}}}, "acl.outbound[1].deny: bad pattern"},
		{Config{Senders: []Entry{{Allow: "*", Ops: []Op{OpSend}}}}, "acl.senders[0].ops: only inbound"},
		{Config{Inbound: []Entry{{Allow: "*", Ops: []Op{"write"}}}}, `acl.inbound[0].ops[0]: unknown operation "write"`},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestYAML(t *testing.T) {
	const doc = `
inbound:
  - allow: campfire/*
  - allow: dtn://gateway/
    ops: [request]
  - deny: campfire/mallory
senders:
  - allow: "*"
outbound:
  - allow: campfire/*
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if a.CheckInbound(tofu, OpRequest) != nil || a.CheckInbound(tofu, OpSend) == nil || a.CheckInbound(mallory, OpRequest) == nil {
		t.Errorf("YAML lists decode wrong: %+v", c)
	}
}

// TestHandshake shows a refused peer failing the TLS handshake itself.
func TestHandshake(t *testing.T) {
	ca, err := identity.NewCA("campfire", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	member := func(name, node string) *identity.Identity {
		id, err := identity.Generate(node, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(name, node, id.PublicKey(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		id, err = id.Install(identity.EncodeChain(cert, ca.Certificate()))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	server := member("campfire/gateway", "dtn://gateway/")
	trust, err := identity.NewTrust([]*x509.Certificate{ca.Certificate()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Inbound: []Entry{{Allow: "campfire/*"}, {Deny: "campfire/mallory"}}})
	if err != nil {
		t.Fatal(err)
	}
	scfg := a.Wrap(identity.ServerConfig(server, trust, []string{"test"}), trust)

	for _, tc := range []struct {
		client *identity.Identity
		ok     bool
	}{
		{member("campfire/alice", "dtn://alice/"), true},
		{member("campfire/mallory", "dtn://mallory/"), false},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ccfg := identity.ClientConfig(tc.client, trust, []string{"test"}, "dtn://gateway/")
		srvErr := make(chan error, 1)
		go func() {
			c1, err := ln.Accept()
			if err != nil {
				srvErr <- err
				return
			}
			s := tls.Server(c1, scfg)
			err = s.Handshake()
			s.Close()
			srvErr <- err
		}()
		c2, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(c2, ccfg)
		cliErr := c.Handshake()
		if cliErr == nil && !tc.ok {
			// TLS 1.3: the server judges the client after the client's
			// handshake is done; the client learns of it on its first read.
			_, cliErr = c.Read(make([]byte, 1))
		}
		c.Close()
		ln.Close()
		err = <-srvErr
		if tc.ok {
			if err != nil || cliErr != nil {
				t.Errorf("%s: handshake failed: server %v, client %v", tc.client.Name(), err, cliErr)
			}
			continue
		}
		if !errors.Is(err, ErrPeerDenied) {
			t.Errorf("%s: server handshake error %v, want ErrPeerDenied", tc.client.Name(), err)
		}
		if cliErr == nil {
			t.Errorf("%s: the client never learnt of the refusal", tc.client.Name())
		}
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"*", "campfire/*", "campfire/alice", "dtn://alice/", "ipn:12.0", "a/b/*", "**", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		q, err := ParsePattern(p.String())
		if err != nil || q != p {
			t.Fatalf("%q → %q does not parse back: %v", s, p, err)
		}
		p.Match(alice)
		p.Match(claimed)
	})
}
