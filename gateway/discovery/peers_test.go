package discovery

import (
	"fmt"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// These tests drive the peer table with explicit times; the multicast tests
// exercise it through real sockets.

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func peerBeacon(node string, boot uint64, interval time.Duration) beacon {
	return beacon{node: bundle.MustParseEID(node), boot: boot, interval: interval, services: []Service{{"quic", 4556}}}
}

func addr(hp string) []Address { return []Address{{"quic", hp}} }

func TestTableReportsOnceWhileHeard(t *testing.T) {
	tb := newTable(time.Second)
	b := peerBeacon("dtn://a/", 1, time.Second)
	if r := tb.observe(t0, b, addr("10.0.0.1:4556")); r != reasonNew {
		t.Fatalf("first beacon: %q, want %q", r, reasonNew)
	}
	// A beacon every interval for an hour, with the same address: no report.
	for i := 1; i <= 3600; i++ {
		if r := tb.observe(t0.Add(time.Duration(i)*time.Second), b, addr("10.0.0.1:4556")); r != "" {
			t.Fatalf("beacon %d reported (%q)", i, r)
		}
	}
}

func TestTableReportsAgainAfterSilence(t *testing.T) {
	tb := newTable(time.Second)
	b := peerBeacon("dtn://a/", 1, time.Second)
	tb.observe(t0, b, addr("10.0.0.1:4556"))
	// Silent for exactly three intervals: still known.
	if r := tb.observe(t0.Add(3*time.Second), b, addr("10.0.0.1:4556")); r != "" {
		t.Errorf("after 3 intervals: %q", r)
	}
	// Silent for more than three: new again.
	if r := tb.observe(t0.Add(6*time.Second+time.Millisecond), b, addr("10.0.0.1:4556")); r != reasonNew {
		t.Errorf("after more than 3 intervals of silence: %q, want %q", r, reasonNew)
	}
}

func TestTableUsesTheLongerInterval(t *testing.T) {
	tb := newTable(time.Second)
	slow := peerBeacon("dtn://slow/", 1, 30*time.Second)
	tb.observe(t0, slow, addr("10.0.0.2:4556"))
	// A peer that beacons every 30 s is not new at each beacon.
	for i := 1; i <= 10; i++ {
		if r := tb.observe(t0.Add(time.Duration(i)*30*time.Second), slow, addr("10.0.0.2:4556")); r != "" {
			t.Fatalf("slow peer's beacon %d reported (%q)", i, r)
		}
	}
	// A peer announcing a day is forgotten after 3 × maxPeerInterval.
	lazy := peerBeacon("dtn://lazy/", 1, 24*time.Hour)
	tb.observe(t0, lazy, addr("10.0.0.3:4556"))
	if r := tb.observe(t0.Add(3*maxPeerInterval+time.Second), lazy, addr("10.0.0.3:4556")); r != reasonNew {
		t.Errorf("lazy peer after 3 × %v: %q, want %q", maxPeerInterval, r, reasonNew)
	}
}

func TestTableRestartAndNewAddress(t *testing.T) {
	tb := newTable(time.Second)
	tb.observe(t0, peerBeacon("dtn://a/", 1, time.Second), addr("10.0.0.1:4556"))

	// A new boot within the floor is held back, and not recorded...
	if r := tb.observe(t0.Add(500*time.Millisecond), peerBeacon("dtn://a/", 2, time.Second), addr("10.0.0.1:4556")); r != "" {
		t.Errorf("restart within the floor: %q", r)
	}
	// ...so the next beacon reports it.
	if r := tb.observe(t0.Add(time.Second), peerBeacon("dtn://a/", 2, time.Second), addr("10.0.0.1:4556")); r != reasonRestarted {
		t.Errorf("restart: %q, want %q", r, reasonRestarted)
	}
	if r := tb.observe(t0.Add(2*time.Second), peerBeacon("dtn://a/", 2, time.Second), addr("10.0.0.1:4556")); r != "" {
		t.Errorf("after the restart was reported: %q", r)
	}
	// A second address (another interface of the peer) is reported once;
	// then beacons from both keep both known.
	if r := tb.observe(t0.Add(3*time.Second), peerBeacon("dtn://a/", 2, time.Second), addr("192.168.1.5:4556")); r != reasonNewAddr {
		t.Errorf("new address: %q, want %q", r, reasonNewAddr)
	}
	for i := 4; i < 100; i++ {
		a := "10.0.0.1:4556"
		if i%2 == 0 {
			a = "192.168.1.5:4556"
		}
		if r := tb.observe(t0.Add(time.Duration(i)*time.Second), peerBeacon("dtn://a/", 2, time.Second), addr(a)); r != "" {
			t.Fatalf("beacon %d from %s: %q", i, a, r)
		}
	}
}

func TestTableRateLimit(t *testing.T) {
	tb := newTable(time.Second)
	reported := 0
	// A flood of forged node IDs, all at one instant.
	for i := range 1000 {
		if tb.observe(t0, peerBeacon(fmt.Sprintf("dtn://forged%d/", i), 1, time.Second), addr("10.0.0.9:4556")) != "" {
			reported++
		}
	}
	if reported != reportBurst {
		t.Errorf("%d reported at once, want the burst %d", reported, reportBurst)
	}
	// A peer held back is reported by its next beacon, once the limit allows.
	late := peerBeacon("dtn://late/", 1, time.Second)
	if r := tb.observe(t0, late, addr("10.0.0.10:4556")); r != "" {
		t.Errorf("over the limit: %q", r)
	}
	if r := tb.observe(t0.Add(time.Second), late, addr("10.0.0.10:4556")); r != reasonNew {
		t.Errorf("next beacon: %q, want %q", r, reasonNew)
	}
	if len(tb.peers) > maxPeers {
		t.Errorf("%d peers in the table", len(tb.peers))
	}
}

func TestTableBounded(t *testing.T) {
	tb := newTable(time.Second)
	now := t0
	for i := range maxPeers + 100 {
		now = now.Add(time.Second / reportRate) // under the rate limit
		tb.observe(now, peerBeacon(fmt.Sprintf("dtn://n%d/", i), 1, time.Hour), addr("10.0.0.1:4556"))
	}
	if len(tb.peers) != maxPeers {
		t.Errorf("%d peers, want the cap %d", len(tb.peers), maxPeers)
	}
	if _, ok := tb.peers[bundle.MustParseEID(fmt.Sprintf("dtn://n%d/", maxPeers+99))]; !ok {
		t.Error("the newest peer was evicted")
	}
	tb.prune(now.Add(4 * maxPeerInterval))
	if len(tb.peers) != 0 {
		t.Errorf("%d peers after everyone fell silent", len(tb.peers))
	}
}
