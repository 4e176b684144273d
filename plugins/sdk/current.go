package sdk

import (
	"io"
	"sync"

	"github.com/mulegate/mulegate/plugins"
)

// Current holds what an adapter's configuration in force has built: its
// client, its connection, its open directories. Each successful Configure
// builds a new one and puts it in force with Swap; calls that run
// meanwhile keep the one they got from Get, so that Configure never waits
// for a delivery, and Close closes it. Embed or hold one per adapter; the
// zero value holds nothing.
type Current[S io.Closer] struct {
	mu  sync.Mutex
	st  S
	set bool
}

// Get returns the state in force, or plugins.ErrNotConfigured before the
// first successful Configure (and after Close).
func (c *Current[S]) Get() (S, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.set {
		var none S
		return none, plugins.ErrNotConfigured
	}
	return c.st, nil
}

// Swap puts st in force, then closes the state it replaces, if any.
func (c *Current[S]) Swap(st S) {
	c.mu.Lock()
	old, had := c.st, c.set
	c.st, c.set = st, true
	c.mu.Unlock()
	if had {
		_ = old.Close()
	}
}

// Close closes the state in force, if any, and leaves none: the adapter's
// Close.
func (c *Current[S]) Close() error {
	c.mu.Lock()
	old, had := c.st, c.set
	var none S
	c.st, c.set = none, false
	c.mu.Unlock()
	if had {
		return old.Close()
	}
	return nil
}
