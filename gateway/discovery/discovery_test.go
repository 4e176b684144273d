package discovery

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"go.uber.org/zap/zaptest"
	"golang.org/x/net/ipv4"
)

// node is a Discovery running in the test, with what it reports.
type node struct {
	t       *testing.T
	d       *Discovery
	events  chan traceEvent
	peers   chan Peer
	dropped atomic.Bool
	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
}

// startNode runs a Discovery with o until the test ends (or stop).
func startNode(t *testing.T, o Options) *node {
	t.Helper()
	n := &node{t: t, events: make(chan traceEvent, 4096), peers: make(chan Peer, 64), done: make(chan error, 1)}
	o.OnPeer = func(p Peer) {
		select {
		case n.peers <- p:
		default:
			n.dropped.Store(true)
		}
	}
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	d.trace = func(ev traceEvent) {
		select {
		case n.events <- ev:
		default:
			n.dropped.Store(true)
		}
	}
	n.d = d
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(n.stop)
	return n
}

// stop cancels Run and checks that it returned nil.
func (n *node) stop() {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("Run: %v", err)
			}
		case <-time.After(testTimeout):
			n.t.Errorf("Run did not return %v after its context ended", testTimeout)
		}
		if n.dropped.Load() {
			n.t.Error("the test's event or peer buffer overflowed")
		}
	})
}

// waitEvent consumes events until one of kind (on ifIndex, unless 0) comes.
func (n *node) waitEvent(kind eventKind, ifIndex int) traceEvent {
	n.t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case ev := <-n.events:
			if ev.kind == kind && (ifIndex == 0 || ev.ifIndex == ifIndex) {
				return ev
			}
		case err := <-n.done:
			n.t.Fatalf("Run returned (%v) while waiting for a %v event", err, kind)
		case <-deadline:
			n.t.Fatalf("no %v event on interface %d within %v", kind, ifIndex, testTimeout)
		}
	}
}

// received returns the next count events about received datagrams,
// skipping joins and sends.
func (n *node) received(count int) []traceEvent {
	n.t.Helper()
	var evs []traceEvent
	deadline := time.After(testTimeout)
	for len(evs) < count {
		select {
		case ev := <-n.events:
			if ev.kind != evJoined && ev.kind != evSent {
				evs = append(evs, ev)
			}
		case <-deadline:
			n.t.Fatalf("%d of %d datagrams seen within %v: %v", len(evs), count, testTimeout, evs)
		}
	}
	return evs
}

// peer waits for the next OnPeer call.
func (n *node) peer() Peer {
	n.t.Helper()
	select {
	case p := <-n.peers:
		return p
	case <-time.After(testTimeout):
		n.t.Fatalf("OnPeer not called within %v", testTimeout)
		return Peer{}
	}
}

// noPeer fails if OnPeer has been called and not yet consumed.
func (n *node) noPeer() {
	n.t.Helper()
	select {
	case p := <-n.peers:
		n.t.Errorf("OnPeer called with %+v", p)
	default:
	}
}

