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
