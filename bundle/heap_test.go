package bundle

import (
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// heapSampler records the peak heap in use while something runs, by
// sampling from a goroutine: there is no peak counter to read afterwards.
// A sample every millisecond costs a few microseconds of stopped world;
// a buffer sized to a payload would stay in use far longer than that.
type heapSampler struct {
	base uint64 // HeapInuse when sampling started, after a GC
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func startHeapSampler() *heapSampler {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapSampler{base: ms.HeapInuse, stop: make(chan struct{}), done: make(chan struct{})}
	h.peak.Store(ms.HeapInuse)
	go func() {
		defer close(h.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > h.peak.Load() {
				h.peak.Store(ms.HeapInuse)
			}
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

// Stop ends sampling and returns the peak HeapInuse and how far it rose
// above where it started.
func (h *heapSampler) Stop() (peak, rise uint64) {
	close(h.stop)
	<-h.done
	peak = h.peak.Load()
	return peak, peak - min(peak, h.base)
}

// TestStreamDecodeHeap streams a 256 MiB payload through Encode and
// Decode over a pipe and checks that the heap never comes near holding
// it: a decoder that buffered the payload, or sized a buffer from its
// declared length, fails. The payload CRC-32C is checked as it streams.
func TestStreamDecodeHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 256 MiB; skipped with -short")
	}
	const size, maxRise = 256 << 20, 64 << 20
	b := validBundle(t)
	b.Payload.Length = size
	pr, pw := io.Pipe()
	h := startHeapSampler()
	go func() {
		_, err := Encode(pw, b, &zeroReader{n: size})
		pw.CloseWithError(err)
	}()
	got, payload, err := Decode(pr, Limits{})
	if err != nil {
		h.Stop()
		t.Fatalf("Decode: %v", err)
	}
	n, err := io.CopyBuffer(io.Discard, payload, make([]byte, 256<<10))
	peak, rise := h.Stop()
	if err != nil || n != size || got.Payload.Length != size {
		t.Fatalf("streamed %d of %d payload bytes: %v", n, size, err)
	}
	t.Logf("peak heap in use %.1f MiB, %.1f MiB above the start", float64(peak)/(1<<20), float64(rise)/(1<<20))
	if rise >= maxRise {
		t.Errorf("the heap in use rose by %d bytes while streaming a %d-byte payload; want under %d", rise, size, maxRise)
	}
}
