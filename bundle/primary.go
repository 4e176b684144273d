package bundle

import (
	"fmt"
	"strings"
	"time"
)

// DTNTime is a time in milliseconds since the DTN epoch,
// 2000-01-01T00:00:00Z (RFC 9171 §4.2.6). Zero means "unknown": the node
// that created the bundle had no accurate clock.
type DTNTime uint64

// dtnEpoch is the DTN epoch as a Unix time.
var dtnEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// FromTime converts a wall-clock time to DTN time. Times before the epoch
// map to 1 ms, because 0 would mean "unknown".
func FromTime(t time.Time) DTNTime {
	ms := t.Sub(dtnEpoch).Milliseconds()
	if ms < 1 {
		return 1
	}
	return DTNTime(ms)
}

// Time converts DTN time to wall-clock time. Zero converts to the zero
// time.Time.
func (t DTNTime) Time() time.Time {
	if t == 0 {
		return time.Time{}
	}
	return dtnEpoch.Add(time.Duration(t) * time.Millisecond)
}

func (t DTNTime) String() string {
	if t == 0 {
		return "unknown"
	}
	return t.Time().UTC().Format(time.RFC3339Nano)
}

// CreationTimestamp is a bundle's creation time and sequence number. With
// the source EID, it identifies the bundle.
type CreationTimestamp struct {
	Time     DTNTime
	Sequence uint64
}

// BundleFlags are the bundle processing control flags (RFC 9171 §4.2.3).
type BundleFlags uint64

const (
	FlagIsFragment          BundleFlags = 0x000001
	FlagAdminRecord         BundleFlags = 0x000002
	FlagMustNotFragment     BundleFlags = 0x000004
	FlagAppAckRequested     BundleFlags = 0x000020
	FlagStatusTimeRequested BundleFlags = 0x000040
	FlagReportReception     BundleFlags = 0x004000
	FlagReportForwarding    BundleFlags = 0x010000
	FlagReportDelivery      BundleFlags = 0x020000
	FlagReportDeletion      BundleFlags = 0x040000
	flagReportMask                      = FlagReportReception | FlagReportForwarding | FlagReportDelivery | FlagReportDeletion
	knownBundleFlags                    = FlagIsFragment | FlagAdminRecord | FlagMustNotFragment | FlagAppAckRequested | FlagStatusTimeRequested | flagReportMask
)

var bundleFlagNames = []struct {
	f    BundleFlags
	name string
}{
	{FlagIsFragment, "is_fragment"},
	{FlagAdminRecord, "admin_record"},
	{FlagMustNotFragment, "must_not_fragment"},
	{FlagAppAckRequested, "app_ack_requested"},
	{FlagStatusTimeRequested, "status_time_requested"},
	{FlagReportReception, "report_reception"},
	{FlagReportForwarding, "report_forwarding"},
	{FlagReportDelivery, "report_delivery"},
	{FlagReportDeletion, "report_deletion"},
}

// Has reports whether every flag in f2 is set.
func (f BundleFlags) Has(f2 BundleFlags) bool { return f&f2 == f2 }

