package bundle

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// Golden vectors, built by hand from the CDDL in RFC 9171 Appendix B. The
// CRC values were computed by an independent bit-by-bit implementation of
// CRC-16/X.25 and CRC-32C (not this package's tables). Each vector is
// written one CBOR item per line; spaces and comments are stripped.
var goldenVectors = []struct {
	name string
	hex  string
	// What decoding must produce.
	src, dst, reportTo string
	created            CreationTimestamp
	lifetime           time.Duration
	flags              BundleFlags
	payload            string
	check              func(t *testing.T, b *Bundle)
	// nonShortest marks a vector with CBOR heads longer than they need to
	// be. Only the retained raw bytes can reproduce it; re-encoding from
	// the fields must give different (shortest-form) bytes.
	nonShortest bool
}{
	{
		name: "minimal dtn bundle, CRC-16 on the primary block only",
		hex: `
			9f                     # bundle: indefinite-length array
			  89                   # primary block: array of 9 (8 fields + CRC)
			    07                 # version 7
			    00                 # bundle processing control flags: none
			    01                 # CRC type 1: CRC-16/X.25
			    82 01 66 2f2f622f696e   # destination [1, "//b/in"] = dtn://b/in
			    82 01 64 2f2f612f       # source [1, "//a/"] = dtn://a/
			    82 01 00                # report-to [1, 0] = dtn:none
			    82 19 03e8 00           # creation timestamp [1000, 0]
			    1a 0036ee80             # lifetime 3,600,000 ms = 1 h
			    42 672b                 # CRC-16 over the block with these 2 bytes zeroed
			  85                   # payload block: array of 5 (no CRC)
			    01 01 00 00        # type 1 (payload), block number 1, flags 0, CRC type 0
			    45 68656c6c6f      # data: byte string "hello"
			ff                     # break: end of bundle`,
		src: "dtn://a/", dst: "dtn://b/in", reportTo: "dtn:none",
		created: CreationTimestamp{Time: 1000}, lifetime: time.Hour, payload: "hello",
	},
	{
		name: "ipn endpoints, CRC-32C on every block, unknown creation time with bundle age, hop count",
		hex: `
			9f
			  89                   # primary block
			    07 04 02           # version 7, flags: must not fragment, CRC-32C
			    82 02 82 01 02     # destination [2, [1, 2]] = ipn:1.2
			    82 02 82 05 01     # source ipn:5.1
			    82 02 82 05 00     # report-to ipn:5.0
			    82 00 07           # creation timestamp [0, 7]: time unknown, sequence 7
			    1a 000927c0        # lifetime 600,000 ms
			    44 58f76c81        # CRC-32C
			  86                   # bundle age block: array of 6
			    07 02 00 02        # type 7, block number 2, flags 0, CRC-32C
			    43 1903e8          # data: CBOR uint 1000 (ms)
			    44 ad651f3a        # CRC-32C
			  86                   # hop count block
			    0a 03 01 02        # type 10, block number 3, flags: replicate in every fragment, CRC-32C
			    43 821402          # data: [limit 20, count 2]
			    44 ff4644c3      # CRC-32C
			  86                   # payload block
			    01 01 00 02        # type 1, number 1, flags 0, CRC-32C
			    43 010203          # data: 3 bytes
			    44 3117fae7        # CRC-32C over the whole payload block
			ff`,
		src: "ipn:5.1", dst: "ipn:1.2", reportTo: "ipn:5.0",
		created: CreationTimestamp{Time: 0, Sequence: 7}, lifetime: 10 * time.Minute,
		flags: FlagMustNotFragment, payload: "\x01\x02\x03",
		check: func(t *testing.T, b *Bundle) {
			age, ok, err := b.Age()
			if err != nil || !ok || age != time.Second {
				t.Errorf("age = %v, %v, %v; want 1s", age, ok, err)
			}
			hc, ok, err := b.HopCount()
			if err != nil || !ok || hc != (HopCount{Limit: 20, Count: 2}) {
				t.Errorf("hop count = %+v, %v, %v; want {20 2}", hc, ok, err)
			}
			if got := b.Blocks[1].Flags; got != BlockReplicate {
				t.Errorf("hop count block flags = %v, want replicate", got)
			}
		},
	},
	{
		name: "fragment: offset 10 of a 20-byte ADU, CRC-16 on both blocks",
		hex: `
			9f
			  8b                   # primary block: array of 11 (8 + offset + total + CRC)
			    07 01 01           # version 7, flags: is a fragment, CRC-16
			    82 01 66 2f2f622f696e   # destination dtn://b/in
			    82 01 64 2f2f612f       # source dtn://a/
			    82 01 64 2f2f612f       # report-to dtn://a/
			    82 19 03e8 01           # creation timestamp [1000, 1]
			    1a 0036ee80             # lifetime 1 h
			    0a                      # fragment offset 10
			    14                      # total application data unit length 20
			    42 8bec                 # CRC-16
			  86
			    01 01 00 01        # payload block, CRC-16
			    44 61626364        # data "abcd"
			    42 aabf            # CRC-16
			ff`,
		src: "dtn://a/", dst: "dtn://b/in", reportTo: "dtn://a/",
		created: CreationTimestamp{Time: 1000, Sequence: 1}, lifetime: time.Hour,
		flags: FlagIsFragment, payload: "abcd",
		check: func(t *testing.T, b *Bundle) {
			id := b.ID()
			if !id.Fragment || id.Offset != 10 || id.Length != 4 || b.Primary.TotalADULength != 20 {
				t.Errorf("fragment ID = %+v, total %d; want offset 10, length 4, total 20", id, b.Primary.TotalADULength)
			}
			if got, want := id.String(), "dtn://a/|1000.1|10+4"; got != want {
				t.Errorf("ID string = %q, want %q", got, want)
			}
		},
	},
	{
		// RFC 8949 allows an argument in a longer head than it needs, and
		// RFC 9171 does not require the shortest form, so such a block is
		// valid and must be forwarded exactly as it came: its CRC covers
		// these very bytes, and a re-encoder would produce other bytes
		// (and would have to recompute a CRC it must not touch).
		name: "unknown block type 200 in non-shortest CBOR heads, CRC-16, then a hop count block",
		hex: `
			9f
			  89                   # primary block, as in the first vector
			    07 00 01
			    82 01 66 2f2f622f696e   # destination dtn://b/in
			    82 01 64 2f2f612f       # source dtn://a/
			    82 01 00                # report-to dtn:none
			    82 19 03e8 00           # creation timestamp [1000, 0]
			    1a 0036ee80             # lifetime 1 h
			    42 672b                 # CRC-16
			  86                   # unknown block: array of 6
			    19 00c8            # type 200 in a 3-byte head (shortest: 18 c8)
			    18 02              # block number 2 in a 2-byte head (shortest: 02)
			    18 02              # flags 0x02, report if unprocessable, in a 2-byte head (shortest: 02)
			    01                 # CRC type 1: CRC-16/X.25
			    58 02 aabb         # data: 2 bytes with a 2-byte length head (shortest: 42 aabb)
			    42 81be            # CRC-16 over these bytes as they are, CRC zeroed
			  85                   # hop count block, no CRC, shortest form
			    0a 03 00 00        # type 10, block number 3, flags 0, CRC type 0
			    43 821402          # data: [limit 20, count 2]
			  85                   # payload block
			    01 01 00 00        # type 1, number 1, flags 0, no CRC
			    45 68656c6c6f      # data "hello"
			ff`,
		src: "dtn://a/", dst: "dtn://b/in", reportTo: "dtn:none",
		created: CreationTimestamp{Time: 1000}, lifetime: time.Hour, payload: "hello",
		nonShortest: true,
		check: func(t *testing.T, b *Bundle) {
			if len(b.Blocks) != 2 {
				t.Fatalf("%d extension blocks, want 2", len(b.Blocks))
			}
			u := b.Blocks[0]
			if u.Type != 200 || u.Number != 2 || u.Flags != BlockReportIfUnproc || u.CRCType != CRC16 || !bytes.Equal(u.Data, []byte{0xaa, 0xbb}) {
				t.Errorf("unknown block = %+v; want type 200, number 2, report flag, CRC-16, data aabb", u)
			}
		},
	},
}

