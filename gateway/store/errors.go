package store

import (
	"errors"
	"strings"
	"syscall"

	"github.com/mulegate/mulegate/bundle"
)

// The kinds of failure. Every error the store returns is an *Error whose
// Kind is one of these, so callers branch with errors.Is(err, store.ErrFull)
// and people read the whole chain.
var (
	// ErrDuplicate: the store holds this bundle, or held it and deleted it
	// (a tombstone remembers it until its lifetime ends). Reported before
	// any payload byte is read.
	ErrDuplicate = errors.New("duplicate bundle")
	// ErrInProgress: another reception (or resumption) of this bundle is
	// under way. errors.Is(err, ErrDuplicate) is true for it as well, so a
	// caller that only tells "have it" from "want it" needs one check.
	ErrInProgress = errors.New("bundle is being received")
	// ErrFull: the byte or bundle quota would be exceeded, or the disk is
	// full. bundle.ReasonOf(err) is bundle.ReasonDepletedStorage.
	ErrFull = errors.New("store full")
	// ErrNotFound: no such bundle (or progress record). A partial reception
	// is not a bundle: Get and OpenPayload do not find it.
	ErrNotFound = errors.New("not found")
	// ErrExpired: the bundle's lifetime is over, so it is not stored.
	// bundle.ReasonOf(err) is bundle.ReasonLifetimeExpired.
	ErrExpired = errors.New("bundle lifetime expired")
	// ErrCorrupt: a payload does not match its size or checksum. The store
	// has quarantined it.
	ErrCorrupt = errors.New("payload corrupt")
	// ErrIncomplete: fewer payload bytes than the bundle declares.
	ErrIncomplete = errors.New("payload incomplete")
	// ErrTooLong: more payload bytes than the bundle declares.
	ErrTooLong = errors.New("payload longer than declared")
	// ErrState: a progress transition that the state machine does not
	// allow, such as done → in_flight.
	ErrState = errors.New("invalid progress transition")
	// ErrInvalid: a bad argument, such as an empty destination name.
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed: the store or the writer is closed.
	ErrClosed = errors.New("closed")
	// ErrIO: the disk or the index failed; the cause is wrapped.
	ErrIO = errors.New("I/O error")
)

// Error is a failed store operation: what was being done, what kind of
// failure, to which bundle, and why.
type Error struct {
	Op     string // the operation: "put", "commit", "get", "delete", …
	Kind   error  // one of the Err… values of this package
	ID     string // the bundle ID (bundle.ID.String()), or ""
	Detail string // more about this occurrence, for people
	Err    error  // the underlying error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("store: ")
	b.WriteString(e.Op)
	if e.ID != "" {
		b.WriteString(" ")
		b.WriteString(e.ID)
	}
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Detail != "" {
		b.WriteString(" (")
		b.WriteString(e.Detail)
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Is makes ErrInProgress match ErrDuplicate too.
func (e *Error) Is(target error) bool {
	return e.Kind == ErrInProgress && target == ErrDuplicate
}

// As lets bundle.ReasonOf see the status report reason of the kinds that
// have one (ErrFull: depleted storage; ErrExpired: lifetime expired).
func (e *Error) As(target any) bool {
	t, ok := target.(**bundle.Error)
	if !ok {
		return false
	}
	be, ok := kindReason[e.Kind]
	if !ok {
		return false
	}
	*t = be
	return true
}

// kindReason gives the kinds that have a status report reason their
// bundle.Error, so bundle.ReasonOf sees through a store error.
var kindReason = map[error]*bundle.Error{
	ErrFull:    bundle.NewError(bundle.ReasonDepletedStorage, "store full"),
	ErrExpired: bundle.NewError(bundle.ReasonLifetimeExpired, "bundle lifetime expired"),
}

// Reason is the status report reason of err: depleted storage for
// ErrFull, lifetime expired for ErrExpired, otherwise bundle.ReasonOf(err).
// It is the same as bundle.ReasonOf, which sees through *Error.
func Reason(err error) bundle.StatusReason { return bundle.ReasonOf(err) }

func newErr(op string, kind error, id string, detail string, cause error) *Error {
	return &Error{Op: op, Kind: kind, ID: id, Detail: detail, Err: cause}
}

// ioErr classifies an I/O failure: a full disk is ErrFull, anything else is
// passed through as the cause of an error of the given kind.
func ioErr(op, id string, err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return newErr(op, ErrFull, id, "disk full", err)
	}
	return &Error{Op: op, Kind: ErrIO, ID: id, Err: err}
}
