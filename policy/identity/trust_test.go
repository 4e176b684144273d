package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	campfire := mustCA(t, "campfire")
	kitchen := mustCA(t, "kitchen")
	alice := member(t, campfire, "campfire/alice", "dtn://alice/")
	stranger := member(t, kitchen, "kitchen/stranger", "dtn://stranger/")
	selfAlice := mustGenerate(t, "dtn://alice/")
	selfBob := mustGenerate(t, "ipn:12.0")
	otherBobKey := mustGenerate(t, "ipn:12.0")
	now := time.Now()

	noNodeID, _ := makeCert(t, certSpec{cn: "nobody", uris: []string{"https://example.com/"}})
	badNodeID, _ := makeCert(t, certSpec{cn: "x", uris: []string{"dtn://alice"}})
	twoNodeIDs, _ := makeCert(t, certSpec{cn: "two", uris: []string{"dtn://alice/", "ipn:7.0"}})
	expired, _ := makeCert(t, certSpec{cn: "old", uris: []string{"dtn://old/"},
		notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)})
	future, _ := makeCert(t, certSpec{cn: "new", uris: []string{"dtn://new/"},
		notBefore: now.Add(24 * time.Hour), notAfter: now.Add(48 * time.Hour)})
	ecdsaCert, _ := makeCert(t, certSpec{cn: "ec", uris: []string{"dtn://ec/"}, key: ecdsaKey(t)})
	badSig := corruptSignature(t, selfAlice.Leaf())
	serverOnly, _ := makeCert(t, certSpec{cn: "campfire/srv", uris: []string{"dtn://srv/"},
		eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, parent: campfire.cert, parentKey: campfire.key})
	outsider, _ := makeCert(t, certSpec{cn: "kitchen/bob", uris: []string{"dtn://bob/"},
		parent: campfire.cert, parentKey: campfire.key})
	oldCACert, oldCAKey := makeCert(t, certSpec{cn: "oldgroup", isCA: true,
		notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)})
	underOldCA, _ := makeCert(t, certSpec{cn: "oldgroup/x", uris: []string{"dtn://x/"},
		parent: oldCACert, parentKey: oldCAKey})
	noEKU, _ := makeCert(t, certSpec{cn: "campfire/plain", uris: []string{"dtn://plain/"}, noEKU: true,
		parent: campfire.cert, parentKey: campfire.key})

	// prepin pins bob's first key in a fresh TOFU trust.
	prepin := func(t *testing.T) *Trust {
		tr := tofuTrust(t)
		if _, err := tr.Verify(selfBob.Chain(), ""); err != nil {
			t.Fatal(err)
		}
		return tr
	}
	tofu := func(t *testing.T) *Trust { return tofuTrust(t) }
	withCA := func(t *testing.T) *Trust { return certTrust(t, campfire.Certificate()) }
	withOldCA := func(t *testing.T) *Trust { return certTrust(t, oldCACert) }
	withPinned := func(t *testing.T) *Trust { return certTrust(t, campfire.Certificate(), selfBob.Leaf()) }

	tests := []struct {
		name     string
		trust    func(*testing.T) *Trust
		chain    []*x509.Certificate
		expected string
		want     error    // nil: accepted
		wantMsg  []string // substrings of the error message
		wantPeer Peer     // when accepted
	}{
		// Refusals, one per kind.
		{name: "no certificate", trust: tofu, want: ErrNoCertificate},
		{name: "no node ID", trust: tofu, chain: []*x509.Certificate{noNodeID},
			want: ErrNoNodeID, wantMsg: []string{"CN=nobody"}},
		{name: "malformed node ID", trust: tofu, chain: []*x509.Certificate{badNodeID},
			want: ErrNoNodeID, wantMsg: []string{`"dtn://alice"`}},
		{name: "two node IDs", trust: tofu, chain: []*x509.Certificate{twoNodeIDs},
			want: ErrMultipleNodeIDs, wantMsg: []string{"dtn://alice/", "ipn:7.0"}},
		{name: "node ID mismatch", trust: withCA, chain: alice.Chain(), expected: "dtn://bob/",
			want: ErrNodeIDMismatch, wantMsg: []string{"expected dtn://bob/, got dtn://alice/", "campfire/alice"}},
		{name: "expired", trust: tofu, chain: []*x509.Certificate{expired},
			want: ErrExpired, wantMsg: []string{"CN=old", expired.NotAfter.UTC().Format(time.RFC3339)}},
		{name: "not yet valid", trust: tofu, chain: []*x509.Certificate{future},
			want: ErrNotYetValid, wantMsg: []string{"CN=new", future.NotBefore.UTC().Format(time.RFC3339)}},
		{name: "expired CA", trust: withOldCA, chain: []*x509.Certificate{underOldCA},
			want: ErrExpired, wantMsg: []string{"CN=oldgroup"}},
		{name: "self-signed, CA configured", trust: withCA, chain: selfAlice.Chain(),
			want: ErrUntrusted, wantMsg: []string{"self-signed", "CN=campfire"}},
		{name: "other group's CA", trust: withCA, chain: stranger.Chain(),
			want: ErrUntrusted, wantMsg: []string{"CN=kitchen", "not a trusted CA"}},
		{name: "name outside CA's group", trust: withCA, chain: []*x509.Certificate{outsider},
			want: ErrUntrusted, wantMsg: []string{"kitchen/bob", "outside the group"}},
		{name: "server-only key usage", trust: withCA, chain: []*x509.Certificate{serverOnly},
			want: ErrKeyUsage, wantMsg: []string{"campfire/srv"}},
		{name: "pin mismatch", trust: prepin, chain: otherBobKey.Chain(),
			want: ErrPinMismatch, wantMsg: []string{"ipn:12.0", selfBob.Fingerprint(), otherBobKey.Fingerprint(), PinsFile}},
		{name: "bad self-signature", trust: tofu, chain: []*x509.Certificate{badSig},
			want: ErrBadSelfSignature, wantMsg: []string{"dtn://alice/", "not signed by the key it presents"}},
		{name: "CA-issued under TOFU", trust: tofu, chain: alice.Chain(),
			want: ErrBadSelfSignature, wantMsg: []string{"CN=campfire", "identity trust"}},
		{name: "not Ed25519", trust: tofu, chain: []*x509.Certificate{ecdsaCert},
			want: ErrNotEd25519, wantMsg: []string{"CN=ec", "ECDSA"}},

		// Acceptances.
		{name: "CA-issued", trust: withCA, chain: alice.Chain(), expected: "dtn://alice/",
			wantPeer: Peer{NodeID: "dtn://alice/", Name: "campfire/alice", Fingerprint: alice.Fingerprint(), Via: ViaCA}},
		{name: "CA-issued, leaf only", trust: withCA, chain: alice.Chain()[:1],
			wantPeer: Peer{NodeID: "dtn://alice/", Name: "campfire/alice", Fingerprint: alice.Fingerprint(), Via: ViaCA}},
		{name: "CA-issued, no EKU", trust: withCA, chain: []*x509.Certificate{noEKU},
			wantPeer: Peer{NodeID: "dtn://plain/", Name: "campfire/plain", Fingerprint: Fingerprint(noEKU), Via: ViaCA}},
		{name: "pinned", trust: withPinned, chain: selfBob.Chain(), expected: "ipn:12.0",
			wantPeer: Peer{NodeID: "ipn:12.0", Fingerprint: selfBob.Fingerprint(), Via: ViaPinned}},
		{name: "pinned key, other key refused", trust: withPinned, chain: otherBobKey.Chain(),
			want: ErrUntrusted, wantMsg: []string{"self-signed"}},
		{name: "TOFU first use", trust: tofu, chain: selfBob.Chain(),
			wantPeer: Peer{NodeID: "ipn:12.0", Fingerprint: selfBob.Fingerprint(), Via: ViaTOFU}},
		{name: "TOFU same key again", trust: prepin, chain: selfBob.Chain(), expected: "ipn:12.0",
			wantPeer: Peer{NodeID: "ipn:12.0", Fingerprint: selfBob.Fingerprint(), Via: ViaTOFU}},
		{name: "TOFU ignores claimed member name", trust: tofu, chain: []*x509.Certificate{mustSelfSignedNamed(t, "campfire/alice", "dtn://fake/")},
			wantPeer: Peer{NodeID: "dtn://fake/", Via: ViaTOFU}},
	}
	kinds := []error{ErrNoCertificate, ErrNoNodeID, ErrMultipleNodeIDs, ErrNodeIDMismatch, ErrExpired, ErrNotYetValid,
		ErrUntrusted, ErrKeyUsage, ErrPinMismatch, ErrPinStoreFull, ErrBadSelfSignature, ErrNotEd25519, ErrKeyMismatch}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.trust(t)
			peer, err := tr.Verify(tc.chain, tc.expected)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if tc.wantPeer.Fingerprint == "" {
					tc.wantPeer.Fingerprint = Fingerprint(tc.chain[0])
				}
				if peer != tc.wantPeer {
					t.Fatalf("Verify = %+v, want %+v", peer, tc.wantPeer)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted %+v, want %v", peer, tc.want)
			}
			t.Log(err)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is a %T, want *VerifyError", err, err)
			}
			// Exactly one kind matches: the refusals are distinguishable.
			for _, k := range kinds {
				if errors.Is(err, k) != (k == tc.want) {
					t.Errorf("errors.Is(%q, %q) = %v", err, k, errors.Is(err, k))
				}
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if peer != (Peer{}) {
				t.Errorf("refused, but returned peer %+v", peer)
			}
		})
	}
}

