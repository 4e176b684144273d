package discovery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"go.uber.org/zap"
)

// Defaults, the same as the configuration's.
const (
	DefaultGroup    = "239.255.45.56:4558"
	DefaultInterval = 5 * time.Second
	// MinInterval is the shortest beacon interval New accepts.
	MinInterval = 10 * time.Millisecond
)

// Convergence-layer protocol names as announced in beacons.
const (
	ProtocolQUIC  = "quic"
	ProtocolTCPCL = "tcpcl"
	ProtocolMTCP  = "mtcp"
)

// Service is one convergence layer this node listens on.
type Service struct {
	Protocol string // ProtocolQUIC, ProtocolTCPCL, ProtocolMTCP, or another name of 1 to 16 of a-z, 0-9, '-'
	Port     int
}

// Address is where a peer can be dialled with one protocol.
type Address struct {
	Protocol string
	// HostPort is the beacon's source IP address with the announced port,
	// ready for net.Dial or the convergence layer's Dial: "192.0.2.7:4556",
	// or "[fe80::1%wlan0]:4556" with the zone of the interface the beacon
	// came in on.
	HostPort string
}

// Peer is a node heard on the LAN.
type Peer struct {
	// NodeID is the node ID the beacon claims. It is a hint, not a fact:
	// dial expecting it, and the handshake checks it.
	NodeID bundle.EID
	// Addrs has one address for each service the beacon announced, in the
	// order announced.
	Addrs []Address
}

// Options configure discovery.
type Options struct {
	// Disabled turns discovery off: Run opens no socket and returns nil at
	// once. The zero value is on, as in the configuration's defaults.
	Disabled bool
	// NodeID is this node; it is announced, and beacons carrying it are this
	// node's own and are ignored. Required.
	NodeID bundle.EID
	// Group is the multicast group and port, host:port: DefaultGroup if
	// empty. Its address family is the one discovery uses: an IPv4 group
	// such as 239.255.45.56:4558, or an IPv6 one such as [ff02::4d47]:4558
	// (link-local scope).
	Group string
	// Interval is the time between beacons, jittered by ±25%:
	// DefaultInterval if zero.
	Interval time.Duration
	// Services are announced in every beacon, at most MaxServices. With none,
	// the node sends no beacons and only listens.
	Services []Service
	// OnPeer is called when a peer is heard for the first time, heard again
	// after being silent for three beacon intervals (its own, or ours if
	// longer), restarted (its boot nonce changed), or announces an address
	// not heard recently. It is not called for every beacon, never more than
	// once per Interval for one peer, and at most 10 times a second overall.
	// Calls come one at a time from Run's receiving goroutine; OnPeer must
	// not block (start the dial in its own goroutine). Nil: only announce.
	OnPeer func(Peer)
	// Logger gets what discovery does: info for joining the group on an
	// interface and for each peer reported, debug for ignored packets.
	// Nil: no logs.
	Logger *zap.Logger
	// Interface restricts discovery to one interface: beacons are sent and
	// heard there only. Nil: every interface that is up and multicast-capable,
	// rescanned each interval, so an interface that comes up later (a mule
	// joining a Wi-Fi) is used from then on. The interface is found again by
	// name each interval, so it may also come and go.
	Interface *net.Interface
}

// FromConfig returns the Options that the configuration sets (Disabled,
// Group, Interval); the caller fills in the rest.
func FromConfig(c config.Discovery) Options {
	return Options{Disabled: !c.Enabled, Group: c.Group, Interval: c.Interval}
}

// Discovery announces this node on the LAN and listens for other nodes.
type Discovery struct {
	opts    Options
	log     *zap.Logger
	node    bundle.EID
	group   netip.AddrPort
	ifName  string // Options.Interface's name, or ""
	running atomic.Bool

	mu    sync.Mutex
	peers *table

	ifIndex atomic.Int64 // the index of Options.Interface as last found, or 0

	// trace, set by tests before Run, sees every event.
	trace func(traceEvent)
}

// New checks o and returns a Discovery ready to Run. It opens no socket.
// When o.Disabled, only o.NodeID is checked.
func New(o Options) (*Discovery, error) {
	if o.NodeID.IsZero() || !o.NodeID.NodeID().IsNodeID() {
		return nil, fmt.Errorf("discovery: node ID %q is not a node ID", o.NodeID)
	}
	d := &Discovery{opts: o, log: o.Logger, node: o.NodeID.NodeID()}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	d.log = d.log.Named("discovery")
	if o.Disabled {
		return d, nil
	}
	if d.opts.Group == "" {
		d.opts.Group = DefaultGroup
	}
	if d.opts.Interval == 0 {
		d.opts.Interval = DefaultInterval
	}
	if d.opts.Interval < MinInterval {
		return nil, fmt.Errorf("discovery: interval %v is shorter than %v", d.opts.Interval, MinInterval)
	}
	g, err := parseGroup(d.opts.Group)
	if err != nil {
		return nil, err
	}
	d.group = g
	if len(o.Services) > MaxServices {
		return nil, fmt.Errorf("discovery: %d services, at most %d", len(o.Services), MaxServices)
	}
	for _, s := range o.Services {
		if s.Port < 0 {
			return nil, fmt.Errorf("discovery: %s port %d", s.Protocol, s.Port)
		}
		if err := checkService(s.Protocol, uint64(s.Port)); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
	}
	if len(o.Services) > 0 {
		// Encode once so that a beacon too big to send fails here.
		if _, err := d.beacon(0, 0).marshal(); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
	}
	if o.Interface != nil {
		d.ifName = o.Interface.Name
	}
	d.peers = newTable(d.opts.Interval)
	return d, nil
}