// parseAnnotatedHex strips comments and whitespace from a golden vector.
func parseAnnotatedHex(t testing.TB, s string) []byte {
	t.Helper()
	var clean strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		clean.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(clean.String())
	if err != nil {
		t.Fatalf("bad golden hex: %v", err)
	}
	return b
}

func TestGoldenVectors(t *testing.T) {
	for _, v := range goldenVectors {
		t.Run(v.name, func(t *testing.T) {
			data := parseAnnotatedHex(t, v.hex)
			b, payload, err := Unmarshal(data, Limits{})
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			p := b.Primary
			if p.Source.String() != v.src || p.Destination.String() != v.dst || p.ReportTo.String() != v.reportTo {
				t.Errorf("EIDs = %v %v %v; want %s %s %s", p.Source, p.Destination, p.ReportTo, v.src, v.dst, v.reportTo)
			}
			if p.Creation != v.created || p.Lifetime != v.lifetime || p.Flags != v.flags {
				t.Errorf("primary = %+v %v %v; want %+v %v %v", p.Creation, p.Lifetime, p.Flags, v.created, v.lifetime, v.flags)
			}
			if string(payload) != v.payload {
				t.Errorf("payload = %q, want %q", payload, v.payload)
			}
			if v.check != nil {
				v.check(t, b)
			}
			// Re-encoding the decoded bundle reproduces the vector byte for
			// byte, both through the retained raw blocks and from scratch.
			again, err := Marshal(b, payload)
			if err != nil || !bytes.Equal(again, data) {
				t.Errorf("re-encode (raw kept) = %x, %v\nwant %x", again, err, data)
			}
			fresh := b.Clone()
			fresh.Primary.raw = nil
			for i := range fresh.Blocks {
				fresh.Blocks[i].raw, fresh.Blocks[i].rawOf = nil, nil
			}
			again, err = Marshal(fresh, payload)
			switch {
			case err != nil:
				t.Errorf("re-encode (from fields): %v", err)
			case v.nonShortest && bytes.Equal(again, data):
				// Otherwise the vector would not tell raw retention from
				// a plain re-encoder.
				t.Errorf("re-encode (from fields) reproduced a vector meant to be non-shortest")
			case !v.nonShortest && !bytes.Equal(again, data):
				t.Errorf("re-encode (from fields) = %x\nwant %x", again, data)
			}
		})
	}
}

