package bundle

import (
	"encoding/binary"
	"errors"
	"io"
	"math"

	"github.com/fxamacker/cbor/v2"
)

// The bundle's framing — the indefinite-length outer array, each block's
// array head, and the payload's byte string head — is read here, one CBOR
// head at a time, so that the payload can be handed over as a stream. The
// contents of each block (EIDs, timestamps, admin records) are decoded by
// fxamacker/cbor from bounded byte slices.

const (
	majorUint  = 0
	majorNint  = 1
	majorBytes = 2
	majorText  = 3
	majorArray = 4
	majorMap   = 5
	majorTag   = 6
	majorOther = 7

	cborBreak          = 0xff
	cborIndefiniteArr  = 0x9f
	indefiniteArgument = 31
)

// maxNesting bounds recursion when copying a raw data item, so a hostile
// bundle cannot exhaust the stack.
const maxNesting = 16

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// Core deterministic encoding (RFC 8949 §4.2.1): shortest heads, so that
	// re-encoding a block we decoded reproduces its bytes.
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:  maxNesting,
		MaxArrayElements: 1024,
		MaxMapPairs:      1024,
		IndefLength:      cbor.IndefLengthAllowed,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// headReader reads CBOR heads and raw items from a byte stream, counting what
// it consumed and optionally recording it.
type headReader struct {
	r      io.ByteReader
	n      int64
	record *[]byte // when non-nil, every byte read is appended here
}

func (h *headReader) readByte() (byte, error) {
	b, err := h.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, io.ErrUnexpectedEOF
		}
		return 0, err
	}
	h.n++
	if h.record != nil {
		*h.record = append(*h.record, b)
	}
	return b, nil
}

// readHead returns the major type and argument of the next item. indefinite
// is true for an indefinite-length head (argument 31 on types 2–5) and for
// the break byte (major 7, argument 31).
func (h *headReader) readHead() (major byte, arg uint64, indefinite bool, err error) {
	ib, err := h.readByte()
	if err != nil {
		return 0, 0, false, err
	}
	major, info := ib>>5, ib&0x1f
	switch {
	case info < 24:
		return major, uint64(info), false, nil
	case info == 24 || info == 25 || info == 26 || info == 27:
		n := 1 << (info - 24)
		var v uint64
		for i := 0; i < n; i++ {
			b, err := h.readByte()
			if err != nil {
				return 0, 0, false, err
			}
			v = v<<8 | uint64(b)
		}
		return major, v, false, nil
	case info == indefiniteArgument && (major >= majorBytes && major <= majorMap || major == majorOther):
		return major, 0, true, nil
	default:
		return 0, 0, false, wrap(ErrMalformed, "reserved additional information %d in initial byte %#02x", info, ib)
	}
}

// readN reads exactly n bytes, growing its buffer as data actually arrives so
// that a declared length of 2^60 never allocates 2^60 bytes.
func (h *headReader) readN(n uint64, limit uint64) ([]byte, error) {
	if n > limit {
		return nil, wrap(ErrTooLarge, "item of %d bytes exceeds the limit of %d", n, limit)
	}
	const step = 64 << 10
	buf := make([]byte, 0, min(n, step))
	for uint64(len(buf)) < n {
		b, err := h.readByte()
		if err != nil {
			return nil, err
		}
		buf = append(buf, b)
	}
	return buf, nil
}

// skipRaw consumes one complete data item (with h.record set, this copies
// it). budget bounds the total bytes any byte or text strings inside may
// declare.
func (h *headReader) skipRaw(depth int, budget *uint64) error {
	if depth > maxNesting {
		return wrap(ErrMalformed, "nesting deeper than %d", maxNesting)
	}
	major, arg, indef, err := h.readHead()
	if err != nil {
		return err
	}
	switch major {
	case majorUint, majorNint:
		return nil
	case majorBytes, majorText:
		if indef {
			for {
				done, err := h.peekBreak()
				if err != nil || done {
					return err
				}
				if err := h.skipRaw(depth+1, budget); err != nil {
					return err
				}
			}
		}
		if arg > *budget {
			return wrap(ErrTooLarge, "string of %d bytes exceeds the block size limit", arg)
		}
		*budget -= arg
		for i := uint64(0); i < arg; i++ {
			if _, err := h.readByte(); err != nil {
				return err
			}
		}
		return nil
	case majorArray, majorMap:
		items := arg
		if major == majorMap && !indef {
			if items > math.MaxUint64/2 {
				return wrap(ErrMalformed, "map too large")
			}
			items *= 2
		}
		if indef {
			for {
				done, err := h.peekBreak()
				if err != nil || done {
					return err
				}
				if err := h.skipRaw(depth+1, budget); err != nil {
					return err
				}
			}
		}
		for i := uint64(0); i < items; i++ {
			if err := h.skipRaw(depth+1, budget); err != nil {
				return err
			}
		}
		return nil
	case majorTag:
		return h.skipRaw(depth+1, budget)
	default: // simple values and floats
		if indef {
			return wrap(ErrMalformed, "unexpected break")
		}
		return nil
	}
}

