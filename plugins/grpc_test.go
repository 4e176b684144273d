package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adapterpb "github.com/mulegate/mulegate/plugins/proto"
)

// recorder is an adapter that keeps what it is given. Options steer its
// answer: "answer": "retry" or "reject".
type recorder struct {
	mu       sync.Mutex
	payloads map[string][]byte
	metas    map[string]Meta
	calls    atomic.Int64
	// deliver, if set, replaces the default behaviour.
	deliver func(ctx context.Context, m Meta, r io.Reader) Result
	// checkErr is what Check answers.
	checkErr error
}

func newRecorder() *recorder {
	return &recorder{payloads: map[string][]byte{}, metas: map[string]Meta{}}
}

func (a *recorder) Describe(context.Context) (Description, error) {
	return Description{Name: "recorder", Deliver: true}, nil
}
func (a *recorder) Configure(context.Context, json.RawMessage) error { return nil }
func (a *recorder) Check(context.Context) error                      { return a.checkErr }
func (a *recorder) Fetch(context.Context, FetchRequest, func(Inbound) error) error {
	return ErrUnsupported
}
func (a *recorder) Ack(context.Context, string) error          { return ErrUnsupported }
func (a *recorder) Nack(context.Context, string, string) error { return ErrUnsupported }

func (a *recorder) Deliver(ctx context.Context, m Meta, r io.Reader) Result {
	a.calls.Add(1)
	if a.deliver != nil {
		return a.deliver(ctx, m, r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return RetryLater(0, err.Error())
	}
	if int64(len(b)) != m.PayloadLength {
		return Rejected(fmt.Sprintf("got %d bytes, meta says %d", len(b), m.PayloadLength))
	}
	a.mu.Lock()
	a.payloads[m.BundleID] = b
	a.metas[m.BundleID] = m
	a.mu.Unlock()
	switch m.Options["answer"] {
	case "retry":
		return RetryLater(1500*time.Millisecond, "try later")
	case "reject":
		return Rejected("never")
	}
	return Delivered()
}

func (a *recorder) payload(id string) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.payloads[id]
}

// setup is how the two ends of a test connection are built.
type setup struct {
	name string
	// server registers the adapter; old leaves DeliverSession and Reject
	// out, as an adapter built before they existed.
	serverOpts []grpc.ServerOption
	old        bool
	dialOpts   []grpc.DialOption
}

var setups = []setup{
	{name: "contract", serverOpts: ServerOptions(), dialOpts: DialOptions()},
	// gRPC's own codec on one side or the other: what an adapter in
	// another language, or a node built otherwise, looks like.
	{name: "default-codec-adapter", dialOpts: DialOptions()},
	{name: "default-codec-node", serverOpts: ServerOptions()},
	{name: "old-adapter", serverOpts: ServerOptions(), old: true, dialOpts: DialOptions()},
}

// connect serves impl on an in-memory connection and returns a client for
// it, and a function that stops the server.
func connect(t testing.TB, su setup, impl Adapter) (*GRPCClient, func()) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(su.serverOpts...)
	if su.old {
		desc := adapterpb.Adapter_ServiceDesc
		desc.Streams = slices.DeleteFunc(slices.Clone(desc.Streams), func(sd grpc.StreamDesc) bool {
			return sd.StreamName == "DeliverSession"
		})
		desc.Methods = slices.DeleteFunc(slices.Clone(desc.Methods), func(md grpc.MethodDesc) bool {
			return md.MethodName == "Reject"
		})
		srv.RegisterService(&desc, &grpcServer{impl: impl})
	} else if err := (&GRPCPlugin{Impl: impl}).GRPCServer(nil, srv); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	opts := append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, su.dialOpts...)
	conn, err := grpc.NewClient("passthrough:///adapter", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return NewGRPCClient(conn), srv.Stop
}

func payloadOf(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestCheckAcrossTheBoundary: what Check says reaches the node as the
// adapter said it, matched by the contract's errors, and an unreachable
// service is not called unreachable twice.
func TestCheckAcrossTheBoundary(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		is      error  // nil: Check succeeds
		message string // the whole message the node gets
	}{
		{"reachable", nil, nil, ""},
		{"unreachable", fmt.Errorf("%w: connection refused", ErrUnreachable), ErrUnreachable, "service unreachable: connection refused"},
		{"plain error", errors.New("bucket missing"), ErrUnreachable, "service unreachable: bucket missing"},
		{"not configured", ErrNotConfigured, ErrNotConfigured, ""},
	}
	for _, su := range setups {
		for _, tc := range tests {
			t.Run(su.name+"/"+tc.name, func(t *testing.T) {
				rec := newRecorder()
				rec.checkErr = tc.err
				c, _ := connect(t, su, rec)
				err := c.Check(t.Context())
				switch {
				case tc.is == nil && err != nil:
					t.Fatalf("Check = %v, want nil", err)
				case tc.is != nil && !errors.Is(err, tc.is):
					t.Fatalf("Check = %v, want %v", err, tc.is)
				case tc.message != "" && err.Error() != tc.message:
					t.Errorf("Check says %q, want %q", err, tc.message)
				}
			})
		}
	}
}

func TestDeliverRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 1000, SessionPayloadMax - 1, SessionPayloadMax, SessionPayloadMax + 1, 3*ChunkSize + 17, 1 << 20}
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			a := newRecorder()
			c, _ := connect(t, su, a)
			for i, size := range sizes {
				want := payloadOf(size, uint64(i))
				meta := Meta{
					BundleID:        "dtn://mule1/app|800000000000." + strconv.Itoa(i),
					Source:          "dtn://mule1/app",
					Destination:     "dtn://cloud/logs/app",
					ReportTo:        "dtn://mule1/reports",
					CreationTime:    800000000000,
					Sequence:        uint64(i),
					Lifetime:        time.Hour,
					PayloadLength:   int64(size),
					Flags:           4,
					HopCount:        2,
					HopLimit:        30,
					SignatureStatus: "valid:campfire/alice",
					Route:           "logs",
					Options:         map[string]string{"subject": "logs.mule1.app"},
				}
				if res := c.Deliver(t.Context(), meta, bytes.NewReader(want)); res.Status != OK {
					t.Fatalf("%d bytes: %v", size, res)
				}
				if got := a.payload(meta.BundleID); !bytes.Equal(got, want) {
					t.Fatalf("%d bytes: the adapter got %d different bytes", size, len(got))
				}
				a.mu.Lock()
				got := a.metas[meta.BundleID]
				a.mu.Unlock()
				if fmt.Sprint(got) != fmt.Sprint(meta) {
					t.Fatalf("%d bytes: meta\n got %+v\nwant %+v", size, got, meta)
				}
			}
			for _, size := range []int{10, SessionPayloadMax + 10} {
				meta := Meta{BundleID: "r" + strconv.Itoa(size), PayloadLength: int64(size), Options: map[string]string{"answer": "retry"}}
				res := c.Deliver(t.Context(), meta, bytes.NewReader(make([]byte, size)))
				if res.Status != Retry || res.RetryAfter != 1500*time.Millisecond || res.Reason != "try later" || res.Err != nil {
					t.Fatalf("%d bytes: want the adapter's retry, got %+v", size, res)
				}
				meta.Options["answer"] = "reject"
				res = c.Deliver(t.Context(), meta, bytes.NewReader(make([]byte, size)))
				if res.Status != Reject || res.Reason != "never" || res.Err != nil {
					t.Fatalf("%d bytes: want the adapter's reject, got %+v", size, res)
				}
			}
			if su.old != c.streamOnly.Load() {
				t.Errorf("streamOnly = %v for %s", c.streamOnly.Load(), su.name)
			}
		})
	}
}

