package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway/routing"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/policy/ratelimit"
	"go.uber.org/zap"
)

// adapterQueue is the durable delivery queue of one adapter, built on the
// store's progress records for destination "adapter:<name>", and the
// adapter's inbound fetch loop.
//
// Whether the queue may deliver is read from the host's current status of
// the adapter every time (see up), never from a flag of the queue's own: a
// flag set by a late delivery result, after the host had already said the
// adapter was back, would stall the queue until the next change that might
// never come.
type adapterQueue struct {
	n    *Node
	cfg  config.Adapter
	dest string
	log  *zap.Logger
	wake chan struct{}
	sem  chan struct{}

	mu       sync.Mutex
	inFlight map[bundle.ID]bool
	// outageAt is when a delivery last failed because the service was
	// down (the adapter said so, or it answered Retry while Check failed).
	// The queue then delivers nothing until a Check that started after it
	// succeeds: the host's, or the queue's own (probe). Zero: no outage.
	outageAt time.Time
	// flush is set when the service was seen down; the next time the
	// queue is up, every pending bundle becomes due at once, whatever
	// backoff it had earned.
	flush bool
	// probing is the queue's own Check in progress, probed the last one
	// that finished (see checkAfter).
	probing, probed *probe
	// restarts is the adapter's restart count last seen, for the counter.
	restarts int
	// reachable is the reachability last logged.
	reachable bool
	// refused remembers, by upstream message ID, inbound messages refused
	// for good that the adapter could not set aside (no Reject): offered
	// again, they are nacked at once (see inbound).
	refused map[string]refusal
}

// refusal is an inbound message refused for good, remembered until.
type refusal struct {
	reason string
	until  time.Time
}

// probe is one Check the queue made itself.
type probe struct {
	start time.Time
	done  chan struct{}
	err   error // set before done is closed
}

const (
	// refusalMemory is how long a refused inbound message is remembered,
	// and refusalMemoryMax how many at most: enough to stop a hot loop of
	// offers and refusals, bounded so that a flood of junk cannot grow the
	// node.
	refusalMemory    = 10 * time.Minute
	refusalMemoryMax = 4096
	// probeTimeout bounds the queue's own Check, as the host bounds its.
	probeTimeout = 5 * time.Second
	// maxPoisonPause caps the fetch loop's pause while it brings only
	// messages refused for good (see fetchLoop).
	maxPoisonPause = 30 * time.Second
)

// startAdapters launches the configured adapters and their queues.
func (n *Node) startAdapters(ctx context.Context) error {
	if len(n.cfg.Adapters) == 0 {
		return nil
	}
	mgr, err := host.New(host.Options{
		Log:           n.log.Named("adapters"),
		PluginDir:     n.cfg.PluginDir,
		Self:          n.adapterSelf,
		CheckInterval: n.cfg.AdapterCheckInterval,
		OnChange:      n.onAdapterChange,
	})
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.adapters = mgr
	n.mu.Unlock()
	for i, a := range n.cfg.Adapters {
		raw, err := json.Marshal(a.Config)
		if err != nil {
			return fmt.Errorf("adapters[%d].config: %w", i, err)
		}
		if a.Config == nil {
			raw = []byte("{}")
		}
		if a.MaxInFlight <= 0 { // a configuration built in code, not loaded
			a.MaxInFlight = config.DefaultMaxInFlight
		}
		q := &adapterQueue{
			n: n, cfg: a, dest: "adapter:" + a.Name, log: n.log.With(zap.String("adapter", a.Name)),
			wake: make(chan struct{}, 1), sem: make(chan struct{}, a.MaxInFlight), inFlight: map[bundle.ID]bool{},
			flush: true, refused: map[string]refusal{},
		}
		n.mu.Lock()
		n.queues[a.Name] = q
		n.mu.Unlock()
		if err := mgr.Start(ctx, host.Spec{Name: a.Name, Builtin: a.Builtin, Path: a.Path, SHA256: a.SHA256, Config: raw}); err != nil {
			return fmt.Errorf("adapters[%d] (%s): %w", i, a.Name, err)
		}
		n.goLoop(ctx, "adapter queue "+a.Name, q.run)
		if a.Fetch {
			n.goLoop(ctx, "adapter fetch "+a.Name, q.fetchLoop)
		}
	}
	return nil
}

