package bpsec

import (
	"bufio"
	"io"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/internal/heapwatch"
)

// patternReader yields left bytes of a repeating pattern without holding
// them.
type patternReader struct{ left int64 }

var pattern = func() []byte {
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}()

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], pattern[r.left%int64(len(pattern)):])
	r.left -= int64(n)
	return n, nil
}

// signAndVerify signs a bundle with an n-byte payload streamed from a
// generator, encodes it into a pipe, and decodes and verifies it from the
// other end, as two nodes would: the payload is never held whole.
func signAndVerify(tb testing.TB, v *Verifier, key Key, n int64) (signDur, verifyDur time.Duration) {
	b := newBundle(tb, "dtn://alice/app", 0)
	b.Payload.Length = uint64(n)
	start := time.Now()
	if err := Sign(b, &patternReader{left: n}, key); err != nil {
		tb.Fatal(err)
	}
	signDur = time.Since(start)

	start = time.Now()
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriterSize(pw, 64<<10)
		_, err := bundle.Encode(w, b, &patternReader{left: n})
		if err == nil {
			err = w.Flush()
		}
		pw.CloseWithError(err)
	}()
	got, payload, err := bundle.Decode(pr, bundle.Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	c, err := v.Start(got)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(c, payload); err != nil { // a node would tee this into its store
		tb.Fatal(err)
	}
	if _, err := c.Finish(); err != nil {
		tb.Fatal(err)
	}
	return signDur, time.Since(start)
}

// TestStreamingBoundedHeap: signing and verifying a 256 MiB payload never
// holds more than a few MiB.
func TestStreamingBoundedHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 256 MiB twice")
	}
	ca := newTestCA(t, "campfire")
	key := ca.issue(t, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	v := &Verifier{Trust: ca.trust(t)}
	h := heapwatch.Start()
	signAndVerify(t, v, key, 256<<20)
	if _, peak := h.Stop(); peak > 16<<20 {
		t.Errorf("heap grew by %d MiB streaming 256 MiB", peak>>20)
	}
}

// BenchmarkSignVerify1GiB streams a 1 GiB payload through Sign, then through
// Encode → pipe → Decode → Check, and reports both rates and the peak heap:
//
//	go test -run XXX -bench SignVerify1GiB -benchtime 1x ./policy/bpsec/
func BenchmarkSignVerify1GiB(b *testing.B) {
	const n = 1 << 30
	ca := newTestCA(b, "campfire")
	key := ca.issue(b, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	v := &Verifier{Trust: ca.trust(b)}
	h := heapwatch.Start()
	var sign, verify time.Duration
	b.ResetTimer()
	for range b.N {
		s, vd := signAndVerify(b, v, key, n)
		sign += s
		verify += vd
	}
	b.StopTimer()
	_, peak := h.Stop()
	mb := float64(n) / 1e6 * float64(b.N)
	b.ReportMetric(mb/sign.Seconds(), "sign-MB/s")
	b.ReportMetric(mb/verify.Seconds(), "encode+decode+verify-MB/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// BenchmarkVerifyHeader is the per-bundle cost before the payload: parsing
// the integrity block and authenticating the certificate chain.
func BenchmarkVerifyHeader(b *testing.B) {
	ca := newTestCA(b, "campfire")
	key := ca.issue(b, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	v := &Verifier{Trust: ca.trust(b)}
	bd := newBundle(b, "dtn://alice/app", 0)
	if err := Sign(bd, &patternReader{}, key); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for range b.N {
		c, err := v.Start(bd)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Finish(); err != nil {
			b.Fatal(err)
		}
	}
}
