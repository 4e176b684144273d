package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/mulegate/mulegate/bundle"
)

// Ready reports whether the node is serving: Start has run, its context has
// not ended, and the store answers a read. The API's /readyz serves it.
func (n *Node) Ready(ctx context.Context) error {
	n.mu.Lock()
	run := n.ctx
	n.mu.Unlock()
	if run == nil {
		return errors.New("the node has not started")
	}
	if run.Err() != nil {
		return errors.New("the node is shutting down")
	}
	if _, err := n.store.Lookup(ctx, bundle.ID{Source: n.id}); err != nil {
		return fmt.Errorf("the store does not answer: %w", err)
	}
	return nil
}
