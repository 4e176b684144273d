package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/mulegate/mulegate/policy/identity"
)

// runIdentity runs `mulegate identity ARGS…` in-process with a fresh command
// tree, as a user's shell would, and returns what it printed.
func runIdentity(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runCommand(newIdentityCmd(), args...)
}

// runCommand runs a command tree with args, in-process, and returns what
// it printed on standard output and standard error together.
func runCommand(cmd *cobra.Command, args ...string) (string, error) {
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	err := cmd.Execute()
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runIdentity(t, args...)
	if err != nil {
		t.Fatalf("identity %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// The README's five-command walkthrough, for two members, ends with two nodes
// that authenticate each other by their group CA in a real TLS handshake.
func TestIdentityCLIGroupSetup(t *testing.T) {
	tmp := t.TempDir()
	caDir := filepath.Join(tmp, "campfire-ca")
	members := []struct{ name, node, data string }{
		{"campfire/alice", "dtn://alice/", filepath.Join(tmp, "alice")},
		{"campfire/bob", "ipn:12.0", filepath.Join(tmp, "bob")},
	}

	// 1. The organiser makes the group CA.
	mustRun(t, "ca", "init", "campfire", "--out", caDir)
	for _, m := range members {
		csr := filepath.Join(tmp, filepath.Base(m.data)+".csr")
		crt := filepath.Join(tmp, filepath.Base(m.data)+".crt")
		// 2. The member makes its identity.
		mustRun(t, "init", "--node", m.node, "--data", m.data)
		// 3. The member asks; the organiser issues.
		mustRun(t, "request", "-o", csr, "--data", m.data)
		mustRun(t, "issue", "--ca", caDir, "--name", m.name, "--request", csr, "--days", "30", "-o", crt)
		// 5. The member installs its certificate and trusts the CA that
		// issued it. bob does it in two commands, install and trust, as a
		// mule serving several groups would: the outcome is the same.
		var out string
		if m.name == "campfire/alice" {
			out = mustRun(t, "install", "--trust-issuer", crt, "--data", m.data)
		} else {
			mustRun(t, "install", crt, "--data", m.data)
			out = mustRun(t, "trust", filepath.Join(caDir, identity.CACertFile), "--data", m.data)
		}
		if !strings.Contains(out, "trust-on-first-use is now off") || !strings.Contains(out, `CA "campfire", key sha256:`) {
			t.Errorf("trusting the CA did not name it with its fingerprint, or did not say TOFU is off:\n%s", out)
		}

		var shown identityShow
		if err := json.Unmarshal([]byte(mustRun(t, "show", "--json", "--data", m.data)), &shown); err != nil {
			t.Fatal(err)
		}
		if shown.NodeID != m.node || shown.Name != m.name || shown.SelfSigned || shown.Trust.Mode != "ca" ||
			len(shown.Trust.CAs) != 1 || shown.Trust.CAs[0] != "campfire" {
			t.Errorf("show --json = %+v", shown)
		}
		if d := shown.NotAfter.Sub(time.Now()); d < 29*24*time.Hour || d > 31*24*time.Hour {
			t.Errorf("certificate valid for %v, want --days 30", d)
		}
		text := mustRun(t, "show", "--data", m.data)
		for _, want := range []string{m.node, m.name, shown.Fingerprint, "CAs campfire"} {
			if !strings.Contains(text, want) {
				t.Errorf("show does not mention %q:\n%s", want, text)
			}
		}
	}

	// The two members now accept each other, and only because of the CA.
	load := func(data string) (*identity.Identity, *identity.Trust) {
		dir := filepath.Join(data, identity.DirName)
		id, err := identity.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := identity.LoadTrust(dir)
		if err != nil {
			t.Fatal(err)
		}
		return id, tr
	}
	alice, aliceTrust := load(members[0].data)
	bob, bobTrust := load(members[1].data)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverPeer := make(chan identity.Peer, 1)
	serverErr := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(conn, identity.ServerConfig(alice, aliceTrust, []string{"qbcl"}))
		if err := tc.Handshake(); err != nil {
			serverErr <- err
			return
		}
		p, err := aliceTrust.PeerFromConnectionState(tc.ConnectionState())
		if err != nil {
			serverErr <- err
			return
		}
		serverPeer <- p
		tc.Write([]byte{1})
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, identity.ClientConfig(bob, bobTrust, []string{"qbcl"}, "dtn://alice/"))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(tc, make([]byte, 1)); err != nil {
		t.Fatalf("server refused bob: %v", err)
	}
	select {
	case p := <-serverPeer:
		if p.NodeID != "ipn:12.0" || p.Name != "campfire/bob" || p.Via != identity.ViaCA {
			t.Errorf("alice sees %+v", p)
		}
	case err := <-serverErr:
		t.Fatal(err)
	}
	p, err := bobTrust.PeerFromConnectionState(tc.ConnectionState())
	if err != nil || p.NodeID != "dtn://alice/" || p.Name != "campfire/alice" {
		t.Errorf("bob sees %+v, %v", p, err)
	}
}

func TestIdentityCLIInitRefusesOverwrite(t *testing.T) {
	data := t.TempDir()
	mustRun(t, "init", "--node", "dtn://alice/", "--data", data)
	keyPath := filepath.Join(data, identity.DirName, identity.KeyFile)
	before, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("node.key mode %o, want 600", fi.Mode().Perm())
	}

	_, err = runIdentity(t, "init", "--node", "dtn://bob/", "--data", data)
	if err == nil || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "dtn://alice/") {
		t.Fatalf("init over an existing identity = %v, want a refusal naming it and --force", err)
	}
	after, _ := os.ReadFile(keyPath)
	if !bytes.Equal(before, after) {
		t.Fatal("refused init changed the key")
	}

	mustRun(t, "init", "--node", "dtn://bob/", "--data", data, "--force")
	id, err := identity.Load(filepath.Join(data, identity.DirName))
	if err != nil || id.NodeID() != "dtn://bob/" {
		t.Fatalf("after --force: %v, %v", id, err)
	}
}