// onAdapterChange hears of an adapter's state changes from the host: it
// counts restarts, notes that the service was down (so that the queue
// flushes when it is back), and wakes the queue, which reads the new state
// for itself.
func (n *Node) onAdapterChange(st host.Status) {
	n.mu.Lock()
	q := n.queues[st.Name]
	n.mu.Unlock()
	if q == nil {
		return
	}
	up := st.Running && st.Reachable
	q.mu.Lock()
	if !up {
		q.flush = true
	}
	changed := up != q.reachable
	q.reachable = up
	restarted := st.Restarts - q.restarts
	if restarted > 0 {
		q.restarts = st.Restarts
	}
	q.mu.Unlock()
	if restarted > 0 {
		n.metrics.adapterRestarts.WithLabelValues(st.Name).Add(float64(restarted))
	}
	if changed {
		q.log.Info("adapter connectivity changed", zap.Bool("reachable", up), zap.Bool("running", st.Running), zap.String("last_error", st.LastError))
	}
	q.poke()
}

// adapterStatus is the host's current status of adapter name.
func (n *Node) adapterStatus(name string) (host.Status, bool) {
	n.mu.Lock()
	mgr := n.adapters
	n.mu.Unlock()
	if mgr == nil {
		return host.Status{}, false
	}
	return mgr.Status(name)
}

func (n *Node) wakeAdapters() {
	n.mu.Lock()
	qs := make([]*adapterQueue, 0, len(n.queues))
	for _, q := range n.queues {
		qs = append(qs, q)
	}
	n.mu.Unlock()
	for _, q := range qs {
		q.poke()
	}
}

