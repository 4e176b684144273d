package gateway

import (
	"context"
	"time"

	"github.com/mulegate/mulegate/bundle"
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