func TestIdentityCLIErrors(t *testing.T) {
	tmp := t.TempDir()
	caDir := filepath.Join(tmp, "ca")
	mustRun(t, "ca", "init", "campfire", "--out", caDir)
	alice := filepath.Join(tmp, "alice")
	mustRun(t, "init", "--node", "dtn://alice/", "--data", alice)
	csr := filepath.Join(tmp, "alice.csr")
	mustRun(t, "request", "-o", csr, "--data", alice)
	// A certificate for someone else's key.
	bob := filepath.Join(tmp, "bob")
	mustRun(t, "init", "--node", "dtn://bob/", "--data", bob)
	bobCSR := filepath.Join(tmp, "bob.csr")
	mustRun(t, "request", "-o", bobCSR, "--data", bob)
	bobCrt := filepath.Join(tmp, "bob.crt")
	mustRun(t, "issue", "--ca", caDir, "--name", "campfire/bob", "--request", bobCSR, "-o", bobCrt)
	// alice's certificate without the CA's after it.
	aliceCrt := filepath.Join(tmp, "alice.crt")
	mustRun(t, "issue", "--ca", caDir, "--name", "campfire/alice", "--request", csr, "-o", aliceCrt)
	chain, err := os.ReadFile(aliceCrt)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, _ := pem.Decode(chain)
	aliceLeafOnly := filepath.Join(tmp, "alice-leaf.crt")
	if err := os.WriteFile(aliceLeafOnly, pem.EncodeToMemory(leafPEM), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"show without identity", []string{"show", "--data", filepath.Join(tmp, "none")}, "identity init"},
		{"init bad node ID", []string{"init", "--node", "alice", "--data", filepath.Join(tmp, "x")}, "dtn://"},
		{"init without node", []string{"init", "--data", filepath.Join(tmp, "x")}, "node"},
		{"ca init twice", []string{"ca", "init", "campfire", "--out", caDir}, "--force"},
		{"issue outside group", []string{"issue", "--ca", caDir, "--name", "kitchen/alice", "--request", csr}, "campfire/alice"},
		{"issue from garbage", []string{"issue", "--ca", caDir, "--name", "campfire/alice", "--request", filepath.Join(caDir, identity.CAKeyFile)}, "ca.key"},
		{"install someone else's", []string{"install", bobCrt, "--data", alice}, "does not match"},
		{"trust garbage", []string{"trust", csr, "--data", alice}, "alice.csr"},
		{"install --trust-issuer without the CA", []string{"install", "--trust-issuer", aliceLeafOnly, "--data", alice}, "no CA certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runIdentity(t, tc.args...)
			if err == nil {
				t.Fatalf("succeeded:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// The refused install --trust-issuer changed nothing.
	var shown identityShow
	if err := json.Unmarshal([]byte(mustRun(t, "show", "--json", "--data", alice)), &shown); err != nil {
		t.Fatal(err)
	}
	if !shown.SelfSigned || shown.Trust.Mode != "tofu" {
		t.Errorf("a refused install --trust-issuer changed alice's identity or trust: %+v", shown)
	}
}