func mustSelfSignedNamed(t *testing.T, cn, nodeID string) *x509.Certificate {
	c, _ := makeCert(t, certSpec{cn: cn, uris: []string{nodeID}})
	return c
}

// A refused certificate is not pinned: otherwise a peer refused for one
// reason (say, the wrong node ID) would still claim its node ID for good.
func TestVerifyRefusalDoesNotPin(t *testing.T) {
	tr := tofuTrust(t)
	bob := mustGenerate(t, "dtn://bob/")
	if _, err := tr.Verify(bob.Chain(), "dtn://carol/"); !errors.Is(err, ErrNodeIDMismatch) {
		t.Fatalf("Verify = %v, want ErrNodeIDMismatch", err)
	}
	if tr.Pins().Len() != 0 {
		t.Fatalf("refused peer was pinned: %v", tr.Pins().NodeIDs())
	}
}

func TestVerifyUsesTrustClock(t *testing.T) {
	ca := mustCA(t, "campfire")
	alice := member(t, ca, "campfire/alice", "dtn://alice/")
	tr := certTrust(t, ca.Certificate())
	tr.now = func() time.Time { return alice.Leaf().NotAfter.Add(time.Second) }
	if _, err := tr.Verify(alice.Chain(), ""); !errors.Is(err, ErrExpired) {
		t.Fatalf("Verify after NotAfter = %v, want ErrExpired", err)
	}
}

