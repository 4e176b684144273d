package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/mulegate/mulegate/gateway"
	"go.uber.org/zap"
)

// send is POST /v1/bundles: the request body is the payload, streamed
// into the store; the answer comes once the bundle is durable.
func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	p, err := ParseSendParams(r.URL.RawQuery)
	if err != nil {
		writeParamError(w, err)
		return
	}
	if r.ContentLength < 0 || (r.ContentLength == 0 && r.Header.Get("Content-Length") == "") {
		writeError(w, http.StatusLengthRequired, "length_required", "",
			"Content-Length is required: a bundle's payload length is in its header, before the payload (no chunked uploads; spool to a file first)")
		return
	}
	body := &bodyReader{r: r.Body}
	req := gateway.SendRequest{
		Source: p.Source, Destination: p.Destination, ReportTo: p.ReportTo, Lifetime: p.Lifetime,
		Flags: p.Reports | p.Flags, HopLimit: p.HopLimit, Length: uint64(r.ContentLength), Sign: p.Sign,
	}
	id, err := s.node.Send(r.Context(), req, body)
	if err != nil {
		if body.err != nil && !errors.Is(body.err, io.EOF) {
			// The client went away or its body broke off: nothing was stored.
			s.log.Info("upload cut off; nothing stored", zap.Int64("received", body.n), zap.Int64("length", r.ContentLength), zap.Error(body.err))
			writeError(w, http.StatusBadRequest, "payload_incomplete", "",
				fmt.Sprintf("the request body ended after %d of %d bytes (%v); nothing was stored", body.n, r.ContentLength, body.err))
			return
		}
		writeNodeError(w, err)
		return
	}
	src := p.Source
	if src.IsZero() {
		src = s.node.ID()
	}
	writeJSON(w, http.StatusCreated, SendResult{
		ID: id.String(), Source: src.String(), Destination: p.Destination.String(),
		Length: uint64(r.ContentLength), URL: BundlePath(id.String()),
	})
}

// bodyReader counts what it read and remembers the error that ended it, to
// tell a broken upload from a refusal by the node.
type bodyReader struct {
	r   io.Reader
	n   int64
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err != nil && b.err == nil {
		b.err = err
	}
	return n, err
}
