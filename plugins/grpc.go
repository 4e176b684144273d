package plugins

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	adapterpb "github.com/mulegate/mulegate/plugins/proto"
)

// The go-plugin handshake. The node puts the cookie in the adapter's
// environment; an adapter started by hand sees it missing and explains
// itself instead of waiting for a node that is not there. A change to the
// contract that old adapters cannot follow bumps ProtocolVersion.
const (
	ProtocolVersion  = 1
	MagicCookieKey   = "MULEGATE_ADAPTER"
	MagicCookieValue = "5a1f0c2e-adapter-contract"
	// PluginName is the name the contract is dispensed under.
	PluginName = "adapter"
	// ChunkSize is the largest payload chunk on the wire, both ways. Small
	// enough that gRPC's flow control bounds memory, large enough that a
	// 10 MiB payload is 160 messages.
	ChunkSize = 64 << 10
	// WindowSize is the gRPC flow-control window both ends use, per stream
	// and per connection: it bounds how much payload is in flight, and at
	// gRPC's default of 64 KiB a large payload would stall on every chunk.
	WindowSize = 4 << 20
	// SessionPayloadMax is the largest payload the node hands over on the
	// DeliverSession stream, whole, in one message; larger ones stream
	// through Deliver in ChunkSize pieces. It is one chunk, so a delivery on
	// the session holds no more of its payload in memory than a Deliver
	// stream does.
	SessionPayloadMax = ChunkSize
	// MaxReasonLength is the longest reason, in bytes, that an answer to a
	// delivery carries across the boundary; a longer one is cut, on a UTF-8
	// character boundary, and ends in "…". A reason is for a log line and a
	// status report, and unbounded, a few long ones in one DeliverSession
	// message could pass gRPC's 4 MiB limit on a received message: the
	// session would fail, and fail again on every retry of the same bundles.
	MaxReasonLength = 1 << 10
)

// Handshake returns the go-plugin handshake both sides use.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  ProtocolVersion,
		MagicCookieKey:   MagicCookieKey,
		MagicCookieValue: MagicCookieValue,
	}
}

// PluginSet returns the go-plugin plugin set for the contract. impl is the
// adapter to serve on the plugin side and nil on the node side.
func PluginSet(impl Adapter) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &GRPCPlugin{Impl: impl}}
}

// GRPCPlugin is the go-plugin glue for Adapter: GRPCServer runs in the
// adapter's process, GRPCClient in the node's.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Adapter
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the adapter with the plugin's gRPC server.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("plugins: GRPCPlugin.Impl is nil on the plugin side")
	}
	adapterpb.RegisterAdapterServer(s, &grpcServer{impl: p.Impl})
	return nil
}

// GRPCClient returns a *GRPCClient, the node's view of the adapter.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewGRPCClient(c), nil
}

// GRPCClient is an Adapter that forwards every call to an adapter over gRPC.
type GRPCClient struct {
	rpc adapterpb.AdapterClient
	// streamOnly is set once the adapter answered DeliverSession with
	// UNIMPLEMENTED: it predates sessions, so every bundle streams.
	streamOnly atomic.Bool
	// lastID is the last session delivery id handed out.
	lastID atomic.Uint64

	mu   sync.Mutex
	sess *clientSession // the DeliverSession stream; nil until needed, or after it failed
}

var _ Adapter = (*GRPCClient)(nil)

// NewGRPCClient returns an Adapter speaking the contract over conn. The
// connection should be dialled with DialOptions.
func NewGRPCClient(conn grpc.ClientConnInterface) *GRPCClient {
	return &GRPCClient{rpc: adapterpb.NewAdapterClient(conn)}
}

func (c *GRPCClient) Describe(ctx context.Context) (Description, error) {
	resp, err := c.rpc.Describe(ctx, &adapterpb.DescribeRequest{})
	if err != nil {
		return Description{}, fromStatus(ctx, "describe", err)
	}
	return Description{
		Name:    resp.GetName(),
		Version: resp.GetVersion(),
		Deliver: resp.GetCapabilities().GetDeliver(),
		Fetch:   resp.GetCapabilities().GetFetch(),
	}, nil
}

func (c *GRPCClient) Configure(ctx context.Context, config json.RawMessage) error {
	if len(config) == 0 {
		config = json.RawMessage("{}")
	}
	resp, err := c.rpc.Configure(ctx, &adapterpb.ConfigureRequest{ConfigJson: config})
	if err != nil {
		return fromStatus(ctx, "configure", err)
	}
	var errs ConfigErrors
	for _, e := range resp.GetErrors() {
		errs = append(errs, ConfigError{Key: e.GetKey(), Message: e.GetMessage()})
	}
	return errs.Err()
}

