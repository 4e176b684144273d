package quic

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
)

// What became of an incoming stream.
type outcome uint8

const (
	accepted    outcome = iota // the sink stored the bundle
	refused                    // stop the stream with result.code
	interrupted                // the stream broke off; nothing to signal
	violated                   // protocol error: close the connection with CodeProtocolError
)

// result is what receive did with one stream.
type result struct {
	outcome outcome
	code    Code   // for refused
	partial bool   // for interrupted: the sink had the bundle, and kept what arrived
	read    uint64 // stream bytes read
	err     error
}

// receiver runs the receiving half of the protocol on one stream's bytes,
// whatever carries them: a QUIC stream, or a fuzzer's input.
type receiver struct {
	limits    bundle.Limits
	maxBundle uint64
	sink      convergence.Sink
}

// Errors of the receiving side that are the peer's fault.
var (
	errEmptyStream   = errors.New("stream ended before its first byte")
	errUnknownForm   = errors.New("stream does not start with a bundle (0x9f) or a CBOR byte string (0x40-0x5b)")
	errWrappedShort  = errors.New("stream ended before the wrapped bundle's declared length")
	errTrailingData  = errors.New("data after the bundle: a stream carries exactly one bundle")
	errBPv6          = errors.New("BPv6 bundles are not supported")
	errStreamTooLong = fmt.Errorf("%w: the stream exceeds the bundle size limit", bundle.ErrTooLarge)
)

var bufReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

// receive reads one bundle from src and hands it to the sink. src ends
// (io.EOF) where the stream ends (FIN); any other error from src is the
// transfer breaking off.
func (rc *receiver) receive(ctx context.Context, s convergence.Session, src io.Reader) (res result) {
	sr := &streamReader{r: src, limit: rc.maxBundle}
	defer func() { res.read = sr.n }()

	first, err := sr.readHead()
	if err != nil {
		return sr.failure(err)
	}
	switch {
	case first == 0x9f: // direct form, BPv7
		sr.unread(first)
	case first == 0x06:
		return result{outcome: refused, code: CodeUnsupportedBundleVersion, err: errBPv6}
	case first >= 0x40 && first <= 0x5b: // wrapped form: a CBOR byte string holding the bundle
		n, err := sr.readLength(first)
		if err != nil {
			return sr.failure(err)
		}
		if n > rc.maxBundle {
			return result{outcome: refused, code: CodeBundleTooLarge, err: fmt.Errorf("%w: wrapped bundle of %d bytes; the limit is %d", bundle.ErrTooLarge, n, rc.maxBundle)}
		}
		sr.wrap(n)
		inner, err := sr.readHead()
		if err != nil {
			return sr.failure(err)
		}
		switch inner {
		case 0x9f:
			sr.unread(inner)
		case 0x06:
			return result{outcome: refused, code: CodeUnsupportedBundleVersion, err: errBPv6}
		default:
			return result{outcome: violated, err: fmt.Errorf("wrapped content starts with %#02x: %w", inner, errUnknownForm)}
		}
	default:
		return result{outcome: violated, err: fmt.Errorf("first byte %#02x: %w", first, errUnknownForm)}
	}

	br := bufReaders.Get().(*bufio.Reader)
	br.Reset(sr)
	defer func() {
		br.Reset(nil)
		bufReaders.Put(br)
	}()

	b, payload, err := bundle.Decode(br, rc.limits)
	if err != nil {
		return sr.failure(err)
	}
	sr.startPayload(uint64(br.Buffered()), payload.Len())
	if end := sr.payloadStart + payload.Len() + trailerLen(b.Payload.CRCType); end > rc.maxBundle {
		return result{outcome: refused, code: CodeBundleTooLarge, err: fmt.Errorf("%w: bundle of %d bytes; the limit is %d", bundle.ErrTooLarge, end, rc.maxBundle)}
	}

	err = rc.sink.Receive(ctx, s, b, payload)
	if err == nil {
		// The sink must have read to io.EOF; make sure of it, since that is
		// where the CRC is checked, and read what a careless sink left.
		_, err = io.Copy(io.Discard, payload)
		if err != nil {
			err = fmt.Errorf("bundle %s: the sink stored it, but its payload does not verify: %w", b.ID(), err)
		}
	}
	if err != nil {
		if sr.err != nil {
			// What the stream did decides, whatever the sink made of it.
			res := sr.failure(sr.err)
			res.partial = res.outcome == interrupted
			return res
		}
		return result{outcome: refused, code: refusalCode(err), err: err}
	}
	// The bundle is stored. The stream must end here.
	_, err = br.ReadByte()
	switch {
	case err == io.EOF:
		if sr.wrapped {
			// The wrapped length is used up; the stream itself must end too.
			err = sr.expectEnd()
		} else {
			err = nil
		}
	case err == nil, errors.Is(err, errStreamTooLong):
		err = errTrailingData
	}
	if err != nil {
		if res := sr.failure(err); res.outcome == violated {
			return res
		}
		// Broken off after the whole bundle: it arrived, and is stored.
	}
	return result{outcome: accepted}
}

