package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/bpsec"
	"go.uber.org/zap"
)

// door says through which of the three doors a bundle came in. Two more
// kinds are internal: "local" for bundles this node originates itself
// (status reports), and "reassembly" for a bundle rebuilt here from the
// fragments that came in through the doors.
type door struct {
	kind    string     // "api", "peer", "adapter", "local", "reassembly"
	peer    bundle.EID // kind "peer": the authenticated previous hop
	adapter string     // kind "adapter": its name
	// sign: this node originates the bundle and signs it (not for "peer").
	sign bool
	// blockUnsupported: a block this node cannot process asked for a status
	// report (RFC 9171 §4.2.4), so the reception report says
	// block_unsupported. admit sets it.
	blockUnsupported bool
}

func (d door) from() string {
	switch d.kind {
	case "peer":
		return "peer:" + d.peer.String()
	case "adapter":
		return "adapter:" + d.adapter
	}
	return d.kind
}

// ErrDelivered refuses a copy of a bundle this node knows, from a verified
// delivery notice, has reached its destination.
var ErrDelivered = bundle.NewError(bundle.ReasonNoInformation, "bundle already delivered")

// admit runs the checks that come before any payload byte is read: the
// unknown-block flags, the limits, and the delivery notices. It may remove
// blocks from b that their flags say to discard, and records in d whether
// one of them asked for a report.
func (n *Node) admit(ctx context.Context, d *door, b *bundle.Bundle) error {
	n.metrics.received.WithLabelValues(d.kind).Inc()
	report, err := b.ProcessUnknownBlocks(knownBlock)
	// The report is sent once, with the outcome: by rejected if the bundle
	// is refused, by stored if it is kept.
	d.blockUnsupported = report
	if err == nil {
		err = n.limits.Check(b, n.now())
	}
	if err == nil {
		if nt, ok, _ := n.state.notice(b.ID()); ok && nt.Destination.SameNode(b.Primary.Destination) {
			err = fmt.Errorf("%w: %s reported it delivered at %s", ErrDelivered, nt.Destination, nt.DeliveredAt)
		}
	}
	if err != nil {
		return n.rejected(ctx, *d, b, err)
	}
	return nil
}

// knownBlock is what this node understands: the standard blocks and its
// own spray-and-wait block, which other implementations discard.
func knownBlock(t bundle.BlockType) bool {
	return bundle.KnownBlockType(t) || t == blockSprayCopies
}

// rejected counts and logs a refusal, sends the status reports it calls
// for, and returns err unchanged.
func (n *Node) rejected(ctx context.Context, d door, b *bundle.Bundle, err error) error {
	reason := bundle.ReasonOf(err)
	kind := kindOf(err)
	n.metrics.rejected.WithLabelValues(d.kind, reason.String(), kind).Inc()
	fields := []zap.Field{zap.String("door", d.from()), zap.String("reason", reason.String()), zap.String("kind", kind), zap.Error(err)}
	if b != nil {
		fields = append(fields, zap.String("bundle", b.ID().String()))
	}
	n.log.Info("bundle refused", fields...)
	if b != nil && reportsRefusal(d, err) {
		// The refusal must reach the sender even if the door is closing.
		ctx = context.WithoutCancel(ctx)
		if d.blockUnsupported {
			n.report(ctx, b, reportReceived, bundle.ReasonBlockUnsupported)
		}
		n.report(ctx, b, reportDeleted, reason)
	}
	return err
}

// reportsRefusal says whether refusing a bundle deletes it in the sense of
// RFC 9171 §5.10, which calls for a deletion report: the bundle came from
// another node (through a peer, or as fragments rebuilt here), and the
// refusal is final. The other doors hear of a refusal from the error
// itself. A transient refusal (a rate limit, a cancelled transfer) deletes
// nothing: the sender keeps the bundle and retries. A copy of a bundle
// already delivered, or one from a peer not allowed to hand this node
// anything, was never taken in; reporting on those would only let anyone
// make this node send reports.
func reportsRefusal(d door, err error) bool {
	if d.kind != "peer" && d.kind != "reassembly" {
		return false
	}
	if errors.Is(err, ErrDelivered) || errors.Is(err, acl.ErrPeerDenied) || errors.Is(err, store.ErrDuplicate) {
		return false
	}
	_, transient := convergence.Classify(err)
	return !transient
}

