package bundle

import (
	"errors"
	"testing"
)

func TestParseEID(t *testing.T) {
	tests := []struct {
		in        string
		want      string // String() after parsing
		node      string // NodeID().String()
		singleton bool
		service   string
	}{
		{"dtn:none", "dtn:none", "dtn:none", false, ""},
		{"dtn://alice/", "dtn://alice/", "dtn://alice/", true, ""},
		{"dtn://alice", "dtn://alice/", "dtn://alice/", true, ""},
		{"dtn://alice/chat/room1", "dtn://alice/chat/room1", "dtn://alice/", true, "chat/room1"},
		{"dtn://~campfire/chat", "dtn://~campfire/chat", "dtn://~campfire/", false, "chat"},
		{"dtn://node-1.example/x", "dtn://node-1.example/x", "dtn://node-1.example/", true, "x"},
		{"ipn:12.7", "ipn:12.7", "ipn:12.0", true, "7"},
		{"ipn:0.0", "ipn:0.0", "ipn:0.0", true, "0"},
		{"ipn:18446744073709551615.1", "ipn:18446744073709551615.1", "ipn:18446744073709551615.0", true, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e, err := ParseEID(tt.in)
			if err != nil {
				t.Fatalf("ParseEID(%q): %v", tt.in, err)
			}
			if e.String() != tt.want || e.NodeID().String() != tt.node || e.IsSingleton() != tt.singleton || e.Service() != tt.service {
				t.Errorf("got %s node %s singleton %v service %q; want %s %s %v %q", e, e.NodeID(), e.IsSingleton(), e.Service(), tt.want, tt.node, tt.singleton, tt.service)
			}
			// CBOR round trip.
			enc, err := e.MarshalCBOR()
			if err != nil {
				t.Fatal(err)
			}
			var back EID
			if err := back.UnmarshalCBOR(enc); err != nil || back != e {
				t.Errorf("CBOR round trip: %v, %v", back, err)
			}
		})
	}
}

func TestParseEIDErrors(t *testing.T) {
	for _, in := range []string{
		"", "dtn:", "dtn:nothing", "dtn:///x", "dtn://~/x", "dtn://a b/", "dtn://a|b/", "dtn://a/x y",
		"ipn:1", "ipn:1.2.3", "ipn:a.b", "ipn:-1.2", "ipn:01.2", "ipn:18446744073709551616.0",
		"http://x/", "DTN://a/",
	} {
		if _, err := ParseEID(in); !errors.Is(err, ErrBadEID) {
			t.Errorf("ParseEID(%q) = %v, want ErrBadEID", in, err)
		}
	}
}

func TestEIDCBORErrors(t *testing.T) {
	for name, hexs := range map[string]string{
		"not an array":         "01",
		"three elements":       "83010000",
		"unknown scheme":       "820300",
		"dtn number not 0":     "820101",
		"dtn none as text":     "8201646e6f6e65",
		"dtn missing slash":    "8201632f2f61",
		"ipn not pair":         "82028101",
		"ipn negative":         "8202822001",
		"dtn ssp wrong type":   "820140",
		"scheme not integer":   "8240 00",
		"truncated":            "8201",
		"ipn three components": "820283010203",
	} {
		var e EID
		err := e.UnmarshalCBOR(parseAnnotatedHex(t, hexs))
		if !errors.Is(err, ErrBadEID) {
			t.Errorf("%s: got %v, want ErrBadEID", name, err)
		}
	}
}

func TestIDStringRoundTrip(t *testing.T) {
	for _, id := range []ID{
		{Source: MustParseEID("dtn://a/x"), Creation: CreationTimestamp{Time: 12345, Sequence: 6}},
		{Source: MustParseEID("ipn:3.1"), Creation: CreationTimestamp{Time: 0, Sequence: 0}},
		{Source: MustParseEID("dtn://a/x.y/z"), Creation: CreationTimestamp{Time: 1, Sequence: 2}, Fragment: true, Offset: 100, Length: 50},
		{Source: None, Creation: CreationTimestamp{Time: 9}},
	} {
		got, err := ParseID(id.String())
		if err != nil || got != id {
			t.Errorf("ParseID(%q) = %+v, %v", id.String(), got, err)
		}
		if len(id.Key()) != 32 {
			t.Errorf("Key %q is not 32 hex characters", id.Key())
		}
	}
	for _, bad := range []string{"", "dtn://a/", "dtn://a/|x.1", "dtn://a/|1", "dtn://a/|1.2|3", "nope|1.2"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
}
