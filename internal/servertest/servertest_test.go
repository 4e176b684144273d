package servertest

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePort: ports come from outside the kernel's ephemeral range, no
// two tests hold one at once, and a port something listens on is skipped.
func TestFreePort(t *testing.T) {
	lo, hi := reservedRange()
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside %d-%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
	}
	for p := range seen {
		// Held by this test: another test (or this one) cannot take it.
		if lockPort(t, p) {
			t.Fatalf("port %d taken again while held", p)
		}
	}
	// A port in use is not taken, even if no test holds it.
	var l net.Listener
	for p := hi - 1; l == nil && p > lo; p-- {
		l, _ = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	}
	if l == nil {
		t.Fatalf("nothing of %d-%d to listen on", lo, hi)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	t.Run("busy", func(t *testing.T) {
		if lockPort(t, busy) {
			t.Fatalf("port %d taken while something listens on it", busy)
		}
	})
}
