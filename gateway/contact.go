package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/gateway/control"
	"github.com/mulegate/mulegate/gateway/routing"
	"github.com/mulegate/mulegate/gateway/store"
	"go.uber.org/zap"
)

// contact is a live session with a peer, and the routing state that lives
// as long as it does: what the peer holds, according to its summaries, and
// what this node sent it and awaits confirmation of. Nothing here must
// outlive the contact: the next contact starts from a full summary.
type contact struct {
	n      *Node
	sess   convergence.Session
	peer   bundle.EID
	dest   string // the progress destination, "peer:<node-id>"
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	sem    chan struct{} // bounds concurrent sends
	start  time.Time

	mu sync.Mutex
	// The peer's holdings: its epoch's full summary, then the cumulative
	// delta with the highest sequence seen.
	haveSummary bool
	peerEpoch   uint64
	peerSeq     uint64
	peerBase    map[control.Digest]struct{}
	peerAdd     map[control.Digest]struct{}
	peerDrop    map[control.Digest]struct{}
	peerPartial map[control.Digest]uint64
	// sent: transmitted in this contact, not yet in the peer's summary.
	// sending: being transmitted now.
	sent    map[control.Digest]bundle.ID
	sending map[control.Digest]bool
	// fresh: bundles stored since the last offer; fullScan: look at
	// everything on the next offer.
	fresh    []control.Digest
	fullScan bool
	// This node's summaries to the peer.
	myEpoch     uint64
	mySeq       uint64
	myBase      map[control.Digest]struct{}
	noticesSent map[string]bool // by noticeKey
	lastSig     uint64          // of the last summary sent, to skip repeating it
	quietTicks  int             // summaries skipped since the last one sent
	// refused: bundles from the peer this node refused, for the next
	// summary to tell it (see control.Summary.Refused). At most
	// maxRefusalsPending; the oldest go first.
	refused []control.Refusal
	// wantFull: a delta of the peer's arrived for an epoch whose full
	// summary this node lacks; ask for one. peerWantsFull: the peer asked
	// this node for one. fullNow wakes the summary loop for either.
	wantFull      bool
	peerWantsFull bool
	fullNow       chan struct{}
}

// maxRefusalsPending bounds what a contact remembers to tell the peer about
// the bundles it refused. A refusal that is forgotten costs a resend in the
// next contact, nothing more.
const maxRefusalsPending = 4096

func (n *Node) onEvent(ev convergence.Event) {
	peer := ev.Session.Peer().NodeID()
	switch ev.Kind {
	case convergence.SessionUp:
		ctx, cancel := context.WithCancel(n.background())
		c := &contact{
			n: n, sess: ev.Session, peer: peer, dest: "peer:" + peer.String(),
			log: n.log.With(zap.Stringer("peer", peer)), ctx: ctx, cancel: cancel,
			wake: make(chan struct{}, 1), sem: make(chan struct{}, n.cfg.QUIC.MaxConcurrentSends),
			start: n.now(), sent: map[control.Digest]bundle.ID{}, sending: map[control.Digest]bool{},
			fullScan: true, myEpoch: rand.Uint64(), noticesSent: map[string]bool{}, fullNow: make(chan struct{}, 1),
		}
		n.mu.Lock()
		old := n.contacts[peer]
		n.contacts[peer] = c
		n.selection = nil
		pi := n.peerInfo[peer]
		if pi == nil {
			pi = &peerInfo{Node: peer}
			n.peerInfo[peer] = pi
		}
		pi.Contacts++
		pi.LastSeen = n.now()
		n.mu.Unlock()
		if old != nil {
			old.log.Debug("a newer session with this peer replaces this one")
		}
		n.metrics.contactsOpened.Inc()
		c.log.Info("contact up", zap.Stringer("address", ev.Session.RemoteAddr()))
		n.goLoop(ctx, "contact "+peer.String(), c.run)
		n.goLoop(ctx, "offer "+peer.String(), c.dispatch)
	case convergence.SessionDown:
		n.mu.Lock()
		var c *contact
		for _, cand := range n.contacts {
			if cand.sess == ev.Session {
				c = cand
			}
		}
		if c != nil && n.contacts[peer] == c {
			delete(n.contacts, peer)
			n.selection = nil
		}
		if pi := n.peerInfo[peer]; pi != nil {
			pi.LastSeen = n.now()
			if err := ev.Session.Err(); err != nil && !errors.Is(err, context.Canceled) {
				pi.LastError = err.Error()
			}
		}
		n.mu.Unlock()
		if c != nil {
			c.close()
		}
	}
}

