package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mulegate/mulegate/gateway"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Ready{Status: "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.node.Ready(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not_ready", "", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, Ready{Status: "ready", Node: s.node.ID().String()})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeParamError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.node.Status())
}

func (s *Server) peers(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeParamError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Peers{Peers: s.node.Peers()})
}

func (s *Server) bundles(w http.ResponseWriter, r *http.Request) {
	q, err := ParseBundleQuery(r.URL.RawQuery)
	if err != nil {
		writeParamError(w, err)
		return
	}
	list, err := s.node.Bundles(r.Context(), gateway.BundleFilter{State: q.State, Destination: q.Destination, Limit: q.Limit})
	if err != nil {
		writeNodeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Bundles{Bundles: list})
}

func (s *Server) bundle(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeParamError(w, err)
		return
	}
	id, err := parseID(r.PathValue("id"))
	if err != nil {
		writeParamError(w, err)
		return
	}
	bi, err := s.node.Bundle(r.Context(), id)
	if err != nil {
		writeNodeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, bi)
}

// PayloadChecksumHeader carries the payload's CRC-32C (Castagnoli), 8 hex
// digits, so that a client can check what it received end to end.
const PayloadChecksumHeader = "X-Mulegate-Payload-Crc32c"

// BundleIDHeader carries the bundle ID on a payload response.
const BundleIDHeader = "X-Mulegate-Bundle-Id"

// payload streams a held bundle's payload. Range requests are served, so
// an interrupted download can resume; only a read from start to end
// verifies the stored checksum (a mismatch cuts the response short).
func (s *Server) payload(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeParamError(w, err)
		return
	}
	id, err := parseID(r.PathValue("id"))
	if err != nil {
		writeParamError(w, err)
		return
	}
	p, err := s.node.OpenPayload(r.Context(), id)
	if err != nil {
		writeNodeError(w, err)
		return
	}
	defer p.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(BundleIDHeader, id.String())
	h.Set(PayloadChecksumHeader, fmt.Sprintf("%08x", p.Checksum()))
	h.Set("X-Mulegate-Payload-Length", strconv.FormatInt(p.Size(), 10))
	http.ServeContent(w, r, "", zeroTime, p)
}

// Adapter is one adapter's state and queue in GET /v1/adapters.
type Adapter struct {
	Name        string    `json:"name"`
	Source      string    `json:"source"`
	Type        string    `json:"type,omitempty"`
	Version     string    `json:"version,omitempty"`
	Deliver     bool      `json:"deliver"`
	Fetch       bool      `json:"fetch"`
	Running     bool      `json:"running"`
	PID         int       `json:"pid,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	Reachable   bool      `json:"reachable"`
	LastCheck   time.Time `json:"last_check,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Restarts    int       `json:"restarts"`
	Queue       Queue     `json:"queue"`
}

// Queue is an adapter queue's depth by state.
type Queue struct {
	Pending  int64 `json:"pending"`
	InFlight int64 `json:"in_flight"`
	Done     int64 `json:"done"`
	Failed   int64 `json:"failed"`
}

// Adapters is the body of GET /v1/adapters.
type Adapters struct {
	Adapters []Adapter `json:"adapters"`
}

// AdapterCheck is the body of POST /v1/adapters/{name}/check.
type AdapterCheck struct {
	Name      string `json:"name"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
}

func (s *Server) adapters(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeParamError(w, err)
		return
	}
	out := Adapters{Adapters: []Adapter{}}
	for _, a := range s.node.Adapters() {
		out.Adapters = append(out.Adapters, Adapter{
			Name: a.Name, Source: a.Source, Type: a.Type, Version: a.Version, Deliver: a.Deliver, Fetch: a.Fetch,
			Running: a.Running, PID: a.PID, Since: a.Since, Reachable: a.Reachable, LastCheck: a.LastCheck,
			LastError: a.LastError, LastErrorAt: a.LastErrorAt, Restarts: a.Restarts,
			Queue: Queue{Pending: a.Queue.Pending, InFlight: a.Queue.InFlight, Done: a.Queue.Done, Failed: a.Queue.Failed},
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) adapterCheck(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeParamError(w, err)
		return
	}
	name := r.PathValue("name")
	found := false
	for _, a := range s.node.Adapters() {
		found = found || a.Name == name
	}
	if !found {
		writeError(w, http.StatusNotFound, "not_found", "name", fmt.Sprintf("no adapter named %q is configured", name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	res := AdapterCheck{Name: name, Reachable: true}
	if err := s.node.CheckAdapter(ctx, name); err != nil {
		res.Reachable, res.Error = false, err.Error()
	}
	writeJSON(w, http.StatusOK, res)
}