func TestTrustModes(t *testing.T) {
	ca := mustCA(t, "campfire")
	bob := mustGenerate(t, "dtn://bob/")
	tests := []struct {
		name  string
		trust *Trust
		mode  string
		tofu  bool
	}{
		{"nothing configured", tofuTrust(t), "tofu", true},
		{"CA", certTrust(t, ca.Certificate()), "ca", false},
		{"cert", certTrust(t, bob.Leaf()), "pinned", false},
		{"both", certTrust(t, ca.Certificate(), bob.Leaf()), "ca+pinned", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.trust.Mode(); got != tc.mode {
				t.Errorf("Mode = %q, want %q", got, tc.mode)
			}
			if got := tc.trust.TOFU(); got != tc.tofu {
				t.Errorf("TOFU = %v, want %v", got, tc.tofu)
			}
			if (tc.trust.Pins() != nil) != tc.tofu {
				t.Errorf("Pins() = %v with TOFU %v", tc.trust.Pins(), tc.tofu)
			}
		})
	}
	if _, err := NewTrust(nil, nil); err == nil {
		t.Error("NewTrust with nothing and no pin store succeeded")
	}
	noID, _ := makeCert(t, certSpec{cn: "x"})
	if _, err := NewTrust([]*x509.Certificate{noID}, nil); !errors.Is(err, ErrNoNodeID) {
		t.Errorf("NewTrust with a node certificate lacking a node ID = %v, want ErrNoNodeID", err)
	}
}

