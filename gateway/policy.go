package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/gateway/store"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/bpsec"
	"github.com/mulegate/mulegate/policy/identity"
	"github.com/mulegate/mulegate/policy/ratelimit"
	"go.uber.org/zap"
)

// setupPolicy builds the access lists, rate limiters, signature verifier
// and signing key from the configuration.
func (n *Node) setupPolicy() error {
	var err error
	if n.acl, err = acl.New(n.cfg.ACL); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	if n.rates, err = ratelimit.New(n.cfg.RateLimit, n.now); err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	req, err := bpsec.NewRequirement(n.cfg.Signatures.Requirement())
	if err != nil {
		return fmt.Errorf("signatures: %w", err)
	}
	n.verifier = &bpsec.Verifier{Trust: n.trust, Require: req, Now: n.now}
	if n.cfg.Signatures.Sign {
		key, err := bpsec.KeyOf(n.ident)
		if err != nil {
			return fmt.Errorf("signatures.sign: this node's identity cannot sign: %w", err)
		}
		n.signKey = &key
	}
	return nil
}

// peerTLS is the layer's TLS: mutual authentication by the identity and
// trust, then the inbound access list, in the handshake itself, so that a
// peer the list refuses never gets a session. It also remembers each
// peer's authenticated identity (with its CA-vouched member name) for the
// per-operation checks.
func (n *Node) peerTLS() convergence.TLS {
	t := convergence.IdentityTLS(n.ident, n.trust)
	t.Server = n.counted(n.acl.Wrap(t.Server, n.trust))
	client := t.Client
	t.Client = func(expected bundle.EID) *tls.Config { return n.counted(n.acl.Wrap(client(expected), n.trust)) }
	peerID := t.PeerID
	t.PeerID = func(cs tls.ConnectionState) (bundle.EID, error) {
		id, err := peerID(cs)
		if err != nil {
			return id, err
		}
		if p, err := n.trust.PeerFromConnectionState(cs); err == nil {
			n.mu.Lock()
			n.peerIDs[id.NodeID()] = p
			n.mu.Unlock()
		}
		return id, nil
	}
	return t
}

// counted makes a TLS configuration count and log the peers it refuses.
func (n *Node) counted(c *tls.Config) *tls.Config {
	verify := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			kind := kindOf(err)
			n.metrics.peersRefused.WithLabelValues(kind).Inc()
			n.log.Info("peer refused in the handshake", zap.String("kind", kind), zap.Error(err))
		}
		return err
	}
	return c
}

// peerPrincipal is who an authenticated peer is, for the access lists and
// rate limits.
func (n *Node) peerPrincipal(peer bundle.EID) acl.Principal {
	n.mu.Lock()
	p, ok := n.peerIDs[peer.NodeID()]
	n.mu.Unlock()
	if ok {
		return acl.FromPeer(p)
	}
	// A layer without certificates (the in-memory one) authenticates the
	// node ID only.
	return acl.FromPeer(identity.Peer{NodeID: peer.NodeID().String()})
}

// checkPeer applies the inbound access list and rate limit to a bundle a
// peer hands over (op send) or a request (op request).
func (n *Node) checkPeer(peer bundle.EID, op acl.Op, size uint64) error {
	p := n.peerPrincipal(peer)
	if err := n.acl.CheckInbound(p, op); err != nil {
		return convergence.Reject(bundle.ReasonOf(err), err)
	}
	if op == acl.OpSend {
		if err := n.rates.Inbound.Allow(p, int64(size)); err != nil {
			return convergence.RejectTransient(bundle.ReasonOf(err), err)
		}
	}
	return nil
}

// ErrFragmentUnverifiable refuses a fragment whose destination requires a
// signature: a signature covers the whole payload, so no fragment can show
// one, and the fragment would be carried (and, at its destination,
// reassembled) on nobody's authority. The sender should send the bundle
// whole.
var ErrFragmentUnverifiable = bundle.NewError(bundle.ReasonMissingSecurity, "a fragment cannot show the signature its destination requires")

// verifyStart checks a peer's bundle's signature as far as its header
// allows, and the senders' access list and rate limit. The returned Check
// (nil when there is nothing to verify) must see the payload and be
// finished before the bundle is committed.
//
// A bundle whose signer cannot be authenticated here is judged as the
// unsigned bundle it then is: by the claim of its source, which deny
// entries and node-ID rules match, so that neither fragmenting a bundle
// nor signing it with an unknown key dodges a blocklist or a rate limit.
func (n *Node) verifyStart(d door, b *bundle.Bundle) (*bpsec.Check, error) {
	required := n.verifier.Require.Required(b.Primary.Destination)
	chk, err := n.verifier.Start(b)
	switch {
	case errors.Is(err, bpsec.ErrFragment) && required:
		return nil, fmt.Errorf("%w: %w", ErrFragmentUnverifiable, err)
	case errors.Is(err, bpsec.ErrFragment):
		// Carried as unsigned; if it is for this node, the reassembled
		// bundle is verified whole (see reassemble).
		chk, err = nil, nil
	case errors.Is(err, bpsec.ErrUntrustedSigner) && n.trust.TOFU() && !required:
		// Under trust on first use this node knows the keys only of nodes
		// it met; a signature by any other node cannot be authenticated.
		// Where no signature is required, such a bundle is carried as if
		// unsigned. With a group CA configured, an unknown signer is
		// refused instead.
		chk, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	p := acl.Claimed(b.Primary.Source.NodeID().String())
	if chk != nil {
		p = chk.Principal()
	}
	if err := n.acl.CheckSender(p); err != nil {
		return nil, err
	}
	if d.kind == "reassembly" {
		return chk, nil // its fragments were charged as they came in
	}
	if err := n.rates.Senders.Allow(p, int64(b.Payload.Length)); err != nil {
		return nil, convergence.RejectTransient(bundle.ReasonOf(err), err)
	}
	return chk, nil
}

// signatureStatus is how adapters and the API see a verified signature.
func signatureStatus(s bpsec.Signer) string {
	who := s.NodeID
	if s.Name != "" {
		who = s.Name
	}
	return "valid:" + who + " (" + s.Via + ")"
}

// verifyStored checks the signature of a bundle already in the store, by
// reading its payload through.
func (n *Node) verifyStored(ctx context.Context, b *bundle.Bundle) error {
	p, err := n.store.OpenPayload(ctx, b.ID())
	if err != nil {
		return err
	}
	defer p.Close()
	signer, err := n.verifier.Verify(b, p)
	if errors.Is(err, bpsec.ErrFragment) {
		return nil
	}
	if err != nil {
		return err
	}
	if signer.NodeID != "" {
		_ = n.state.setSigner(b.ID(), signatureStatus(signer))
	}
	return nil
}

// Signature is what this node established about a held bundle's
// signature: "valid:NAME (via)" when it verified it on arrival,
// "signed-here" when this node signed it, "" when it is unsigned or its
// signer could not be authenticated here.
func (n *Node) Signature(m store.Meta) string {
	if s := n.state.signer(m.ID); s != "" {
		return s
	}
	if m.Bundle.Block(bundle.BlockIntegrity) != nil && !strings.HasPrefix(m.From, "peer:") && m.From != "reassembly" {
		return "signed-here"
	}
	return ""
}
