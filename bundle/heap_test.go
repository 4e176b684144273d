package bundle

import (
	"io"
	"testing"

	"github.com/mulegate/mulegate/internal/heapwatch"
)

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
	h := heapwatch.Start()
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
