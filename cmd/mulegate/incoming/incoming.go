// Package incoming saves received payloads into a directory: under a safe
// name made from an untrusted one, never overwriting a file that is there,
// and durably (fsynced, file and directory) before the caller acknowledges
// the bundle. `mulegate recv --out DIR` and `mulegate chat` use it.
package incoming

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameBytes bounds a saved file's name.
const MaxNameBytes = 120

// SafeName makes a file name from an untrusted one (a chat peer's, a
// bundle's source): its last path element only, so that it cannot leave the
// directory; no control characters, no characters other systems forbid, no
// leading dot (no hidden files, no "." or ".."), valid UTF-8, at most
// MaxNameBytes bytes with its extension kept. An empty result is "file".
func SafeName(name string) string {
	name = strings.ToValidUTF8(name, "_")
	name = strings.ReplaceAll(name, "\\", "/")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case unicode.IsControl(r), r == utf8.RuneError, unicode.Is(unicode.Cf, r):
			b.WriteRune('_')
		case strings.ContainsRune(`<>:"|?*`, r):
			b.WriteRune('_')
		case unicode.IsSpace(r):
			b.WriteRune(' ')
		default:
			b.WriteRune(r)
		}
	}
	name = strings.Trim(b.String(), " .")
	if len(name) > MaxNameBytes {
		ext := filepath.Ext(name)
		if len(ext) > 16 || !utf8.ValidString(ext) {
			ext = ""
		}
		stem := name[:MaxNameBytes-len(ext)]
		for !utf8.ValidString(stem) {
			stem = stem[:len(stem)-1]
		}
		name = strings.TrimRight(stem, " .") + ext
	}
	if reserved(name) {
		name = "_" + name
	}
	if name == "" || strings.Trim(name, ".") == "" {
		name = "file"
	}
	return name
}

// reserved reports the device names Windows refuses as file names, so that
// a directory synced to such a system does not break.
func reserved(name string) bool {
	stem := strings.ToUpper(strings.TrimSuffix(name, filepath.Ext(name)))
	switch stem {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	if len(stem) == 4 && (strings.HasPrefix(stem, "COM") || strings.HasPrefix(stem, "LPT")) && stem[3] >= '1' && stem[3] <= '9' {
		return true
	}
	return false
}

// candidate is the i-th name tried for name: name itself, then
// "stem (1).ext", "stem (2).ext", …
func candidate(name string, i int) string {
	if i == 0 {
		return name
	}
	ext := filepath.Ext(name)
	if ext == name {
		ext = ""
	}
	return fmt.Sprintf("%s (%d)%s", strings.TrimSuffix(name, ext), i, ext)
}

// Save writes r into dir, under SafeName(name) or, if that is taken, the
// first free "stem (N).ext". The data goes to a temporary file in dir, is
// fsynced, and is checked by verify (if not nil) with the number of bytes
// written; only then is it linked under its name, which never replaces an
// existing file, and the directory fsynced. On any error nothing is left
// in dir. It returns the path written and its length.
func Save(dir, name string, r io.Reader, verify func(n int64) error) (string, int64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, err
	}
	tmp, err := os.CreateTemp(dir, ".incoming-*.part")
	if err != nil {
		return "", 0, err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && verify != nil {
		err = verify(n)
	}
	if err != nil {
		return "", n, err
	}
	safe := SafeName(name)
	for i := 0; i < 10000; i++ {
		path := filepath.Join(dir, candidate(safe, i))
		err := os.Link(tmpName, path)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", n, err
		}
		if err := syncDir(dir); err != nil {
			os.Remove(path)
			return "", n, err
		}
		return path, n, nil
	}
	return "", n, fmt.Errorf("%s: 10000 files named like %q already; clear some out", dir, safe)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
