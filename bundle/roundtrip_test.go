package bundle

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// randomBundle makes a valid bundle with random fields and blocks.
func randomBundle(r *rand.Rand) (*Bundle, []byte) {
	eids := []EID{
		MustParseEID("dtn://a/"), MustParseEID("dtn://node-b/svc/x"), MustParseEID("ipn:7.3"),
		IPN(r.Uint64(), r.Uint64()), MustParseEID("dtn://~group/chat"),
	}
	pick := func(singleton bool) EID {
		for {
			e := eids[r.IntN(len(eids))]
			if !singleton || e.IsSingleton() {
				return e
			}
		}
	}
	crc := CRCType(r.IntN(3))
	p := Params{
		Source:        pick(true),
		Destination:   pick(false),
		ReportTo:      pick(false),
		Created:       time.UnixMilli(946684800000 + r.Int64N(1<<40)),
		Sequence:      r.Uint64N(1000),
		Lifetime:      time.Duration(r.Int64N(1<<40)) * time.Millisecond,
		CRCType:       crc,
		PayloadLength: 0,
	}
	if p.CRCType == CRCNone {
		p.CRCType = CRC16
	}
	if r.IntN(2) == 0 {
		p.Flags |= FlagReportDelivery | FlagStatusTimeRequested
	}
	if r.IntN(3) == 0 {
		p.HopLimit = 1 + r.Uint64N(255)
	}
	b, err := New(p)
	if err != nil {
		panic(err)
	}
	b.Payload.CRCType = crc
	if r.IntN(2) == 0 {
		b.SetAge(time.Duration(r.Int64N(1<<30)) * time.Millisecond)
	}
	if r.IntN(2) == 0 {
		_ = b.SetPreviousNode(pick(true).NodeID())
	}
	for i := 0; i < r.IntN(3); i++ {
		data := make([]byte, r.IntN(64))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		b.Blocks = append(b.Blocks, Block{Type: BlockType(192 + r.IntN(50)), Number: b.nextBlockNumber(), Flags: BlockFlags(r.IntN(32)), CRCType: CRCType(r.IntN(3)), Data: data})
	}
	payload := make([]byte, r.IntN(4096))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	b.Payload.Length = uint64(len(payload))
	return b, payload
}

func TestRoundTripProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		b, payload := randomBundle(r)
		if err := b.Validate(); err != nil {
			t.Fatalf("case %d: generated an invalid bundle: %v", i, err)
		}
		var buf bytes.Buffer
		n, err := Encode(&buf, b, bytes.NewReader(payload))
		if err != nil {
			t.Fatalf("case %d: encode: %v", i, err)
		}
		if want, _ := b.EncodedLen(); uint64(n) != want || uint64(buf.Len()) != want {
			t.Fatalf("case %d: wrote %d bytes, EncodedLen says %d", i, n, want)
		}
		enc := bytes.Clone(buf.Bytes())
		if m := mustMarshal(t, b.Clone(), payload); !bytes.Equal(m, enc) {
			t.Fatalf("case %d: Marshal and Encode disagree", i)
		}
		got, gotPayload, err := Unmarshal(enc, Limits{})
		if err != nil {
			t.Fatalf("case %d: decode: %v\n%x", i, err, enc)
		}
		if got.Primary.fields() != b.Primary.fields() || !bytes.Equal(gotPayload, payload) || got.Payload != b.Payload || len(got.Blocks) != len(b.Blocks) {
			t.Fatalf("case %d: round trip changed the bundle:\n got %+v\nwant %+v", i, got, b)
		}
		for j := range got.Blocks {
			g, w := got.Blocks[j], b.Blocks[j]
			if g.Type != w.Type || g.Number != w.Number || g.Flags != w.Flags || g.CRCType != w.CRCType || !bytes.Equal(g.Data, w.Data) {
				t.Fatalf("case %d: block %d changed: %+v vs %+v", i, j, g, w)
			}
		}
		if got.ID() != b.ID() {
			t.Fatalf("case %d: ID changed", i)
		}
		// Header round trip, as the store uses it.
		hdr, err := got.MarshalHeader()
		if err != nil {
			t.Fatal(err)
		}
		back, err := UnmarshalHeader(hdr, Limits{})
		if err != nil || back.ID() != b.ID() || back.Payload != b.Payload {
			t.Fatalf("case %d: header round trip: %v", i, err)
		}
	}
}

