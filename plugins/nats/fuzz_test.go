package nats_test

import (
	"strings"
	"testing"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/plugins/nats"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// FuzzDestinationForSubject: every subject maps to an EID the node accepts
// or to an error, never to a bad EID; the mapping keeps the node and the
// service's tokens; and EIDs that fit in a subject come back from one.
func FuzzDestinationForSubject(f *testing.F) {
	for _, s := range []string{"to.nodeC.inbox", "to.nodeC", "to.~g.chat.room", "to.a|b.c", "to..x", "to.x.", "x.y.z", "to.nodé.x", "to.n.*", "to.n.>", "to.n. x", "to.%41.b"} {
		f.Add("to", s)
	}
	f.Add("", "nodeC.inbox")
	f.Add("a.b", "a.b.n.s")
	f.Fuzz(func(t *testing.T, prefix, subject string) {
		eid, err := nats.DestinationForSubject(prefix, subject)
		if err != nil {
			return
		}
		parsed, perr := bundle.ParseEID(eid)
		if perr != nil {
			t.Fatalf("DestinationForSubject(%q, %q) = %q, which the node refuses: %v", prefix, subject, eid, perr)
		}
		if sdk.CheckEID(eid) != nil {
			t.Fatalf("DestinationForSubject(%q, %q) = %q, which CheckEID refuses", prefix, subject, eid)
		}
		rest := subject
		if prefix != "" {
			rest = strings.TrimPrefix(subject, prefix+".")
		}
		node, svc, _ := strings.Cut(rest, ".")
		if parsed.NodeName() != node || parsed.Service() != strings.ReplaceAll(svc, ".", "/") {
			t.Fatalf("DestinationForSubject(%q, %q) = %q: node %q service %q", prefix, subject, eid, parsed.NodeName(), parsed.Service())
		}
		// Back again: the EID's subject form maps to the same EID.
		back := node
		if svc != "" {
			back += "." + svc
		}
		if prefix != "" {
			back = prefix + "." + back
		}
		if again, err := nats.DestinationForSubject(prefix, back); err != nil || again != eid {
			t.Fatalf("round trip of %q: %q, %v", eid, again, err)
		}
	})
}

// FuzzObjectReference: reference headers and bodies parse without
// panicking, a parsed header rebuilds the input, and every object name the
// adapter makes from a bundle ID survives the header round trip.
func FuzzObjectReference(f *testing.F) {
	f.Add("mulegate-payloads/dtn://mule1/app|800000000001.1", []byte(`{"bucket":"b","name":"n","size":3,"digest":"SHA-256=x"}`), "dtn://a/b|1.2")
	f.Add("nobucket", []byte(`{}`), "")
	f.Add("b a/x", []byte(`[`), strings.Repeat("x", 300))
	f.Fuzz(func(t *testing.T, header string, body []byte, bundleID string) {
		if bucket, name, err := nats.ParseObjectHeader(header); err == nil {
			if bucket+"/"+name != header {
				t.Fatalf("ParseObjectHeader(%q) = %q, %q", header, bucket, name)
			}
		}
		if ref, err := nats.ParseObjectRef(body); err == nil && (ref.Bucket == "" || ref.Name == "") {
			t.Fatalf("ParseObjectRef(%q) = %+v without bucket or name", body, ref)
		}
		name := nats.ObjectName(bundleID)
		if name != nats.ObjectName(bundleID) || name == "" || strings.ContainsAny(name, "\r\n") {
			t.Fatalf("ObjectName(%q) = %q", bundleID, name)
		}
		if b, n, err := nats.ParseObjectHeader("bucket/" + name); err != nil || b != "bucket" || n != name {
			t.Fatalf("object name %q does not survive the header: %q %q %v", name, b, n, err)
		}
	})
}
