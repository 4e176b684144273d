package bundle

import (
	"bytes"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the streaming decoder. It must never
// panic, and small limits keep every allocation bounded whatever lengths
// the input declares. Whatever decodes must re-encode to a bundle that
// decodes to the same ID.
func FuzzDecode(f *testing.F) {
	for _, v := range goldenVectors {
		f.Add(parseAnnotatedHex(f, v.hex))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 8; i++ {
		b, p := randomBundle(r)
		data, err := Marshal(b, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	lim := Limits{MaxBlocks: 16, MaxBlockLen: 4096, MaxPayload: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Decoding may allocate in proportion to the bytes that arrived
		// (records grow as they are read, and the payload is collected
		// here), plus a fixed amount for buffers, but never in proportion
		// to a declared length: the fixed part is well below MaxPayload,
		// so a payload buffer sized from its header would be caught.
		// ReadMemStats costs microseconds, little beside a fuzz run.
		bound := 256<<10 + 32*uint64(len(data))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b, pr, err := Decode(bytes.NewReader(data), lim)
		var payload []byte
		var readErr error
		if err == nil {
			payload, readErr = io.ReadAll(pr)
		}
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > bound {
			t.Fatalf("decoding %d bytes allocated %d bytes; the bound is %d", len(data), n, bound)
		}
		if err != nil {
			if ReasonOf(err) == ReasonNoInformation && !isPlainIOError(err) {
				t.Fatalf("rejection without a reason: %v", err)
			}
			return
		}
		if readErr != nil {
			return
		}
		again, err := Marshal(b, payload)
		if err != nil {
			t.Fatalf("decoded bundle does not re-encode: %v", err)
		}
		b2, p2, err := Unmarshal(again, lim)
		if err != nil {
			t.Fatalf("re-encoded bundle does not decode: %v", err)
		}
		if b2.ID() != b.ID() || !bytes.Equal(p2, payload) {
			t.Fatalf("re-encoding changed the bundle")
		}
	})
}

func isPlainIOError(err error) bool {
	return err == io.ErrUnexpectedEOF || err == io.EOF
}

func FuzzParseEID(f *testing.F) {
	for _, s := range []string{"dtn:none", "dtn://a/b", "ipn:1.2", "dtn://~g/x", "ipn:01.1", "dtn://a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEID(s)
		if err != nil {
			return
		}
		back, err := ParseEID(e.String())
		if err != nil || back != e {
			t.Fatalf("%q -> %q -> %v, %v", s, e, back, err)
		}
		enc, err := e.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		var fromCBOR EID
		if err := fromCBOR.UnmarshalCBOR(enc); err != nil || fromCBOR != e {
			t.Fatalf("CBOR round trip of %q: %v, %v", e, fromCBOR, err)
		}
	})
}

func FuzzParseID(f *testing.F) {
	f.Add("dtn://a/x|1000.2")
	f.Add("ipn:1.2|0.0|5+6")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		back, err := ParseID(id.String())
		if err != nil || back != id {
			t.Fatalf("%q -> %q -> %+v, %v", s, id, back, err)
		}
	})
}

func FuzzParseStatusReport(f *testing.F) {
	b, _ := New(Params{Source: MustParseEID("dtn://a/"), Destination: MustParseEID("dtn://b/"), Lifetime: 1, CRCType: CRC16})
	r, _ := NewStatusReport(b, ReasonHopLimitExceeded, b.Primary.Creation.Time.Time(), true, true, false, true).Marshal()
	f.Add(r)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := ParseStatusReport(data)
		if err != nil {
			return
		}
		enc, err := rep.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseStatusReport(enc)
		if err != nil || back != rep {
			t.Fatalf("round trip: %+v vs %+v (%v)", back, rep, err)
		}
	})
}
