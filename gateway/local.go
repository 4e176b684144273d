package gateway

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/control"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/policy/identity"
	"go.uber.org/zap"
)

// Register makes endpoint deliverable on this node and remembers it across
// restarts. Endpoints of the node's own ID are always deliverable; groups
// (dtn://~name/…) need registering. Bundles already held for a newly
// registered group are queued for it.
func (n *Node) Register(ctx context.Context, endpoint bundle.EID) error {
	if endpoint.IsSingleton() && !endpoint.SameNode(n.id) {
		return fmt.Errorf("%w: %s belongs to another node; register endpoints of %s or groups (dtn://~name/…)", bundle.ErrBadEID, endpoint, n.id)
	}
	n.mu.Lock()
	known := n.endpoints[endpoint]
	n.endpoints[endpoint] = true
	n.mu.Unlock()
	if known {
		return nil
	}
	if err := n.state.addEndpoint(endpoint); err != nil {
		return err
	}
	var after uint64
	for {
		metas, err := n.store.ByDestination(ctx, endpoint, after, 500)
		if err != nil {
			return err
		}
		for _, m := range metas {
			after = m.Arrival
			if m.Bundle.Primary.IsFragment() {
				// Applications get whole bundles only.
				n.reassemble(ctx, m.ID.Whole(), m.Bundle.Primary.TotalADULength)
				continue
			}
			if err := n.store.Enqueue(ctx, m.ID, "local:"+endpoint.String()); err != nil {
				return err
			}
		}
		if len(metas) < 500 {
			break
		}
	}
	n.notifyWatchers(endpoint)
	return nil
}

// Endpoints lists the registered endpoints.
func (n *Node) Endpoints() []bundle.EID {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]bundle.EID, 0, len(n.endpoints))
	for e := range n.endpoints {
		out = append(out, e)
	}
	return out
}

// Deliveries lists bundles waiting at a local endpoint, oldest first.
func (n *Node) Deliveries(ctx context.Context, endpoint bundle.EID, limit int) ([]store.Meta, error) {
	due, err := n.store.Due(ctx, "local:"+endpoint.String(), n.now(), limit)
	if err != nil {
		return nil, err
	}
	out := make([]store.Meta, len(due))
	for i, q := range due {
		out[i] = q.Meta
	}
	return out, nil
}

// OpenPayload opens a held bundle's payload.
func (n *Node) OpenPayload(ctx context.Context, id bundle.ID) (*store.Payload, error) {
	return n.store.OpenPayload(ctx, id)
}

// Ack records that the application at endpoint has taken bundle id. It is
// then delivered, at most once per endpoint even across restarts, and
// deleted once no destination on this node still needs it.
func (n *Node) Ack(ctx context.Context, endpoint bundle.EID, id bundle.ID) error {
	meta, err := n.store.Get(ctx, id)
	if err != nil {
		return err
	}
	dest := "local:" + endpoint.String()
	prog, err := n.store.ProgressOf(ctx, id)
	if err != nil {
		return err
	}
	found := false
	for _, p := range prog {
		if p.Dest == dest {
			found = true
			if p.State == store.Done {
				return nil
			}
		}
	}
	if !found {
		return fmt.Errorf("bundle %s is not waiting at %s: %w", id, endpoint, store.ErrNotFound)
	}
	if _, err := n.store.MarkDone(ctx, id, dest); err != nil {
		return err
	}
	n.delivered(ctx, meta.Bundle, "local")
	return nil
}

// delivered counts a delivery, reports it, and deletes the bundle when
// nothing on this node needs it any more.
func (n *Node) delivered(ctx context.Context, b *bundle.Bundle, to string) {
	n.metrics.delivered.WithLabelValues(to).Inc()
	n.report(ctx, b, reportDelivered, bundle.ReasonNoInformation)
	n.deleteIfDone(ctx, b)
}