// contactFor returns the contact of a session.
func (n *Node) contactFor(s convergence.Session) *contact {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.contacts[s.Peer().NodeID()]; c != nil && c.sess == s {
		return c
	}
	return nil
}

// close ends the contact's loops and puts what was sent but not confirmed
// back in the queue, due at once, for the next contact.
func (c *contact) close() {
	c.cancel()
	c.mu.Lock()
	sent := c.sent
	c.sent = map[control.Digest]bundle.ID{}
	c.mu.Unlock()
	ctx := context.WithoutCancel(c.ctx)
	for _, id := range sent {
		_, _ = c.n.store.MarkRetry(ctx, id, c.dest, time.Time{}, errors.New("contact ended before the peer confirmed"))
	}
	c.log.Info("contact down", zap.Duration("lasted", c.n.now().Sub(c.start)), zap.Int("unconfirmed", len(sent)))
}

// poke asks the contact to look at fresh bundles.
func (c *contact) poke(fresh ...control.Digest) {
	if len(fresh) > 0 {
		c.mu.Lock()
		c.fresh = append(c.fresh, fresh...)
		c.mu.Unlock()
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run sends summaries: a full one at once, then deltas every interval.
func (c *contact) run(ctx context.Context) {
	c.sendSummary(ctx, true)
	t := time.NewTicker(c.n.cfg.Routing.SummaryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.sess.Done():
			return
		case <-c.fullNow:
			c.mu.Lock()
			full := c.peerWantsFull
			c.mu.Unlock()
			c.sendSummary(ctx, full)
		case <-t.C:
			c.sendSummary(ctx, false)
			c.mu.Lock()
			c.fullScan = true
			c.mu.Unlock()
			c.poke()
		}
	}
}

// sendSummary tells the peer what this node holds. Deltas are cumulative
// since the epoch's full summary; once they grow past a quarter of it, a
// new full summary starts a new epoch.
func (c *contact) sendSummary(ctx context.Context, full bool) {
	n := c.n
	n.mu.Lock()
	current := make(map[control.Digest]struct{}, len(n.held))
	for d := range n.held {
		current[d] = struct{}{}
	}
	n.mu.Unlock()
	s := control.Summary{}
	c.mu.Lock()
	full = full || c.peerWantsFull
	c.peerWantsFull = false
	if !full && c.myBase != nil {
		for d := range current {
			if _, ok := c.myBase[d]; !ok {
				s.Held = append(s.Held, d)
			}
		}
		for d := range c.myBase {
			if _, ok := current[d]; !ok {
				s.Dropped = append(s.Dropped, d)
			}
		}
		full = len(s.Held)+len(s.Dropped) > len(c.myBase)/4+256
	}
	if full || c.myBase == nil {
		c.myEpoch++
		c.mySeq = 0
		c.myBase = current
		s = control.Summary{Full: true, Held: make([]control.Digest, 0, len(current))}
		for d := range current {
			s.Held = append(s.Held, d)
		}
		c.noticesSent = map[string]bool{}
	} else {
		c.mySeq++
	}
	s.Epoch, s.Seq = c.myEpoch, c.mySeq
	c.mu.Unlock()

	if parts, err := n.store.Partials(ctx); err == nil {
		for _, p := range parts {
			s.Partials = append(s.Partials, control.Partial{Digest: control.DigestOf(p.ID), Received: p.Received})
		}
	}
	if notices, err := n.state.notices(n.now()); err == nil {
		// Verified notices first: they are the ones this node vouches for.
		notices = append(notices, n.relayedNotices(n.now())...)
		c.mu.Lock()
		for _, nt := range notices {
			if k := noticeKey(nt); !c.noticesSent[k] && len(s.Notices) < 1000 {
				c.noticesSent[k] = true
				s.Notices = append(s.Notices, nt)
			}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	s.Refused, c.refused = c.refused, nil
	s.WantFull = c.wantFull
	c.mu.Unlock()
	sig := summarySignature(s)
	c.mu.Lock()
	repeat := !s.Full && !s.WantFull && len(s.Notices) == 0 && len(s.Refused) == 0 && sig == c.lastSig && c.quietTicks < 10
	if repeat {
		c.quietTicks++
	} else {
		c.lastSig, c.quietTicks = sig, 0
	}
	c.mu.Unlock()
	if repeat {
		// Nothing changed since the last summary. One is still sent every
		// tenth interval, in case the peer dropped a delta that overtook
		// its full summary.
		return
	}
	payload, err := control.MarshalSummary(s)
	if err != nil {
		c.log.Error("encoding a summary", zap.Error(err))
		return
	}
	created, seq := n.nextCreation()
	b, err := bundle.New(bundle.Params{
		Source: n.id, Destination: c.peer, Flags: bundle.FlagAdminRecord | bundle.FlagMustNotFragment,
		Created: created, Sequence: seq, Lifetime: time.Minute, CRCType: bundle.CRC32C,
		PayloadLength: uint64(len(payload)),
	})
	if err != nil {
		c.log.Error("building a summary bundle", zap.Error(err))
		return
	}
	if err := c.sess.Send(ctx, b, bytes.NewReader(payload)); err != nil {
		if ctx.Err() == nil {
			c.log.Debug("sending a summary", zap.Error(err))
		}
		// The refusals go in the next one.
		c.mu.Lock()
		c.refused = append(s.Refused, c.refused...)
		c.mu.Unlock()
		return
	}
	n.metrics.summariesSent.Inc()
}

// summarySignature digests what a summary says (not its sequence), so an
// unchanged cumulative delta can be recognised.
func summarySignature(s control.Summary) uint64 {
	var sig uint64 = 1469598103934665603
	mix := func(d control.Digest, salt uint64) {
		sig ^= binary.LittleEndian.Uint64(d[:8]) ^ salt
		sig *= 1099511628211
	}
	var acc uint64
	for _, d := range s.Held {
		acc += binary.LittleEndian.Uint64(d[:8])
	}
	for _, d := range s.Dropped {
		acc += binary.LittleEndian.Uint64(d[8:]) * 3
	}
	for _, p := range s.Partials {
		mix(p.Digest, p.Received)
	}
	return sig ^ acc ^ uint64(len(s.Held))<<40 ^ uint64(len(s.Dropped))<<20 ^ s.Epoch
}

// applySummary takes in a summary from the peer: its holdings (which
// confirm what this node sent), its partial receptions, and the delivery
// notices it passes on.
func (c *contact) applySummary(ctx context.Context, s control.Summary) {
	c.n.metrics.summariesRecv.Inc()
	c.mu.Lock()
	if s.WantFull && !c.peerWantsFull {
		c.peerWantsFull = true
		select {
		case c.fullNow <- struct{}{}:
		default:
		}
	}
	switch {
	case s.Full && (!c.haveSummary || s.Epoch != c.peerEpoch || s.Seq >= c.peerSeq):
		c.wantFull = false
		c.haveSummary = true
		c.peerEpoch, c.peerSeq = s.Epoch, s.Seq
		c.peerBase = digestSet(s.Held)
		c.peerAdd, c.peerDrop = nil, nil
	case !s.Full && c.haveSummary && s.Epoch == c.peerEpoch && s.Seq > c.peerSeq:
		c.peerSeq = s.Seq
		c.peerAdd, c.peerDrop = digestSet(s.Held), digestSet(s.Dropped)
	default:
		// A delta of an epoch whose full summary has not arrived (streams
		// are not ordered), or an older one: the next will do. From the
		// epoch's second delta on, its full summary is not merely late but
		// lost to this contact: ask for another.
		ask := !s.Full && s.Seq >= 2 && (!c.haveSummary || s.Epoch != c.peerEpoch) && !c.wantFull
		if ask {
			c.wantFull = true
		}
		c.mu.Unlock()
		if ask {
			c.log.Debug("the peer's full summary never arrived; asking for another", zap.Uint64("epoch", s.Epoch), zap.Uint64("seq", s.Seq))
		}
		c.acceptNotices(ctx, s.Notices)
		c.acceptRefusals(ctx, s.Refused)
		return
	}
	c.peerPartial = map[control.Digest]uint64{}
	for _, p := range s.Partials {
		c.peerPartial[p.Digest] = p.Received
	}
	// A bundle the peer holds, or (as its own delivery notice says) took
	// and delivered, is confirmed. Notices the peer merely passes on do
	// not count: it may pass on notices it could not verify.
	noticed := make(map[control.Digest]bool, len(s.Notices))
	for _, nt := range s.Notices {
		if nt.Destination.SameNode(c.peer) {
			noticed[control.DigestOf(nt.Subject)] = true
		}
	}
	var confirmed []bundle.ID
	for d, id := range c.sent {
		if c.peerHasLocked(d) || noticed[d] {
			confirmed = append(confirmed, id)
			delete(c.sent, d)
		} else if _, partial := c.peerPartial[d]; partial {
			delete(c.sent, d) // it broke off: send the rest
		}
	}
	c.fullScan = true
	c.mu.Unlock()
	for _, id := range confirmed {
		c.confirmed(ctx, id)
	}
	c.acceptNotices(ctx, s.Notices)
	c.acceptRefusals(ctx, s.Refused)
	c.poke()
}

// noteRefused remembers that this node refused a bundle from the peer, to
// tell it in the next summary.
func (c *contact) noteRefused(r control.Refusal) {
	c.mu.Lock()
	if len(c.refused) >= maxRefusalsPending {
		c.refused = c.refused[1:]
	}
	c.refused = append(c.refused, r)
	c.mu.Unlock()
}

// acceptRefusals takes in the peer's word that it refused bundles this node
// sent it: they stop waiting for a confirmation that will not come, and are
// recorded as a refusal would be at the time of sending.
func (c *contact) acceptRefusals(ctx context.Context, refused []control.Refusal) {
	if len(refused) == 0 {
		return
	}
	n := c.n
	for _, r := range refused {
		c.mu.Lock()
		id, ok := c.sent[r.Digest]
		delete(c.sent, r.Digest)
		c.mu.Unlock()
		if !ok {
			// Not awaiting confirmation: the transport reported the
			// refusal itself, or the bundle is being sent again, and that
			// send's outcome will be recorded.
			continue
		}
		attempts := 1
		if prog, err := n.store.ProgressOf(ctx, id); err == nil {
			for _, p := range prog {
				if p.Dest == c.dest {
					attempts = max(p.Attempts, 1)
				}
			}
		}
		rej := &convergence.RejectError{Reason: r.Reason, Transient: r.Transient, Err: errors.New("the peer refused it once it had arrived whole (from the peer's summary)")}
		c.refusedSend(ctx, id, attempts, rej, fmt.Errorf("%s refused %s: %w", c.peer, id, rej))
	}
	c.poke()
}

func (c *contact) acceptNotices(ctx context.Context, notices []control.Notice) {
	for _, nt := range notices {
		c.n.acceptNotice(ctx, nt)
	}
}

// confirmed records that the peer holds a bundle this node sent it.
func (c *contact) confirmed(ctx context.Context, id bundle.ID) {
	n := c.n
	if _, err := n.store.MarkDone(ctx, id, c.dest); err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Warn("recording a forwarded bundle", zap.Error(err))
	}
	n.metrics.forwarded.Inc()
	n.errors.Reset(c.peer)
	if meta, err := n.store.Get(ctx, id); err == nil {
		n.report(ctx, meta.Bundle, reportForwarded, bundle.ReasonNoInformation)
	}
}

func (c *contact) peerHasLocked(d control.Digest) bool {
	if _, ok := c.peerDrop[d]; ok {
		return false
	}
	if _, ok := c.peerBase[d]; ok {
		return true
	}
	_, ok := c.peerAdd[d]
	return ok
}

func digestSet(ds []control.Digest) map[control.Digest]struct{} {
	m := make(map[control.Digest]struct{}, len(ds))
	for _, d := range ds {
		m[d] = struct{}{}
	}
	return m
}

// dispatch sends the peer what it lacks, as the strategy allows, whenever
// something changes: a summary arrives, bundles are stored, a send ends.
func (c *contact) dispatch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.sess.Done():
			return
		case <-c.wake:
		}
		c.offer(ctx)
	}
}

