package smtp

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// MessageIDFor is the Message-ID a bundle's message gets when it has none
// of its own: "<bundle key@domain>", the same on every delivery.
func MessageIDFor(bundleID, domain string) string {
	return "<" + sdk.BundleKey(bundleID) + "@" + domain + ">"
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
	srcNode, _ := sdk.SplitEID(m.Source)
	dstNode, svc := sdk.SplitEID(m.Destination)
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
		"{bundle_key}", sdk.BundleKey(m.BundleID),
		"{date}", created.UTC().Format("2006-01-02"),
		"{seq}", strconv.FormatUint(m.Sequence, 10),
	).Replace(t)
}

// AddressFromDestination returns the email address a destination EID
// names in its last service segment, as in dtn://cloud/mail/alice@example.org;
// "" when it names none.
func AddressFromDestination(eid string) string {
	_, svc := sdk.SplitEID(eid)
	if i := strings.LastIndexByte(svc, '/'); i >= 0 {
		svc = svc[i+1:]
	}
	if strings.Count(svc, "@") != 1 || strings.HasPrefix(svc, "@") || strings.HasSuffix(svc, "@") {
		return ""
	}
	return svc
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
	if err := sdk.CheckEID(eid); err != nil {
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
