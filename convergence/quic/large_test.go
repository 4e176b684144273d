package quic

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mulegate/mulegate/internal/heapwatch"
)

// TestLargeBundleBoundedMemory streams a 1 GiB bundle from a reader into the
// sink and checks that neither side held it: the heap in use, both
// endpoints of this process together, stays under a bound far below the
// bundle's size.
//
// It takes about 7 s, and about 100 s under the race detector; -short skips it.
func TestLargeBundleBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the 1 GiB transfer")
	}
	const size = 1 << 30
	const bound = 64 << 20
	ctx := testContext(t, 15*time.Minute)
	p := newPair(ctx, t, nil, nil)

	w := heapwatch.Start()

	sent := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{42}), size), sent)
	start := time.Now()
	if err := p.ab.Send(ctx, newBundle(t, 1, size), src); err != nil {
		t.Fatal(err)
	}
	p.bob.sink.wait(ctx, t, "the 1 GiB bundle", func() bool { return len(p.bob.sink.got) == 1 })
	elapsed := time.Since(start)
	heap, _ := w.Stop()
	t.Logf("1 GiB in %v (%.0f MB/s); peak heap in use %.1f MiB", elapsed, size/elapsed.Seconds()/1e6, float64(heap)/(1<<20))

	var want [32]byte
	sent.Sum(want[:0])
	for _, st := range p.bob.sink.got {
		if st.n != size || st.sum != want {
			t.Fatalf("arrived %d bytes with sum %x; sent %d with %x", st.n, st.sum, size, want)
		}
	}
	if heap > bound {
		t.Errorf("peak heap in use %d MiB; the bound is %d MiB", heap>>20, bound>>20)
	}
}