// deleteIfDone deletes a bundle addressed to this node once every local and
// adapter destination has it. A tombstone then refuses copies that mules
// still carry, until the delivery notice reaches them.
func (n *Node) deleteIfDone(ctx context.Context, b *bundle.Bundle) {
	dst := b.Primary.Destination
	if !dst.IsSingleton() {
		return // group bundles keep travelling to the other members
	}
	id := b.ID()
	prog, err := n.store.ProgressOf(ctx, id)
	if err != nil {
		return
	}
	for _, p := range prog {
		if (strings.HasPrefix(p.Dest, "local:") || strings.HasPrefix(p.Dest, "adapter:")) && p.State != store.Done {
			return
		}
	}
	if err := n.store.Delete(ctx, id, bundle.ReasonNoInformation); err != nil && !errors.Is(err, store.ErrNotFound) {
		n.log.Warn("deleting a delivered bundle", zap.String("bundle", id.String()), zap.Error(err))
		return
	}
	n.metrics.deleted.WithLabelValues("delivered").Inc()
	n.forgetHeld(id)
}

// Watch returns a channel that receives a value whenever a bundle arrives
// for endpoint, and a function to stop watching.
func (n *Node) Watch(endpoint bundle.EID) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.watchers[endpoint] == nil {
		n.watchers[endpoint] = map[chan struct{}]bool{}
	}
	n.watchers[endpoint][ch] = true
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(n.watchers[endpoint], ch)
		n.mu.Unlock()
	}
}

func (n *Node) notifyWatchers(endpoint bundle.EID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.watchers[endpoint] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// noticeDelivered signs and records a delivery notice for a bundle that
// reached this node, its destination.
func (n *Node) noticeDelivered(ctx context.Context, b *bundle.Bundle) {
	key, ok := n.ident.TLSCertificate().PrivateKey.(ed25519.PrivateKey)
	if !ok {
		return
	}
	now := n.now()
	nt := control.Notice{
		Subject:     b.ID(),
		Destination: n.id,
		DeliveredAt: bundle.FromTime(now),
		Expires:     bundle.FromTime(b.ExpiresAt(now)),
	}
	var chain [][]byte
	for _, c := range n.ident.Chain() {
		chain = append(chain, c.Raw)
	}
	if err := nt.Sign(key, chain); err != nil {
		n.log.Warn("signing a delivery notice", zap.Error(err))
		return
	}
	if added, err := n.state.putNotice(nt); err != nil {
		n.log.Warn("recording a delivery notice", zap.Error(err))
	} else if added {
		n.metrics.notices.WithLabelValues("created").Inc()
	}
}

// maxRelayedNotices bounds the notices this node passes on without being
// able to verify them (see acceptNotice). Anyone can make such notices, so
// they must not grow without bound; one that does not fit is simply not
// passed on, which costs only the purge it might have caused further on.
const maxRelayedNotices = 4096

// noticeKey tells notices apart by their signature as well as their
// subject, so that a forged notice passed on first cannot crowd out the
// genuine one about the same bundle.
func noticeKey(nt control.Notice) string {
	return nt.Subject.String() + "\x00" + string(nt.Signature)
}

// acceptNotice verifies a delivery notice a peer passed on and, if it holds,
// deletes this node's copy of the bundle. A notice that does not verify
// deletes nothing and is counted as rejected.
//
// The signer's certificate is checked without pinning: under trust on
// first use, a notice counts only if its key is the one pinned when its
// signer connected to this node directly. Anyone can make a self-signed
// certificate for any node ID, so a notice from a node never met proves
// nothing; it is passed on to peers (which may have met the signer) but
// deletes nothing here and refuses nothing later. Pinning its key would
// be worse: the real node would then be refused in its handshake.
func (n *Node) acceptNotice(ctx context.Context, nt control.Notice) {
	if _, known, _ := n.state.notice(nt.Subject); known {
		return
	}
	if nt.Destination.SameNode(n.id) {
		return // only this node signs notices for itself
	}
	if nt.Expires != 0 && nt.Expires.Time().Before(n.now()) {
		return
	}
	key := noticeKey(nt)
	n.mu.Lock()
	_, relayed := n.relayed[key]
	n.mu.Unlock()
	if relayed {
		return
	}
	chain, err := nt.Verify()
	if err == nil {
		_, err = n.trust.VerifyKnown(chain, nt.Destination.NodeID().String())
	}
	if errors.Is(err, identity.ErrNotPinned) {
		n.relayNotice(key, nt, err)
		return
	}
	if err != nil {
		n.metrics.notices.WithLabelValues("rejected").Inc()
		n.log.Warn("delivery notice refused", zap.String("bundle", nt.Subject.String()), zap.Stringer("signer", nt.Destination), zap.Error(err))
		return
	}
	if _, err := n.state.putNotice(nt); err != nil {
		n.log.Warn("recording a delivery notice", zap.Error(err))
		return
	}
	n.metrics.notices.WithLabelValues("accepted").Inc()
	n.mu.Lock()
	for k, r := range n.relayed {
		if r.Subject == nt.Subject {
			delete(n.relayed, k) // the verified notice travels in its place
		}
	}
	n.mu.Unlock()
	// Delete the copy only if the notice is about a bundle for the signer.
	meta, err := n.store.Get(ctx, nt.Subject)
	if err != nil {
		if st, lerr := n.store.Lookup(ctx, nt.Subject); lerr == nil && st.Partial {
			_ = n.store.Delete(ctx, nt.Subject, bundle.ReasonNoInformation)
		}
		return
	}
	if !meta.Bundle.Primary.Destination.SameNode(nt.Destination) {
		n.metrics.notices.WithLabelValues("rejected").Inc()
		n.log.Warn("delivery notice signed by a node that is not the bundle's destination", zap.String("bundle", nt.Subject.String()), zap.Stringer("signer", nt.Destination), zap.Stringer("destination", meta.Bundle.Primary.Destination))
		return
	}
	if err := n.store.Delete(ctx, nt.Subject, bundle.ReasonNoInformation); err != nil && !errors.Is(err, store.ErrNotFound) {
		n.log.Warn("deleting a delivered bundle", zap.Error(err))
		return
	}
	n.metrics.deleted.WithLabelValues("delivery_notice").Inc()
	n.forgetHeld(nt.Subject)
	n.log.Info("deleted a carried copy: its destination has it", zap.String("bundle", nt.Subject.String()), zap.Stringer("destination", nt.Destination))
}

// relayNotice keeps a notice this node cannot verify, to pass on in its
// summaries and never act upon. The set lives in memory only: losing it in
// a restart loses nothing this node relies on.
func (n *Node) relayNotice(key string, nt control.Notice, why error) {
	// One without an expiry would be passed on for as long as the node runs.
	keep := nt.Expires != 0
	n.mu.Lock()
	if len(n.relayed) >= maxRelayedNotices {
		keep = false
	}
	if keep {
		n.relayed[key] = nt
	}
	n.mu.Unlock()
	n.metrics.notices.WithLabelValues("unverified").Inc()
	n.log.Info("delivery notice from a node never met: not acted upon",
		zap.String("bundle", nt.Subject.String()), zap.Stringer("signer", nt.Destination), zap.Bool("passed_on", keep), zap.Error(why))
}

// relayedNotices returns the unverified notices still worth passing on at
// now, and forgets the expired ones.
func (n *Node) relayedNotices(now time.Time) []control.Notice {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]control.Notice, 0, len(n.relayed))
	for k, nt := range n.relayed {
		if nt.Expires != 0 && nt.Expires.Time().Before(now) {
			delete(n.relayed, k)
			continue
		}
		out = append(out, nt)
	}
	return out
}

