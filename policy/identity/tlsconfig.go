package identity

import (
	"crypto/tls"
)

// ServerConfig is the TLS configuration for accepting peers. It speaks TLS
// 1.3 only, presents id, demands a certificate from every client
// (RequireAnyClientCert), and lets trust decide in VerifyConnection, so a
// refused peer fails the handshake itself.
//
// crypto/tls's own verification is not used: it matches DNS names and IP
// addresses, and can express neither a node ID carried as a URI SAN nor
// trust-on-first-use. RequireAnyClientCert therefore only makes the client
// send a certificate (and prove its key); VerifyConnection judges it.
func ServerConfig(id *Identity, trust *Trust, alpn []string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   append([]string(nil), alpn...),
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := trust.Verify(cs.PeerCertificates, "")
			return err
		},
	}
}

// ClientConfig is the TLS configuration for dialling a peer: TLS 1.3 only,
// presenting id, with trust deciding in VerifyConnection whether the server is
// acceptable and, unless expectedNodeID is empty, that it is that node. An
// empty expectedNodeID accepts any node ID that trust accepts; it is meant for
// peers found by LAN discovery, whose node ID is learnt from the handshake
// (see Trust.PeerFromConnectionState).
//
// InsecureSkipVerify only switches off crypto/tls's host-name verification
// (see ServerConfig for why); VerifyConnection still runs on every handshake,
// resumed ones included, and is the real check.
func ClientConfig(id *Identity, trust *Trust, alpn []string, expectedNodeID string) *tls.Config {
	cert := id.TLSCertificate()
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// Always present the identity: crypto/tls would otherwise send no
		// certificate when the server's request lists CAs ours is not from,
		// and the server's refusal would be less clear than "untrusted".
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
		NextProtos:         append([]string(nil), alpn...),
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := trust.Verify(cs.PeerCertificates, expectedNodeID)
			return err
		},
	}
}

// PeerFromConnectionState tells who the peer of a completed handshake is, as
// this Trust sees it, so the transport can learn the authenticated node ID
// and member name. It checks the peer's certificates again with Verify —
// crypto/tls keeps no record of what VerifyConnection decided — which for a
// handshake made with ServerConfig or ClientConfig gives the answer the
// handshake already accepted.
func (t *Trust) PeerFromConnectionState(cs tls.ConnectionState) (Peer, error) {
	return t.Verify(cs.PeerCertificates, "")
}
