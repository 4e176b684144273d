package bpsec_test

import (
	"bytes"
	"errors"
	"io"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/bpsec"
	"github.com/mulegate/mulegate/policy/identity"
	"github.com/mulegate/mulegate/policy/ratelimit"
)

// A node receiving a bundle from an authenticated peer: every check that
// the header allows comes before the payload is read, and the signature is
// decided after the last payload byte, before the store commits.
func Example_receive() {
	var (
		peer     identity.Peer       // from Trust.PeerFromConnectionState after the handshake
		access   *acl.ACL            // from acl.New(config)
		limits   *ratelimit.Limiters // from ratelimit.New(config, nil)
		verifier *bpsec.Verifier     // {Trust: trust, Require: requirement}
		b        *bundle.Bundle      // from bundle.Decode, limits checked
		payload  io.Reader           // the *bundle.PayloadReader
		store    = &bytes.Buffer{}   // stands in for the store's writer
	)
	size := int64(b.Payload.Length)                        // or b.EncodedLen()
	refuse := func(err error) { _ = bundle.ReasonOf(err) } // fatal: status report, metric, log
	retry := func(err error) { _ = ratelimit.RetryAfter(err) }
	alarm := func(error) {}

	from := acl.FromPeer(peer)
	if err := access.CheckInbound(from, acl.OpSend); err != nil {
		refuse(err)
		return
	}
	if err := limits.Inbound.Allow(from, size); err != nil {
		retry(err) // transient: the peer keeps the bundle and backs off
		return
	}
	chk, err := verifier.Start(b)
	if err != nil {
		refuse(err) // unsigned but required, untrusted or expired signer, …
		return
	}
	sender := chk.Principal()
	if err := access.CheckSender(sender); err != nil {
		refuse(err)
		return
	}
	if err := limits.Senders.Allow(sender, size); err != nil {
		retry(err)
		return
	}
	if _, err := io.Copy(io.MultiWriter(store, chk), payload); err != nil {
		return
	}
	if _, err := chk.Finish(); err != nil {
		if errors.Is(err, bpsec.ErrTamperedPayload) || errors.Is(err, bpsec.ErrForgedSignature) {
			alarm(err) // someone on the path is tampering
		}
		refuse(err) // do not commit, do not acknowledge
		return
	}
	// commit, then acknowledge
}

// A node originating a bundle signs it as its source.
func Example_send() {
	var (
		id      *identity.Identity // the node's identity
		b       *bundle.Bundle     // from bundle.New, source = this node
		payload []byte
	)
	key, err := bpsec.KeyOf(id)
	if err != nil {
		return
	}
	if err := bpsec.Sign(b, bytes.NewReader(payload), key); err != nil {
		return
	}
	_, _ = bundle.Marshal(b, payload)
}
