// Package routing holds the decisions a node makes when it meets peers: which
// peers to talk to (ring selection), which bundles to offer each of them (the
// strategy: epidemic or spray-and-wait), and which peers have been failing.
// It keeps no bundles and does no I/O; the node asks it and acts.
package routing

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// Candidate is what a strategy knows about a bundle it may forward.
type Candidate struct {
	ID          bundle.ID
	Destination bundle.EID
	// Copies is how many copies this node is responsible for
	// (spray-and-wait); 0 means the strategy does not count copies.
	Copies uint64
}

// Decision says whether to send a bundle to a peer, and for strategies that
// count copies, how many copies go with it and how many this node keeps.
type Decision struct {
	Send        bool
	PeerCopies  uint64
	KeepCopies  uint64
	CountCopies bool
}

// Strategy decides which bundles to offer a peer. The node has already
// excluded what the strategy need not think about: bundles the peer holds,
// bundles that came from that peer, bundles over their hop limit or
// expired. Implementations must be safe for concurrent use.
type Strategy interface {
	// Name is the strategy's configuration name.
	Name() string
	// InitialCopies is the copy count a bundle gets when it enters the
	// network at its source node (0 when the strategy does not count).
	InitialCopies() uint64
	// Decide is called for a bundle this node holds and a peer that lacks
	// it.
	Decide(c Candidate, peer bundle.EID) Decision
}

// New returns the strategy named in the configuration.
func New(name string, sprayCopies int) (Strategy, error) {
	switch name {
	case "epidemic":
		return Epidemic{}, nil
	case "spray-and-wait":
		if sprayCopies < 1 {
			return nil, fmt.Errorf("spray-and-wait needs at least 1 copy, got %d", sprayCopies)
		}
		return SprayAndWait{Copies: uint64(sprayCopies)}, nil
	}
	return nil, fmt.Errorf("unknown routing strategy %q: use epidemic or spray-and-wait", name)
}

// Epidemic offers every bundle to every peer that lacks it (Vahdat and
// Becker, 2000). It maximises delivery ratio and minimises latency at the
// cost of copies.
type Epidemic struct{}

func (Epidemic) Name() string          { return "epidemic" }
func (Epidemic) InitialCopies() uint64 { return 0 }
func (Epidemic) Decide(Candidate, bundle.EID) Decision {
	return Decision{Send: true}
}

// SprayAndWait is binary spray-and-wait (Spyropoulos et al., 2005): a
// bundle starts with Copies copies; a node holding n > 1 copies hands
// floor(n/2) to a peer that has none and keeps the rest; a node holding one
// copy waits to meet the destination itself.
type SprayAndWait struct{ Copies uint64 }

func (SprayAndWait) Name() string            { return "spray-and-wait" }
func (s SprayAndWait) InitialCopies() uint64 { return s.Copies }
func (SprayAndWait) Decide(c Candidate, peer bundle.EID) Decision {
	n := max(c.Copies, 1)
	if peer.SameNode(c.Destination) {
		return Decision{Send: true, PeerCopies: 1, KeepCopies: n, CountCopies: true}
	}
	if n <= 1 {
		return Decision{}
	}
	give := n / 2
	return Decision{Send: true, PeerCopies: give, KeepCopies: n - give, CountCopies: true}
}

// ringPosition places a node on the ring by a hash of its node ID, so that
// every node computes the same ring.
func ringPosition(id bundle.EID) uint64 {
	sum := sha256.Sum256([]byte(id.NodeID().String()))
	return binary.BigEndian.Uint64(sum[:8])
}

// SelectPeers picks the peers this node talks to when it knows more than
// limit of them: all nodes (self included) are ordered on a ring by a hash of
// their node IDs, and the peers at distances 2^0, 2^1, …, 2^(limit-1) after
// this node are chosen, skipping bad peers by moving on to the next good one.
// With limit <= 0, or no more peers than limit, every good peer is chosen.
// The result is in ring order from self.
func SelectPeers(self bundle.EID, peers []bundle.EID, limit int, bad func(bundle.EID) bool) []bundle.EID {
	if bad == nil {
		bad = func(bundle.EID) bool { return false }
	}
	var good []bundle.EID
	for _, p := range peers {
		if !p.SameNode(self) && !bad(p) {
			good = append(good, p)
		}
	}
	if limit <= 0 || len(good) <= limit {
		return good
	}
	type placed struct {
		id  bundle.EID
		pos uint64
	}
	placedRing := make([]placed, 0, len(good)+1)
	for _, p := range append(slices.Clone(good), self) {
		placedRing = append(placedRing, placed{p, ringPosition(p)})
	}
	slices.SortFunc(placedRing, func(a, b placed) int {
		switch {
		case a.pos < b.pos:
			return -1
		case a.pos > b.pos:
			return 1
		}
		return 0
	})
	ring := make([]bundle.EID, len(placedRing))
	for i, p := range placedRing {
		ring[i] = p.id
	}
	me := slices.IndexFunc(ring, func(e bundle.EID) bool { return e.SameNode(self) })
	n := len(ring)
	var out []bundle.EID
	chosen := map[bundle.EID]bool{}
	for k := 0; k < limit; k++ {
		dist := 1 << k
		// Walk forward from the target distance to the first peer not yet
		// chosen, so that collisions on small rings still yield limit peers.
		for step := 0; step < n; step++ {
			p := ring[(me+dist+step)%n]
			if !p.SameNode(self) && !chosen[p] {
				chosen[p] = true
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// ErrorTracker remembers recent errors per peer, so that peers with many
// errors in the last window are skipped, as the Vanadium messenger did.
type ErrorTracker struct {
	Window    time.Duration // how far back errors count (1h)
	Threshold int           // errors within Window that make a peer bad
	mu        sync.Mutex
	errs      map[bundle.EID][]time.Time
}

// NewErrorTracker returns a tracker with the usual window of one hour.
func NewErrorTracker(threshold int) *ErrorTracker {
	return &ErrorTracker{Window: time.Hour, Threshold: threshold, errs: map[bundle.EID][]time.Time{}}
}

// Record notes an error with peer at now.
func (t *ErrorTracker) Record(peer bundle.EID, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs[peer.NodeID()] = append(t.prune(peer.NodeID(), now), now)
}

// Reset forgets a peer's errors, after a success.
func (t *ErrorTracker) Reset(peer bundle.EID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.errs, peer.NodeID())
}

// Bad reports whether peer had at least Threshold errors within Window
// before now.
func (t *ErrorTracker) Bad(peer bundle.EID, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.prune(peer.NodeID(), now)) >= t.Threshold
}

// Count is the number of recent errors for peer.
func (t *ErrorTracker) Count(peer bundle.EID, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.prune(peer.NodeID(), now))
}

func (t *ErrorTracker) prune(peer bundle.EID, now time.Time) []time.Time {
	list := t.errs[peer]
	cut := 0
	for cut < len(list) && now.Sub(list[cut]) > t.Window {
		cut++
	}
	list = list[cut:]
	if len(list) == 0 {
		delete(t.errs, peer)
		return nil
	}
	t.errs[peer] = list
	return list
}
