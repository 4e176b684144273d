// Package control encodes the administrative records mulegate nodes exchange
// with each other while they are in contact: summary vectors (which bundles a
// node holds, which it holds in part, and which it knows were delivered) and
// signed delivery notices. It does no I/O and keeps no state.
//
// Both records travel as BPv7 administrative records (RFC 9171 §6.1), in a
// bundle from one node's ID to the other's, with record type codes in the
// private-use range.
package control

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/fxamacker/cbor/v2"
	"github.com/mulegate/mulegate/bundle"
)

// Administrative record types used between mulegate nodes. They are in the
// private-use range (65536 and above), pending IANA registration.
const (
	RecordSummary bundle.AdminRecordType = 65536
)

// Digest is a compact name for a bundle ID: the first 16 bytes of the
// SHA-256 of its string form. 128 bits make a collision among even millions
// of bundles negligible, and keep a summary of 100,000 bundles at 1.6 MB.
type Digest [16]byte

// DigestOf names id.
func DigestOf(id bundle.ID) Digest {
	sum := sha256.Sum256([]byte(id.String()))
	var d Digest
	copy(d[:], sum[:16])
	return d
}

func (d Digest) String() string { return fmt.Sprintf("%x", d[:]) }

// Partial is a bundle a node holds in part, so that a peer that has all of
// it sends only the missing range (reactive fragmentation).
type Partial struct {
	Digest   Digest
	Received uint64 // payload bytes held, from offset 0
}

// Summary is one summary vector. A node sends a full summary when a contact
// starts and then deltas. Deltas are cumulative since the last full summary
// of the same epoch, so a receiver may apply them in any order: it keeps
// the highest sequence it has seen and ignores older ones. This matters
// because QUIC delivers each bundle on its own stream, in no fixed order.
type Summary struct {
	// Epoch identifies the sender's current full summary; a new full
	// summary starts a new epoch.
	Epoch uint64
	// Seq orders the summaries of one epoch; the full one is 0.
	Seq  uint64
	Full bool
	// Held lists what the sender holds (Full) or has gained since the
	// epoch's full summary (delta).
	Held []Digest
	// Dropped lists what the sender held in the full summary but no longer
	// holds (delta only).
	Dropped  []Digest
	Partials []Partial
	// Notices are delivery notices the sender knows of.
	Notices []Notice
	// Refused lists bundles the receiver of this summary sent the sender,
	// and the sender refused after reading them whole. A refusal made while
	// the bundle is still arriving reaches its sender at once (the
	// convergence layer stops the stream), but one made at its end (a
	// signature is checked over the whole payload) can come after the
	// sender's transport has already reported the bundle sent. The summary
	// is how the sender learns of it, and stops offering the bundle.
	Refused []Refusal
	// WantFull asks the receiver to send a full summary next: a delta of
	// its arrived for an epoch whose full summary the sender never got
	// (it came before the sender's side of the contact was ready, say), and
	// deltas alone can never make up for it.
	WantFull bool
}

// Refusal is a bundle a node refused from the peer it sends the summary to.
type Refusal struct {
	Digest Digest
	// Reason is the status report reason (RFC 9171 §6.1.1).
	Reason bundle.StatusReason
	// Transient is true when the bundle may be accepted later (a full
	// store, a rate limit): the sender retries after a backoff. Otherwise
	// the sender gives up on this peer for this bundle.
	Transient bool
}

// summaryWire is Summary on the wire: digests packed into byte strings.
type summaryWire struct {
	_        struct{} `cbor:",toarray"`
	Version  uint64
	Epoch    uint64
	Seq      uint64
	Full     bool
	Held     []byte
	Dropped  []byte
	Partials []partialWire
	Notices  []cbor.RawMessage
	Refused  []refusalWire
	WantFull bool
}

type refusalWire struct {
	_         struct{} `cbor:",toarray"`
	Digest    []byte
	Reason    uint64
	Transient bool
}

type partialWire struct {
	_        struct{} `cbor:",toarray"`
	Digest   []byte
	Received uint64
}

// summaryVersion 2 added Refused and WantFull. Nodes of different versions ignore each
// other's summaries (and log why), so they still exchange bundles but
// resend what the peer already holds once per contact.
const summaryVersion = 2

