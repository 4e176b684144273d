package bundle

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// Limits bound what Decode accepts, so that a hostile or broken peer cannot
// make a node allocate without bound. The zero value means the defaults.
type Limits struct {
	// MaxBlocks is the most canonical blocks, the payload included
	// (default 64).
	MaxBlocks int
	// MaxBlockLen is the most encoded bytes of any block other than the
	// payload (default 1 MiB).
	MaxBlockLen uint64
	// MaxPayload is the most payload bytes. It is checked from the payload
	// block's header, before any payload byte is read (default: no limit).
	MaxPayload uint64
}

func (l Limits) withDefaults() Limits {
	if l.MaxBlocks <= 0 {
		l.MaxBlocks = 64
	}
	if l.MaxBlockLen == 0 {
		l.MaxBlockLen = 1 << 20
	}
	if l.MaxPayload == 0 {
		l.MaxPayload = math.MaxUint64
	}
	return l
}

// Encode writes b, followed by exactly b.Payload.Length bytes read from
// payload, as one bundle. It never holds the payload in memory. It returns
// the number of bytes written. If payload ends early, Encode returns an
// error wrapping ErrPayloadLength after writing a truncated bundle.
func Encode(w io.Writer, b *Bundle, payload io.Reader) (int64, error) {
	header, crc, err := b.encodeHeader()
	if err != nil {
		return 0, err
	}
	var written int64
	n, err := w.Write(header)
	written += int64(n)
	if err != nil {
		return written, err
	}
	cw := &crcWriter{w: w, crc: &crc}
	m, err := io.CopyN(cw, payload, int64(b.Payload.Length))
	written += m
	if err != nil {
		if errors.Is(err, io.EOF) {
			return written, wrap(ErrPayloadLength, "payload ended after %d of %d bytes", m, b.Payload.Length)
		}
		return written, err
	}
	n, err = w.Write(payloadTrailer(&crc))
	written += int64(n)
	return written, err
}

// Marshal encodes a bundle whose payload is in memory. It sets
// b.Payload.Length to len(payload).
func Marshal(b *Bundle, payload []byte) ([]byte, error) {
	b.Payload.Length = uint64(len(payload))
	header, crc, err := b.encodeHeader()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(header)+len(payload)+8)
	out = append(out, header...)
	out = append(out, payload...)
	crc.write(payload)
	return append(out, payloadTrailer(&crc)...), nil
}

// EncodedLen is the number of bytes Encode writes for b.
func (b *Bundle) EncodedLen() (uint64, error) {
	header, crc, err := b.encodeHeader()
	if err != nil {
		return 0, err
	}
	return uint64(len(header)) + b.Payload.Length + uint64(len(payloadTrailer(&crc))), nil
}

// HeaderLen is the number of bytes Encode writes before the first payload
// byte. A byte at payload offset k is at offset HeaderLen()+k of the
// encoded bundle.
func (b *Bundle) HeaderLen() (uint64, error) {
	header, _, err := b.encodeHeader()
	return uint64(len(header)), err
}

// encodeHeader encodes everything before the payload data: the array start,
// the primary block, the extension blocks, and the payload block's head. It
// returns the payload block's CRC state, primed with the block's head.
func (b *Bundle) encodeHeader() ([]byte, crcState, error) {
	prim, err := b.Primary.marshal()
	if err != nil {
		return nil, crcState{}, err
	}
	out := make([]byte, 0, 1+len(prim)+64)
	out = append(out, cborIndefiniteArr)
	out = append(out, prim...)
	for i := range b.Blocks {
		enc, err := b.Blocks[i].marshal()
		if err != nil {
			return nil, crcState{}, err
		}
		out = append(out, enc...)
	}
	if !b.Payload.CRCType.valid() {
		return nil, crcState{}, wrap(ErrCRCType, "payload block CRC type %d", uint64(b.Payload.CRCType))
	}
	start := len(out)
	fields := uint64(5)
	if b.Payload.CRCType != CRCNone {
		fields++
	}
	out = appendHead(out, majorArray, fields)
	out = appendHead(out, majorUint, uint64(BlockPayload))
	out = appendHead(out, majorUint, 1)
	out = appendHead(out, majorUint, uint64(b.Payload.Flags))
	out = appendHead(out, majorUint, uint64(b.Payload.CRCType))
	out = appendHead(out, majorBytes, b.Payload.Length)
	crc := newCRC(b.Payload.CRCType)
	crc.write(out[start:])
	return out, crc, nil
}

// payloadTrailer is what follows the payload data: the payload block's CRC
// (computed over the block with the CRC bytes zeroed) and the bundle's
// closing break.
func payloadTrailer(crc *crcState) []byte {
	var out []byte
	if size := crc.typ.size(); size > 0 {
		out = appendHead(out, majorBytes, uint64(size))
		crc.write(out)
		crc.write(make([]byte, size))
		out = append(out, crc.sum()...)
	}
	return append(out, cborBreak)
}

type crcWriter struct {
	w   io.Writer
	crc *crcState
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc.write(p[:n])
	return n, err
}

