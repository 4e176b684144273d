package policy

import (
	"strings"
	"testing"

	"github.com/mulegate/mulegate/bundle"
)

func TestEIDPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"**", []string{"dtn://a/b", "ipn:1.2", "dtn:none"}, nil},
		{"dtn://cloud/**", []string{"dtn://cloud/", "dtn://cloud/mail/x/y"}, []string{"dtn://cloudy/", "dtn://other/cloud/"}},
		{"dtn://cloud/mail/*", []string{"dtn://cloud/mail/", "dtn://cloud/mail/bob"}, []string{"dtn://cloud/mail/bob/x", "dtn://cloud/logs/a"}},
		{"dtn://*/inbox", []string{"dtn://alice/inbox"}, []string{"dtn://alice/inbox/2", "dtn://a/b/inbox"}},
		{"ipn:12.*", []string{"ipn:12.0", "ipn:12.7"}, []string{"ipn:120.1", "ipn:1.12"}},
		{"dtn://a.b/x", []string{"dtn://a.b/x"}, []string{"dtn://aXb/x"}}, // '.' is literal
		{"ipn:1.2", []string{"ipn:1.2"}, []string{"ipn:1.20"}},
	} {
		p, err := ParseEIDPattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		for _, s := range tc.match {
			if !p.Match(bundle.MustParseEID(s)) {
				t.Errorf("%q does not match %s", tc.pattern, s)
			}
		}
		for _, s := range tc.miss {
			if p.Match(bundle.MustParseEID(s)) {
				t.Errorf("%q matches %s", tc.pattern, s)
			}
		}
	}
	for _, bad := range []string{"", "http://x/", "dtn://a/***"} {
		if _, err := ParseEIDPattern(bad); err == nil {
			t.Errorf("ParseEIDPattern(%q) succeeded", bad)
		}
	}
	if (EIDPattern{}).Match(bundle.MustParseEID("dtn://a/")) {
		t.Error("the zero pattern matches")
	}
}

func FuzzEIDPattern(f *testing.F) {
	for _, s := range []string{"**", "dtn://cloud/**", "ipn:12.*", "dtn://*/x", "dtn://(/["} {
		f.Add(s, "dtn://cloud/mail/x")
	}
	f.Fuzz(func(t *testing.T, pattern, eid string) {
		p, err := ParseEIDPattern(pattern)
		if err != nil {
			return
		}
		e, err := bundle.ParseEID(eid)
		if err != nil {
			return
		}
		got := p.Match(e)
		// A pattern without wildcards matches exactly its own text.
		if !strings.Contains(pattern, "*") && got != (pattern == e.String()) {
			t.Fatalf("%q vs %s: %v", pattern, e, got)
		}
	})
}
