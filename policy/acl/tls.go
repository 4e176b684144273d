package acl

import (
	"crypto/tls"

	"github.com/mulegate/mulegate/policy/identity"
)

// VerifyConnection returns a tls.Config.VerifyConnection function that first
// runs next (the trust check identity.ServerConfig and ClientConfig install;
// nil to skip it), then learns who the peer is from trust and refuses it in
// the handshake unless CheckConnect admits it. The refusal reaches the peer
// as a TLS alert and the local caller as the handshake error, which wraps
// ErrPeerDenied.
func (a *ACL) VerifyConnection(trust *identity.Trust, next func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if next != nil {
			if err := next(cs); err != nil {
				return err
			}
		}
		if a == nil {
			return nil
		}
		peer, err := trust.PeerFromConnectionState(cs)
		if err != nil {
			return err
		}
		return a.CheckConnect(peer)
	}
}

// Wrap returns a copy of cfg (made by identity.ServerConfig or ClientConfig)
// whose handshake also applies the ACL:
//
//	cfg := acl.Wrap(identity.ServerConfig(id, trust, alpn), trust)
func (a *ACL) Wrap(cfg *tls.Config, trust *identity.Trust) *tls.Config {
	c := cfg.Clone()
	c.VerifyConnection = a.VerifyConnection(trust, cfg.VerifyConnection)
	return c
}
