package bpsec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veraison/go-cose"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/identity"
)

func TestSignVerify(t *testing.T) {
	ca := newTestCA(t, "campfire")
	alice := ca.issue(t, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	v := &Verifier{Trust: ca.trust(t)}

	payload := randomPayload(t, 100_000)
	b := newBundle(t, "dtn://alice/app", len(payload))
	if err := Sign(b, bytes.NewReader(payload), alice); err != nil {
		t.Fatal(err)
	}
	if err := b.Validate(); err != nil {
		t.Fatalf("signed bundle invalid: %v", err)
	}
	if err := Sign(b, bytes.NewReader(payload), alice); !errors.Is(err, ErrAlreadySigned) {
		t.Errorf("signing twice: %v", err)
	}
	got, gotPayload := roundTrip(t, b, payload)
	s, err := v.Verify(got, bytes.NewReader(gotPayload))
	if err != nil {
		t.Fatal(err)
	}
	want := identity.Peer{NodeID: "dtn://alice/", Name: "campfire/alice", Fingerprint: identity.Fingerprint(alice.Chain[0]), Via: identity.ViaCA}
	if s.Peer != want || s.Source != bundle.MustParseEID("dtn://alice/") || s.Context != ContextCOSE {
		t.Errorf("signer %+v, want %+v", s, want)
	}
	if s.Principal() != (acl.Principal{NodeID: "dtn://alice/", Name: "campfire/alice", Authenticated: true}) {
		t.Errorf("principal %v", s.Principal())
	}

	// What changes in transit is not covered: hop count, previous node,
	// bundle age, and the order and CRCs of blocks.
	hc, _, _ := got.HopCount()
	hc.Count += 3
	got.SetHopCount(hc)
	if err := got.SetPreviousNode(bundle.MustParseEID("dtn://mule/")); err != nil {
		t.Fatal(err)
	}
	got.SetAge(90 * time.Second)
	hop, hopPayload := roundTrip(t, got, gotPayload)
	if _, err := v.Verify(hop, bytes.NewReader(hopPayload)); err != nil {
		t.Fatalf("after a hop: %v", err)
	}
	hc.Count++
	hop.SetHopCount(hc)
	if err := hop.SetPreviousNode(bundle.MustParseEID("dtn://mule2/")); err != nil {
		t.Fatal(err)
	}
	hop.SetAge(time.Hour)
	for i := range hop.Blocks {
		if hop.Blocks[i].Type != bundle.BlockIntegrity {
			hop.Blocks[i].CRCType = bundle.CRC16
		}
	}
	hop2, hop2Payload := roundTrip(t, hop, hopPayload)
	if _, err := v.Verify(hop2, bytes.NewReader(hop2Payload)); err != nil {
		t.Fatalf("after two hops: %v", err)
	}
}

// TestCheckStreams: the node learns the signer from the header, streams the
// payload through the check (as it streams it into the store) and decides
// after the last byte.
func TestCheckStreams(t *testing.T) {
	ca := newTestCA(t, "campfire")
	alice := ca.issue(t, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	payload := randomPayload(t, 1<<20)
	b := newBundle(t, "dtn://alice/app", len(payload))
	s, err := NewSigning(b, alice)
	if err != nil {
		t.Fatal(err)
	}
	for p := payload; len(p) > 0; p = p[min(len(p), 1000):] {
		s.Write(p[:min(len(p), 1000)])
	}
	if err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	got, gotPayload := roundTrip(t, b, payload)

	v := &Verifier{Trust: ca.trust(t)}
	c, err := v.Start(got)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Signed() || c.Signer().Name != "campfire/alice" || c.Principal().Name != "campfire/alice" {
		t.Errorf("before the payload: signed %v, signer %+v", c.Signed(), c.Signer())
	}
	var store bytes.Buffer
	for p := gotPayload; len(p) > 0; p = p[min(len(p), 4096):] {
		chunk := p[:min(len(p), 4096)]
		store.Write(chunk)
		c.Write(chunk)
	}
	if _, err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Finish(); err == nil {
		t.Error("Finish twice succeeded")
	}

	// A short payload is the caller's mistake, not a forgery.
	c, err = v.Start(got)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(gotPayload[:10])
	if _, err := c.Finish(); !errors.Is(err, bundle.ErrPayloadLength) {
		t.Errorf("short payload: %v", err)
	}
}

// TestFailures: each way a signature can fail has its own error and
// reason.
func TestFailures(t *testing.T) {
	ca := newTestCA(t, "campfire")
	trust := ca.trust(t)
	alice := ca.issue(t, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	payload := randomPayload(t, 4096)

	signed := func(t *testing.T, key Key) (*bundle.Bundle, []byte) {
		b := newBundle(t, "dtn://alice/app", len(payload))
		if err := Sign(b, bytes.NewReader(payload), key); err != nil {
			t.Fatal(err)
		}
		return roundTrip(t, b, payload)
	}

	for _, tc := range []struct {
		name   string
		make   func(t *testing.T) (*bundle.Bundle, []byte)
		v      *Verifier
		kind   *bundle.Error
		reason bundle.StatusReason
		start  bool // refused by Start, from the header alone
	}{
		{
			name: "forged signature",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				// Mallory signs with her own key but presents alice's
				// certificate chain, and describes the data honestly.
				_, mallory, _ := ed25519.GenerateKey(rand.Reader)
				b := newBundle(t, "dtn://alice/app", len(payload))
				forge(t, b, payload, Key{Signer: mallory, Chain: alice.Chain})
				return roundTrip(t, b, payload)
			},
			kind: ErrForgedSignature, reason: bundle.ReasonFailedSecurity,
		},
		{
			name: "tampered payload",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				p = bytes.Clone(p)
				p[len(p)/2] ^= 0x40
				return roundTrip(t, b, p) // the CRC is recomputed: only the signature can tell
			},
			kind: ErrTamperedPayload, reason: bundle.ReasonFailedSecurity,
		},
		{
			name: "tampered primary block",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				b.Primary.Destination = bundle.MustParseEID("dtn://mallory/inbox")
				return roundTrip(t, b, p)
			},
			kind: ErrTamperedPrimary, reason: bundle.ReasonFailedSecurity,
		},
		{
			name: "tampered lifetime",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				b.Primary.Lifetime += time.Hour
				return roundTrip(t, b, p)
			},
			kind: ErrTamperedPrimary, reason: bundle.ReasonFailedSecurity,
		},
		{
			name: "unsigned where required",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				return roundTrip(t, newBundle(t, "dtn://alice/app", len(payload)), payload)
			},
			v:    &Verifier{Trust: trust, Require: mustRequire(t, RequireConfig{RequireFor: []string{"dtn://bob/**"}})},
			kind: ErrMissingSignature, reason: bundle.ReasonMissingSecurity, start: true,
		},
		{
			name: "untrusted CA",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				other := newTestCA(t, "campfire") // same group name, another key
				return signed(t, other.issue(t, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{}))
			},
			kind: ErrUntrustedSigner, reason: bundle.ReasonFailedSecurity, start: true,
		},
		{
			name: "expired certificate",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				return signed(t, ca.issue(t, "campfire/alice", "dtn://alice/", time.Now().Add(-47*time.Hour), time.Now().Add(-time.Hour)))
			},
			kind: ErrExpiredSigner, reason: bundle.ReasonFailedSecurity, start: true,
		},
		{
			name: "someone else's bundle",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				b.Primary.Source = bundle.MustParseEID("dtn://carol/app")
				return roundTrip(t, b, p)
			},
			kind: ErrSignerMismatch, reason: bundle.ReasonFailedSecurity, start: true,
		},
		{
			name: "certificate for another node",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				// Carol signs alice's bundle with her own (valid) certificate,
				// naming alice as the security source.
				carol := ca.issue(t, "campfire/carol", "dtn://carol/", time.Time{}, time.Time{})
				b := newBundle(t, "dtn://alice/app", len(payload))
				forge(t, b, payload, carol)
				return roundTrip(t, b, payload)
			},
			kind: ErrSignerMismatch, reason: bundle.ReasonFailedSecurity, start: true,
		},
		{
			name: "certificate swapped in an unprotected header",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				carol := ca.issue(t, "campfire/carol", "dtn://carol/", time.Time{}, time.Time{})
				editSign1(t, b, func(m *cose.UntaggedSign1Message) {
					m.Headers.Unprotected[int64(labelX5Chain)] = [][]byte{carol.Chain[0].Raw, carol.Chain[1].Raw}
				})
				return roundTrip(t, b, p)
			},
			kind: ErrMalformedSecurity, reason: bundle.ReasonBlockUnintelligible, start: true,
		},
		{
			name: "attached payload",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				editSign1(t, b, func(m *cose.UntaggedSign1Message) { m.Payload = []byte("x") })
				return roundTrip(t, b, p)
			},
			kind: ErrMalformedSecurity, reason: bundle.ReasonBlockUnintelligible, start: true,
		},
		{
			name: "not a hash envelope",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				editSign1(t, b, func(m *cose.UntaggedSign1Message) {
					delete(m.Headers.Protected, cose.HeaderLabelCritical)
					delete(m.Headers.Protected, int64(labelPayloadHashAlg))
				})
				return roundTrip(t, b, p)
			},
			kind: ErrUnsupportedSecurity, reason: bundle.ReasonUnknownSecurity, start: true,
		},
		{
			name: "two signatures",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				bib := *b.Block(bundle.BlockIntegrity)
				bib.Number = 99
				b.Blocks = append(b.Blocks, bib)
				return roundTrip(t, b, p)
			},
			kind: ErrConflictingSecurity, reason: bundle.ReasonConflictingSecurity, start: true,
		},
		{
			name: "malformed integrity block",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				bib := b.Block(bundle.BlockIntegrity)
				bib.Data = bib.Data[:len(bib.Data)-5]
				return roundTrip(t, b, p)
			},
			kind: ErrMalformedSecurity, reason: bundle.ReasonBlockUnintelligible, start: true,
		},
		{
			name: "unknown security context",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				bib := b.Block(bundle.BlockIntegrity)
				a, err := ParseASB(bib.Data)
				if err != nil {
					t.Fatal(err)
				}
				a.Context = 200
				bib.Data, _ = a.Marshal()
				return roundTrip(t, b, p)
			},
			kind: ErrUnsupportedSecurity, reason: bundle.ReasonUnknownSecurity, start: true,
		},
		{
			name: "fragment",
			make: func(t *testing.T) (*bundle.Bundle, []byte) {
				b, p := signed(t, alice)
				b.Primary.Flags &^= bundle.FlagMustNotFragment
				f, err := b.Fragment(0, 100)
				if err != nil {
					t.Fatal(err)
				}
				return roundTrip(t, f, p[:100])
			},
			kind: ErrFragment, reason: bundle.ReasonNoInformation, start: true,
		},
		{
			name: "no trust at all",
			make: func(t *testing.T) (*bundle.Bundle, []byte) { return signed(t, alice) },
			v:    &Verifier{},
			kind: ErrUntrustedSigner, reason: bundle.ReasonFailedSecurity, start: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, p := tc.make(t)
			v := tc.v
			if v == nil {
				v = &Verifier{Trust: trust}
			}
			_, startErr := v.Start(b)
			if tc.start != (startErr != nil) {
				t.Errorf("Start: %v; want refused from the header: %v", startErr, tc.start)
			}
			_, err := v.Verify(b, bytes.NewReader(p))
			if err == nil {
				t.Fatal("verified")
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("%v, want %v", err, tc.kind)
			}
			if r := bundle.ReasonOf(err); r != tc.reason {
				t.Errorf("reason %v, want %v (%v)", r, tc.reason, err)
			}
			// No other kind matches: each failure is told apart.
			for _, other := range allKinds {
				if other != tc.kind && errors.Is(err, other) {
					t.Errorf("%v also matches %v", err, other)
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.Kind != tc.kind {
				t.Errorf("%v is not an *Error of kind %v", err, tc.kind)
			}
			t.Log(err)
		})
	}
}

