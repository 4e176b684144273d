package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/mulegate/mulegate/plugins"
)

// copyBufs holds CopyPayload's buffers: a busy adapter delivers thousands
// of bundles a second, and a new zeroed 64 KiB buffer each time cost a
// quarter of a simple adapter's CPU.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, plugins.ChunkSize); return &b }}

// CopyPayload copies exactly length bytes of a payload from src to dst, in
// plugins.ChunkSize pieces, and fails if src has fewer or more. Over the
// plugin boundary the SDK already guarantees the length; CopyPayload keeps
// an adapter honest when it is called in process with any io.Reader.
func CopyPayload(dst io.Writer, src io.Reader, length int64) error {
	if length < 0 {
		return fmt.Errorf("negative payload length %d", length)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := (*bp)[:min(length+1, plugins.ChunkSize)]
	n, err := io.CopyBuffer(dst, io.LimitReader(src, length), buf)
	if err != nil {
		return err
	}
	if n < length {
		return fmt.Errorf("payload ended after %d of %d bytes: %w", n, length, io.ErrUnexpectedEOF)
	}
	// One more byte means the reader disagrees with the announced length;
	// trusting either would store a corrupt bundle.
	var extra [1]byte
	switch m, err := src.Read(extra[:]); {
	case m > 0:
		return fmt.Errorf("payload is longer than its announced %d bytes", length)
	case err != nil && !errors.Is(err, io.EOF):
		return err
	}
	return nil
}

// ExactPayload reads exactly length bytes of r and then io.EOF. Fewer,
// more, or a read error, and its Read fails, every time after the first
// too, so that nothing is committed from a payload that did not arrive
// whole: an adapter reads a payload given to Deliver in process, or a
// message fetched from its service, through it. It checks that r
// ends as soon as the last bytes are read, before handing them out, so
// that a reader that verifies something at its end (the object store's
// digest) gets to, and its verdict reaches a caller that stops reading at
// the announced length.
func ExactPayload(r io.Reader, length int64) *ExactReader {
	return &ExactReader{r: r, left: length}
}

// ExactReader is ExactPayload's reader.
type ExactReader struct {
	r     io.Reader
	left  int64
	ended bool // r was seen to end
	err   error
}

func (e *ExactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left == 0 {
		if !e.ended { // a zero-length payload, or r gave its last bytes without EOF
			e.ended = true
			if e.err = CheckPayloadEnd(e.r); e.err != nil {
				return 0, e.err
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case e.left > 0 && errors.Is(err, io.EOF):
		e.err = fmt.Errorf("the payload ended %d bytes short: %w", e.left, io.ErrUnexpectedEOF)
	case err != nil && !errors.Is(err, io.EOF):
		e.err = err
	case e.left == 0 && errors.Is(err, io.EOF):
		e.ended = true
	case e.left == 0:
		e.ended = true
		if e.err = CheckPayloadEnd(e.r); e.err != nil {
			return 0, e.err
		}
	}
	return n, e.err
}

// Err is why the payload did not arrive whole, or nil: for a caller that
// hands the reader to code that may not pass its error on.
func (e *ExactReader) Err() error { return e.err }

// CheckPayloadEnd reads once more from a payload that should be at its
// end (as after reading all of a zero-length one through ExactPayload),
// and fails if it is not.
func CheckPayloadEnd(r io.Reader) error {
	var one [1]byte
	for range 100 {
		n, err := r.Read(one[:])
		switch {
		case n > 0:
			return errors.New("the payload is longer than its announced length")
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
	}
	return io.ErrNoProgress
}

// DeliverOnly is embedded by adapters that only deliver: it answers Fetch,
// Ack and Nack with plugins.ErrUnsupported.
type DeliverOnly struct{}

func (DeliverOnly) Fetch(context.Context, plugins.FetchRequest, func(plugins.Inbound) error) error {
	return plugins.ErrUnsupported
}
func (DeliverOnly) Ack(context.Context, string) error          { return plugins.ErrUnsupported }
func (DeliverOnly) Nack(context.Context, string, string) error { return plugins.ErrUnsupported }

// FetchOnly is embedded by adapters that only fetch: it rejects every
// bundle, since retrying cannot make an adapter start delivering.
type FetchOnly struct{}

func (FetchOnly) Deliver(context.Context, plugins.Meta, io.Reader) plugins.Result {
	return plugins.Rejected("this adapter does not deliver bundles; check the route that sent it here")
}
