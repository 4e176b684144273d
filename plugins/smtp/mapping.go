package smtp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mulegate/mulegate/plugins"
)

// maxEIDLen bounds endpoint IDs the adapter makes or accepts.
const maxEIDLen = 1024

// BundleKey is the node's {bundle_key} of a bundle ID: the first 16 bytes
// of its SHA-256, in hex. It names the bundle in generated Message-IDs.
func BundleKey(bundleID string) string {
	sum := sha256.Sum256([]byte(bundleID))
	return hex.EncodeToString(sum[:16])
}

// MessageIDFor is the Message-ID a bundle's message gets when it has none
// of its own: "<bundle key@domain>", the same on every delivery.
func MessageIDFor(bundleID, domain string) string {
	return "<" + BundleKey(bundleID) + "@" + domain + ">"
}

// Placeholders the adapter fills in its own templates (from,
// envelope_from, subject), and in route options beside the node's.
var (
	placeholder         = regexp.MustCompile(`\{[^{}]*\}`)
	addressPlaceholders = map[string]bool{
		"{src}": true, "{src_node}": true, "{dst}": true, "{dst_node}": true, "{service}": true,
		"{domain}": true, "{bundle_key}": true, "{date}": true, "{seq}": true,
	}
)

func checkTemplate(t string, known map[string]bool) error {
	for _, p := range placeholder.FindAllString(t, -1) {
		if !known[p] {
			return fmt.Errorf("%s is not a placeholder the adapter fills; it fills {src}, {src_node}, {dst}, {dst_node}, {service}, {domain}, {bundle_key}, {date} and {seq}", p)
		}
	}
	return nil
}

// expandSample fills a template with sample values, to check what it
// makes.
func expandSample(t string) string {
	return expand(t, plugins.Meta{BundleID: "dtn://node/app|1.0", Source: "dtn://node/app", Destination: "dtn://cloud/mail"}, "example.org")
}

// expand fills a template from a bundle's metadata, as the node fills
// route options, plus {domain}.
func expand(t string, m plugins.Meta, domain string) string {
	if !strings.Contains(t, "{") {
		return t
	}
	srcNode, _ := splitEID(m.Source)
	dstNode, svc := splitEID(m.Destination)
	created := m.Created()
	if created.IsZero() {
		created = time.Now()
	}
	return strings.NewReplacer(
		"{src}", m.Source,
		"{src_node}", srcNode,
		"{dst}", m.Destination,
		"{dst_node}", dstNode,
		"{service}", strings.ReplaceAll(strings.Trim(svc, "/"), "/", "."),
		"{domain}", domain,
		"{bundle_key}", BundleKey(m.BundleID),
		"{date}", created.UTC().Format("2006-01-02"),
		"{seq}", strconv.FormatUint(m.Sequence, 10),
	).Replace(t)
}

// splitEID returns an endpoint ID's node name and service, for dtn and
// ipn EIDs; empty strings for anything else.
func splitEID(e string) (node, service string) {
	if rest, ok := strings.CutPrefix(e, "dtn://"); ok {
		node, service, _ = strings.Cut(rest, "/")
		return node, service
	}
	if rest, ok := strings.CutPrefix(e, "ipn:"); ok {
		node, service, _ = strings.Cut(rest, ".")
		return node, service
	}
	return "", ""
}

// AddressFromDestination returns the email address a destination EID
// names in its last service segment, as in dtn://cloud/mail/alice@example.org;
// "" when it names none.
func AddressFromDestination(eid string) string {
	_, svc := splitEID(eid)
	if i := strings.LastIndexByte(svc, '/'); i >= 0 {
		svc = svc[i+1:]
	}
	if strings.Count(svc, "@") != 1 || strings.HasPrefix(svc, "@") || strings.HasSuffix(svc, "@") {
		return ""
	}
	return svc
}