// An adapter that answers DeliverSession with UNIMPLEMENTED itself (built
// with generated code that has the method, without implementing it) gets
// every bundle as a stream too.
type unimplementedSession struct{ *grpcServer }

func (unimplementedSession) DeliverSession(adapterpb.Adapter_DeliverSessionServer) error {
	return status.Error(codes.Unimplemented, "method DeliverSession not implemented")
}

func TestDeliverFallsBackWhenSessionUnimplemented(t *testing.T) {
	a := newRecorder()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(ServerOptions()...)
	adapterpb.RegisterAdapterServer(srv, unimplementedSession{&grpcServer{impl: a}})
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///adapter", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, DialOptions()...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	defer conn.Close()
	c := NewGRPCClient(conn)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			id := "b" + strconv.Itoa(i)
			if res := c.Deliver(t.Context(), Meta{BundleID: id, PayloadLength: 3}, bytes.NewReader([]byte("abc"))); res.Status != OK {
				t.Errorf("%s: %v", id, res)
			}
		})
	}
	wg.Wait()
	if !c.streamOnly.Load() || a.calls.Load() != 20 {
		t.Fatalf("streamOnly %v, %d deliveries", c.streamOnly.Load(), a.calls.Load())
	}
}

func TestDeliverConcurrent(t *testing.T) {
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			a := newRecorder()
			c, _ := connect(t, su, a)
			var wg sync.WaitGroup
			var next atomic.Int64
			const n = 1000
			for range 64 {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= n {
							return
						}
						size := []int{0, 100, 1 << 10, 5000, SessionPayloadMax, SessionPayloadMax + 1}[i%6]
						p := payloadOf(size, uint64(i))
						id := "b" + strconv.FormatInt(i, 10)
						if res := c.Deliver(t.Context(), Meta{BundleID: id, PayloadLength: int64(size)}, bytes.NewReader(p)); res.Status != OK {
							t.Errorf("%s: %v", id, res)
							return
						}
						if !bytes.Equal(a.payload(id), p) {
							t.Errorf("%s: payload differs", id)
							return
						}
					}
				})
			}
			wg.Wait()
			if got := a.calls.Load(); got != n {
				t.Fatalf("%d deliveries, want %d", got, n)
			}
		})
	}
}

func TestDeliverCancelledAndDeadline(t *testing.T) {
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			a := newRecorder()
			cancelled := make(chan error, 1)
			deadlines := make(chan bool, 10)
			a.deliver = func(ctx context.Context, m Meta, r io.Reader) Result {
				_, hasDeadline := ctx.Deadline()
				deadlines <- hasDeadline
				if m.Options["block"] != "" {
					<-ctx.Done()
					cancelled <- ctx.Err()
					return RetryLater(0, "cancelled")
				}
				_, _ = io.Copy(io.Discard, r)
				return Delivered()
			}
			c, _ := connect(t, su, a)
			for _, size := range []int{10, SessionPayloadMax + 10} {
				ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
				res := c.Deliver(ctx, Meta{BundleID: "slow", PayloadLength: int64(size), Options: map[string]string{"block": "1"}}, bytes.NewReader(make([]byte, size)))
				cancel()
				// The adapter's context may expire first, and its answer
				// arrive before the node's own deadline passes.
				if res.Status != Retry || !errors.Is(res.Err, context.DeadlineExceeded) && res.Reason != "cancelled" {
					t.Fatalf("%d bytes: want a retry for the deadline, got %+v", size, res)
				}
				if !<-deadlines {
					t.Errorf("%d bytes: the adapter's context had no deadline", size)
				}
				select {
				case err := <-cancelled:
					if err == nil {
						t.Errorf("%d bytes: the adapter's context ended without an error", size)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%d bytes: the adapter's delivery was not cancelled", size)
				}
				// The connection, and the session, still work.
				if res := c.Deliver(t.Context(), Meta{BundleID: "next", PayloadLength: int64(size)}, bytes.NewReader(make([]byte, size))); res.Status != OK {
					t.Fatalf("%d bytes: after a cancelled delivery: %v", size, res)
				}
				if <-deadlines {
					t.Errorf("%d bytes: a delivery without a deadline had one in the adapter", size)
				}
			}
		})
	}
}

func TestDeliverAlreadyCancelled(t *testing.T) {
	a := newRecorder()
	c, _ := connect(t, setups[0], a)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res := c.Deliver(ctx, Meta{BundleID: "x", PayloadLength: 1}, bytes.NewReader([]byte("x")))
	if res.Status != Retry || !errors.Is(res.Err, context.Canceled) || a.calls.Load() != 0 {
		t.Fatalf("got %+v after %d calls", res, a.calls.Load())
	}
}

type shortReader struct{ n int }

func (r *shortReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

func TestDeliverShortPayload(t *testing.T) {
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			a := newRecorder()
			c, _ := connect(t, su, a)
			for _, size := range []int{100, SessionPayloadMax, 3 * ChunkSize} {
				res := c.Deliver(t.Context(), Meta{BundleID: "short", PayloadLength: int64(size)}, &shortReader{n: size - 1})
				var pe *payloadError
				if res.Status != Retry || !errors.As(res.Err, &pe) {
					t.Fatalf("%d bytes: want a payload error, got %+v", size, res)
				}
				if a.payload("short") != nil {
					t.Fatalf("%d bytes: the adapter stored a short payload", size)
				}
			}
		})
	}
}

