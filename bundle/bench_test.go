package bundle

import (
	"bytes"
	"io"
	"testing"

	"github.com/mulegate/mulegate/internal/heapwatch"
)

func benchBundle(b *testing.B, size int) (*Bundle, []byte) {
	bd := validBundle(b)
	payload := bytes.Repeat([]byte{0xa5}, size)
	bd.Payload.Length = uint64(size)
	return bd, payload
}

func BenchmarkEncode1KiB(b *testing.B) {
	bd, payload := benchBundle(b, 1024)
	var buf bytes.Buffer
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		buf.Reset()
		if _, err := Encode(&buf, bd, bytes.NewReader(payload)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal1KiB(b *testing.B) {
	bd, payload := benchBundle(b, 1024)
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := Marshal(bd, payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode1KiB(b *testing.B) {
	bd, payload := benchBundle(b, 1024)
	data := mustMarshal(b, bd, payload)
	r := bytes.NewReader(nil)
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		r.Reset(data)
		_, pr, err := Decode(r, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, pr, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// zeroReader yields n zero bytes without holding them.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// tailWriter keeps only the last bytes written.
type tailWriter struct{ tail []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.tail = append(t.tail, p...)
	if len(t.tail) > 64 {
		t.tail = t.tail[len(t.tail)-64:]
	}
	return len(p), nil
}

// BenchmarkStreamDecode1GiB decodes a bundle with a 1 GiB payload (CRC-32C
// checked) from a stream and reports throughput and the peak heap in use,
// which must stay far below the payload size.
func BenchmarkStreamDecode1GiB(b *testing.B) {
	const size = 1 << 30
	bd := validBundle(b)
	bd.Payload.Length = size
	header, err := bd.MarshalHeader()
	if err != nil {
		b.Fatal(err)
	}
	tw := &tailWriter{}
	if _, err := Encode(tw, bd, &zeroReader{n: size}); err != nil {
		b.Fatal(err)
	}
	trailer := tw.tail[len(tw.tail)-6:] // 0x44 + 4 CRC bytes + break
	buf := make([]byte, 256<<10)
	h := heapwatch.Start()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		r := io.MultiReader(bytes.NewReader(header), &zeroReader{n: size}, bytes.NewReader(trailer))
		_, pr, err := Decode(r, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyBuffer(io.Discard, pr, buf); err != nil || n != size {
			b.Fatalf("copied %d: %v", n, err)
		}
	}
	b.StopTimer()
	peak, _ := h.Stop()
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}
