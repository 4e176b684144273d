package gateway

import (
	"errors"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/policy"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/bpsec"
	"github.com/mulegate/mulegate/policy/identity"
	"github.com/mulegate/mulegate/policy/ratelimit"
)

// kinds name each refusal for the metrics' kind label. BPv7 status report
// reasons are few (an expired bundle and one from the future share
// "no information"), so the kind tells the operator which rule refused a
// bundle or a peer.
var kinds = []struct {
	err  error
	name string
}{
	{policy.ErrTooLarge, "too_large"},
	{policy.ErrExpired, "expired"},
	{store.ErrExpired, "expired"},
	{policy.ErrLifetimeTooLong, "lifetime_too_long"},
	{policy.ErrHopLimitExceeded, "hop_limit_exceeded"},
	{policy.ErrFromTheFuture, "creation_time_in_future"},
	{bpsec.ErrMissingSignature, "unsigned"},
	{bpsec.ErrForgedSignature, "forged_signature"},
	{bpsec.ErrTamperedPayload, "tampered_payload"},
	{bpsec.ErrTamperedPrimary, "tampered_primary_block"},
	{bpsec.ErrIntegrity, "integrity_check_failed"},
	{bpsec.ErrUntrustedSigner, "untrusted_signer"},
	{bpsec.ErrExpiredSigner, "expired_signer"},
	{bpsec.ErrSignerMismatch, "signer_not_source"},
	{bpsec.ErrMalformedSecurity, "malformed_security_block"},
	{bpsec.ErrUnsupportedSecurity, "unsupported_security"},
	{bpsec.ErrConflictingSecurity, "conflicting_security"},
	{ErrFragmentUnverifiable, "fragment_unverifiable"},
	{acl.ErrPeerDenied, "peer_denied"},
	{acl.ErrSenderDenied, "sender_denied"},
	{ratelimit.ErrRateLimited, "rate_limited"},
	{store.ErrFull, "store_full"},
	{ErrDelivered, "already_delivered"},
	{identity.ErrUntrusted, "untrusted_certificate"},
	{identity.ErrExpired, "expired_certificate"},
	{identity.ErrNotYetValid, "certificate_not_yet_valid"},
	{identity.ErrPinMismatch, "pinned_key_mismatch"},
	{identity.ErrNotPinned, "node_not_met"},
	{identity.ErrNodeIDMismatch, "node_id_mismatch"},
	{identity.ErrNoCertificate, "no_certificate"},
	{identity.ErrBadSelfSignature, "bad_self_signature"},
	{identity.ErrKeyUsage, "certificate_key_usage"},
	{bundle.ErrCRCMismatch, "crc_mismatch"},
	{bundle.ErrUnprocessableBlock, "unprocessable_block"},
}

// kindOf names the rule behind a refusal; an error of no known kind is
// named by its status report reason.
func kindOf(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return bundle.ReasonOf(err).String()
}
