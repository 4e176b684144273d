package store

import (
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeRecord feeds arbitrary bytes to everything the store parses
// from its index: records, progress records, ID entries and expiry
// entries. None may panic, and whatever decodes must survive a round
// trip.
func FuzzDecodeRecord(f *testing.F) {
	b := mkBundle(f, 1, 100)
	h, _ := b.MarshalHeader()
	for _, r := range []*record{
		{kind: kindBundle, inline: true, received: t0, expires: t0.Add(time.Hour), encodedLen: 150, payloadLen: 100, held: 100, crc: 0xdeadbeef, from: "api", id: b.ID().String(), dst: "dtn://dst/inbox", header: h},
		{kind: kindPartial, received: t0, expires: t0.Add(time.Hour), payloadLen: 1 << 40, held: 12345, from: "peer:dtn://m/", id: "x", dst: "ipn:1.2", header: []byte{0x9f}},
	} {
		f.Add(encodeRecord(r))
	}
	f.Add(encodeProgress(&progressRecord{state: InFlight, attempts: 3, next: t0, updated: t0, lastErr: "timeout"}))
	f.Add(idEntry{kind: kindTomb, seq: 7, exp: t0}.encode())
	f.Add(idEntry{kind: kindBundle, seq: 7}.encode())
	f.Add(append(expiryKey(t0, 9), expiryValue(kindBundle, keyOf("x"))...))
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := decodeRecord(data); err == nil {
			r2, err := decodeRecord(encodeRecord(r))
			if err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if !sameRecord(r, r2) {
				t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
			}
			r.cost()
		}
		if p, err := decodeProgress(data); err == nil {
			p2, err := decodeProgress(encodeProgress(p))
			if err != nil || p2.state != p.state || p2.attempts != p.attempts || p2.lastErr != p.lastErr ||
				!p2.next.Equal(p.next) || !p2.updated.Equal(p.updated) {
				t.Fatalf("progress round trip: %+v → %+v, %v", p, p2, err)
			}
			p.public("d")
		}
		if e, err := decodeIDEntry(data); err == nil {
			e2, err := decodeIDEntry(e.encode())
			if err != nil || e2.kind != e.kind || e2.seq != e.seq || !e2.exp.Equal(e.exp) {
				t.Fatalf("id entry round trip: %+v → %+v, %v", e, e2, err)
			}
		}
		if len(data) >= 16 {
			decodeExpiry(data[:16], data[16:])
		}
		seqFromPrefixKey(data)
		parseFileName(string(data))
	})
}

func sameRecord(a, b *record) bool {
	return a.kind == b.kind && a.inline == b.inline && a.received.Equal(b.received) &&
		a.expires.Equal(b.expires) && a.encodedLen == b.encodedLen && a.payloadLen == b.payloadLen &&
		a.held == b.held && a.crc == b.crc && a.from == b.from && a.id == b.id && a.dst == b.dst &&
		reflect.DeepEqual(a.header, b.header)
}