func (c *GRPCClient) Check(ctx context.Context) error {
	resp, err := c.rpc.Check(ctx, &adapterpb.CheckRequest{})
	if err != nil {
		return fromStatus(ctx, "check", err)
	}
	if !resp.GetOk() {
		detail := resp.GetDetail()
		if detail == "" {
			detail = "no detail given"
		}
		return fmt.Errorf("%w: %s", ErrUnreachable, detail)
	}
	return nil
}

// Deliver sends a payload of up to SessionPayloadMax bytes on a
// DeliverSession stream, and a larger one as a Deliver stream of its own. An
// adapter that does not know DeliverSession gets every bundle as a Deliver
// stream.
func (c *GRPCClient) Deliver(ctx context.Context, meta Meta, payload io.Reader) Result {
	if meta.PayloadLength < 0 || (payload == nil && meta.PayloadLength > 0) {
		return failed(fmt.Errorf("%w: payload length %d without a payload of that length", ErrInvalid, meta.PayloadLength))
	}
	if meta.PayloadLength <= SessionPayloadMax && !c.streamOnly.Load() {
		return c.deliverSession(ctx, meta, payload)
	}
	return c.deliverStream(ctx, meta, payload)
}

func (c *GRPCClient) deliverStream(ctx context.Context, meta Meta, payload io.Reader) Result {
	// Cancelling the stream on every early return is what tells the adapter
	// that the payload did not arrive whole, so it commits nothing.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Deliver(ctx)
	if err != nil {
		return failed(fromStatus(ctx, "deliver", err))
	}
	err = stream.Send(&adapterpb.DeliverRequest{Frame: &adapterpb.DeliverRequest_Meta{Meta: metaToPB(meta)}})
	if err == nil && meta.PayloadLength > 0 {
		err = c.sendPayload(stream, payload, meta.PayloadLength)
	}
	// io.EOF from Send means the adapter answered before taking the whole
	// payload (an early reject, or a bundle it already has); the answer is
	// waiting in CloseAndRecv.
	if err != nil && !errors.Is(err, io.EOF) {
		var local *payloadError
		if errors.As(err, &local) {
			return failed(err)
		}
		return failed(fromStatus(ctx, "deliver", err))
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return failed(fromStatus(ctx, "deliver", err))
	}
	return resultFromPB(resp)
}

// payloadError is a failure to read the payload on the node's side, as
// opposed to a failure of the stream.
type payloadError struct{ err error }

func (e *payloadError) Error() string { return "reading payload: " + e.err.Error() }
func (e *payloadError) Unwrap() error { return e.err }

// shortPayload is the error for a payload that failed after sent of length
// bytes.
func shortPayload(err error, sent, length int64) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("payload ended after %d of %d bytes", sent, length)
	}
	return &payloadError{err}
}

func (c *GRPCClient) sendPayload(stream adapterpb.Adapter_DeliverClient, payload io.Reader, length int64) error {
	bp := buffers.Get(ChunkSize)
	defer buffers.Put(bp)
	buf := *bp
	for sent := int64(0); sent < length; {
		n := int(min(int64(len(buf)), length-sent))
		if k, err := io.ReadFull(payload, buf[:n]); err != nil {
			return shortPayload(err, sent+int64(k), length)
		}
		// SendMsg has serialised the chunk when it returns, so buf can be
		// reused for the next one.
		if err := stream.Send(&adapterpb.DeliverRequest{Frame: &adapterpb.DeliverRequest_Chunk{Chunk: buf[:n]}}); err != nil {
			return err
		}
		sent += int64(n)
	}
	return nil
}

