package incoming

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func TestSafeName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"map.png", "map.png"},
		{"../../etc/passwd", "passwd"},
		{"/etc/shadow", "shadow"},
		{`..\..\windows\system.ini`, "system.ini"},
		{"..", "file"},
		{".", "file"},
		{"", "file"},
		{"...", "file"},
		{".bashrc", "bashrc"},
		{"a/..", "file"},
		{"name\x00.txt", "name_.txt"},
		{"evil\x1b[2Jname", "evil_[2Jname"},
		{"right\u202Etxt.exe", "right_txt.exe"},
		{"a:b*c?.txt", "a_b_c_.txt"},
		{"  spaced out .txt. ", "spaced out .txt"},
		{"tab\there", "tab_here"},
		{"CON", "_CON"},
		{"nul.txt", "_nul.txt"},
		{"COM1.log", "_COM1.log"},
		{"photo \xff.jpg", "photo _.jpg"},
		{"ünïcödé.md", "ünïcödé.md"},
		{strings.Repeat("x", 300) + ".tar.gz", strings.Repeat("x", MaxNameBytes-3) + ".gz"},
		{strings.Repeat("é", 100), strings.Repeat("é", MaxNameBytes/2)},
	} {
		if got := SafeName(c.in); got != c.want {
			t.Errorf("SafeName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Save never overwrites: a taken name gets " (N)" before its extension,
// even when many savers race for one name.
func TestSaveNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	path, n, err := Save(dir, "../notes.txt", strings.NewReader("theirs"), nil)
	if err != nil || path != filepath.Join(dir, "notes (1).txt") || n != 6 {
		t.Fatalf("Save: %q %d %v", path, n, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(got) != "mine" {
		t.Fatalf("the existing file was overwritten: %q", got)
	}
	var wg sync.WaitGroup
	paths := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, _, err := Save(dir, "race", strings.NewReader("x"), nil)
			if err != nil {
				t.Error(err)
			}
			paths <- p
		}()
	}
	wg.Wait()
	close(paths)
	seen := map[string]bool{}
	for p := range paths {
		if seen[p] {
			t.Errorf("two saves wrote %s", p)
		}
		seen[p] = true
	}
	if _, err := os.Stat(filepath.Join(dir, "race (19)")); err != nil {
		t.Errorf("20 saves of one name: %v", err)
	}
}

// A payload that fails verification leaves nothing in the directory.
func TestSaveVerifyFails(t *testing.T) {
	dir := t.TempDir()
	bad := errors.New("checksum mismatch")
	_, n, err := Save(dir, "x.bin", strings.NewReader("12345"), func(n int64) error { return bad })
	if !errors.Is(err, bad) || n != 5 {
		t.Fatalf("Save: %d %v", n, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func FuzzSafeName(f *testing.F) {
	for _, s := range []string{"a.txt", "../../x", "..", "\x00", "a/b\\c", "\u202e", strings.Repeat("ü", 200), "CON.txt", " . "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got := SafeName(name)
		if got == "" || got == "." || got == ".." || strings.HasPrefix(got, ".") {
			t.Fatalf("SafeName(%q) = %q", name, got)
		}
		if strings.ContainsAny(got, "/\\\x00") || !utf8.ValidString(got) || len(got) > MaxNameBytes+1 {
			t.Fatalf("SafeName(%q) = %q", name, got)
		}
		if filepath.Base(got) != got || filepath.Join("/in", got) != "/in/"+got {
			t.Fatalf("SafeName(%q) = %q leaves the directory", name, got)
		}
		if SafeName(got) != got {
			t.Fatalf("SafeName is not idempotent: %q → %q → %q", name, got, SafeName(got))
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("SafeName(%q) = %q keeps a control character", name, got)
			}
		}
	})
}
