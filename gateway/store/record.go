package store

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The index is one bbolt file. Its buckets, and the layout of their keys
// and values (all integers big-endian in keys so that byte order is numeric
// order; seq is the 8-byte arrival sequence number that names a bundle
// inside the store):
//
//	meta      "version" → 1 byte; "seq" → highest sequence number handed out
//	records   seq → record (encodeRecord): a bundle or a partial reception
//	inline    seq → payload bytes of a record stored inline
//	ids       idKey → idEntry: which seq holds the ID, or a tombstone
//	partials  seq → ∅, the set of partial receptions
//	bydst     destination EID \x00 seq → ∅ (complete bundles only)
//	bynode    destination node ID \x00 seq → ∅ (complete bundles only)
//	expiry    expiresAt ms (8 bytes) seq → kind + idKey (bundles, partials, tombstones)
//	progress  destination \x00 seq → progress record
//	progseq   seq destination → ∅, to find a bundle's progress records
//
// idKey is the first 16 bytes of SHA-256 over bundle.ID.String(): fixed
// length whatever the source EID, and 2^-64 odds of any collision among
// 2^32 bundles.
var (
	bktMeta     = []byte("meta")
	bktRecords  = []byte("records")
	bktInline   = []byte("inline")
	bktIDs      = []byte("ids")
	bktPartials = []byte("partials")
	bktByDst    = []byte("bydst")
	bktByNode   = []byte("bynode")
	bktExpiry   = []byte("expiry")
	bktProgress = []byte("progress")
	bktProgSeq  = []byte("progseq")

	allBuckets = [][]byte{bktMeta, bktRecords, bktInline, bktIDs, bktPartials,
		bktByDst, bktByNode, bktExpiry, bktProgress, bktProgSeq}

	metaVersion = []byte("version")
	metaSeq     = []byte("seq")
)

const schemaVersion = 1

// Entry kinds, in ids values and expiry values.
const (
	kindBundle  byte = 1 // a complete bundle
	kindPartial byte = 2 // a partial reception
	kindTomb    byte = 3 // a deleted bundle, remembered until it expires
)

type idKey [16]byte

