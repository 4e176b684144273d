package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/store"
)

var zeroTime time.Time

func (s *Server) endpointList() Endpoints {
	out := Endpoints{Node: s.node.ID().String(), Endpoints: []string{}}
	for _, e := range s.node.Endpoints() {
		out.Endpoints = append(out.Endpoints, e.String())
	}
	slices.Sort(out.Endpoints)
	return out
}

func (s *Server) endpoints(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeParamError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.endpointList())
}

// register is POST /v1/endpoints?endpoint=EID. It is idempotent.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	ep, _, err := parseEndpointQuery(r.URL.RawQuery, false)
	if err != nil {
		writeParamError(w, err)
		return
	}
	if ep.IsSingleton() && !ep.SameNode(s.node.ID()) {
		writeError(w, http.StatusBadRequest, "bad_parameter", "endpoint",
			fmt.Sprintf("parameter endpoint: %s belongs to node %s; register endpoints of this node (%s) or groups (dtn://~name/…)", ep, ep.NodeID(), s.node.ID()))
		return
	}
	if err := s.node.Register(r.Context(), ep); err != nil {
		writeNodeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.endpointList())
}

// deliverable checks that bundles for ep are delivered on this node, and
// answers the request if they are not.
func (s *Server) deliverable(w http.ResponseWriter, ep bundle.EID) bool {
	if ep.IsSingleton() {
		if ep.SameNode(s.node.ID()) {
			return true
		}
		writeError(w, http.StatusBadRequest, "bad_parameter", "endpoint",
			fmt.Sprintf("parameter endpoint: %s belongs to node %s, not this node (%s): its bundles are delivered there", ep, ep.NodeID(), s.node.ID()))
		return false
	}
	if slices.Contains(s.node.Endpoints(), ep) {
		return true
	}
	writeError(w, http.StatusNotFound, "not_registered", "endpoint",
		fmt.Sprintf("parameter endpoint: the group %s is not registered on this node: POST /v1/endpoints?endpoint=… first", ep))
	return false
}

// deliveries is GET /v1/deliveries?endpoint=EID: the bundles waiting
// there, oldest first.
func (s *Server) deliveries(w http.ResponseWriter, r *http.Request) {
	ep, limit, err := parseEndpointQuery(r.URL.RawQuery, true)
	if err != nil {
		writeParamError(w, err)
		return
	}
	if !s.deliverable(w, ep) {
		return
	}
	if limit == 0 {
		limit = 1000
	}
	metas, err := s.node.Deliveries(r.Context(), ep, limit)
	if err != nil {
		writeNodeError(w, err)
		return
	}
	now := time.Now()
	out := Deliveries{Endpoint: ep.String(), Deliveries: []Delivery{}}
	for _, m := range metas {
		out.Deliveries = append(out.Deliveries, s.delivery(m, ep, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// ack is POST /v1/deliveries/{id}/ack?endpoint=EID.
func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	ep, _, err := parseEndpointQuery(r.URL.RawQuery, false)
	if err != nil {
		writeParamError(w, err)
		return
	}
	id, err := parseID(r.PathValue("id"))
	if err != nil {
		writeParamError(w, err)
		return
	}
	if !s.deliverable(w, ep) {
		return
	}
	if err := s.node.Ack(r.Context(), ep, id); err != nil {
		writeNodeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, AckResult{ID: id.String(), Endpoint: ep.String()})
}

// streamBatch is how many waiting bundles one look at the queue reads.
// When a look comes back full, the stream looks again soon rather than wait
// for the next arrival.
const streamBatch = 500

// stream is GET /v1/deliveries/stream?endpoint=EID, as Server-Sent Events:
// an event "delivery" (its id is the bundle ID, its data a Delivery) for
// every bundle waiting at the endpoint when the stream starts and for every
// one that arrives while it lasts, each once per stream. Acknowledging is
// the client's business (POST its ack_url): a bundle not acknowledged is
// sent again on the next stream. A comment line is sent when idle.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	ep, _, err := parseEndpointQuery(r.URL.RawQuery, false)
	if err != nil {
		writeParamError(w, err)
		return
	}
	if !s.deliverable(w, ep) {
		return
	}
	// Watch before the first look, so that nothing arriving in between is
	// missed.
	wake, stop := s.node.Watch(ep)
	defer stop()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, ": deliveries for %s\n\n", ep); err != nil {
		return
	}
	_ = rc.Flush()
	ctx := r.Context()
	sent := map[string]bool{}
	keepAlive := time.NewTicker(s.keepAlive)
	defer keepAlive.Stop()
	for {
		metas, err := s.node.Deliveries(ctx, ep, streamBatch)
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustJSON(ErrorBody{Error: err.Error(), Reason: "internal"}))
				_ = rc.Flush()
			}
			return
		}
		now := time.Now()
		waiting := make(map[string]bool, len(metas))
		for _, m := range metas {
			id := m.ID.String()
			waiting[id] = true
			if sent[id] {
				continue
			}
			sent[id] = true
			if _, err := fmt.Fprintf(w, "event: delivery\nid: %s\ndata: %s\n\n", id, mustJSON(s.delivery(m, ep, now))); err != nil {
				return
			}
		}
		// Forget what was acknowledged meanwhile, so that the set stays as
		// small as the queue.
		for id := range sent {
			if !waiting[id] {
				delete(sent, id)
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		var again <-chan time.Time
		if len(metas) == streamBatch {
			again = time.After(time.Second)
		}
		select {
		case <-wake:
		case <-again:
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// delivery describes a waiting bundle, with its signature status.
func (s *Server) delivery(m store.Meta, ep bundle.EID, now time.Time) Delivery {
	d := deliveryOf(m, ep, now)
	d.Signature = s.node.Signature(m)
	return d
}
