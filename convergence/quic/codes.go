package quic

import (
	"context"
	"errors"
	"fmt"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
)

// Code is a Qubicle application error code, carried in QUIC's
// CONNECTION_CLOSE, RESET_STREAM and STOP_SENDING frames.
type Code uint64

// The codes of draft-ek-dtn-qubicle's "Qubicle Error Codes" registry, as
// draft -02 has it (0x00 and 0x01 are the same in every revision).
const (
	CodeNoError                  Code = 0x00 // QBCL_NO_ERROR: orderly close (connections only)
	CodeProtocolError            Code = 0x01 // QBCL_PROTOCOL_ERROR: the peer broke the protocol
	CodeTransferCancelled        Code = 0x02 // QBCL_TRANSFER_CANCELLED: no more specific reason
	CodeBundleTooLarge           Code = 0x03 // QBCL_BUNDLE_TOO_LARGE: over the receiver's size limit
	CodeStorageExhausted         Code = 0x04 // QBCL_STORAGE_EXHAUSTED: not now; retry later
	CodeShuttingDown             Code = 0x05 // QBCL_SHUTTING_DOWN: closing with transfers in progress
	CodeLengthRequired           Code = 0x06 // QBCL_LENGTH_REQUIRED: direct form refused (never sent by mulegate)
	CodeUnsupportedBundleVersion Code = 0x07 // QBCL_UNSUPPORTED_BUNDLE_VERSION: e.g. BPv6
)

// CodeRefused is the first of the codes mulegate takes from the registry's
// private-use range 0xF0-0xFF: a receiver refusing a bundle for good with
// status report reason r (RFC 9171 §6.1.1) stops the stream with
// CodeRefused+r, for r from 0 to 15. Reason 16 and above, which do not fit,
// travel as CodeRefused (no information). A peer that does not know these
// codes reads them as QBCL_TRANSFER_CANCELLED, as the draft asks.
const CodeRefused Code = 0xF0

var codeNames = map[Code]string{
	CodeNoError:                  "QBCL_NO_ERROR",
	CodeProtocolError:            "QBCL_PROTOCOL_ERROR",
	CodeTransferCancelled:        "QBCL_TRANSFER_CANCELLED",
	CodeBundleTooLarge:           "QBCL_BUNDLE_TOO_LARGE",
	CodeStorageExhausted:         "QBCL_STORAGE_EXHAUSTED",
	CodeShuttingDown:             "QBCL_SHUTTING_DOWN",
	CodeLengthRequired:           "QBCL_LENGTH_REQUIRED",
	CodeUnsupportedBundleVersion: "QBCL_UNSUPPORTED_BUNDLE_VERSION",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	if c >= CodeRefused && c <= CodeRefused+0x0F {
		return fmt.Sprintf("refused(%s)", bundle.StatusReason(c-CodeRefused))
	}
	return fmt.Sprintf("qbcl(%#x)", uint64(c))
}

// refusalCode is the code a receiver stops a stream with when err refused
// the bundle in it.
func refusalCode(err error) Code {
	reason, transient := convergence.Classify(err)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return CodeTransferCancelled
	case transient:
		return CodeStorageExhausted
	case errors.Is(err, bundle.ErrTooLarge):
		return CodeBundleTooLarge
	case reason <= 0x0F:
		return CodeRefused + Code(reason)
	}
	return CodeRefused
}

// rejection is how a sender reads the code a receiver stopped its stream
// with.
func rejection(c Code, cause error) *convergence.RejectError {
	rej := &convergence.RejectError{Reason: bundle.ReasonNoInformation, Err: fmt.Errorf("peer stopped the stream with %v: %w", c, cause)}
	switch {
	case c == CodeBundleTooLarge:
		rej.Reason = bundle.ReasonDepletedStorage
		rej.Err = fmt.Errorf("%w: peer stopped the stream with %v (%w)", bundle.ErrTooLarge, c, cause)
	case c == CodeStorageExhausted:
		rej.Reason, rej.Transient = bundle.ReasonDepletedStorage, true
	case c == CodeProtocolError:
		rej.Reason = bundle.ReasonBlockUnintelligible
	case c == CodeLengthRequired, c == CodeUnsupportedBundleVersion:
		// fatal, no information
	case c >= CodeRefused && c <= CodeRefused+0x0F:
		rej.Reason = bundle.StatusReason(c - CodeRefused)
	default:
		// QBCL_TRANSFER_CANCELLED, QBCL_SHUTTING_DOWN, QBCL_NO_ERROR (not
		// allowed on streams) and codes this side does not know: the draft
		// reads them all as a cancelled transfer, which may go through later.
		rej.Transient = true
	}
	return rej
}
