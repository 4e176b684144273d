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
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"go.uber.org/zap"
)

// adapterQueue is the durable delivery queue of one adapter, built on the
// store's progress records for destination "adapter:<name>", and the
// adapter's inbound fetch loop.
type adapterQueue struct {
	n    *Node
	cfg  config.Adapter
	dest string
	log  *zap.Logger
	wake chan struct{}
	sem  chan struct{}

	mu        sync.Mutex
	reachable bool
	inFlight  map[bundle.ID]bool
}

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
		q := &adapterQueue{
			n: n, cfg: a, dest: "adapter:" + a.Name, log: n.log.With(zap.String("adapter", a.Name)),
			wake: make(chan struct{}, 1), sem: make(chan struct{}, a.MaxInFlight), inFlight: map[bundle.ID]bool{},
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

// onAdapterChange hears of an adapter's state changes. When its service
// becomes reachable, its queue flushes at once.
func (n *Node) onAdapterChange(st host.Status) {
	n.mu.Lock()
	q := n.queues[st.Name]
	n.mu.Unlock()
	if q == nil {
		return
	}
	q.mu.Lock()
	was := q.reachable
	q.reachable = st.Running && st.Reachable
	now := q.reachable
	q.mu.Unlock()
	if now != was {
		q.log.Info("adapter connectivity changed", zap.Bool("reachable", now), zap.String("last_error", st.LastError))
	}
	q.poke()
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

func (q *adapterQueue) isReachable() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reachable
}

// run delivers due bundles while the service is reachable. While Check
// fails, it waits without burning attempts.
func (q *adapterQueue) run(ctx context.Context) {
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		if q.isReachable() {
			q.deliverDue(ctx)
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

// deliverDue starts a delivery for every due bundle, up to max_in_flight at
// once.
func (q *adapterQueue) deliverDue(ctx context.Context) {
	n := q.n
	due, err := n.store.Due(ctx, q.dest, n.now(), 4*cap(q.sem))
	if err != nil {
		if ctx.Err() == nil {
			q.log.Warn("reading the adapter queue", zap.Error(err))
		}
		return
	}
	for _, item := range due {
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
			return
		}
		n.wg.Add(1)
		go func(item store.Queued) {
			defer n.wg.Done()
			defer func() { <-q.sem }()
			q.deliver(ctx, item.Meta)
			q.mu.Lock()
			delete(q.inFlight, item.ID)
			q.mu.Unlock()
		}(item)
		if !q.isReachable() {
			return
		}
	}
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
		delay := n.backoff.Delay(prog.Attempts)
		if res.RetryAfter > delay {
			delay = res.RetryAfter
		}
		if errors.Is(res.Err, plugins.ErrUnavailable) || errors.Is(res.Err, plugins.ErrUnreachable) {
			// The adapter or its service is down: that is connectivity,
			// not this bundle's fault. Wait for Check to say it is back.
			q.mu.Lock()
			q.reachable = false
			q.mu.Unlock()
			delay = 0
		}
		cause := res.Err
		if cause == nil {
			cause = errors.New(res.Reason)
		}
		_, _ = n.store.MarkRetry(wctx, id, q.dest, n.now().Add(delay), cause)
	}
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
	for ctx.Err() == nil {
		if !q.isReachable() {
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
			select {
			case <-ctx.Done():
				return
			case <-time.After(n.cfg.AdapterCheckInterval):
			}
			continue
		}
		err = adapter.Fetch(ctx, plugins.FetchRequest{MaxMessages: 64, MaxBytes: int64(min(uint64(n.cfg.Limits.MaxBundleSize), 1<<62)), Wait: 5 * time.Second}, func(in plugins.Inbound) error {
			q.inbound(ctx, adapter, in)
			return nil
		})
		if err != nil && ctx.Err() == nil {
			if errors.Is(err, plugins.ErrUnsupported) {
				q.log.Info("adapter does not fetch; fetch loop off")
				return
			}
			q.log.Debug("fetch", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(n.cfg.Routing.RetryMin):
			}
		}
	}
}

// inbound stores one inbound message as a bundle, then acks it; a message
// the node cannot take is nacked with the reason. The bundle's creation
// timestamp is remembered per upstream message ID, so a message stored just
// before a crash, and offered again, becomes the same bundle and is
// recognised as a duplicate.
func (q *adapterQueue) inbound(ctx context.Context, adapter plugins.Adapter, in plugins.Inbound) {
	n := q.n
	d := door{kind: "adapter", adapter: q.cfg.Name, sign: true}
	nack := func(err error) {
		if e := adapter.Nack(context.WithoutCancel(ctx), in.Receipt, err.Error()); e != nil {
			q.log.Warn("nack", zap.Error(e))
		}
	}
	dst, err := bundle.ParseEID(in.Destination)
	if err != nil {
		n.metrics.rejected.WithLabelValues(d.kind, bundle.ReasonOf(err).String(), kindOf(err)).Inc()
		nack(fmt.Errorf("rejected: destination: %w", err))
		return
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
				nack(err)
				return
			}
		}
	}
	b, err := bundle.New(bundle.Params{
		Source: src, Destination: dst, Created: created, Sequence: seq, Lifetime: lifetime,
		CRCType: bundle.CRC32C, HopLimit: n.cfg.Routing.DefaultHopLimit, PayloadLength: uint64(in.PayloadLength),
	})
	if err != nil {
		n.metrics.rejected.WithLabelValues(d.kind, bundle.ReasonOf(err).String(), kindOf(err)).Inc()
		nack(fmt.Errorf("rejected: %w", err))
		return
	}
	err = n.ingest(ctx, d, b, in.Payload, false)
	if err != nil && !errors.Is(err, store.ErrDuplicate) {
		nack(err)
		return
	}
	if err := adapter.Ack(context.WithoutCancel(ctx), in.Receipt); err != nil {
		q.log.Warn("ack after storing", zap.String("bundle", b.ID().String()), zap.Error(err))
	}
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
