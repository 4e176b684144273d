package gateway

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// PeerStatus is what the node knows about one peer.
type PeerStatus struct {
	Node         string             `json:"node"`
	Address      string             `json:"address,omitempty"`
	Static       bool               `json:"static"`
	Connected    bool               `json:"connected"`
	Selected     bool               `json:"selected"`
	ContactSince time.Time          `json:"contact_since,omitzero"`
	LastSeen     time.Time          `json:"last_seen,omitzero"`
	Contacts     int                `json:"contacts"`
	RecentErrors int                `json:"recent_errors"`
	LastError    string             `json:"last_error,omitempty"`
	Session      *convergence.Stats `json:"session,omitempty"`
}

// Peers lists every peer the node has configured or met, connected first.
func (n *Node) Peers() []PeerStatus {
	now := n.now()
	n.mu.Lock()
	out := make([]PeerStatus, 0, len(n.peerInfo))
	for node, pi := range n.peerInfo {
		ps := PeerStatus{
			Node: node.String(), Address: pi.Address, Static: pi.Static, LastSeen: pi.LastSeen,
			Contacts: pi.Contacts, LastError: pi.LastError,
		}
		if c := n.contacts[node]; c != nil {
			st := c.sess.Stats()
			ps.Connected, ps.ContactSince, ps.Session = true, c.start, &st
			if ps.Address == "" {
				ps.Address = c.sess.RemoteAddr().String()
			}
		}
		out = append(out, ps)
	}
	n.mu.Unlock()
	for i := range out {
		node, _ := bundle.ParseEID(out[i].Node)
		out[i].RecentErrors = n.errors.Count(node, now)
		out[i].Selected = out[i].Connected && n.selected(node)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Connected != out[j].Connected {
			return out[i].Connected
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// Status is a summary of the node's state.
type Status struct {
	Node      string      `json:"node"`
	Started   time.Time   `json:"started"`
	Uptime    string      `json:"uptime"`
	Listen    []string    `json:"listen"`
	Strategy  string      `json:"strategy"`
	Peers     int         `json:"peers"`
	Contacts  int         `json:"contacts"`
	Endpoints []string    `json:"endpoints"`
	Store     store.Stats `json:"store"`
	Trust     string      `json:"trust"`
	Identity  string      `json:"identity"`
}

// Status reports the node's state.
func (n *Node) Status() Status {
	n.mu.Lock()
	s := Status{
		Node: n.id.String(), Started: n.started, Uptime: n.now().Sub(n.started).Round(time.Second).String(),
		Strategy: n.strategy.Name(), Peers: len(n.peerInfo), Contacts: len(n.contacts),
	}
	for _, l := range n.listeners {
		s.Listen = append(s.Listen, l.Addr().String())
	}
	for e := range n.endpoints {
		s.Endpoints = append(s.Endpoints, e.String())
	}
	n.mu.Unlock()
	sort.Strings(s.Endpoints)
	s.Store = n.store.Stats()
	s.Trust = n.trust.Mode()
	s.Identity = n.ident.Fingerprint()
	return s
}

// BundleInfo is a held bundle with its progress towards each destination.
type BundleInfo struct {
	ID          string           `json:"id"`
	Source      string           `json:"source"`
	Destination string           `json:"destination"`
	Created     time.Time        `json:"created,omitzero"`
	Expires     time.Time        `json:"expires"`
	Received    time.Time        `json:"received"`
	From        string           `json:"from"`
	Length      uint64           `json:"payload_length"`
	HopCount    *bundle.HopCount `json:"hop_count,omitempty"`
	Fragment    bool             `json:"fragment,omitempty"`
	Progress    []ProgressInfo   `json:"progress"`
}

// ProgressInfo is where a bundle stands with one destination.
type ProgressInfo struct {
	Destination string    `json:"destination"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

func (n *Node) describe(ctx context.Context, m store.Meta) BundleInfo {
	b := m.Bundle
	bi := BundleInfo{
		ID: m.ID.String(), Source: b.Primary.Source.String(), Destination: b.Primary.Destination.String(),
		Created: b.Primary.Creation.Time.Time(), Expires: m.ExpiresAt, Received: m.ReceivedAt, From: m.From,
		Length: b.Payload.Length, Fragment: b.Primary.IsFragment(), Progress: []ProgressInfo{},
	}
	if hc, ok, err := b.HopCount(); ok && err == nil {
		bi.HopCount = &hc
	}
	if prog, err := n.store.ProgressOf(ctx, m.ID); err == nil {
		for _, p := range prog {
			bi.Progress = append(bi.Progress, ProgressInfo{Destination: p.Dest, State: p.State.String(), Attempts: p.Attempts, NextAttempt: p.NextAttempt, LastError: p.LastError})
		}
	}
	return bi
}

// Bundle describes one held bundle.
func (n *Node) Bundle(ctx context.Context, id bundle.ID) (BundleInfo, error) {
	m, err := n.store.Get(ctx, id)
	if err != nil {
		return BundleInfo{}, err
	}
	return n.describe(ctx, m), nil
}

// BundleFilter selects bundles for Bundles.
type BundleFilter struct {
	// State keeps bundles with a progress record in this state (pending,
	// in_flight, done, failed); "carried" keeps those with none.
	State string
	// Destination keeps bundles for this endpoint.
	Destination bundle.EID
	Limit       int
}

var errStopListing = errors.New("enough")

// Bundles lists held bundles, oldest first.
func (n *Node) Bundles(ctx context.Context, f BundleFilter) ([]BundleInfo, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	out := []BundleInfo{}
	err := n.store.EachHeld(ctx, func(h store.Held) error {
		if h.Partial {
			return nil
		}
		m, err := n.store.Get(ctx, h.ID)
		if err != nil {
			return nil
		}
		if !f.Destination.IsZero() && m.Bundle.Primary.Destination != f.Destination {
			return nil
		}
		bi := n.describe(ctx, m)
		if f.State != "" {
			match := f.State == "carried" && len(bi.Progress) == 0
			for _, p := range bi.Progress {
				match = match || p.State == f.State
			}
			if !match {
				return nil
			}
		}
		out = append(out, bi)
		if len(out) >= f.Limit {
			return errStopListing
		}
		return nil
	})
	if errors.Is(err, errStopListing) {
		err = nil
	}
	return out, err
}

// MetricsHandler serves the node's metrics in the Prometheus format.
func (n *Node) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{})
}

// MetricsRegistry lets other parts of the process (the API, the adapter
// host) register their metrics beside the node's.
func (n *Node) MetricsRegistry() *prometheus.Registry { return n.metrics.reg }

// gauges reads state on every scrape: peers, contacts, store use against
// its quota and by kind, queue depth and bytes per destination and state,
// and each adapter's state.
type gauges struct{ n *Node }

var (
	descPeers         = prometheus.NewDesc("mulegate_peers", "Peers this node knows.", nil, nil)
	descContacts      = prometheus.NewDesc("mulegate_contacts", "Live contacts (sessions with peers).", nil, nil)
	descStoreBytes    = prometheus.NewDesc("mulegate_store_bytes", "Bytes the store holds: used (bundles + partials + reserved) against the quota, and by kind (bundles, partials: interrupted receptions kept for resuming, reserved: receptions in progress).", []string{"kind"}, nil)
	descStoreCount    = prometheus.NewDesc("mulegate_store_bundles", "Bundles the store holds: used against the quota, and by kind (bundles, partials, receiving, tombstones: IDs remembered after deletion).", []string{"kind"}, nil)
	descQueue         = prometheus.NewDesc("mulegate_queue_depth", "Bundles per destination and progress state.", []string{"destination", "state"}, nil)
	descQueueBytes    = prometheus.NewDesc("mulegate_queue_bytes", "Bytes (metadata and payload) of the bundles per destination and progress state; a bundle queued for two destinations counts for each.", []string{"destination", "state"}, nil)
	descProgressBytes = prometheus.NewDesc("mulegate_store_progress_bytes", "Bytes of the bundles per progress state, summed over every destination.", []string{"state"}, nil)
	descAdapterUp     = prometheus.NewDesc("mulegate_adapter_up", "1 while the adapter's process runs and its service answers Check, else 0.", []string{"adapter"}, nil)
	descAdapterState  = prometheus.NewDesc("mulegate_adapter_state", "1 for the adapter's current state, 0 for the others: down (its process is not running: crashed, restarting), unreachable (running, but Check fails), up.", []string{"adapter", "state"}, nil)
)

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descContacts, descStoreBytes, descStoreCount, descQueue, descQueueBytes, descProgressBytes, descAdapterUp, descAdapterState} {
		ch <- d
	}
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	n := g.n
	n.mu.Lock()
	peers, contacts, mgr := len(n.peerInfo), len(n.contacts), n.adapters
	n.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descPeers, float64(peers))
	gauge(descContacts, float64(contacts))
	st := n.store.Stats()
	for kind, v := range map[string]int64{"used": st.UsedBytes, "quota": st.MaxBytes, "bundles": st.BundleBytes, "partials": st.PartialBytes, "reserved": st.ReservedB} {
		gauge(descStoreBytes, float64(v), kind)
	}
	for kind, v := range map[string]int64{"used": st.UsedBundles, "quota": st.MaxBundles, "bundles": st.Bundles, "partials": st.Partials, "receiving": st.Receiving, "tombstones": st.Tombstones} {
		gauge(descStoreCount, float64(v), kind)
	}
	byState := func(c store.StateCounts) map[string]int64 {
		return map[string]int64{"pending": c.Pending, "in_flight": c.InFlight, "done": c.Done, "failed": c.Failed}
	}
	for dest, c := range st.Destinations {
		for state, v := range byState(c) {
			gauge(descQueue, float64(v), dest, state)
		}
	}
	for dest, c := range st.DestinationBytes {
		for state, v := range byState(c) {
			gauge(descQueueBytes, float64(v), dest, state)
		}
	}
	for state, v := range byState(st.ProgressBytes) {
		gauge(descProgressBytes, float64(v), state)
	}
	if mgr == nil {
		return
	}
	for _, a := range mgr.Statuses() {
		state := "up"
		switch {
		case !a.Running:
			state = "down"
		case !a.Reachable:
			state = "unreachable"
		}
		up := 0.0
		if state == "up" {
			up = 1
		}
		gauge(descAdapterUp, up, a.Name)
		for _, s := range []string{"down", "unreachable", "up"} {
			v := 0.0
			if s == state {
				v = 1
			}
			gauge(descAdapterState, v, a.Name, s)
		}
	}
}