func (c *GRPCClient) Fetch(ctx context.Context, req FetchRequest, fn func(Inbound) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Fetch(ctx, &adapterpb.FetchRequest{
		MaxMessages: uint32(min(max(req.MaxMessages, 0), math.MaxUint32)),
		MaxBytes:    uint64(max(req.MaxBytes, 0)),
		WaitMs:      uint64(max(req.Wait, 0) / time.Millisecond),
	})
	if err != nil {
		return fromStatus(ctx, "fetch", err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fromStatus(ctx, "fetch", err)
		}
		start := msg.GetStart()
		if start == nil {
			return fmt.Errorf("fetch: adapter broke the protocol: expected a start frame, got %T", msg.GetFrame())
		}
		if start.GetPayloadLength() > math.MaxInt64 {
			return fmt.Errorf("fetch: adapter broke the protocol: payload length %d", start.GetPayloadLength())
		}
		r := &chunkReader{
			remaining: int64(start.GetPayloadLength()),
			next: func() ([]byte, error) {
				m, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return nil, io.ErrUnexpectedEOF
					}
					return nil, fromStatus(ctx, "fetch", err)
				}
				if m.GetStart() != nil || m.GetEnd() != nil {
					return nil, io.ErrUnexpectedEOF
				}
				return m.GetChunk(), nil
			},
		}
		in := Inbound{
			Receipt:       start.GetReceipt(),
			MessageID:     start.GetMessageId(),
			Destination:   start.GetDestination(),
			Source:        start.GetSource(),
			Lifetime:      msDuration(start.GetLifetimeMs()),
			Headers:       start.GetHeaders(),
			PayloadLength: int64(start.GetPayloadLength()),
			Payload:       r,
		}
		if err := fn(in); err != nil {
			return err
		}
		// fn may have stopped reading early (a duplicate it recognised by
		// MessageID, say); the rest of the message is still on the stream.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return fmt.Errorf("fetch: reading message %q: %w", in.Receipt, err)
		}
		end, err := stream.Recv()
		if err != nil {
			return fromStatus(ctx, "fetch", err)
		}
		if end.GetEnd() == nil {
			return fmt.Errorf("fetch: adapter broke the protocol: message %q has more than its %d payload bytes", in.Receipt, in.PayloadLength)
		}
	}
}

func (c *GRPCClient) Ack(ctx context.Context, receipt string) error {
	if _, err := c.rpc.Ack(ctx, &adapterpb.AckRequest{Receipt: receipt}); err != nil {
		return fromStatus(ctx, "ack", err)
	}
	return nil
}

func (c *GRPCClient) Nack(ctx context.Context, receipt, reason string) error {
	if _, err := c.rpc.Nack(ctx, &adapterpb.NackRequest{Receipt: receipt, Reason: reason}); err != nil {
		return fromStatus(ctx, "nack", err)
	}
	return nil
}

// Reject asks the adapter to set the message aside for good. An adapter
// that does not implement it (UNIMPLEMENTED) gives an error matching
// ErrUnsupported: the node then falls back to Nack.
func (c *GRPCClient) Reject(ctx context.Context, receipt, reason string) error {
	if _, err := c.rpc.Reject(ctx, &adapterpb.RejectRequest{Receipt: receipt, Reason: boundReason(reason)}); err != nil {
		return fromStatus(ctx, "reject", err)
	}
	return nil
}

var _ Rejecter = (*GRPCClient)(nil)

// grpcServer serves an Adapter implementation in the adapter's process.
type grpcServer struct {
	adapterpb.UnimplementedAdapterServer
	impl Adapter
}

