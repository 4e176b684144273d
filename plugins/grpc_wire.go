package plugins

import (
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	adapterpb "github.com/mulegate/mulegate/plugins/proto"
)

// The messages of a DeliverSession, encoded and decoded by hand: the bytes
// are what protobuf makes of adapter.proto (an adapter in another language
// sees plain protobuf), but the Go values behind them are the contract's own
// (Meta, Result), with no adapterpb message in between. For a 1 KiB bundle,
// protobuf's generic code (reflection over BundleMeta and its options map,
// a message allocated for each delivery and each answer, every string
// copied out one by one) was the largest single cost of the session: about
// a fifth of the CPU of each process.
//
// Field numbers are adapter.proto's; each function names the message it
// handles.

var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// sizeString is the encoded size of a string field that is not empty.
func sizeString(s string) int {
	if s == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(s))
}

// sizeVarint is the encoded size of a varint field that is not zero.
func sizeVarint(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

// putVarint is protowire.AppendVarint with the one-byte case inlined:
// tags, and most lengths and numbers here, are below 128.
func putVarint(b []byte, v uint64) []byte {
	if v < 0x80 {
		return append(b, byte(v))
	}
	return protowire.AppendVarint(b, v)
}

// putTag appends a tag; the field numbers here are all below 16, so it is
// one byte.
func putTag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	return append(b, byte(num)<<3|byte(typ))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = putTag(b, num, protowire.BytesType)
	b = putVarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return putVarint(putTag(b, num, protowire.VarintType), v)
}