func TestDeliverAdapterGone(t *testing.T) {
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			a := newRecorder()
			started := make(chan struct{}, 1)
			a.deliver = func(ctx context.Context, m Meta, r io.Reader) Result {
				started <- struct{}{}
				<-ctx.Done()
				return RetryLater(0, "gone")
			}
			for _, size := range []int{10, SessionPayloadMax + 10} {
				c, stop := connect(t, su, a)
				done := make(chan Result, 1)
				go func() {
					done <- c.Deliver(t.Context(), Meta{BundleID: "x", PayloadLength: int64(size)}, bytes.NewReader(make([]byte, size)))
				}()
				<-started
				stop()
				res := <-done
				if res.Status != Retry || !errors.Is(res.Err, ErrUnavailable) {
					t.Fatalf("%d bytes: want ErrUnavailable, got %+v", size, res)
				}
				res = c.Deliver(t.Context(), Meta{BundleID: "y", PayloadLength: int64(size)}, bytes.NewReader(make([]byte, size)))
				if res.Status != Retry || !errors.Is(res.Err, ErrUnavailable) {
					t.Fatalf("%d bytes, after: want ErrUnavailable, got %+v", size, res)
				}
			}
		})
	}
}

// An adapter that keeps the payload reader and reads it after answering
// gets an error, never the bytes of a later bundle that reuse its buffer.
func TestLateReadFails(t *testing.T) {
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			a := newRecorder()
			kept := make(chan io.Reader, 1)
			a.deliver = func(_ context.Context, m Meta, r io.Reader) Result {
				if m.BundleID == "keeper" {
					kept <- r
					return Delivered()
				}
				_, _ = io.Copy(io.Discard, r)
				return Delivered()
			}
			c, _ := connect(t, su, a)
			for _, size := range []int{1000, 2 * ChunkSize} {
				if res := c.Deliver(t.Context(), Meta{BundleID: "keeper", PayloadLength: int64(size)}, bytes.NewReader(bytes.Repeat([]byte("k"), size))); res.Status != OK {
					t.Fatal(res)
				}
				r := <-kept
				for range 10 {
					if res := c.Deliver(t.Context(), Meta{BundleID: "other", PayloadLength: int64(size)}, bytes.NewReader(bytes.Repeat([]byte("o"), size))); res.Status != OK {
						t.Fatal(res)
					}
				}
				b, err := io.ReadAll(r)
				if bytes.Contains(b, []byte("o")) {
					t.Fatalf("%d bytes: a late read saw another bundle's payload", size)
				}
				if err == nil && len(b) == size && su.name == "contract" {
					t.Fatalf("%d bytes: a late read succeeded", size)
				}
			}
		})
	}
}

func TestSessionRejectsMalformed(t *testing.T) {
	for name, req := range map[string]*adapterpb.SessionRequest{
		"no meta":      {Deliveries: []*adapterpb.SessionDelivery{{Id: 1, Payload: []byte("x")}}},
		"short":        {Deliveries: []*adapterpb.SessionDelivery{{Id: 1, Meta: &adapterpb.BundleMeta{BundleId: "x", PayloadLength: 5}, Payload: []byte("x")}}},
		"long":         {Deliveries: []*adapterpb.SessionDelivery{{Id: 1, Meta: &adapterpb.BundleMeta{BundleId: "x"}, Payload: []byte("x")}}},
		"duplicate id": {Deliveries: []*adapterpb.SessionDelivery{{Id: 1, Meta: &adapterpb.BundleMeta{BundleId: "x"}}, {Id: 1, Meta: &adapterpb.BundleMeta{BundleId: "y"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			// A delivery that ignores its context must not hold back the
			// session's failure.
			block := make(chan struct{})
			defer close(block)
			a := newRecorder()
			a.deliver = func(context.Context, Meta, io.Reader) Result { <-block; return Delivered() }
			c, _ := connect(t, setups[0], a)
			stream, err := c.rpc.DeliverSession(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("want INVALID_ARGUMENT, got %v", err)
			}
		})
	}
}

// splits returns data cut into pieces in several ways, as gRPC may hold a
// received message.
func splits(data []byte, seed uint64) []mem.BufferSlice {
	one := func(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }
	out := []mem.BufferSlice{one(data), nil}
	for _, b := range data {
		out[1] = append(out[1], mem.SliceBuffer([]byte{b}))
	}
	r := rand.New(rand.NewPCG(seed, 2))
	for range 3 {
		var s mem.BufferSlice
		for rest := data; len(rest) > 0; {
			n := 1 + r.IntN(len(rest))
			s, rest = append(s, mem.SliceBuffer(rest[:n])), rest[n:]
		}
		out = append(out, s)
	}
	return out
}

// checkDecoders decodes data with the codec's own decoders, in every split,
// and compares what they find with proto.Unmarshal.
func checkDecoders(t *testing.T, data []byte) {
	t.Helper()
	var want adapterpb.DeliverRequest
	wantErr := proto.Unmarshal(data, &want)
	for _, bufs := range splits(data, uint64(len(data))) {
		f := chunkFrame{buf: make([]byte, 16)}
		err := f.decode(bufs)
		if wantErr == nil && err != nil {
			t.Fatalf("DeliverRequest %x: proto decodes it, chunkFrame fails: %v", data, err)
		}
		if err == nil && wantErr == nil {
			chunk, meta := f.get()
			if meta != (want.GetMeta() != nil) || !bytes.Equal(chunk, want.GetChunk()) {
				t.Fatalf("DeliverRequest %x: chunkFrame found meta %v chunk %x; proto %v", data, meta, chunk, &want)
			}
		}
	}
	// The decoders drop unknown fields, which nothing reads.
	var wantS adapterpb.SessionRequest
	wantErr = proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, &wantS)
	for _, bufs := range splits(data, uint64(len(data))+1) {
		var r sessionRequest
		err := r.decode(bufs)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("SessionRequest %x: proto says %v, sessionRequest %v", data, wantErr, err)
		}
		if err != nil {
			continue
		}
		jobs, cancels := r.items()
		if !slices.Equal(cancels, wantS.GetCancel()) || len(jobs) != len(wantS.GetDeliveries()) {
			t.Fatalf("SessionRequest %x: %d deliveries, cancel %v; proto %v", data, len(jobs), cancels, &wantS)
		}
		for i, j := range jobs {
			// What the adapter sees of a delivery: Meta, as metaFromPB
			// makes it of what protobuf decodes.
			d := wantS.GetDeliveries()[i]
			var meta Meta
			if d.GetMeta() != nil {
				meta = metaFromPB(d.GetMeta())
			}
			if j.id != d.GetId() || j.timeoutMs != d.GetTimeoutMs() || j.hasMeta != (d.GetMeta() != nil) ||
				!sameMeta(j.meta, meta) || !bytes.Equal(j.payload, d.GetPayload()) {
				t.Fatalf("SessionRequest %x: delivery %d:\n got id %d timeout %d meta %v %+v payload %x\nwant %v",
					data, i, j.id, j.timeoutMs, j.hasMeta, j.meta, j.payload, d)
			}
		}
		for _, j := range jobs {
			buffers.Put(j.buf)
		}
	}
	var wantR adapterpb.SessionResponse
	wantErr = proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, &wantR)
	for _, bufs := range splits(data, uint64(len(data))+2) {
		var r sessionResponse
		err := r.decode(bufs)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("SessionResponse %x: proto says %v, sessionResponse %v", data, wantErr, err)
		}
		if err != nil {
			continue
		}
		var plain sessionResponse
		proto.Merge(&plain.SessionResponse, &wantR)
		if got, want := r.get(), plain.get(); !slices.Equal(got, want) {
			t.Fatalf("SessionResponse %x:\n got %+v\nwant %+v", data, got, want)
		}
	}
}

