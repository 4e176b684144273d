package dir

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDeliveryName(t *testing.T) {
	tests := []struct {
		id, option, want string
	}{
		{"dtn://mule1/chat-780000000-0", "", "dtn%3A%2F%2Fmule1%2Fchat-780000000-0"},
		{"x", "mule1/report.txt", "mule1/report.txt"},
		{"x", "../../etc/passwd", "%2E./%2E./etc/passwd"},
		{"x", "/abs//./a/", "abs/a"},
		{"x", ".hidden", "%2Ehidden"},
		{"x", ".meta/x", "%2Emeta/x"},
		{"x", "a b:c", "a%20b%3Ac"},
		{"x", "100%~", "100%25%7E"},
		{"fallback", "/./", "fallback"},
		{"", "", "%"},
	}
	for _, tt := range tests {
		if got := deliveryName(tt.id, tt.option); got != tt.want {
			t.Errorf("deliveryName(%q, %q) = %q, want %q", tt.id, tt.option, got, tt.want)
		}
	}
	long := strings.Repeat("é", 200)
	got := deliveryName(long, "")
	if len(got) > maxSegment || !strings.Contains(got, "~") {
		t.Errorf("long ID gives %q (%d bytes), want a shortened name with a hash", got, len(got))
	}
	if deliveryName(long+"x", "") == got {
		t.Error("two long IDs share a name")
	}
}

func TestDestinationFor(t *testing.T) {
	tests := []struct {
		rel, def, want string
		wantErr        bool
	}{
		{"a.txt", "dtn://cloud/inbox", "dtn://cloud/inbox", false},
		{"a.txt", "", "", true},
		{"dtn/mule1/chat/hi.txt", "", "dtn://mule1/chat", false},
		{"dtn/mule1/a/b/hi.txt", "", "dtn://mule1/a/b", false},
		{"dtn/mule1/hi.txt", "", "dtn://mule1/", false},
		{"dtn/hi.txt", "", "", true},
		{"ipn/5.1/x.bin", "", "ipn:5.1", false},
		{"ipn/977000.5.1/x.bin", "", "ipn:977000.5.1", false},
		{"ipn/5/x.bin", "", "", true},
		{"ipn/05.1/x.bin", "", "", true},
		{"ipn/5.1/sub/x.bin", "", "", true},
		{"mailto/x", "", "", true},
		{"dtn/mu le/x", "", "", true},
		{"dtn/a/../x", "", "", true},
	}
	for _, tt := range tests {
		got, err := destinationFor(tt.rel, tt.def)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("destinationFor(%q) = %q, %v; want %q (error: %v)", tt.rel, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestReceiptRoundTrip(t *testing.T) {
	d := t.TempDir()
	for _, rel := range []string{"a.txt", "dtn/mule1/chat/hé llo%.txt", "ipn/5.1/" + strings.Repeat("x", 250)} {
		full := filepath.Join(d, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("data"), 0o640); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(full)
		if err != nil {
			t.Fatal(err)
		}
		r, err := parseReceipt(receiptFor(rel, fi))
		if err != nil {
			t.Fatalf("%q: %v", rel, err)
		}
		if r.rel != rel || !r.matches(fi) {
			t.Errorf("%q: receipt gives %+v", rel, r)
		}
		later := time.Now().Add(time.Hour)
		if err := os.Chtimes(full, later, later); err != nil {
			t.Fatal(err)
		}
		fi2, _ := os.Stat(full)
		if r.matches(fi2) {
			t.Errorf("%q: receipt still matches a changed file", rel)
		}
	}
	for _, bad := range []string{"", "x", "1.2/a", "1.2.3/../x", "1.2.3/%2E%2E/x", "1.2.3/.x", "1.2.3/a%2Fb", "a.b.c/x", "1.2.3/%zz"} {
		if _, err := parseReceipt(bad); err == nil {
			t.Errorf("parseReceipt(%q) succeeded", bad)
		}
	}
}

// FuzzDeliveryName checks that no bundle ID or route option, however
// hostile, names a file outside out/, a hidden file, or an unusable name.
func FuzzDeliveryName(f *testing.F) {
	for _, s := range [][2]string{{"dtn://a/b-1-0", ""}, {"x", "../../etc/passwd"}, {"x", "/a/./b/"}, {"", ".."}, {"x", strings.Repeat("a/", 40)}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, id, option string) {
		name := deliveryName(id, option)
		if !filepath.IsLocal(name) || path.Clean(name) != name {
			t.Fatalf("deliveryName(%q, %q) = %q escapes or is not clean", id, option, name)
		}
		segs := strings.Split(name, "/")
		if len(segs) > maxDepth {
			t.Fatalf("%q is %d deep", name, len(segs))
		}
		for _, s := range segs {
			if s == "" || strings.HasPrefix(s, ".") || len(s) > maxSegment || strings.ContainsRune(s, 0) || !fs.ValidPath(s) {
				t.Fatalf("deliveryName(%q, %q) = %q has bad segment %q", id, option, name, s)
			}
		}
		if option == "" {
			if u, err := unescapeSegment(name); err == nil && u != id {
				t.Fatalf("escape of %q reverses to %q", id, u)
			}
		}
	})
}

// FuzzInboxPath checks the inbox layout both ways: a path that maps to an
// EID maps back to the same directory, and an EID's directory maps back
// to the same EID.
func FuzzInboxPath(f *testing.F) {
	for _, s := range []string{"a.txt", "dtn/mule1/chat/hi.txt", "ipn/5.1/x", "dtn/m/hi", "dtn/a/b/c/d", "ipn/1.2.3/f", "x/y"} {
		f.Add(s, "dtn://mule1/chat")
	}
	f.Fuzz(func(t *testing.T, rel, eid string) {
		if dest, err := destinationFor(rel, ""); err == nil {
			dir, err := InboxDir(dest)
			if err != nil {
				t.Fatalf("destinationFor(%q) = %q, which InboxDir refuses: %v", rel, dest, err)
			}
			if want := path.Dir(rel); dir != want {
				t.Fatalf("path %q → %q → directory %q, want %q", rel, dest, dir, want)
			}
		}
		if dir, err := InboxDir(eid); err == nil {
			if !filepath.IsLocal(dir) {
				t.Fatalf("InboxDir(%q) = %q is not local", eid, dir)
			}
			back, err := destinationFor(dir+"/file", "")
			if err != nil || back != eid {
				t.Fatalf("EID %q → %q → %q, %v", eid, dir, back, err)
			}
		}
	})
}

// FuzzParseReceipt checks that a receipt from the node, which the adapter
// turns into a path it deletes, never names anything outside the inbox or
// hidden.
func FuzzParseReceipt(f *testing.F) {
	for _, s := range []string{"1.2.3/a.txt", "1.2.3/dtn/m/c/x", "1.2.3/%2E%2E/x", "9.9.9/a%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseReceipt(s)
		if err != nil {
			return
		}
		if !filepath.IsLocal(r.rel) || path.Clean(r.rel) != r.rel {
			t.Fatalf("receipt %q names %q", s, r.rel)
		}
		for _, seg := range strings.Split(r.rel, "/") {
			if strings.HasPrefix(seg, ".") {
				t.Fatalf("receipt %q names hidden %q", s, r.rel)
			}
		}
	})
}
