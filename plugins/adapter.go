// Package plugins is the adapter contract: the Go interface that a mulegate
// node and its delivery adapters both program against, and the gRPC glue
// (grpc.go) that carries it across the process boundary.
//
// An adapter delivers bundles to one kind of service (a directory, S3, NATS,
// SMTP) and fetches inbound messages waiting for the disconnected side. It
// runs as its own process under hashicorp/go-plugin, so a crash in an adapter
// never takes the node down and an adapter can be written in any language
// (proto/adapter.proto is the wire contract). The node side is in
// plugins/host; adapter authors import plugins/sdk.
//
// The same Adapter value works in process and out of process: host.Manager
// hands out an Adapter that forwards to the adapter's process, and tests or
// benchmarks can call an adapter's implementation directly.
package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Adapter is implemented by every delivery adapter. All methods may be called
// concurrently. Every method takes the caller's context; an adapter stops
// work and returns when it is cancelled.
type Adapter interface {
	// Describe tells the adapter's type name, version and capabilities. It
	// works before Configure.
	Describe(ctx context.Context) (Description, error)

	// Configure validates the adapter's own configuration block (a JSON
	// object) and, if it is valid, puts it in force. Problems with the block
	// come back as ConfigErrors, one per offending key; any other error means
	// the call itself failed. With errors the previous configuration, if any,
	// stays in force.
	Configure(ctx context.Context, config json.RawMessage) error

	// Check returns nil when the service is reachable right now, and an error
	// wrapping ErrUnreachable (with the reason) when it is not. The node polls
	// it to know whether it has connectivity for this adapter.
	Check(ctx context.Context) error

	// Deliver hands over one bundle. payload yields exactly meta.PayloadLength
	// bytes and then io.EOF; any other error from it means the bundle did not
	// arrive whole and must not be committed. Deliver is idempotent on
	// meta.BundleID: the same bundle may be delivered again and must land in
	// the same place.
	Deliver(ctx context.Context, meta Meta, payload io.Reader) Result

	// Fetch offers inbound messages to fn, one at a time, up to the limits in
	// req, waiting up to req.Wait for a first one. fn consumes the message's
	// payload before it returns. When fn returns ErrFetchLimit the message was
	// not taken and Fetch should stop and return nil; any other error from fn
	// aborts the fetch and Fetch returns it. A message handed to fn stays
	// upstream until Ack or Nack of its receipt. Adapters without inbound
	// messages return ErrUnsupported.
	Fetch(ctx context.Context, req FetchRequest, fn func(Inbound) error) error

	// Ack tells the adapter that the node stored the message with this receipt
	// durably; only now may the adapter remove it upstream. Acking a receipt
	// whose message is already gone returns nil.
	Ack(ctx context.Context, receipt string) error

	// Nack tells the adapter that the node could not take the message (reason
	// says why); the adapter keeps it and offers it again later.
	Nack(ctx context.Context, receipt, reason string) error
}

// Rejecter is implemented by adapters that can set an inbound message
// aside for good. It is optional, and not part of Adapter, so that adapters
// written before it still build: the node asks for it with a type assertion
// (and over gRPC, an adapter without it answers UNIMPLEMENTED, which the
// node's side reads as ErrUnsupported).
type Rejecter interface {
	// Reject tells the adapter that the node refuses the message with this
	// receipt for good (reason says why, for the operator): it can never
	// become a bundle on this node, so offering it again would only fail
	// again. The adapter moves the message out of its inbound queue to
	// where an operator can find it, with the reason, and never offers it
	// again; it does not delete it. Rejecting a receipt whose message is
	// already gone returns nil. An adapter that has nowhere to put such a
	// message returns ErrUnsupported, and the node falls back to Nack.
	Reject(ctx context.Context, receipt, reason string) error
}

// Description is what Describe returns.
type Description struct {
	// Name is the adapter's type name, e.g. "dir".
	Name string
	// Version is the adapter's own version, free form.
	Version string
	// Deliver and Fetch tell which halves of the contract it implements.
	Deliver, Fetch bool
}

// Meta is a bundle's metadata as an adapter sees it: plain fields, so that
// adapters need not understand BPv7. Endpoint IDs are in URI form
// ("dtn://node/service", "ipn:2.1").
type Meta struct {
	// BundleID is the bundle's stable identity and the idempotency key. It may
	// contain characters that are unsafe in file names or subjects.
	BundleID string
	// Source, Destination and ReportTo are endpoint IDs.
	Source, Destination, ReportTo string
	// CreationTime is milliseconds since the DTN epoch (2000-01-01 UTC); 0
	// when the source had no clock. Sequence is the timestamp's sequence
	// number.
	CreationTime, Sequence uint64
	// Lifetime is how long after creation the bundle expires.
	Lifetime time.Duration
	// PayloadLength is the exact size of the payload handed to Deliver.
	PayloadLength int64
	// Flags are the primary block's bundle processing control flags.
	Flags uint64
	// HopCount and HopLimit come from the hop-count block; both 0 without one.
	HopCount, HopLimit uint32
	// SignatureStatus is the node's verdict on the bundle's signature, e.g.
	// "valid:campfire/alice"; empty when not checked.
	SignatureStatus string
	// Route is the name of the route that chose this adapter.
	Route string
	// Options are the route's options for this bundle, templates already
	// expanded. Each adapter documents the keys it reads.
	Options map[string]string
}