func (q *adapterQueue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// up reports whether the queue may deliver now: the adapter's process
// runs, its service answered the host's last Check, and no delivery has
// failed for an outage since a Check succeeded.
func (q *adapterQueue) up() bool {
	st, ok := q.n.adapterStatus(q.cfg.Name)
	if !ok || !st.Running || !st.Reachable {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.outageAt.IsZero() {
		return true
	}
	// Any Check that succeeded after the outage ends it: the host's (its
	// status says reachable as of LastCheck), or the queue's own.
	if st.LastCheck.After(q.outageAt) || (q.probed != nil && q.probed.err == nil && q.probed.start.After(q.outageAt)) {
		q.outageAt = time.Time{}
		q.log.Info("the adapter's service answers Check again; delivering")
		return true
	}
	return false
}

// held reports whether only an outage seen by a delivery keeps the queue
// from delivering: the host still says the service is reachable.
func (q *adapterQueue) held() bool {
	st, ok := q.n.adapterStatus(q.cfg.Name)
	if !ok || !st.Running || !st.Reachable {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.outageAt.IsZero()
}

// noteOutage records that a delivery found the service down at at: the
// queue holds until a Check after it succeeds, then flushes.
func (q *adapterQueue) noteOutage(at time.Time, cause error) {
	q.mu.Lock()
	first := q.outageAt.IsZero()
	if at.After(q.outageAt) {
		q.outageAt = at
	}
	q.flush = true
	q.mu.Unlock()
	if first {
		q.log.Info("a delivery found the service down; holding the queue until Check succeeds again", zap.Error(cause))
	}
}

// checkAfter returns the answer of a Check of the adapter that started at
// or after t: one that finished, or one in progress, or a new one. Many
// deliveries answered Retry at once then share one Check.
func (q *adapterQueue) checkAfter(ctx context.Context, t time.Time) error {
	q.mu.Lock()
	if p := q.probed; p != nil && !p.start.Before(t) {
		q.mu.Unlock()
		return p.err
	}
	if p := q.probing; p != nil && !p.start.Before(t) {
		q.mu.Unlock()
		select {
		case <-p.done:
			return p.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p := &probe{start: time.Now(), done: make(chan struct{})}
	q.probing = p
	q.mu.Unlock()

	p.err = q.check(ctx)
	q.mu.Lock()
	if q.probing == p {
		q.probing = nil
	}
	if q.probed == nil || q.probed.start.Before(p.start) {
		q.probed = p
	}
	q.mu.Unlock()
	close(p.done)
	return p.err
}

func (q *adapterQueue) check(ctx context.Context) error {
	adapter, err := q.n.adapters.Adapter(q.cfg.Name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return adapter.Check(ctx)
}

// run delivers due bundles while the service is reachable. While Check
// fails, it waits without burning attempts; when Check succeeds again,
// every pending bundle is due at once.
func (q *adapterQueue) run(ctx context.Context) {
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	var lastProbe time.Time
	for {
		more := false
		if q.up() {
			q.flushIfDown(ctx)
			more = q.deliverDue(ctx)
		} else if q.held() && time.Since(lastProbe) >= q.n.cfg.Routing.RetryMin {
			// The host has not seen the outage a delivery saw (it may have
			// been brief, or the host polls rarely): ask Check ourselves,
			// every retry_min, rather than wait for the host. This lasts
			// only until the host notices too, or the service is back.
			lastProbe = time.Now()
			if q.checkAfter(ctx, lastProbe) == nil {
				continue // up() sees it, and ends the hold
			}
		}
		if more {
			continue
		}
		// Retries come due with time: look again at least every RetryMin.
		idle.Reset(q.n.cfg.Routing.RetryMin)
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-idle.C:
		}
	}
}

// flushIfDown makes every pending bundle due now if the service was down
// since the last flush. Their backoff was earned against a service that
// was not there, or by deliveries that failed before anyone noticed it was
// gone; it is not owed now that it is back.
func (q *adapterQueue) flushIfDown(ctx context.Context) {
	q.mu.Lock()
	flush := q.flush
	q.flush = false
	q.mu.Unlock()
	if !flush {
		return
	}
	moved, err := q.n.store.Reschedule(ctx, q.dest, q.n.now())
	if err != nil {
		if ctx.Err() == nil {
			q.log.Warn("making the queue due after an outage", zap.Error(err))
			q.mu.Lock()
			q.flush = true
			q.mu.Unlock()
		}
		return
	}
	if moved > 0 {
		q.log.Info("service is back; the queue flushes at once", zap.Int("bundles_due_now", moved))
	}
}

// deliverDue starts a delivery for every due bundle, up to max_in_flight
// at once, and reports whether there may be more due right now.
func (q *adapterQueue) deliverDue(ctx context.Context) bool {
	n := q.n
	limit := 4 * cap(q.sem)
	due, err := n.store.Due(ctx, q.dest, n.now(), limit)
	if err != nil {
		if ctx.Err() == nil {
			q.log.Warn("reading the adapter queue", zap.Error(err))
		}
		return false
	}
	started := 0
	for _, item := range due {
		if !q.up() {
			return false
		}
		q.mu.Lock()
		busy := q.inFlight[item.ID]
		if !busy {
			q.inFlight[item.ID] = true
		}
		q.mu.Unlock()
		if busy {
			continue
		}
		select {
		case q.sem <- struct{}{}:
		case <-ctx.Done():
			q.mu.Lock()
			delete(q.inFlight, item.ID)
			q.mu.Unlock()
			return false
		}
		started++
		n.wg.Add(1)
		go func(item store.Queued) {
			defer n.wg.Done()
			defer func() { <-q.sem }()
			q.deliver(ctx, item.Meta)
			q.mu.Lock()
			delete(q.inFlight, item.ID)
			q.mu.Unlock()
		}(item)
	}
	// A full page means the queue is longer than one look: look again at
	// once instead of waiting for the next wake-up. Deliveries in flight
	// pace that, as each new one waits for a free slot.
	return started > 0 && len(due) == limit
}

// deliver hands one bundle to the adapter and records the answer.
func (q *adapterQueue) deliver(ctx context.Context, meta store.Meta) {
	n := q.n
	id := meta.ID
	prog, err := n.store.MarkInFlight(ctx, id, q.dest)
	if err != nil {
		return
	}
	wctx := context.WithoutCancel(ctx)
	adapter, err := n.adapters.Adapter(q.cfg.Name)
	if err != nil {
		_, _ = n.store.MarkRetry(wctx, id, q.dest, n.now().Add(n.backoff.Delay(1)), err)
		return
	}
	payload, err := n.store.OpenPayload(ctx, id)
	if err != nil {
		_, _ = n.store.MarkRetry(wctx, id, q.dest, n.now().Add(n.backoff.Delay(prog.Attempts)), err)
		return
	}
	defer payload.Close()
	res := adapter.Deliver(ctx, q.meta(meta), io.NewSectionReader(payload, 0, payload.Size()))
	answered := time.Now()
	switch res.Status {
	case plugins.OK:
		if _, err := n.store.MarkDone(wctx, id, q.dest); err != nil {
			q.log.Warn("recording a delivery", zap.String("bundle", id.String()), zap.Error(err))
			return
		}
		q.log.Debug("delivered", zap.String("bundle", id.String()))
		n.delivered(wctx, meta.Bundle, "adapter")
	case plugins.Reject:
		_, _ = n.store.MarkFailed(wctx, id, q.dest, errors.New(res.Reason))
		q.log.Warn("adapter rejected a bundle; it stays in the failed state", zap.String("bundle", id.String()), zap.String("reason", res.Reason))
		n.report(wctx, meta.Bundle, reportDeleted, bundle.ReasonTransmissionCanceled)
	default: // Retry
		cause := res.Err
		if cause == nil {
			cause = errors.New(res.Reason)
		}
		if ctx.Err() != nil {
			// The node is stopping and cut the delivery short: not the
			// bundle's fault either. Due again at the next start.
			_, _ = n.store.MarkRetry(wctx, id, q.dest, n.now(), cause)
			return
		}
		if q.outage(ctx, res, answered) {
			// The adapter or its service is down: that is connectivity,
			// not this bundle's fault. No backoff: it is due as soon as
			// the queue delivers again, which is once a Check succeeds.
			q.noteOutage(answered, cause)
			_, _ = n.store.MarkRetry(wctx, id, q.dest, n.now(), fmt.Errorf("service down: %w", cause))
			return
		}
		delay := n.backoff.Delay(prog.Attempts)
		if res.RetryAfter > delay {
			delay = res.RetryAfter
		}
		p, err := n.store.MarkRetry(wctx, id, q.dest, n.now().Add(delay), cause)
		if err == nil {
			q.log.Debug("delivery to be retried", zap.String("bundle", id.String()), zap.Int("attempts", p.Attempts),
				zap.Duration("delay", delay), zap.Time("next_attempt", p.NextAttempt), zap.String("reason", res.Reason))
		}
	}
}

// outage tells whether a delivery answered Retry because the service (or
// the adapter) is down rather than because of this bundle. An adapter's
// own Retry does not say which it is over the wire, so while the host
// still believes the service reachable, a Check made after the answer
// decides: a service that fails it is down.
func (q *adapterQueue) outage(ctx context.Context, res plugins.Result, answered time.Time) bool {
	if errors.Is(res.Err, plugins.ErrUnavailable) || errors.Is(res.Err, plugins.ErrUnreachable) {
		return true
	}
	if st, ok := q.n.adapterStatus(q.cfg.Name); !ok || !st.Running || !st.Reachable {
		return true
	}
	return q.checkAfter(ctx, answered) != nil
}

// meta is what the adapter sees of a bundle.
func (q *adapterQueue) meta(m store.Meta) plugins.Meta {
	b := m.Bundle
	p := b.Primary
	pm := plugins.Meta{
		BundleID: m.ID.String(), Source: p.Source.String(), Destination: p.Destination.String(),
		ReportTo: p.ReportTo.String(), CreationTime: uint64(p.Creation.Time), Sequence: p.Creation.Sequence,
		Lifetime: p.Lifetime, PayloadLength: int64(b.Payload.Length), Flags: uint64(p.Flags),
	}
	pm.SignatureStatus = q.n.Signature(m)
	if hc, ok, err := b.HopCount(); ok && err == nil {
		pm.HopCount, pm.HopLimit = uint32(min(hc.Count, 1<<32-1)), uint32(min(hc.Limit, 1<<32-1))
	}
	if r, ok := q.n.routeFor(p.Destination); ok && r.adapter == q.cfg.Name {
		pm.Route = r.pattern
		pm.Options = ExpandOptions(r.options, b)
	}
	return pm
}

// fetchLoop takes inbound messages while the service is reachable: each
// becomes a bundle, is stored, and only then acknowledged upstream.
func (q *adapterQueue) fetchLoop(ctx context.Context) {
	n := q.n
	pause := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	// poisoned counts fetches in a row that brought nothing but messages
	// refused for good: an adapter that cannot set them aside offers them
	// again as soon as it may, and without a pause the loop would spin on
	// them. The pause is capped well below retry_max, since a good message
	// that arrives meanwhile waits it out.
	poisoned := 0
	poisonBackoff := routing.Backoff{Min: n.cfg.Routing.RetryMin, Max: min(n.cfg.Routing.RetryMax, maxPoisonPause)}
	for ctx.Err() == nil {
		if !q.up() {
			select {
			case <-ctx.Done():
				return
			case <-q.wake:
			case <-time.After(n.cfg.AdapterCheckInterval):
			}
			continue
		}
		adapter, err := n.adapters.Adapter(q.cfg.Name)
		if err != nil {
			if !pause(n.cfg.AdapterCheckInterval) {
				return
			}
			continue
		}
		var taken, refused int
		err = adapter.Fetch(ctx, plugins.FetchRequest{MaxMessages: 64, MaxBytes: int64(min(uint64(n.cfg.Limits.MaxBundleSize), 1<<62)), Wait: 5 * time.Second}, func(in plugins.Inbound) error {
			switch q.inbound(ctx, adapter, in) {
			case inboundStored:
				taken++
			case inboundRefused:
				refused++
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			if errors.Is(err, plugins.ErrUnsupported) {
				q.log.Info("adapter does not fetch; fetch loop off")
				return
			}
			q.log.Debug("fetch", zap.Error(err))
			if !pause(n.cfg.Routing.RetryMin) {
				return
			}
			continue
		}
		if refused > 0 && taken == 0 {
			poisoned++
			if !pause(poisonBackoff.Delay(poisoned)) {
				return
			}
		} else {
			poisoned = 0
		}
	}
}

// inboundOutcome is what became of one inbound message.
type inboundOutcome int

const (
	inboundStored  inboundOutcome = iota // stored (or held already) and acked
	inboundRetry                         // nacked: may pass later
	inboundRefused                       // refused for good: rejected, or nacked if the adapter cannot reject
)

// inbound stores one inbound message as a bundle, then acks it. A message
// the node cannot take now (its store is full, a write failed) is nacked
// with the reason and comes back later; one it can never take (its
// destination is not an endpoint ID, its lifetime or size is over this
// node's limits) is refused for good (see refuse). The bundle's creation
// timestamp is remembered per upstream message ID, so a message stored just
// before a crash, and offered again, becomes the same bundle and is
// recognised as a duplicate.
func (q *adapterQueue) inbound(ctx context.Context, adapter plugins.Adapter, in plugins.Inbound) inboundOutcome {
	n := q.n
	d := door{kind: "adapter", adapter: q.cfg.Name, sign: true}
	nack := func(err error) inboundOutcome {
		n.metrics.inboundRefused.WithLabelValues(q.cfg.Name, "transient", "nack").Inc()
		if e := adapter.Nack(context.WithoutCancel(ctx), in.Receipt, err.Error()); e != nil {
			q.log.Warn("nack", zap.Error(e))
		}
		return inboundRetry
	}
	key := in.MessageID
	if key == "" {
		key = "receipt:" + in.Receipt
	}
	if reason, ok := q.refusedBefore(key); ok {
		// Refused for good already, by an adapter that could only nack
		// it: answer at once, without taking it in (and counting and
		// logging the same refusal) again.
		n.metrics.inboundRefused.WithLabelValues(q.cfg.Name, "fatal", "nack").Inc()
		if e := adapter.Nack(context.WithoutCancel(ctx), in.Receipt, reason); e != nil {
			q.log.Warn("nack", zap.Error(e))
		}
		return inboundRefused
	}
	dst, err := bundle.ParseEID(in.Destination)
	if err != nil {
		n.metrics.rejected.WithLabelValues(d.kind, bundle.ReasonOf(err).String(), kindOf(err)).Inc()
		return q.refuse(ctx, adapter, in, key, fmt.Errorf("destination: %w", err))
	}
	src := n.id
	if in.Source != "" {
		if s, err := bundle.ParseEID(in.Source); err == nil && s.SameNode(n.id) {
			src = s
		}
	} else if s, err := n.id.Join("adapter/" + q.cfg.Name); err == nil {
		src = s
	}
	lifetime := in.Lifetime
	if lifetime <= 0 {
		lifetime = q.cfg.InboundLifetime
	}
	if lifetime <= 0 {
		lifetime = 24 * time.Hour
	}
	created, seq, known := n.state.inboundID(q.cfg.Name, in.MessageID)
	if !known {
		created, seq = n.nextCreation()
		if in.MessageID != "" {
			if err := n.state.setInboundID(q.cfg.Name, in.MessageID, created, seq, n.now().Add(lifetime)); err != nil {
				return nack(err)
			}
		}
	}
	b, err := bundle.New(bundle.Params{
		Source: src, Destination: dst, Created: created, Sequence: seq, Lifetime: lifetime,
		CRCType: bundle.CRC32C, HopLimit: n.cfg.Routing.DefaultHopLimit, PayloadLength: uint64(in.PayloadLength),
	})
	if err != nil {
		n.metrics.rejected.WithLabelValues(d.kind, bundle.ReasonOf(err).String(), kindOf(err)).Inc()
		return q.refuse(ctx, adapter, in, key, err)
	}
	err = n.ingest(ctx, d, b, in.Payload, false)
	switch {
	case err == nil, errors.Is(err, ErrDelivered),
		errors.Is(err, store.ErrDuplicate) && !errors.Is(err, store.ErrInProgress):
		// Stored, held already, or delivered already: the node has it.
	case refusedForGood(err):
		return q.refuse(ctx, adapter, in, key, err)
	default:
		return nack(err)
	}
	if err := adapter.Ack(context.WithoutCancel(ctx), in.Receipt); err != nil {
		q.log.Warn("ack after storing", zap.String("bundle", b.ID().String()), zap.Error(err))
	}
	return inboundStored
}

// refusedForGood tells a refusal of an inbound message that no later offer
// of it can change (it names something wrong with the message itself, a
// bundle error: its destination, its lifetime or size against this node's
// limits) from one that may pass (the store is full, a rate limit, a
// failed write, a broken fetch stream, a cancellation), as
// convergence.Classify does for peers.
func refusedForGood(err error) bool {
	if errors.Is(err, store.ErrFull) || errors.Is(err, ratelimit.ErrRateLimited) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var be *bundle.Error
	return errors.As(err, &be)
}

// refuse refuses an inbound message for good: the adapter sets it aside
// with the reason (Reject), where it is never offered again. An adapter
// that cannot (it answers ErrUnsupported) gets a Nack, as before Reject
// existed, and the node remembers the message for a while so that, offered
// again, it is nacked at once (see inbound), and its fetch loop backs off
// while nothing else arrives (see fetchLoop).
func (q *adapterQueue) refuse(ctx context.Context, adapter plugins.Adapter, in plugins.Inbound, key string, err error) inboundOutcome {
	wctx := context.WithoutCancel(ctx)
	reason := "refused for good: " + err.Error()
	if r, ok := adapter.(plugins.Rejecter); ok {
		rerr := r.Reject(wctx, in.Receipt, reason)
		if rerr == nil {
			q.n.metrics.inboundRefused.WithLabelValues(q.cfg.Name, "fatal", "reject").Inc()
			q.log.Warn("refused an inbound message for good; the adapter set it aside", zap.String("message", in.MessageID), zap.Error(err))
			return inboundRefused
		}
		if !errors.Is(rerr, plugins.ErrUnsupported) {
			// Reject itself failed (a full disk, say): offer it again later
			// and try again then.
			q.log.Warn("rejecting an inbound message failed; nacking it for now", zap.String("message", in.MessageID), zap.Error(rerr))
			q.n.metrics.inboundRefused.WithLabelValues(q.cfg.Name, "fatal", "nack").Inc()
			if e := adapter.Nack(wctx, in.Receipt, reason); e != nil {
				q.log.Warn("nack", zap.Error(e))
			}
			return inboundRefused
		}
	}
	q.rememberRefusal(key, reason)
	q.n.metrics.inboundRefused.WithLabelValues(q.cfg.Name, "fatal", "nack").Inc()
	q.log.Warn("refused an inbound message for good; the adapter cannot set it aside (no Reject), so it stays upstream and is nacked whenever offered",
		zap.String("message", in.MessageID), zap.Error(err))
	if e := adapter.Nack(wctx, in.Receipt, reason); e != nil {
		q.log.Warn("nack", zap.Error(e))
	}
	return inboundRefused
}

// refusedBefore reports whether the message with this key was refused for
// good recently, and why.
func (q *adapterQueue) refusedBefore(key string) (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	r, ok := q.refused[key]
	if !ok {
		return "", false
	}
	if time.Now().After(r.until) {
		delete(q.refused, key)
		return "", false
	}
	return r.reason, true
}

func (q *adapterQueue) rememberRefusal(key, reason string) {
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.refused) >= refusalMemoryMax {
		for k, r := range q.refused {
			if now.After(r.until) {
				delete(q.refused, k)
			}
		}
	}
	if len(q.refused) >= refusalMemoryMax {
		// Full of live entries: forget one. The cost of forgetting is one
		// more refusal of that message, not a wrong answer.
		for k := range q.refused {
			delete(q.refused, k)
			break
		}
	}
	q.refused[key] = refusal{reason: reason, until: now.Add(refusalMemory)}
}

// AdapterStatus is an adapter's state and queue, for the API and CLI.
type AdapterStatus struct {
	host.Status
	Queue store.StateCounts `json:"queue"`
}

// Adapters lists the configured adapters with their state and queue depth.
func (n *Node) Adapters() []AdapterStatus {
	n.mu.Lock()
	mgr := n.adapters
	n.mu.Unlock()
	if mgr == nil {
		return []AdapterStatus{}
	}
	var out []AdapterStatus
	for _, st := range mgr.Statuses() {
		out = append(out, AdapterStatus{Status: st, Queue: n.store.Counts("adapter:" + st.Name)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CheckAdapter asks an adapter now whether its service is reachable.
func (n *Node) CheckAdapter(ctx context.Context, name string) error {
	n.mu.Lock()
	mgr := n.adapters
	n.mu.Unlock()
	if mgr == nil {
		return fmt.Errorf("no adapter %q: none is configured", name)
	}
	a, err := mgr.Adapter(name)
	if err != nil {
		return err
	}
	return a.Check(ctx)
}
