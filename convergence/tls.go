package convergence

import (
	"crypto/tls"
	"errors"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/identity"
)

// TLS is how a layer that runs over TLS authenticates its peers. The layer
// does not decide whom to trust: the configurations do, in the handshake,
// so that a refused peer never gets a session. The layer sets the ALPN
// protocol itself, over whatever NextProtos the configurations hold.
type TLS struct {
	// Server is the configuration for accepted connections. It must demand a
	// client certificate and verify it.
	Server *tls.Config
	// Client returns the configuration for dialling a peer. When expected is
	// not the zero EID, the configuration must refuse a peer that is not that
	// node.
	Client func(expected bundle.EID) *tls.Config
	// PeerID tells the authenticated node ID of the peer of a completed
	// handshake.
	PeerID func(tls.ConnectionState) (bundle.EID, error)
}

// IdentityTLS is TLS for a node with identity id that trusts peers as trust
// says: mutual TLS 1.3 in which both sides present their certificates and
// a peer trust refuses fails the handshake (see identity.ServerConfig and
// identity.ClientConfig).
func IdentityTLS(id *identity.Identity, trust *identity.Trust) TLS {
	return TLS{
		Server: identity.ServerConfig(id, trust, nil),
		Client: func(expected bundle.EID) *tls.Config {
			want := ""
			if !expected.IsZero() {
				want = expected.String()
			}
			return identity.ClientConfig(id, trust, nil, want)
		},
		PeerID: func(cs tls.ConnectionState) (bundle.EID, error) {
			p, err := trust.PeerFromConnectionState(cs)
			if err != nil {
				return bundle.EID{}, err
			}
			return bundle.ParseEID(p.NodeID)
		},
	}
}

// Check reports whether t has everything a layer needs to listen and dial.
func (t TLS) Check() error {
	if t.Server == nil || t.Client == nil || t.PeerID == nil {
		return errors.New("convergence: TLS needs Server, Client and PeerID")
	}
	return nil
}
