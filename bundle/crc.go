package bundle

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// CRCType says which CRC protects a block (RFC 9171 §4.2.1).
type CRCType uint64

const (
	CRCNone CRCType = 0
	CRC16   CRCType = 1 // CRC-16/X.25
	CRC32C  CRCType = 2 // CRC-32 Castagnoli
)

func (c CRCType) String() string {
	switch c {
	case CRCNone:
		return "none"
	case CRC16:
		return "crc16"
	case CRC32C:
		return "crc32c"
	default:
		return fmt.Sprintf("crc(%d)", uint64(c))
	}
}

// ParseCRCType accepts "none", "16", "crc16", "32", "32c", "crc32c".
func ParseCRCType(s string) (CRCType, error) {
	switch s {
	case "none", "0":
		return CRCNone, nil
	case "16", "crc16", "x25":
		return CRC16, nil
	case "32", "32c", "crc32", "crc32c":
		return CRC32C, nil
	}
	return 0, fmt.Errorf("unknown CRC type %q: use none, 16 or 32", s)
}

// size is the CRC value's length in bytes.
func (c CRCType) size() int {
	switch c {
	case CRC16:
		return 2
	case CRC32C:
		return 4
	}
	return 0
}

func (c CRCType) valid() bool { return c <= CRC32C }

// crc16X25Table is the reflected table for polynomial 0x1021 (reversed 0x8408).
var crc16X25Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for j := 0; j < 8; j++ {
			if c&1 != 0 {
				c = c>>1 ^ 0x8408
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crcState accumulates a block's CRC over its encoded bytes, which lets the
// payload block's CRC be checked while the payload streams past.
type crcState struct {
	typ CRCType
	c16 uint16
	c32 uint32
}

func newCRC(t CRCType) crcState { return crcState{typ: t, c16: 0xffff} }

func (s *crcState) write(p []byte) {
	switch s.typ {
	case CRC16:
		c := s.c16
		for _, b := range p {
			c = c>>8 ^ crc16X25Table[byte(c)^b]
		}
		s.c16 = c
	case CRC32C:
		s.c32 = crc32.Update(s.c32, castagnoli, p)
	}
}

// sum returns the CRC value as the big-endian bytes carried in the block.
func (s *crcState) sum() []byte {
	switch s.typ {
	case CRC16:
		return binary.BigEndian.AppendUint16(nil, s.c16^0xffff)
	case CRC32C:
		return binary.BigEndian.AppendUint32(nil, s.c32)
	}
	return nil
}

// crcOver computes the CRC of a whole encoded block whose last size() bytes
// are the CRC value, treating those bytes as zero (RFC 9171 §4.2.1).
func crcOver(t CRCType, block []byte) []byte {
	n := t.size()
	s := newCRC(t)
	s.write(block[:len(block)-n])
	s.write(make([]byte, n))
	return s.sum()
}