func parseGroup(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("discovery: group %q: want a multicast host:port: %v", s, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("discovery: group %q: want a multicast IP address: %v", s, err)
	}
	ip = ip.Unmap()
	if !ip.IsMulticast() || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("discovery: group %q: %s is not a multicast address", s, ip)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("discovery: group %q: bad port %q", s, port)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

func (d *Discovery) beacon(boot, seq uint64) beacon {
	return beacon{node: d.node, boot: boot, seq: seq, interval: d.opts.Interval, services: d.opts.Services}
}

// Run announces and listens until ctx is done, then closes its socket and
// returns nil. It returns an error if the socket cannot be opened or fails.
// Having no usable interface is not an error: Run waits for one. Run may be
// called once.
func (d *Discovery) Run(ctx context.Context) error {
	if d.opts.Disabled {
		d.log.Info("LAN discovery off")
		return nil
	}
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("discovery: Run called twice")
	}
	c, err := listen(ctx, d.group)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	ifName := d.ifName
	if ifName == "" {
		ifName = "all"
	}
	d.log.Info("LAN discovery on", zap.Stringer("group", d.group), zap.Duration("interval", d.opts.Interval),
		zap.Stringer("node", d.node), zap.String("interface", ifName))

	readErr := make(chan error, 1)
	go func() { readErr <- d.receive(c) }()

	s := sender{d: d, c: c, boot: nonzeroRand(), joined: make(map[int]bool), failed: make(map[int]string)}
	timer := time.NewTimer(0) // the first beacon goes at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			c.close()
			if err := <-readErr; err != nil {
				return fmt.Errorf("discovery: %w", err)
			}
			return nil
		case err := <-readErr:
			c.close()
			return fmt.Errorf("discovery: %w", err)
		case now := <-timer.C:
			s.tick()
			d.mu.Lock()
			d.peers.prune(now)
			d.mu.Unlock()
			timer.Reset(jitter(d.opts.Interval))
		}
	}
}

// jitter returns a duration uniformly in [¾ iv, 1¼ iv).
func jitter(iv time.Duration) time.Duration {
	return iv*3/4 + rand.N(iv/2)
}

func nonzeroRand() uint64 {
	for {
		if n := rand.Uint64(); n != 0 {
			return n
		}
	}
}

// sender is the state of Run's sending side.
type sender struct {
	d      *Discovery
	c      mconn
	boot   uint64
	seq    uint64
	joined map[int]bool   // interfaces the socket is a member on, by index
	failed map[int]string // the last error logged for an interface, so it is logged once
}

// tick rescans the interfaces, joins the group on new ones, and sends one
// beacon on each that has an address of the group's family.
func (s *sender) tick() {
	d := s.d
	ifs := d.interfaces()
	present := make(map[int]bool, len(ifs))
	for i := range ifs {
		ifi := &ifs[i]
		present[ifi.Index] = true
		if s.joined[ifi.Index] {
			continue
		}
		if err := s.c.join(ifi); err != nil {
			s.fail(ifi, "join", err)
			continue
		}
		s.joined[ifi.Index] = true
		delete(s.failed, ifi.Index)
		d.log.Info("joined group", zap.String("interface", ifi.Name), zap.Stringer("group", d.group.Addr()))
		d.emit(traceEvent{kind: evJoined, ifIndex: ifi.Index})
	}
	for idx := range s.joined {
		if !present[idx] {
			delete(s.joined, idx) // down or gone; join again when it is back
		}
	}
	if len(d.opts.Services) == 0 {
		return
	}
	pkt, err := d.beacon(s.boot, s.seq).marshal()
	if err != nil { // New checked this
		d.log.Error("encoding beacon", zap.Error(err))
		return
	}
	s.seq++
	for i := range ifs {
		ifi := &ifs[i]
		if !s.joined[ifi.Index] || !hasAddr(ifi, d.group.Addr().Is4()) {
			continue
		}
		if err := s.c.send(ifi, pkt); err != nil {
			s.fail(ifi, "send", err)
			continue
		}
		if s.failed[ifi.Index] != "" {
			delete(s.failed, ifi.Index)
		}
		d.emit(traceEvent{kind: evSent, ifIndex: ifi.Index})
	}
}

