package dir

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxSegment keeps every file name well under the 255 bytes most file
// systems allow, with room for the temporary-file prefix.
const maxSegment = 180

// maxDepth bounds the subdirectories a route's name option can create.
const maxDepth = 16

// escapeSegment turns any string into one safe file name, injectively:
// letters, digits and "-_.+=@," stay; every other byte, a leading '.', and
// '%' and '~' themselves become %XX. So the result never contains '/', is
// never "", "." or "..", never starts with '.' (hidden and temporary files
// do), and two different inputs never share a name. Names that would be too
// long keep a readable prefix and end in '~' and a hash of the whole input;
// '~' appears nowhere else.
func escapeSegment(s string) string {
	out := escapeFull(s)
	if len(out) <= maxSegment {
		return out
	}
	sum := sha256.Sum256([]byte(s))
	prefix := out[:maxSegment-1-32]
	// Do not cut an escape in half.
	if i := strings.LastIndexByte(prefix, '%'); i >= len(prefix)-2 {
		prefix = prefix[:i]
	}
	return prefix + "~" + hex.EncodeToString(sum[:16])
}

// escapeFull is escapeSegment without the shortening: reversible by
// unescapeSegment whatever the length. "" becomes "%".
func escapeFull(s string) string {
	if s == "" {
		return "%"
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isSafe(c) && !(i == 0 && c == '.') {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func isSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.+=@,", c) >= 0
}

// unescapeSegment reverses escapeFull, and escapeSegment for names it did
// not shorten.
func unescapeSegment(s string) (string, error) {
	if s == "%" {
		return "", nil
	}
	if strings.IndexByte(s, '~') >= 0 {
		return "", errors.New("shortened name cannot be reversed")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// deliveryName is where a bundle lands inside the out directory: the
// route's "name" option if it gave one, as a relative path whose segments
// are each escaped (so it can make subdirectories but never leave the
// directory), else the escaped bundle ID.
func deliveryName(bundleID, option string) string {
	var segs []string
	for _, seg := range strings.Split(option, "/") {
		if seg == "" || seg == "." {
			continue
		}
		segs = append(segs, escapeSegment(seg))
	}
	if len(segs) == 0 {
		return escapeSegment(bundleID)
	}
	if len(segs) > maxDepth {
		// Fold the excess into the last segment rather than refuse the
		// bundle over a route's taste in directories.
		last := strings.Join(segs[maxDepth-1:], "%2F")
		segs = append(segs[:maxDepth-1], escapeSegment(last))
	}
	return strings.Join(segs, "/")
}

// Inbox layout. A file's path inside the inbox names the endpoint its
// message goes to:
//
//	<file>                         default_destination
//	dtn/<node>/<file>              dtn://<node>/
//	dtn/<node>/<a>/<b>/<file>      dtn://<node>/<a>/<b>
//	ipn/<node>.<service>/<file>    ipn:<node>.<service>
//	ipn/<alloc>.<node>.<service>/<file>  ipn:<alloc>.<node>.<service>
//
// Node names and demux segments are printable ASCII without spaces or '/'.
// Anything else in the inbox is left alone (and logged).

// destinationFor maps a file's slash-separated path inside the inbox to
// its destination EID.
func destinationFor(rel, defaultDest string) (string, error) {
	segs := strings.Split(rel, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("path %q is not clean", rel)
		}
	}
	if len(segs) == 1 {
		if defaultDest == "" {
			return "", errors.New("a file directly in the inbox needs default_destination; or put it under dtn/<node>/… or ipn/<node>.<service>/")
		}
		return defaultDest, nil
	}
	dirs := segs[:len(segs)-1]
	switch dirs[0] {
	case "dtn":
		if len(dirs) < 2 {
			return "", errors.New("a file under dtn/ must be in dtn/<node>/ or deeper")
		}
		for _, d := range dirs[1:] {
			if !isEIDText(d) {
				return "", fmt.Errorf("directory %q is not printable ASCII without spaces", d)
			}
		}
		return "dtn://" + dirs[1] + "/" + strings.Join(dirs[2:], "/"), nil
	case "ipn":
		if len(dirs) != 2 || !isIPNNumbers(dirs[1]) {
			return "", errors.New("a file under ipn/ must be in ipn/<node>.<service>/ (numbers)")
		}
		return "ipn:" + dirs[1], nil
	}
	return "", fmt.Errorf("top-level directory %q is neither dtn nor ipn", dirs[0])
}

// InboxDir returns the directory, relative to the inbox, in which a file
// becomes a message for eid: the reverse of the layout above. It fails for
// endpoint IDs the layout cannot express.
func InboxDir(eid string) (string, error) {
	switch {
	case strings.HasPrefix(eid, "dtn://"):
		rest := eid[len("dtn://"):]
		node, demux, ok := strings.Cut(rest, "/")
		if !ok || node == "" || !isEIDText(node) {
			return "", fmt.Errorf("%q: want dtn://<node>/<service>", eid)
		}
		dir := "dtn/" + node
		if demux == "" {
			return dir, nil
		}
		for _, d := range strings.Split(demux, "/") {
			if d == "" || d == "." || d == ".." || !isEIDText(d) {
				return "", fmt.Errorf("%q: service part %q cannot be a directory", eid, demux)
			}
			dir += "/" + d
		}
		return dir, nil
	case strings.HasPrefix(eid, "ipn:"):
		if !isIPNNumbers(eid[len("ipn:"):]) {
			return "", fmt.Errorf("%q: want ipn:<node>.<service>", eid)
		}
		return "ipn/" + eid[len("ipn:"):], nil
	}
	return "", fmt.Errorf("%q: want a dtn:// or ipn: endpoint ID", eid)
}

func isEIDText(s string) bool {
	if s == "" || !utf8.ValidString(s) || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '/' {
			return false
		}
	}
	return true
}

func isIPNNumbers(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 2 && len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 20 || (len(p) > 1 && p[0] == '0') {
			return false
		}
		if _, err := strconv.ParseUint(p, 10, 64); err != nil {
			return false
		}
	}
	return true
}
