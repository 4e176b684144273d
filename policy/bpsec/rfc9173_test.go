package bpsec

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// The vectors of RFC 9173 Appendix A, as the RFC prints them.
const (
	rfcKey     = "1a2b1a2b1a2b1a2b1a2b1a2b1a2b1a2b"
	rfcPayload = "526561647920746f2067656e657261746520612033322d62797465207061796c6f6164" // "Ready to generate a 32-byte payload"

	// A.1.1.3: the original bundle.
	rfcA1Original = "9f88070000820282010282028202018202820201820018281a000f424085010100" +
		"005823526561647920746f2067656e657261746520612033322d6279746520706179" +
		"6c6f6164ff"
	// A.1.3.1: the IPPT.
	rfcA1IPPT = "005823526561647920746f2067656e657261746520612033322d62797465207061796c6f6164"
	// A.1.3.2: the BIB's block-type-specific data (the ASB).
	rfcA1ASB = "810101018202820201828201078203008181820158403bdc69b3a34a2b5d3a8554" +
		"368bd1e808f606219d2a10a846eae3886ae4ecc83c4ee550fdfb1cc636b904e2f1a7" +
		"3e303dcd4b6ccece003e95e8164dcc89a156e1"
	// A.1.3.3: the whole BIB.
	rfcA1BIB = "850b0200005856810101018202820201828201078203008181820158403bdc69b3" +
		"a34a2b5d3a8554368bd1e808f606219d2a10a846eae3886ae4ecc83c4ee550fdfb1c" +
		"c636b904e2f1a73e303dcd4b6ccece003e95e8164dcc89a156e1"
	// A.1.4: the final bundle.
	rfcA1Final = "9f88070000820282010282028202018202820201820018281a000f4240850b0200" +
		"005856810101018202820201828201078203008181820158403bdc69b3a34a2b5d3a" +
		"8554368bd1e808f606219d2a10a846eae3886ae4ecc83c4ee550fdfb1cc636b904e2" +
		"f1a73e303dcd4b6ccece003e95e8164dcc89a156e185010100005823526561647920" +
		"746f2067656e657261746520612033322d62797465207061796c6f6164ff"

	// A.4.3: the BIB of the full-scope example (block 3, HMAC 384/384,
	// scope 0x07), whose IPPT and MAC the RFC also prints.
	rfcA4IPPT = "07880700008202820102820282020182" + "02820201820018281a000f4240010100" +
		"0b03005823526561647920746f206765" + "6e657261746520612033322d62797465" + "207061796c6f6164"
	rfcA4ASB = "81010101820282020182820106820307818182015830f75fe4c37f76f046165855" +
		"bd5ff72fbfd4e3a64b4695c40e2b787da005ae819f0a2e30a2e8b325527de8aefb52" +
		"e73d71"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rfcBundle is the example's original bundle: ipn:2.1 to ipn:1.2, creation
// time 0, sequence 40, lifetime 1,000,000 ms, no CRCs.
//
// It is built by hand: its creation time is 0 without a bundle age block,
// which RFC 9171 §4.3.1 forbids and bundle.Decode therefore refuses
// (ErrMissingAge), so the example cannot be decoded by mulegate.
func rfcBundle(payload []byte) *bundle.Bundle {
	return &bundle.Bundle{
		Primary: bundle.PrimaryBlock{
			Destination: bundle.IPN(1, 2),
			Source:      bundle.IPN(2, 1),
			ReportTo:    bundle.IPN(2, 1),
			Creation:    bundle.CreationTimestamp{Time: 0, Sequence: 40},
			Lifetime:    1_000_000 * time.Millisecond,
		},
		Payload: bundle.PayloadHeader{Length: uint64(len(payload))},
	}
}

// TestRFC9173ExampleA1 reproduces Appendix A.1 byte for byte: the original
// bundle, the IPPT, the ASB, the BIB and the final bundle.
func TestRFC9173ExampleA1(t *testing.T) {
	payload := unhex(t, rfcPayload)
	b := rfcBundle(payload)
	orig, err := bundle.Marshal(b, payload)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(orig); got != rfcA1Original {
		t.Fatalf("original bundle\n got %s\nwant %s", got, rfcA1Original)
	}

	key := HMACKey{Source: bundle.IPN(2, 1), Key: unhex(t, rfcKey), Variant: HMAC512, Scope: 0}
	prefix, err := ipptPrefix(b, key.Scope, payloadMeta(b), blockMeta{Type: bundle.BlockIntegrity, Number: 2})
	if err != nil {
		t.Fatal(err)
	}
	ippt := append(appendHead(prefix, 2, uint64(len(payload))), payload...)
	if got := hex.EncodeToString(ippt); got != rfcA1IPPT {
		t.Errorf("IPPT\n got %s\nwant %s", got, rfcA1IPPT)
	}

	if err := SignHMAC(b, bytes.NewReader(payload), key); err != nil {
		t.Fatal(err)
	}
	if len(b.Blocks) != 1 || b.Blocks[0].Number != 2 {
		t.Fatalf("blocks %+v", b.Blocks)
	}
	if got := hex.EncodeToString(b.Blocks[0].Data); got != rfcA1ASB {
		t.Errorf("ASB\n got %s\nwant %s", got, rfcA1ASB)
	}
	final, err := bundle.Marshal(b, payload)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(final); got != rfcA1Final {
		t.Errorf("final bundle\n got %s\nwant %s", got, rfcA1Final)
	}
	if !strings.Contains(hex.EncodeToString(final), rfcA1BIB) {
		t.Errorf("final bundle does not contain the RFC's BIB %s", rfcA1BIB)
	}

	// The RFC's ASB parses, and marshals back to itself.
	a, err := ParseASB(unhex(t, rfcA1ASB))
	if err != nil {
		t.Fatal(err)
	}
	if a.Context != ContextHMACSHA2 || a.Source != bundle.IPN(2, 1) || len(a.Params) != 2 || len(a.Results) != 1 {
		t.Errorf("parsed ASB %+v", a)
	}
	if re, err := a.Marshal(); err != nil || hex.EncodeToString(re) != rfcA1ASB {
		t.Errorf("re-marshalled ASB %x, %v", re, err)
	}

	// It verifies, with the key, and with nothing else.
	keys := func(src bundle.EID) []byte {
		if src == bundle.IPN(2, 1) {
			return unhex(t, rfcKey)
		}
		return nil
	}
	v := &Verifier{HMACKey: keys}
	s, err := v.Verify(b, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if s.NodeID != "ipn:2.0" || s.Via != ViaHMAC || s.Context != ContextHMACSHA2 || s.Block != 2 {
		t.Errorf("signer %+v", s)
	}
	bad := bytes.Clone(payload)
	bad[0] ^= 1
	if _, err := v.Verify(b, bytes.NewReader(bad)); !errors.Is(err, ErrIntegrity) || bundle.ReasonOf(err) != bundle.ReasonFailedSecurity {
		t.Errorf("tampered payload: %v", err)
	}
	wrongKey := &Verifier{HMACKey: func(bundle.EID) []byte { return []byte("another key") }}
	if _, err := wrongKey.Verify(b, bytes.NewReader(payload)); !errors.Is(err, ErrIntegrity) {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := (&Verifier{}).Verify(b, bytes.NewReader(payload)); !errors.Is(err, ErrUntrustedSigner) {
		t.Errorf("no key: %v", err)
	}

	// mulegate itself cannot decode the example: creation time 0 needs a
	// bundle age block. Should that ever change, decode and verify it too.
	if _, _, err := bundle.Unmarshal(final, bundle.Limits{}); !errors.Is(err, bundle.ErrMissingAge) {
		t.Logf("bundle.Unmarshal of the RFC bundle: %v (expected ErrMissingAge)", err)
	}
}

// TestRFC9173ExampleA4BIB reproduces the BIB of Appendix A.4 (full scope:
// primary block, payload header and BIB header in the IPPT).
func TestRFC9173ExampleA4BIB(t *testing.T) {
	payload := unhex(t, rfcPayload)
	b := rfcBundle(payload)
	// In A.4 the BCB is block 2, so the BIB is block 3. Stand in a block of
	// an unknown type for the BCB: the BIB's IPPT does not cover it.
	b.Blocks = append(b.Blocks, bundle.Block{Type: 192, Number: 2, Data: []byte{0}})
	key := HMACKey{Source: bundle.IPN(2, 1), Key: unhex(t, rfcKey), Variant: HMAC384, Scope: ScopeAll}
	prefix, err := ipptPrefix(b, key.Scope, payloadMeta(b), blockMeta{Type: bundle.BlockIntegrity, Number: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(append(appendHead(prefix, 2, uint64(len(payload))), payload...)); got != rfcA4IPPT {
		t.Errorf("IPPT\n got %s\nwant %s", got, rfcA4IPPT)
	}
	if err := SignHMAC(b, bytes.NewReader(payload), key); err != nil {
		t.Fatal(err)
	}
	bib := b.Block(bundle.BlockIntegrity)
	if bib == nil || bib.Number != 3 {
		t.Fatalf("BIB %+v", bib)
	}
	if got := hex.EncodeToString(bib.Data); got != rfcA4ASB {
		t.Errorf("ASB\n got %s\nwant %s", got, rfcA4ASB)
	}
	v := &Verifier{HMACKey: func(bundle.EID) []byte { return unhex(t, rfcKey) }}
	if _, err := v.Verify(b, bytes.NewReader(payload)); err != nil {
		t.Error(err)
	}
	// Full scope binds the primary block.
	b.Primary.Lifetime += time.Millisecond
	if _, err := v.Verify(b, bytes.NewReader(payload)); !errors.Is(err, ErrIntegrity) {
		t.Errorf("changed lifetime: %v", err)
	}
}
