package heapwatch

import (
	"runtime"
	"testing"
)

// A buffer held while the watch runs shows in its rise; with nothing held,
// the rise stays small.
func TestWatchSeesABuffer(t *testing.T) {
	const size = 64 << 20
	w := Start()
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = 1 // touch every page, so it is really in use
	}
	_, rise := w.Stop()
	runtime.KeepAlive(buf)
	if rise < size {
		t.Errorf("rise %d bytes with a %d-byte buffer held; want at least that", rise, size)
	}

	w = Start()
	_, rise = w.Stop()
	if rise > 8<<20 {
		t.Errorf("rise %d bytes with nothing held; want little", rise)
	}
}
