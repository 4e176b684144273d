package convergence

import (
	"errors"
	"fmt"

	"github.com/mulegate/mulegate/bundle"
)

// ErrClosed is matched by the errors of a session that has ended: Send on
// an ended session, and Session.Err.
var ErrClosed = errors.New("session closed")

// ErrStalled is matched by the error of a Send that gave up because the
// peer stopped taking the bundle: its flow control (or stream credit) let no
// byte through for the layer's stall timeout, while the session itself was
// still up. It is a transient failure, not a refusal: the peer said nothing
// against the bundle, and its store may recover, so retry with backoff. The
// peer may keep what arrived as a fragment.
var ErrStalled = errors.New("peer stopped reading")

// ErrInterrupted is matched by the error a sink's payload reader returns
// when the transfer broke off. The error is an *InterruptedError.
var ErrInterrupted = errors.New("transfer interrupted")

// InterruptedError is a transfer that broke off: the sender reset it, or the
// session ended, before the whole bundle arrived.
type InterruptedError struct {
	// Received is how many payload bytes arrived, all of which the payload
	// reader had returned before it returned this error: the sink can keep
	// them as the fragment b.Fragment(0, Received). It equals the payload
	// reader's Len() - Remaining(). When Received is the whole payload, what
	// broke off was the bundle's end (the payload CRC was not checked).
	Received uint64
	// Err is the transport's error.
	Err error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("transfer interrupted after %d payload bytes: %v", e.Received, e.Err)
}

func (e *InterruptedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInterrupted) true.
func (e *InterruptedError) Is(target error) bool { return target == ErrInterrupted }

// RejectError is a refused bundle: a sink returns one to say why it will not
// store a bundle, and a sender's Send returns one when the peer refused it.
type RejectError struct {
	// Reason is the status report reason (RFC 9171 §6.1.1).
	Reason bundle.StatusReason
	// Transient is true when the same bundle may be accepted later (the store
	// is full, a rate limit applies): retry with backoff. A fatal refusal
	// (too big, expired, forbidden, a bad signature) stops retries to this
	// peer.
	Transient bool
	// Err says what exactly was wrong.
	Err error
}

func (e *RejectError) Error() string {
	class := "fatal"
	if e.Transient {
		class = "transient"
	}
	if e.Err == nil {
		return fmt.Sprintf("bundle refused (%s, %s)", class, e.Reason)
	}
	return fmt.Sprintf("bundle refused (%s, %s): %v", class, e.Reason, e.Err)
}

func (e *RejectError) Unwrap() error { return e.Err }

// Reject returns a fatal refusal for reason.
func Reject(reason bundle.StatusReason, err error) error {
	return &RejectError{Reason: reason, Err: err}
}

// RejectTransient returns a refusal that may not hold later, such as a full
// store or a rate limit.
func RejectTransient(reason bundle.StatusReason, err error) error {
	return &RejectError{Reason: reason, Transient: true, Err: err}
}

// Classify tells how a layer reads a sink's error: the status report reason,
// and whether the refusal is transient.
//
//   - A *RejectError says so itself.
//   - An error of the bundle package (bundle.ErrCRCMismatch, …) is fatal,
//     with the reason it carries (bundle.ReasonOf).
//   - Any other error, a failed disk write or a cancelled context, names
//     nothing wrong with the bundle: it is transient, with no information.
func Classify(err error) (reason bundle.StatusReason, transient bool) {
	var rej *RejectError
	if errors.As(err, &rej) {
		return rej.Reason, rej.Transient
	}
	var be *bundle.Error
	if errors.As(err, &be) {
		return be.Reason, false
	}
	return bundle.ReasonNoInformation, true
}