// offer looks for bundles to send and starts sending them, as many at once
// as the semaphore allows.
func (c *contact) offer(ctx context.Context) {
	n := c.n
	c.mu.Lock()
	if !c.haveSummary {
		c.mu.Unlock()
		return
	}
	var candidates []control.Digest
	if c.fullScan {
		c.fullScan = false
		c.fresh = nil
		n.mu.Lock()
		candidates = make([]control.Digest, 0, len(n.held))
		for d := range n.held {
			candidates = append(candidates, d)
		}
		n.mu.Unlock()
	} else {
		candidates, c.fresh = c.fresh, nil
	}
	var todo []control.Digest
	for _, d := range candidates {
		if !c.peerHasLocked(d) && !c.sending[d] {
			if _, sent := c.sent[d]; !sent {
				todo = append(todo, d)
			}
		}
	}
	partials := make(map[control.Digest]uint64, len(c.peerPartial))
	for d, r := range c.peerPartial {
		partials[d] = r
	}
	c.mu.Unlock()
	selected := n.selected(c.peer)
	for _, d := range todo {
		n.mu.Lock()
		h, ok := n.held[d]
		n.mu.Unlock()
		if !ok || (!selected && !h.Dst.SameNode(c.peer)) || (h.Dst.IsSingleton() && h.Dst.SameNode(n.id)) {
			continue // not for this peer, or already at its destination here
		}
		c.consider(ctx, d, h.ID, partials[d], selected)
		if ctx.Err() != nil {
			return
		}
	}
}