func TestLoadTrustAndAddTrusted(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "campfire")
	bob := mustGenerate(t, "dtn://bob/")
	alice := member(t, ca, "campfire/alice", "dtn://alice/")

	tr, err := LoadTrust(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.TOFU() {
		t.Fatal("empty trust dir: TOFU is off")
	}

	paths, err := AddTrusted(dir, EncodeChain(ca.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	again, err := AddTrusted(dir, EncodeChain(ca.Certificate()))
	if err != nil || len(again) != 1 || again[0] != paths[0] {
		t.Fatalf("adding the same CA again = %v, %v; want %v, nil", again, err, paths)
	}
	if _, err := AddTrusted(dir, EncodeChain(bob.Leaf())); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, TrustDir, "*.pem"))
	if len(files) != 2 {
		t.Fatalf("trust dir holds %v, want 2 files", files)
	}

	tr, err = LoadTrust(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Mode() != "ca+pinned" {
		t.Fatalf("Mode = %q, want ca+pinned", tr.Mode())
	}
	for _, id := range []*Identity{alice, bob} {
		if _, err := tr.Verify(id.Chain(), id.NodeID()); err != nil {
			t.Errorf("Verify %s: %v", id.NodeID(), err)
		}
	}

	// Refused: not certificates, or a node certificate without a node ID.
	noID, _ := makeCert(t, certSpec{cn: "x"})
	for name, data := range map[string][]byte{
		"garbage":    []byte("not pem"),
		"no node ID": EncodeChain(noID),
	} {
		if _, err := AddTrusted(dir, data); err == nil {
			t.Errorf("AddTrusted(%s) succeeded", name)
		}
	}

	// A corrupted trust file is named in the error.
	bad := filepath.Join(dir, TrustDir, "broken.pem")
	writeTestFile(t, bad, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	if _, err := LoadTrust(dir); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("LoadTrust with a corrupted file = %v, want an error naming %s", err, bad)
	}
}

// Many handshakes at once share one Trust: for a contested node ID exactly one
// key wins, and every pin reaches the file.
func TestTOFUConcurrent(t *testing.T) {
	dir := t.TempDir()
	tr, err := LoadTrust(dir)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	contenders := make([]*Identity, n)
	others := make([]*Identity, n)
	for i := range n {
		contenders[i] = mustGenerate(t, "dtn://contested/")
		others[i] = mustGenerate(t, fmt.Sprintf("ipn:%d.0", i+1))
	}
	var wg sync.WaitGroup
	accepted := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, err := tr.Verify(contenders[i].Chain(), "")
			accepted[i] = err == nil
			if err != nil && !errors.Is(err, ErrPinMismatch) {
				errs[i] = err
			}
		})
		wg.Go(func() {
			if _, err := tr.Verify(others[i].Chain(), ""); err != nil {
				t.Errorf("Verify ipn:%d.0: %v", i+1, err)
			}
		})
	}
	wg.Wait()
	winners := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("contender %d: %v", i, errs[i])
		}
		if accepted[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d contenders accepted for one node ID, want exactly 1", winners)
	}
	reloaded, err := OpenPins(filepath.Join(dir, PinsFile))
	if err != nil {
		t.Fatal(err)
	}
	if reloaded.Len() != n+1 {
		t.Fatalf("pins file holds %d nodes, want %d", reloaded.Len(), n+1)
	}
}