// Decode reads one bundle from r up to its payload and validates it. The
// payload comes back as a PayloadReader positioned at the first payload
// byte; read it to io.EOF, which is when the payload block's CRC and the
// end of the bundle are checked. Decode never allocates more than lim
// allows, whatever lengths the input declares.
//
// Decode reads r through a bufio.Reader and may read past the end of the
// bundle, unless r is itself a *bufio.Reader.
func Decode(r io.Reader, lim Limits) (*Bundle, *PayloadReader, error) {
	lim = lim.withDefaults()
	br, ok := r.(*bufio.Reader)
	pooled := !ok
	if pooled {
		br = readerPool.Get().(*bufio.Reader)
		br.Reset(r)
	}
	b, pr, err := decode(br, lim)
	if pr != nil {
		pr.pooled = pooled
	} else if pooled {
		br.Reset(nil)
		readerPool.Put(br)
	}
	return b, pr, err
}

// readerPool recycles Decode's read buffers: allocating and clearing one per
// small bundle would cost more than decoding it. A large payload bypasses
// the buffer, since bufio reads straight into big caller buffers.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

func decode(br *bufio.Reader, lim Limits) (*Bundle, *PayloadReader, error) {
	h := &headReader{r: br}
	first, err := h.readByte()
	if err != nil {
		return nil, nil, fmt.Errorf("reading bundle: %w", eofIsMalformed(err))
	}
	if first != cborIndefiniteArr {
		return nil, nil, wrap(ErrNotBundle, "first byte is %#02x", first)
	}
	var raw []byte
	h.record = &raw
	budget := lim.MaxBlockLen
	if err := h.skipRaw(1, &budget); err != nil {
		return nil, nil, fmt.Errorf("primary block: %w", eofIsMalformed(err))
	}
	if uint64(len(raw)) > lim.MaxBlockLen {
		return nil, nil, wrap(ErrTooLarge, "primary block of %d bytes exceeds the limit of %d", len(raw), lim.MaxBlockLen)
	}
	b := &Bundle{}
	if b.Primary, err = unmarshalPrimary(raw); err != nil {
		return nil, nil, err
	}
	for blocks := 1; ; blocks++ {
		if blocks > lim.MaxBlocks {
			return nil, nil, wrap(ErrTooManyBlocks, "more than %d blocks", lim.MaxBlocks)
		}
		raw = nil
		h.record = &raw
		major, n, indef, err := h.readHead()
		if err != nil {
			return nil, nil, fmt.Errorf("block %d: %w", blocks, eofIsMalformed(err))
		}
		if major == majorOther && indef {
			return nil, nil, ErrNoPayload
		}
		if major != majorArray || indef || n < 5 || n > 6 {
			return nil, nil, wrap(ErrMalformed, "block %d is not an array of 5 or 6 fields", blocks)
		}
		var f [4]uint64
		for i := range f {
			major, v, indef, err := h.readHead()
			if err != nil {
				return nil, nil, fmt.Errorf("block %d: %w", blocks, eofIsMalformed(err))
			}
			if major != majorUint || indef {
				return nil, nil, wrap(ErrMalformed, "block %d: field %d must be an unsigned integer", blocks, i)
			}
			f[i] = v
		}
		if BlockType(f[0]) == BlockPayload {
			pr, err := b.startPayload(h, br, f, n, lim)
			if err != nil {
				return nil, nil, err
			}
			return b, pr, nil
		}
		major, length, indef, err := h.readHead()
		if err != nil {
			return nil, nil, fmt.Errorf("block %d: %w", f[1], eofIsMalformed(err))
		}
		if major != majorBytes || indef {
			return nil, nil, wrap(ErrMalformed, "block %d: data must be a definite-length byte string", f[1])
		}
		if length > lim.MaxBlockLen {
			return nil, nil, wrap(ErrTooLarge, "block %d declares %d bytes of data; the limit is %d", f[1], length, lim.MaxBlockLen)
		}
		if _, err := h.readN(length, lim.MaxBlockLen); err != nil {
			return nil, nil, fmt.Errorf("block %d: %w", f[1], eofIsMalformed(err))
		}
		if n == 6 {
			budget := uint64(8)
			if err := h.skipRaw(1, &budget); err != nil {
				return nil, nil, fmt.Errorf("block %d CRC: %w", f[1], eofIsMalformed(err))
			}
		}
		blk, err := decodeBlock(raw)
		if err != nil {
			return nil, nil, err
		}
		b.Blocks = append(b.Blocks, blk)
	}
}

func eofIsMalformed(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return wrap(ErrMalformed, "bundle ends early")
	}
	return err
}