// consider decides whether one bundle goes to the peer now, and if so
// starts sending it.
func (c *contact) consider(ctx context.Context, d control.Digest, id bundle.ID, resumeFrom uint64, selected bool) {
	n := c.n
	meta, err := n.store.Get(ctx, id)
	if err != nil {
		return
	}
	b := meta.Bundle
	if !n.forwardable(meta, c.peer) {
		return
	}
	toDestination := b.Primary.Destination.SameNode(c.peer)
	if !selected && !toDestination {
		return
	}
	if prog, err := n.store.ProgressOf(ctx, id); err == nil {
		for _, p := range prog {
			if p.Dest != c.dest {
				continue
			}
			if p.State == store.Failed || (p.State == store.Pending && p.NextAttempt.After(n.now())) {
				return
			}
		}
	}
	principal := n.peerPrincipal(c.peer)
	if err := n.acl.CheckOutbound(principal); err != nil {
		return // the access list does not let this node hand it bundles
	}
	if err := n.rates.Outbound.Allow(principal, int64(b.Payload.Length)); err != nil {
		c.mu.Lock()
		c.fullScan = true // look again once the budget refills
		c.mu.Unlock()
		return
	}
	copies, _ := n.state.copies(id)
	dec := n.strategy.Decide(routing.Candidate{ID: id, Destination: b.Primary.Destination, Copies: copies}, c.peer)
	if !dec.Send {
		return
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	c.mu.Lock()
	c.sending[d] = true
	c.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() { <-c.sem }()
		c.send(ctx, d, meta, resumeFrom, dec)
		c.mu.Lock()
		delete(c.sending, d)
		c.mu.Unlock()
		c.poke()
	}()
}