// peekBreak consumes a break byte if one is next. Byte readers here are
// bufio.Readers, which can unread one byte.
func (h *headReader) peekBreak() (bool, error) {
	b, err := h.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return false, io.ErrUnexpectedEOF
		}
		return false, err
	}
	if b == cborBreak {
		h.n++
		if h.record != nil {
			*h.record = append(*h.record, b)
		}
		return true, nil
	}
	if u, ok := h.r.(io.ByteScanner); ok {
		if err := u.UnreadByte(); err != nil {
			return false, err
		}
		return false, nil
	}
	return false, wrap(ErrMalformed, "indefinite-length item on a stream that cannot unread")
}

// appendHead appends a CBOR head in its shortest form.
func appendHead(dst []byte, major byte, arg uint64) []byte {
	m := major << 5
	switch {
	case arg < 24:
		return append(dst, m|byte(arg))
	case arg <= math.MaxUint8:
		return append(dst, m|24, byte(arg))
	case arg <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(arg))
	case arg <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(arg))
	default:
		return binary.BigEndian.AppendUint64(append(dst, m|27), arg)
	}
}

// headLen is the length of appendHead's output for arg.
func headLen(arg uint64) int {
	switch {
	case arg < 24:
		return 1
	case arg <= math.MaxUint8:
		return 2
	case arg <= math.MaxUint16:
		return 3
	case arg <= math.MaxUint32:
		return 5
	default:
		return 9
	}
}

// sliceDecoder walks CBOR items in a byte slice that is already bounded.
type sliceDecoder struct {
	b   []byte
	off int
	h   headReader
}

// reader is a headReader over the rest of the slice; it is kept in the
// decoder so that reading many heads allocates nothing.
func (d *sliceDecoder) reader() *headReader {
	if d.h.r == nil {
		d.h.r = d
	}
	return &d.h
}

func (d *sliceDecoder) ReadByte() (byte, error) {
	if d.off >= len(d.b) {
		return 0, io.EOF
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

func (d *sliceDecoder) UnreadByte() error {
	if d.off == 0 {
		return errors.New("unread at start")
	}
	d.off--
	return nil
}

func (d *sliceDecoder) head(wantMajor byte) (uint64, error) {
	major, arg, indef, err := d.reader().readHead()
	if err != nil {
		return 0, err
	}
	if major != wantMajor || indef {
		return 0, errors.New(describeMismatch(wantMajor, major, indef))
	}
	return arg, nil
}

func describeMismatch(want, got byte, indef bool) string {
	names := [...]string{"unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple value"}
	if indef && want == got {
		return "expected a definite-length " + names[want]
	}
	return "expected " + names[want] + ", found " + names[got]
}

func (d *sliceDecoder) arrayHead() (uint64, error) { return d.head(majorArray) }
func (d *sliceDecoder) uint() (uint64, error)      { return d.head(majorUint) }

func (d *sliceDecoder) bytes() ([]byte, error) {
	n, err := d.head(majorBytes)
	if err != nil {
		return nil, err
	}
	if n > uint64(len(d.b)-d.off) {
		return nil, io.ErrUnexpectedEOF
	}
	v := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return v, nil
}

// item returns the next complete data item's raw bytes.
func (d *sliceDecoder) item() ([]byte, error) {
	start := d.off
	budget := uint64(len(d.b))
	if err := d.reader().skipRaw(0, &budget); err != nil {
		return nil, err
	}
	return d.b[start:d.off], nil
}
