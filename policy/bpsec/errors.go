package bpsec

import (
	"errors"
	"fmt"

	"github.com/mulegate/mulegate/bundle"
)

// The kinds of verification failure. Every error this package returns while
// verifying is an *Error whose Kind is one of these, so errors.Is tells them
// apart and bundle.ReasonOf gives the status report reason. All are fatal
// for the bundle except ErrFragment, which only means "not yet".
var (
	// ErrMissingSignature: the bundle carries no integrity block over its
	// payload, and the policy requires one.
	ErrMissingSignature = bundle.NewError(bundle.ReasonMissingSecurity, "bundle is not signed")
	// ErrForgedSignature: the signature does not verify with the key of the
	// certificate it comes with, although the signed data is as the signer
	// described it: someone else made the signature.
	ErrForgedSignature = bundle.NewError(bundle.ReasonFailedSecurity, "signature does not verify with the signer's key")
	// ErrTamperedPayload: the payload differs from the one that was signed.
	ErrTamperedPayload = bundle.NewError(bundle.ReasonFailedSecurity, "payload changed since it was signed")
	// ErrTamperedPrimary: the primary block (or the metadata of the payload or
	// integrity block, which the signature also covers) differs from what
	// was signed.
	ErrTamperedPrimary = bundle.NewError(bundle.ReasonFailedSecurity, "primary block changed since it was signed")
	// ErrIntegrity: a BIB-HMAC-SHA2 message authentication code does not
	// match; a MAC cannot tell which part changed, or whether the key is
	// wrong.
	ErrIntegrity = bundle.NewError(bundle.ReasonFailedSecurity, "message authentication code does not match")
	// ErrUntrustedSigner: the signer's certificate does not chain to a
	// trusted CA, is not individually trusted, is not pinned, or there is no
	// shared key for its security source.
	ErrUntrustedSigner = bundle.NewError(bundle.ReasonFailedSecurity, "signer not trusted")
	// ErrExpiredSigner: the signer's certificate (or one in its chain) is
	// expired or not yet valid.
	ErrExpiredSigner = bundle.NewError(bundle.ReasonFailedSecurity, "signer's certificate expired or not yet valid")
	// ErrSignerMismatch: the certificate names another node than the
	// integrity block's security source, or that source is not the bundle's
	// source: the signature is not the original sender's.
	ErrSignerMismatch = bundle.NewError(bundle.ReasonFailedSecurity, "signer is not the bundle's source")
	// ErrMalformedSecurity: an integrity block cannot be parsed, or breaks a
	// rule of RFC 9172 or of its security context.
	ErrMalformedSecurity = bundle.NewError(bundle.ReasonBlockUnintelligible, "malformed security block")
	// ErrUnsupportedSecurity: a security context, algorithm or parameter this
	// node does not implement.
	ErrUnsupportedSecurity = bundle.NewError(bundle.ReasonUnknownSecurity, "unsupported security context or parameter")
	// ErrConflictingSecurity: more than one integrity block targets the same
	// block (RFC 9172 §3.2 forbids it).
	ErrConflictingSecurity = bundle.NewError(bundle.ReasonConflictingSecurity, "conflicting security blocks")
	// ErrFragment: a fragment's signature can only be checked once the bundle
	// is reassembled. Not a refusal: store the fragment, verify the whole.
	ErrFragment = bundle.NewError(bundle.ReasonNoInformation, "a fragment cannot be verified before reassembly")
)

// Error is a verification failure: its kind, the integrity block at fault,
// what exactly was wrong, and the underlying error (an
// *identity.VerifyError for certificate problems).
type Error struct {
	Kind   *bundle.Error // one of this package's Err values
	Block  uint64        // the integrity block's number; 0 when none is at fault
	Reason string        // for people
	Err    error
}

func (e *Error) Error() string {
	s := e.Kind.Error()
	if e.Block != 0 {
		s = fmt.Sprintf("%s (block %d)", s, e.Block)
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap lets errors.Is match both the kind and the underlying error. The
// kind comes first, so bundle.ReasonOf gives the kind's reason.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func fail(kind *bundle.Error, block uint64, format string, args ...any) *Error {
	return &Error{Kind: kind, Block: block, Reason: fmt.Sprintf(format, args...)}
}

func failErr(kind *bundle.Error, block uint64, err error, format string, args ...any) *Error {
	return &Error{Kind: kind, Block: block, Reason: fmt.Sprintf(format, args...), Err: err}
}

// kindOf returns the *Error in err's chain, if any.
func kindOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
