package quic

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
)

// countingSink reads every payload to its end and remembers what it saw.
type countingSink struct {
	calls    int
	stored   int
	payload  []byte
	received uint64
}

func (c *countingSink) Receive(_ context.Context, _ convergence.Session, b *bundle.Bundle, pr *bundle.PayloadReader) error {
	c.calls++
	var buf bytes.Buffer
	n, err := io.Copy(&buf, pr)
	c.received = uint64(n)
	if err != nil {
		return err
	}
	if uint64(n) != b.Payload.Length {
		return errors.New("payload reader returned EOF early")
	}
	c.stored++
	c.payload = buf.Bytes()
	return nil
}

// fuzzLimits keep what one input can make the receiver allocate small.
var fuzzLimits = bundle.Limits{MaxBlocks: 16, MaxBlockLen: 4 << 10, MaxPayload: 64 << 10}

const fuzzMaxBundle = 128 << 10

// FuzzReceiveStream feeds arbitrary stream contents through the receiving
// half of the protocol. It must never panic, never allocate much more than
// the limits allow, and accept a stream only if it holds exactly one valid
// bundle, whose payload the sink then got whole.
func FuzzReceiveStream(f *testing.F) {
	b, err := bundle.New(bundle.Params{
		Source:      bundle.MustParseEID("dtn://alice/x"),
		Destination: bundle.MustParseEID("ipn:7.1"),
		Created:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Lifetime:    time.Hour,
		CRCType:     bundle.CRC32C,
		HopLimit:    5,
	})
	if err != nil {
		f.Fatal(err)
	}
	direct, err := bundle.Marshal(b, []byte("a payload of some length"))
	if err != nil {
		f.Fatal(err)
	}
	b16 := b.Clone()
	b16.Primary.CRCType, b16.Payload.CRCType = bundle.CRC16, bundle.CRC16
	crc16, err := bundle.Marshal(b16, bytes.Repeat([]byte{7}, 300))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(direct)
	f.Add(crc16)
	f.Add(append(cborBytesHead(uint64(len(direct))), direct...))
	f.Add(append(append([]byte{}, direct...), direct...))
	f.Add(direct[:len(direct)/2])
	f.Add([]byte{})
	f.Add([]byte{0x06, 0x81})
	f.Add([]byte{0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x9f, 0x9f, 0x9f})

	f.Fuzz(func(t *testing.T, data []byte) {
		sink := &countingSink{}
		rc := receiver{limits: fuzzLimits, maxBundle: fuzzMaxBundle, sink: sink}

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		res := rc.receive(context.Background(), nil, bytes.NewReader(data))
		runtime.ReadMemStats(&after)

		// Decode's limits, a 64 KiB read buffer, the sink's copy of at most
		// 64 KiB of payload, and slack for everything small.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20+4*uint64(len(data)) {
			t.Fatalf("receiving %d bytes allocated %d", len(data), alloc)
		}
		if res.read > uint64(len(data)) {
			t.Fatalf("read %d bytes of %d", res.read, len(data))
		}
		switch res.outcome {
		case accepted:
			if sink.stored != 1 {
				t.Fatal("accepted a stream the sink did not store")
			}
			// The stream must be one bundle, direct or wrapped, and nothing
			// else; and the sink got its payload.
			enc := data
			if data[0] != 0x9f {
				enc = unwrap(t, data)
			}
			_, want, err := bundle.Unmarshal(enc, fuzzLimits)
			if err != nil {
				t.Fatalf("accepted a stream that does not unmarshal: %v", err)
			}
			if !bytes.Equal(want, sink.payload) {
				t.Fatal("the sink's payload differs from the bundle's")
			}
		case refused:
			if sink.stored != 0 {
				t.Fatal("refused a stream the sink stored")
			}
			if res.code == CodeNoError || res.err == nil {
				t.Fatalf("refused with %v, %v", res.code, res.err)
			}
		case violated:
			if res.err == nil {
				t.Fatal("protocol error without an error")
			}
		case interrupted:
			t.Fatalf("a byte slice cannot be interrupted: %v", res.err)
		}
	})
}

