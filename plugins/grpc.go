package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	// bufs holds ChunkSize buffers so that a busy delivery queue does not
	// allocate 64 KiB per bundle.
	bufs sync.Pool
}

var _ Adapter = (*GRPCClient)(nil)

// NewGRPCClient returns an Adapter speaking the contract over conn.
func NewGRPCClient(conn grpc.ClientConnInterface) *GRPCClient {
	return &GRPCClient{
		rpc:  adapterpb.NewAdapterClient(conn),
		bufs: sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }},
	}
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

func (c *GRPCClient) Deliver(ctx context.Context, meta Meta, payload io.Reader) Result {
	if meta.PayloadLength < 0 || (payload == nil && meta.PayloadLength > 0) {
		return failed(fmt.Errorf("%w: payload length %d without a payload of that length", ErrInvalid, meta.PayloadLength))
	}
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

func (c *GRPCClient) sendPayload(stream adapterpb.Adapter_DeliverClient, payload io.Reader, length int64) error {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	for sent := int64(0); sent < length; {
		n := int(min(int64(len(buf)), length-sent))
		if _, err := io.ReadFull(payload, buf[:n]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("payload ended after %d of %d bytes", sent, length)
			}
			return &payloadError{err}
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
		return &adapterpb.CheckResponse{Ok: false, Detail: err.Error()}, nil
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
	r := &chunkReader{
		remaining: meta.PayloadLength,
		next: func() ([]byte, error) {
			m, err := stream.Recv()
			if err != nil {
				// A clean close before the announced length is as bad as a
				// broken stream: the bundle is incomplete.
				if errors.Is(err, io.EOF) {
					return nil, io.ErrUnexpectedEOF
				}
				return nil, err
			}
			if m.GetMeta() != nil {
				return nil, errors.New("deliver: meta sent twice")
			}
			return m.GetChunk(), nil
		},
	}
	res := s.impl.Deliver(stream.Context(), meta, r)
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

// chunkReader turns a stream of chunks into an io.Reader that yields exactly
// remaining bytes and then io.EOF. It holds one chunk at a time.
type chunkReader struct {
	remaining int64
	cur       []byte
	next      func() ([]byte, error)
	err       error
}

func (r *chunkReader) Read(p []byte) (int, error) {
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
	resp := &adapterpb.DeliverResponse{Reason: r.Reason}
	if resp.Reason == "" && r.Err != nil {
		resp.Reason = r.Err.Error()
	}
	switch r.Status {
	case OK:
		resp.Status = adapterpb.DeliverResponse_STATUS_OK
	case Reject:
		resp.Status = adapterpb.DeliverResponse_STATUS_REJECT
	default:
		resp.Status = adapterpb.DeliverResponse_STATUS_RETRY
		resp.RetryAfterMs = uint64(max(r.RetryAfter, 0) / time.Millisecond)
	}
	return resp
}

func resultFromPB(resp *adapterpb.DeliverResponse) Result {
	switch resp.GetStatus() {
	case adapterpb.DeliverResponse_STATUS_OK:
		return Result{Status: OK}
	case adapterpb.DeliverResponse_STATUS_REJECT:
		return Result{Status: Reject, Reason: resp.GetReason()}
	default:
		return Result{Status: Retry, RetryAfter: msDuration(resp.GetRetryAfterMs()), Reason: resp.GetReason()}
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
