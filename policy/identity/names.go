package identity

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxNameLen bounds member and group names: they live in the Subject common
// name, which X.509 (ub-common-name) limits to 64 characters.
const maxNameLen = 64

// maxNodeIDLen bounds a node ID. A dtn node name is used as a URI host, which
// may not exceed 253 characters; the scheme and slashes add 7.
const maxNodeIDLen = 260

// CheckNodeID reports whether id looks like a node ID: dtn://NODE/ or ipn:N.0.
// It is a sanity check only — parsing endpoint IDs is the bundle package's
// job — but it is strict enough that every accepted ID survives being written
// into a certificate and read back unchanged, which is what lets node IDs be
// compared as plain strings.
func CheckNodeID(id string) error {
	if len(id) > maxNodeIDLen {
		return fmt.Errorf("node ID %.20q… is longer than %d characters", id, maxNodeIDLen)
	}
	switch {
	case strings.HasPrefix(id, "dtn://"):
		rest := strings.TrimPrefix(id, "dtn://")
		node, ok := strings.CutSuffix(rest, "/")
		if !ok || node == "" || strings.Contains(node, "/") {
			return fmt.Errorf("node ID %q: a dtn node ID has the form dtn://NODE/ (for example dtn://alice/)", id)
		}
		if err := checkNodeName(node); err != nil {
			return fmt.Errorf("node ID %q: %w", id, err)
		}
		return nil
	case strings.HasPrefix(id, "ipn:"):
		num, ok := strings.CutSuffix(strings.TrimPrefix(id, "ipn:"), ".0")
		n, err := strconv.ParseUint(num, 10, 64)
		// The canonical form has no sign, no leading zeros and no '+'; node
		// number 0 is the null endpoint, which no node can be.
		if !ok || err != nil || strconv.FormatUint(n, 10) != num || n == 0 {
			return fmt.Errorf("node ID %q: an ipn node ID has the form ipn:N.0 with N a node number from 1 (for example ipn:12.0)", id)
		}
		return nil
	default:
		return fmt.Errorf("node ID %q: want dtn://NODE/ or ipn:N.0", id)
	}
}

// checkNodeName accepts dot-separated labels of letters, digits, '-' and '_'.
// The node name becomes the URI host in the certificate, and crypto/x509
// refuses to parse a certificate whose URI host is not a plausible domain.
func checkNodeName(node string) error {
	if len(node) > 253 {
		return errors.New("node name is longer than 253 characters")
	}
	for label := range strings.SplitSeq(node, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("node name must be dot-separated labels of 1 to 63 characters")
		}
		for _, c := range []byte(label) {
			if !isNameByte(c) {
				return fmt.Errorf("node name may contain only letters, digits, '-', '_' and '.', not %q", c)
			}
		}
	}
	return nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
}

// CheckGroupName reports whether group can name a group: 1 to 64 letters,
// digits, '-', '_' or '.'.
func CheckGroupName(group string) error {
	if group == "" || len(group) > maxNameLen {
		return fmt.Errorf("group name %q must have 1 to %d characters", group, maxNameLen)
	}
	for _, c := range []byte(group) {
		if !isNameByte(c) {
			return fmt.Errorf("group name %q may contain only letters, digits, '-', '_' and '.'", group)
		}
	}
	return nil
}

// CheckMemberName reports whether name is a member name GROUP/MEMBER, such as
// campfire/alice. MEMBER may itself contain slashes (campfire/kitchen/pi); the
// group is always the part before the first one.
func CheckMemberName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("member name %q is longer than %d characters", name, maxNameLen)
	}
	group, member, ok := strings.Cut(name, "/")
	if !ok || member == "" {
		return fmt.Errorf("member name %q must have the form GROUP/MEMBER (for example campfire/alice)", name)
	}
	if err := CheckGroupName(group); err != nil {
		return fmt.Errorf("member name %q: %w", name, err)
	}
	for part := range strings.SplitSeq(member, "/") {
		if part == "" {
			return fmt.Errorf("member name %q has an empty part", name)
		}
		for _, c := range []byte(part) {
			if !isNameByte(c) {
				return fmt.Errorf("member name %q may contain only letters, digits, '-', '_', '.' and '/'", name)
			}
		}
	}
	return nil
}

// GroupOf returns the group of a member name: the part before the first '/'.
func GroupOf(memberName string) string {
	group, _, _ := strings.Cut(memberName, "/")
	return group
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// uriSANs returns the URI subject alternative names exactly as they are
// encoded. crypto/x509 hands URIs over as *url.URL, whose String() may
// normalise them (a "DTN://" scheme comes back lower-case); node IDs must be
// compared byte for byte, so they are read from the extension itself.
func uriSANs(exts []pkix.Extension) ([]string, error) {
	var uris []string
	for _, ext := range exts {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
			return nil, errors.New("malformed subject alternative name extension")
		}
		for rest = seq.Bytes; len(rest) > 0; {
			var name asn1.RawValue
			if rest, err = asn1.Unmarshal(rest, &name); err != nil {
				return nil, fmt.Errorf("malformed subject alternative name: %w", err)
			}
			// uniformResourceIdentifier is [6] IMPLICIT IA5String (RFC 5280).
			if name.Class == asn1.ClassContextSpecific && name.Tag == 6 && !name.IsCompound {
				uris = append(uris, string(name.Bytes))
			}
		}
	}
	return uris, nil
}

// nodeIDOf returns the one node ID among the URI SANs in exts. Any URI whose
// scheme is dtn or ipn, in any letter case, counts as a claimed node ID, so a
// malformed one is refused rather than silently ignored. The error is a
// *VerifyError without its Cert, which the caller fills in.
func nodeIDOf(exts []pkix.Extension) (string, error) {
	uris, err := uriSANs(exts)
	if err != nil {
		return "", &VerifyError{Kind: ErrNoNodeID, Err: err}
	}
	var ids []string
	for _, u := range uris {
		scheme, _, _ := strings.Cut(u, ":")
		if !strings.EqualFold(scheme, "dtn") && !strings.EqualFold(scheme, "ipn") {
			continue
		}
		if err := CheckNodeID(u); err != nil {
			return "", &VerifyError{Kind: ErrNoNodeID, Err: err}
		}
		ids = append(ids, u)
	}
	switch len(ids) {
	case 0:
		return "", &VerifyError{Kind: ErrNoNodeID, Reason: "it has no dtn:// or ipn: URI subject alternative name"}
	case 1:
		return ids[0], nil
	default:
		return "", &VerifyError{Kind: ErrMultipleNodeIDs, Reason: "it names " + strings.Join(ids, ", ")}
	}
}
