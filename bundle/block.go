package bundle

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// BlockType is a canonical block's type code (IANA "Bundle Block Types").
type BlockType uint64

const (
	BlockPayload      BlockType = 1
	BlockPreviousNode BlockType = 6
	BlockBundleAge    BlockType = 7
	BlockHopCount     BlockType = 10
	BlockIntegrity    BlockType = 11 // BPSec BIB, RFC 9172
	BlockConfidential BlockType = 12 // BPSec BCB, RFC 9172
)

func (t BlockType) String() string {
	switch t {
	case BlockPayload:
		return "payload"
	case BlockPreviousNode:
		return "previous_node"
	case BlockBundleAge:
		return "bundle_age"
	case BlockHopCount:
		return "hop_count"
	case BlockIntegrity:
		return "block_integrity"
	case BlockConfidential:
		return "block_confidentiality"
	}
	return fmt.Sprintf("type_%d", uint64(t))
}

// KnownBlockType reports whether mulegate understands blocks of type t.
// Other blocks are carried unchanged and handled as their flags ask: see
// Bundle.ProcessUnknownBlocks.
func KnownBlockType(t BlockType) bool {
	switch t {
	case BlockPayload, BlockPreviousNode, BlockBundleAge, BlockHopCount, BlockIntegrity, BlockConfidential:
		return true
	}
	return false
}

// BlockFlags are the block processing control flags (RFC 9171 §4.2.4).
type BlockFlags uint64

const (
	BlockReplicate      BlockFlags = 0x01 // replicate the block in every fragment
	BlockReportIfUnproc BlockFlags = 0x02 // send a status report if the block cannot be processed
	BlockDeleteIfUnproc BlockFlags = 0x04 // delete the bundle if the block cannot be processed
	BlockRemoveIfUnproc BlockFlags = 0x10 // discard the block if it cannot be processed
)

func (f BlockFlags) Has(f2 BlockFlags) bool { return f&f2 == f2 }

func (f BlockFlags) String() string {
	if f == 0 {
		return "none"
	}
	var names []string
	for _, n := range []struct {
		f    BlockFlags
		name string
	}{{BlockReplicate, "replicate"}, {BlockReportIfUnproc, "report_if_unprocessable"}, {BlockDeleteIfUnproc, "delete_bundle_if_unprocessable"}, {BlockRemoveIfUnproc, "discard_if_unprocessable"}} {
		if f&n.f != 0 {
			names = append(names, n.name)
		}
	}
	if rest := f &^ (BlockReplicate | BlockReportIfUnproc | BlockDeleteIfUnproc | BlockRemoveIfUnproc); rest != 0 {
		names = append(names, fmt.Sprintf("%#x", uint64(rest)))
	}
	return strings.Join(names, "|")
}

// Block is a canonical block other than the payload block (RFC 9171
// §4.3.2). Data is the block-type-specific data: the content of the CBOR byte
// string, which for the known extension blocks is itself CBOR.
type Block struct {
	Type    BlockType
	Number  uint64
	Flags   BlockFlags
	CRCType CRCType
	Data    []byte

	// raw is the block as received; it is written back unchanged while the
	// fields above still match what it decoded to (rawOf, whose Data aliases
	// raw while Data is a copy), so blocks mulegate does not understand
	// travel byte for byte.
	raw   []byte
	rawOf *Block
}

func (b *Block) unchanged() bool {
	r := b.rawOf
	return r != nil && r.Type == b.Type && r.Number == b.Number && r.Flags == b.Flags && r.CRCType == b.CRCType && bytes.Equal(r.Data, b.Data)
}

// marshal encodes the block with its CRC.
func (b *Block) marshal() ([]byte, error) {
	if b.unchanged() {
		return b.raw, nil
	}
	if !b.CRCType.valid() {
		return nil, wrap(ErrCRCType, "block %d CRC type %d", b.Number, uint64(b.CRCType))
	}
	n := uint64(5)
	if b.CRCType != CRCNone {
		n++
	}
	out := appendHead(make([]byte, 0, 16+len(b.Data)), majorArray, n)
	out = appendHead(out, majorUint, uint64(b.Type))
	out = appendHead(out, majorUint, b.Number)
	out = appendHead(out, majorUint, uint64(b.Flags))
	out = appendHead(out, majorUint, uint64(b.CRCType))
	out = appendHead(out, majorBytes, uint64(len(b.Data)))
	out = append(out, b.Data...)
	return appendCRC(out, b.CRCType), nil
}

