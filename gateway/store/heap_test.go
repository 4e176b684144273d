package store

import (
	"context"
	"hash/crc32"
	"io"
	"testing"

	"github.com/mulegate/mulegate/internal/heapwatch"
)

// TestLargePutHeap stores a 256 MiB payload from a reader that generates
// it, then reads it back, and checks that neither ever holds much of it
// on the heap: the payload must stream to and from its file. It checks no
// time, so it holds on a loaded machine.
func TestLargePutHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads 256 MiB; skipped with -short")
	}
	const size, maxRise = 256 << 20, 64 << 20
	ctx := context.Background()
	e := newEnv(t, Options{})
	pat := make([]byte, 64<<10)
	for i := range pat {
		pat[i] = byte(i * 7)
	}
	b := mkBundle(t, 1, size)
	sum := crc32.New(castagnoli)
	h := heapwatch.Start()
	err := e.s.Put(ctx, b, "test", io.TeeReader(io.LimitReader(patternReader{pat}, size), sum))
	peak, rise := h.Stop()
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	t.Logf("Put: peak heap in use %.1f MiB, %.1f MiB above the start", float64(peak)/(1<<20), float64(rise)/(1<<20))
	if rise >= maxRise {
		t.Errorf("the heap in use rose by %d bytes during a Put of %d bytes; want under %d", rise, size, maxRise)
	}

	h = heapwatch.Start()
	p, err := e.s.OpenPayload(ctx, b.ID())
	if err != nil {
		h.Stop()
		t.Fatalf("OpenPayload: %v", err)
	}
	back := crc32.New(castagnoli)
	// Reading through to the end verifies the stored checksum too.
	n, err := io.Copy(back, p)
	p.Close()
	peak, rise = h.Stop()
	if err != nil || n != size {
		t.Fatalf("read back %d of %d bytes: %v", n, size, err)
	}
	if back.Sum32() != sum.Sum32() {
		t.Fatalf("payload read back has CRC-32C %08x, what was put %08x", back.Sum32(), sum.Sum32())
	}
	t.Logf("read back: peak heap in use %.1f MiB, %.1f MiB above the start", float64(peak)/(1<<20), float64(rise)/(1<<20))
	if rise >= maxRise {
		t.Errorf("the heap in use rose by %d bytes while reading back %d bytes; want under %d", rise, size, maxRise)
	}
}