// ingest admits and stores a bundle from any door, then routes it. It
// returns once the bundle is durable, which is when the door may
// acknowledge it. With keepPartial, an interrupted payload leaves a partial
// reception in the store.
func (n *Node) ingest(ctx context.Context, d door, b *bundle.Bundle, payload io.Reader, keepPartial bool) error {
	if err := n.admit(ctx, &d, b); err != nil {
		return err
	}
	// A peer's bundle (or one reassembled from fragments peers brought) is
	// verified as it streams into the store; a bundle this node originates
	// is signed as it streams in.
	var chk *bpsec.Check
	var signing *bpsec.Signing
	sinks := []io.Writer{}
	if d.kind == "peer" || d.kind == "reassembly" {
		c, err := n.verifyStart(d, b)
		if err != nil {
			return n.rejected(ctx, d, b, err)
		}
		if c != nil {
			chk = c
			sinks = append(sinks, c)
		}
	} else if d.sign && n.signKey != nil && b.Block(bundle.BlockIntegrity) == nil {
		s, err := bpsec.NewSigning(b, *n.signKey)
		if err != nil {
			return n.rejected(ctx, d, b, err)
		}
		signing = s
		sinks = append(sinks, s)
	}
	w, err := n.store.BeginPut(ctx, b, d.from())
	if err != nil {
		if errors.Is(err, store.ErrDuplicate) {
			// Not counted as a refusal: duplicates are how epidemic routing
			// works.
			return err
		}
		return n.rejected(ctx, d, b, err)
	}
	defer w.Abort(false)
	dst := io.Writer(w)
	if len(sinks) > 0 {
		dst = io.MultiWriter(append([]io.Writer{w}, sinks...)...)
	}
	if _, err := io.Copy(dst, payload); err != nil {
		n.log.Debug("payload ended early", zap.String("bundle", w.ID()), zap.Uint64("received", w.Offset()), zap.Error(err))
		if keepPartial && errors.Is(err, convergence.ErrInterrupted) && w.Offset() > 0 {
			if aerr := w.Abort(true); aerr != nil {
				n.log.Warn("keeping a partial reception", zap.String("bundle", w.ID()), zap.Error(aerr))
			} else {
				n.log.Info("transfer interrupted; kept the part that arrived", zap.String("bundle", w.ID()), zap.Uint64("received", w.Offset()), zap.Uint64("length", w.Len()))
			}
		}
		return err
	}
	if chk != nil {
		signer, err := chk.Finish()
		if err != nil {
			return n.rejected(ctx, d, b, err)
		}
		if chk.Signed() {
			_ = n.state.setSigner(b.ID(), signatureStatus(signer))
		}
	}
	if signing != nil {
		if err := signing.Finish(); err != nil {
			return n.rejected(ctx, d, b, err)
		}
		if err := w.SetBundle(b); err != nil {
			return n.rejected(ctx, d, b, err)
		}
	}
	if err := w.Commit(ctx); err != nil {
		if errors.Is(err, store.ErrDuplicate) {
			return err
		}
		return n.rejected(ctx, d, b, err)
	}
	n.stored(ctx, d, b)
	return nil
}

