package api

import (
	"fmt"
	"net/http"
	"strconv"

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