// startPayload checks the payload block's header fields, already read into
// f and recorded by h, validates the bundle, and returns the payload reader.
func (b *Bundle) startPayload(h *headReader, br *bufio.Reader, f [4]uint64, fields uint64, lim Limits) (*PayloadReader, error) {
	number, flags, crcType := f[1], BlockFlags(f[2]), CRCType(f[3])
	if number != 1 {
		return nil, wrap(ErrBadBlockNumber, "the payload block has number %d; it must be 1", number)
	}
	if !crcType.valid() {
		return nil, wrap(ErrCRCType, "payload block CRC type %d", f[3])
	}
	if (crcType != CRCNone) != (fields == 6) {
		return nil, wrap(ErrMalformed, "payload block: CRC type %s does not match its %d fields", crcType, fields)
	}
	major, length, indef, err := h.readHead()
	if err != nil {
		return nil, fmt.Errorf("payload block: %w", eofIsMalformed(err))
	}
	if major != majorBytes || indef {
		return nil, wrap(ErrMalformed, "payload must be a definite-length byte string")
	}
	if length > lim.MaxPayload {
		return nil, wrap(ErrTooLarge, "payload of %d bytes exceeds the limit of %d", length, lim.MaxPayload)
	}
	b.Payload = PayloadHeader{Flags: flags, CRCType: crcType, Length: length}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	crc := newCRC(crcType)
	crc.write(*h.record) // the block's head, fields and payload length
	h.record = nil
	return &PayloadReader{br: br, h: h, length: length, remaining: length, crc: crc}, nil
}

// PayloadReader streams a payload out of a bundle being decoded. Read
// returns io.EOF only once the payload block's CRC matched and the bundle
// ended properly; otherwise the last Read returns the reason.
type PayloadReader struct {
	br        *bufio.Reader
	h         *headReader
	length    uint64
	remaining uint64
	crc       crcState
	err       error
	pooled    bool // br came from readerPool and goes back once finished
}

// Len is the payload's declared length.
func (p *PayloadReader) Len() uint64 { return p.length }

// Remaining is how many payload bytes have not been read yet.
func (p *PayloadReader) Remaining() uint64 { return p.remaining }

func (p *PayloadReader) Read(buf []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.remaining == 0 {
		p.err = p.finish()
		if p.pooled {
			p.br.Reset(nil)
			readerPool.Put(p.br)
			p.br, p.h, p.pooled = nil, nil, false
		}
		return 0, p.err
	}
	if uint64(len(buf)) > p.remaining {
		buf = buf[:p.remaining]
	}
	n, err := p.br.Read(buf)
	p.remaining -= uint64(n)
	p.crc.write(buf[:n])
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = wrap(ErrMalformed, "bundle ends after %d of %d payload bytes", p.length-p.remaining, p.length)
		}
		p.err = err
		return n, err
	}
	return n, nil
}

// finish checks the payload block's CRC and the bundle's closing break.
func (p *PayloadReader) finish() error {
	if size := p.crc.typ.size(); size > 0 {
		var got []byte
		p.h.record = &got
		major, n, indef, err := p.h.readHead()
		if err != nil {
			return fmt.Errorf("payload block CRC: %w", eofIsMalformed(err))
		}
		if major != majorBytes || indef || n != uint64(size) {
			return wrap(ErrMalformed, "payload block CRC must be a %d-byte string", size)
		}
		p.crc.write(got)
		got = got[:0]
		if _, err := p.h.readN(n, n); err != nil {
			return fmt.Errorf("payload block CRC: %w", eofIsMalformed(err))
		}
		p.h.record = nil
		p.crc.write(make([]byte, size))
		if want := p.crc.sum(); !bytes.Equal(want, got) {
			return wrap(ErrCRCMismatch, "payload block: computed %x, block carries %x", want, got)
		}
	}
	c, err := p.h.readByte()
	if err != nil {
		return fmt.Errorf("end of bundle: %w", eofIsMalformed(err))
	}
	if c != cborBreak {
		if c>>5 == majorArray {
			return wrap(ErrPayloadNotLast, "another block follows the payload block")
		}
		return wrap(ErrMalformed, "expected the end of the bundle, found %#02x", c)
	}
	return io.EOF
}

// Unmarshal decodes a bundle held in memory, payload included, and checks
// that nothing follows it.
func Unmarshal(data []byte, lim Limits) (*Bundle, []byte, error) {
	r := bufio.NewReader(bytes.NewReader(data))
	b, pr, err := Decode(r, lim)
	if err != nil {
		return nil, nil, err
	}
	payload := make([]byte, 0, min(pr.Len(), uint64(len(data))))
	buf := bytes.NewBuffer(payload)
	if _, err := buf.ReadFrom(pr); err != nil {
		return nil, nil, err
	}
	if _, err := r.ReadByte(); err == nil {
		return nil, nil, ErrTrailingData
	}
	return b, buf.Bytes(), nil
}

// MarshalHeader encodes everything before the payload bytes: what a store
// keeps as a bundle's metadata. UnmarshalHeader reverses it.
func (b *Bundle) MarshalHeader() ([]byte, error) {
	header, _, err := b.encodeHeader()
	return header, err
}

// UnmarshalHeader decodes MarshalHeader's output (or any bundle prefix that
// reaches the payload's first byte) without reading any payload.
func UnmarshalHeader(header []byte, lim Limits) (*Bundle, error) {
	lim.MaxPayload = 0
	b, _, err := Decode(bufio.NewReader(bytes.NewReader(header)), lim)
	return b, err
}