// decodeBlock parses a complete canonical block (not the payload) and checks
// its CRC.
func decodeBlock(raw []byte) (Block, error) {
	var b Block
	d := sliceDecoder{b: raw}
	n, err := d.arrayHead()
	if err != nil || n < 5 || n > 6 {
		return b, wrap(ErrMalformed, "a canonical block is an array of 5 or 6 fields")
	}
	var f [4]uint64
	for i := range f {
		if f[i], err = d.uint(); err != nil {
			return b, wrap(ErrMalformed, "canonical block field %d: %v", i, err)
		}
	}
	b.Type, b.Number, b.Flags, b.CRCType = BlockType(f[0]), f[1], BlockFlags(f[2]), CRCType(f[3])
	if !b.CRCType.valid() {
		return b, wrap(ErrCRCType, "block %d has CRC type %d", b.Number, f[3])
	}
	if (b.CRCType != CRCNone) != (n == 6) {
		return b, wrap(ErrMalformed, "block %d: CRC type %s does not match its %d fields", b.Number, b.CRCType, n)
	}
	if b.Data, err = d.bytes(); err != nil {
		return b, wrap(ErrMalformed, "block %d data: %v", b.Number, err)
	}
	if b.CRCType != CRCNone {
		got, err := d.bytes()
		if err != nil || len(got) != b.CRCType.size() {
			return b, wrap(ErrMalformed, "block %d CRC must be a %d-byte string", b.Number, b.CRCType.size())
		}
		if d.off == len(raw) {
			if want := crcOver(b.CRCType, raw); !bytes.Equal(want, got) {
				return b, wrap(ErrCRCMismatch, "block %d (%s): computed %x, block carries %x", b.Number, b.Type, want, got)
			}
		}
	}
	if d.off != len(raw) {
		return b, wrap(ErrMalformed, "block %d has trailing bytes", b.Number)
	}
	orig := b
	b.raw, b.rawOf = raw, &orig
	b.Data = bytes.Clone(b.Data)
	return b, nil
}

// HopCount is the hop count block's content (RFC 9171 §4.4.3).
type HopCount struct {
	Limit uint64
	Count uint64
}

// Exceeded reports whether the bundle has made more hops than its limit.
func (h HopCount) Exceeded() bool { return h.Count > h.Limit }

// decodeExtension decodes a known extension block's data into v.
func decodeExtension(b *Block, v any) error {
	if err := decMode.Unmarshal(b.Data, v); err != nil {
		return wrap(ErrBadBlockData, "%s block %d: %v", b.Type, b.Number, err)
	}
	return nil
}

// Extension block accessors. Each returns ok=false when the block is absent
// and an error when it is present but malformed.

// PreviousNode returns the previous node block's node ID.
func (bd *Bundle) PreviousNode() (EID, bool, error) {
	blk := bd.Block(BlockPreviousNode)
	if blk == nil {
		return EID{}, false, nil
	}
	var e EID
	if err := e.UnmarshalCBOR(blk.Data); err != nil {
		return EID{}, true, wrap(ErrBadBlockData, "previous node block: %v", err)
	}
	return e, true, nil
}

// SetPreviousNode adds or replaces the previous node block, as a node does
// before forwarding (RFC 9171 §4.4.1).
func (bd *Bundle) SetPreviousNode(node EID) error {
	data, err := node.MarshalCBOR()
	if err != nil {
		return err
	}
	bd.setExtension(BlockPreviousNode, data)
	return nil
}

// Age returns the bundle age block's value.
func (bd *Bundle) Age() (time.Duration, bool, error) {
	blk := bd.Block(BlockBundleAge)
	if blk == nil {
		return 0, false, nil
	}
	var ms uint64
	if err := decodeExtension(blk, &ms); err != nil {
		return 0, true, err
	}
	const maxMillis = uint64(1<<63-1) / uint64(time.Millisecond)
	return time.Duration(min(ms, maxMillis)) * time.Millisecond, true, nil
}

// SetAge adds or replaces the bundle age block.
func (bd *Bundle) SetAge(age time.Duration) {
	if age < 0 {
		age = 0
	}
	data, _ := encMode.Marshal(uint64(age / time.Millisecond))
	bd.setExtension(BlockBundleAge, data)
}

// HopCount returns the hop count block's value.
func (bd *Bundle) HopCount() (HopCount, bool, error) {
	blk := bd.Block(BlockHopCount)
	if blk == nil {
		return HopCount{}, false, nil
	}
	var v []uint64
	if err := decodeExtension(blk, &v); err != nil {
		return HopCount{}, true, err
	}
	if len(v) != 2 {
		return HopCount{}, true, wrap(ErrBadBlockData, "hop count block must be [limit, count]")
	}
	return HopCount{Limit: v[0], Count: v[1]}, true, nil
}

// SetHopCount adds or replaces the hop count block.
func (bd *Bundle) SetHopCount(h HopCount) {
	data, _ := encMode.Marshal([]uint64{h.Limit, h.Count})
	bd.setExtension(BlockHopCount, data)
}

// Block returns the first extension block of type t, or nil.
func (bd *Bundle) Block(t BlockType) *Block {
	for i := range bd.Blocks {
		if bd.Blocks[i].Type == t {
			return &bd.Blocks[i]
		}
	}
	return nil
}

// setExtension replaces the data of the block of type t, or appends a new
// block with the next free block number and the bundle's preferred CRC.
func (bd *Bundle) setExtension(t BlockType, data []byte) {
	if blk := bd.Block(t); blk != nil {
		blk.Data = data
		return
	}
	bd.Blocks = append(bd.Blocks, Block{Type: t, Number: bd.nextBlockNumber(), CRCType: bd.Payload.CRCType, Data: data})
}

// nextBlockNumber is one more than the highest block number in use (the
// payload's is 1).
func (bd *Bundle) nextBlockNumber() uint64 {
	n := uint64(1)
	for _, b := range bd.Blocks {
		n = max(n, b.Number)
	}
	return n + 1
}

// RemoveBlock removes the extension block with the given number.
func (bd *Bundle) RemoveBlock(number uint64) bool {
	for i := range bd.Blocks {
		if bd.Blocks[i].Number == number {
			bd.Blocks = append(bd.Blocks[:i], bd.Blocks[i+1:]...)
			return true
		}
	}
	return false
}
