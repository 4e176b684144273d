package quic

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/policy/identity"
)

// BenchmarkTransfer compares, over loopback, raw quic-go (one
// unidirectional stream per message, as many bytes as the encoded bundle,
// the receiver discarding them) with the convergence layer carrying real
// bundles (encoded, decoded, CRC-checked, handed to a sink that discards
// the payload), for 1 KiB bundles and for one large one. Both use the same
// QUIC settings (Options.quicConfig), so that what differs is the protocol
// work. MB/s counts payload bytes for both.
//
// After both, a third sub-benchmark, ratio, reports the layer against raw
// quic-go, round by round (-count): %raw-rate is the layer's bundles/s as a
// percentage of raw quic-go's, and x-raw-cpu how many times raw quic-go's
// CPU time per bundle the layer spends (both endpoints together). With
// -count above 1, it also logs both sides' medians over the rounds, which
// on a shared machine are steadier than any one round.
//
//	go test -run '^$' -bench Transfer -benchtime 3s -count 3 ./convergence/quic/
func BenchmarkTransfer(b *testing.B) {
	for _, size := range []int64{1 << 10, 256 << 20} {
		var raw, qbcl rounds
		for _, kind := range []struct {
			name   string
			link   func(*testing.B, int64) (func(context.Context) error, *counter)
			rounds *rounds
		}{
			{"raw", rawLink, &raw},
			{"qbcl", qbclLink, &qbcl},
		} {
			b.Run(fmt.Sprintf("size=%s/%s", sizeName(size), kind.name), func(b *testing.B) {
				send, counter := kind.link(b, size)
				ctx := testContext(b, 30*time.Minute)
				b.SetBytes(size)
				b.ReportAllocs()
				b.ResetTimer()
				start, cpu := time.Now(), cpuTime()
				for range b.N {
					if err := send(ctx); err != nil {
						b.Fatal(err)
					}
				}
				counter.wait(ctx, b, uint64(b.N))
				r := benchResult{
					rate: float64(b.N) / time.Since(start).Seconds(),
					// CPU time of both endpoints: steadier than wall
					// time on a shared machine.
					cpu: float64(cpuTime()-cpu) / float64(b.N),
				}
				b.ReportMetric(r.rate, "bundles/s")
				b.ReportMetric(r.cpu, "cpu-ns/op")
				kind.rounds.record(b.N, r)
			})
		}
		var round rounds
		b.Run(fmt.Sprintf("size=%s/ratio", sizeName(size)), func(b *testing.B) {
			round.record(b.N, benchResult{})
			i := len(round) - 1
			if i >= len(raw) || i >= len(qbcl) {
				b.Skip("needs the raw and qbcl sub-benchmarks of this round")
			}
			b.ReportMetric(0, "ns/op") // nothing was timed here
			b.ReportMetric(100*qbcl[i].rate/raw[i].rate, "%raw-rate")
			b.ReportMetric(qbcl[i].cpu/raw[i].cpu, "x-raw-cpu")
			if b.N == 1 && i == len(raw)-1 && len(raw) > 1 {
				// On a shared machine one round's pair can be far off;
				// the medians of all rounds are steadier.
				rr, qr := raw.median(), qbcl.median()
				b.Logf("medians of %d rounds: raw %s; qbcl %s: qbcl at %.0f%% of raw's rate, %.2fx its CPU",
					len(raw), rr.format(size), qr.format(size), 100*qr.rate/rr.rate, qr.cpu/rr.cpu)
			}
		})
	}
}

// benchResult is what one benchmark run measured.
type benchResult struct{ rate, cpu float64 }

func (r benchResult) format(size int64) string {
	cpu, unit := time.Duration(r.cpu), time.Duration(1)
	for unit*1000 <= cpu { // three significant digits
		unit *= 10
	}
	return fmt.Sprintf("%.*f bundles/s (%.0f MB/s), %v CPU per bundle", max(0, 2-int(math.Log10(r.rate))), r.rate, r.rate*float64(size)/1e6, cpu.Round(unit))
}

// rounds holds the final result of each round (-count) of a benchmark.
type rounds []benchResult

// median is the median round, rate and CPU time taken separately.
func (rs rounds) median() benchResult {
	rates, cpus := make([]float64, len(rs)), make([]float64, len(rs))
	for i, r := range rs {
		rates[i], cpus[i] = r.rate, r.cpu
	}
	return benchResult{rate: median(rates), cpu: median(cpus)}
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	if n := len(xs); n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[len(xs)/2]
}

