package sdk_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/plugins/sdk"
)

func TestCheckEID(t *testing.T) {
	for _, tc := range []struct {
		eid  string
		want string // in the error; "" for none
	}{
		{"dtn://nodeC/inbox", ""},
		{"dtn://nodeC", ""},
		{"ipn:5.1", ""},
		{"dtn://~g/chat", ""},
		{"dtn:none", "no destination"},
		{"dtn://" + strings.Repeat("n", 1020), "longer than 1024"},
		{"dtn://a|b/x", "not allowed in a node name"},
		{"dtn://~/x", "group node name"},
		{"dtn://n/ x", "printable ASCII"},
		{"ipn:05.1", "decimal"},
		{"mailto:x", "scheme"},
		{"", "empty"},
	} {
		err := sdk.CheckEID(tc.eid)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckEID(%q) = %v, want %q", tc.eid, err, tc.want)
		}
	}
}

// FuzzCheckEID: CheckEID accepts exactly the destinations the node's own
// parser accepts (dtn:none aside, which is no destination).
func FuzzCheckEID(f *testing.F) {
	for _, s := range []string{"dtn://nodeC/inbox", "dtn://nodeC", "dtn://nodeC/", "ipn:5.1", "ipn:05.1", "ipn:5", "ipn:5.1.2", "dtn:none",
		"dtn://~/x", "dtn://a b/", "dtn://n/ x", "mailto:x", "dtn://n/\x7f", "ipn:18446744073709551616.1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > sdk.MaxEIDLen {
			if sdk.CheckEID(s) == nil {
				t.Fatalf("CheckEID accepts a %d-byte endpoint ID", len(s))
			}
			return
		}
		mine := sdk.CheckEID(s)
		_, theirs := bundle.ParseEID(s)
		if s == "dtn:none" {
			if mine == nil {
				t.Fatal("CheckEID accepts dtn:none as a destination")
			}
			return
		}
		if (mine == nil) != (theirs == nil) {
			t.Fatalf("CheckEID(%q) = %v but bundle.ParseEID says %v", s, mine, theirs)
		}
	})
}

// FuzzDTNEndpoint: DTNEndpoint makes an endpoint ID exactly when the node
// parses dtn://node/service with that node and that service, and then
// makes that one.
func FuzzDTNEndpoint(f *testing.F) {
	for _, ns := range [][2]string{{"nodeC", "inbox"}, {"nodeC", ""}, {"~g", "chat/room"}, {"a|b", "c"}, {"", "x"}, {"nodé", "x"},
		{"n", "s p"}, {"%41", "b"}, {"a/b", "c"}, {"~", "x"}, {"n", "a//b"}} {
		f.Add(ns[0], ns[1])
	}
	f.Fuzz(func(t *testing.T, node, service string) {
		eid, err := sdk.DTNEndpoint(node, service)
		parsed, perr := bundle.ParseEID("dtn://" + node + "/" + service)
		same := perr == nil && parsed.NodeName() == node && parsed.Service() == service
		if (err == nil) != same {
			t.Fatalf("DTNEndpoint(%q, %q) = %q, %v; the node parses it as %v, %v", node, service, eid, err, parsed, perr)
		}
		if err == nil && eid != parsed.String() {
			t.Fatalf("DTNEndpoint(%q, %q) = %q, not %q", node, service, eid, parsed)
		}
	})
}

func TestDTNEndpointSaysWhy(t *testing.T) {
	for _, tc := range []struct{ node, service, want string }{
		{"", "x", "node name is empty"},
		{"nodé", "x", "must be ASCII"},
		{"a/b", "x", "not allowed in a node name"},
		{"a|b", "x", "not allowed in a node name"},
		{"n", "s p", "printable ASCII"},
	} {
		if _, err := sdk.DTNEndpoint(tc.node, tc.service); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DTNEndpoint(%q, %q) = %v, want %q", tc.node, tc.service, err, tc.want)
		}
	}
}

func TestSplitEID(t *testing.T) {
	for _, tc := range []struct{ eid, node, service string }{
		{"dtn://mule1/app/logs", "mule1", "app/logs"},
		{"dtn://mule1", "mule1", ""},
		{"ipn:5.1", "5", "1"},
		{"dtn:none", "", ""},
		{"mailto:x", "", ""},
	} {
		if node, service := sdk.SplitEID(tc.eid); node != tc.node || service != tc.service {
			t.Errorf("SplitEID(%q) = %q, %q; want %q, %q", tc.eid, node, service, tc.node, tc.service)
		}
	}
}

// The adapters' {bundle_key} is the node's.
func TestBundleKey(t *testing.T) {
	const id = "dtn://mule1/app|800000000000.1"
	parsed, err := bundle.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := sdk.BundleKey(id); got != parsed.Key() || len(got) != 32 {
		t.Fatalf("BundleKey(%q) = %q, the node's is %q", id, got, parsed.Key())
	}
}

func TestParseLifetime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3600000", time.Hour, true},
		{" 1 ", time.Millisecond, true},
		{"0", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"", 0, false},
		{"9223372036854775807", 0, false},
	} {
		if got, ok := sdk.ParseLifetime(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("ParseLifetime(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
