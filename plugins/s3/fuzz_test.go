package s3_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/s3"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// FuzzDestinationForKey: every key maps to an EID the node accepts or to
// an error, never to a bad EID; the mapping keeps the key's node and
// service; and an EID's key form maps back to it.
func FuzzDestinationForKey(f *testing.F) {
	for _, k := range []string{"inbox/nodeC/inbox/hello.txt", "inbox/nodeC/x.bin", "inbox/x.bin", "inbox/~g/chat/room/m", "inbox/a|b/c",
		"inbox//x", "inbox/n//x", "inbox/n/", "inbox/nodé/x", "inbox/n/s p/x", "inbox/%41/b/c", "other/n/x", "inbox/n/a/b/c/d", "inbox/n/\x7f/x"} {
		f.Add("inbox/", k)
	}
	f.Add("to/mule/", "to/mule/nodeC/x")
	f.Fuzz(func(t *testing.T, prefix, key string) {
		eid, err := s3.DestinationForKey(prefix, key)
		if err != nil {
			return
		}
		parsed, perr := bundle.ParseEID(eid)
		if perr != nil {
			t.Fatalf("DestinationForKey(%q, %q) = %q, which the node refuses: %v", prefix, key, eid, perr)
		}
		if sdk.CheckEID(eid) != nil {
			t.Fatalf("DestinationForKey(%q, %q) = %q, which CheckEID refuses", prefix, key, eid)
		}
		rel := strings.TrimPrefix(key, prefix)
		dir := rel[:strings.LastIndexByte(rel, '/')]
		node, svc, _ := strings.Cut(dir, "/")
		if parsed.NodeName() != node || parsed.Service() != svc {
			t.Fatalf("DestinationForKey(%q, %q) = %q: node %q service %q, want %q %q", prefix, key, eid, parsed.NodeName(), parsed.Service(), node, svc)
		}
		// Back again: the EID's key form maps to the same EID.
		back := prefix + node + "/"
		if svc != "" {
			back += svc + "/"
		}
		if again, err := s3.DestinationForKey(prefix, back+"name"); err != nil || again != eid {
			t.Fatalf("round trip of %q through %q: %q, %v", eid, back+"name", again, err)
		}
	})
}

// FuzzMetaValue: any string survives the metadata encoding, and the
// encoding is printable ASCII with no space at either end.
func FuzzMetaValue(f *testing.F) {
	for _, s := range []string{"dtn://mule1/app|800000000000.1", "valid:campfire/alice", " lead", "trail\t", "100%", "déjà vu", "a\r\nb", "%zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := s3.MetaValue(s)
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				t.Fatalf("MetaValue(%q) = %q holds byte %#x", s, v, v[i])
			}
		}
		if strings.TrimSpace(v) != v {
			t.Fatalf("MetaValue(%q) = %q has space at an end", s, v)
		}
		if back := s3.ParseMetaValue(v); back != s {
			t.Fatalf("ParseMetaValue(MetaValue(%q)) = %q", s, back)
		}
	})
}

// FuzzKeyTemplate: whatever a bundle's metadata holds, the default key
// template makes the same key every time, ending with the bundle key; for
// every source the node accepts, it is a key the adapter writes.
func FuzzKeyTemplate(f *testing.F) {
	f.Add("dtn://mule1/app|800000000000.1", "dtn://mule1/app", "dtn://cloud/files/app", uint64(800000000000), uint64(1))
	f.Add("x", "dtn:none", "ipn:5.1", uint64(0), uint64(0))
	f.Add("", "dtn://../x", "dtn://a/b//c", uint64(1<<63), uint64(7))
	f.Fuzz(func(t *testing.T, id, src, dst string, created, seq uint64) {
		if created > 1<<50 {
			created %= 1 << 50 // beyond the year 37,000 time.Time gives up
		}
		m := plugins.Meta{BundleID: id, Source: src, Destination: dst, CreationTime: created, Sequence: seq}
		key := s3.ExpandKey("bundles/{src_node}/{date}/{bundle_key}", m)
		if key != s3.ExpandKey("bundles/{src_node}/{date}/{bundle_key}", m) {
			t.Fatalf("ExpandKey for %+v = %q", m, key)
		}
		if !strings.HasSuffix(key, "/"+sdk.BundleKey(id)) {
			t.Fatalf("ExpandKey for %+v = %q does not end with the bundle key", m, key)
		}
		if _, err := bundle.ParseEID(src); err == nil && src != "dtn:none" && len(src) < 900 {
			ad := s3.New(nil)
			defer ad.Close()
			if err := ad.Configure(t.Context(), []byte(`{"bucket": "bkt", "credentials": {"access_key_id": "k", "secret_access_key": "s"}}`)); err != nil {
				t.Fatal(err)
			}
			if _, err := ad.KeyFor(m); err != nil {
				t.Fatalf("KeyFor(%+v) = %v for a source the node accepts", m, err)
			}
		}
	})
}

// FuzzReceipt: receipts the adapter makes parse back; anything else is
// refused with ErrInvalid or ErrUnknownReceipt, never a panic.
func FuzzReceipt(f *testing.F) {
	f.Add(`"d41d8cd98f00b204e9800998ecf8427e"`, "inbox/n/x", "garbage")
	f.Add(`"abc-3"`, "inbox/n/a b/ü", "%zz/inbox/x")
	f.Fuzz(func(t *testing.T, etag, key, junk string) {
		ad := s3.New(nil)
		defer ad.Close()
		// No server: the receipt is refused before any request, or the
		// request fails; either way, no panic.
		if err := ad.Configure(t.Context(), []byte(`{"endpoint": "http://127.0.0.1:1", "path_style": true, "bucket": "bkt", "max_attempts": 1,
			"credentials": {"access_key_id": "k", "secret_access_key": "s"}, "inbound": {}}`)); err != nil {
			t.Fatal(err)
		}
		_ = ad.Nack(t.Context(), junk, "fuzz")
		if etag == "" || !strings.HasPrefix(key, "inbox/") || !utf8.ValidString(etag+key) {
			return
		}
		// A well-formed receipt for a key under the prefix is known.
		r := s3.ReceiptFor(etag, key)
		err := ad.Nack(t.Context(), r, "fuzz")
		if err != nil && !strings.Contains(err.Error(), "not an object under") {
			t.Fatalf("Nack(%q) = %v", r, err)
		}
	})
}
