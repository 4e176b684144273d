// Package benchtest runs the adapters' benchmarks' work with many
// operations in flight, and reports what each process taking part (the
// node, the adapter, the server) spent per operation: CPU time and read
// and write system calls, from /proc.
package benchtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// CPUTime is the CPU time (user and system) process pid has used, with the
// kernel's clock-tick resolution (10 ms); 0 when it cannot be read.
func CPUTime(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// Syscalls is the number of read and write system calls process pid has
// made (all kinds: sockets, files, pipes), from /proc/PID/io.
func Syscalls(pid int) (reads, writes int64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(raw)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// Concurrently does work(worker, i) for every i in [0, b.N), on inFlight
// workers, with the benchmark's timer running only meanwhile. It stops at
// the first error, which fails the benchmark, and returns how long the
// work took.
func Concurrently(b *testing.B, inFlight int, work func(worker, i int) error) time.Duration {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range inFlight {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N || failed.Load() != nil {
					return
				}
				if err := work(w, i); err != nil {
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	return elapsed
}

// Procs names the processes whose use a benchmark reports per operation:
// "node" (os.Getpid()), "adapter", "server".
type Procs map[string]int

// Usage is what one process has used so far.
type Usage struct {
	CPU           time.Duration
	Reads, Writes int64
}

// Usage is what each process has used so far.
func (ps Procs) Usage() map[string]Usage {
	u := make(map[string]Usage, len(ps))
	for name, pid := range ps {
		r, w := Syscalls(pid)
		u[name] = Usage{CPU: CPUTime(pid), Reads: r, Writes: w}
	}
	return u
}

// Report reports, per operation since before, each process's CPU time
// (NAME-cpu-µs/op) and its read and write system calls (NAME-reads/op,
// NAME-writes/op: fewer than one means batching).
func (ps Procs) Report(b *testing.B, before map[string]Usage) {
	for name, u := range ps.Usage() {
		was := before[name]
		b.ReportMetric(float64((u.CPU-was.CPU).Microseconds())/float64(b.N), name+"-cpu-µs/op")
		b.ReportMetric(float64(u.Reads-was.Reads)/float64(b.N), name+"-reads/op")
		b.ReportMetric(float64(u.Writes-was.Writes)/float64(b.N), name+"-writes/op")
	}
}

// Run does work(i) for every i in [0, b.N) on inFlight goroutines (see
// Concurrently), and reports the rate in unit ("bundles/s") and each
// process's use per operation (see Report). It returns the rate.
func (ps Procs) Run(b *testing.B, inFlight int, unit string, work func(i int) error) float64 {
	before := ps.Usage()
	elapsed := Concurrently(b, inFlight, func(_, i int) error { return work(i) })
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, unit)
	ps.Report(b, before)
	return rate
}

// SizeName writes a payload size for a benchmark's name: "0B", "1KiB",
// "10MiB".
func SizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
