package api

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The query parameters of a send are untrusted input: parsing never
// panics, every error names a parameter, and what parses re-encodes to the
// same parameters.
func FuzzParseSendParams(f *testing.F) {
	for _, s := range []string{
		"destination=dtn://c/x",
		"destination=dtn%3A%2F%2F~g%2Fchat&lifetime=7d&report=delivery,deletion&report_to=dtn://a/r&hop_limit=12&source=dtn://a/app&sign=false",
		"destination=ipn:2.1&lifetime=1h30m&report=all",
		"destination=dtn://c/x&flags=must_not_fragment,app_ack,status_time", "destination=dtn://c/x&flags=is_fragment",
		"destination=dtn:none", "lifetime=-1s", "destination=dtn://c/x&destination=dtn://c/y", "%zz", "hop_limit=99999999999999999999",
		"destination=dtn://c/x&lifetime=36500d", "destination=dtn://c/x&lifetime=1e9h",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := ParseSendParams(raw)
		if err != nil {
			pe, ok := err.(*ParamError)
			if !ok || pe.Param == "" || pe.Msg == "" {
				t.Fatalf("error %v (%T) names no parameter", err, err)
			}
			return
		}
		if p.Destination.IsZero() || p.Lifetime <= 0 || p.HopLimit > 255 {
			t.Fatalf("accepted %q as %+v", raw, p)
		}
		again, err := ParseSendParams(p.Query())
		if err != nil {
			t.Fatalf("%q parsed, but its re-encoding %q does not: %v", raw, p.Query(), err)
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("round trip of %q: %+v != %+v", raw, again, p)
		}
	})
}

func FuzzParseBundleQuery(f *testing.F) {
	for _, s := range []string{"", "state=pending", "state=carried&destination=dtn://c/x&limit=10", "limit=0", "state=&limit=-1", "x=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := ParseBundleQuery(raw)
		if err != nil {
			if _, ok := err.(*ParamError); !ok {
				t.Fatalf("error %v is not a *ParamError", err)
			}
			return
		}
		if q.Limit < 0 || q.Limit > MaxListLimit {
			t.Fatalf("limit %d accepted", q.Limit)
		}
		again, err := ParseBundleQuery(q.Query())
		if err != nil || again != q {
			t.Fatalf("round trip of %q: %+v, %v", raw, again, err)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"24h", "7d", "90m", "0d", "d", "1.5d", "36501d", "-1h", "1h30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && strings.HasSuffix(s, "d") && d > 36500*24*time.Hour {
			t.Fatalf("%q → %v", s, d)
		}
	})
}

// The event stream a client reads comes from the network.
func FuzzReadEvents(f *testing.F) {
	f.Add([]byte(": deliveries for dtn://a/x\n\nevent: delivery\nid: dtn://a/|1.0\ndata: {\"id\":\"x\"}\n\n: keep-alive\n\n"))
	f.Add([]byte("data: a\ndata: b\n\n"))
	f.Add([]byte("event\n\nid\nbogus: x\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		err := ReadEvents(bytes.NewReader(data), func(ev Event) error {
			n++
			if strings.ContainsAny(ev.Name, "\r\n") || strings.ContainsAny(ev.ID, "\r\n") || bytes.ContainsRune(ev.Data, '\r') {
				t.Fatalf("event %+v spans lines", ev)
			}
			return nil
		})
		if lines := bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")); err == nil && n > lines {
			t.Fatalf("%d events from %d line ends", n, lines)
		}
	})
}

func FuzzParseEndpointQuery(f *testing.F) {
	for _, s := range []string{"endpoint=dtn://a/inbox", "endpoint=dtn://~g/chat&limit=5", "endpoint=dtn:none", "endpoint=ipn:1.2&limit=99999", "limit=1", "endpoint=&endpoint="} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, withLimit bool) {
		ep, limit, err := parseEndpointQuery(raw, withLimit)
		if err != nil {
			if pe, ok := err.(*ParamError); !ok || pe.Param == "" {
				t.Fatalf("error %v names no parameter", err)
			}
			return
		}
		if ep.IsZero() || ep.IsNone() || limit < 0 || limit > MaxListLimit || (!withLimit && limit != 0) {
			t.Fatalf("accepted %q: %v %d", raw, ep, limit)
		}
	})
}
