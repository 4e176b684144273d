// Package bpsec signs bundles and verifies their signatures (Bundle
// Protocol Security, RFC 9172), offline, against the node's trusted roots.
//
// A signature is a Block Integrity Block (block type 11) whose one target is
// the payload block. Two security contexts are implemented:
//
//   - COSE (context ID 3, draft-ietf-dtn-bpsec-cose): an Ed25519 COSE_Sign1
//     carrying the signer's X.509 chain, so any node trusting the group CA
//     can tell who sent a bundle. This is what mulegate nodes sign with.
//   - BIB-HMAC-SHA2 (context ID 1, RFC 9173 §3): a MAC with a shared key,
//     for interoperation; checked byte for byte against RFC 9173 Appendix
//     A.1 and A.4.
//
// # What a COSE signature covers
//
// The Ed25519 signature is over the COSE Sig_structure (RFC 9052 §4.4),
// ["Signature1", body_protected, external_aad, payload], where
//
//	body_protected  {1: -8 (EdDSA), 2 (crit): [258], 258: -16 (SHA-256)}
//	payload         SHA-256 of the payload block's data (the payload bytes,
//	                without the byte-string head): a COSE Hash Envelope
//	                (RFC 9995, formerly draft-ietf-cose-hash-envelope; header
//	                258), detached as the context requires
//	external_aad    the CBOR sequence of draft-ietf-dtn-bpsec-cose §2.5.1:
//	  1. the security source, [scheme, ssp]: the bundle source's node ID
//	  2. the AAD scope, {0: 1, -1: 1, -2: 1}, deterministically encoded
//	  3. the primary block, re-encoded from its fields (RFC 9171 §4.3.1,
//	     CRC included): version, flags, CRC type, destination, source,
//	     report-to, creation timestamp, lifetime, fragment fields
//	  4. the payload block's type code, number and flags: 1, 1, flags
//	  5. the integrity block's type code, number and flags: 11, N, 1
//	  6. the additional-protected parameter as a byte string: the header
//	     map {33 (x5chain): the signer's certificate chain}
//
// Not covered, so free to change in transit: the previous node (6), bundle
// age (7) and hop count (10) blocks and any other extension block, the
// order of blocks, every CRC type and value, and the COSE unprotected
// header. Changing anything covered — one payload byte, a primary block
// field, the payload block's flags, the certificates — makes verification
// fail.
//
// The payload is hashed, not signed directly, because pure Ed25519 must read
// its message twice to sign it and Go's crypto/ed25519 needs it in memory to
// verify: a 1 GiB payload would have to sit in memory. With the hash
// envelope the payload streams once through SHA-256 on each side, and the
// signature covers a 32-byte digest. COSE defines no pre-hashed EdDSA
// (Ed25519ph is not registered for COSE); the hash envelope is the
// registered way to sign a digest. 258 is marked critical so that a verifier
// that does not understand it refuses the signature instead of checking it
// against the payload bytes. This node verifies hash envelopes only: a
// COSE_Sign1 over the whole payload is refused as unsupported
// (ErrUnsupportedSecurity).
//
// github.com/veraison/go-cose v1.3.0 makes and checks the COSE_Sign1
// (UntaggedSign1Message, EdDSA, external AAD, detached payload); it fits as
// is. This package builds the external AAD, the BPSec blocks and the
// streaming around it.
//
// # What a BIB-HMAC-SHA2 MAC covers
//
// The integrity-protected plaintext of RFC 9173 §3.7: the scope flags as a
// CBOR unsigned integer; the primary block (re-encoded), the payload's type,
// number and flags, and the BIB's type, number and flags, each if its scope
// flag is set; then the payload as a CBOR byte string (head, then bytes),
// streamed into the HMAC. Wrapped keys (AES key wrap) are not implemented.
//
// # Streaming
//
// Signing: Sign(b, payload, key) reads the payload once and adds the BIB to
// b; the caller then encodes b, reading the payload again. A node that
// writes the payload to its store first can instead write it through
// NewSigning's Signing (an io.Writer) and call Finish before it writes the
// header.
//
// Verifying while storing: Verifier.Start(b) does everything the header
// allows — finds and parses the BIB, authenticates the certificate chain,
// checks the signer is the bundle's source — and so refuses bad bundles
// before any payload byte is read. The node learns the signer (Check.Signer,
// Check.Principal) and can apply the sender ACL and rate limits, then tees
// the payload into the Check as it streams into the store, and calls Finish
// after the last byte and before committing: the store's writer lets the
// node decide then.
//
//	chk, err := verifier.Start(b)         // after policy.Limits.Check
//	if err != nil { refuse(err) }          // bundle.ReasonOf(err) for the report
//	p := chk.Principal()                   // signer, or acl.Claimed(source) if unsigned
//	if err := a.CheckSender(p); err != nil { refuse(err) }
//	if err := limits.Senders.Allow(p, size); err != nil { retryLater(err) }
//	_, err = io.Copy(io.MultiWriter(storeWriter, chk), payload)
//	if _, err := chk.Finish(); err != nil { abort(err) } // do not commit, do not ack
//	commit()
//
// # Trust
//
// Signers are authenticated by identity.Trust, offline: a chain to a trusted
// group CA (the member name campfire/alice then comes with it), or an
// individually trusted certificate. Under trust-on-first-use a signature is
// accepted only from a node whose key was pinned by a direct connection;
// verifying a signature never pins, or anyone could claim a node ID by
// having a mule carry a bundle before its owner ever connects.
//
// The signer must be the bundle's source: the BIB's security source must be
// the source's node (ErrSignerMismatch), and the certificate must carry that
// node ID. The COSE draft validates certificates at the bundle's creation
// time; identity.Trust validates at the current time, which is stricter
// (a bundle signed shortly before its signer's certificate expired is
// refused once it has expired).
//
// # Failures
//
// Every failure is an *Error whose Kind is one of the Err values, each with
// its status report reason: ErrMissingSignature (missing security service),
// ErrForgedSignature, ErrTamperedPayload, ErrTamperedPrimary, ErrIntegrity,
// ErrUntrustedSigner, ErrExpiredSigner, ErrSignerMismatch (failed security
// service), ErrMalformedSecurity (block unintelligible),
// ErrUnsupportedSecurity (unknown security service), ErrConflictingSecurity
// (conflicting security services), and ErrFragment (no information; verify
// after reassembly). A signature that does not verify cannot itself say
// what changed; the signer adds, unprotected, the SHA-256 of the external
// AAD and of the payload it signed, and a failed verification compares them
// to tell a tampered payload from a tampered primary block from a forged
// signature. Those digests only choose which failure is reported: nothing
// unverified can make a bundle pass.
//
// # Fragments
//
// A fragment's primary block and payload differ from the signed ones, so a
// signature is checked on the reassembled bundle (ErrFragment until then).
// The COSE BIB is flagged "replicate in every fragment" so that any
// fragment brings it along.
package bpsec
