package gateway

import (
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
)

func TestMatchEID(t *testing.T) {
	tests := []struct {
		pattern, eid string
		want         bool
	}{
		// "*" stands for one segment's characters, never a "/".
		{"dtn://cloud/mail/*", "dtn://cloud/mail/alice", true},
		{"dtn://cloud/mail/*", "dtn://cloud/mail/", true},
		{"dtn://cloud/mail/*", "dtn://cloud/mail/alice/inbox", false},
		{"dtn://cloud/mail/*", "dtn://cloud/mail", false},
		{"dtn://cloud/mail/*", "dtn://other/mail/alice", false},
		{"dtn://*/inbox", "dtn://alice/inbox", true},
		{"dtn://*/inbox", "dtn://alice/x/inbox", false},
		{"dtn://cloud/*.txt", "dtn://cloud/report.txt", true},
		{"dtn://cloud/*.txt", "dtn://cloud/report.pdf", false},
		{"dtn://cloud/a*b*c", "dtn://cloud/aXbYc", true},
		{"dtn://cloud/a*b*c", "dtn://cloud/aXbY/c", false},
		// A final "**" stands for any rest, slashes included, or none.
		{"dtn://cloud/logs/**", "dtn://cloud/logs/syslog", true},
		{"dtn://cloud/logs/**", "dtn://cloud/logs/syslog/kern", true},
		{"dtn://cloud/logs/**", "dtn://cloud/logs/", true},
		{"dtn://cloud/logs/**", "dtn://cloud/logs", false},
		{"dtn://cloud/logs/**", "dtn://cloud/logsx/a", false},
		{"dtn://*/logs/**", "dtn://mule1/logs/a/b", true},
		{"dtn://*/logs/**", "dtn://mule1/x/logs/a", false},
		{"dtn://cloud/**", "dtn://cloud/", true},
		{"dtn://cloud/**", "dtn://cloudy/", false},
		// "**" alone matches everything, whatever the scheme.
		{"**", "dtn://anyone/anything/at/all", true},
		{"**", "ipn:5.1", true},
		// ipn: the same rules over the text form.
		{"ipn:5.*", "ipn:5.1", true},
		{"ipn:5.*", "ipn:55.1", false},
		{"ipn:5.1", "ipn:5.1", true},
		{"ipn:5.1", "ipn:5.10", false},
		// No pattern at all is exact.
		{"dtn://cloud/inbox", "dtn://cloud/inbox", true},
		{"dtn://cloud/inbox", "dtn://cloud/inbox2", false},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" "+tc.eid, func(t *testing.T) {
			if err := config.ValidPattern(tc.pattern); err != nil {
				t.Fatalf("the table's pattern is not valid in a configuration: %v", err)
			}
			if got := MatchEID(tc.pattern, bundle.MustParseEID(tc.eid)); got != tc.want {
				t.Errorf("MatchEID(%q, %s) = %v, want %v", tc.pattern, tc.eid, got, tc.want)
			}
		})
	}
}

// The first matching route wins, so a specific route goes before a general
// one.
func TestRouteForFirstMatch(t *testing.T) {
	rs, err := compileRoutes([]config.Route{
		{Match: "dtn://cloud/logs/audit/**", Adapter: "s3"},
		{Match: "dtn://cloud/logs/**", Adapter: "nats"},
	})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{routes: rs}
	for eid, want := range map[string]string{
		"dtn://cloud/logs/audit/x": "s3",
		"dtn://cloud/logs/app":     "nats",
		"dtn://cloud/mail/x":       "",
	} {
		r, ok := n.routeFor(bundle.MustParseEID(eid))
		if r.adapter != want || ok != (want != "") {
			t.Errorf("routeFor(%s) = %q, %v; want %q", eid, r.adapter, ok, want)
		}
	}
	if _, err := compileRoutes([]config.Route{{Match: "", Adapter: "x"}}); err == nil {
		t.Error("an empty match compiled")
	}
}

func TestExpandOptions(t *testing.T) {
	created := time.Date(2031, 4, 5, 23, 59, 58, 0, time.UTC)
	b, err := bundle.New(bundle.Params{
		Source: bundle.MustParseEID("dtn://mule1/sensors/temp"), Destination: bundle.MustParseEID("dtn://cloud/logs/syslog/kern"),
		Created: created, Sequence: 7, Lifetime: time.Hour, CRCType: bundle.CRC32C,
	})
	if err != nil {
		t.Fatal(err)
	}
	ipn, err := bundle.New(bundle.Params{
		Source: bundle.MustParseEID("ipn:12.3"), Destination: bundle.MustParseEID("ipn:5.1"),
		Created: created, Lifetime: time.Hour, CRCType: bundle.CRC32C,
	})
	if err != nil {
		t.Fatal(err)
	}
	id := b.ID()
	tests := []struct {
		name string
		b    *bundle.Bundle
		tmpl string
		want string
	}{
		{"NATS subject", b, "logs.{src_node}.{service}", "logs.mule1.logs.syslog.kern"},
		{"S3 key", b, "{prefix}/{src_node}/{date}/{bundle_key}", "{prefix}/mule1/2031-04-05/" + id.Key()},
		{"endpoints", b, "{src} -> {dst} ({dst_node})", "dtn://mule1/sensors/temp -> dtn://cloud/logs/syslog/kern (cloud)"},
		{"bundle ID and sequence", b, "{bundle_id}#{seq}", id.String() + "#7"},
		{"no templates", b, "plain", "plain"},
		{"unknown names stay", b, "{nope}", "{nope}"},
		{"repeated", b, "{seq}{seq}", "77"},
		{"ipn", ipn, "{src_node}.{service}.{dst_node}", "12.1.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ExpandOptions(map[string]string{"k": tc.tmpl}, tc.b)
			if got["k"] != tc.want {
				t.Errorf("ExpandOptions(%q) = %q, want %q", tc.tmpl, got["k"], tc.want)
			}
		})
	}
	if got := ExpandOptions(nil, b); got != nil {
		t.Errorf("no options expanded to %v, want nil", got)
	}
	opts := map[string]string{"subject": "{src_node}"}
	ExpandOptions(opts, b)
	if opts["subject"] != "{src_node}" {
		t.Error("ExpandOptions changed the route's own map")
	}

	// A source without a clock (creation time 0) files under today's date.
	noClock := *b
	noClock.Primary.Creation.Time = 0
	before := time.Now().UTC().Format("2006-01-02")
	got := ExpandOptions(map[string]string{"d": "{date}"}, &noClock)["d"]
	after := time.Now().UTC().Format("2006-01-02")
	if got != before && got != after {
		t.Errorf("{date} without a clock = %q, want today (%s)", got, before)
	}
}
