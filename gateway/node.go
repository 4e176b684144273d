package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/convergence/quic"
	"github.com/mulegate/mulegate/gateway/control"
	"github.com/mulegate/mulegate/gateway/routing"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/policy"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/bpsec"
	"github.com/mulegate/mulegate/policy/identity"
	"github.com/mulegate/mulegate/policy/ratelimit"
	"go.uber.org/zap"
)

// LayerFunc builds a convergence layer that delivers incoming bundles to
// sink and session events to events. Tests and simulations pass one to use
// an in-memory link instead of QUIC.
type LayerFunc func(sink convergence.Sink, events func(convergence.Event)) (convergence.Layer, error)

// Options are what a Node is built from.
type Options struct {
	// Config must be expanded and valid (config.Config.Expanded, Validate).
	Config *config.Config
	Logger *zap.Logger
	// Identity and Trust default to those in DATA_DIR/identity, created on
	// first run.
	Identity *identity.Identity
	Trust    *identity.Trust
	// Layer, when set, replaces the QUIC layer built from Config.
	Layer LayerFunc
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AdapterExecutable is the program built-in adapters run from, as
	// `PROGRAM adapter NAME`; empty means this process's own executable.
	AdapterExecutable string
}

// Node is a running mulegate node. Build it with New, start it with Run.
type Node struct {
	cfg      *config.Config
	log      *zap.Logger
	id       bundle.EID
	ident    *identity.Identity
	trust    *identity.Trust
	store    *store.Store
	state    *nodeState
	layer    convergence.Layer
	strategy routing.Strategy
	limits   policy.Limits
	acl      *acl.ACL
	rates    *ratelimit.Limiters
	verifier *bpsec.Verifier
	signKey  *bpsec.Key // nil: this node does not sign what it originates
	backoff  routing.Backoff
	errors   *routing.ErrorTracker
	routes   []route
	now      func() time.Time
	metrics  *metrics
	started  time.Time

	// reassemblyMu serialises reassembly (see reassemble).
	reassemblyMu sync.Mutex
	// reassembleOnStart: bundles whose fragments were all stored before a
	// restart, possibly without being reassembled.
	reassembleOnStart map[bundle.ID]uint64

	seqMu  sync.Mutex
	lastMs bundle.DTNTime
	seq    uint64

	mu        sync.Mutex
	contacts  map[bundle.EID]*contact // live contacts by peer node ID
	held      map[control.Digest]heldEntry
	endpoints map[bundle.EID]bool // registered local endpoints
	watchers  map[bundle.EID]map[chan struct{}]bool
	// relayed: delivery notices passed on but not verified (see
	// acceptNotice), by noticeKey.
	relayed   map[string]control.Notice
	peerInfo  map[bundle.EID]*peerInfo     // every peer ever seen or configured
	peerIDs   map[bundle.EID]identity.Peer // authenticated identities from handshakes
	listeners []convergence.Listener
	// selection caches the ring's choice of peers (see selected).
	selection  map[bundle.EID]bool
	selectedAt time.Time
	adapters   *host.Manager
	queues     map[string]*adapterQueue

	// adapterSelf is the executable built-in adapters run from ("" for
	// this process's own); tests set it.
	adapterSelf string

	wg     sync.WaitGroup
	ctx    context.Context // lives from Run until Close
	cancel context.CancelFunc
}

// peerInfo is what the node remembers about a peer between contacts.
type peerInfo struct {
	Node       bundle.EID
	Address    string // where to dial, if known
	Static     bool   // configured: redialled with backoff
	Discovered time.Time
	LastSeen   time.Time
	Contacts   int
	LastError  string
}

