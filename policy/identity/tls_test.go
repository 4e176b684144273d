package identity

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

var testALPN = []string{"qbcl"}

type side struct {
	err   error
	state tls.ConnectionState
}

// handshake runs one real TLS handshake over loopback TCP. Because a TLS 1.3
// client finishes its handshake before the server has judged the client's
// certificate, the server writes one byte once it is satisfied and the client
// reads it: a refusal by either side then shows up as an error on both.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (server, client side) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	done := make(chan side, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- side{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(deadline)
		tc := tls.Server(conn, serverCfg)
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Write([]byte{1})
		}
		done <- side{err: err, state: tc.ConnectionState()}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	tc := tls.Client(conn, clientCfg)
	err = tc.Handshake()
	if err == nil {
		_, err = io.ReadFull(tc, make([]byte, 1))
	}
	client = side{err: err, state: tc.ConnectionState()}
	if err != nil {
		// Let a server still waiting for our certificate see the failure.
		conn.Close()
	}
	return <-done, client
}

func TestHandshakeMutualCA(t *testing.T) {
	ca := mustCA(t, "campfire")
	alice := member(t, ca, "campfire/alice", "dtn://alice/")
	bob := member(t, ca, "campfire/bob", "ipn:12.0")
	aliceTrust := certTrust(t, ca.Certificate())
	bobTrust := certTrust(t, ca.Certificate())

	for _, expected := range []string{"dtn://alice/", ""} {
		server, client := handshake(t,
			ServerConfig(alice, aliceTrust, testALPN),
			ClientConfig(bob, bobTrust, testALPN, expected))
		if server.err != nil || client.err != nil {
			t.Fatalf("expected %q: server: %v; client: %v", expected, server.err, client.err)
		}
		if v := client.state.Version; v != tls.VersionTLS13 {
			t.Errorf("negotiated version %x, want TLS 1.3", v)
		}
		if p := client.state.NegotiatedProtocol; p != "qbcl" {
			t.Errorf("ALPN = %q, want qbcl", p)
		}
		gotBob, err := aliceTrust.PeerFromConnectionState(server.state)
		if err != nil {
			t.Fatal(err)
		}
		wantBob := Peer{NodeID: "ipn:12.0", Name: "campfire/bob", Fingerprint: bob.Fingerprint(), Via: ViaCA}
		if gotBob != wantBob {
			t.Errorf("server sees %+v, want %+v", gotBob, wantBob)
		}
		gotAlice, err := bobTrust.PeerFromConnectionState(client.state)
		if err != nil {
			t.Fatal(err)
		}
		wantAlice := Peer{NodeID: "dtn://alice/", Name: "campfire/alice", Fingerprint: alice.Fingerprint(), Via: ViaCA}
		if gotAlice != wantAlice {
			t.Errorf("client sees %+v, want %+v", gotAlice, wantAlice)
		}
	}
}

func TestHandshakeTOFU(t *testing.T) {
	alice := mustGenerate(t, "dtn://alice/")
	bob := mustGenerate(t, "dtn://bob/")
	aliceTrust, bobTrust := tofuTrust(t), tofuTrust(t)
	server, client := handshake(t, ServerConfig(alice, aliceTrust, testALPN), ClientConfig(bob, bobTrust, testALPN, ""))
	if server.err != nil || client.err != nil {
		t.Fatalf("server: %v; client: %v", server.err, client.err)
	}
	if p, err := aliceTrust.PeerFromConnectionState(server.state); err != nil || p.NodeID != "dtn://bob/" || p.Via != ViaTOFU {
		t.Errorf("server sees %+v, %v", p, err)
	}
	if p, err := bobTrust.PeerFromConnectionState(client.state); err != nil || p.NodeID != "dtn://alice/" || p.Via != ViaTOFU {
		t.Errorf("client sees %+v, %v", p, err)
	}
	if _, ok := aliceTrust.Pins().Lookup("dtn://bob/"); !ok {
		t.Error("alice did not pin bob")
	}
	if _, ok := bobTrust.Pins().Lookup("dtn://alice/"); !ok {
		t.Error("bob did not pin alice")
	}
}