// The status report kinds (RFC 9171 §6.1).
type reportKind int

const (
	reportReceived reportKind = iota
	reportForwarded
	reportDelivered
	reportDeleted
)

var reportFlag = map[reportKind]bundle.BundleFlags{
	reportReceived:  bundle.FlagReportReception,
	reportForwarded: bundle.FlagReportForwarding,
	reportDelivered: bundle.FlagReportDelivery,
	reportDeleted:   bundle.FlagReportDeletion,
}

// report sends a status report about b to its report-to endpoint, if b
// asked for this kind.
func (n *Node) report(ctx context.Context, b *bundle.Bundle, kind reportKind, reason bundle.StatusReason) {
	if b == nil || !b.Primary.Flags.Has(reportFlag[kind]) || b.IsAdminRecord() || b.Primary.ReportTo.IsNone() {
		return
	}
	r := bundle.NewStatusReport(b, reason, n.now(), kind == reportReceived, kind == reportForwarded, kind == reportDelivered, kind == reportDeleted)
	payload, err := r.Marshal()
	if err != nil {
		return
	}
	lifetime := max(b.Primary.Lifetime, time.Hour)
	if err := n.originate(ctx, b.Primary.ReportTo, bundle.FlagAdminRecord, lifetime, payload); err != nil {
		n.log.Warn("sending a status report", zap.String("bundle", b.ID().String()), zap.Error(err))
		return
	}
	n.metrics.statusReports.Inc()
}
