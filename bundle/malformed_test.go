package bundle

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"testing"
	"time"
)

// validBundle returns fresh metadata for a small valid bundle with CRC-32C
// everywhere, an age block and a hop count block.
func validBundle(t testing.TB) *Bundle {
	t.Helper()
	b, err := New(Params{
		Source:      MustParseEID("dtn://src/app"),
		Destination: MustParseEID("dtn://dst/app"),
		Created:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Sequence:    42,
		Lifetime:    time.Hour,
		CRCType:     CRC32C,
		HopLimit:    16,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.SetAge(time.Second)
	return b
}

func mustMarshal(t testing.TB, b *Bundle, payload []byte) []byte {
	t.Helper()
	data, err := Marshal(b, payload)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// decodeAll decodes data and drains the payload, returning the first error.
func decodeAll(data []byte, lim Limits) error {
	_, pr, err := Decode(bytes.NewReader(data), lim)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, pr)
	return err
}

func TestMalformed(t *testing.T) {
	payload := []byte("payload bytes")
	good := func(t *testing.T) []byte { return mustMarshal(t, validBundle(t), payload) }
	withBundle := func(mut func(b *Bundle)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			b := validBundle(t)
			mut(b)
			return mustMarshal(t, b, payload)
		}
	}
	primaryLen := func(t *testing.T) int {
		p, err := validBundle(t).Primary.marshal()
		if err != nil {
			t.Fatal(err)
		}
		return len(p)
	}
	tests := []struct {
		name  string
		input func(t *testing.T) []byte
		lim   Limits
		want  error
	}{
		{"empty input", func(*testing.T) []byte { return nil }, Limits{}, ErrMalformed},
		{"definite-length outer array", func(t *testing.T) []byte { d := good(t); d[0] = 0x84; return d }, Limits{}, ErrNotBundle},
		{"version 6", func(t *testing.T) []byte { d := good(t); d[2] = 0x06; return d }, Limits{}, ErrUnsupportedVersion},
		{"primary CRC wrong", func(t *testing.T) []byte { d := good(t); d[primaryLen(t)] ^= 0xff; return d }, Limits{}, ErrCRCMismatch},
		{"primary field corrupted under its CRC", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte("//dst/app"))
			d[i+2] = 'x'
			return d
		}, Limits{}, ErrCRCMismatch},
		{"extension block CRC wrong", func(t *testing.T) []byte {
			d := good(t)
			blk, _ := validBundle(t).Blocks[0].marshal()
			d[1+primaryLen(t)+len(blk)-1] ^= 1
			return d
		}, Limits{}, ErrCRCMismatch},
		{"payload CRC wrong", func(t *testing.T) []byte { d := good(t); d[len(d)-2] ^= 1; return d }, Limits{}, ErrCRCMismatch},
		{"payload byte flipped", func(t *testing.T) []byte {
			d := good(t)
			d[bytes.Index(d, payload)] ^= 1
			return d
		}, Limits{}, ErrCRCMismatch},
		{"duplicate block number", withBundle(func(b *Bundle) { b.Blocks[1].Number = b.Blocks[0].Number }), Limits{}, ErrDuplicateBlockNumber},
		{"extension block numbered 1", withBundle(func(b *Bundle) { b.Blocks[0].Number = 1 }), Limits{}, ErrBadBlockNumber},
		{"two hop count blocks", withBundle(func(b *Bundle) {
			b.Blocks = append(b.Blocks, Block{Type: BlockHopCount, Number: 9, CRCType: CRC32C, Data: b.Blocks[0].Data})
		}), Limits{}, ErrDuplicateBlock},
		{"hop count data not [limit, count]", withBundle(func(b *Bundle) { b.Block(BlockHopCount).Data = []byte{0x81, 0x01} }), Limits{}, ErrBadBlockData},
		{"bundle age data not a number", withBundle(func(b *Bundle) { b.Block(BlockBundleAge).Data = []byte{0x61, 0x41} }), Limits{}, ErrBadBlockData},
		{"creation time 0 without age block", withBundle(func(b *Bundle) {
			b.Primary.Creation.Time = 0
			b.RemoveBlock(b.Block(BlockBundleAge).Number)
		}), Limits{}, ErrMissingAge},
		{"CRC type 3", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte{0x86, 0x0a, 0x02, 0x00, 0x02}) // the hop count block
			d[i+4] = 0x03
			return d
		}, Limits{}, ErrCRCType},
		{"primary without CRC or BIB", withBundle(func(b *Bundle) { b.Primary.CRCType = CRCNone }), Limits{}, ErrPrimaryCRCMissing},
		{"group source", withBundle(func(b *Bundle) { b.Primary.Source = MustParseEID("dtn://~grp/x") }), Limits{}, ErrBadSource},
		{"anonymous source asking for reports", withBundle(func(b *Bundle) {
			b.Primary.Source = None
			b.Primary.Flags = FlagMustNotFragment | FlagReportDelivery
		}), Limits{}, ErrBadFlags},
		{"admin record asking for reports", withBundle(func(b *Bundle) { b.Primary.Flags = FlagAdminRecord | FlagReportReception }), Limits{}, ErrBadFlags},
		{"fragment beyond its total length", withBundle(func(b *Bundle) {
			b.Primary.Flags |= FlagIsFragment
			b.Primary.FragmentOffset, b.Primary.TotalADULength = 10, 12
		}), Limits{}, ErrFragmentFields},
		{"payload block numbered 2", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte{0x86, 0x01, 0x01, 0x00, 0x02, 0x4d})
			d[i+2] = 0x02
			return d
		}, Limits{}, ErrBadBlockNumber},
		{"no payload block", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte{0x86, 0x01, 0x01, 0x00, 0x02, 0x4d})
			return append(d[:i:i], 0xff)
		}, Limits{}, ErrNoPayload},
		{"block after the payload", func(t *testing.T) []byte {
			d := good(t)
			blk, _ := validBundle(t).Blocks[0].marshal()
			return append(append(d[:len(d)-1:len(d)-1], blk...), 0xff)
		}, Limits{}, ErrPayloadNotLast},
		{"payload over the limit", good, Limits{MaxPayload: 4}, ErrTooLarge},
		{"too many blocks", good, Limits{MaxBlocks: 2}, ErrTooManyBlocks},
		{"extension block over the limit", withBundle(func(b *Bundle) {
			b.Blocks = append(b.Blocks, Block{Type: 200, Number: 7, Data: make([]byte, 2000)})
		}), Limits{MaxBlockLen: 1000}, ErrTooLarge},
		{"block declares 2^60 bytes", func(t *testing.T) []byte {
			d := good(t)
			n := 1 + primaryLen(t)
			// An unknown block whose byte string claims 2^60 bytes.
			huge := []byte{0x85, 0x18, 0xc8, 0x07, 0x00, 0x00, 0x5b, 0x10, 0, 0, 0, 0, 0, 0, 0}
			return append(append(d[:n:n], huge...), d[n:]...)
		}, Limits{}, ErrTooLarge},
		{"payload declares 2^60 bytes", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte{0x86, 0x01, 0x01, 0x00, 0x02, 0x4d})
			return append(d[:i+5:i+5], 0x5b, 0x10, 0, 0, 0, 0, 0, 0, 0, 'x')
		}, Limits{}, ErrMalformed},
		{"indefinite-length payload string", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte{0x86, 0x01, 0x01, 0x00, 0x02, 0x4d})
			d[i+5] = 0x5f
			return d
		}, Limits{}, ErrMalformed},
		{"truncated in the payload", func(t *testing.T) []byte { d := good(t); return d[:len(d)-10] }, Limits{}, ErrMalformed},
		{"truncated in the primary block", func(t *testing.T) []byte { return good(t)[:10] }, Limits{}, ErrMalformed},
		{"primary block with 7 fields", func(t *testing.T) []byte { d := good(t); d[1] = 0x87; return d }, Limits{}, ErrMalformed},
		{"reserved CBOR additional information", func(t *testing.T) []byte { d := good(t); d[1] = 0x9c; return d }, Limits{}, ErrMalformed},
		{"destination without node-name slash", func(t *testing.T) []byte {
			b := validBundle(t)
			b.Primary.raw = nil
			d := mustMarshal(t, b, payload)
			i := bytes.Index(d, []byte("//dst/app"))
			// Rewrite the text "//dst/app" as "//dstxapp" and fix the CRC
			// so that only the EID rule is broken.
			d[i+5] = 'x'
			prim := d[1 : 1+primaryLen(t)]
			copy(prim[len(prim)-4:], crcOver(CRC32C, prim))
			return d
		}, Limits{}, ErrBadEID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeAll(tt.input(t), tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("trailing data", func(t *testing.T) {
		if _, _, err := Unmarshal(append(good(t), 0x00), Limits{}); !errors.Is(err, ErrTrailingData) {
			t.Fatalf("got %v, want ErrTrailingData", err)
		}
	})
}

func TestReasonOf(t *testing.T) {
	tests := []struct {
		err  error
		want StatusReason
	}{
		{wrap(ErrCRCMismatch, "x"), ReasonBlockUnintelligible},
		{ErrTooLarge, ReasonDepletedStorage},
		{wrap(ErrUnprocessableBlock, "x"), ReasonBlockUnsupported},
		{io.EOF, ReasonNoInformation},
	}
	for _, tt := range tests {
		if got := ReasonOf(tt.err); got != tt.want {
			t.Errorf("ReasonOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// allocatedBy is how many heap bytes f allocates. The least of a few runs
// is taken, so that a stray allocation elsewhere in the process (the test
// runner's) does not count against f.
func allocatedBy(f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// TestHugeDeclaredLengthsAllocateLittle checks what the 2^60 cases above
// cannot: that rejecting them costs little memory. A declared length must
// never be trusted for an allocation, neither under the default limits nor
// when the limits are so large that they stop nothing, in which case only
// the bytes that actually arrive may be held.
func TestHugeDeclaredLengthsAllocateLittle(t *testing.T) {
	// Half the default block limit: a decoder that allocated up to the
	// limit, instead of up to what arrived, fails this.
	const maxAlloc = 512 << 10
	payload := []byte("payload bytes")
	good := func(t *testing.T) []byte { return mustMarshal(t, validBundle(t), payload) }
	primaryLen := func(t *testing.T) int {
		p, err := validBundle(t).Primary.marshal()
		if err != nil {
			t.Fatal(err)
		}
		return len(p)
	}
	twoTo60 := []byte{0x10, 0, 0, 0, 0, 0, 0, 0}
	huge := Limits{MaxBlocks: 1 << 62, MaxBlockLen: 1 << 62, MaxPayload: 1 << 62}
	inputs := []struct {
		name  string
		input func(t *testing.T) []byte
		// What each limit gives: the defaults refuse a declared length
		// from its head where they can; huge limits let decoding run
		// until the input ends.
		wantDefault, wantHuge error
	}{
		{"extension block data declares 2^60 bytes", func(t *testing.T) []byte {
			d := good(t)
			n := 1 + primaryLen(t)
			blk := append([]byte{0x85, 0x18, 0xc8, 0x07, 0x00, 0x00, 0x5b}, twoTo60...)
			return append(append(d[:n:n], blk...), d[n:]...)
		}, ErrTooLarge, ErrMalformed},
		{"payload declares 2^60 bytes", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte{0x86, 0x01, 0x01, 0x00, 0x02, 0x4d})
			return append(append(d[:i+5:i+5], 0x5b), append(twoTo60, 'x')...)
		}, ErrMalformed, ErrMalformed},
		{"destination EID text declares 2^60 bytes", func(t *testing.T) []byte {
			d := good(t)
			i := bytes.Index(d, []byte("//dst/app")) - 1 // the text string's head
			return append(append(d[:i:i], 0x7b), append(twoTo60, d[i+1:]...)...)
		}, ErrTooLarge, ErrMalformed},
		{"primary block declares 2^60 fields", func(t *testing.T) []byte {
			d := good(t)
			return append(append([]byte{d[0], 0x9b}, twoTo60...), d[2:]...)
		}, ErrMalformed, ErrMalformed},
	}
	for _, in := range inputs {
		for _, lim := range []struct {
			name string
			lim  Limits
			want error
		}{{"default limits", Limits{}, in.wantDefault}, {"limits near 2^62", huge, in.wantHuge}} {
			t.Run(in.name+"/"+lim.name, func(t *testing.T) {
				data := in.input(t)
				for _, dec := range []struct {
					how string
					run func() error
				}{
					{"Decode", func() error { return decodeAll(data, lim.lim) }},
					{"Unmarshal", func() error { _, _, err := Unmarshal(data, lim.lim); return err }},
				} {
					var err error
					n := allocatedBy(func() { err = dec.run() })
					if !errors.Is(err, lim.want) {
						t.Errorf("%s: got %v, want %v", dec.how, err, lim.want)
					}
					if n >= maxAlloc {
						t.Errorf("%s of a %d-byte input allocated %d bytes; want under %d", dec.how, len(data), n, maxAlloc)
					}
					t.Logf("%s: %d bytes allocated, %v", dec.how, n, err)
				}
			})
		}
	}
}
