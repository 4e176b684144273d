package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/policy"
)

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers with an ErrorBody.
func writeError(w http.ResponseWriter, status int, reason, param, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg, Reason: reason, Param: param})
}

// writeParamError answers a malformed parameter with 400.
func writeParamError(w http.ResponseWriter, err error) {
	var pe *ParamError
	if errors.As(err, &pe) {
		writeError(w, http.StatusBadRequest, "bad_parameter", pe.Param, pe.Error())
		return
	}
	writeError(w, http.StatusBadRequest, "bad_request", "", err.Error())
}

// writeNodeError answers an error from the node. A refusal of a bundle
// carries its status report reason; store conditions map to their HTTP
// equivalents.
func writeNodeError(w http.ResponseWriter, err error) {
	status, reason := classify(err)
	writeError(w, status, reason, "", err.Error())
}

// classify maps a node error to an HTTP status and a reason word.
func classify(err error) (int, string) {
	var be *bundle.Error
	isBundle := errors.As(err, &be)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "canceled"
	case errors.Is(err, policy.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, bundle.ReasonOf(err).String()
	case errors.Is(err, store.ErrFull):
		return http.StatusInsufficientStorage, bundle.ReasonOf(err).String()
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, store.ErrDuplicate):
		return http.StatusConflict, "duplicate"
	case errors.Is(err, store.ErrClosed):
		return http.StatusServiceUnavailable, "shutting_down"
	case isBundle:
		// The node refused the bundle: its limits, its policy, the rules of
		// RFC 9171. The request was well formed; the bundle is not
		// acceptable here.
		return http.StatusUnprocessableEntity, bundle.ReasonOf(err).String()
	}
	return http.StatusInternalServerError, "internal"
}