var allKinds = []*bundle.Error{ErrMissingSignature, ErrForgedSignature, ErrTamperedPayload, ErrTamperedPrimary, ErrIntegrity,
	ErrUntrustedSigner, ErrExpiredSigner, ErrSignerMismatch, ErrMalformedSecurity, ErrUnsupportedSecurity, ErrConflictingSecurity, ErrFragment}

// forge signs b as Sign would, but with any key and chain, as an attacker
// would: NewSigning refuses a chain that is not the key's.
func forge(t *testing.T, b *bundle.Bundle, payload []byte, key Key) {
	t.Helper()
	src := b.Primary.Source.NodeID()
	bib := blockMeta{Type: bundle.BlockIntegrity, Number: nextBlockNumber(b), Flags: bundle.BlockReplicate}
	chainParam := x5chainParam(key.Chain)
	var addProtected []byte
	if err := decMode.Unmarshal(chainParam.Value, &addProtected); err != nil {
		t.Fatal(err)
	}
	aad, err := externalAAD(b, src, defaultScope, payloadMeta(b), bib, addProtected, bib.Number)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(payload)
	r, err := signCOSE(key, aad, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	a := &ASB{Targets: []uint64{1}, Context: ContextCOSE, Source: src,
		Params:  []Param{chainParam, {ID: paramAADScope, Value: mustMarshal(defaultScope)}},
		Results: [][]Result{{r}}}
	data, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b.Blocks = append(b.Blocks, bundle.Block{Type: bib.Type, Number: bib.Number, Flags: bib.Flags, CRCType: b.Payload.CRCType, Data: data})
}

// editSign1 changes the COSE_Sign1 of b's integrity block, as a middlebox
// could.
func editSign1(t *testing.T, b *bundle.Bundle, edit func(*cose.UntaggedSign1Message)) {
	t.Helper()
	bib := b.Block(bundle.BlockIntegrity)
	a, err := ParseASB(bib.Data)
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if err := decMode.Unmarshal(a.Results[0][0].Value, &raw); err != nil {
		t.Fatal(err)
	}
	var m cose.UntaggedSign1Message
	if err := m.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	m.Headers.RawProtected, m.Headers.RawUnprotected = nil, nil
	edit(&m)
	enc, err := m.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	a.Results[0][0].Value = mustMarshal(enc)
	if bib.Data, err = a.Marshal(); err != nil {
		t.Fatal(err)
	}
}

func mustRequire(t testing.TB, c RequireConfig) *Requirement {
	t.Helper()
	r, err := NewRequirement(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestUnsignedNotRequired(t *testing.T) {
	b, p := roundTrip(t, newBundle(t, "dtn://carol/app", 10), make([]byte, 10))
	v := &Verifier{Require: mustRequire(t, RequireConfig{RequireFor: []string{"dtn://cloud/**"}})}
	c, err := v.Start(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Signed() || c.Principal() != acl.Claimed("dtn://carol/") {
		t.Errorf("unsigned check: signed %v, principal %v", c.Signed(), c.Principal())
	}
	c.Write(p)
	if s, err := c.Finish(); err != nil || s != (Signer{}) {
		t.Errorf("Finish: %+v, %v", s, err)
	}
}

// TestTOFU: under trust-on-first-use a signature is accepted only from a
// node whose key a direct connection pinned, and verifying never pins.
func TestTOFU(t *testing.T) {
	pins, err := identity.OpenPins(filepath.Join(t.TempDir(), "pins.json"))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := identity.NewTrust(nil, pins)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := identity.Generate("dtn://alice/", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := KeyOf(alice)
	if err != nil {
		t.Fatal(err)
	}
	payload := randomPayload(t, 1000)
	b := newBundle(t, "dtn://alice/app", len(payload))
	if err := Sign(b, bytes.NewReader(payload), key); err != nil {
		t.Fatal(err)
	}
	b, payload = roundTrip(t, b, payload)
	v := &Verifier{Trust: trust}
	if _, err := v.Verify(b, bytes.NewReader(payload)); !errors.Is(err, ErrUntrustedSigner) || !strings.Contains(err.Error(), "not pinned") {
		t.Fatalf("unpinned signer: %v", err)
	}
	if pins.Len() != 0 {
		t.Fatal("verifying a signature pinned its key")
	}
	// alice connects directly: the TLS handshake pins her key.
	if _, err := trust.Verify(alice.Chain(), ""); err != nil {
		t.Fatal(err)
	}
	s, err := v.Verify(b, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if s.Via != identity.ViaTOFU || s.NodeID != "dtn://alice/" || s.Name != "" {
		t.Errorf("signer %+v", s)
	}
	// Another key for alice is refused.
	impostor, err := identity.Generate("dtn://alice/", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ikey, _ := KeyOf(impostor)
	b2 := newBundle(t, "dtn://alice/app", len(payload))
	if err := Sign(b2, bytes.NewReader(payload), ikey); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(b2, bytes.NewReader(payload)); !errors.Is(err, ErrUntrustedSigner) {
		t.Errorf("impostor: %v", err)
	}
	// So is an expired certificate, judged by the injected clock.
	late := &Verifier{Trust: trust, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}
	if _, err := late.Verify(b, bytes.NewReader(payload)); !errors.Is(err, ErrExpiredSigner) {
		t.Errorf("expired under TOFU: %v", err)
	}
}

func TestHMACFullScope(t *testing.T) {
	payload := randomPayload(t, 50_000)
	b := newBundle(t, "ipn:7.1", len(payload))
	key := []byte("0123456789abcdef0123456789abcdef")
	if err := SignHMAC(b, bytes.NewReader(payload), HMACKey{Key: key, Scope: ScopeAll}); err != nil {
		t.Fatal(err)
	}
	got, p := roundTrip(t, b, payload)
	v := &Verifier{HMACKey: func(src bundle.EID) []byte {
		if src == bundle.IPN(7, 0) {
			return key
		}
		return nil
	}}
	s, err := v.Verify(got, bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	if s.NodeID != "ipn:7.0" || s.Via != ViaHMAC {
		t.Errorf("signer %+v", s)
	}
	// Hop count changes are not covered; the destination is.
	hc, _, _ := got.HopCount()
	hc.Count++
	got.SetHopCount(hc)
	if _, err := v.Verify(got, bytes.NewReader(p)); err != nil {
		t.Errorf("after a hop: %v", err)
	}
	got.Primary.Destination = bundle.IPN(9, 1)
	if _, err := v.Verify(got, bytes.NewReader(p)); !errors.Is(err, ErrIntegrity) {
		t.Errorf("changed destination: %v", err)
	}
}

func TestSignRefuses(t *testing.T) {
	ca := newTestCA(t, "campfire")
	alice := ca.issue(t, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	bob := ca.issue(t, "campfire/bob", "dtn://bob/", time.Time{}, time.Time{})
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		src  string
		key  Key
		want string
	}{
		{"another node's bundle", "dtn://alice/app", bob, "not the bundle's source"},
		{"key not the certificate's", "dtn://alice/app", Key{Signer: other, Chain: alice.Chain}, "not the signing key's"},
		{"no certificate", "dtn://alice/app", Key{Signer: other}, "no certificate"},
	} {
		b := newBundle(t, tc.src, 1)
		if err := Sign(b, bytes.NewReader([]byte{1}), tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	b := newBundle(t, "dtn://alice/app", 10)
	if err := Sign(b, bytes.NewReader([]byte{1, 2, 3}), alice); !errors.Is(err, bundle.ErrPayloadLength) {
		t.Errorf("short payload: %v", err)
	}
	if len(b.Blocks) != 1 { // the hop count block only
		t.Errorf("a failed signature left blocks behind: %+v", b.Blocks)
	}
}

func TestRequirement(t *testing.T) {
	r := mustRequire(t, RequireConfig{RequireFor: []string{"dtn://cloud/**", "ipn:12.*", "dtn://*/inbox"}})
	for eid, want := range map[string]bool{
		"dtn://cloud/":          true,
		"dtn://cloud/mail/x":    true,
		"dtn://cloudy/x":        false,
		"ipn:12.3":              true,
		"ipn:120.3":             false,
		"dtn://bob/inbox":       true,
		"dtn://bob/inbox/extra": false,
		"dtn://bob/other":       false,
	} {
		if got := r.Required(bundle.MustParseEID(eid)); got != want {
			t.Errorf("Required(%s) = %v, want %v", eid, got, want)
		}
	}
	if !mustRequire(t, RequireConfig{RequireAll: true}).Required(bundle.MustParseEID("dtn://x/y")) {
		t.Error("require_all does not require")
	}
	var none *Requirement
	if none.Required(bundle.MustParseEID("dtn://x/y")) {
		t.Error("nil requirement requires")
	}
	if _, err := NewRequirement(RequireConfig{RequireFor: []string{"dtn://ok/*", "http://x"}}); err == nil || !strings.Contains(err.Error(), "signatures.require_for[1]") {
		t.Errorf("bad pattern: %v", err)
	}
}

// TestReassembled: a signed bundle split into fragments verifies once
// reassembled, whichever fragment arrives first.
func TestReassembled(t *testing.T) {
	ca := newTestCA(t, "campfire")
	alice := ca.issue(t, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	payload := randomPayload(t, 10_000)
	b := newBundle(t, "dtn://alice/app", len(payload))
	if err := Sign(b, bytes.NewReader(payload), alice); err != nil {
		t.Fatal(err)
	}
	pieces, err := b.Split(3000)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Trust: ca.trust(t)}
	var parts []bundle.Part
	for i := len(pieces) - 1; i >= 0; i-- { // last fragment first
		pc := pieces[i]
		f, fp := roundTrip(t, pc.Bundle, payload[pc.Offset:pc.Offset+pc.Length])
		if f.Block(bundle.BlockIntegrity) == nil {
			t.Fatalf("fragment %d lost the integrity block", i)
		}
		if _, err := v.Start(f); !errors.Is(err, ErrFragment) {
			t.Fatalf("fragment %d: %v", i, err)
		}
		parts = append(parts, bundle.Part{Bundle: f, Payload: bytes.NewReader(fp)})
	}
	whole, r, err := bundle.Reassemble(parts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(whole, r); err != nil {
		t.Fatalf("reassembled: %v", err)
	}
}
