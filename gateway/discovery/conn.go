package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// mconn is a UDP socket bound to the group's port, for one address family.
type mconn interface {
	// join makes the socket a member of the group on ifi. Joining on an
	// interface the socket is already a member on succeeds.
	join(ifi *net.Interface) error
	// send sends b to the group out of ifi.
	send(ifi *net.Interface, b []byte) error
	// recv reads one datagram into b. It reports its source, the interface it
	// came in on (0 if unknown) and its destination (invalid if unknown).
	recv(b []byte) (n int, p packetInfo, err error)
	close() error
}

type packetInfo struct {
	src     netip.AddrPort
	ifIndex int
	dst     netip.Addr
}

// listen opens the socket for group. The socket is bound to the wildcard
// address and the group's port with address reuse (what net does for a
// multicast address), so that several nodes on one host can share the port,
// and it loops its own multicast back, so that they hear each other.
// Beacons go no further than the link: TTL (IPv4) or hop limit (IPv6) 1.
func listen(ctx context.Context, group netip.AddrPort) (mconn, error) {
	network := "udp4"
	if group.Addr().Is6() {
		network = "udp6"
	}
	var lc net.ListenConfig
	c, err := lc.ListenPacket(ctx, network, group.String())
	if err != nil {
		return nil, err
	}
	udp := net.UDPAddrFromAddrPort(group)
	var m mconn
	if network == "udp4" {
		m, err = newConn4(c, udp)
	} else {
		m, err = newConn6(c, udp)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", group, err)
	}
	return m, nil
}

// alreadyJoined reports whether a join failed only because the socket is a
// member already.
func alreadyJoined(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

type conn4 struct {
	c     net.PacketConn
	p     *ipv4.PacketConn
	group *net.UDPAddr
}

func newConn4(c net.PacketConn, group *net.UDPAddr) (*conn4, error) {
	p := ipv4.NewPacketConn(c)
	if err := p.SetMulticastTTL(1); err != nil {
		return nil, fmt.Errorf("multicast TTL: %w", err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		return nil, fmt.Errorf("multicast loopback: %w", err)
	}
	// Not every system can report the interface and destination; where it
	// cannot, packets are taken as they come.
	_ = p.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true)
	return &conn4{c: c, p: p, group: group}, nil
}

func (c *conn4) join(ifi *net.Interface) error {
	if err := c.p.JoinGroup(ifi, c.group); err != nil && !alreadyJoined(err) {
		return err
	}
	return nil
}

func (c *conn4) send(ifi *net.Interface, b []byte) error {
	if err := c.p.SetMulticastInterface(ifi); err != nil {
		return err
	}
	_, err := c.p.WriteTo(b, nil, c.group)
	return err
}

func (c *conn4) recv(b []byte) (int, packetInfo, error) {
	n, cm, src, err := c.p.ReadFrom(b)
	if err != nil {
		return 0, packetInfo{}, err
	}
	var p packetInfo
	if ua, ok := src.(*net.UDPAddr); ok {
		p.src = ua.AddrPort()
	}
	if cm != nil {
		p.ifIndex = cm.IfIndex
		p.dst, _ = netip.AddrFromSlice(cm.Dst)
	}
	return n, p, nil
}

func (c *conn4) close() error { return c.c.Close() }

type conn6 struct {
	c     net.PacketConn
	p     *ipv6.PacketConn
	group *net.UDPAddr
}

func newConn6(c net.PacketConn, group *net.UDPAddr) (*conn6, error) {
	p := ipv6.NewPacketConn(c)
	if err := p.SetMulticastHopLimit(1); err != nil {
		return nil, fmt.Errorf("multicast hop limit: %w", err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		return nil, fmt.Errorf("multicast loopback: %w", err)
	}
	_ = p.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true)
	return &conn6{c: c, p: p, group: group}, nil
}

func (c *conn6) join(ifi *net.Interface) error {
	if err := c.p.JoinGroup(ifi, c.group); err != nil && !alreadyJoined(err) {
		return err
	}
	return nil
}

func (c *conn6) send(ifi *net.Interface, b []byte) error {
	if err := c.p.SetMulticastInterface(ifi); err != nil {
		return err
	}
	_, err := c.p.WriteTo(b, nil, c.group)
	return err
}

func (c *conn6) recv(b []byte) (int, packetInfo, error) {
	n, cm, src, err := c.p.ReadFrom(b)
	if err != nil {
		return 0, packetInfo{}, err
	}
	var p packetInfo
	if ua, ok := src.(*net.UDPAddr); ok {
		p.src = ua.AddrPort()
	}
	if cm != nil {
		p.ifIndex = cm.IfIndex
		p.dst, _ = netip.AddrFromSlice(cm.Dst)
	}
	return n, p, nil
}

func (c *conn6) close() error { return c.c.Close() }