// TestChangedBlocksAreReencoded checks that a changed extension block gets
// a fresh CRC rather than its stale received bytes, while untouched blocks
// keep theirs.
func TestChangedBlocksAreReencoded(t *testing.T) {
	b := validBundle(t)
	b.Blocks = append(b.Blocks, Block{Type: 99, Number: 9, Flags: BlockReplicate, CRCType: CRC16, Data: []byte{1, 2, 3}})
	data := mustMarshal(t, b, []byte("x"))
	got, payload, err := Unmarshal(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got.SetHopCount(HopCount{Limit: 16, Count: 1})
	got.Block(99).Data[0] = 7 // an in-place change must be noticed too
	again := mustMarshal(t, got, payload)
	back, _, err := Unmarshal(again, Limits{})
	if err != nil {
		t.Fatalf("re-encoded bundle does not decode: %v", err)
	}
	if hc, _, _ := back.HopCount(); hc.Count != 1 {
		t.Errorf("hop count = %+v, want count 1", hc)
	}
	if back.Block(99).Data[0] != 7 {
		t.Errorf("in-place change to an unknown block was lost")
	}
}

func TestStreamingLargePayload(t *testing.T) {
	b := validBundle(t)
	const size = 8<<20 + 123
	b.Payload.Length = size
	src := io.LimitReader(rand.NewChaCha8([32]byte{3, 4}), size)
	h := sha256.New()
	pr, pw := io.Pipe()
	go func() {
		_, err := Encode(pw, b, io.TeeReader(src, h))
		pw.CloseWithError(err)
	}()
	got, payload, err := Decode(pr, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Payload.Length != size || payload.Len() != size {
		t.Fatalf("length %d, want %d", payload.Len(), size)
	}
	h2 := sha256.New()
	if n, err := io.Copy(h2, payload); err != nil || n != size {
		t.Fatalf("copied %d, %v", n, err)
	}
	if !bytes.Equal(h.Sum(nil), h2.Sum(nil)) {
		t.Fatal("payload changed")
	}
	if payload.Remaining() != 0 {
		t.Fatal("remaining not 0")
	}
}

func TestEncodeShortPayload(t *testing.T) {
	b := validBundle(t)
	b.Payload.Length = 10
	_, err := Encode(io.Discard, b, bytes.NewReader([]byte("short")))
	if !errors.Is(err, ErrPayloadLength) {
		t.Fatalf("got %v, want ErrPayloadLength", err)
	}
}

func TestExpiry(t *testing.T) {
	created := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	received := created.Add(10 * time.Minute)
	b := validBundle(t)
	b.Primary.Creation.Time = FromTime(created)
	b.Primary.Lifetime = time.Hour
	if got := b.ExpiresAt(received); !got.Equal(created.Add(time.Hour)) {
		t.Errorf("ExpiresAt = %v, want creation + lifetime", got)
	}
	// With an unknown creation time, the age on arrival counts.
	b.Primary.Creation.Time = 0
	b.SetAge(20 * time.Minute)
	if got := b.ExpiresAt(received); !got.Equal(received.Add(40 * time.Minute)) {
		t.Errorf("ExpiresAt = %v, want received + 40m", got)
	}
	if got := b.CurrentAge(received, received.Add(5*time.Minute)); got != 25*time.Minute {
		t.Errorf("CurrentAge = %v, want 25m", got)
	}
}

func TestProcessUnknownBlocks(t *testing.T) {
	tests := []struct {
		flags      BlockFlags
		wantErr    error
		wantReport bool
		wantKept   bool
	}{
		{0, nil, false, true},
		{BlockRemoveIfUnproc, nil, false, false},
		{BlockReportIfUnproc, nil, true, true},
		{BlockReportIfUnproc | BlockRemoveIfUnproc, nil, true, false},
		{BlockDeleteIfUnproc, ErrUnprocessableBlock, false, true},
		{BlockDeleteIfUnproc | BlockReportIfUnproc, ErrUnprocessableBlock, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.flags.String(), func(t *testing.T) {
			b := validBundle(t)
			b.Blocks = append(b.Blocks, Block{Type: 250, Number: 20, Flags: tt.flags, Data: []byte{0}})
			report, err := b.ProcessUnknownBlocks(nil)
			if !errors.Is(err, tt.wantErr) || report != tt.wantReport {
				t.Fatalf("got report=%v err=%v; want %v %v", report, err, tt.wantReport, tt.wantErr)
			}
			if err == nil && (b.Block(250) != nil) != tt.wantKept {
				t.Fatalf("block kept = %v, want %v", b.Block(250) != nil, tt.wantKept)
			}
			if b.Block(BlockHopCount) == nil {
				t.Fatal("a known block was removed")
			}
		})
	}
}

func TestStatusReportRoundTrip(t *testing.T) {
	b := validBundle(t)
	b.Primary.Flags |= FlagStatusTimeRequested
	b.Payload.Length = 10
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	frag, err := b.Fragment(3, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []*Bundle{b, frag} {
		for _, reason := range []StatusReason{ReasonNoInformation, ReasonLifetimeExpired, ReasonHopLimitExceeded} {
			r := NewStatusReport(subject, reason, at, true, false, reason == ReasonNoInformation, reason != ReasonNoInformation)
			data, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseStatusReport(data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got != r {
				t.Fatalf("round trip: got %+v want %+v", got, r)
			}
			if !got.Received.Asserted || got.Received.Time != FromTime(at) {
				t.Fatalf("received assertion lost its time: %+v", got.Received)
			}
		}
	}
	// Hand-built record: [1, [[[true], [false], [false], [false]], 0, [2, [5, 1]], [0, 7]]]
	hand := parseAnnotatedHex(t, `82 01 84 84 81f5 81f4 81f4 81f4 00 82 02 82 05 01 82 00 07`)
	got, err := ParseStatusReport(hand)
	if err != nil {
		t.Fatal(err)
	}
	want := StatusReport{Received: StatusAssertion{Asserted: true}, Subject: ID{Source: IPN(5, 1), Creation: CreationTimestamp{Sequence: 7}}}
	if got != want {
		t.Fatalf("got %+v want %+v", got, want)
	}
	for _, bad := range []string{"", "80", "820201", "8201 80", "82 01 84 80 00 820100 820000", "82 01 84 84 81f5 81f4 81f4 8101 00 820100 820000"} {
		if _, err := ParseStatusReport(parseAnnotatedHex(t, bad)); !errors.Is(err, ErrBadAdminRecord) {
			t.Errorf("%q: got %v, want ErrBadAdminRecord", bad, err)
		}
	}
}

func TestFragmentAndReassemble(t *testing.T) {
	b := validBundle(t)
	b.Blocks = append(b.Blocks, Block{Type: 77, Number: 10, Flags: 0, CRCType: CRC16, Data: []byte("first only")})
	payload := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	b.Payload.Length = uint64(len(payload))
	for _, size := range []uint64{1, 5, 7, 35, 36, 100} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			pieces, err := b.Split(size)
			if err != nil {
				t.Fatal(err)
			}
			var parts []Part
			for i, p := range pieces {
				// Each fragment must survive the wire.
				wire := mustMarshal(t, p.Bundle, payload[p.Offset:p.Offset+p.Length])
				fb, fp, err := Unmarshal(wire, Limits{})
				if err != nil {
					t.Fatalf("fragment %d: %v", i, err)
				}
				if fb.Primary.IsFragment() != (size < uint64(len(payload))) {
					t.Fatalf("fragment flag = %v", fb.Primary.IsFragment())
				}
				hasFirstOnly := fb.Block(77) != nil
				if hasFirstOnly != (p.Offset == 0) {
					t.Fatalf("fragment at %d: non-replicated block present = %v", p.Offset, hasFirstOnly)
				}
				if fb.Block(BlockHopCount) == nil && p.Offset == 0 {
					t.Fatal("first fragment lost a block")
				}
				parts = append(parts, Part{Bundle: fb, Payload: bytes.NewReader(fp)})
			}
			if len(pieces) == 1 {
				return
			}
			// Reverse order plus a duplicate overlapping piece.
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
			parts = append(parts, parts[len(parts)-1])
			whole, r, err := Reassemble(parts)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(r)
			if !bytes.Equal(got, payload) {
				t.Fatalf("reassembled %q", got)
			}
			if whole.ID() != b.ID() || whole.Block(77) == nil || whole.Primary.IsFragment() {
				t.Fatalf("reassembled metadata wrong: %+v", whole.ID())
			}
			if _, _, err := Unmarshal(mustMarshal(t, whole, got), Limits{}); err != nil {
				t.Fatalf("reassembled bundle invalid: %v", err)
			}
			// A gap is detected.
			if _, _, err := Reassemble(parts[1 : len(parts)-1]); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("gap: got %v", err)
			}
		})
	}
	// Reactive fragmentation: prefix kept, remainder sent later, then
	// fragmenting the remainder again keeps absolute offsets.
	prefix, _ := b.Fragment(0, 10)
	rest, _ := b.Fragment(10, uint64(len(payload))-10)
	restTail, err := rest.Fragment(5, rest.Payload.Length-5)
	if err != nil || restTail.Primary.FragmentOffset != 15 || restTail.Primary.TotalADULength != uint64(len(payload)) {
		t.Fatalf("fragment of fragment: %+v %v", restTail.Primary, err)
	}
	restHead, _ := rest.Fragment(0, 5)
	whole, r, err := Reassemble([]Part{
		{prefix, bytes.NewReader(payload[:10])},
		{restTail, bytes.NewReader(payload[15:])},
		{restHead, bytes.NewReader(payload[10:15])},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); !bytes.Equal(got, payload) || whole.Payload.Length != uint64(len(payload)) {
		t.Fatalf("reassembled %q", got)
	}
	// Must-not-fragment is honoured; mismatched bundles are refused.
	b.Primary.Flags |= FlagMustNotFragment
	if _, err := b.Fragment(0, 3); !errors.Is(err, ErrNotFragmentable) {
		t.Fatalf("got %v, want ErrNotFragmentable", err)
	}
	other := prefix.Clone()
	other.Primary.Creation.Sequence++
	if _, _, err := Reassemble([]Part{{prefix, bytes.NewReader(nil)}, {other, bytes.NewReader(nil)}}); !errors.Is(err, ErrFragmentMismatch) {
		t.Fatalf("got %v, want ErrFragmentMismatch", err)
	}
}