// trailerLen is how many bytes follow the payload's last byte: the payload
// block's CRC, if any, and the bundle's closing break.
func trailerLen(t bundle.CRCType) uint64 {
	switch t {
	case bundle.CRC16:
		return 1 + 2 + 1
	case bundle.CRC32C:
		return 1 + 4 + 1
	}
	return 1
}

// streamReader reads an incoming stream: it counts bytes, enforces the size
// limit, ends a wrapped bundle at its declared length, and turns the
// transport's errors into *convergence.InterruptedError with the number of
// payload bytes that arrived.
type streamReader struct {
	r       io.Reader
	n       uint64 // bytes read from r
	limit   uint64 // bytes r may carry: the bundle size limit, or the wrapped end
	wrapped bool   // limit is the wrapped form's declared end
	back    byte   // a byte given back by unread
	hasBack bool
	// The payload's position, once the header is decoded.
	inPayload    bool
	payloadStart uint64
	payloadLen   uint64
	err          error // the first error other than io.EOF
	one          [1]byte
}

// readHead reads the stream's next byte directly, without buffering ahead.
func (s *streamReader) readHead() (byte, error) {
	if _, err := io.ReadFull(s, s.one[:]); err != nil {
		if err == io.EOF {
			if s.wrapped {
				return 0, errWrappedShort
			}
			return 0, errEmptyStream
		}
		return 0, err
	}
	return s.one[0], nil
}

func (s *streamReader) unread(c byte) {
	s.back, s.hasBack = c, true
	s.n--
}

// readLength reads the length of the CBOR byte string whose first byte is
// first (0x40-0x5b).
func (s *streamReader) readLength(first byte) (uint64, error) {
	info := first & 0x1f
	if info < 24 {
		return uint64(info), nil
	}
	var buf [8]byte
	size := 1 << (info - 24) // 1, 2, 4 or 8 bytes
	if _, err := io.ReadFull(s, buf[:size]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, errWrappedShort
		}
		return 0, err
	}
	var n uint64
	for _, c := range buf[:size] {
		n = n<<8 | uint64(c)
	}
	return n, nil
}

// wrap makes the stream end, as far as the bundle decoder sees, after n more
// bytes.
func (s *streamReader) wrap(n uint64) {
	s.limit, s.wrapped = s.n+n, true
}

// startPayload records where the payload starts: buffered bytes have been
// read from the stream but not yet by the decoder.
func (s *streamReader) startPayload(buffered, length uint64) {
	s.inPayload, s.payloadStart, s.payloadLen = true, s.n-buffered, length
}

// received is how many payload bytes have been read from the stream.
func (s *streamReader) received() uint64 {
	if !s.inPayload || s.n < s.payloadStart {
		return 0
	}
	return min(s.n-s.payloadStart, s.payloadLen)
}

func (s *streamReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if s.hasBack {
		s.hasBack = false
		p[0] = s.back
		s.n++
		return 1, nil
	}
	if s.n >= s.limit {
		if s.wrapped {
			return 0, io.EOF
		}
		// Anything more is too much; nothing more is just the end. Ask for
		// one byte to tell which.
		p = p[:1]
	} else if room := s.limit - s.n; uint64(len(p)) > room {
		p = p[:room]
	}
	n, err := s.r.Read(p)
	s.n += uint64(n)
	if s.n > s.limit {
		s.err = errStreamTooLong
		return n, s.err
	}
	if err != nil && err != io.EOF {
		s.err = &convergence.InterruptedError{Received: s.received(), Err: err}
	} else if err == io.EOF && s.wrapped && s.n < s.limit {
		s.err = errWrappedShort
	}
	if s.err != nil {
		return n, s.err
	}
	return n, err
}

// expectEnd checks that the stream ends now, after a wrapped bundle.
func (s *streamReader) expectEnd() error {
	n, err := s.r.Read(s.one[:])
	s.n += uint64(n)
	switch {
	case n > 0:
		return errTrailingData
	case err == io.EOF:
		return nil
	case err == nil: // a reader may return 0, nil; ask again
		return s.expectEnd()
	}
	return &convergence.InterruptedError{Received: s.received(), Err: err}
}

// failure turns an error met while receiving into a result.
func (s *streamReader) failure(err error) result {
	switch {
	case errors.Is(err, convergence.ErrInterrupted):
		return result{outcome: interrupted, err: err}
	case errors.Is(err, errEmptyStream), errors.Is(err, errUnknownForm),
		errors.Is(err, errWrappedShort), errors.Is(err, errTrailingData):
		return result{outcome: violated, err: err}
	}
	return result{outcome: refused, code: refusalCode(err), err: err}
}