func (s *grpcServer) Describe(ctx context.Context, _ *adapterpb.DescribeRequest) (*adapterpb.DescribeResponse, error) {
	d, err := s.impl.Describe(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adapterpb.DescribeResponse{
		Name:         d.Name,
		Version:      d.Version,
		Capabilities: &adapterpb.Capabilities{Deliver: d.Deliver, Fetch: d.Fetch},
	}, nil
}

func (s *grpcServer) Configure(ctx context.Context, req *adapterpb.ConfigureRequest) (*adapterpb.ConfigureResponse, error) {
	raw := json.RawMessage(req.GetConfigJson())
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	err := s.impl.Configure(ctx, raw)
	var errs ConfigErrors
	if err != nil && !errors.As(err, &errs) {
		var one ConfigError
		if !errors.As(err, &one) {
			return nil, toStatus(err)
		}
		errs = ConfigErrors{one}
	}
	resp := &adapterpb.ConfigureResponse{}
	for _, e := range errs {
		resp.Errors = append(resp.Errors, &adapterpb.ConfigError{Key: e.Key, Message: e.Message})
	}
	return resp, nil
}

func (s *grpcServer) Check(ctx context.Context, _ *adapterpb.CheckRequest) (*adapterpb.CheckResponse, error) {
	if err := s.impl.Check(ctx); err != nil {
		if errors.Is(err, ErrNotConfigured) || errors.Is(err, ErrUnsupported) {
			return nil, toStatus(err)
		}
		// ok=false already says unreachable, and the node's client
		// says it again in words: a Go adapter's ErrUnreachable prefix
		// would make it twice.
		detail := strings.TrimPrefix(err.Error(), ErrUnreachable.Error()+": ")
		return &adapterpb.CheckResponse{Ok: false, Detail: detail}, nil
	}
	return &adapterpb.CheckResponse{Ok: true}, nil
}

func (s *grpcServer) Deliver(stream adapterpb.Adapter_DeliverServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	pm := first.GetMeta()
	if pm == nil {
		return status.Error(codes.InvalidArgument, "deliver: the first message must carry meta")
	}
	if pm.GetPayloadLength() > math.MaxInt64 {
		return status.Errorf(codes.InvalidArgument, "deliver: payload length %d is too large", pm.GetPayloadLength())
	}
	meta := metaFromPB(pm)
	// Every chunk of this payload is decoded into the same buffer (see
	// chunkFrame), which goes back to the pool once Deliver is done with
	// the reader.
	var frame chunkFrame
	var bp *[]byte
	if meta.PayloadLength > 0 {
		bp = buffers.Get(ChunkSize)
		frame.buf = *bp
	}
	r := &chunkReader{
		remaining: meta.PayloadLength,
		next: func() ([]byte, error) {
			frame.reset()
			if err := stream.RecvMsg(&frame); err != nil {
				// A clean close before the announced length is as bad as a
				// broken stream: the bundle is incomplete.
				if errors.Is(err, io.EOF) {
					return nil, io.ErrUnexpectedEOF
				}
				return nil, err
			}
			chunk, hasMeta := frame.get()
			if hasMeta {
				return nil, errors.New("deliver: meta sent twice")
			}
			return chunk, nil
		},
	}
	res := s.impl.Deliver(stream.Context(), meta, r)
	if r.close() && bp != nil {
		buffers.Put(bp)
	}
	return stream.SendAndClose(resultToPB(res))
}

func (s *grpcServer) Fetch(req *adapterpb.FetchRequest, stream adapterpb.Adapter_FetchServer) error {
	ctx := stream.Context()
	maxMsgs := int(req.GetMaxMessages())
	if maxMsgs == 0 {
		maxMsgs = 1
	}
	maxBytes := int64(min(req.GetMaxBytes(), math.MaxInt64))
	var (
		sent  int
		bytes int64
		buf   []byte
	)
	fn := func(in Inbound) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if in.PayloadLength < 0 || (in.Payload == nil && in.PayloadLength > 0) {
			return fmt.Errorf("%w: inbound message %q has payload length %d but no such payload", ErrInvalid, in.Receipt, in.PayloadLength)
		}
		if sent >= maxMsgs || (maxBytes > 0 && bytes+in.PayloadLength > maxBytes) {
			return ErrFetchLimit
		}
		err := stream.Send(&adapterpb.FetchResponse{Frame: &adapterpb.FetchResponse_Start{Start: &adapterpb.InboundStart{
			Receipt:       in.Receipt,
			MessageId:     in.MessageID,
			Destination:   in.Destination,
			Source:        in.Source,
			LifetimeMs:    uint64(max(in.Lifetime, 0) / time.Millisecond),
			Headers:       in.Headers,
			PayloadLength: uint64(in.PayloadLength),
		}}})
		if err != nil {
			return err
		}
		if buf == nil && in.PayloadLength > 0 {
			buf = make([]byte, ChunkSize)
		}
		for done := int64(0); done < in.PayloadLength; {
			n := int(min(int64(len(buf)), in.PayloadLength-done))
			if _, err := io.ReadFull(in.Payload, buf[:n]); err != nil {
				// Half a message is on the stream; only failing the whole
				// stream tells the node to throw it away.
				return fmt.Errorf("reading inbound message %q after %d of %d bytes: %w", in.Receipt, done, in.PayloadLength, err)
			}
			if err := stream.Send(&adapterpb.FetchResponse{Frame: &adapterpb.FetchResponse_Chunk{Chunk: buf[:n]}}); err != nil {
				return err
			}
			done += int64(n)
		}
		if err := stream.Send(&adapterpb.FetchResponse{Frame: &adapterpb.FetchResponse_End{End: &adapterpb.InboundEnd{}}}); err != nil {
			return err
		}
		sent++
		bytes += in.PayloadLength
		return nil
	}
	err := s.impl.Fetch(ctx, FetchRequest{MaxMessages: maxMsgs, MaxBytes: maxBytes, Wait: msDuration(req.GetWaitMs())}, fn)
	if err != nil && !errors.Is(err, ErrFetchLimit) {
		return toStatus(err)
	}
	return nil
}