// TestTwoNodesDiscoverEachOther runs two nodes on two hosts of one LAN: two
// network namespaces joined by a veth pair, each with an IPv4 address and an
// IPv6 link-local one. Each node must report the other once, with the
// other's node ID and the beacon's source address (with the zone, for IPv6
// link-local), and must hear and ignore its own beacons.
func TestTwoNodesDiscoverEachOther(t *testing.T) {
	if os.Getenv(childEnv) == "pair" {
		pairChild(t)
		return
	}
	l := newLab(t)
	nsA, nsB := l.ns("a"), l.ns("b")
	l.ip("-n", nsA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nsB)
	l.addIface(nsA, "va", "10.77.0.1/24", "fe80::a/64")
	l.addIface(nsB, "vb", "10.77.0.2/24", "fe80::b/64")

	for _, tc := range []struct {
		name, group string
		aAtB, bAtA  string // where each node is, as the other sees it
	}{
		{"ipv4", "239.255.45.56:4558", "10.77.0.1:4601", "10.77.0.2:4602"},
		{"ipv6", "[ff02::4d47:4453]:4558", "[fe80::a%vb]:4601", "[fe80::b%va]:4602"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
			defer cancel()
			a := l.start(ctx, "node a ("+nsA+")", nsA, "TestTwoNodesDiscoverEachOther", childEnv+"=pair",
				"MGD_GROUP="+tc.group, "MGD_NODE=dtn://a/", "MGD_PORT=4601", "MGD_PEER=ipn:2.0", "MGD_PEER_ADDR="+tc.bAtA)
			b := l.start(ctx, "node b ("+nsB+")", nsB, "TestTwoNodesDiscoverEachOther", childEnv+"=pair",
				"MGD_GROUP="+tc.group, "MGD_NODE=ipn:2.0", "MGD_PORT=4602", "MGD_PEER=dtn://a/", "MGD_PEER_ADDR="+tc.aAtB)
			// Each child reports once it has found the other; both keep
			// beaconing until both have, then stop when stdin closes.
			for _, c := range []*child{a, b} {
				line, err := c.waitLine(ctx, "MGDISC found")
				if err != nil {
					t.Error(err)
				} else {
					t.Logf("%s: %s", c.name, line)
				}
			}
			a.finish(t)
			b.finish(t)
		})
	}
}

// pairChild is one node of TestTwoNodesDiscoverEachOther, in its namespace.
func pairChild(t *testing.T) {
	self := bundle.MustParseEID(os.Getenv("MGD_NODE"))
	port, err := strconv.Atoi(os.Getenv("MGD_PORT"))
	if err != nil {
		t.Fatal(err)
	}
	want := Peer{
		NodeID: bundle.MustParseEID(os.Getenv("MGD_PEER")),
		Addrs:  []Address{{ProtocolQUIC, os.Getenv("MGD_PEER_ADDR")}},
	}
	n := startNode(t, Options{
		NodeID:   self,
		Group:    os.Getenv("MGD_GROUP"),
		Interval: 200 * time.Millisecond,
		Services: []Service{{ProtocolQUIC, port}},
	})
	got := n.peer()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("OnPeer(%+v), want OnPeer(%+v)", got, want)
	}
	n.waitEvent(evOwn, 0) // its own beacon came back, and was dropped
	fmt.Printf("MGDISC found %v at %v\n", got.NodeID, got.Addrs)
	waitStdinEOF()
	n.stop()
	// The peer beaconed all along, so it was reported once only.
	n.noPeer()
	childDone()
}

// TestBeaconHandling runs nodes in a namespace whose loopback interface has
// multicast on, and which has a second link (a veth pair, v0–v1), and sends
// them raw datagrams. Loopback also has the address 10.79.0.1: 127.0.0.1 is
// of host scope, and the kernel gives a multicast datagram a source of at
// least link scope, preferring the outgoing interface's.
func TestBeaconHandling(t *testing.T) {
	if os.Getenv(childEnv) == "single" {
		singleChild(t)
		return
	}
	l := newLab(t)
	ns := l.ns("s")
	l.ip("-n", ns, "link", "set", "lo", "multicast", "on")
	l.ip("-n", ns, "addr", "add", "10.79.0.1/32", "dev", "lo")
	l.ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	l.addIface(ns, "v0", "10.78.0.1/24", "fe80::1/64")
	l.addIface(ns, "v1", "10.78.0.2/24", "fe80::2/64")
	ctx, cancel := context.WithTimeout(t.Context(), 4*testTimeout)
	defer cancel()
	c := l.start(ctx, "TestBeaconHandling in "+ns, ns, "TestBeaconHandling", childEnv+"=single")
	c.finish(t)
	if t.Failed() {
		return
	}
	c.mu.Lock()
	out := c.out.String()
	c.mu.Unlock()
	for _, sub := range []string{"own", "peer", "malformed", "interface", "same_host"} {
		if !strings.Contains(out, "--- PASS: TestBeaconHandling/"+sub) {
			t.Errorf("subtest %s did not pass in the namespace:\n%s", sub, out)
		}
	}
	for line := range strings.Lines(out) {
		if strings.Contains(line, "--- PASS: TestBeaconHandling/") {
			t.Log("in the namespace:", strings.TrimSpace(line))
		}
	}
}