// sameMeta compares metas as an adapter sees them: no options and an
// empty map of them are the same. (Protobuf makes the map for an options
// field of the wrong wire type, and then skips the field.)
func sameMeta(a, b Meta) bool {
	if len(a.Options) == 0 && len(b.Options) == 0 {
		a.Options, b.Options = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

func decoderSeeds() [][]byte {
	meta := &adapterpb.BundleMeta{BundleId: "dtn://a/b|1.2", PayloadLength: 3, Options: map[string]string{"k": "v"}}
	m := func(msg proto.Message) []byte {
		b, err := proto.Marshal(msg)
		if err != nil {
			panic(err)
		}
		return b
	}
	seeds := [][]byte{
		nil,
		m(&adapterpb.DeliverRequest{Frame: &adapterpb.DeliverRequest_Chunk{Chunk: []byte("hello")}}),
		m(&adapterpb.DeliverRequest{Frame: &adapterpb.DeliverRequest_Chunk{Chunk: []byte{}}}),
		m(&adapterpb.DeliverRequest{Frame: &adapterpb.DeliverRequest_Chunk{Chunk: payloadOf(ChunkSize, 9)}}),
		m(&adapterpb.DeliverRequest{Frame: &adapterpb.DeliverRequest_Meta{Meta: meta}}),
		m(&adapterpb.SessionRequest{
			Deliveries: []*adapterpb.SessionDelivery{
				{Id: 1, Meta: meta, Payload: []byte("abc"), TimeoutMs: 5000},
				{Id: 2, Meta: &adapterpb.BundleMeta{}},
				{Id: 3, Meta: meta, Payload: payloadOf(SessionPayloadMax, 3)},
			},
			Cancel: []uint64{7, 300, 1 << 40},
		}),
	}
	// The last of a oneof wins; unknown fields of every wire type are
	// skipped; a message field given twice is merged; an unpacked repeated
	// field is read like a packed one.
	var b []byte
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("first"))
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, m(meta))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("last"))
	b = protowire.AppendTag(b, 99, protowire.VarintType)
	b = protowire.AppendVarint(b, 12345)
	b = protowire.AppendTag(b, 98, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 1)
	b = protowire.AppendTag(b, 97, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 1)
	b = protowire.AppendTag(b, 96, protowire.StartGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	b = protowire.AppendTag(b, 96, protowire.EndGroupType)
	seeds = append(seeds, b)
	var d []byte
	d = protowire.AppendTag(d, 2, protowire.BytesType)
	d = protowire.AppendBytes(d, m(&adapterpb.BundleMeta{BundleId: "x"}))
	d = protowire.AppendTag(d, 2, protowire.BytesType)
	d = protowire.AppendBytes(d, m(&adapterpb.BundleMeta{Source: "y", PayloadLength: 1}))
	d = protowire.AppendTag(d, 3, protowire.BytesType)
	d = protowire.AppendBytes(d, []byte("z"))
	d = protowire.AppendTag(d, 1, protowire.BytesType) // id with the wrong wire type: unknown
	d = protowire.AppendBytes(d, []byte("?"))
	var s []byte
	s = protowire.AppendTag(s, 1, protowire.BytesType)
	s = protowire.AppendBytes(s, d)
	s = protowire.AppendTag(s, 2, protowire.VarintType)
	s = protowire.AppendVarint(s, 5)
	s = protowire.AppendTag(s, 2, protowire.BytesType)
	s = protowire.AppendBytes(s, protowire.AppendVarint(protowire.AppendVarint(nil, 6), 7))
	seeds = append(seeds, s)
	// BundleMeta with every field, options whose entries lack a key or a
	// value or repeat one, and strings that are not UTF-8.
	full := &adapterpb.BundleMeta{
		BundleId: "dtn://mule1/app|800000000000.7", Source: "dtn://mule1/app", Destination: "ipn:2.1",
		ReportTo: "dtn:none", CreationTimeMs: 800000000000, Sequence: 7, LifetimeMs: 1 << 62,
		PayloadLength: 2, Flags: 4, HopCount: 3, HopLimit: 30, SignatureStatus: "valid:campfire/alice",
		Route: "logs", Options: map[string]string{"subject": "logs.é", "": "", "name": "x"},
	}
	var opts []byte
	opts = protowire.AppendTag(opts, 14, protowire.BytesType)
	opts = protowire.AppendBytes(opts, protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "no key"))
	opts = protowire.AppendTag(opts, 14, protowire.BytesType)
	opts = protowire.AppendBytes(opts, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "no value"))
	opts = protowire.AppendTag(opts, 14, protowire.BytesType)
	opts = protowire.AppendBytes(opts, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "subject"))
	opts = protowire.AppendTag(opts, 10, protowire.BytesType) // hop_count with the wrong wire type: unknown
	opts = protowire.AppendBytes(opts, []byte("?"))
	badUTF8 := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "dtn://\xff")
	var badKey []byte
	badKey = protowire.AppendTag(badKey, 14, protowire.BytesType)
	badKey = protowire.AppendBytes(badKey, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xfe"))
	for _, mb := range [][]byte{append(m(full), opts...), badUTF8, badKey} {
		var d []byte
		d = protowire.AppendTag(d, 1, protowire.VarintType)
		d = protowire.AppendVarint(d, 9)
		d = protowire.AppendTag(d, 2, protowire.BytesType)
		d = protowire.AppendBytes(d, mb)
		d = protowire.AppendTag(d, 3, protowire.BytesType)
		d = protowire.AppendBytes(d, []byte("hi"))
		seeds = append(seeds, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), d))
	}
	// SessionResponse: answers of every kind, a result given twice
	// (merged), a status that is no Status, a reason that is not UTF-8.
	seeds = append(seeds, m(&adapterpb.SessionResponse{Results: []*adapterpb.SessionResult{
		{Id: 1, Result: resultToPB(Delivered())},
		{Id: 2, Result: resultToPB(RetryLater(1500*time.Millisecond, "later"))},
		{Id: 3, Result: resultToPB(Rejected("never"))},
		{Id: 4},
		{Id: 5, Result: &adapterpb.DeliverResponse{Status: 42, Reason: strings.Repeat("r", 3000)}},
		{Id: 6, Result: &adapterpb.DeliverResponse{Status: -1}},
	}}))
	var r []byte
	r = protowire.AppendTag(r, 2, protowire.BytesType)
	r = protowire.AppendBytes(r, m(&adapterpb.DeliverResponse{Status: adapterpb.DeliverResponse_STATUS_RETRY, RetryAfterMs: 10}))
	r = protowire.AppendTag(r, 1, protowire.VarintType)
	r = protowire.AppendVarint(r, 77)
	r = protowire.AppendTag(r, 2, protowire.BytesType)
	r = protowire.AppendBytes(r, m(&adapterpb.DeliverResponse{Reason: "merged"}))
	seeds = append(seeds, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), r))
	badReason := protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), "\xff")
	badReason = protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), badReason)
	seeds = append(seeds, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), badReason))
	// Truncated and garbled input.
	for _, x := range slices.Clone(seeds) {
		if len(x) > 2 {
			seeds = append(seeds, x[:len(x)/2], x[:len(x)-1], append(slices.Clone(x[:len(x)-1]), 0xff))
		}
	}
	return seeds
}