func (s *grpcServer) Ack(ctx context.Context, req *adapterpb.AckRequest) (*adapterpb.AckResponse, error) {
	if err := s.impl.Ack(ctx, req.GetReceipt()); err != nil {
		return nil, toStatus(err)
	}
	return &adapterpb.AckResponse{}, nil
}

func (s *grpcServer) Nack(ctx context.Context, req *adapterpb.NackRequest) (*adapterpb.NackResponse, error) {
	if err := s.impl.Nack(ctx, req.GetReceipt(), req.GetReason()); err != nil {
		return nil, toStatus(err)
	}
	return &adapterpb.NackResponse{}, nil
}

// Reject serves the optional Reject: an adapter that does not implement
// Rejecter answers UNIMPLEMENTED, as one built before Reject existed does.
func (s *grpcServer) Reject(ctx context.Context, req *adapterpb.RejectRequest) (*adapterpb.RejectResponse, error) {
	r, ok := s.impl.(Rejecter)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this adapter cannot set messages aside; the node nacks them instead")
	}
	if err := r.Reject(ctx, req.GetReceipt(), req.GetReason()); err != nil {
		return nil, toStatus(err)
	}
	return &adapterpb.RejectResponse{}, nil
}

// chunkReader turns a stream of chunks into an io.Reader that yields exactly
// remaining bytes and then io.EOF. It holds one chunk at a time.
type chunkReader struct {
	// mu is held for the whole of a Read, so that close can tell whether
	// one is still running.
	mu        sync.Mutex
	remaining int64
	cur       []byte
	next      func() ([]byte, error)
	err       error
}

// errReaderClosed is what Read returns after close: the delivery it
// belonged to has been answered.
var errReaderClosed = errors.New("payload read after the delivery was answered")

