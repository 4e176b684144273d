// Package heapwatch measures the most heap a piece of code holds at once.
// mulegate's tests and benchmarks use it to show that payloads stream: a
// bundle of hundreds of MiB must pass through the codec, the store, a
// convergence layer or a signature check without the heap ever holding
// much of it.
//
// Go keeps no peak counter to read afterwards, so a Watch samples the
// heap in use from a goroutine, every millisecond: each sample stops the
// world for a few microseconds, far shorter than a payload-sized buffer
// would stay in use.
//
// It is a leaf package, imported only by tests, so that every layer (the
// bundle package included) can use it without importing anything else
// from the project.
package heapwatch

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Watch samples the heap in use from Start until Stop.
type Watch struct {
	base uint64 // HeapInuse at Start, after a GC
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

// Start runs a garbage collection, so that what is left over from earlier
// work does not count, and starts sampling.
func Start() *Watch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w := &Watch{base: ms.HeapInuse, stop: make(chan struct{}), done: make(chan struct{})}
	w.peak.Store(ms.HeapInuse)
	go w.sample()
	return w
}

func (w *Watch) sample() {
	defer close(w.done)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		w.observe()
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
	}
}

func (w *Watch) observe() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > w.peak.Load() {
		w.peak.Store(ms.HeapInuse)
	}
}

// Stop ends sampling, with one last sample of its own, and returns the
// peak heap in use and how far it rose above where it was at Start. Call
// it once.
func (w *Watch) Stop() (peak, rise uint64) {
	close(w.stop)
	<-w.done
	w.observe()
	peak = w.peak.Load()
	return peak, peak - min(peak, w.base)
}