// New opens the node's store and state and builds its convergence layer. It
// does not listen or dial until Run.
func New(opts Options) (*Node, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("gateway: no configuration")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	id, err := cfg.NodeID()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data_dir: %w", err)
	}
	ident, trust := opts.Identity, opts.Trust
	idDir := filepath.Join(cfg.DataDir, identity.DirName)
	if ident == nil {
		if ident, err = identity.LoadOrCreate(idDir, id.String()); err != nil {
			return nil, fmt.Errorf("loading this node's identity (mulegate identity show --data %s): %w", cfg.DataDir, err)
		}
	}
	if trust == nil {
		if trust, err = identity.LoadTrust(idDir); err != nil {
			return nil, fmt.Errorf("loading trust: %w", err)
		}
	}
	strategy, err := routing.New(cfg.Routing.Strategy, cfg.Routing.SprayCopies)
	if err != nil {
		return nil, fmt.Errorf("routing.strategy: %w", err)
	}
	routes, err := compileRoutes(cfg.Routes)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, log: log.With(zap.Stringer("node", id)), id: id, ident: ident, trust: trust,
		strategy: strategy, routes: routes, now: now, metrics: newMetrics(),
		limits: policy.Limits{
			MaxBundleSize: uint64(cfg.Limits.MaxBundleSize), MaxLifetime: cfg.Limits.MaxLifetime,
			MaxHops: cfg.Limits.MaxHops, MaxClockSkew: cfg.Limits.MaxClockSkew,
		},
		backoff:     routing.Backoff{Min: cfg.Routing.RetryMin, Max: cfg.Routing.RetryMax},
		errors:      routing.NewErrorTracker(5),
		contacts:    map[bundle.EID]*contact{},
		held:        map[control.Digest]heldEntry{},
		endpoints:   map[bundle.EID]bool{},
		peerIDs:     map[bundle.EID]identity.Peer{},
		watchers:    map[bundle.EID]map[chan struct{}]bool{},
		relayed:     map[string]control.Notice{},
		peerInfo:    map[bundle.EID]*peerInfo{},
		queues:      map[string]*adapterQueue{},
		started:     now(),
		adapterSelf: opts.AdapterExecutable,
	}
	if err := n.setupPolicy(); err != nil {
		return nil, err
	}
	ctx := context.Background()
	n.store, err = store.Open(ctx, filepath.Join(cfg.DataDir, "store"), store.Options{
		Logger: n.log.Named("store"), MaxBytes: int64(cfg.Store.MaxBytes), MaxBundles: cfg.Store.MaxBundles,
		Now: now, ScrubOnOpen: true,
	})
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	if n.state, err = openState(cfg.DataDir); err != nil {
		n.store.Close()
		return nil, err
	}
	n.metrics.reg.MustRegister(gauges{n})
	for _, e := range cfg.Endpoints {
		ep, _ := bundle.ParseEID(e)
		n.endpoints[ep] = true
	}
	eps, err := n.state.endpoints()
	if err != nil {
		n.closeStorage()
		return nil, err
	}
	for _, ep := range eps {
		n.endpoints[ep] = true
	}
	if err := n.loadHeld(ctx); err != nil {
		n.closeStorage()
		return nil, err
	}
	for _, p := range cfg.Peers {
		e, _ := bundle.ParseEID(p.Node)
		n.peerInfo[e.NodeID()] = &peerInfo{Node: e.NodeID(), Address: p.Address, Static: true}
	}
	layer := opts.Layer
	if layer == nil {
		layer = n.quicLayer
	}
	if n.layer, err = layer(n, n.onEvent); err != nil {
		n.closeStorage()
		return nil, fmt.Errorf("building the convergence layer: %w", err)
	}
	return n, nil
}

func (n *Node) quicLayer(sink convergence.Sink, events func(convergence.Event)) (convergence.Layer, error) {
	q := n.cfg.QUIC
	return quic.New(quic.Options{
		TLS:    n.peerTLS(),
		Sink:   sink,
		Events: events,
		Log:    n.log.Named("quic"),
		// The layer's own bound only stops absurd sizes; the node's limit
		// (policy.Limits, from the header) refuses the rest, and counts it.
		MaxBundleSize:      edgeLimit(uint64(n.cfg.Limits.MaxBundleSize)),
		MaxIncomingStreams: q.MaxIncomingStreams,
		HandshakeTimeout:   q.HandshakeTimeout,
		IdleTimeout:        q.IdleTimeout,
		KeepAlive:          q.KeepAlive,
		SendStallTimeout:   q.SendStallTimeout,
	})
}

// edgeLimit is the convergence layer's size bound: half as much again as
// the node's, so that the node itself refuses (and counts) oversized
// bundles from their headers.
func edgeLimit(limit uint64) uint64 {
	if limit > 1<<61 {
		return limit
	}
	return limit + limit/2 + 1<<20
}

// loadHeld builds the in-memory index of held bundle IDs from the store.
func (n *Node) loadHeld(ctx context.Context) error {
	return n.store.EachHeld(ctx, func(h store.Held) error {
		if h.Partial {
			return nil
		}
		m, err := n.store.Get(ctx, h.ID)
		if err != nil {
			return nil
		}
		dst := m.Bundle.Primary.Destination
		n.held[control.DigestOf(h.ID)] = heldEntry{ID: h.ID, Dst: dst}
		dests := n.destinations(dst)
		if m.Bundle.Primary.IsFragment() {
			// Fragments are never queued for delivery; a crash may have
			// come between storing the last of them and reassembling.
			if len(dests) > 0 {
				if n.reassembleOnStart == nil {
					n.reassembleOnStart = map[bundle.ID]uint64{}
				}
				n.reassembleOnStart[h.ID.Whole()] = m.Bundle.Primary.TotalADULength
			}
			return nil
		}
		// A crash between storing a bundle and queueing it leaves it
		// without progress records: queue it now.
		if len(dests) > 0 {
			prog, err := n.store.ProgressOf(ctx, h.ID)
			if err == nil && len(prog) == 0 {
				return n.store.Enqueue(ctx, h.ID, dests...)
			}
		}
		return nil
	})
}

// ID is this node's ID.
func (n *Node) ID() bundle.EID { return n.id }

// Store is the node's bundle store, for inspection.
func (n *Node) Store() *store.Store { return n.store }

// Identity is the node's identity.
func (n *Node) Identity() *identity.Identity { return n.ident }

