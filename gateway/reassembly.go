package gateway

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/gateway/store"
	"go.uber.org/zap"
)

// reassemble rebuilds the bundle whole from the fragments of it this node
// holds, once they cover its payload (total bytes), and stores it through
// the pipeline as a bundle of its own: its limits are checked, its
// signature is verified over the whole (which no fragment allows), the
// senders' access list applies, and it is routed to the local endpoints
// and adapters, which therefore never see a fragment. The fragments are
// then deleted: the whole bundle travels on in their place.
//
// Fragments that do not cover the payload yet stay held, and the next
// fragment to arrive tries again; so does a restart (see loadHeld).
func (n *Node) reassemble(ctx context.Context, whole bundle.ID, total uint64) {
	// The fragments are durable and acknowledged; the door they came
	// through closing must not cut the reassembly short.
	ctx = context.WithoutCancel(ctx)
	// One at a time: two fragments completing the same bundle at once
	// would otherwise both rebuild it, and one delete the fragments the
	// other is reading.
	n.reassemblyMu.Lock()
	defer n.reassemblyMu.Unlock()

	n.mu.Lock()
	var ids []bundle.ID
	for _, h := range n.held {
		if h.ID.Fragment && h.ID.Whole() == whole {
			ids = append(ids, h.ID)
		}
	}
	n.mu.Unlock()
	if !covers(ids, total) {
		return
	}
	var parts []bundle.Part
	var opened []*store.Payload
	closeAll := func() {
		for _, p := range opened {
			p.Close()
		}
		opened = nil
	}
	defer closeAll()
	for _, id := range ids {
		meta, err := n.store.Get(ctx, id)
		if err != nil {
			continue // deleted meanwhile (expired, say): the check below decides
		}
		p, err := n.store.OpenPayload(ctx, id)
		if err != nil {
			continue
		}
		opened = append(opened, p)
		parts = append(parts, bundle.Part{Bundle: meta.Bundle, Payload: p})
	}
	b, payload, err := bundle.Reassemble(parts)
	if errors.Is(err, bundle.ErrIncomplete) {
		return
	}
	if err != nil {
		// Fragments that claim the same bundle but disagree on its length
		// are not all genuine; which are cannot be told here. Each expires
		// in its time.
		n.log.Warn("fragments of one bundle do not fit together", zap.String("bundle", whole.String()), zap.Error(err))
		return
	}
	err = n.ingest(ctx, door{kind: "reassembly"}, b, payload, false)
	closeAll()
	switch {
	case err == nil:
		n.log.Info("reassembled a bundle from its fragments", zap.String("bundle", whole.String()), zap.Int("fragments", len(parts)), zap.Uint64("bytes", total))
	case errors.Is(err, store.ErrInProgress):
		return // the whole bundle is arriving from a peer; keep the fragments until it has
	case errors.Is(err, store.ErrDuplicate):
		// Already here, or already delivered: the fragments are spare.
	default:
		if _, transient := convergence.Classify(err); transient {
			n.log.Warn("reassembling a bundle; the next fragment or restart tries again", zap.String("bundle", whole.String()), zap.Error(err))
			return
		}
		// Refused for good (rejected has counted and reported it): the
		// fragments would only be refused again.
	}
	for _, id := range ids {
		if err := n.store.Delete(ctx, id, bundle.ReasonNoInformation); err != nil && !errors.Is(err, store.ErrNotFound) {
			n.log.Warn("deleting a reassembled fragment", zap.String("bundle", id.String()), zap.Error(err))
			continue
		}
		n.forgetHeld(id)
	}
}

// covers reports whether fragments with these IDs cover a payload of total
// bytes, so that their payloads are opened only when reassembly can work.
func covers(ids []bundle.ID, total uint64) bool {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, func(a, b bundle.ID) int { return cmp.Compare(a.Offset, b.Offset) })
	var cursor uint64
	for _, id := range ids {
		if id.Offset > cursor {
			return false
		}
		cursor = max(cursor, id.Offset+id.Length)
	}
	return cursor >= total
}