// resume completes a partial reception from a fragment that carries exactly
// the missing range. It reports false when the fragment does not fit a
// partial, and the fragment should be stored as a bundle of its own.
func (n *Node) resume(ctx context.Context, d door, frag *bundle.Bundle, payload io.Reader) (bool, error) {
	whole := frag.ID().Whole()
	st, err := n.store.Lookup(ctx, whole)
	if err != nil || !st.Partial || st.Receiving {
		return false, nil
	}
	off := frag.Primary.FragmentOffset
	if off != st.Received || off+frag.Payload.Length != frag.Primary.TotalADULength || st.Length != frag.Primary.TotalADULength {
		return false, nil
	}
	n.metrics.received.WithLabelValues(d.kind).Inc()
	if err := n.limits.Check(frag, n.now()); err != nil {
		return true, n.rejected(ctx, d, frag, err)
	}
	w, err := n.store.Resume(ctx, whole)
	if err != nil {
		return false, nil
	}
	defer w.Abort(false)
	if _, err := io.Copy(w, payload); err != nil {
		if errors.Is(err, convergence.ErrInterrupted) {
			_ = w.Abort(true)
		}
		return true, err
	}
	if err := w.Commit(ctx); err != nil {
		return true, n.rejected(ctx, d, frag, err)
	}
	meta, err := n.store.Get(ctx, whole)
	if err != nil {
		return true, err
	}
	// The part that arrived before the interruption was not verified as
	// it streamed in: check the whole bundle now, and drop it if it fails.
	if err := n.verifyStored(ctx, meta.Bundle); err != nil {
		_ = n.store.Delete(context.WithoutCancel(ctx), whole, bundle.ReasonOf(err))
		return true, n.rejected(ctx, d, meta.Bundle, err)
	}
	n.log.Info("resumed an interrupted transfer", zap.String("bundle", whole.String()), zap.Uint64("from", off), zap.Uint64("bytes", frag.Payload.Length))
	n.stored(ctx, d, meta.Bundle)
	return true, nil
}

// stored does what follows a successful store: counting, the reception
// report, routing, and waking whoever waits for it.
func (n *Node) stored(ctx context.Context, d door, b *bundle.Bundle) {
	// The bundle is durable and acknowledged: what follows must not be cut
	// short by the door closing (a peer leaving, the node shutting down).
	ctx = context.WithoutCancel(ctx)
	n.metrics.stored.WithLabelValues(d.kind).Inc()
	n.metrics.bytesIn.WithLabelValues(d.kind).Add(float64(b.Payload.Length))
	id := b.ID()
	n.log.Debug("bundle stored", zap.String("bundle", id.String()), zap.String("door", d.from()), zap.Stringer("destination", b.Primary.Destination), zap.Uint64("bytes", b.Payload.Length))
	if d.kind == "peer" {
		reason := bundle.ReasonNoInformation
		if d.blockUnsupported {
			reason = bundle.ReasonBlockUnsupported
		}
		n.report(ctx, b, reportReceived, reason)
	}
	if n.strategy.InitialCopies() > 0 {
		copies := n.strategy.InitialCopies()
		if c, ok := sprayCopies(b); ok {
			copies = c
		}
		if err := n.state.setCopies(id, copies); err != nil {
			n.log.Warn("recording spray copies", zap.Error(err))
		}
	}
	n.route(ctx, b)
	n.addHeld(b)
	if b.Primary.IsFragment() && len(n.destinations(b.Primary.Destination)) > 0 {
		// Held (and carried on) as it is; what this node delivers is the
		// bundle rebuilt once all its fragments are here.
		n.reassemble(ctx, b.ID().Whole(), b.Primary.TotalADULength)
	}
}

// destinations are where a bundle goes on this node: a configured route
// sends it to an adapter; a bundle for this node (or a group it belongs to)
// goes to a local endpoint; anything else is carried for peers, which needs
// no record until it is sent.
func (n *Node) destinations(dst bundle.EID) []string {
	if r, ok := n.routeFor(dst); ok {
		return []string{"adapter:" + r.adapter}
	}
	if n.isLocal(dst) {
		return []string{"local:" + dst.String()}
	}
	return nil
}

