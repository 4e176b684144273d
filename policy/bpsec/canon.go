package bpsec

import (
	"github.com/mulegate/mulegate/bundle"
)

// canonicalPrimary is the primary block as RFC 9171 §4.3.1 encodes it from
// its fields, CRC included: what both contexts sign as "the primary block".
// Both RFC 9173 ("canonical form") and the COSE context ("re-encode the AAD
// parts; treat bundle contents as untrusted input") ask for a re-encoding,
// not the bytes as received, so a non-conforming encoding on the wire
// cannot change what is verified.
func canonicalPrimary(p *bundle.PrimaryBlock) ([]byte, error) {
	return p.MarshalCanonical()
}

// appendHead appends a CBOR head of the given major type.
func appendHead(b []byte, major byte, v uint64) []byte {
	major <<= 5
	switch {
	case v < 24:
		return append(b, major|byte(v))
	case v <= 0xff:
		return append(b, major|24, byte(v))
	case v <= 0xffff:
		return append(b, major|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(b, major|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, major|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendUint(b []byte, v uint64) []byte { return appendHead(b, 0, v) }

// appendBstr appends data as a definite-length CBOR byte string.
func appendBstr(b []byte, data []byte) []byte {
	return append(appendHead(b, 2, uint64(len(data))), data...)
}

// blockMeta is what both contexts call a block's header or metadata: its
// type code, block number and processing control flags.
type blockMeta struct {
	Type   bundle.BlockType
	Number uint64
	Flags  bundle.BlockFlags
}

// append appends the three fields as a CBOR sequence, without framing.
func (m blockMeta) append(b []byte) []byte {
	b = appendUint(b, uint64(m.Type))
	b = appendUint(b, m.Number)
	return appendUint(b, uint64(m.Flags))
}

func payloadMeta(b *bundle.Bundle) blockMeta {
	return blockMeta{Type: bundle.BlockPayload, Number: 1, Flags: b.Payload.Flags}
}

// findBlock returns the metadata and (for a block other than the payload)
// the block-type-specific data of block number n.
func findBlock(b *bundle.Bundle, n uint64) (blockMeta, []byte, bool) {
	if n == 1 {
		return payloadMeta(b), nil, true
	}
	for i := range b.Blocks {
		blk := &b.Blocks[i]
		if blk.Number == n {
			return blockMeta{Type: blk.Type, Number: blk.Number, Flags: blk.Flags}, blk.Data, true
		}
	}
	return blockMeta{}, nil, false
}

// nextBlockNumber is one more than the highest block number in use.
func nextBlockNumber(b *bundle.Bundle) uint64 {
	n := uint64(1)
	for _, blk := range b.Blocks {
		n = max(n, blk.Number)
	}
	return n + 1
}