func (r *chunkReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	for len(r.cur) == 0 {
		if r.remaining == 0 {
			return 0, io.EOF
		}
		chunk, err := r.next()
		if err != nil {
			r.err = err
			return 0, err
		}
		if int64(len(chunk)) > r.remaining {
			r.err = fmt.Errorf("payload chunk of %d bytes overruns the announced length by %d", len(chunk), int64(len(chunk))-r.remaining)
			return 0, r.err
		}
		r.cur = chunk
		r.remaining -= int64(len(chunk))
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// close makes every later Read fail, so that the buffer chunks are decoded
// into can serve another delivery. It reports false if a Read is still
// running (an adapter that kept reading after it answered): that buffer
// must then be left alone.
func (r *chunkReader) close() bool {
	if !r.mu.TryLock() {
		return false
	}
	r.err, r.cur, r.next = errReaderClosed, nil, nil
	r.mu.Unlock()
	return true
}

// chunkFrame receives a DeliverRequest. The contract's codec decodes it
// itself, copying the chunk into buf, a buffer the delivery reuses for
// every chunk, straight from gRPC's receive buffers: protobuf's own decoder
// would put each 64 KiB chunk in a new allocation, and for a large payload
// that allocation (zeroed pages, garbage collection, memory returned to and
// taken back from the kernel) cost a third of the adapter's time. Decoded
// by any other codec, it is the plain DeliverRequest it embeds.
type chunkFrame struct {
	adapterpb.DeliverRequest
	buf     []byte // where the chunk goes; reused
	chunk   []byte // the chunk, in buf, when the codec decoded it
	meta    bool   // the codec found a meta frame
	decoded bool   // the codec decoded the frame (else DeliverRequest holds it)
}

func (f *chunkFrame) reset() {
	f.DeliverRequest.Reset()
	f.chunk, f.meta, f.decoded = nil, false, false
}

// get returns the frame's chunk, and whether it carried meta instead.
func (f *chunkFrame) get() (chunk []byte, meta bool) {
	if f.decoded {
		return f.chunk, f.meta
	}
	return f.GetChunk(), f.GetMeta() != nil
}

// decode decodes a DeliverRequest from data, as proto.Unmarshal would: the
// last of meta and chunk wins (they are a oneof), unknown fields are
// skipped.
func (f *chunkFrame) decode(data mem.BufferSlice) error {
	r := bufferReader{bufs: data}
	for r.more() {
		num, typ, err := r.tag()
		if err != nil {
			return err
		}
		switch {
		case num == 1 && typ == protowire.BytesType: // meta
			// Only its presence matters here: a second meta is an error.
			n, err := r.length()
			if err != nil {
				return err
			}
			if err := r.skip(n); err != nil {
				return err
			}
			f.chunk, f.meta = nil, true
		case num == 2 && typ == protowire.BytesType: // chunk
			n, err := r.length()
			if err != nil {
				return err
			}
			if n > cap(f.buf) {
				f.buf = make([]byte, n) // not from this node: chunks are at most ChunkSize
			}
			f.chunk, f.meta = f.buf[:n], false
			if _, err := io.ReadFull(&r, f.chunk); err != nil {
				return err
			}
		default:
			if err := r.skipField(num, typ, 0); err != nil {
				return err
			}
		}
	}
	f.decoded = true
	return nil
}

// bufferReader reads a message that gRPC holds in several buffers, without
// copying it into one first.
type bufferReader struct {
	bufs mem.BufferSlice
	cur  []byte
}

var errMalformed = errors.New("malformed protobuf message")

func (r *bufferReader) more() bool {
	for len(r.cur) == 0 && len(r.bufs) > 0 {
		r.cur, r.bufs = r.bufs[0].ReadOnlyData(), r.bufs[1:]
	}
	return len(r.cur) > 0
}

func (r *bufferReader) ReadByte() (byte, error) {
	if !r.more() {
		return 0, io.ErrUnexpectedEOF
	}
	b := r.cur[0]
	r.cur = r.cur[1:]
	return b, nil
}

func (r *bufferReader) Read(p []byte) (int, error) {
	if !r.more() {
		return 0, io.EOF
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func (r *bufferReader) varint() (uint64, error) {
	v, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, errMalformed
	}
	return v, nil
}

func (r *bufferReader) tag() (protowire.Number, protowire.Type, error) {
	v, err := r.varint()
	if err != nil {
		return 0, 0, err
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber || num > protowire.MaxValidNumber {
		return 0, 0, errMalformed
	}
	return num, typ, nil
}

// length reads a length prefix, and checks that that much follows.
func (r *bufferReader) length() (int, error) {
	v, err := r.varint()
	if err != nil {
		return 0, err
	}
	left := len(r.cur)
	for _, b := range r.bufs {
		left += b.Len()
	}
	if v > uint64(left) {
		return 0, errMalformed
	}
	return int(v), nil
}

func (r *bufferReader) skip(n int) error {
	for n > 0 {
		if !r.more() {
			return errMalformed
		}
		k := min(n, len(r.cur))
		r.cur, n = r.cur[k:], n-k
	}
	return nil
}

// maxGroupDepth bounds how deeply skipField follows nested groups, as
// protobuf's RecursionLimit does.
const maxGroupDepth = 10000

// skipField skips the value of a field this decoder does not know, as
// protobuf skips unknown fields (groups included, though proto3 writes none).
func (r *bufferReader) skipField(num protowire.Number, typ protowire.Type, depth int) error {
	switch typ {
	case protowire.VarintType:
		_, err := r.varint()
		return err
	case protowire.Fixed32Type:
		return r.skip(4)
	case protowire.Fixed64Type:
		return r.skip(8)
	case protowire.BytesType:
		n, err := r.length()
		if err != nil {
			return err
		}
		return r.skip(n)
	case protowire.StartGroupType:
		if depth >= maxGroupDepth {
			return errMalformed
		}
		for {
			n, t, err := r.tag()
			if err != nil {
				return err
			}
			if t == protowire.EndGroupType {
				if n != num {
					return errMalformed
				}
				return nil
			}
			if err := r.skipField(n, t, depth+1); err != nil {
				return err
			}
		}
	}
	return errMalformed
}

func metaToPB(m Meta) *adapterpb.BundleMeta {
	return &adapterpb.BundleMeta{
		BundleId:        m.BundleID,
		Source:          m.Source,
		Destination:     m.Destination,
		ReportTo:        m.ReportTo,
		CreationTimeMs:  m.CreationTime,
		Sequence:        m.Sequence,
		LifetimeMs:      uint64(max(m.Lifetime, 0) / time.Millisecond),
		PayloadLength:   uint64(m.PayloadLength),
		Flags:           m.Flags,
		HopCount:        m.HopCount,
		HopLimit:        m.HopLimit,
		SignatureStatus: m.SignatureStatus,
		Route:           m.Route,
		Options:         m.Options,
	}
}

func metaFromPB(pm *adapterpb.BundleMeta) Meta {
	return Meta{
		BundleID:        pm.GetBundleId(),
		Source:          pm.GetSource(),
		Destination:     pm.GetDestination(),
		ReportTo:        pm.GetReportTo(),
		CreationTime:    pm.GetCreationTimeMs(),
		Sequence:        pm.GetSequence(),
		Lifetime:        msDuration(pm.GetLifetimeMs()),
		PayloadLength:   int64(pm.GetPayloadLength()),
		Flags:           pm.GetFlags(),
		HopCount:        pm.GetHopCount(),
		HopLimit:        pm.GetHopLimit(),
		SignatureStatus: pm.GetSignatureStatus(),
		Route:           pm.GetRoute(),
		Options:         pm.GetOptions(),
	}
}

// msDuration converts wire milliseconds, saturating instead of wrapping: a
// lifetime of "practically forever" must not turn negative.
func msDuration(ms uint64) time.Duration {
	if ms > uint64(math.MaxInt64/int64(time.Millisecond)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ms) * time.Millisecond
}

func resultToPB(r Result) *adapterpb.DeliverResponse {
	a := answerOf(0, r)
	return &adapterpb.DeliverResponse{Status: a.status, RetryAfterMs: a.retryAfterMs, Reason: a.reason}
}

func resultFromPB(resp *adapterpb.DeliverResponse) Result {
	a := wireAnswer{status: resp.GetStatus(), retryAfterMs: resp.GetRetryAfterMs(), reason: resp.GetReason()}
	return a.result()
}

// reasonEllipsis marks a reason boundReason cut.
const reasonEllipsis = "…"

// boundReason returns reason as valid UTF-8 of at most MaxReasonLength
// bytes. Valid UTF-8 because protobuf refuses to marshal a string field
// that is not: an adapter's reason holding a stray byte (from a file name,
// say) would otherwise fail the whole message it travels in.
func boundReason(reason string) string {
	long := len(reason) > MaxReasonLength
	if long {
		// Only the start survives: repair no more than that. A character
		// this splits is repaired into U+FFFD, and falls past the cut.
		reason = reason[:MaxReasonLength]
	}
	if !utf8.ValidString(reason) {
		reason = strings.ToValidUTF8(reason, "\uFFFD")
	}
	if !long && len(reason) <= MaxReasonLength {
		return reason
	}
	// Repairing may have shrunk it (a run of bad bytes becomes one U+FFFD).
	cut := min(MaxReasonLength-len(reasonEllipsis), len(reason))
	for cut > 0 && cut < len(reason) && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut] + reasonEllipsis
}

// DialOptions are the gRPC options the node dials an adapter with
// (plugins/host passes them to go-plugin). With ServerOptions on the other
// end they tune the transport for this contract; the bytes on the wire stay
// plain gRPC, so adapters in other languages need nothing of the kind.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(WindowSize),
		grpc.WithInitialConnWindowSize(WindowSize),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec{})),
	}
}