// Start listens, dials the static peers, and starts the node's background
// work, which runs until ctx ends or Close is called.
func (n *Node) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	n.mu.Lock()
	n.ctx, n.cancel = ctx, cancel
	n.mu.Unlock()
	if addr := n.cfg.QUIC.Listen; addr != "" {
		ln, err := n.layer.Listen(ctx, addr)
		if err != nil {
			cancel()
			return fmt.Errorf("quic.listen %s: %w", addr, err)
		}
		n.mu.Lock()
		n.listeners = append(n.listeners, ln)
		n.mu.Unlock()
		n.log.Info("listening", zap.String("quic", ln.Addr().String()))
	}
	if err := n.startAdapters(ctx); err != nil {
		cancel()
		return err
	}
	if err := n.startDiscovery(ctx); err != nil {
		cancel()
		return err
	}
	n.goLoop(ctx, "sweeper", n.runSweeper)
	n.mu.Lock()
	pending := n.reassembleOnStart
	n.reassembleOnStart = nil
	n.mu.Unlock()
	if len(pending) > 0 {
		n.goLoop(ctx, "reassembly", func(ctx context.Context) {
			for whole, total := range pending {
				n.reassemble(ctx, whole, total)
			}
		})
	}
	n.mu.Lock()
	for _, p := range n.peerInfo {
		if p.Static {
			p := p
			n.goLoop(ctx, "dial "+p.Node.String(), func(ctx context.Context) { n.keepDialling(ctx, p.Node, p.Address) })
		}
	}
	n.mu.Unlock()
	return nil
}

// Run is Start, then waiting for ctx to end.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// Close stops the node: the layer closes (sessions end; bundles being
// received finish storing), background loops end, and the store and state
// close.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.cancel != nil {
		n.cancel()
	}
	n.mu.Unlock()
	err := n.layer.Close()
	n.wg.Wait()
	n.mu.Lock()
	mgr := n.adapters
	n.mu.Unlock()
	if mgr != nil {
		err = errors.Join(err, mgr.Close())
	}
	return errors.Join(err, n.closeStorage())
}

func (n *Node) closeStorage() error {
	var errs []error
	if n.state != nil {
		errs = append(errs, n.state.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// goLoop runs fn in a goroutine the node waits for on Close.
func (n *Node) goLoop(ctx context.Context, name string, fn func(context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				n.log.Error("background task panicked", zap.String("task", name), zap.Any("panic", r), zap.Stack("stack"))
			}
		}()
		fn(ctx)
	}()
}

// background returns the node's run context, or a cancelled one before Run.
func (n *Node) background() context.Context {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctx != nil {
		return n.ctx
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// ListenAddrs are the addresses the node listens on.
func (n *Node) ListenAddrs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, l := range n.listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// nextCreation returns a creation timestamp unique for this node.
func (n *Node) nextCreation() (time.Time, uint64) {
	n.seqMu.Lock()
	defer n.seqMu.Unlock()
	t := n.now()
	ms := bundle.FromTime(t)
	if ms > n.lastMs {
		n.lastMs, n.seq = ms, 0
	} else {
		n.seq++
	}
	return n.lastMs.Time(), n.seq
}

// runSweeper deletes expired bundles and sends deletion reports.
func (n *Node) runSweeper(ctx context.Context) {
	err := n.store.RunSweeper(ctx, n.cfg.Store.SweepInterval, func(deleted []store.Deleted) {
		for _, d := range deleted {
			n.metrics.expired.Inc()
			n.metrics.deleted.WithLabelValues(d.Reason.String()).Inc()
			n.forgetHeld(d.ID)
			if !d.Partial {
				n.report(ctx, d.Bundle, reportDeleted, d.Reason)
			}
		}
		if _, err := n.state.notices(n.now()); err != nil {
			n.log.Warn("pruning delivery notices", zap.Error(err))
		}
		if err := n.state.pruneInbound(n.now()); err != nil {
			n.log.Warn("pruning inbound message IDs", zap.Error(err))
		}
	})
	if err != nil && ctx.Err() == nil {
		n.log.Error("sweeper stopped", zap.Error(err))
	}
}

// heldEntry is what the node keeps in memory about each bundle it holds,
// so that routing passes need not read the store for bundles they skip.
type heldEntry struct {
	ID  bundle.ID
	Dst bundle.EID
}

func (n *Node) addHeld(b *bundle.Bundle) {
	id := b.ID()
	d := control.DigestOf(id)
	n.mu.Lock()
	n.held[d] = heldEntry{ID: id, Dst: b.Primary.Destination}
	contacts := n.contactList()
	n.mu.Unlock()
	for _, c := range contacts {
		c.poke(d)
	}
}

func (n *Node) forgetHeld(id bundle.ID) {
	n.mu.Lock()
	delete(n.held, control.DigestOf(id))
	n.mu.Unlock()
	_ = n.state.forget(id)
}

// contactList returns the live contacts. n.mu must be held.
func (n *Node) contactList() []*contact {
	out := make([]*contact, 0, len(n.contacts))
	for _, c := range n.contacts {
		out = append(out, c)
	}
	return out
}
