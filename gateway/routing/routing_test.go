package routing

import (
	"fmt"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func nodes(n int) []bundle.EID {
	out := make([]bundle.EID, n)
	for i := range out {
		out[i] = bundle.MustParseEID(fmt.Sprintf("dtn://n%02d/", i))
	}
	return out
}

func TestSelectPeersRing(t *testing.T) {
	all := nodes(32)
	// Every node picks L = 2 peers; following those choices from any node
	// must reach every other node (the ring makes the graph connected).
	const L = 2
	next := map[bundle.EID][]bundle.EID{}
	for _, self := range all {
		got := SelectPeers(self, all, L, nil)
		if len(got) != L {
			t.Fatalf("%s selected %d peers, want %d", self, len(got), L)
		}
		again := SelectPeers(self, all, L, nil)
		if fmt.Sprint(got) != fmt.Sprint(again) {
			t.Fatalf("selection is not deterministic: %v vs %v", got, again)
		}
		next[self] = got
	}
	for _, start := range all {
		seen := map[bundle.EID]bool{start: true}
		queue := []bundle.EID{start}
		for len(queue) > 0 {
			n := queue[0]
			queue = queue[1:]
			for _, p := range next[n] {
				if !seen[p] {
					seen[p] = true
					queue = append(queue, p)
				}
			}
		}
		if len(seen) != len(all) {
			t.Fatalf("from %s only %d of %d nodes are reachable", start, len(seen), len(all))
		}
	}
}

func TestSelectPeersSkipsBadAndSmallSets(t *testing.T) {
	all := nodes(10)
	self := all[0]
	if got := SelectPeers(self, all[:3], 4, nil); len(got) != 2 {
		t.Fatalf("with fewer peers than the limit, want all 2 peers, got %v", got)
	}
	if got := SelectPeers(self, all, 0, nil); len(got) != 9 {
		t.Fatalf("limit 0 means every peer, got %d", len(got))
	}
	chosen := SelectPeers(self, all, 3, nil)
	bad := chosen[0]
	got := SelectPeers(self, all, 3, func(e bundle.EID) bool { return e == bad })
	if len(got) != 3 {
		t.Fatalf("got %d peers", len(got))
	}
	for _, p := range got {
		if p == bad || p == self {
			t.Fatalf("selected %s", p)
		}
	}
}

func TestSprayAndWait(t *testing.T) {
	s := SprayAndWait{Copies: 8}
	dst := bundle.MustParseEID("dtn://dst/app")
	other := bundle.MustParseEID("dtn://relay/")
	tests := []struct {
		copies     uint64
		peer       bundle.EID
		send       bool
		give, keep uint64
	}{
		{8, other, true, 4, 4},
		{5, other, true, 2, 3},
		{2, other, true, 1, 1},
		{1, other, false, 0, 0},
		{1, bundle.MustParseEID("dtn://dst/"), true, 1, 1},
	}
	for _, tt := range tests {
		d := s.Decide(Candidate{Destination: dst, Copies: tt.copies}, tt.peer)
		if d.Send != tt.send || (d.Send && (d.PeerCopies != tt.give || d.KeepCopies != tt.keep)) {
			t.Errorf("copies %d to %s: %+v; want send=%v give %d keep %d", tt.copies, tt.peer, d, tt.send, tt.give, tt.keep)
		}
	}
	if !(Epidemic{}).Decide(Candidate{}, other).Send {
		t.Error("epidemic must always send")
	}
	if _, err := New("flooding", 0); err == nil {
		t.Error("unknown strategy accepted")
	}
}

func TestErrorTracker(t *testing.T) {
	tr := NewErrorTracker(3)
	p := bundle.MustParseEID("dtn://p/")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		tr.Record(p, t0.Add(time.Duration(i)*time.Minute))
	}
	if !tr.Bad(p, t0.Add(5*time.Minute)) {
		t.Fatal("3 errors in 5 minutes should make the peer bad")
	}
	if tr.Bad(p, t0.Add(61*time.Minute)) {
		t.Fatal("errors older than an hour must not count")
	}
	tr.Record(p, t0)
	tr.Reset(p)
	if tr.Count(p, t0) != 0 {
		t.Fatal("reset did not forget")
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Minute}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 10: time.Minute, 100: time.Minute} {
		for i := 0; i < 50; i++ {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}
