package bundle

import (
	"errors"
	"fmt"
)

// StatusReason is a bundle status report reason code (RFC 9171 §6.1.1 and
// RFC 9172 §9.1). It is the kind of every rejection in mulegate.
type StatusReason uint64

// Reason codes from the IANA "Bundle Status Report Reason Codes" registry.
const (
	ReasonNoInformation          StatusReason = 0
	ReasonLifetimeExpired        StatusReason = 1
	ReasonUnidirectionalLink     StatusReason = 2
	ReasonTransmissionCanceled   StatusReason = 3
	ReasonDepletedStorage        StatusReason = 4
	ReasonDestinationUnavailable StatusReason = 5
	ReasonNoRoute                StatusReason = 6
	ReasonNoTimelyContact        StatusReason = 7
	ReasonBlockUnintelligible    StatusReason = 8
	ReasonHopLimitExceeded       StatusReason = 9
	ReasonTrafficPared           StatusReason = 10
	ReasonBlockUnsupported       StatusReason = 11
	ReasonMissingSecurity        StatusReason = 12
	ReasonUnknownSecurity        StatusReason = 13
	ReasonUnexpectedSecurity     StatusReason = 14
	ReasonFailedSecurity         StatusReason = 15
	ReasonConflictingSecurity    StatusReason = 16
)

var reasonNames = map[StatusReason]string{
	ReasonNoInformation:          "no_information",
	ReasonLifetimeExpired:        "lifetime_expired",
	ReasonUnidirectionalLink:     "unidirectional_link",
	ReasonTransmissionCanceled:   "transmission_canceled",
	ReasonDepletedStorage:        "depleted_storage",
	ReasonDestinationUnavailable: "destination_unavailable",
	ReasonNoRoute:                "no_route",
	ReasonNoTimelyContact:        "no_timely_contact",
	ReasonBlockUnintelligible:    "block_unintelligible",
	ReasonHopLimitExceeded:       "hop_limit_exceeded",
	ReasonTrafficPared:           "traffic_pared",
	ReasonBlockUnsupported:       "block_unsupported",
	ReasonMissingSecurity:        "missing_security_service",
	ReasonUnknownSecurity:        "unknown_security_service",
	ReasonUnexpectedSecurity:     "unexpected_security_service",
	ReasonFailedSecurity:         "failed_security_service",
	ReasonConflictingSecurity:    "conflicting_security_services",
}

// String gives the reason as a short snake_case word, suitable as a metric
// label.
func (r StatusReason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason_%d", uint64(r))
}

// Error is a class of invalid bundle. The package's Err… values are all
// *Error; callers match them with errors.Is and learn the status report
// reason with ReasonOf. The detail of each occurrence is wrapped around it.
type Error struct {
	Reason StatusReason
	msg    string
}

func (e *Error) Error() string { return e.msg }

func newError(reason StatusReason, msg string) *Error { return &Error{Reason: reason, msg: msg} }

// NewError makes a new class of rejection with its status report reason,
// for packages that refuse bundles for their own reasons (policy, the
// store). Create each once, as a package-level value, and wrap it.
func NewError(reason StatusReason, msg string) *Error { return newError(reason, msg) }

// The rules a bundle can break. Each error returned by this package wraps
// exactly one of these.
var (
	ErrMalformed            = newError(ReasonBlockUnintelligible, "malformed CBOR")
	ErrNotBundle            = newError(ReasonBlockUnintelligible, "not a BPv7 bundle (it must start with a CBOR indefinite-length array)")
	ErrTrailingData         = newError(ReasonBlockUnintelligible, "data after the end of the bundle")
	ErrUnsupportedVersion   = newError(ReasonBlockUnintelligible, "unsupported bundle protocol version (only 7 is understood)")
	ErrCRCMismatch          = newError(ReasonBlockUnintelligible, "CRC mismatch")
	ErrCRCType              = newError(ReasonBlockUnintelligible, "bad CRC type")
	ErrPrimaryCRCMissing    = newError(ReasonBlockUnintelligible, "primary block has no CRC and no integrity block protects it")
	ErrBadEID               = newError(ReasonBlockUnintelligible, "malformed endpoint ID")
	ErrBadSource            = newError(ReasonBlockUnintelligible, "invalid source endpoint")
	ErrBadFlags             = newError(ReasonBlockUnintelligible, "contradictory bundle processing control flags")
	ErrFragmentFields       = newError(ReasonBlockUnintelligible, "fragment offset and total length are inconsistent")
	ErrDuplicateBlockNumber = newError(ReasonBlockUnintelligible, "duplicate block number")
	ErrDuplicateBlock       = newError(ReasonBlockUnintelligible, "block type may appear only once")
	ErrBadBlockNumber       = newError(ReasonBlockUnintelligible, "invalid block number")
	ErrPayloadNotLast       = newError(ReasonBlockUnintelligible, "payload block is not the last block")
	ErrNoPayload            = newError(ReasonBlockUnintelligible, "bundle has no payload block")
	ErrMissingAge           = newError(ReasonBlockUnintelligible, "creation time is 0 but there is no bundle age block")
	ErrBadBlockData         = newError(ReasonBlockUnintelligible, "block-type-specific data is malformed")
	ErrUnprocessableBlock   = newError(ReasonBlockUnsupported, "unsupported block asks for the bundle to be deleted")
	ErrTooLarge             = newError(ReasonDepletedStorage, "bundle exceeds the size limit")
	ErrTooManyBlocks        = newError(ReasonBlockUnintelligible, "bundle has too many blocks")
	ErrNotFragmentable      = newError(ReasonNoInformation, "bundle must not be fragmented")
	ErrIncomplete           = newError(ReasonNoInformation, "fragments do not cover the whole payload")
	ErrFragmentMismatch     = newError(ReasonNoInformation, "fragments do not belong to the same bundle")
	ErrBadAdminRecord       = newError(ReasonBlockUnintelligible, "malformed administrative record")
	ErrPayloadLength        = newError(ReasonNoInformation, "payload reader does not match the declared payload length")
)

// ReasonOf returns the status report reason carried by err, or
// ReasonNoInformation when err is not one of this package's errors.
func ReasonOf(err error) StatusReason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonNoInformation
}

// wrap attaches detail to one of the package's error values.
func wrap(kind *Error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}