// send transmits one bundle (or, to resume the peer's partial reception,
// the fragment it lacks) and records the outcome.
func (c *contact) send(ctx context.Context, d control.Digest, meta store.Meta, resumeFrom uint64, dec routing.Decision) {
	n := c.n
	id := meta.ID
	if err := n.store.Enqueue(ctx, id, c.dest); err != nil {
		return
	}
	prog, err := n.store.MarkInFlight(ctx, id, c.dest)
	if err != nil {
		return
	}
	payload, err := n.store.OpenPayload(ctx, id)
	if err != nil {
		_, _ = n.store.MarkRetry(context.WithoutCancel(ctx), id, c.dest, n.now().Add(n.backoff.Delay(1)), err)
		return
	}
	defer payload.Close()
	out := n.prepareForward(meta.Bundle, meta.ReceivedAt, dec.PeerCopies)
	var body io.Reader = io.NewSectionReader(payload, 0, payload.Size())
	if resumeFrom > 0 && resumeFrom < out.Payload.Length {
		frag, ferr := out.Fragment(resumeFrom, out.Payload.Length-resumeFrom)
		if ferr == nil {
			c.log.Info("resuming an interrupted transfer", zap.String("bundle", id.String()), zap.Uint64("from", resumeFrom), zap.Uint64("bytes", frag.Payload.Length))
			out = frag
			body = io.NewSectionReader(payload, int64(resumeFrom), int64(frag.Payload.Length))
		}
	}
	err = c.sess.Send(ctx, out, body)
	if err == nil {
		n.metrics.transmitted.Inc()
		n.metrics.bytesOut.Add(float64(out.Payload.Length))
		c.mu.Lock()
		c.sent[d] = id
		c.mu.Unlock()
		if dec.CountCopies {
			_ = n.state.setCopies(id, dec.KeepCopies)
		}
		return
	}
	var rej *convergence.RejectError
	if errors.As(err, &rej) {
		if out.Primary.IsFragment() && !rej.Transient {
			// A refused resumption says nothing final about the bundle:
			// the peer's partial reception may have gone (expired,
			// completed from another peer), and a lone fragment is refused
			// where signatures are required. The next attempt sends what
			// the peer's summary then shows it lacks.
			rej = &convergence.RejectError{Reason: rej.Reason, Transient: true, Err: rej.Err}
		}
		c.refusedSend(ctx, id, prog.Attempts, rej, err)
		return
	}
	n.metrics.sendErrors.WithLabelValues("transient").Inc()
	next := time.Time{}
	if ctx.Err() == nil && c.sess.Err() == nil {
		// The link failed while the contact lasts: back off, or a peer
		// that keeps failing would be hammered at once, in step with every
		// other bundle queued for it.
		n.errors.Record(c.peer, n.now())
		next = n.now().Add(n.backoff.Delay(prog.Attempts))
	}
	// Otherwise the contact itself ended: the next contact should try at
	// once, as for what was sent but not confirmed (see close).
	_, _ = n.store.MarkRetry(context.WithoutCancel(ctx), id, c.dest, next, err)
}