// CheckEID tells whether s is an endpoint ID a bundle can be addressed to,
// by the rules the node itself applies: dtn://node/service, where the node
// name holds RFC 3986 unreserved and sub-delims characters, '~', '%', ':'
// and '@', and the service printable ASCII without spaces; or ipn:N.S with
// decimal numbers.
func CheckEID(s string) error {
	if len(s) > maxEIDLen {
		return fmt.Errorf("endpoint ID is longer than %d bytes", maxEIDLen)
	}
	if rest, ok := strings.CutPrefix(s, "dtn://"); ok {
		node, service, _ := strings.Cut(rest, "/")
		if err := checkNodeName(node); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
		if err := checkService(service); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(s, "ipn:"); ok {
		n, svc, ok := strings.Cut(rest, ".")
		if !ok || !isDecimal(n) || !isDecimal(svc) {
			return fmt.Errorf("%q: an ipn endpoint is ipn:NODE.SERVICE with decimal numbers", s)
		}
		return nil
	}
	return fmt.Errorf("%q: not a dtn://node/service or ipn:N.S endpoint ID", s)
}

func checkNodeName(node string) error {
	if node == "" {
		return errors.New("the node name is empty")
	}
	if node == "~" {
		return errors.New("a group node name needs a name after ~")
	}
	for i := 0; i < len(node); i++ {
		if !nodeNameByte(node[i]) {
			if node[i] >= 0x80 {
				return errors.New("a node name must be ASCII")
			}
			return fmt.Errorf("character %q is not allowed in a node name", node[i])
		}
	}
	return nil
}

func nodeNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-._~!$&'()*+,;=%:@", c) >= 0
}

func checkService(svc string) error {
	for i := 0; i < len(svc); i++ {
		if c := svc[i]; c <= 0x20 || c >= 0x7f {
			return errors.New("the service must be printable ASCII without spaces")
		}
	}
	return nil
}

func isDecimal(s string) bool {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// Mapping turns an inbound recipient address into the destination EID of
// the bundle its message becomes.
type Mapping struct {
	// Recipients maps whole addresses (lower case) to EIDs; it is looked
	// at first.
	Recipients map[string]string
	// Domains (lower case) are the domains whose addresses map by their
	// local part: node+service@domain is dtn://node/service.
	Domains map[string]bool
	// DefaultService is the service of node@domain (no "+service"); empty
	// makes it the node ID dtn://node/.
	DefaultService string
}

// ErrNoSuchRecipient is what Destination returns for an address that maps
// to nothing; the server answers it with 550.
var ErrNoSuchRecipient = errors.New("no such recipient")

// Destination maps an address (a bare addr-spec, as in RCPT TO) to an EID:
//
//   - an address in Recipients (case does not matter) maps to its EID;
//   - node+service@domain, for a domain in Domains (case does not matter),
//     maps to dtn://node/service; the service may hold '/', '.', '+' and
//     the other characters of an unquoted local part, and is kept as it is
//     (case included); "node+" maps to the node ID dtn://node/;
//   - node@domain maps to dtn://node/<DefaultService>.
//
// Anything else, a quoted local part, or a result the node would refuse as
// an EID, is ErrNoSuchRecipient (wrapped, with the reason).
func (m Mapping) Destination(addr string) (string, error) {
	if len(addr) > 320 {
		return "", fmt.Errorf("%w: address longer than 320 bytes", ErrNoSuchRecipient)
	}
	if eid, ok := m.Recipients[strings.ToLower(addr)]; ok {
		return eid, nil
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", fmt.Errorf("%w: %q is not local@domain", ErrNoSuchRecipient, addr)
	}
	local, domain := addr[:at], strings.ToLower(addr[at+1:])
	if !m.Domains[domain] {
		return "", fmt.Errorf("%w: this server takes mail for no one at %q", ErrNoSuchRecipient, domain)
	}
	if !dotAtom(local) {
		return "", fmt.Errorf("%w: %q: only plain local parts (letters, digits, and !#$%%&'*+-/=?^_`{|}~ between dots) map to a destination", ErrNoSuchRecipient, local)
	}
	node, svc, plus := strings.Cut(local, "+")
	if !plus {
		svc = m.DefaultService
	}
	eid := "dtn://" + node + "/" + svc
	if err := CheckEID(eid); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoSuchRecipient, err)
	}
	return eid, nil
}

// dotAtom tells whether s is an RFC 5322 dot-atom of ASCII atext.
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0) {
			return false
		}
	}
	return true
}