func singleChild(t *testing.T) {
	lo := mustInterface(t, "lo")
	v1 := mustInterface(t, "v1")
	if lo.Flags&net.FlagMulticast == 0 {
		t.Fatalf("lo has no multicast flag in the test namespace: %v", lo.Flags)
	}

	t.Run("own", func(t *testing.T) {
		n := startNode(t, Options{
			NodeID:   bundle.MustParseEID("dtn://self/"),
			Group:    "239.255.45.56:4701",
			Interval: 50 * time.Millisecond,
			Services: []Service{{ProtocolQUIC, 4556}},
		})
		// Every datagram it hears is its own beacon, looped back.
		for _, ev := range n.received(6) {
			if ev.kind != evOwn {
				t.Errorf("own beacon from %v: %v, want %v", ev.src, ev.kind, evOwn)
			}
		}
		n.stop()
		n.noPeer()
	})

	t.Run("peer", func(t *testing.T) {
		group := netip.MustParseAddrPort("239.255.45.56:4702")
		// Listen only (no services), and a long interval: the only datagrams
		// are the test's, and a report is never due again by time.
		n := startNode(t, Options{NodeID: bundle.MustParseEID("dtn://self/"), Group: group.String(), Interval: time.Hour})
		n.waitEvent(evJoined, lo.Index)
		send := rawSender(t, lo, group, false)
		b := beacon{node: bundle.MustParseEID("dtn://raw/"), boot: 1, interval: time.Second,
			services: []Service{{ProtocolQUIC, 7001}, {ProtocolTCPCL, 7002}}}
		for seq := range uint64(3) {
			b.seq = seq
			send(mustMarshal(t, b))
		}
		want := Peer{NodeID: b.node, Addrs: []Address{{ProtocolQUIC, "10.79.0.1:7001"}, {ProtocolTCPCL, "10.79.0.1:7002"}}}
		if got := n.peer(); !reflect.DeepEqual(got, want) {
			t.Errorf("OnPeer(%+v), want OnPeer(%+v)", got, want)
		}
		evs := n.received(3)
		if kinds := eventKinds(evs); !reflect.DeepEqual(kinds, []eventKind{evReported, evBeacon, evBeacon}) {
			t.Errorf("three beacons from one peer: %v, want it reported once", kinds)
		}
		n.noPeer()
	})

	t.Run("malformed", func(t *testing.T) {
		group := netip.MustParseAddrPort("239.255.45.56:4703")
		n := startNode(t, Options{NodeID: bundle.MustParseEID("dtn://self/"), Group: group.String(), Interval: time.Hour})
		n.waitEvent(evJoined, lo.Index)
		send := rawSender(t, lo, group, false)
		good := beacon{node: bundle.MustParseEID("dtn://good/"), boot: 1, interval: time.Second, services: []Service{{ProtocolQUIC, 7003}}}
		valid := mustMarshal(t, good)
		wrongVersion := wireMap()
		wrongVersion[1] = 2
		wrongVersion[2] = "dtn://v2/"
		notNodeID := wireMap()
		notNodeID[2] = "dtn://x/inbox"
		bad := map[string][]byte{
			"empty":         {},
			"garbage":       []byte("GET / HTTP/1.1\r\n\r\n"),
			"truncated":     valid[:len(valid)-1],
			"wrong version": rawCBOR(t, wrongVersion),
			"not a node ID": rawCBOR(t, notNodeID),
			"huge length":   {0xa1, 0x02, 0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		}
		// Oversized beacons that would be valid but for their size.
		for _, size := range []int{MaxBeaconSize + 1, 1400, 8000} {
			m := wireMap()
			m[2] = fmt.Sprintf("dtn://big%d/", size)
			m[99] = ""
			pad := size - len(rawCBOR(t, m))
			m[99] = strings.Repeat("x", pad)
			if pkt := rawCBOR(t, m); len(pkt) < size {
				t.Fatalf("padding made %d bytes, want %d", len(pkt), size)
			} else {
				bad[fmt.Sprintf("oversized %d", size)] = pkt
			}
		}
		for _, pkt := range bad {
			send(pkt)
		}
		for _, ev := range n.received(len(bad)) {
			if ev.kind != evInvalid {
				t.Errorf("bad datagram: %v, want %v", ev.kind, evInvalid)
			}
		}
		n.noPeer()
		// And the node still works.
		send(valid)
		if p := n.peer(); p.NodeID != good.node {
			t.Errorf("after bad datagrams: OnPeer(%+v), want %v", p, good.node)
		}
	})

	t.Run("interface", func(t *testing.T) {
		group := netip.MustParseAddrPort("239.255.45.56:4704")
		n := startNode(t, Options{NodeID: bundle.MustParseEID("dtn://self/"), Group: group.String(), Interval: time.Hour, Interface: lo})
		n.waitEvent(evJoined, lo.Index)
		// The sender joins on v1 itself, so that the kernel takes the looped-back
		// copy in on v1; the node's socket sees it, but it came in on v1.
		other := beacon{node: bundle.MustParseEID("dtn://other-link/"), boot: 1, interval: time.Second, services: []Service{{ProtocolQUIC, 7004}}}
		rawSender(t, v1, group, true)(mustMarshal(t, other))
		if ev := n.received(1)[0]; ev.kind != evForeign || ev.ifIndex != v1.Index {
			t.Errorf("beacon on v1 (index %d) for a node on lo: %v on %d, want %v", v1.Index, ev.kind, ev.ifIndex, evForeign)
		}
		n.noPeer()
		here := beacon{node: bundle.MustParseEID("dtn://this-link/"), boot: 1, interval: time.Second, services: []Service{{ProtocolQUIC, 7005}}}
		rawSender(t, lo, group, false)(mustMarshal(t, here))
		if p := n.peer(); p.NodeID != here.node {
			t.Errorf("OnPeer(%+v), want %v", p, here.node)
		}
	})

	t.Run("same_host", func(t *testing.T) {
		// Two nodes on one host share the port and hear each other through
		// multicast loopback.
		o := Options{Group: "239.255.45.56:4705", Interval: 100 * time.Millisecond, Interface: lo}
		o.NodeID, o.Services = bundle.MustParseEID("dtn://one/"), []Service{{ProtocolQUIC, 5001}}
		one := startNode(t, o)
		o.NodeID, o.Services = bundle.MustParseEID("ipn:2.0"), []Service{{ProtocolQUIC, 5002}}
		two := startNode(t, o)
		if p, want := one.peer(), (Peer{bundle.IPN(2, 0), []Address{{ProtocolQUIC, "10.79.0.1:5002"}}}); !reflect.DeepEqual(p, want) {
			t.Errorf("one heard %+v, want %+v", p, want)
		}
		if p, want := two.peer(), (Peer{bundle.MustParseEID("dtn://one/"), []Address{{ProtocolQUIC, "10.79.0.1:5001"}}}); !reflect.DeepEqual(p, want) {
			t.Errorf("two heard %+v, want %+v", p, want)
		}
	})
	if !t.Failed() {
		childDone()
	}
}

func mustInterface(t *testing.T, name string) *net.Interface {
	t.Helper()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return ifi
}

// rawSender returns a function that sends a datagram to group out of ifi,
// from a socket of its own; with join, that socket joins the group on ifi.
func rawSender(t *testing.T, ifi *net.Interface, group netip.AddrPort, join bool) func([]byte) {
	t.Helper()
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := ipv4.NewPacketConn(c)
	dst := net.UDPAddrFromAddrPort(group)
	if err := p.SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		t.Fatal(err)
	}
	if join {
		if err := p.JoinGroup(ifi, dst); err != nil {
			t.Fatal(err)
		}
	}
	return func(b []byte) {
		t.Helper()
		if _, err := p.WriteTo(b, nil, dst); err != nil {
			t.Fatalf("sending %d bytes on %s: %v", len(b), ifi.Name, err)
		}
	}
}