// fail logs an interface's error once, until it changes or clears.
func (s *sender) fail(ifi *net.Interface, op string, err error) {
	msg := op + ": " + err.Error()
	if s.failed[ifi.Index] == msg {
		return
	}
	s.failed[ifi.Index] = msg
	s.d.log.Warn("interface unusable for discovery", zap.String("interface", ifi.Name), zap.String("op", op), zap.Error(err))
}

// interfaces returns the interfaces to use now: Options.Interface, found
// again by name, or every interface that is up and multicast-capable. Either
// way an interface must be up and multicast-capable.
func (d *Discovery) interfaces() []net.Interface {
	var ifs []net.Interface
	if d.ifName != "" {
		ifi, err := net.InterfaceByName(d.ifName)
		if err != nil {
			d.ifIndex.Store(0)
			return nil
		}
		d.ifIndex.Store(int64(ifi.Index))
		ifs = []net.Interface{*ifi}
	} else {
		var err error
		if ifs, err = net.Interfaces(); err != nil {
			d.log.Warn("listing interfaces", zap.Error(err))
			return nil
		}
	}
	usable := ifs[:0]
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			usable = append(usable, ifi)
		}
	}
	return usable
}

// hasAddr reports whether ifi has an address of the family, without which
// the kernel has no source address for a beacon.
func hasAddr(ifi *net.Interface, v4 bool) bool {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if ok && (ipn.IP.To4() != nil) == v4 {
			return true
		}
	}
	return false
}

// receive reads beacons until the socket is closed.
func (d *Discovery) receive(c mconn) error {
	buf := make([]byte, MaxBeaconSize+1) // one more, to see a datagram that is too big
	for {
		n, info, err := c.recv(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		d.handle(time.Now(), buf[:n], info)
	}
}

// handle deals with one datagram.
func (d *Discovery) handle(now time.Time, pkt []byte, info packetInfo) {
	ev := traceEvent{ifIndex: info.ifIndex, src: info.src}
	defer func() { d.emit(ev) }()
	src := info.src.Addr().Unmap()
	switch {
	case len(pkt) > MaxBeaconSize:
		ev.kind = evInvalid
		d.log.Debug("ignoring oversized datagram", zap.Stringer("from", info.src))
		return
	case info.dst.IsValid() && info.dst.Unmap() != d.group.Addr():
		ev.kind = evForeign // sent to another group or unicast to our port
		return
	case d.ifName != "" && info.ifIndex != 0 && int64(info.ifIndex) != d.ifIndex.Load():
		ev.kind = evForeign // heard on another interface
		return
	case !src.IsValid() || src.IsUnspecified() || src.IsMulticast():
		ev.kind = evInvalid
		d.log.Debug("ignoring datagram from a bad source", zap.Stringer("from", info.src))
		return
	}
	b, err := parseBeacon(pkt)
	if err != nil {
		ev.kind = evInvalid
		d.log.Debug("ignoring datagram", zap.Stringer("from", info.src), zap.Error(err))
		return
	}
	if b.node == d.node {
		ev.kind = evOwn
		return
	}
	ev.kind = evBeacon
	if src.Is6() && src.IsLinkLocalUnicast() && src.Zone() == "" && info.ifIndex != 0 {
		src = src.WithZone(zoneName(info.ifIndex))
	}
	addrs := make([]Address, len(b.services))
	for i, s := range b.services {
		addrs[i] = Address{Protocol: s.Protocol, HostPort: netip.AddrPortFrom(src, uint16(s.Port)).String()}
	}
	d.mu.Lock()
	reason := d.peers.observe(now, b, addrs)
	d.mu.Unlock()
	if reason == "" {
		return
	}
	ev.kind = evReported
	d.log.Info("peer heard", zap.Stringer("node", b.node), zap.String("why", reason),
		zap.Any("addrs", addrs), zap.Uint64("seq", b.seq))
	if d.opts.OnPeer != nil {
		d.opts.OnPeer(Peer{NodeID: b.node, Addrs: addrs})
	}
}

func zoneName(index int) string {
	if ifi, err := net.InterfaceByIndex(index); err == nil {
		return ifi.Name
	}
	return strconv.Itoa(index)
}

// traceEvent is what tests see of Run.
type traceEvent struct {
	kind    eventKind
	ifIndex int
	src     netip.AddrPort
}

type eventKind int

const (
	evJoined   eventKind = iota + 1 // joined the group on ifIndex
	evSent                          // sent a beacon on ifIndex
	evInvalid                       // a datagram was dropped: too big, malformed, unknown version, bad source
	evForeign                       // a datagram for another group or from another interface was dropped
	evOwn                           // this node's own beacon was dropped
	evBeacon                        // a peer's beacon, not reported
	evReported                      // a peer's beacon, reported
)

func (k eventKind) String() string {
	return [...]string{"?", "joined", "sent", "invalid", "foreign", "own", "beacon", "reported"}[k]
}

func (d *Discovery) emit(ev traceEvent) {
	if d.trace != nil {
		d.trace(ev)
	}
}