// consumeVarint is protowire.ConsumeVarint with the one-byte case inlined.
func consumeVarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// consumeTag is protowire.ConsumeTag with the one-byte case inlined, and
// a field number over protowire.MaxValidNumber refused, as proto.Unmarshal
// refuses it (ConsumeTag does not).
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] < 0x80 && b[0] >= 1<<3 {
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	num, typ, n := protowire.ConsumeTag(b)
	if num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

// consumeBytes is protowire.ConsumeBytes with a one-byte length inlined.
func consumeBytes(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 {
		n := int(b[0])
		if n >= len(b) {
			return nil, -1
		}
		return b[1 : 1+n], 1 + n
	}
	return protowire.ConsumeBytes(b)
}

// sizeOption is the size of one options map entry's message: key and value
// are both written, even empty, as protobuf writes them.
func sizeOption(k, v string) int {
	return 2 + protowire.SizeBytes(len(k)) + protowire.SizeBytes(len(v))
}

// option is one entry of Meta.Options. The encoder walks the map once,
// into a slice of these: iterating a map costs more than the rest of the
// encoding, and it needs the entries three times.
type option struct{ key, value string }

// metaSize is the encoded size of BundleMeta for m, with m.Options as opts.
func metaSize(m *Meta, opts []option) int {
	n := sizeString(m.BundleID) + sizeString(m.Source) + sizeString(m.Destination) + sizeString(m.ReportTo) +
		sizeVarint(m.CreationTime) + sizeVarint(m.Sequence) + sizeVarint(lifetimeMs(m.Lifetime)) +
		sizeVarint(uint64(m.PayloadLength)) + sizeVarint(m.Flags) +
		sizeVarint(uint64(m.HopCount)) + sizeVarint(uint64(m.HopLimit)) +
		sizeString(m.SignatureStatus) + sizeString(m.Route)
	for _, o := range opts {
		n += 1 + protowire.SizeBytes(sizeOption(o.key, o.value))
	}
	return n
}

func lifetimeMs(d time.Duration) uint64 { return uint64(max(d, 0) / time.Millisecond) }

// appendMeta appends m as BundleMeta, in field order, with m.Options as
// opts.
func appendMeta(b []byte, m *Meta, opts []option) []byte {
	b = appendString(b, 1, m.BundleID)
	b = appendString(b, 2, m.Source)
	b = appendString(b, 3, m.Destination)
	b = appendString(b, 4, m.ReportTo)
	b = appendVarint(b, 5, m.CreationTime)
	b = appendVarint(b, 6, m.Sequence)
	b = appendVarint(b, 7, lifetimeMs(m.Lifetime))
	b = appendVarint(b, 8, uint64(m.PayloadLength))
	b = appendVarint(b, 9, m.Flags)
	b = appendVarint(b, 10, uint64(m.HopCount))
	b = appendVarint(b, 11, uint64(m.HopLimit))
	b = appendString(b, 12, m.SignatureStatus)
	b = appendString(b, 13, m.Route)
	for _, o := range opts {
		b = putTag(b, 14, protowire.BytesType)
		b = putVarint(b, uint64(sizeOption(o.key, o.value)))
		b = putTag(b, 1, protowire.BytesType)
		b = append(putVarint(b, uint64(len(o.key))), o.key...)
		b = putTag(b, 2, protowire.BytesType)
		b = append(putVarint(b, uint64(len(o.value))), o.value...)
	}
	return b
}

// checkMetaUTF8 reports a string of m (with m.Options as opts) that
// protobuf could not carry: a receiver fails the whole message on it, and
// with it every delivery of the session.
func checkMetaUTF8(m *Meta, opts []option) error {
	if !utf8.ValidString(m.BundleID) || !utf8.ValidString(m.Source) || !utf8.ValidString(m.Destination) ||
		!utf8.ValidString(m.ReportTo) || !utf8.ValidString(m.SignatureStatus) || !utf8.ValidString(m.Route) {
		return fmt.Errorf("%w: meta of bundle %q holds a string that is not valid UTF-8", ErrInvalid, m.BundleID)
	}
	for _, o := range opts {
		if !utf8.ValidString(o.key) || !utf8.ValidString(o.value) {
			return fmt.Errorf("%w: meta option %q=%q is not valid UTF-8", ErrInvalid, o.key, o.value)
		}
	}
	return nil
}

// encodeDelivery encodes a delivery as one element of
// SessionRequest.deliveries (its tag and length, then SessionDelivery), in
// a pooled buffer, and reads the payload from r straight into its place.
// It returns the buffer and the payload within it. The buffer is
// reference-counted: a message that carries it takes a reference of its
// own, so whoever lets go of it last returns it to the pool.
func encodeDelivery(id uint64, m *Meta, timeoutMs uint64, r io.Reader) (mem.Buffer, []byte, error) {
	opts := make([]option, 0, 8) // on the stack, for a usual number of options
	for k, v := range m.Options {
		opts = append(opts, option{k, v})
	}
	if err := checkMetaUTF8(m, opts); err != nil {
		return nil, nil, err
	}
	n := int(m.PayloadLength)
	ms := metaSize(m, opts)
	body := sizeVarint(id) + 1 + protowire.SizeBytes(ms) + sizeVarint(timeoutMs)
	if n > 0 {
		body += 1 + protowire.SizeBytes(n)
	}
	bp := buffers.Get(1 + protowire.SizeBytes(body))
	b := (*bp)[:0]
	b = putTag(b, 1, protowire.BytesType) // SessionRequest.deliveries
	b = putVarint(b, uint64(body))
	b = appendVarint(b, 1, id)
	b = putTag(b, 2, protowire.BytesType)
	b = putVarint(b, uint64(ms))
	b = appendMeta(b, m, opts)
	var payload []byte
	if n > 0 {
		b = putTag(b, 3, protowire.BytesType)
		b = putVarint(b, uint64(n))
		payload = b[len(b) : len(b)+n]
		if k, err := io.ReadFull(r, payload); err != nil {
			buffers.Put(bp)
			return nil, nil, shortPayload(err, int64(k), m.PayloadLength)
		}
		b = b[:len(b)+n]
	}
	b = appendVarint(b, 4, timeoutMs)
	if len(b) != len(*bp) {
		panic(fmt.Sprintf("plugins: encoded a delivery in %d bytes, sized it %d", len(b), len(*bp)))
	}
	return mem.NewBuffer(bp, buffers), payload, nil
}

// sessionBatch is a SessionRequest as the node's sender puts it together:
// deliveries already encoded by encodeDelivery, and cancellations. Only
// the contract's codec can marshal it; the node forces that codec on the
// session (sessionCodec).
type sessionBatch struct {
	// deliveries hold one reference each, which marshal hands over to
	// gRPC, with the slice itself.
	deliveries mem.BufferSlice
	cancel     []uint64
}

// marshal returns the message as the encoded deliveries themselves, not a
// copy, followed by the cancellations.
func (m *sessionBatch) marshal() mem.BufferSlice {
	out := m.deliveries
	m.deliveries = nil
	if len(m.cancel) > 0 {
		packed := 0
		for _, id := range m.cancel {
			packed += protowire.SizeVarint(id)
		}
		b := make([]byte, 0, 1+protowire.SizeBytes(packed))
		b = putTag(b, 2, protowire.BytesType) // SessionRequest.cancel, packed
		b = putVarint(b, uint64(packed))
		for _, id := range m.cancel {
			b = putVarint(b, id)
		}
		out = append(out, mem.SliceBuffer(b))
	}
	return out
}

// decodeDelivery decodes a SessionDelivery from b into job, with the
// payload left in b. Fields are read as protobuf reads them: the last of a
// scalar wins, a meta given twice is merged, unknown fields are skipped.
func decodeDelivery(b []byte, job *sessionJob) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			job.id, n = consumeVarint(b)
		case num == 2 && typ == protowire.BytesType:
			var v []byte
			if v, n = consumeBytes(b); n >= 0 {
				job.hasMeta = true
				if err := decodeMeta(v, &job.meta); err != nil {
					return err
				}
			}
		case num == 3 && typ == protowire.BytesType:
			job.payload, n = consumeBytes(b)
		case num == 4 && typ == protowire.VarintType:
			job.timeoutMs, n = consumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// decodeMeta decodes a BundleMeta from b into m, as metaFromPB would
// convert what proto.Unmarshal makes of it, merging into what m holds. The
// strings all share one copy of b, so that a delivery's meta costs one
// allocation for its strings rather than one per string; b itself is a
// pooled buffer that the next delivery overwrites.
func decodeMeta(b []byte, m *Meta) error {
	all := string(b)
	for off := 0; off < len(b); {
		num, typ, n := consumeTag(b[off:])
		if n < 0 {
			return errMalformed
		}
		off += n
		switch typ {
		case protowire.VarintType:
			v, n := consumeVarint(b[off:])
			if n < 0 {
				return errMalformed
			}
			off += n
			switch num {
			case 5:
				m.CreationTime = v
			case 6:
				m.Sequence = v
			case 7:
				m.Lifetime = msDuration(v)
			case 8:
				m.PayloadLength = int64(v)
			case 9:
				m.Flags = v
			case 10:
				m.HopCount = uint32(v)
			case 11:
				m.HopLimit = uint32(v)
			}
		case protowire.BytesType:
			v, n := consumeBytes(b[off:])
			if n < 0 {
				return errMalformed
			}
			start := off + n - len(v)
			off += n
			s := all[start : start+len(v)]
			var dst *string
			switch num {
			case 1:
				dst = &m.BundleID
			case 2:
				dst = &m.Source
			case 3:
				dst = &m.Destination
			case 4:
				dst = &m.ReportTo
			case 12:
				dst = &m.SignatureStatus
			case 13:
				dst = &m.Route
			case 14:
				if err := decodeOption(v, s, &m.Options); err != nil {
					return err
				}
				continue
			default:
				continue // unknown
			}
			if !utf8.ValidString(s) {
				return errInvalidUTF8
			}
			*dst = s
		default:
			n := protowire.ConsumeFieldValue(num, typ, b[off:])
			if n < 0 {
				return errMalformed
			}
			off += n
		}
	}
	return nil
}

// decodeOption decodes one entry of BundleMeta.options from e into opts;
// s is the same bytes as a string, which the key and value are cut from. A
// missing key or value is empty; a key given again replaces its value.
func decodeOption(e []byte, s string, opts *map[string]string) error {
	var kv [2]string
	for off := 0; off < len(e); {
		num, typ, n := consumeTag(e[off:])
		if n < 0 {
			return errMalformed
		}
		off += n
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := consumeBytes(e[off:])
			if n < 0 {
				return errMalformed
			}
			start := off + n - len(v)
			off += n
			if kv[num-1] = s[start : start+len(v)]; !utf8.ValidString(kv[num-1]) {
				return errInvalidUTF8
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, e[off:])
		if n < 0 {
			return errMalformed
		}
		off += n
	}
	if *opts == nil {
		*opts = make(map[string]string, 1)
	}
	(*opts)[kv[0]] = kv[1]
	return nil
}

// wireAnswer is a DeliverResponse, with the id of the session delivery it
// answers.
type wireAnswer struct {
	id           uint64
	status       adapterpb.DeliverResponse_Status
	retryAfterMs uint64
	reason       string
}

// answerOf is the answer the adapter sends for r: its reason bounded (see
// boundReason), a retry delay only for a Retry.
func answerOf(id uint64, r Result) wireAnswer {
	reason := r.Reason
	if reason == "" && r.Err != nil {
		reason = r.Err.Error()
	}
	a := wireAnswer{id: id, reason: boundReason(reason)}
	switch r.Status {
	case OK:
		a.status = adapterpb.DeliverResponse_STATUS_OK
	case Reject:
		a.status = adapterpb.DeliverResponse_STATUS_REJECT
	default:
		a.status = adapterpb.DeliverResponse_STATUS_RETRY
		a.retryAfterMs = uint64(max(r.RetryAfter, 0) / time.Millisecond)
	}
	return a
}

// result is the Result the node takes from the answer. An unset or unknown
// status is a Retry.
func (a *wireAnswer) result() Result {
	switch a.status {
	case adapterpb.DeliverResponse_STATUS_OK:
		return Result{Status: OK}
	case adapterpb.DeliverResponse_STATUS_REJECT:
		// Bounded here too: an adapter not built with this package may
		// send a longer one, and the node logs and reports it.
		return Result{Status: Reject, Reason: boundReason(a.reason)}
	default:
		return Result{Status: Retry, RetryAfter: msDuration(a.retryAfterMs), Reason: boundReason(a.reason)}
	}
}

func (a *wireAnswer) responseSize() int {
	return sizeVarint(uint64(int64(a.status))) + sizeVarint(a.retryAfterMs) + sizeString(a.reason)
}

func (a *wireAnswer) resultSize() int {
	return sizeVarint(a.id) + 1 + protowire.SizeBytes(a.responseSize())
}

// sessionAnswers is a SessionResponse as the adapter's sender puts it
// together. Only the contract's codec can marshal it; the sender sends a
// plain SessionResponse where the server runs another codec.
type sessionAnswers struct{ answers []wireAnswer }

// marshal encodes the message into a pooled buffer that gRPC puts back once
// it has written it.
func (m *sessionAnswers) marshal() mem.BufferSlice {
	size := 0
	for i := range m.answers {
		size += 1 + protowire.SizeBytes(m.answers[i].resultSize())
	}
	bp := buffers.Get(size)
	b := (*bp)[:0]
	for i := range m.answers {
		a := &m.answers[i]
		b = putTag(b, 1, protowire.BytesType) // SessionResponse.results
		b = putVarint(b, uint64(a.resultSize()))
		b = appendVarint(b, 1, a.id) // SessionResult.id
		b = putTag(b, 2, protowire.BytesType)
		b = putVarint(b, uint64(a.responseSize()))
		b = appendVarint(b, 1, uint64(int64(a.status))) // DeliverResponse
		b = appendVarint(b, 2, a.retryAfterMs)
		b = appendString(b, 3, a.reason)
	}
	*bp = b
	return mem.BufferSlice{mem.NewBuffer(bp, buffers)}
}

// proto is the same message as the generated type, for a server that runs
// gRPC's own codec.
func (m *sessionAnswers) proto() *adapterpb.SessionResponse {
	resp := &adapterpb.SessionResponse{Results: make([]*adapterpb.SessionResult, len(m.answers))}
	for i, a := range m.answers {
		resp.Results[i] = &adapterpb.SessionResult{Id: a.id, Result: &adapterpb.DeliverResponse{
			Status: a.status, RetryAfterMs: a.retryAfterMs, Reason: a.reason,
		}}
	}
	return resp
}

// sessionResponse receives a SessionResponse. The contract's codec decodes
// it into answers; decoded by any other codec, it is the plain
// SessionResponse it embeds.
type sessionResponse struct {
	adapterpb.SessionResponse
	decoded bool
	answers []wireAnswer
}

func (r *sessionResponse) reset() {
	r.SessionResponse.Reset()
	r.decoded, r.answers = false, r.answers[:0]
}

// get returns the message's answers.
func (r *sessionResponse) get() []wireAnswer {
	if r.decoded {
		return r.answers
	}
	for _, res := range r.GetResults() {
		dr := res.GetResult()
		r.answers = append(r.answers, wireAnswer{
			id: res.GetId(), status: dr.GetStatus(), retryAfterMs: dr.GetRetryAfterMs(), reason: dr.GetReason(),
		})
	}
	return r.answers
}

// decode decodes a SessionResponse from data, as proto.Unmarshal would.
func (r *sessionResponse) decode(data mem.BufferSlice) error {
	var b []byte
	switch len(data) {
	case 0:
	case 1:
		b = data[0].ReadOnlyData()
	default:
		bp := buffers.Get(data.Len())
		defer buffers.Put(bp)
		data.CopyTo(*bp)
		b = *bp
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType { // results
			var v []byte
			if v, n = consumeBytes(b); n >= 0 {
				var a wireAnswer
				if err := a.decodeResult(v); err != nil {
					return err
				}
				r.answers = append(r.answers, a)
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	r.decoded = true
	return nil
}

// decodeResult decodes a SessionResult into a.
func (a *wireAnswer) decodeResult(b []byte) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			a.id, n = consumeVarint(b)
		case num == 2 && typ == protowire.BytesType:
			var v []byte
			if v, n = consumeBytes(b); n >= 0 {
				// A message field given twice is merged.
				if err := a.decodeResponse(v); err != nil {
					return err
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// decodeResponse decodes a DeliverResponse into a.
func (a *wireAnswer) decodeResponse(b []byte) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			var v uint64
			v, n = consumeVarint(b)
			a.status = adapterpb.DeliverResponse_Status(int32(v))
		case num == 2 && typ == protowire.VarintType:
			a.retryAfterMs, n = consumeVarint(b)
		case num == 3 && typ == protowire.BytesType:
			var v []byte
			if v, n = consumeBytes(b); n >= 0 {
				if !utf8.Valid(v) {
					return errInvalidUTF8
				}
				a.reason = string(v)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}