func TestDecodersMatchProto(t *testing.T) {
	for _, seed := range decoderSeeds() {
		checkDecoders(t, seed)
	}
}

// The hand-written encoders write what protobuf reads back as the
// generated messages would have it: metaToPB for a delivery's meta,
// resultToPB for an answer. With at most one option (protobuf writes map
// entries in random order) the bytes are protobuf's own, field for field.
func TestEncodersMatchProto(t *testing.T) {
	metas := []Meta{
		{},
		{BundleID: "x", PayloadLength: 3},
		{
			BundleID: "dtn://mule1/app|800000000000.7", Source: "dtn://mule1/app", Destination: "ipn:2.1",
			ReportTo: "dtn:none", CreationTime: 800000000000, Sequence: 1 << 40, Lifetime: 90 * time.Minute,
			PayloadLength: 1000, Flags: 4, HopCount: 3, HopLimit: 1<<32 - 1, SignatureStatus: "valid:campfire/alice",
			Route: "logs", Options: map[string]string{"subject": "logs.mule1.é"},
		},
		{BundleID: "y", Lifetime: -time.Second, PayloadLength: SessionPayloadMax, Options: map[string]string{"": "", "a": strings.Repeat("v", 300), "b": "w"}},
		{BundleID: strings.Repeat("z", 200), Lifetime: time.Duration(math.MaxInt64), PayloadLength: 127},
	}
	for i, meta := range metas {
		payload := payloadOf(int(meta.PayloadLength), uint64(i))
		for _, timeout := range []uint64{0, 1, 30000} {
			id := uint64(i)*1000 + timeout
			buf, data, err := encodeDelivery(id, &meta, timeout, bytes.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, payload) {
				t.Fatalf("meta %d: the payload in the buffer differs", i)
			}
			var got adapterpb.SessionRequest
			if err := proto.Unmarshal(buf.ReadOnlyData(), &got); err != nil {
				t.Fatalf("meta %d: protobuf cannot read the encoding: %v", i, err)
			}
			want := &adapterpb.SessionRequest{Deliveries: []*adapterpb.SessionDelivery{{Id: id, Meta: metaToPB(meta), Payload: payload, TimeoutMs: timeout}}}
			if !proto.Equal(&got, want) {
				t.Fatalf("meta %d:\n got %v\nwant %v", i, &got, want)
			}
			if len(meta.Options) <= 1 {
				if b, _ := proto.Marshal(want); !bytes.Equal(b, buf.ReadOnlyData()) {
					t.Fatalf("meta %d: protobuf encodes it as\n%x\nnot\n%x", i, b, buf.ReadOnlyData())
				}
			}
			buf.Free()
		}
	}
	// A string protobuf could not carry fails its delivery only.
	for _, meta := range []Meta{{BundleID: "\xff"}, {Route: "a\xc0"}, {Options: map[string]string{"k\xff": "v"}}, {Options: map[string]string{"k": "\xff"}}} {
		if _, _, err := encodeDelivery(1, &meta, 0, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: want ErrInvalid, got %v", meta, err)
		}
	}
	// A whole message: encoded deliveries and cancellations.
	var batch sessionBatch
	var want adapterpb.SessionRequest
	for i, meta := range metas[:3] {
		buf, _, err := encodeDelivery(uint64(i+1), &meta, 5, bytes.NewReader(payloadOf(int(meta.PayloadLength), 0)))
		if err != nil {
			t.Fatal(err)
		}
		batch.deliveries = append(batch.deliveries, buf)
		want.Deliveries = append(want.Deliveries, &adapterpb.SessionDelivery{Id: uint64(i + 1), Meta: metaToPB(meta), Payload: payloadOf(int(meta.PayloadLength), 0), TimeoutMs: 5})
	}
	batch.cancel = []uint64{3, 1 << 40}
	want.Cancel = batch.cancel
	data, err := codec{}.Marshal(&batch)
	if err != nil {
		t.Fatal(err)
	}
	var got adapterpb.SessionRequest
	if err := proto.Unmarshal(data.Materialize(), &got); err != nil || !proto.Equal(&got, &want) {
		t.Fatalf("sessionBatch: %v\n got %v\nwant %v", err, &got, &want)
	}
	data.Free()
	// Answers.
	answers := sessionAnswers{answers: []wireAnswer{
		answerOf(1, Delivered()),
		answerOf(2, RetryLater(2500*time.Millisecond, "later")),
		answerOf(3, Rejected("never")),
		answerOf(1<<50, Result{Status: Retry, Err: errors.New("broken")}),
		answerOf(5, Rejected(strings.Repeat("é", 1000))),
		{id: 6},
	}}
	data, err = codec{}.Marshal(&answers)
	if err != nil {
		t.Fatal(err)
	}
	var gotR adapterpb.SessionResponse
	if err := proto.Unmarshal(data.Materialize(), &gotR); err != nil || !proto.Equal(&gotR, answers.proto()) {
		t.Fatalf("sessionAnswers: %v\n got %v\nwant %v", err, &gotR, answers.proto())
	}
	if b, _ := proto.Marshal(answers.proto()); !bytes.Equal(b, data.Materialize()) {
		t.Fatalf("sessionAnswers: protobuf encodes them as\n%x\nnot\n%x", b, data.Materialize())
	}
	for i, r := range gotR.GetResults() {
		if want := resultToPB(answers.answers[i].result()); i < 5 && !proto.Equal(r.GetResult(), want) {
			t.Fatalf("answer %d: %v, want %v", i, r.GetResult(), want)
		}
	}
	data.Free()
}