// TestGoldenEncoding builds the first vector from Params and checks that
// the encoder produces exactly the hand-built bytes.
func TestGoldenEncoding(t *testing.T) {
	b, err := New(Params{
		Source:      MustParseEID("dtn://a/"),
		Destination: MustParseEID("dtn://b/in"),
		ReportTo:    None,
		Created:     DTNTime(1000).Time(),
		Lifetime:    time.Hour,
		CRCType:     CRC16,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Payload.CRCType = CRCNone
	got, err := Marshal(b, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if want := parseAnnotatedHex(t, goldenVectors[0].hex); !bytes.Equal(got, want) {
		t.Fatalf("encoded\n%x\nwant\n%x", got, want)
	}
}

// TestUnknownBlockKeptByteForByte checks that a block mulegate does not
// understand travels exactly as it arrived, in non-shortest CBOR heads,
// through everything a forwarding node does to a bundle. A codec that
// re-encoded blocks from their fields would pass a test with canonical
// input, so the input here is not canonical.
func TestUnknownBlockKeptByteForByte(t *testing.T) {
	var vec []byte
	for _, v := range goldenVectors {
		if v.nonShortest {
			vec = parseAnnotatedHex(t, v.hex)
		}
	}
	if vec == nil {
		t.Fatal("no non-shortest golden vector")
	}
	// The unknown block as it travels, and the hop count block's data
	// before and after one more hop.
	unknown := parseAnnotatedHex(t, `86 1900c8 1802 1802 01 5802aabb 4281be`)
	hop2, hop3 := parseAnnotatedHex(t, `43 821402`), parseAnnotatedHex(t, `43 821403`)
	if bytes.Count(vec, unknown) != 1 || bytes.Count(vec, hop2) != 1 {
		t.Fatal("the vector does not contain the unknown block and hop count once each")
	}
	oneMoreHop := bytes.Replace(vec, hop2, hop3, 1)

	decode := func(t *testing.T) (*Bundle, []byte) {
		t.Helper()
		b, payload, err := Unmarshal(vec, Limits{})
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		return b, payload
	}
	tests := []struct {
		name string
		// do returns the bundle to encode, after doing to it what a node
		// does.
		do   func(t *testing.T, b *Bundle) *Bundle
		want []byte
	}{
		{"decode then encode", func(t *testing.T, b *Bundle) *Bundle { return b }, vec},
		{"after Clone", func(t *testing.T, b *Bundle) *Bundle { return b.Clone() }, vec},
		{"after ProcessUnknownBlocks keeps it", func(t *testing.T, b *Bundle) *Bundle {
			report, err := b.ProcessUnknownBlocks(nil)
			if err != nil || !report {
				t.Fatalf("ProcessUnknownBlocks = %v, %v; want a report request and no error", report, err)
			}
			if b.Block(200) == nil {
				t.Fatal("ProcessUnknownBlocks dropped a block not flagged for removal")
			}
			return b
		}, vec},
		{"after the hop count changed", func(t *testing.T, b *Bundle) *Bundle {
			b.SetHopCount(HopCount{Limit: 20, Count: 3})
			return b
		}, oneMoreHop},
		{"after Clone, ProcessUnknownBlocks and a hop", func(t *testing.T, b *Bundle) *Bundle {
			c := b.Clone()
			if _, err := c.ProcessUnknownBlocks(nil); err != nil {
				t.Fatal(err)
			}
			c.SetHopCount(HopCount{Limit: 20, Count: 3})
			// The original must not have been changed through the clone.
			if got, err := Marshal(b, []byte("hello")); err != nil || !bytes.Equal(got, vec) {
				t.Errorf("original after changing its clone = %x, %v\nwant %x", got, err, vec)
			}
			return c
		}, oneMoreHop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, payload := decode(t)
			b = tt.do(t, b)
			got, err := Marshal(b, payload)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var streamed bytes.Buffer
			if _, err := Encode(&streamed, b, bytes.NewReader(payload)); err != nil {
				t.Fatalf("Encode: %v", err)
			}
			for _, enc := range []struct {
				how string
				out []byte
			}{{"Marshal", got}, {"Encode", streamed.Bytes()}} {
				if !bytes.Equal(enc.out, tt.want) {
					t.Errorf("%s = %x\nwant %x", enc.how, enc.out, tt.want)
				}
				if bytes.Count(enc.out, unknown) != 1 {
					t.Errorf("%s output does not carry the unknown block's bytes exactly once", enc.how)
				}
			}
			// What we send must decode at the next node, CRCs included.
			if _, _, err := Unmarshal(got, Limits{}); err != nil {
				t.Errorf("the encoded bundle does not decode: %v", err)
			}
		})
	}
}