func eventKinds(evs []traceEvent) []eventKind {
	var ks []eventKind
	for _, ev := range evs {
		ks = append(ks, ev.kind)
	}
	return ks
}

// TestDisabledOpensNoSocket: turned off, Run opens no socket and returns at
// once, though its context is still live.
func TestDisabledOpensNoSocket(t *testing.T) {
	before := socketFDs(t)
	o := FromConfig(config.Discovery{Enabled: false, Group: "not an address", Interval: 0})
	o.NodeID = bundle.MustParseEID("dtn://off/")
	o.Services = []Service{{ProtocolQUIC, 4556}}
	o.OnPeer = func(p Peer) { t.Errorf("OnPeer(%+v)", p) }
	d, err := New(o)
	if err != nil {
		t.Fatalf("New refused a disabled discovery: %v", err)
	}
	var events atomic.Int64
	d.trace = func(traceEvent) { events.Add(1) }
	done := make(chan error, 1)
	go func() { done <- d.Run(t.Context()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Run of a disabled discovery did not return")
	}
	if n := events.Load(); n != 0 {
		t.Errorf("%d events from a disabled discovery", n)
	}
	for fd := range socketFDs(t) {
		if !before[fd] {
			t.Errorf("a socket was opened: %s", fd)
		}
	}
}

// socketFDs lists this process's open sockets, as fd→inode strings.
func socketFDs(t *testing.T) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("listing open files: %v", err)
	}
	s := make(map[string]bool)
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			s[e.Name()+" "+target] = true
		}
	}
	return s
}