func FuzzDecoders(f *testing.F) {
	for _, seed := range decoderSeeds() {
		f.Add(seed)
	}
	f.Fuzz(checkDecoders)
}

func TestBufferPool(t *testing.T) {
	var p bufferPool
	for _, n := range []int{0, 1, minPooled, ChunkSize, ChunkSize + 100, SessionPayloadMax + 1000, 256<<10 + 4096, 2 << 20} {
		bp := p.Get(n)
		if len(*bp) != n {
			t.Fatalf("Get(%d): length %d", n, len(*bp))
		}
		if i := tier(n); i >= 0 && cap(*bp) != tierCap(i) {
			t.Fatalf("Get(%d): capacity %d, want tier %d's %d", n, cap(*bp), i, tierCap(i))
		}
		p.Put(bp)
	}
	// A 64 KiB chunk with its framing fits the 64 KiB tier.
	if tierCap(tier(ChunkSize+16)) != ChunkSize+ChunkSize/16 {
		t.Fatalf("a chunk message lands in a %d-byte tier", tierCap(tier(ChunkSize+16)))
	}
	// Slices that did not come from a tier are not kept.
	odd := make([]byte, 5000)
	p.Put(&odd)
	if bp := p.Get(4000); cap(*bp) == 5000 {
		t.Fatal("Put kept a slice of a foreign capacity")
	}
}

func TestBoundReason(t *testing.T) {
	long := strings.Repeat("x", 5<<20)
	// "é" is two bytes: at an odd offset it straddles the cut.
	straddle := strings.Repeat("a", MaxReasonLength-len(reasonEllipsis)-1) + strings.Repeat("é", 10)
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "disk full", "disk full"},
		{"at the limit", long[:MaxReasonLength], long[:MaxReasonLength]},
		{"one over", long[:MaxReasonLength+1], long[:MaxReasonLength-len(reasonEllipsis)] + reasonEllipsis},
		{"far over", long, long[:MaxReasonLength-len(reasonEllipsis)] + reasonEllipsis},
		{"cut inside a character", straddle, straddle[:MaxReasonLength-len(reasonEllipsis)-1] + reasonEllipsis},
		{"invalid UTF-8", "bad name \xff\xfe.txt", "bad name \uFFFD.txt"},
		{"invalid and long", strings.Repeat("\xff", 5000), "\uFFFD" + reasonEllipsis},
		{"grows past the limit when repaired", strings.Repeat("a\xff", 500), strings.Repeat("a\uFFFD", 255) + "a" + reasonEllipsis},
		{"long, split at the limit", long[:MaxReasonLength-1] + "é", long[:MaxReasonLength-len(reasonEllipsis)] + reasonEllipsis},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := boundReason(tc.in)
			if got != tc.want {
				t.Fatalf("boundReason: got %d bytes %.40q…, want %d bytes %.40q…", len(got), got, len(tc.want), tc.want)
			}
			if len(got) > MaxReasonLength || !utf8.ValidString(got) {
				t.Fatalf("boundReason gave %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
			}
		})
	}
}

// An adapter's reason, however long, and whatever bytes it holds, comes
// back bounded on both paths, instead of failing the call (or the whole
// session) on gRPC's 4 MiB message limit or protobuf's UTF-8 check.
func TestLongReasonCrossesBoundary(t *testing.T) {
	for _, tc := range []struct {
		name, reason, want string
	}{
		{"5 MiB", "refused: " + strings.Repeat("no ", 5<<20/3), "refused: no no no "},
		{"not UTF-8", "refused: \xff.txt", "refused: \uFFFD.txt"},
	} {
		for _, su := range setups {
			t.Run(tc.name+"/"+su.name, func(t *testing.T) {
				a := newRecorder()
				a.deliver = func(_ context.Context, m Meta, r io.Reader) Result {
					_, _ = io.Copy(io.Discard, r)
					if m.Options["answer"] == "retry" {
						return RetryLater(time.Second, tc.reason)
					}
					return Rejected(tc.reason)
				}
				c, _ := connect(t, su, a)
				for _, size := range []int{10, SessionPayloadMax + 10} {
					for _, answer := range []Status{Reject, Retry} {
						meta := Meta{BundleID: "long", PayloadLength: int64(size), Options: map[string]string{}}
						if answer == Retry {
							meta.Options["answer"] = "retry"
						}
						// Several at once, so that answers share session
						// messages.
						var wg sync.WaitGroup
						for range 8 {
							wg.Go(func() {
								res := c.Deliver(t.Context(), meta, bytes.NewReader(make([]byte, size)))
								if res.Status != answer || res.Err != nil {
									t.Errorf("%d bytes: want the adapter's %v, got %v %v", size, answer, res.Status, res.Err)
									return
								}
								if len(res.Reason) > MaxReasonLength || !utf8.ValidString(res.Reason) || !strings.HasPrefix(res.Reason, tc.want) {
									t.Errorf("%d bytes: reason of %d bytes, valid UTF-8 %v: %.60q", size, len(res.Reason), utf8.ValidString(res.Reason), res.Reason)
								}
							})
						}
						wg.Wait()
					}
				}
			})
		}
	}
}

// sentResponses records what a session's sender sends; Send fails once
// failAt messages went.
type sentResponses struct {
	adapterpb.Adapter_DeliverSessionServer
	failAt int
	sent   []*adapterpb.SessionResponse
	tries  int
}

func (s *sentResponses) Send(m *adapterpb.SessionResponse) error {
	s.tries++
	if s.failAt >= 0 && len(s.sent) >= s.failAt {
		return status.Error(codes.Unavailable, "broken")
	}
	s.sent = append(s.sent, proto.Clone(m).(*adapterpb.SessionResponse))
	return nil
}

