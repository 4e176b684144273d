package bpsec

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func FuzzParseASB(f *testing.F) {
	f.Add(unhex(f, rfcA1ASB))
	f.Add(unhex(f, rfcA4ASB))
	f.Add([]byte{0x81, 0x01, 0x03, 0x00, 0x82, 0x01, 0x00, 0x81, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseASB(data)
		if err != nil {
			if kindOf(err) == nil {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		enc, err := a.Marshal()
		if err != nil {
			t.Fatalf("parsed ASB does not marshal: %v", err)
		}
		b, err := ParseASB(enc)
		if err != nil {
			t.Fatalf("marshalled ASB does not parse: %v", err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the ASB:\n%+v\n%+v", a, b)
		}
		// The context-specific parsers never panic either.
		parseCOSEParams(a, 2)
		parseHMACParams(a, 2)
	})
}

// FuzzCOSE feeds the COSE decoding path: a COSE_Sign1 result, its headers
// and certificate chain, and the COSE context parameters.
func FuzzCOSE(f *testing.F) {
	ca := newTestCA(f, "campfire")
	key := ca.issue(f, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	b := newBundle(f, "dtn://alice/app", 3)
	if err := Sign(b, bytes.NewReader([]byte{1, 2, 3}), key); err != nil {
		f.Fatal(err)
	}
	a, err := ParseASB(b.Block(bundle.BlockIntegrity).Data)
	if err != nil {
		f.Fatal(err)
	}
	var sign1 []byte
	if err := decMode.Unmarshal(a.Results[0][0].Value, &sign1); err != nil {
		f.Fatal(err)
	}
	f.Add(sign1, []byte(a.Params[0].Value), []byte(a.Params[1].Value))
	f.Add([]byte{0x84, 0x40, 0xa0, 0xf6, 0x40}, []byte{0x40}, []byte{0xa0})
	f.Fuzz(func(t *testing.T, sign1, addProtected, scope []byte) {
		msg, err := parseSign1(Result{ID: resultSign1, Value: mustMarshal(sign1)}, 2)
		asb := &ASB{Params: []Param{{ID: paramAdditionalProtected, Value: addProtected}, {ID: paramAADScope, Value: scope}}}
		params, perr := parseCOSEParams(asb, 2)
		if perr == nil {
			externalAAD(b, a.Source, params.scope, payloadMeta(b), blockMeta{Type: bundle.BlockIntegrity, Number: 2}, params.addProtected, 2)
		}
		if err != nil {
			return
		}
		if perr != nil {
			params = &coseParams{}
		}
		certChain(msg, params, 2)
	})
}

// FuzzVerify feeds whole bundles to the verifier.
func FuzzVerify(f *testing.F) {
	ca := newTestCA(f, "campfire")
	key := ca.issue(f, "campfire/alice", "dtn://alice/", time.Time{}, time.Time{})
	payload := []byte("hello, campfire")
	for _, sign := range []func(*bundle.Bundle) error{
		func(b *bundle.Bundle) error { return Sign(b, bytes.NewReader(payload), key) },
		func(b *bundle.Bundle) error {
			return SignHMAC(b, bytes.NewReader(payload), HMACKey{Key: []byte("k"), Scope: ScopeAll})
		},
		func(*bundle.Bundle) error { return nil },
	} {
		b := newBundle(f, "dtn://alice/app", len(payload))
		if err := sign(b); err != nil {
			f.Fatal(err)
		}
		wire, err := bundle.Marshal(b, payload)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire)
	}
	f.Add(unhex(f, rfcA1Final))
	v := &Verifier{Trust: ca.trust(f), HMACKey: func(bundle.EID) []byte { return []byte("k") },
		Require: mustRequire(f, RequireConfig{RequireAll: true})}
	f.Fuzz(func(t *testing.T, wire []byte) {
		b, p, err := bundle.Unmarshal(wire, bundle.Limits{})
		if err != nil {
			return
		}
		s, err := v.Verify(b, bytes.NewReader(p))
		if err == nil && s.NodeID == "" {
			t.Fatal("verified without a signer while signatures are required")
		}
	})
}