// refusedSend records the peer's refusal of a bundle, as its transport
// reported it or as the peer's summary did: a fatal refusal stops sending
// it to this peer, a transient one backs off.
func (c *contact) refusedSend(ctx context.Context, id bundle.ID, attempts int, rej *convergence.RejectError, err error) {
	n := c.n
	wctx := context.WithoutCancel(ctx)
	if !rej.Transient {
		n.metrics.sendErrors.WithLabelValues("fatal").Inc()
		_, _ = n.store.MarkFailed(wctx, id, c.dest, err)
		c.log.Info("peer refused a bundle for good", zap.String("bundle", id.String()), zap.String("reason", rej.Reason.String()), zap.Error(err))
		return
	}
	// A transient refusal (full store, rate limit, the same bundle
	// arriving from another peer) is the peer working as intended, not
	// a peer error: back off, but do not count it against the peer.
	n.metrics.sendErrors.WithLabelValues("transient").Inc()
	_, _ = n.store.MarkRetry(wctx, id, c.dest, n.now().Add(n.backoff.Delay(attempts)), err)
}

// selected reports whether this node pushes bundles to peer: with a peer
// limit L and more live contacts than L, only the ring's choice. The
// choice is recomputed when contacts come or go, and at least every second
// (as peers turn bad or recover).
func (n *Node) selected(peer bundle.EID) bool {
	limit := n.cfg.Routing.PeerLimit
	if limit <= 0 {
		return true
	}
	now := n.now()
	n.mu.Lock()
	if n.selection == nil || now.Sub(n.selectedAt) > time.Second {
		peers := make([]bundle.EID, 0, len(n.contacts))
		for p := range n.contacts {
			peers = append(peers, p)
		}
		n.selection = map[bundle.EID]bool{}
		for _, p := range routing.SelectPeers(n.id, peers, limit, func(e bundle.EID) bool { return n.errors.Bad(e, now) }) {
			n.selection[p.NodeID()] = true
		}
		n.selectedAt = now
	}
	sel := n.selection[peer.NodeID()]
	n.mu.Unlock()
	return sel
}