// record keeps r as its round's result. The testing package calls a
// benchmark with N=1 first in each round, then with larger N until the
// round is long enough; the last run is the round's result.
func (rs *rounds) record(n int, r benchResult) {
	if n == 1 || len(*rs) == 0 {
		*rs = append(*rs, r)
		return
	}
	(*rs)[len(*rs)-1] = r
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sizeName(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// counter counts messages that arrived whole.
type counter struct {
	n       atomic.Uint64
	changed chan struct{}
}

func newCounter() *counter { return &counter{changed: make(chan struct{}, 1)} }

func (c *counter) add() {
	c.n.Add(1)
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *counter) wait(ctx context.Context, b *testing.B, n uint64) {
	for c.n.Load() < n {
		select {
		case <-c.changed:
		case <-ctx.Done():
			b.Fatalf("%d of %d arrived", c.n.Load(), n)
		}
	}
}

// pattern is an endless cheap source of non-zero bytes.
type pattern struct{ off int }

var patternBlock = randomBytes(1, 64<<10)

func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		c := copy(b[n:], patternBlock[p.off:])
		n += c
		p.off = (p.off + c) % len(patternBlock)
	}
	return n, nil
}

// rawLink sets up raw quic-go between two endpoints with the same
// identities, TLS and QUIC settings the layer uses, and returns a function
// sending one message as long as a bundle with size payload bytes.
func rawLink(b *testing.B, size int64) (func(context.Context) error, *counter) {
	aliceID, bobID := mustIdentity(b, "dtn://alice/"), mustIdentity(b, "dtn://bob/")
	opts := Options{TLS: convergence.IdentityTLS(aliceID, pinnedTrust(b, bobID)), Sink: discardSink{}, IdleTimeout: time.Minute}
	if err := opts.setDefaults(); err != nil {
		b.Fatal(err)
	}
	conf := opts.quicConfig()
	length, err := bundle.Encode(io.Discard, newBundle(b, 1, uint64(size)), io.LimitReader(zeros{}, size))
	if err != nil {
		b.Fatal(err)
	}

	ln, err := quicgo.ListenAddr("127.0.0.1:0", identity.ServerConfig(bobID, pinnedTrust(b, aliceID), []string{"raw"}), conf)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	got := newCounter()
	go func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				for {
					str, err := conn.AcceptUniStream(context.Background())
					if err != nil {
						return
					}
					go func() {
						// Read as the layer does: 64 KiB at a time, with
						// pooled buffers, and release the stream's credit
						// once done with it.
						defer str.ReleaseStreamCredit()
						buf := rawBuffers.Get().(*[]byte)
						defer rawBuffers.Put(buf)
						n, err := io.CopyBuffer(io.Discard, onlyReader{str}, *buf)
						if err == nil && n == length {
							got.add()
						} else {
							str.CancelRead(quicgo.StreamErrorCode(CodeProtocolError))
						}
					}()
				}
			}()
		}
	}()
	ctx := testContext(b, time.Minute)
	conn, err := quicgo.DialAddr(ctx, ln.Addr().String(), identity.ClientConfig(aliceID, pinnedTrust(b, bobID), []string{"raw"}, ""), conf)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.CloseWithError(0, "") })
	src := &pattern{}
	var buf []byte
	if size <= smallPayload {
		buf = make([]byte, length)
	}
	return func(ctx context.Context) error {
		str, err := conn.OpenUniStreamSync(ctx)
		if err != nil {
			return err
		}
		if buf != nil {
			// As the layer does for small bundles: one write.
			src.Read(buf)
			_, err = str.Write(buf)
		} else {
			_, err = io.CopyN(str, src, length)
		}
		if err != nil {
			return err
		}
		return str.Close()
	}, got
}

var rawBuffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// onlyReader hides io.Discard's ReaderFrom, so that io.CopyBuffer uses
// the buffer it is given.
type onlyReader struct{ io.Reader }

// discardSink counts bundles whose payload it read whole.
type discardSink struct{ got *counter }

func (d discardSink) Receive(_ context.Context, _ convergence.Session, b *bundle.Bundle, pr *bundle.PayloadReader) error {
	if _, err := io.Copy(io.Discard, pr); err != nil {
		return err
	}
	d.got.add()
	return nil
}

// qbclLink sets up the layer between two nodes and returns a function
// sending one bundle with a payload of size bytes.
func qbclLink(b *testing.B, size int64) (func(context.Context) error, *counter) {
	got := newCounter()
	alice := func(o *Options) { o.IdleTimeout = time.Minute }
	bob := func(o *Options) { o.Sink = discardSink{got}; o.IdleTimeout = time.Minute }
	p := newPair(testContext(b, time.Minute), b, alice, bob)
	src := &pattern{}
	// The node would have the bundle's metadata from its store already; the
	// receiving sink does not mind seeing the same bundle again.
	bndl := newBundle(b, 1, uint64(size))
	return func(ctx context.Context) error {
		return p.ab.Send(ctx, bndl, io.LimitReader(src, size))
	}, got
}
