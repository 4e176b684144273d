package quic

import (
	"context"
	"fmt"
	"io"
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
// unidirectional stream per message, the receiver discarding the bytes)
// with the convergence layer carrying real bundles (encoded, decoded,
// CRC-checked, handed to a sink that discards the payload), for small
// bundles and for one large one.
//
//	go test -run '^$' -bench Transfer ./convergence/quic/
func BenchmarkTransfer(b *testing.B) {
	for _, size := range []int64{1 << 10, 256 << 20} {
		for _, kind := range []string{"raw", "qbcl"} {
			b.Run(fmt.Sprintf("size=%s/%s", sizeName(size), kind), func(b *testing.B) {
				var send func(context.Context) error
				var counter *counter
				if kind == "raw" {
					send, counter = rawLink(b, size)
				} else {
					send, counter = qbclLink(b, size)
				}
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
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "bundles/s")
				// CPU time of both endpoints: steadier than wall time on a
				// shared machine.
				b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
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
// sending one message of size bytes.
func rawLink(b *testing.B, size int64) (func(context.Context) error, *counter) {
	aliceID, bobID := mustIdentity(b, "dtn://alice/"), mustIdentity(b, "dtn://bob/")
	conf := &quicgo.Config{
		MaxIncomingUniStreams: 100,
		MaxIdleTimeout:        time.Minute,
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
						if n, err := io.Copy(io.Discard, str); err == nil && n == size {
							got.add()
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
		buf = make([]byte, size)
	}
	return func(ctx context.Context) error {
		str, err := conn.OpenUniStreamSync(ctx)
		if err != nil {
			return err
		}
		if size <= smallPayload {
			// As the layer does for small bundles: one write.
			src.Read(buf)
			_, err = str.Write(buf)
		} else {
			_, err = io.CopyN(str, src, size)
		}
		if err != nil {
			return err
		}
		return str.Close()
	}, got
}

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
	sink := func(o *Options) { o.Sink = discardSink{got}; o.IdleTimeout = time.Minute }
	p := newPair(testContext(b, time.Minute), b, nil, sink)
	src := &pattern{}
	// The node would have the bundle's metadata from its store already; the
	// receiving sink does not mind seeing the same bundle again.
	bndl := newBundle(b, 1, uint64(size))
	return func(ctx context.Context) error {
		return p.ab.Send(ctx, bndl, io.LimitReader(src, size))
	}, got
}
