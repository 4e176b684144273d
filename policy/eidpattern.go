package policy

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/mulegate/mulegate/bundle"
)

// EIDPattern matches endpoint IDs by their text form, with two wildcards:
//
//	wildcard  matches
//	"*"       any run of characters other than '/'
//	"**"      any run of characters, '/' included
//
// For example dtn://cloud/** matches every endpoint of dtn://cloud/,
// dtn://cloud/mail/* one level under mail/, dtn://*/inbox the inbox of every
// dtn node, and ipn:12.* every service of node 12. Everything else is
// literal. Matching is linear in the length of the EID (the pattern becomes
// an RE2 expression), so hostile EIDs cannot make it slow.
type EIDPattern struct {
	raw string
	re  *regexp.Regexp
}

// ParseEIDPattern parses an EID pattern.
func ParseEIDPattern(s string) (EIDPattern, error) {
	if s == "" {
		return EIDPattern{}, fmt.Errorf("EID pattern is empty; use ** for every endpoint")
	}
	if !utf8.ValidString(s) {
		return EIDPattern{}, fmt.Errorf("EID pattern %q is not UTF-8", s)
	}
	if strings.Contains(s, "***") {
		return EIDPattern{}, fmt.Errorf("EID pattern %q: use * (one path element) or ** (anything)", s)
	}
	if s != "**" && !strings.HasPrefix(s, "dtn:") && !strings.HasPrefix(s, "ipn:") && !strings.HasPrefix(s, "*") {
		return EIDPattern{}, fmt.Errorf("EID pattern %q: want dtn:… or ipn:…", s)
	}
	var re strings.Builder
	re.WriteString(`\A`)
	for rest := s; rest != ""; {
		i := strings.IndexByte(rest, '*')
		if i < 0 {
			re.WriteString(regexp.QuoteMeta(rest))
			break
		}
		re.WriteString(regexp.QuoteMeta(rest[:i]))
		if strings.HasPrefix(rest[i:], "**") {
			re.WriteString(`.*`)
			rest = rest[i+2:]
		} else {
			re.WriteString(`[^/]*`)
			rest = rest[i+1:]
		}
	}
	re.WriteString(`\z`)
	compiled, err := regexp.Compile(re.String())
	if err != nil {
		return EIDPattern{}, fmt.Errorf("EID pattern %q: %w", s, err)
	}
	return EIDPattern{raw: s, re: compiled}, nil
}

// Match reports whether e matches the pattern. The zero EIDPattern matches
// nothing.
func (p EIDPattern) Match(e bundle.EID) bool {
	return p.re != nil && !e.IsZero() && p.re.MatchString(e.String())
}

func (p EIDPattern) String() string { return p.raw }
