package store

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mulegate/mulegate/internal/heapwatch"
)

// BenchmarkPut1KiB stores 1 KiB bundles, each durable before Put returns,
// from one writer and from 64 concurrent writers.
func BenchmarkPut1KiB(b *testing.B) {
	ctx := context.Background()
	payload := make([]byte, 1024)
	b.Run("writers=1", func(b *testing.B) {
		e := newEnv(b, Options{})
		var seq uint64
		for b.Loop() {
			seq++
			if err := e.s.Put(ctx, mkBundle(b, seq, 1024), "bench", bytes.NewReader(payload)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "bundles/s")
	})
	b.Run("writers=64", func(b *testing.B) {
		e := newEnv(b, Options{})
		var seq atomic.Uint64
		b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := e.s.Put(ctx, mkBundle(b, seq.Add(1), 1024), "bench", bytes.NewReader(payload)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "bundles/s")
		s := e.s.Stats()
		b.ReportMetric(float64(s.CommittedOps)/float64(s.Commits), "puts/commit")
	})
}

// patternReader is a cheap endless payload.
type patternReader struct{ pat []byte }

func (p patternReader) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		n += copy(b[n:], p.pat)
	}
	return n, nil
}

// BenchmarkPut1GiB streams one 1 GiB payload to disk and reports the
// throughput and the peak heap in use while it runs.
func BenchmarkPut1GiB(b *testing.B) {
	const size = 1 << 30
	ctx := context.Background()
	e := newEnv(b, Options{})
	pat := make([]byte, 64<<10)
	for i := range pat {
		pat[i] = byte(i * 7)
	}
	h := heapwatch.Start()
	b.SetBytes(size)
	var seq uint64
	for b.Loop() {
		seq++
		bb := mkBundle(b, seq, size)
		if err := e.s.Put(ctx, bb, "bench", io.LimitReader(patternReader{pat}, size)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := e.s.Delete(ctx, bb.ID(), 0); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	peak, _ := h.Stop()
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// BenchmarkReopen100k reopens a store holding 100,000 bundles (1 KiB
// inline ones, plus 1,000 of 100 KiB in files), each with a progress
// record. Only Open is timed: it is what a restarting node waits for, and
// the goal is under 2 s. The index is in the page cache, as after a
// restart of the process but not of the machine.
func BenchmarkReopen100k(b *testing.B) {
	const n, files = 100_000, 1_000
	ctx := context.Background()
	e := newEnv(b, Options{})
	small, large := make([]byte, 1024), make([]byte, 100<<10)
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > n {
					return
				}
				p := small
				if i%(n/files) == 0 {
					p = large
				}
				bb := mkBundle(b, uint64(i), len(p))
				if err := e.s.Put(ctx, bb, "bench", bytes.NewReader(p)); err != nil {
					b.Error(err)
					return
				}
				if err := e.s.Enqueue(ctx, bb.ID(), "peer:dtn://gw/"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if s := e.s.Stats(); s.Bundles != n {
		b.Fatalf("%d bundles stored", s.Bundles)
	}
	for b.Loop() {
		b.StopTimer()
		if err := e.s.Close(); err != nil {
			b.Fatalf("Close: %v", err)
		}
		e.s = nil
		b.StartTimer()
		e.open()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
	if s := e.s.Stats(); s.Bundles != n || s.Destinations["peer:dtn://gw/"].Pending != n {
		b.Fatalf("after reopen: %+v", s)
	}
}