func TestFromConfigDefaults(t *testing.T) {
	c, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	o := FromConfig(c.Discovery)
	if o.Disabled || o.Group != DefaultGroup || o.Interval != DefaultInterval {
		t.Errorf("from the default configuration: %+v; want on, %s, %v", o, DefaultGroup, DefaultInterval)
	}
}

func TestNewRejects(t *testing.T) {
	ok := Options{NodeID: bundle.MustParseEID("dtn://n/"), Services: []Service{{ProtocolQUIC, 4556}}}
	if d, err := New(ok); err != nil {
		t.Fatalf("valid options: %v", err)
	} else if d.group.String() != DefaultGroup || d.opts.Interval != DefaultInterval {
		t.Errorf("defaults: group %v interval %v", d.group, d.opts.Interval)
	}
	if _, err := New(Options{NodeID: ok.NodeID, Group: "[ff02::4d47]:4558"}); err != nil {
		t.Errorf("IPv6 group: %v", err)
	}
	many := make([]Service, MaxServices+1)
	for i := range many {
		many[i] = Service{ProtocolQUIC, 4556 + i}
	}
	for name, change := range map[string]func(*Options){
		"no node ID":         func(o *Options) { o.NodeID = bundle.EID{} },
		"dtn:none":           func(o *Options) { o.NodeID = bundle.None },
		"unicast group":      func(o *Options) { o.Group = "192.0.2.1:4558" },
		"group without port": func(o *Options) { o.Group = "239.255.45.56" },
		"group port 0":       func(o *Options) { o.Group = "239.255.45.56:0" },
		"group name":         func(o *Options) { o.Group = "example.org:4558" },
		"group with zone":    func(o *Options) { o.Group = "[ff02::1%eth0]:4558" },
		"interval too short": func(o *Options) { o.Interval = time.Millisecond },
		"too many services":  func(o *Options) { o.Services = many },
		"bad protocol":       func(o *Options) { o.Services = []Service{{"Quic!", 1}} },
		"port 0":             func(o *Options) { o.Services = []Service{{ProtocolQUIC, 0}} },
		"negative port":      func(o *Options) { o.Services = []Service{{ProtocolQUIC, -1}} },
		"port too big":       func(o *Options) { o.Services = []Service{{ProtocolQUIC, 65536}} },
	} {
		o := ok
		change(&o)
		if _, err := New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
