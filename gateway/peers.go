package gateway

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/discovery"
	"go.uber.org/zap"
)

// keepDialling keeps a contact with a static peer: it dials, waits for the
// session to end, and dials again, with jittered exponential backoff while
// the peer is out of reach.
func (n *Node) keepDialling(ctx context.Context, peer bundle.EID, addr string) {
	attempt := 0
	for ctx.Err() == nil {
		if c := n.liveContact(peer); c != nil {
			select {
			case <-ctx.Done():
				return
			case <-c.sess.Done():
			}
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, n.cfg.QUIC.HandshakeTimeout+5*time.Second)
		sess, err := n.layer.Dial(dctx, addr, peer)
		cancel()
		if err != nil {
			attempt++
			n.mu.Lock()
			if pi := n.peerInfo[peer]; pi != nil {
				pi.LastError = err.Error()
			}
			n.mu.Unlock()
			delay := n.backoff.Delay(attempt)
			n.log.Debug("peer out of reach", zap.Stringer("peer", peer), zap.String("address", addr), zap.Duration("retry_in", delay), zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		attempt = 0
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
		}
	}
}

// liveContact returns the live contact with peer, if any.
func (n *Node) liveContact(peer bundle.EID) *contact {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.contacts[peer.NodeID()]
}

// AddPeer dials a peer now and keeps redialling it, like a static peer,
// until ctx ends.
func (n *Node) AddPeer(peer bundle.EID, addr string) {
	n.mu.Lock()
	pi := n.peerInfo[peer.NodeID()]
	if pi == nil {
		pi = &peerInfo{Node: peer.NodeID()}
		n.peerInfo[peer.NodeID()] = pi
	}
	pi.Address, pi.Static = addr, true
	n.mu.Unlock()
	ctx := n.background()
	n.goLoop(ctx, "dial "+peer.String(), func(ctx context.Context) { n.keepDialling(ctx, peer.NodeID(), addr) })
}

// startDiscovery announces this node on the LAN and dials the nodes it
// hears, when discovery is on.
func (n *Node) startDiscovery(ctx context.Context) error {
	if !n.cfg.Discovery.Enabled {
		return nil
	}
	opts := discovery.FromConfig(n.cfg.Discovery)
	opts.NodeID = n.id
	opts.Logger = n.log.Named("discovery")
	n.mu.Lock()
	for _, l := range n.listeners {
		if ua, ok := l.Addr().(*net.UDPAddr); ok {
			opts.Services = append(opts.Services, discovery.Service{Protocol: discovery.ProtocolQUIC, Port: ua.Port})
		}
	}
	n.mu.Unlock()
	opts.OnPeer = func(p discovery.Peer) {
		n.goLoop(ctx, "discovered "+p.NodeID.String(), func(ctx context.Context) { n.discovered(ctx, p) })
	}
	d, err := discovery.New(opts)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	n.goLoop(ctx, "discovery", func(ctx context.Context) {
		if err := d.Run(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("discovery stopped", zap.Error(err))
		}
	})
	return nil
}

// discovered dials a node heard on the LAN. Both nodes hear each other, so
// only the one with the lower node ID dials at once; the other dials only if
// no contact has formed after a few beacon intervals (say, when the lower
// one cannot reach it), so that one pair does not make two sessions.
func (n *Node) discovered(ctx context.Context, p discovery.Peer) {
	peer := p.NodeID.NodeID()
	var addr string
	for _, a := range p.Addrs {
		if a.Protocol == discovery.ProtocolQUIC {
			addr = a.HostPort
			break
		}
	}
	if addr == "" || peer.SameNode(n.id) {
		return
	}
	n.mu.Lock()
	pi := n.peerInfo[peer]
	if pi == nil {
		pi = &peerInfo{Node: peer}
		n.peerInfo[peer] = pi
	}
	pi.Discovered = n.now()
	if pi.Address == "" || !pi.Static {
		pi.Address = addr
	}
	n.mu.Unlock()
	if n.id.String() > peer.String() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * n.cfg.Discovery.Interval):
		}
	}
	if n.liveContact(peer) != nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, n.cfg.QUIC.HandshakeTimeout+5*time.Second)
	defer cancel()
	if _, err := n.layer.Dial(dctx, addr, peer); err != nil {
		n.log.Debug("dialling a discovered peer", zap.Stringer("peer", peer), zap.String("address", addr), zap.Error(err))
		n.mu.Lock()
		pi.LastError = err.Error()
		n.mu.Unlock()
	}
}