var (
	encMode, _ = cbor.CoreDetEncOptions().EncMode()
	decMode, _ = cbor.DecOptions{MaxArrayElements: 1 << 20, MaxNestedLevels: 8, MaxMapPairs: 64}.DecMode()
)

// ErrMalformed is returned for a record that cannot be decoded.
var ErrMalformed = errors.New("malformed mulegate control record")

// MarshalSummary encodes s as an administrative record payload.
func MarshalSummary(s Summary) ([]byte, error) {
	w := summaryWire{Version: summaryVersion, Epoch: s.Epoch, Seq: s.Seq, Full: s.Full, Held: packDigests(s.Held), Dropped: packDigests(s.Dropped), WantFull: s.WantFull}
	for _, p := range s.Partials {
		w.Partials = append(w.Partials, partialWire{Digest: p.Digest[:], Received: p.Received})
	}
	for _, n := range s.Notices {
		enc, err := n.marshal()
		if err != nil {
			return nil, err
		}
		w.Notices = append(w.Notices, enc)
	}
	for _, r := range s.Refused {
		w.Refused = append(w.Refused, refusalWire{Digest: r.Digest[:], Reason: uint64(r.Reason), Transient: r.Transient})
	}
	return bundle.MarshalAdminRecord(RecordSummary, w)
}

// UnmarshalSummary decodes a summary from an administrative record's
// content. Notices are decoded but not verified: see Notice.Verify.
func UnmarshalSummary(content []byte) (Summary, error) {
	var w summaryWire
	if err := decMode.Unmarshal(content, &w); err != nil {
		return Summary{}, fmt.Errorf("%w: summary: %v", ErrMalformed, err)
	}
	if w.Version != summaryVersion {
		return Summary{}, fmt.Errorf("%w: summary version %d (this node speaks %d)", ErrMalformed, w.Version, summaryVersion)
	}
	s := Summary{Epoch: w.Epoch, Seq: w.Seq, Full: w.Full, WantFull: w.WantFull}
	var err error
	if s.Held, err = unpackDigests(w.Held); err != nil {
		return Summary{}, err
	}
	if s.Dropped, err = unpackDigests(w.Dropped); err != nil {
		return Summary{}, err
	}
	for _, p := range w.Partials {
		if len(p.Digest) != len(Digest{}) {
			return Summary{}, fmt.Errorf("%w: partial digest of %d bytes", ErrMalformed, len(p.Digest))
		}
		s.Partials = append(s.Partials, Partial{Digest: Digest(p.Digest), Received: p.Received})
	}
	for _, raw := range w.Notices {
		n, err := unmarshalNotice(raw)
		if err != nil {
			return Summary{}, err
		}
		s.Notices = append(s.Notices, n)
	}
	for _, r := range w.Refused {
		if len(r.Digest) != len(Digest{}) {
			return Summary{}, fmt.Errorf("%w: refused digest of %d bytes", ErrMalformed, len(r.Digest))
		}
		if r.Reason > 255 {
			return Summary{}, fmt.Errorf("%w: refusal reason %d is not a status report reason code", ErrMalformed, r.Reason)
		}
		s.Refused = append(s.Refused, Refusal{Digest: Digest(r.Digest), Reason: bundle.StatusReason(r.Reason), Transient: r.Transient})
	}
	return s, nil
}

func packDigests(ds []Digest) []byte {
	out := make([]byte, 0, len(ds)*len(Digest{}))
	for _, d := range ds {
		out = append(out, d[:]...)
	}
	return out
}

func unpackDigests(b []byte) ([]Digest, error) {
	if len(b)%len(Digest{}) != 0 {
		return nil, fmt.Errorf("%w: digest list of %d bytes is not a multiple of 16", ErrMalformed, len(b))
	}
	out := make([]Digest, len(b)/len(Digest{}))
	for i := range out {
		copy(out[i][:], b[i*16:])
	}
	return out, nil
}