// SendMsg takes what the sender sends through the contract's codec, as
// gRPC would: marshalled at once, and read back as protobuf.
func (s *sentResponses) SendMsg(m any) error {
	data, err := codec{}.Marshal(m)
	if err != nil {
		return err
	}
	defer data.Free()
	var resp adapterpb.SessionResponse
	if err := proto.Unmarshal(data.Materialize(), &resp); err != nil {
		return err
	}
	return s.Send(&resp)
}

// However many answers wait, each SessionResponse carries at most
// sessionBatchResults of them, so it stays far below gRPC's limit.
func TestSessionResponsesAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name      string
		waiting   int
		failAt    int // -1: never
		wantSends []int
	}{
		{"none", 0, -1, nil},
		{"one", 1, -1, []int{1}},
		{"a full message", sessionBatchResults, -1, []int{sessionBatchResults}},
		{"one over", sessionBatchResults + 1, -1, []int{sessionBatchResults, 1}},
		{"many", 1000, -1, append(slices.Repeat([]int{sessionBatchResults}, 1000/sessionBatchResults), 1000%sessionBatchResults)},
		// Once a Send failed, the rest is dropped, not tried message by
		// message.
		{"broken", 1000, 1, []int{sessionBatchResults}},
	} {
		for _, own := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/own-codec=%v", tc.name, own), func(t *testing.T) {
				stream := &sentResponses{failAt: tc.failAt}
				ss := &serverSession{stream: stream, wake: make(chan struct{}, 1), stop: make(chan struct{})}
				ss.ownCodec.Store(own)
				for i := range tc.waiting {
					ss.results = append(ss.results, answerOf(uint64(i), Rejected(strings.Repeat("r", 5000))))
				}
				close(ss.stop)
				ss.send()
				var sizes []int
				next := uint64(0)
				for _, m := range stream.sent {
					sizes = append(sizes, len(m.GetResults()))
					if n := proto.Size(m); n > 100<<10 {
						t.Errorf("a message of %d bytes", n)
					}
					for _, r := range m.GetResults() {
						if r.GetId() != next {
							t.Fatalf("answer %d sent where %d was due", r.GetId(), next)
						}
						next++
					}
				}
				if !slices.Equal(sizes, tc.wantSends) {
					t.Fatalf("sent messages of %v answers, want %v", sizes, tc.wantSends)
				}
				if want := len(tc.wantSends) + 1; tc.failAt >= 0 && stream.tries != want {
					t.Fatalf("%d sends tried, want %d: the sent ones and the failed one", stream.tries, want)
				}
				if len(ss.results) != 0 {
					t.Fatalf("%d answers left behind", len(ss.results))
				}
			})
		}
	}
}

// BenchmarkCodec delivers through an in-memory connection with the
// contract's codec at both ends, and with gRPC's own codec at both ends
// (same flow-control windows), to show what the right-sized buffers save:
// a 10 MiB payload is 160 chunks of 64 KiB, each of which gRPC's pool
// serves from its 1 MiB tier, cleared. A 1 KiB payload goes on the
// DeliverSession stream, where the node uses the contract's codec
// whatever the connection's (sessionCodec): there "grpc-codec" means the
// adapter's end only, which decodes with protobuf's generic code and
// answers with generated messages. Both ends run in this process, so the
// time is the CPU of both; the "grpc-codec" result reports its rate as a
// percentage of the "contract" run just before it (with -count N, compare
// medians instead).
//
//	go test -run '^$' -bench Codec -benchtime 2s -count 3 ./plugins
func BenchmarkCodec(b *testing.B) {
	grpcCodec := setup{
		name:       "grpc-codec",
		serverOpts: []grpc.ServerOption{grpc.InitialWindowSize(WindowSize), grpc.InitialConnWindowSize(WindowSize)},
		dialOpts:   []grpc.DialOption{grpc.WithInitialWindowSize(WindowSize), grpc.WithInitialConnWindowSize(WindowSize)},
	}
	for _, size := range []int{1 << 10, 10 << 20} {
		payload := bytes.Repeat([]byte("mulegate"), size/8)
		var contract float64
		for _, su := range []setup{setups[0], grpcCodec} {
			b.Run(fmt.Sprintf("%s/%s", sizeLabel(size), su.name), func(b *testing.B) {
				a := newRecorder()
				a.deliver = func(_ context.Context, m Meta, r io.Reader) Result {
					if _, err := io.Copy(io.Discard, r); err != nil {
						return RetryLater(0, err.Error())
					}
					return Delivered()
				}
				c, _ := connect(b, su, a)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				// About 64 in flight, as with max_in_flight: 64.
				b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if res := c.Deliver(b.Context(), Meta{BundleID: "b", PayloadLength: int64(size)}, bytes.NewReader(payload)); res.Status != OK {
							b.Error(res)
							return
						}
					}
				})
				rate := float64(b.N) / time.Since(start).Seconds()
				if su.name == "contract" {
					contract = rate
				} else if contract > 0 {
					b.ReportMetric(100*rate/contract, "%-of-contract")
				}
			})
		}
	}
}

func sizeLabel(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// rejecting is a recorder that can also set inbound messages aside.
type rejecting struct {
	*recorder
	mu       sync.Mutex
	rejected map[string]string // receipt → reason
}

func (a *rejecting) Reject(_ context.Context, receipt, reason string) error {
	if receipt == "unknown" {
		return fmt.Errorf("%w: %q", ErrUnknownReceipt, receipt)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rejected[receipt] = reason
	return nil
}

// Reject is optional: an adapter with it gets the receipt and the reason
// (bounded like any reason), and its errors keep their kind; one without it,
// or one built before it existed, answers with ErrUnsupported, which is the
// node's cue to fall back to Nack.
func TestRejectIsOptional(t *testing.T) {
	long := strings.Repeat("refused ", 1000)
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			impl := &rejecting{recorder: newRecorder(), rejected: map[string]string{}}
			c, _ := connect(t, su, impl)
			err := c.Reject(t.Context(), "r1", "destination refused: bad EID")
			if su.old {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("Reject on an adapter built before it = %v, want ErrUnsupported", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Reject(t.Context(), "r2", long); err != nil {
				t.Fatal(err)
			}
			if err := c.Reject(t.Context(), "unknown", "x"); !errors.Is(err, ErrUnknownReceipt) {
				t.Errorf("Reject of an unknown receipt = %v, want ErrUnknownReceipt", err)
			}
			impl.mu.Lock()
			defer impl.mu.Unlock()
			if got := impl.rejected["r1"]; got != "destination refused: bad EID" {
				t.Errorf("adapter got reason %q", got)
			}
			if got := impl.rejected["r2"]; len(got) > MaxReasonLength || !strings.HasPrefix(got, "refused refused") {
				t.Errorf("long reason arrived as %d bytes (limit %d)", len(got), MaxReasonLength)
			}
		})
	}
	t.Run("adapter without Reject", func(t *testing.T) {
		c, _ := connect(t, setups[0], newRecorder())
		if err := c.Reject(t.Context(), "r1", "x"); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Reject on an adapter without it = %v, want ErrUnsupported", err)
		}
	})
}