// Created returns the creation time as a time.Time; the zero Time when the
// source had no clock.
func (m Meta) Created() time.Time {
	if m.CreationTime == 0 {
		return time.Time{}
	}
	// DTN time starts at 2000-01-01 UTC (RFC 9171 section 4.2.6).
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	return epoch.Add(time.Duration(m.CreationTime) * time.Millisecond)
}

// Status is the outcome of a delivery.
type Status int

const (
	// Retry is a transient failure: the node tries again later. It is the
	// zero value so that an unset status is never mistaken for success.
	Retry Status = iota
	// OK means the service has the bundle.
	OK
	// Reject is a permanent failure: the node stops trying this bundle on
	// this adapter and reports it.
	Reject
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Retry:
		return "retry"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the answer to Deliver. A node-side failure to get an answer (the
// adapter process died, the call was cancelled) is a Retry with Err set.
type Result struct {
	Status Status
	// RetryAfter is, for Retry, the earliest the adapter wants to see the
	// bundle again; 0 lets the node pick its own backoff.
	RetryAfter time.Duration
	// Reason explains Retry and Reject, for logs and status reports.
	Reason string
	// Err is the error behind a Retry that the node side made up because the
	// adapter could not answer; errors.Is(Err, ErrUnavailable) tells that the
	// adapter process was down. Nil when the adapter answered.
	Err error
}

// Delivered returns the Result for a successful delivery.
func Delivered() Result { return Result{Status: OK} }

// RetryLater returns a Retry Result; after may be 0.
func RetryLater(after time.Duration, reason string) Result {
	return Result{Status: Retry, RetryAfter: after, Reason: reason}
}

// Rejected returns a Reject Result.
func Rejected(reason string) Result { return Result{Status: Reject, Reason: reason} }

// failed turns an error into a Retry Result that carries it.
func failed(err error) Result {
	return Result{Status: Retry, Reason: err.Error(), Err: err}
}

func (r Result) String() string {
	s := r.Status.String()
	if r.RetryAfter > 0 {
		s += " after " + r.RetryAfter.String()
	}
	if r.Reason != "" {
		s += ": " + r.Reason
	}
	return s
}

// FetchRequest bounds one Fetch.
type FetchRequest struct {
	// MaxMessages caps the number of messages; 0 means 1.
	MaxMessages int
	// MaxBytes caps the total payload bytes; Fetch stops before a message
	// that would go over it. 0 means no cap.
	MaxBytes int64
	// Wait is how long to wait for a first message when none is ready.
	Wait time.Duration
}

// Inbound is one message offered by Fetch.
type Inbound struct {
	// Receipt identifies the message in Ack and Nack; opaque to the node.
	Receipt string
	// MessageID is the message's stable upstream identity, the same each time
	// it is offered; empty when the service has none.
	MessageID string
	// Destination is the EID the node addresses the new bundle to.
	Destination string
	// Source is the EID to use as the bundle's source; empty means the node's
	// own.
	Source string
	// Lifetime is the bundle lifetime to use; 0 means the node's default.
	Lifetime time.Duration
	// Headers carry what else the service knows (subject, file name, ...).
	Headers map[string]string
	// PayloadLength is the exact size of Payload.
	PayloadLength int64
	// Payload yields exactly PayloadLength bytes. On the node side it is only
	// valid until fn returns.
	Payload io.Reader
}

// ConfigError is one problem with an adapter's configuration block.
type ConfigError struct {
	// Key is the dotted path of the offending key ("out", "tls.ca_file");
	// empty when the block as a whole is wrong.
	Key string
	// Message says what is wrong and how to fix it.
	Message string
}

func (e ConfigError) Error() string {
	if e.Key == "" {
		return e.Message
	}
	return e.Key + ": " + e.Message
}

// ConfigErrors is the error Configure returns for an invalid block. Find it
// with errors.As.
type ConfigErrors []ConfigError

func (es ConfigErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

// Add appends a problem with key and returns the list, for building errors
// in a validation function.
func (es ConfigErrors) Add(key, format string, args ...any) ConfigErrors {
	return append(es, ConfigError{Key: key, Message: fmt.Sprintf(format, args...)})
}

// Has tells whether es already holds a problem with key, so that a
// validation step can skip keys that failed to decode.
func (es ConfigErrors) Has(key string) bool {
	for _, e := range es {
		if e.Key == key {
			return true
		}
	}
	return false
}

// Err returns es as an error, or nil when it is empty, so that a validation
// function can end with `return errs.Err()` without returning a non-nil
// interface holding an empty list.
func (es ConfigErrors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Errors every side of the contract uses. Callers test them with errors.Is;
// the wire carries them as gRPC status codes (see adapter.proto).
var (
	// ErrUnsupported: the adapter lacks this capability.
	ErrUnsupported = errors.New("not supported by this adapter")
	// ErrNotConfigured: Configure has not succeeded yet.
	ErrNotConfigured = errors.New("adapter is not configured")
	// ErrUnknownReceipt: Ack, Nack or Reject of a receipt the adapter does
	// not know.
	ErrUnknownReceipt = errors.New("unknown receipt")
	// ErrInvalid: a malformed request.
	ErrInvalid = errors.New("invalid request")
	// ErrUnreachable: the service cannot be reached right now; try later.
	ErrUnreachable = errors.New("service unreachable")
	// ErrUnavailable: the adapter process is not running (it crashed, is
	// restarting, or the node is shutting down). Always worth a retry.
	ErrUnavailable = errors.New("adapter unavailable")
	// ErrFetchLimit: returned by the fn given to Fetch when the message would
	// go over the request's limits; it was not taken.
	ErrFetchLimit = errors.New("fetch limit reached")
)