// Notice says that a bundle reached its destination node. The destination
// node signs it with its own Ed25519 key and includes its certificate chain,
// so that every carrier can check, offline, that the notice really comes
// from the bundle's destination before deleting its copy. Otherwise anyone
// could purge other people's bundles.
type Notice struct {
	Subject     bundle.ID
	Destination bundle.EID // the destination node's ID
	DeliveredAt bundle.DTNTime
	// Expires is when the notice stops mattering: the subject bundle's
	// expiry. Carriers forget the notice after it.
	Expires bundle.DTNTime
	// Chain is the signer's certificate chain, leaf first, DER.
	Chain     [][]byte
	Signature []byte
}

type noticeWire struct {
	_           struct{} `cbor:",toarray"`
	Subject     string
	Destination string
	DeliveredAt uint64
	Expires     uint64
	Chain       [][]byte
	Signature   []byte
}

// signedBytes is what the signature covers: a context string and every
// field but the chain and the signature.
func (n Notice) signedBytes() ([]byte, error) {
	return encMode.Marshal([]any{"mulegate delivery notice v1", n.Subject.String(), n.Destination.String(), uint64(n.DeliveredAt), uint64(n.Expires)})
}

// Sign fills in the signature and chain. key must be the leaf's key.
func (n *Notice) Sign(key ed25519.PrivateKey, chain [][]byte) error {
	msg, err := n.signedBytes()
	if err != nil {
		return err
	}
	n.Chain = chain
	n.Signature = ed25519.Sign(key, msg)
	return nil
}

// Errors from Notice.Verify. Each is counted as a rejected notice.
var (
	ErrNoticeUnsigned  = errors.New("delivery notice is not signed")
	ErrNoticeSignature = errors.New("delivery notice signature does not verify")
	ErrNoticeSigner    = errors.New("delivery notice is not signed by the bundle's destination node")
)

// Verify checks that the notice is signed by the key of its leaf
// certificate and that the leaf names the notice's destination node. It
// returns the parsed chain; whether that certificate is trusted (CA, pinned
// or first use) is the caller's decision.
func (n Notice) Verify() ([]*x509.Certificate, error) {
	if len(n.Signature) == 0 || len(n.Chain) == 0 {
		return nil, ErrNoticeUnsigned
	}
	var chain []*x509.Certificate
	for _, der := range n.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate: %v", ErrNoticeSigner, err)
		}
		chain = append(chain, c)
	}
	leaf := chain[0]
	pub, ok := leaf.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: the certificate's key is not Ed25519", ErrNoticeSigner)
	}
	if !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool {
		e, err := bundle.ParseEID(u.String())
		return err == nil && e.NodeID() == n.Destination.NodeID()
	}) {
		return nil, fmt.Errorf("%w: certificate names %v, notice is for %s", ErrNoticeSigner, leaf.URIs, n.Destination)
	}
	msg, err := n.signedBytes()
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(pub, msg, n.Signature) {
		return nil, ErrNoticeSignature
	}
	return chain, nil
}

func (n Notice) marshal() ([]byte, error) {
	return encMode.Marshal(noticeWire{
		Subject: n.Subject.String(), Destination: n.Destination.String(),
		DeliveredAt: uint64(n.DeliveredAt), Expires: uint64(n.Expires),
		Chain: n.Chain, Signature: n.Signature,
	})
}

// MarshalNotice encodes a notice for storage.
func MarshalNotice(n Notice) ([]byte, error) { return n.marshal() }

// UnmarshalNotice decodes MarshalNotice's output.
func UnmarshalNotice(b []byte) (Notice, error) { return unmarshalNotice(b) }

func unmarshalNotice(raw []byte) (Notice, error) {
	var w noticeWire
	if err := decMode.Unmarshal(raw, &w); err != nil {
		return Notice{}, fmt.Errorf("%w: notice: %v", ErrMalformed, err)
	}
	subject, err := bundle.ParseID(w.Subject)
	if err != nil {
		return Notice{}, fmt.Errorf("%w: notice subject: %v", ErrMalformed, err)
	}
	dst, err := bundle.ParseEID(w.Destination)
	if err != nil {
		return Notice{}, fmt.Errorf("%w: notice destination: %v", ErrMalformed, err)
	}
	return Notice{Subject: subject, Destination: dst, DeliveredAt: bundle.DTNTime(w.DeliveredAt), Expires: bundle.DTNTime(w.Expires), Chain: w.Chain, Signature: bytes.Clone(w.Signature)}, nil
}