// ServerOptions are the gRPC options an adapter serves with (sdk.Serve
// adds them to go-plugin's).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		// Raised from 64 KiB so that a large payload streams without
		// waiting for a window update every chunk; the memory bound per
		// stream stays a few MiB.
		grpc.InitialWindowSize(WindowSize),
		grpc.InitialConnWindowSize(WindowSize),
		grpc.ForceServerCodecV2(codec{}),
	}
}

// codec is gRPC's protobuf codec (same name, same bytes on the wire) with
// buffers that fit this contract's messages. gRPC's own takes its marshal
// and unmarshal buffers from a pool whose tiers jump from 32 KiB to 1 MiB,
// and zeroes each one it hands out: every 64 KiB payload chunk cost a 1 MiB
// clear on each side of the boundary, and so did a DeliverSession message
// of a few dozen small bundles.
// Here a message gets a buffer from the next tier up, a little over its
// size, and nothing is zeroed, since each buffer is overwritten before it
// is read.
type codec struct{}

var _ encoding.CodecV2 = codec{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	switch v := v.(type) {
	case *sessionBatch:
		return v.marshal(), nil
	case *sessionAnswers:
		return v.marshal(), nil
	}
	m := protoMessage(v)
	if m == nil {
		return nil, fmt.Errorf("plugins: cannot marshal %T: not a protobuf message", v)
	}
	// UseCachedSize reuses what Size just computed; the message is not
	// changed in between.
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true}
	if size < minPooled {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	bp := buffers.Get(size)
	b, err := opts.MarshalAppend((*bp)[:0], m)
	if err != nil {
		buffers.Put(bp)
		return nil, err
	}
	*bp = b
	// gRPC puts the buffer back once it has written the message.
	return mem.BufferSlice{mem.NewBuffer(bp, buffers)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v := v.(type) {
	case *chunkFrame:
		return v.decode(data)
	case *sessionRequest:
		return v.decode(data)
	case *sessionResponse:
		return v.decode(data)
	}
	m := protoMessage(v)
	if m == nil {
		return fmt.Errorf("plugins: cannot unmarshal into %T: not a protobuf message", v)
	}
	// proto.Unmarshal copies bytes and strings out of its input, so the
	// input can be gRPC's own buffer, or a pooled one returned at once.
	switch len(data) {
	case 0:
		return proto.Unmarshal(nil, m)
	case 1:
		return proto.Unmarshal(data[0].ReadOnlyData(), m)
	}
	bp := buffers.Get(data.Len())
	defer buffers.Put(bp)
	data.CopyTo(*bp)
	return proto.Unmarshal(*bp, m)
}

func protoMessage(v any) proto.Message {
	switch v := v.(type) {
	case proto.Message:
		return v
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	}
	return nil
}

// buffers is the process's pool of byte slices for the boundary: payload
// chunks, whole small payloads, and marshalled messages.
var buffers = &bufferPool{}

const (
	// minPooled is the smallest slice worth pooling; below it allocating is
	// cheaper.
	minPooled = 1 << 10
	// The tiers hold slices a sixteenth over each power of two from
	// minPooled to 1 MiB, so that a 64 KiB chunk with its framing, or a
	// 256 KiB payload with its metadata, fits the tier of its size.
	minTierShift = 10
	numTiers     = 11
)

// bufferPool is a mem.BufferPool of slices that are not zeroed: every user
// overwrites the part it reads. Slices longer than the largest tier are
// allocated, and dropped when put back.
type bufferPool struct {
	tiers [numTiers]sync.Pool
}

var _ mem.BufferPool = (*bufferPool)(nil)

func tierCap(i int) int {
	n := 1 << (minTierShift + i)
	return n + n/16
}

// tier returns the smallest tier whose slices hold n bytes, or -1.
func tier(n int) int {
	for i := range numTiers {
		if n <= tierCap(i) {
			return i
		}
	}
	return -1
}

// Get returns a slice of length n, with unspecified contents.
func (p *bufferPool) Get(n int) *[]byte {
	i := tier(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	if bp, ok := p.tiers[i].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, tierCap(i))
	return &b
}

// Put returns a slice that Get handed out.
func (p *bufferPool) Put(bp *[]byte) {
	c := cap(*bp)
	if i := tier(c); i >= 0 && tierCap(i) == c {
		p.tiers[i].Put(bp)
	}
}

// contractErrors pairs the contract's errors with gRPC codes. UNAVAILABLE is
// deliberately absent: it is the transport's way of saying the process is
// gone, and an adapter must not be able to fake that.
func contractErrors() []struct {
	err  error
	code codes.Code
} {
	return []struct {
		err  error
		code codes.Code
	}{
		{ErrUnsupported, codes.Unimplemented},
		{ErrNotConfigured, codes.FailedPrecondition},
		{ErrUnknownReceipt, codes.NotFound},
		{ErrInvalid, codes.InvalidArgument},
		{ErrUnreachable, codes.Aborted},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
	}
}

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range contractErrors() {
		if errors.Is(err, k.err) {
			return status.Error(k.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// wireError is an error that came back over gRPC: its text is the adapter's,
// and errors.Is matches the contract error its code stands for.
type wireError struct {
	op   string
	msg  string
	kind error
}

func (e *wireError) Error() string { return e.op + ": " + e.msg }
func (e *wireError) Unwrap() error { return e.kind }

func fromStatus(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", op, ctxErr)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	if st.Code() == codes.Unavailable {
		return &wireError{op: op, msg: st.Message(), kind: ErrUnavailable}
	}
	for _, k := range contractErrors() {
		if st.Code() == k.code {
			return &wireError{op: op, msg: st.Message(), kind: k.err}
		}
	}
	return &wireError{op: op, msg: st.Message()}
}
