package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Bundle is everything about a bundle except its payload bytes: the primary
// block, the extension blocks in the order they travel, and the payload
// block's header and length. The payload travels beside it as an io.Reader
// (see Encode and Decode).
type Bundle struct {
	Primary PrimaryBlock
	// Blocks are the canonical blocks other than the payload block, in wire
	// order. The payload block is always last on the wire.
	Blocks  []Block
	Payload PayloadHeader
}

// PayloadHeader describes the payload block (type 1, always block number 1,
// always last).
type PayloadHeader struct {
	Flags   BlockFlags
	CRCType CRCType
	Length  uint64
}

// Params are what an application chooses when it creates a bundle.
type Params struct {
	Source      EID
	Destination EID
	ReportTo    EID // defaults to Source
	Flags       BundleFlags
	// Created defaults to now. Sequence distinguishes bundles a source
	// creates within the same millisecond.
	Created  time.Time
	Sequence uint64
	Lifetime time.Duration
	CRCType  CRCType
	// HopLimit, when non-zero, adds a hop count block.
	HopLimit uint64
	// PayloadLength is the number of payload bytes that will follow.
	PayloadLength uint64
}

// New makes a bundle's metadata from p and validates it.
func New(p Params) (*Bundle, error) {
	if p.ReportTo.IsZero() {
		p.ReportTo = p.Source
	}
	created := p.Created
	if created.IsZero() {
		created = time.Now()
	}
	b := &Bundle{
		Primary: PrimaryBlock{
			Flags:       p.Flags,
			CRCType:     p.CRCType,
			Destination: p.Destination,
			Source:      p.Source,
			ReportTo:    p.ReportTo,
			Creation:    CreationTimestamp{Time: FromTime(created), Sequence: p.Sequence},
			Lifetime:    p.Lifetime,
		},
		Payload: PayloadHeader{CRCType: p.CRCType, Length: p.PayloadLength},
	}
	if p.HopLimit > 0 {
		b.SetHopCount(HopCount{Limit: p.HopLimit})
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// Clone returns a deep copy, safe to modify independently.
func (b *Bundle) Clone() *Bundle {
	c := *b
	c.Blocks = make([]Block, len(b.Blocks))
	for i, blk := range b.Blocks {
		blk.Data = bytes.Clone(blk.Data)
		c.Blocks[i] = blk
	}
	return &c
}

// ID identifies a bundle: its source, creation timestamp and, for a
// fragment, the payload range it carries. Two bundles with the same ID are
// the same bundle. ID is comparable.
type ID struct {
	Source   EID
	Creation CreationTimestamp
	// Fragment is true for a fragment, which then carries
	// payload[Offset:Offset+Length] of the original application data unit.
	Fragment bool
	Offset   uint64
	Length   uint64
}

// ID returns the bundle's ID.
func (b *Bundle) ID() ID {
	id := ID{Source: b.Primary.Source, Creation: b.Primary.Creation}
	if b.Primary.IsFragment() {
		id.Fragment, id.Offset, id.Length = true, b.Primary.FragmentOffset, b.Payload.Length
	}
	return id
}

// Whole returns the ID of the whole bundle a fragment belongs to.
func (id ID) Whole() ID { return ID{Source: id.Source, Creation: id.Creation} }

// String is the ID's stable text form:
//
//	SOURCE|TIME.SEQUENCE            a whole bundle
//	SOURCE|TIME.SEQUENCE|OFFSET+LEN a fragment
//
// for example "dtn://alice/chat|815162342000.3". "|" cannot occur in an EID
// that mulegate accepts, so the form is unambiguous.
func (id ID) String() string {
	var sb strings.Builder
	sb.WriteString(id.Source.String())
	sb.WriteByte('|')
	sb.WriteString(strconv.FormatUint(uint64(id.Creation.Time), 10))
	sb.WriteByte('.')
	sb.WriteString(strconv.FormatUint(id.Creation.Sequence, 10))
	if id.Fragment {
		sb.WriteByte('|')
		sb.WriteString(strconv.FormatUint(id.Offset, 10))
		sb.WriteByte('+')
		sb.WriteString(strconv.FormatUint(id.Length, 10))
	}
	return sb.String()
}

// Key is a fixed-length, file-name-safe digest of the ID (32 hex
// characters), for object keys and file names.
func (id ID) Key() string {
	sum := sha256.Sum256([]byte(id.String()))
	return hex.EncodeToString(sum[:16])
}

// ParseID parses ID.String's output.
func ParseID(s string) (ID, error) {
	var id ID
	src, tail, ok := cutLast(s, '|')
	if !ok {
		return id, fmt.Errorf("bundle ID %q: want SOURCE|TIME.SEQ[|OFFSET+LEN]", s)
	}
	if off, n, isFrag := strings.Cut(tail, "+"); isFrag {
		var err1, err2 error
		id.Fragment = true
		id.Offset, err1 = strconv.ParseUint(off, 10, 64)
		id.Length, err2 = strconv.ParseUint(n, 10, 64)
		if err1 != nil || err2 != nil {
			return id, fmt.Errorf("bundle ID %q: fragment range %q must be OFFSET+LENGTH", s, tail)
		}
		if src, tail, ok = cutLast(src, '|'); !ok {
			return id, fmt.Errorf("bundle ID %q: want SOURCE|TIME.SEQ|OFFSET+LEN", s)
		}
	}
	t, seq, ok := strings.Cut(tail, ".")
	tv, err1 := strconv.ParseUint(t, 10, 64)
	sv, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return id, fmt.Errorf("bundle ID %q: creation timestamp %q must be TIME.SEQUENCE", s, tail)
	}
	id.Creation = CreationTimestamp{Time: DTNTime(tv), Sequence: sv}
	var err error
	if id.Source, err = ParseEID(src); err != nil {
		return id, fmt.Errorf("bundle ID %q: %w", s, err)
	}
	return id, nil
}

func cutLast(s string, sep byte) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// MarshalText and UnmarshalText give IDs their string form in JSON.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ExpiresAt is when the bundle's lifetime ends. receivedAt is when this
// node received the bundle; it matters only when the creation time is
// unknown (0), in which case the bundle age block says how old the bundle
// was on arrival (RFC 9171 §4.2.6).
func (b *Bundle) ExpiresAt(receivedAt time.Time) time.Time {
	if b.Primary.Creation.Time != 0 {
		return b.Primary.Creation.Time.Time().Add(b.Primary.Lifetime)
	}
	age, _, _ := b.Age()
	return receivedAt.Add(b.Primary.Lifetime - age)
}

// CurrentAge is how old the bundle is at now: from its creation time when
// known, otherwise from the bundle age block plus the time held here.
func (b *Bundle) CurrentAge(receivedAt, now time.Time) time.Duration {
	if b.Primary.Creation.Time != 0 {
		return max(0, now.Sub(b.Primary.Creation.Time.Time()))
	}
	age, _, _ := b.Age()
	return age + max(0, now.Sub(receivedAt))
}

// Validate checks the rules of RFC 9171 §4 that concern the whole bundle.
// Decode calls it; call it after building or changing a bundle by hand.
func (b *Bundle) Validate() error {
	p := &b.Primary
	if p.Destination.IsZero() || p.Source.IsZero() || p.ReportTo.IsZero() {
		return wrap(ErrBadEID, "destination, source and report-to must all be set (dtn:none is allowed)")
	}
	if !p.CRCType.valid() {
		return wrap(ErrCRCType, "primary block CRC type %d", uint64(p.CRCType))
	}
	if p.Source.IsNone() {
		if !p.Flags.Has(FlagMustNotFragment) || p.Flags.ReportsRequested() {
			return wrap(ErrBadFlags, "an anonymous bundle (source dtn:none) must be flagged must-not-fragment and request no status reports")
		}
	} else if !p.Source.IsSingleton() {
		return wrap(ErrBadSource, "source %s is a group endpoint; a source must be a singleton", p.Source)
	}
	if p.Flags.Has(FlagAdminRecord) && p.Flags.ReportsRequested() {
		return wrap(ErrBadFlags, "an administrative record must not request status reports")
	}
	if p.IsFragment() {
		if p.Flags.Has(FlagMustNotFragment) {
			return wrap(ErrBadFlags, "a fragment is flagged must-not-fragment")
		}
		if p.FragmentOffset > p.TotalADULength || b.Payload.Length > p.TotalADULength-p.FragmentOffset {
			return wrap(ErrFragmentFields, "offset %d plus payload length %d exceeds the total length %d", p.FragmentOffset, b.Payload.Length, p.TotalADULength)
		}
	}
	if !b.Payload.CRCType.valid() {
		return wrap(ErrCRCType, "payload block CRC type %d", uint64(b.Payload.CRCType))
	}
	seen := make(map[uint64]bool, len(b.Blocks))
	once := make(map[BlockType]bool, 3)
	hasBIB := false
	for i := range b.Blocks {
		blk := &b.Blocks[i]
		if blk.Type == BlockPayload {
			return wrap(ErrPayloadNotLast, "block %d is a payload block", blk.Number)
		}
		if blk.Number <= 1 {
			return wrap(ErrBadBlockNumber, "block of type %s has number %d; 0 is the primary block's and 1 the payload's", blk.Type, blk.Number)
		}
		if seen[blk.Number] {
			return wrap(ErrDuplicateBlockNumber, "block number %d", blk.Number)
		}
		seen[blk.Number] = true
		if !blk.CRCType.valid() {
			return wrap(ErrCRCType, "block %d CRC type %d", blk.Number, uint64(blk.CRCType))
		}
		switch blk.Type {
		case BlockPreviousNode, BlockBundleAge, BlockHopCount:
			if once[blk.Type] {
				return wrap(ErrDuplicateBlock, "more than one %s block", blk.Type)
			}
			once[blk.Type] = true
		case BlockIntegrity:
			hasBIB = true
		}
	}
	if p.CRCType == CRCNone && !hasBIB {
		return ErrPrimaryCRCMissing
	}
	if _, _, err := b.PreviousNode(); err != nil {
		return err
	}
	if _, _, err := b.HopCount(); err != nil {
		return err
	}
	if _, ok, err := b.Age(); err != nil {
		return err
	} else if !ok && p.Creation.Time == 0 {
		return ErrMissingAge
	}
	return nil
}

// ProcessUnknownBlocks applies the block processing control flags of every
// block whose type known does not recognise (RFC 9171 §5.4.2): a block
// flagged "delete bundle if unprocessable" makes it return
// ErrUnprocessableBlock; a block flagged "discard if unprocessable" is
// removed. report is true when a block asks for a status report. known may
// be nil for KnownBlockType.
func (b *Bundle) ProcessUnknownBlocks(known func(BlockType) bool) (report bool, err error) {
	if known == nil {
		known = KnownBlockType
	}
	kept := b.Blocks[:0:0]
	for _, blk := range b.Blocks {
		if known(blk.Type) {
			kept = append(kept, blk)
			continue
		}
		if blk.Flags.Has(BlockReportIfUnproc) {
			report = true
		}
		if blk.Flags.Has(BlockDeleteIfUnproc) {
			return report, wrap(ErrUnprocessableBlock, "block %d of unknown type %d", blk.Number, uint64(blk.Type))
		}
		if !blk.Flags.Has(BlockRemoveIfUnproc) {
			kept = append(kept, blk)
		}
	}
	b.Blocks = kept
	return report, nil
}

// IsAdminRecord reports whether the payload is an administrative record.
func (b *Bundle) IsAdminRecord() bool { return b.Primary.Flags.Has(FlagAdminRecord) }
