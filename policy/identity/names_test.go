package identity

import (
	"strings"
	"testing"
)

func TestCheckNodeID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"dtn://alice/", true},
		{"dtn://node-1.campfire/", true},
		{"dtn://a_b/", true},
		{"ipn:12.0", true},
		{"ipn:18446744073709551615.0", true},
		{"", false},
		{"alice", false},
		{"dtn://alice", false},
		{"dtn:///", false},
		{"dtn://alice/inbox", false},
		{"dtn://alice//", false},
		{"dtn://al ice/", false},
		{"dtn://alice./", false},
		{"dtn://.alice/", false},
		{"dtn://a..b/", false},
		{"dtn://" + strings.Repeat("a", 64) + "/", false},
		{"dtn:none", false},
		{"DTN://alice/", false},
		{"ipn:0.0", false},
		{"ipn:12.1", false},
		{"ipn:012.0", false},
		{"ipn:+12.0", false},
		{"ipn:-1.0", false},
		{"ipn:18446744073709551616.0", false},
		{"ipn:1.2.0", false},
		{"https://alice/", false},
	}
	for _, tc := range tests {
		if err := CheckNodeID(tc.id); (err == nil) != tc.ok {
			t.Errorf("CheckNodeID(%q) = %v, want ok %v", tc.id, err, tc.ok)
		}
	}
}

func TestCheckMemberName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"campfire/alice", true},
		{"campfire/kitchen/pi", true},
		{"a.b-c_d/e", true},
		{"campfire", false},
		{"campfire/", false},
		{"/alice", false},
		{"campfire//alice", false},
		{"campfire/al ice", false},
		{"dtn://alice/", false},
		{"campfire/" + strings.Repeat("a", 60), false},
	}
	for _, tc := range tests {
		if err := CheckMemberName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckMemberName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	if g := GroupOf("campfire/kitchen/pi"); g != "campfire" {
		t.Errorf("GroupOf = %q", g)
	}
}