// route records where a stored bundle goes, and wakes whoever takes it.
func (n *Node) route(ctx context.Context, b *bundle.Bundle) {
	dst := b.Primary.Destination
	id := b.ID()
	dests := n.destinations(dst)
	if b.Primary.IsFragment() {
		// An application or an adapter only ever gets whole bundles: a
		// fragment waits for the rest (see reassemble).
		dests = nil
	}
	if len(dests) > 0 {
		if err := n.store.Enqueue(ctx, id, dests...); err != nil {
			n.log.Error("queueing a bundle", zap.String("bundle", id.String()), zap.Error(err))
			return
		}
	}
	if dst.IsSingleton() && dst.SameNode(n.id) {
		n.noticeDelivered(ctx, b)
	}
	for _, d := range dests {
		if ep, ok := strings.CutPrefix(d, "local:"); ok {
			e, _ := bundle.ParseEID(ep)
			n.notifyWatchers(e)
		}
	}
	n.wakeAdapters()
}

// isLocal reports whether bundles to dst are delivered on this node.
func (n *Node) isLocal(dst bundle.EID) bool {
	if dst.IsSingleton() {
		return dst.SameNode(n.id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.endpoints[dst]
}

// SendRequest describes a bundle an application sends.
type SendRequest struct {
	// Source is the sending endpoint, on this node; zero means the node ID.
	Source      bundle.EID
	Destination bundle.EID
	// ReportTo receives the status reports Flags ask for; zero means
	// Source.
	ReportTo bundle.EID
	Lifetime time.Duration
	Flags    bundle.BundleFlags
	// HopLimit zero means the configured default.
	HopLimit uint64
	// Length is the payload's length in bytes.
	Length uint64
	// Sign overrides signatures.sign for this bundle when not nil.
	Sign *bool
}

// Send creates a bundle from req with its payload read from payload, and
// returns its ID once it is durably stored. If payload ends before Length
// bytes, nothing is stored.
func (n *Node) Send(ctx context.Context, req SendRequest, payload io.Reader) (bundle.ID, error) {
	src := req.Source
	if src.IsZero() {
		src = n.id
	}
	if !src.SameNode(n.id) {
		return bundle.ID{}, n.rejected(ctx, door{kind: "api"}, nil, fmt.Errorf("%w: source %s is not an endpoint of this node (%s)", bundle.ErrBadSource, src, n.id))
	}
	if req.Destination.IsZero() || req.Destination.IsNone() {
		return bundle.ID{}, fmt.Errorf("%w: a destination is required", bundle.ErrBadEID)
	}
	hops := req.HopLimit
	if hops == 0 {
		hops = n.cfg.Routing.DefaultHopLimit
	}
	created, seq := n.nextCreation()
	b, err := bundle.New(bundle.Params{
		Source: src, Destination: req.Destination, ReportTo: req.ReportTo, Flags: req.Flags,
		Created: created, Sequence: seq, Lifetime: req.Lifetime, CRCType: bundle.CRC32C,
		HopLimit: hops, PayloadLength: req.Length,
	})
	if err != nil {
		return bundle.ID{}, n.rejected(ctx, door{kind: "api"}, nil, err)
	}
	sign := n.cfg.Signatures.Sign
	if req.Sign != nil {
		sign = *req.Sign
	}
	if sign && n.signKey == nil {
		key, err := bpsec.KeyOf(n.ident)
		if err != nil {
			return bundle.ID{}, fmt.Errorf("this node's identity cannot sign: %w", err)
		}
		n.signKey = &key
	}
	if err := n.ingest(ctx, door{kind: "api", sign: sign}, b, payload, false); err != nil {
		return bundle.ID{}, err
	}
	return b.ID(), nil
}

// originate stores a bundle this node itself creates (status reports), with
// a small in-memory payload.
func (n *Node) originate(ctx context.Context, dst bundle.EID, flags bundle.BundleFlags, lifetime time.Duration, payload []byte) error {
	created, seq := n.nextCreation()
	b, err := bundle.New(bundle.Params{
		Source: n.id, Destination: dst, Flags: flags, Created: created, Sequence: seq,
		Lifetime: lifetime, CRCType: bundle.CRC32C, HopLimit: n.cfg.Routing.DefaultHopLimit,
		PayloadLength: uint64(len(payload)),
	})
	if err != nil {
		return err
	}
	return n.ingest(ctx, door{kind: "local", sign: true}, b, bytes.NewReader(payload), false)
}