func keyOf(idString string) idKey {
	sum := sha256.Sum256([]byte(idString))
	var k idKey
	copy(k[:], sum[:16])
	return k
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// sortableMillis maps a time to 8 bytes whose byte order is time order,
// for times far beyond what int64 nanoseconds can hold.
func sortableMillis(t time.Time) uint64 { return uint64(t.UnixMilli()) ^ (1 << 63) }

func fromSortableMillis(v uint64) time.Time { return time.UnixMilli(int64(v ^ (1 << 63))) }

// expiryKey is expiresAt (ms) then seq.
func expiryKey(exp time.Time, seq uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, sortableMillis(exp))
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

func expiryValue(kind byte, k idKey) []byte {
	return append([]byte{kind}, k[:]...)
}

func decodeExpiry(k, v []byte) (exp time.Time, seq uint64, kind byte, key idKey, err error) {
	if len(k) != 16 || len(v) != 17 {
		return exp, 0, 0, key, errors.New("expiry entry has the wrong length")
	}
	exp = fromSortableMillis(binary.BigEndian.Uint64(k))
	seq = binary.BigEndian.Uint64(k[8:])
	kind = v[0]
	copy(key[:], v[1:])
	if kind < kindBundle || kind > kindTomb {
		return exp, 0, 0, key, fmt.Errorf("expiry entry of unknown kind %d", kind)
	}
	return exp, seq, kind, key, nil
}

// prefixKey is s \x00 seq: the key of bydst, bynode and progress.
func prefixKey(s string, seq uint64) []byte {
	k := make([]byte, 0, len(s)+9)
	k = append(k, s...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func prefixOf(s string) []byte { return append([]byte(s), 0) }

// seqFromPrefixKey returns the seq at the end of a prefixKey.
func seqFromPrefixKey(k []byte) (uint64, bool) {
	if len(k) < 9 || k[len(k)-9] != 0 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// idEntry is the value in ids: what the store knows about an ID.
type idEntry struct {
	kind byte
	seq  uint64
	exp  time.Time // tombstones only: until when the ID is remembered
}

func (e idEntry) encode() []byte {
	out := make([]byte, 0, 17)
	out = append(out, e.kind)
	out = binary.BigEndian.AppendUint64(out, e.seq)
	if e.kind == kindTomb {
		out = binary.BigEndian.AppendUint64(out, sortableMillis(e.exp))
	}
	return out
}

func decodeIDEntry(v []byte) (idEntry, error) {
	var e idEntry
	if len(v) < 9 {
		return e, errors.New("id entry too short")
	}
	e.kind = v[0]
	e.seq = binary.BigEndian.Uint64(v[1:9])
	switch e.kind {
	case kindBundle, kindPartial:
		if len(v) != 9 {
			return e, errors.New("id entry has the wrong length")
		}
	case kindTomb:
		if len(v) != 17 {
			return e, errors.New("tombstone has the wrong length")
		}
		e.exp = fromSortableMillis(binary.BigEndian.Uint64(v[9:]))
	default:
		return e, fmt.Errorf("id entry of unknown kind %d", e.kind)
	}
	return e, nil
}

// record is what the index keeps about a bundle or a partial reception.
type record struct {
	kind       byte // kindBundle or kindPartial
	inline     bool // payload in the inline bucket, not in a file
	received   time.Time
	expires    time.Time
	encodedLen uint64 // bundle.Bundle.EncodedLen
	payloadLen uint64 // declared payload length
	held       uint64 // payload bytes held: payloadLen when complete
	crc        uint32 // CRC-32C of the held payload bytes
	from       string // where it came from: "peer:dtn://m/", "api", …
	id         string // bundle.ID.String()
	dst        string // destination EID, text form
	header     []byte // bundle.Bundle.MarshalHeader
}

const (
	recVersion    = 1
	recFlagInline = 1 << 0
	// maxString bounds decoded lengths so a damaged record cannot make
	// the decoder allocate without bound.
	maxString = 1 << 20
)

// cost is what the record counts against the byte quota: its metadata
// plus the payload bytes it holds.
func (r *record) cost() int64 { return int64(len(r.header)) + int64(r.held) }

func encodeRecord(r *record) []byte {
	out := make([]byte, 0, 48+len(r.from)+len(r.id)+len(r.dst)+len(r.header))
	out = append(out, recVersion, r.kind, 0)
	if r.inline {
		out[2] |= recFlagInline
	}
	out = binary.AppendVarint(out, r.received.UnixNano())
	out = binary.AppendVarint(out, r.expires.UnixMilli())
	out = binary.AppendUvarint(out, r.encodedLen)
	out = binary.AppendUvarint(out, r.payloadLen)
	out = binary.AppendUvarint(out, r.held)
	out = binary.BigEndian.AppendUint32(out, r.crc)
	for _, s := range []string{r.from, r.id, r.dst} {
		out = binary.AppendUvarint(out, uint64(len(s)))
		out = append(out, s...)
	}
	return append(out, r.header...)
}

// decodeRecord parses encodeRecord's output. It never panics, whatever v
// holds, and copies what it keeps (v may be bbolt memory).
func decodeRecord(v []byte) (*record, error) {
	d := decoder{b: v}
	ver, kind, flags := d.byte(), d.byte(), d.byte()
	if d.err != nil {
		return nil, errors.New("record too short")
	}
	if ver != recVersion {
		return nil, fmt.Errorf("record version %d", ver)
	}
	if kind != kindBundle && kind != kindPartial {
		return nil, fmt.Errorf("record of unknown kind %d", kind)
	}
	if flags&^recFlagInline != 0 {
		return nil, fmt.Errorf("record has unknown flags %#x", flags)
	}
	r := &record{kind: kind, inline: flags&recFlagInline != 0}
	r.received = time.Unix(0, d.varint())
	r.expires = time.UnixMilli(d.varint())
	r.encodedLen = d.uvarint()
	r.payloadLen = d.uvarint()
	r.held = d.uvarint()
	r.crc = d.uint32()
	r.from = d.string()
	r.id = d.string()
	r.dst = d.string()
	if d.err != nil {
		return nil, d.err
	}
	r.header = append([]byte(nil), d.b...)
	switch {
	case r.held > r.payloadLen:
		return nil, fmt.Errorf("record holds %d of %d payload bytes", r.held, r.payloadLen)
	case kind == kindBundle && r.held != r.payloadLen:
		return nil, fmt.Errorf("complete record holds %d of %d payload bytes", r.held, r.payloadLen)
	case r.payloadLen > math.MaxInt64:
		return nil, fmt.Errorf("payload length %d", r.payloadLen)
	case r.id == "" || len(r.header) == 0:
		return nil, errors.New("record without ID or header")
	}
	return r, nil
}

// progressRecord is the value in progress.
type progressRecord struct {
	state    State
	attempts uint64
	next     time.Time // zero: no time set
	updated  time.Time
	lastErr  string
}

const progVersion = 1

func timeNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func nanosTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func encodeProgress(p *progressRecord) []byte {
	out := make([]byte, 0, 24+len(p.lastErr))
	out = append(out, progVersion, byte(p.state))
	out = binary.AppendUvarint(out, p.attempts)
	out = binary.AppendVarint(out, timeNanos(p.next))
	out = binary.AppendVarint(out, timeNanos(p.updated))
	return append(out, p.lastErr...)
}

func decodeProgress(v []byte) (*progressRecord, error) {
	d := decoder{b: v}
	ver, st := d.byte(), State(d.byte())
	if d.err != nil {
		return nil, errors.New("progress record too short")
	}
	if ver != progVersion {
		return nil, fmt.Errorf("progress record version %d", ver)
	}
	if st < Pending || st > Failed {
		return nil, fmt.Errorf("progress record of unknown state %d", st)
	}
	p := &progressRecord{state: st}
	p.attempts = d.uvarint()
	p.next = nanosTime(d.varint())
	p.updated = nanosTime(d.varint())
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) > maxString {
		return nil, errors.New("progress record error text too long")
	}
	p.lastErr = string(d.b)
	return p, nil
}

// decoder reads the fields of a record; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("record truncated or damaged at its %s", what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("header")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	if len(d.b) < 4 {
		d.fail("checksum")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxString || n > uint64(len(d.b)) {
		d.fail("text")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
