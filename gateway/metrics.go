package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus metrics, on a registry of its own (no
// global state). The API serves them at /metrics.
type metrics struct {
	reg *prometheus.Registry

	received     *prometheus.CounterVec // by door
	stored       *prometheus.CounterVec // by door
	rejected     *prometheus.CounterVec // by door, reason and kind
	peersRefused *prometheus.CounterVec // by kind
	forwarded    prometheus.Counter
	transmitted  prometheus.Counter
	delivered    *prometheus.CounterVec // by kind: local, adapter
	expired      prometheus.Counter
	deleted      *prometheus.CounterVec // by reason
	bytesIn      *prometheus.CounterVec // by door
	bytesOut     prometheus.Counter

	notices         *prometheus.CounterVec // by outcome: created, accepted, rejected, unverified
	summariesSent   prometheus.Counter
	summariesRecv   prometheus.Counter
	contactsOpened  prometheus.Counter
	statusReports   prometheus.Counter
	sendErrors      *prometheus.CounterVec // by class: transient, fatal
	adapterRestarts *prometheus.CounterVec // by adapter
	inboundRefused  *prometheus.CounterVec // by adapter, class (transient, fatal), action (nack, reject)
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.received = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_bundles_received_total", Help: "Bundles offered to this node, by door (api, peer, adapter, local)."}, []string{"door"})
	m.stored = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_bundles_stored_total", Help: "Bundles durably stored, by door."}, []string{"door"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_bundles_rejected_total", Help: "Bundles refused, by door, status report reason, and the rule that refused them (kind)."}, []string{"door", "reason", "kind"})
	m.peersRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_peers_refused_total", Help: "Peers refused in the TLS handshake, by the rule that refused them."}, []string{"kind"})
	m.forwarded = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_bundles_forwarded_total", Help: "Bundles a peer confirmed holding after this node sent them."})
	m.transmitted = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_bundles_transmitted_total", Help: "Bundles (and fragments) sent to peers, control records excluded."})
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_bundles_delivered_total", Help: "Bundles delivered, to a local endpoint or an adapter."}, []string{"to"})
	m.expired = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_bundles_expired_total", Help: "Bundles deleted because their lifetime ended."})
	m.deleted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_bundles_deleted_total", Help: "Bundles deleted, by reason."}, []string{"reason"})
	m.bytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_payload_bytes_received_total", Help: "Payload bytes stored, by door."}, []string{"door"})
	m.bytesOut = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_payload_bytes_sent_total", Help: "Payload bytes sent to peers."})
	m.notices = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_delivery_notices_total", Help: "Delivery notices, by outcome (created, accepted, rejected, unverified: from a node never met, passed on but not acted upon)."}, []string{"outcome"})
	m.summariesSent = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_summaries_sent_total", Help: "Summary vectors sent to peers."})
	m.summariesRecv = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_summaries_received_total", Help: "Summary vectors received from peers."})
	m.contactsOpened = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_contacts_total", Help: "Contacts (convergence-layer sessions) that started."})
	m.statusReports = prometheus.NewCounter(prometheus.CounterOpts{Name: "mulegate_status_reports_sent_total", Help: "Bundle status reports this node originated."})
	m.sendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_send_errors_total", Help: "Failed sends to peers, by class (transient, fatal)."}, []string{"class"})
	m.adapterRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_adapter_restarts_total", Help: "Adapter process launches after the first (a crashed or hung adapter restarted), successful or not."}, []string{"adapter"})
	m.inboundRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mulegate_adapter_inbound_refused_total", Help: "Inbound messages the node did not take, by adapter, class (transient: nacked, offered again later; fatal: refused for good) and what the adapter was told (nack, reject: set aside for good)."}, []string{"adapter", "class", "action"})
	for _, c := range []prometheus.Collector{m.received, m.stored, m.rejected, m.peersRefused, m.forwarded, m.transmitted, m.delivered, m.expired, m.deleted, m.bytesIn, m.bytesOut, m.notices, m.summariesSent, m.summariesRecv, m.contactsOpened, m.statusReports, m.sendErrors, m.adapterRestarts, m.inboundRefused} {
		f(c)
	}
	return m
}
