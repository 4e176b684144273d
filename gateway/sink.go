package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/gateway/control"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/policy/acl"
	"go.uber.org/zap"
)

// maxControlPayload bounds the administrative records this node reads into
// memory from a peer: a full summary of a million bundles is 16 MB.
const maxControlPayload = 32 << 20

// Receive is the node's side of every convergence layer: a peer's bundle
// goes through the pipeline and is acknowledged (nil) only once stored.
// Summary vectors addressed to this node are taken in and never stored.
func (n *Node) Receive(ctx context.Context, s convergence.Session, b *bundle.Bundle, payload *bundle.PayloadReader) error {
	isControl := b.IsAdminRecord() && b.Primary.Destination == n.id
	err := n.receive(ctx, s, b, payload, isControl)
	if err != nil && !isControl {
		n.tellRefused(ctx, s, b, err)
	}
	return err
}

// tellRefused has the peer told, in the next summary, that this node
// refused b. The convergence layer tells the sender too, but only while the
// bundle is still arriving: a bundle refused at its end (its signature is
// checked over the whole payload) may be reported sent by then.
func (n *Node) tellRefused(ctx context.Context, s convergence.Session, b *bundle.Bundle, err error) {
	if errors.Is(err, convergence.ErrInterrupted) || ctx.Err() != nil {
		return // the transfer broke off: the sender knows, and resumes
	}
	n.mu.Lock()
	c := n.contacts[s.Peer().NodeID()]
	n.mu.Unlock()
	if c == nil {
		return
	}
	reason, transient := convergence.Classify(err)
	c.noteRefused(control.Refusal{Digest: control.DigestOf(b.ID()), Reason: reason, Transient: transient})
}

func (n *Node) receive(ctx context.Context, s convergence.Session, b *bundle.Bundle, payload *bundle.PayloadReader, isControl bool) error {
	d := door{kind: "peer", peer: s.Peer().NodeID()}
	if isControl {
		if err := n.checkPeer(d.peer, acl.OpRequest, 0); err != nil {
			return n.rejected(ctx, d, b, err)
		}
		handled, err := n.receiveControl(ctx, s, b, payload)
		if handled {
			return err
		}
	}
	if err := n.checkPeer(d.peer, acl.OpSend, b.Payload.Length); err != nil {
		return n.rejected(ctx, d, b, err)
	}
	if b.Primary.IsFragment() {
		if done, err := n.resume(ctx, d, b, payload); done {
			return err
		}
	}
	err := n.ingest(ctx, d, b, payload, true)
	if (errors.Is(err, store.ErrDuplicate) && !errors.Is(err, store.ErrInProgress)) || errors.Is(err, ErrDelivered) {
		// This node holds the bundle, or held it and delivered it: for the
		// sender that is success (at-least-once, idempotent by bundle ID).
		return nil
	}
	return err
}

// receiveControl takes in a mulegate control record. It reports false for
// administrative records that are not control records (status reports),
// which the caller stores like any bundle; payload is then untouched.
func (n *Node) receiveControl(ctx context.Context, s convergence.Session, b *bundle.Bundle, payload *bundle.PayloadReader) (bool, error) {
	if b.Payload.Length > maxControlPayload {
		return false, nil
	}
	data, err := io.ReadAll(payload)
	if err != nil {
		return true, err
	}
	rec, err := bundle.UnmarshalAdminRecord(data)
	if err != nil || rec.Type != control.RecordSummary {
		// Not ours: store it as received (a status report, say).
		return true, n.ingest(ctx, door{kind: "peer", peer: s.Peer().NodeID()}, b, bytes.NewReader(data), false)
	}
	sum, err := control.UnmarshalSummary(rec.Content)
	if err != nil {
		n.metrics.rejected.WithLabelValues("peer", bundle.ReasonBlockUnintelligible.String(), "malformed_summary").Inc()
		n.log.Warn("bad summary from a peer", zap.Stringer("peer", s.Peer()), zap.Error(err))
		return true, convergence.Reject(bundle.ReasonBlockUnintelligible, fmt.Errorf("summary: %w", err))
	}
	if c := n.contactFor(s); c != nil {
		c.applySummary(ctx, sum)
	}
	return true, nil
}