// Names lists the set flags by name, unknown ones as hex.
func (f BundleFlags) Names() []string {
	var out []string
	for _, n := range bundleFlagNames {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	if rest := f &^ knownBundleFlags; rest != 0 {
		out = append(out, fmt.Sprintf("%#x", uint64(rest)))
	}
	return out
}

func (f BundleFlags) String() string {
	if f == 0 {
		return "none"
	}
	return strings.Join(f.Names(), "|")
}

// ReportsRequested reports whether any status report is requested.
func (f BundleFlags) ReportsRequested() bool { return f&flagReportMask != 0 }

// PrimaryBlock is the bundle's first block (RFC 9171 §4.3.1). Its fields do
// not change in transit, except when a bundle is fragmented.
type PrimaryBlock struct {
	Flags       BundleFlags
	CRCType     CRCType
	Destination EID
	Source      EID
	ReportTo    EID
	Creation    CreationTimestamp
	// Lifetime is how long after its creation the bundle is useful. It is
	// carried in milliseconds.
	Lifetime time.Duration
	// FragmentOffset and TotalADULength are meaningful only when Flags has
	// FlagIsFragment.
	FragmentOffset uint64
	TotalADULength uint64

	// raw is the block as received, and rawOf the decoded fields it
	// produced: while the fields still equal rawOf, Encode writes raw, byte
	// for byte.
	raw   []byte
	rawOf primaryFields
}

// primaryFields is the comparable part of PrimaryBlock.
type primaryFields struct {
	Flags          BundleFlags
	CRCType        CRCType
	Destination    EID
	Source         EID
	ReportTo       EID
	Creation       CreationTimestamp
	Lifetime       time.Duration
	FragmentOffset uint64
	TotalADULength uint64
}

func (p *PrimaryBlock) fields() primaryFields {
	return primaryFields{p.Flags, p.CRCType, p.Destination, p.Source, p.ReportTo, p.Creation, p.Lifetime, p.FragmentOffset, p.TotalADULength}
}

// IsFragment reports whether the bundle is a fragment.
func (p *PrimaryBlock) IsFragment() bool { return p.Flags.Has(FlagIsFragment) }

// lifetimeMillis is the lifetime as carried on the wire.
func (p *PrimaryBlock) lifetimeMillis() uint64 {
	if p.Lifetime <= 0 {
		return 0
	}
	return uint64(p.Lifetime / time.Millisecond)
}

// marshal encodes the primary block, with its CRC. It returns the bytes as
// received when nothing has changed since decoding.
func (p *PrimaryBlock) marshal() ([]byte, error) {
	if p.raw != nil && p.fields() == p.rawOf {
		return p.raw, nil
	}
	return p.MarshalCanonical()
}

// MarshalCanonical encodes the primary block from its fields in CBOR's
// deterministic form, CRC included, whatever bytes it arrived in. Security
// contexts (RFC 9173, BPSec COSE) sign this encoding.
func (p *PrimaryBlock) MarshalCanonical() ([]byte, error) {
	if !p.CRCType.valid() {
		return nil, wrap(ErrCRCType, "primary block CRC type %d", uint64(p.CRCType))
	}
	n := uint64(8)
	if p.IsFragment() {
		n += 2
	}
	if p.CRCType != CRCNone {
		n++
	}
	b := appendHead(make([]byte, 0, 64), majorArray, n)
	b = appendHead(b, majorUint, 7)
	b = appendHead(b, majorUint, uint64(p.Flags))
	b = appendHead(b, majorUint, uint64(p.CRCType))
	for _, e := range []EID{p.Destination, p.Source, p.ReportTo} {
		enc, err := e.MarshalCBOR()
		if err != nil {
			return nil, err
		}
		b = append(b, enc...)
	}
	b = appendHead(b, majorArray, 2)
	b = appendHead(b, majorUint, uint64(p.Creation.Time))
	b = appendHead(b, majorUint, p.Creation.Sequence)
	b = appendHead(b, majorUint, p.lifetimeMillis())
	if p.IsFragment() {
		b = appendHead(b, majorUint, p.FragmentOffset)
		b = appendHead(b, majorUint, p.TotalADULength)
	}
	return appendCRC(b, p.CRCType), nil
}

// appendCRC appends the CRC field of a block whose other fields are in b.
func appendCRC(b []byte, t CRCType) []byte {
	if t == CRCNone {
		return b
	}
	b = appendHead(b, majorBytes, uint64(t.size()))
	b = append(b, make([]byte, t.size())...)
	copy(b[len(b)-t.size():], crcOver(t, b))
	return b
}

// unmarshalPrimary decodes a primary block from its complete raw bytes.
func unmarshalPrimary(raw []byte) (PrimaryBlock, error) {
	var p PrimaryBlock
	d := sliceDecoder{b: raw}
	n, err := d.arrayHead()
	if err != nil {
		return p, wrap(ErrMalformed, "primary block: %v", err)
	}
	if n < 8 || n > 11 {
		return p, wrap(ErrMalformed, "primary block has %d fields; it must have 8 to 11", n)
	}
	version, err := d.uint()
	if err != nil {
		return p, wrap(ErrMalformed, "primary block version: %v", err)
	}
	if version != 7 {
		return p, wrap(ErrUnsupportedVersion, "version %d", version)
	}
	flags, err := d.uint()
	if err != nil {
		return p, wrap(ErrMalformed, "primary block flags: %v", err)
	}
	p.Flags = BundleFlags(flags)
	crcType, err := d.uint()
	if err != nil {
		return p, wrap(ErrMalformed, "primary block CRC type: %v", err)
	}
	p.CRCType = CRCType(crcType)
	if !p.CRCType.valid() {
		return p, wrap(ErrCRCType, "primary block CRC type %d", crcType)
	}
	want := uint64(8)
	if p.IsFragment() {
		want += 2
	}
	if p.CRCType != CRCNone {
		want++
	}
	if n != want {
		return p, wrap(ErrMalformed, "primary block has %d fields; its flags and CRC type need %d", n, want)
	}
	for i, e := range []*EID{&p.Destination, &p.Source, &p.ReportTo} {
		item, err := d.item()
		if err != nil {
			return p, wrap(ErrMalformed, "primary block %s: %v", eidRole[i], err)
		}
		if err := e.UnmarshalCBOR(item); err != nil {
			return p, fmt.Errorf("primary block %s: %w", eidRole[i], err)
		}
	}
	if m, err := d.arrayHead(); err != nil || m != 2 {
		return p, wrap(ErrMalformed, "primary block creation timestamp must be [time, sequence]")
	}
	t, err1 := d.uint()
	seq, err2 := d.uint()
	if err1 != nil || err2 != nil {
		return p, wrap(ErrMalformed, "primary block creation timestamp must be two unsigned integers")
	}
	p.Creation = CreationTimestamp{Time: DTNTime(t), Sequence: seq}
	life, err := d.uint()
	if err != nil {
		return p, wrap(ErrMalformed, "primary block lifetime: %v", err)
	}
	const maxLifetimeMillis = uint64(1<<63-1) / uint64(time.Millisecond)
	p.Lifetime = time.Duration(min(life, maxLifetimeMillis)) * time.Millisecond
	if p.IsFragment() {
		off, err1 := d.uint()
		total, err2 := d.uint()
		if err1 != nil || err2 != nil {
			return p, wrap(ErrMalformed, "primary block fragment offset and total length must be unsigned integers")
		}
		p.FragmentOffset, p.TotalADULength = off, total
	}
	if p.CRCType != CRCNone {
		got, err := d.bytes()
		if err != nil || len(got) != p.CRCType.size() {
			return p, wrap(ErrMalformed, "primary block CRC must be a %d-byte string", p.CRCType.size())
		}
		if d.off != len(raw) {
			return p, wrap(ErrMalformed, "primary block has trailing bytes")
		}
		if want := crcOver(p.CRCType, raw); string(want) != string(got) {
			return p, wrap(ErrCRCMismatch, "primary block: computed %x, block carries %x", want, got)
		}
	}
	if d.off != len(raw) {
		return p, wrap(ErrMalformed, "primary block has trailing bytes")
	}
	p.raw = raw
	p.rawOf = p.fields()
	return p, nil
}

var eidRole = [...]string{"destination", "source", "report-to"}