// unwrap returns the content of the CBOR byte string data holds.
func unwrap(t *testing.T, data []byte) []byte {
	sr := &streamReader{r: bytes.NewReader(data), limit: fuzzMaxBundle}
	first, err := sr.readHead()
	if err != nil {
		t.Fatal(err)
	}
	n, err := sr.readLength(first)
	if err != nil {
		t.Fatal(err)
	}
	return data[sr.n : sr.n+n]
}

func TestReceiveInterruptedCount(t *testing.T) {
	// A stream that breaks off part way through the payload tells the sink
	// exactly how many payload bytes arrived.
	payload := bytes.Repeat([]byte("0123456789"), 20_000)
	enc, err := bundle.Marshal(newBundle(t, 1, 0), payload)
	if err != nil {
		t.Fatal(err)
	}
	header := len(enc) - len(payload) - 6
	for _, cut := range []int{header, header + 1, header + 65536, header + 100_000, len(enc) - 3} {
		sink := &countingSink{}
		rc := receiver{limits: bundle.Limits{}, maxBundle: 1 << 30, sink: sink}
		src := io.MultiReader(bytes.NewReader(enc[:cut]), errReader{errors.New("connection lost")})
		res := rc.receive(context.Background(), nil, src)
		if res.outcome != interrupted || !res.partial {
			t.Fatalf("cut at %d: outcome %v, partial %v, %v", cut, res.outcome, res.partial, res.err)
		}
		var ie *convergence.InterruptedError
		if !errors.As(res.err, &ie) {
			t.Fatalf("cut at %d: %v is not an InterruptedError", cut, res.err)
		}
		want := uint64(min(cut-header, len(payload)))
		if ie.Received != want || sink.received != want {
			t.Errorf("cut at %d: InterruptedError says %d, sink read %d, want %d", cut, ie.Received, sink.received, want)
		}
	}
}

func TestReceiveLongHeaderRefused(t *testing.T) {
	// A bundle whose blocks before the payload already exceed the size limit
	// is stopped while they are read, before the sink hears of it.
	b := newBundle(t, 1, 0)
	b.Blocks = append(b.Blocks, bundle.Block{Type: 200, Number: 9, CRCType: bundle.CRC32C, Data: make([]byte, 5000)})
	enc, err := bundle.Marshal(b, []byte("tiny"))
	if err != nil {
		t.Fatal(err)
	}
	sink := &countingSink{}
	rc := receiver{maxBundle: 1000, sink: sink}
	res := rc.receive(context.Background(), nil, bytes.NewReader(enc))
	if res.outcome != refused || res.code != CodeBundleTooLarge || sink.calls != 0 {
		t.Fatalf("outcome %v, code %v, %d sink calls: %v", res.outcome, res.code, sink.calls, res.err)
	}
	if res.read > 1001 {
		t.Errorf("read %d bytes of a stream limited to 1000", res.read)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestCodes(t *testing.T) {
	// Every refusal a sink can make reaches the sender as the same class,
	// and the same reason where the code has room for it.
	for r := bundle.StatusReason(0); r <= 16; r++ {
		for _, transient := range []bool{false, true} {
			refusal := &convergence.RejectError{Reason: r, Transient: transient}
			c := refusalCode(refusal)
			rej := rejection(c, errors.New("stopped"))
			if rej.Transient != transient {
				t.Errorf("%v (code %v) came back as transient=%v", refusal, c, rej.Transient)
			}
			if !transient && r < 16 && rej.Reason != r {
				t.Errorf("%v (code %v) came back with reason %v", refusal, c, rej.Reason)
			}
		}
	}
	if c := refusalCode(bundle.ErrTooLarge); c != CodeBundleTooLarge {
		t.Errorf("ErrTooLarge: %v", c)
	}
	if rej := rejection(CodeBundleTooLarge, errors.New("x")); !errors.Is(rej, bundle.ErrTooLarge) || rej.Transient {
		t.Errorf("QBCL_BUNDLE_TOO_LARGE reads as %v", rej)
	}
	if c := refusalCode(context.Canceled); c != CodeTransferCancelled {
		t.Errorf("context.Canceled: %v", c)
	}
	if rej := rejection(0x1234, errors.New("x")); !rej.Transient {
		t.Errorf("an unknown code reads as %v; the draft says treat it as cancelled", rej)
	}
	if s := (CodeRefused + 1).String(); s != "refused(lifetime_expired)" {
		t.Errorf("code 0xF1 prints as %q", s)
	}
}