// Deliveries that block until every one of them runs still all run: a
// worker that takes a delivery has the next one started by another,
// whether idle or new.
func TestWorkerPoolRunsBlockingDeliveriesConcurrently(t *testing.T) {
	const n, rounds = 50, 3
	var started [rounds]sync.WaitGroup
	var ran atomic.Int64
	p := &workerPool{run: func(job *sessionJob) {
		// job.id is the round: each round's deliveries wait for each other.
		wg := &started[job.id]
		wg.Done()
		all := make(chan struct{})
		go func() { wg.Wait(); close(all) }()
		select {
		case <-all:
			ran.Add(1)
		case <-time.After(10 * time.Second):
			t.Error("a delivery waited for the others to start, and they did not")
		}
	}}
	p.cond.L = &p.mu
	for round := range rounds {
		started[round].Add(n)
		for range n {
			p.push(&sessionJob{id: uint64(round)})
		}
		for deadline := time.Now().Add(20 * time.Second); ran.Load() < int64(n*(round+1)) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	p.close(false)
	p.workers.Wait()
	if ran.Load() != n*rounds {
		t.Fatalf("%d deliveries ran, want %d", ran.Load(), n*rounds)
	}
}

// Closed with drop, the pool hands back what no worker started, and runs
// nothing more; closed without, it runs what was queued before it ends.
func TestWorkerPoolClose(t *testing.T) {
	for _, drop := range []bool{false, true} {
		release := make(chan struct{})
		var ran atomic.Int64
		p := &workerPool{run: func(*sessionJob) { <-release; ran.Add(1) }}
		p.cond.L = &p.mu
		p.push(&sessionJob{id: 1})
		// A worker on its way takes a delivery as it arrives, in one
		// hold of the lock.
		p.mu.Lock()
		for p.waking {
			p.mu.Unlock()
			runtime.Gosched()
			p.mu.Lock()
		}
		// Two more behind the first, with no worker sent for them: the
		// one running the first is to take them.
		p.queue = append(p.queue, &sessionJob{id: 2}, &sessionJob{id: 3})
		p.mu.Unlock()
		left := p.close(drop)
		close(release)
		p.workers.Wait()
		want, wantLeft := int64(3), 0
		if drop {
			want, wantLeft = 1, 2
		}
		if ran.Load() != want || len(left) != wantLeft {
			t.Fatalf("drop %v: %d ran, %d handed back; want %d and %d", drop, ran.Load(), len(left), want, wantLeft)
		}
	}
}

// A meta that protobuf could not carry (a string that is not UTF-8) fails
// its own delivery, not the session and every delivery on it.
func TestInvalidMetaFailsOnlyItsDelivery(t *testing.T) {
	a := newRecorder()
	c, _ := connect(t, setups[0], a)
	res := c.Deliver(t.Context(), Meta{BundleID: "bad\xff", PayloadLength: 1}, bytes.NewReader([]byte("x")))
	if res.Status != Retry || !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("want a retry with ErrInvalid, got %+v", res)
	}
	if res := c.Deliver(t.Context(), Meta{BundleID: "good", PayloadLength: 1}, bytes.NewReader([]byte("x"))); res.Status != OK {
		t.Fatalf("after it: %v", res)
	}
	if a.calls.Load() != 1 {
		t.Fatalf("%d deliveries reached the adapter, want 1", a.calls.Load())
	}
}

// Deliveries under contexts that end while they wait, shared by many or
// each its own, racing their answers: each gets one answer, OK or the end
// of its context, and the session is left with nothing pending or
// watched.
func TestDeliverContextsEndWhileWaiting(t *testing.T) {
	a := newRecorder()
	a.deliver = func(ctx context.Context, m Meta, r io.Reader) Result {
		_, _ = io.Copy(io.Discard, r)
		d, _ := strconv.Atoi(m.Options["sleep_us"])
		select {
		case <-time.After(time.Duration(d) * time.Microsecond):
			return Delivered()
		case <-ctx.Done():
			return RetryLater(0, "cancelled")
		}
	}
	c, _ := connect(t, setups[0], a)
	var ok, ended atomic.Int64
	var wg sync.WaitGroup
	for round := range 20 {
		shared, cancelShared := context.WithCancel(t.Context())
		time.AfterFunc(time.Duration(round%5)*300*time.Microsecond, cancelShared)
		for g := range 32 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(round), uint64(g)))
				for i := range 10 {
					ctx, cancel := shared, context.CancelFunc(func() {})
					switch i % 3 {
					case 1:
						ctx, cancel = context.WithTimeout(t.Context(), time.Duration(r.IntN(1500))*time.Microsecond)
					case 2:
						ctx = context.WithoutCancel(t.Context())
					}
					meta := Meta{BundleID: fmt.Sprintf("b%d.%d.%d", round, g, i), PayloadLength: 10,
						Options: map[string]string{"sleep_us": strconv.Itoa(r.IntN(1000))}}
					res := c.Deliver(ctx, meta, bytes.NewReader(make([]byte, 10)))
					switch {
					case res.Status == OK:
						ok.Add(1)
					case res.Status == Retry && (ctx.Err() != nil || res.Reason == "cancelled"):
						ended.Add(1)
					default:
						t.Errorf("%s: %+v (context: %v)", meta.BundleID, res, ctx.Err())
					}
					cancel()
				}
			})
		}
		wg.Wait()
		cancelShared()
	}
	if ok.Load() == 0 || ended.Load() == 0 {
		t.Fatalf("%d delivered, %d ended by their context: want some of each", ok.Load(), ended.Load())
	}
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		t.Fatal("the session failed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) != 0 || len(s.watches) != 0 || len(s.queue) != 0 {
		t.Fatalf("left behind: %d pending, %d watches, %d queued", len(s.pending), len(s.watches), len(s.queue))
	}
}
