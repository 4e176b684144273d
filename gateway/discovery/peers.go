package discovery

import (
	"time"

	"github.com/mulegate/mulegate/bundle"
	"golang.org/x/time/rate"
)

// Bounds of the peer table.
const (
	// silenceFactor: a peer is forgotten once it has been silent for this
	// many of its beacon intervals (or of ours, if ours is longer).
	silenceFactor = 3
	// maxPeerInterval caps the interval a peer announces, so that a peer
	// claiming a day is still forgotten within silenceFactor × 10 minutes.
	maxPeerInterval = 10 * time.Minute
	maxPeers        = 1024
	maxPeerAddrs    = 16
	// reportRate and reportBurst bound OnPeer calls across all peers, so a
	// flood of forged beacons cannot start a storm of dials.
	reportRate  = 10 // per second
	reportBurst = 32
)

// Reasons for reporting a peer, as logged.
const (
	reasonNew       = "new"
	reasonRestarted = "restarted"
	reasonNewAddr   = "new address"
)

// table remembers the peers heard recently and decides when one is
// reported. It is not safe for concurrent use.
type table struct {
	ours  time.Duration // this node's interval, also the least time between two reports of one peer
	limit *rate.Limiter
	peers map[bundle.EID]*entry
}

type entry struct {
	boot     uint64
	heard    time.Time     // last beacon
	window   time.Duration // silence after which the peer is forgotten
	reported time.Time
	addrs    map[Address]time.Time // when each address was last heard
}

func newTable(ours time.Duration) *table {
	return &table{
		ours:  ours,
		limit: rate.NewLimiter(reportRate, reportBurst),
		peers: make(map[bundle.EID]*entry),
	}
}

// window is how long a peer with the given interval may be silent before
// it is forgotten.
func (t *table) window(theirs time.Duration) time.Duration {
	return silenceFactor * max(t.ours, min(theirs, maxPeerInterval))
}

// observe records a beacon from b.node heard at now, announcing addrs, and
// returns why the peer should be reported, or "" if it should not. A peer is
// reported when it is new (never heard, or silent for its window), when its
// boot nonce changed (it restarted, so its sessions are gone), or when it
// announces an address not heard within its window. A restart or a new
// address is reported at most once per t.ours; a change that is not reported
// is not recorded either, so the next beacon reports it.
func (t *table) observe(now time.Time, b beacon, addrs []Address) string {
	e := t.peers[b.node]
	if e != nil && now.Sub(e.heard) > e.window {
		delete(t.peers, b.node)
		e = nil
	}
	reason := ""
	switch {
	case e == nil:
		reason = reasonNew
	case e.boot != b.boot:
		reason = reasonRestarted
	default:
		for _, a := range addrs {
			if at, ok := e.addrs[a]; !ok || now.Sub(at) > e.window {
				reason = reasonNewAddr
				break
			}
		}
	}
	if reason != "" && e != nil && now.Sub(e.reported) < t.ours {
		reason = ""
	}
	if reason != "" && !t.limit.AllowN(now, 1) {
		if e == nil {
			return "" // not recorded: the next beacon tries again
		}
		reason = ""
	}
	if e == nil {
		if len(t.peers) >= maxPeers {
			t.evict(now)
		}
		e = &entry{addrs: make(map[Address]time.Time)}
		t.peers[b.node] = e
	}
	e.heard = now
	e.window = t.window(b.interval)
	if reason != "" {
		e.boot = b.boot
		e.reported = now
		for _, a := range addrs {
			e.addrs[a] = now
		}
		e.pruneAddrs(now)
		return reason
	}
	for _, a := range addrs {
		if _, ok := e.addrs[a]; ok {
			e.addrs[a] = now
		}
	}
	return ""
}

// prune forgets the peers silent for longer than their window.
func (t *table) prune(now time.Time) {
	for id, e := range t.peers {
		if now.Sub(e.heard) > e.window {
			delete(t.peers, id)
		}
	}
}

// evict makes room for one more peer: it prunes, and if the table is still
// full it forgets the peer heard least recently.
func (t *table) evict(now time.Time) {
	t.prune(now)
	if len(t.peers) < maxPeers {
		return
	}
	var oldest bundle.EID
	var at time.Time
	for id, e := range t.peers {
		if at.IsZero() || e.heard.Before(at) {
			oldest, at = id, e.heard
		}
	}
	delete(t.peers, oldest)
}

// pruneAddrs forgets the addresses not heard within the window, and the
// oldest beyond maxPeerAddrs.
func (e *entry) pruneAddrs(now time.Time) {
	for a, at := range e.addrs {
		if now.Sub(at) > e.window {
			delete(e.addrs, a)
		}
	}
	for len(e.addrs) > maxPeerAddrs {
		var oldest Address
		var at time.Time
		for a, t := range e.addrs {
			if at.IsZero() || t.Before(at) {
				oldest, at = a, t
			}
		}
		delete(e.addrs, oldest)
	}
}