// Each case is refused by one side's Trust, and the handshake itself fails on
// both sides.
func TestHandshakeRefused(t *testing.T) {
	campfire := mustCA(t, "campfire")
	kitchen := mustCA(t, "kitchen")
	alice := member(t, campfire, "campfire/alice", "dtn://alice/")
	bob := member(t, campfire, "campfire/bob", "dtn://bob/")
	selfBob := mustGenerate(t, "dtn://bob/")
	strangerBob := member(t, kitchen, "kitchen/bob", "dtn://bob/")
	campfireTrust := certTrust(t, campfire.Certificate())

	expiredBob := func() *Identity {
		id := mustGenerate(t, "dtn://bob/")
		now := time.Now()
		leaf, err := campfire.issue("campfire/bob", id.NodeID(), id.PublicKey(), now.Add(-2*time.Hour), now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		// Install refuses an expired certificate, rightly; build the
		// identity directly to present one anyway.
		expired, err := newIdentity(id.key, append(leafChain(leaf), campfire.Certificate()))
		if err != nil {
			t.Fatal(err)
		}
		return expired
	}()

	// A self-signed TOFU server that has already met selfBob's key for
	// dtn://bob/.
	selfAlice := mustGenerate(t, "dtn://alice/")
	tofuServer := tofuTrust(t)
	if s, c := handshake(t, ServerConfig(selfAlice, tofuServer, testALPN), ClientConfig(selfBob, tofuTrust(t), testALPN, "")); s.err != nil || c.err != nil {
		t.Fatalf("first contact: server: %v; client: %v", s.err, c.err)
	}
	impostor := mustGenerate(t, "dtn://bob/")

	tests := []struct {
		name         string
		server       *tls.Config
		client       *tls.Config
		serverRefuse error // the server's Trust refuses the client
		clientRefuse error // the client's Trust refuses the server
	}{
		{name: "self-signed client, CA configured",
			server:       ServerConfig(alice, campfireTrust, testALPN),
			client:       ClientConfig(selfBob, campfireTrust, testALPN, ""),
			serverRefuse: ErrUntrusted},
		{name: "client from an untrusted CA",
			server:       ServerConfig(alice, campfireTrust, testALPN),
			client:       ClientConfig(strangerBob, certTrust(t, kitchen.Certificate(), campfire.Certificate()), testALPN, ""),
			serverRefuse: ErrUntrusted},
		{name: "server from an untrusted CA",
			server:       ServerConfig(strangerBob, certTrust(t, campfire.Certificate()), testALPN),
			client:       ClientConfig(alice, campfireTrust, testALPN, ""),
			clientRefuse: ErrUntrusted},
		{name: "wrong expected node ID",
			server:       ServerConfig(alice, campfireTrust, testALPN),
			client:       ClientConfig(bob, campfireTrust, testALPN, "dtn://carol/"),
			clientRefuse: ErrNodeIDMismatch},
		{name: "TOFU, same node ID with another key",
			server:       ServerConfig(selfAlice, tofuServer, testALPN),
			client:       ClientConfig(impostor, tofuTrust(t), testALPN, ""),
			serverRefuse: ErrPinMismatch},
		{name: "expired client certificate",
			server:       ServerConfig(alice, campfireTrust, testALPN),
			client:       ClientConfig(expiredBob, campfireTrust, testALPN, ""),
			serverRefuse: ErrExpired},
		{name: "expired server certificate",
			server:       ServerConfig(expiredBob, campfireTrust, testALPN),
			client:       ClientConfig(alice, campfireTrust, testALPN, "dtn://bob/"),
			clientRefuse: ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := handshake(t, tc.server, tc.client)
			if server.err == nil || client.err == nil {
				t.Fatalf("handshake not refused: server: %v; client: %v", server.err, client.err)
			}
			judge, judgeErr, other := "server", server.err, client.err
			want := tc.serverRefuse
			if tc.clientRefuse != nil {
				judge, judgeErr, other, want = "client", client.err, server.err, tc.clientRefuse
			}
			if !errors.Is(judgeErr, want) {
				t.Errorf("%s error %v, want %v", judge, judgeErr, want)
			}
			// The other side learns of the refusal as a TLS alert.
			if !strings.Contains(other.Error(), "bad certificate") {
				t.Errorf("peer of the %s saw %v, want a bad certificate alert", judge, other)
			}
		})
	}
	if _, ok := tofuServer.Pins().Lookup("dtn://bob/"); !ok {
		t.Fatal("lost the pin")
	}
	if p, _ := tofuServer.Pins().Lookup("dtn://bob/"); p.Fingerprint != selfBob.Fingerprint() {
		t.Fatalf("pin for dtn://bob/ is %s, want the first key %s", p.Fingerprint, selfBob.Fingerprint())
	}
}

func TestHandshakeTLS12Refused(t *testing.T) {
	alice := mustGenerate(t, "dtn://alice/")
	bob := mustGenerate(t, "dtn://bob/")
	client := ClientConfig(bob, tofuTrust(t), testALPN, "")
	client.MinVersion, client.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	s, c := handshake(t, ServerConfig(alice, tofuTrust(t), testALPN), client)
	if s.err == nil || c.err == nil {
		t.Fatalf("TLS 1.2 handshake not refused: server: %v; client: %v", s.err, c.err)
	}
}

func TestPeerFromConnectionStateWithoutHandshake(t *testing.T) {
	if _, err := tofuTrust(t).PeerFromConnectionState(tls.ConnectionState{}); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("PeerFromConnectionState of an empty state = %v, want ErrNoCertificate", err)
	}
}