func TestDescribe(t *testing.T) {
	c, _ := makeCert(t, certSpec{uris: []string{"dtn://anon/"}})
	if got := describe(c); !strings.Contains(got, "serial ") || !strings.Contains(got, "dtn://anon/") {
		t.Errorf("describe of a certificate without subject = %q, want serial and node ID", got)
	}
	c.Subject = pkix.Name{CommonName: "campfire/alice"}
	if got := describe(c); !strings.Contains(got, "campfire/alice") {
		t.Errorf("describe = %q", got)
	}
}

// TestVerifyKnownNeverPins: a chain that arrives inside data is accepted
// under trust-on-first-use only with the key already pinned by a handshake,
// and checking it pins nothing, so a forger who reaches a node first with a
// self-signed certificate for someone else's node ID locks nobody out.
func TestVerifyKnownNeverPins(t *testing.T) {
	campfire := mustCA(t, "campfire")
	met := mustGenerate(t, "dtn://met/")
	metForger := mustGenerate(t, "dtn://met/")
	stranger := mustGenerate(t, "dtn://stranger/")
	strangerForger := mustGenerate(t, "dtn://stranger/")
	alice := member(t, campfire, "campfire/alice", "dtn://alice/")

	// handshake pins met's real key, as a direct connection would.
	handshake := func(t *testing.T) *Trust {
		tr := tofuTrust(t)
		if _, err := tr.Verify(met.Chain(), "dtn://met/"); err != nil {
			t.Fatal(err)
		}
		return tr
	}
	withCA := func(t *testing.T) *Trust { return certTrust(t, campfire.Certificate()) }
	tests := []struct {
		name     string
		trust    func(*testing.T) *Trust
		chain    []*x509.Certificate
		expected string
		want     error // nil: accepted
		wantVia  string
	}{
		{"TOFU: the pinned key of a node met before", handshake, met.Chain(), "dtn://met/", nil, ViaTOFU},
		{"TOFU: another key for a node met before", handshake, metForger.Chain(), "dtn://met/", ErrPinMismatch, ""},
		{"TOFU: a node never met", handshake, stranger.Chain(), "dtn://stranger/", ErrNotPinned, ""},
		{"TOFU: the wrong node ID", handshake, met.Chain(), "dtn://stranger/", ErrNodeIDMismatch, ""},
		{"CA: a member", withCA, alice.Chain(), "dtn://alice/", nil, ViaCA},
		{"CA: a self-signed certificate", withCA, stranger.Chain(), "dtn://stranger/", ErrUntrusted, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.trust(t)
			var before []string
			if tr.TOFU() {
				before = tr.Pins().NodeIDs()
			}
			p, err := tr.VerifyKnown(tc.chain, tc.expected)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("VerifyKnown = %v, want accepted", err)
				}
				if p.Via != tc.wantVia || p.NodeID != tc.expected {
					t.Fatalf("VerifyKnown = %+v, want %s via %s", p, tc.expected, tc.wantVia)
				}
			} else if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyKnown = %v, want %v", err, tc.want)
			}
			if tr.TOFU() {
				if after := tr.Pins().NodeIDs(); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Fatalf("VerifyKnown changed the pins from %v to %v", before, after)
				}
			}
		})
	}

	// The real stranger still gets in when it finally connects, although a
	// forger's certificate for its node ID was checked first.
	tr := handshake(t)
	if _, err := tr.VerifyKnown(strangerForger.Chain(), "dtn://stranger/"); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("VerifyKnown of the forger = %v, want ErrNotPinned", err)
	}
	if _, err := tr.Verify(stranger.Chain(), "dtn://stranger/"); err != nil {
		t.Fatalf("the real node is refused in its handshake after a forged notice: %v", err)
	}
}
