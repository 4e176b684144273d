package bundle

import (
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// AdminRecordType is an administrative record's type code (RFC 9171 §6.1).
type AdminRecordType uint64

// AdminStatusReport is the bundle status report record type.
const AdminStatusReport AdminRecordType = 1

// AdminRecord is the payload of a bundle flagged FlagAdminRecord: a type
// code and its content. Content is the record's CBOR encoding.
type AdminRecord struct {
	Type    AdminRecordType
	Content cbor.RawMessage
}

// MarshalAdminRecord encodes an administrative record payload.
func MarshalAdminRecord(typ AdminRecordType, content any) ([]byte, error) {
	c, err := encMode.Marshal(content)
	if err != nil {
		return nil, fmt.Errorf("encoding administrative record type %d: %w", typ, err)
	}
	return encMode.Marshal([]any{uint64(typ), cbor.RawMessage(c)})
}

// UnmarshalAdminRecord decodes an administrative record payload.
func UnmarshalAdminRecord(payload []byte) (AdminRecord, error) {
	var parts []cbor.RawMessage
	if err := decMode.Unmarshal(payload, &parts); err != nil || len(parts) != 2 {
		return AdminRecord{}, wrap(ErrBadAdminRecord, "an administrative record is [type, content]")
	}
	var typ uint64
	if err := decMode.Unmarshal(parts[0], &typ); err != nil {
		return AdminRecord{}, wrap(ErrBadAdminRecord, "record type is not an unsigned integer")
	}
	return AdminRecord{Type: AdminRecordType(typ), Content: parts[1]}, nil
}

// StatusAssertion is one item of a status report's status information: was
// the event asserted, and when (zero when the bundle did not ask for times).
type StatusAssertion struct {
	Asserted bool
	Time     DTNTime
}

// StatusReport is a bundle status report (RFC 9171 §6.1.1).
type StatusReport struct {
	Received  StatusAssertion
	Forwarded StatusAssertion
	Delivered StatusAssertion
	Deleted   StatusAssertion
	Reason    StatusReason
	// Subject is the ID of the bundle the report is about.
	Subject ID
}

// NewStatusReport builds the report a node sends about b. Times are
// included when b asked for them.
func NewStatusReport(b *Bundle, reason StatusReason, at time.Time, received, forwarded, delivered, deleted bool) StatusReport {
	var t DTNTime
	if b.Primary.Flags.Has(FlagStatusTimeRequested) {
		t = FromTime(at)
	}
	assert := func(on bool) StatusAssertion {
		if !on {
			return StatusAssertion{}
		}
		return StatusAssertion{Asserted: true, Time: t}
	}
	return StatusReport{
		Received:  assert(received),
		Forwarded: assert(forwarded),
		Delivered: assert(delivered),
		Deleted:   assert(deleted),
		Reason:    reason,
		Subject:   b.ID(),
	}
}

// Marshal encodes the report as an administrative record payload.
func (r StatusReport) Marshal() ([]byte, error) {
	info := make([]any, 4)
	for i, a := range []StatusAssertion{r.Received, r.Forwarded, r.Delivered, r.Deleted} {
		if a.Asserted && a.Time != 0 {
			info[i] = []any{true, uint64(a.Time)}
		} else {
			info[i] = []any{a.Asserted}
		}
	}
	content := []any{info, uint64(r.Reason), r.Subject.Source, []uint64{uint64(r.Subject.Creation.Time), r.Subject.Creation.Sequence}}
	if r.Subject.Fragment {
		content = append(content, r.Subject.Offset, r.Subject.Length)
	}
	return MarshalAdminRecord(AdminStatusReport, content)
}

// ParseStatusReport decodes a status report from an administrative record
// payload.
func ParseStatusReport(payload []byte) (StatusReport, error) {
	var r StatusReport
	rec, err := UnmarshalAdminRecord(payload)
	if err != nil {
		return r, err
	}
	if rec.Type != AdminStatusReport {
		return r, wrap(ErrBadAdminRecord, "record type %d is not a status report", rec.Type)
	}
	var parts []cbor.RawMessage
	if err := decMode.Unmarshal(rec.Content, &parts); err != nil || (len(parts) != 4 && len(parts) != 6) {
		return r, wrap(ErrBadAdminRecord, "a status report has 4 or 6 fields")
	}
	var info []cbor.RawMessage
	if err := decMode.Unmarshal(parts[0], &info); err != nil || len(info) != 4 {
		return r, wrap(ErrBadAdminRecord, "status information must list 4 assertions")
	}
	for i, a := range []*StatusAssertion{&r.Received, &r.Forwarded, &r.Delivered, &r.Deleted} {
		var item []cbor.RawMessage
		if err := decMode.Unmarshal(info[i], &item); err != nil || len(item) < 1 || len(item) > 2 {
			return r, wrap(ErrBadAdminRecord, "status assertion %d must be [bool] or [bool, time]", i)
		}
		if err := decMode.Unmarshal(item[0], &a.Asserted); err != nil {
			return r, wrap(ErrBadAdminRecord, "status assertion %d: indicator is not a boolean", i)
		}
		if len(item) == 2 {
			var t uint64
			if err := decMode.Unmarshal(item[1], &t); err != nil {
				return r, wrap(ErrBadAdminRecord, "status assertion %d: time is not an unsigned integer", i)
			}
			a.Time = DTNTime(t)
		}
	}
	var reason uint64
	if err := decMode.Unmarshal(parts[1], &reason); err != nil {
		return r, wrap(ErrBadAdminRecord, "reason code is not an unsigned integer")
	}
	r.Reason = StatusReason(reason)
	if err := r.Subject.Source.UnmarshalCBOR(parts[2]); err != nil {
		return r, wrap(ErrBadAdminRecord, "subject source: %v", err)
	}
	var ts []uint64
	if err := decMode.Unmarshal(parts[3], &ts); err != nil || len(ts) != 2 {
		return r, wrap(ErrBadAdminRecord, "subject creation timestamp must be [time, sequence]")
	}
	r.Subject.Creation = CreationTimestamp{Time: DTNTime(ts[0]), Sequence: ts[1]}
	if len(parts) == 6 {
		r.Subject.Fragment = true
		if decMode.Unmarshal(parts[4], &r.Subject.Offset) != nil || decMode.Unmarshal(parts[5], &r.Subject.Length) != nil {
			return r, wrap(ErrBadAdminRecord, "subject fragment offset and length must be unsigned integers")
		}
	}
	return r, nil
}
