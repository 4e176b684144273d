package nats

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Headers the adapter writes on the messages it publishes, and reads on
// the messages it fetches.
const (
	// HeaderMsgID is JetStream's deduplication header; it carries the
	// bundle ID.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderSource is the bundle's source EID.
	HeaderSource = "Mulegate-Source"
	// HeaderDestination is the bundle's destination EID. On fetched
	// messages it names the destination, before the subject does.
	HeaderDestination = "Mulegate-Destination"
	// HeaderReportTo is the bundle's report-to EID, when it has one.
	HeaderReportTo = "Mulegate-Report-To"
	// HeaderCreated is the bundle's creation time, RFC 3339 in UTC with
	// milliseconds; absent when the source had no clock.
	HeaderCreated = "Mulegate-Created"
	// HeaderLifetime is the bundle's lifetime in milliseconds, as in BPv7.
	// On fetched messages it asks for that lifetime.
	HeaderLifetime = "Mulegate-Lifetime"
	// HeaderSignature is the node's verdict on the bundle's signature,
	// e.g. "valid:campfire/alice"; absent when not checked.
	HeaderSignature = "Mulegate-Signature"
	// HeaderObject marks a reference message: the payload is in the
	// object store, in "<bucket>/<object name>".
	HeaderObject = "Mulegate-Object"
	// HeaderObjectSize and HeaderObjectDigest are the object's size in
	// bytes and its digest ("SHA-256=<base64url>", as the object store
	// writes it).
	HeaderObjectSize   = "Mulegate-Object-Size"
	HeaderObjectDigest = "Mulegate-Object-Digest"

	// Headers of a dead letter: why it could not be taken, and where the
	// original was.
	HeaderDeadReason       = "Mulegate-Dead-Reason"
	HeaderOriginalSubject  = "Mulegate-Original-Subject"
	HeaderOriginalStream   = "Mulegate-Original-Stream"
	HeaderOriginalSequence = "Mulegate-Original-Sequence"
	HeaderOriginalMsgID    = "Mulegate-Original-Msg-Id"
)

// maxSubjectLen keeps subjects well inside the server's control-line limit.
const maxSubjectLen = 1024

// checkSubject checks a subject for publishing (wildcards false) or for a
// stream's or consumer's filter (wildcards true).
func checkSubject(s string, wildcards bool) error {
	if s == "" {
		return errors.New("is empty")
	}
	if len(s) > maxSubjectLen {
		return fmt.Errorf("is longer than %d bytes", maxSubjectLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%q: subjects cannot contain spaces or control characters", s)
		}
	}
	// Token by token, without splitting: this runs for every bundle.
	for rest := s; ; {
		t, after, more := strings.Cut(rest, ".")
		switch {
		case t == "":
			return fmt.Errorf("%q has an empty token (two dots in a row, or a dot at an end)", s)
		case (t == "*" || t == ">") && !wildcards:
			return fmt.Errorf("%q: a subject to publish to cannot have wildcards", s)
		case t == ">" && more:
			return fmt.Errorf("%q: '>' can only be the last token", s)
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// subjectMatches tells whether subject (no wildcards) matches filter.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range f {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

// The placeholders the configured default subject may use: the ones the
// adapter can fill from a bundle's metadata and that make subject tokens.
var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

var subjectPlaceholders = map[string]bool{
	"{src_node}": true, "{dst_node}": true, "{service}": true, "{date}": true, "{seq}": true,
}

func checkSubjectTemplate(t string) error {
	for _, p := range placeholder.FindAllString(t, -1) {
		if !subjectPlaceholders[p] {
			return fmt.Errorf("%s cannot be used here; the adapter fills {src_node}, {dst_node}, {service}, {date} and {seq} (route options can use the node's others)", p)
		}
	}
	return checkSubject(placeholder.ReplaceAllString(t, "x"), false)
}

// ExpandSubject fills the configured default subject template from a
// bundle's metadata, as the node fills route options: {src_node} and
// {dst_node} are node names, {service} the destination's service with '/'
// as '.', {date} the creation date (YYYY-MM-DD, UTC), {seq} the creation
// sequence number.
func ExpandSubject(tmpl string, m plugins.Meta) string {
	srcNode, _ := sdk.SplitEID(m.Source)
	dstNode, svc := sdk.SplitEID(m.Destination)
	created := m.Created()
	if created.IsZero() {
		created = time.Now()
	}
	return strings.NewReplacer(
		"{src_node}", srcNode,
		"{dst_node}", dstNode,
		"{service}", strings.ReplaceAll(strings.Trim(svc, "/"), "/", "."),
		"{date}", created.UTC().Format("2006-01-02"),
		"{seq}", strconv.FormatUint(m.Sequence, 10),
	).Replace(tmpl)
}

// DestinationForSubject maps a fetched message's subject to the EID it is
// for: "<prefix>.<node>.<a>.<b>" is dtn://<node>/<a>/<b>, and
// "<prefix>.<node>" is the node ID dtn://<node>/. prefix may have several
// tokens, or be empty.
func DestinationForSubject(prefix, subject string) (string, error) {
	if err := checkSubject(subject, false); err != nil {
		return "", fmt.Errorf("subject %v", err)
	}
	rest := subject
	if prefix != "" {
		var ok bool
		if rest, ok = strings.CutPrefix(subject, prefix+"."); !ok {
			return "", fmt.Errorf("subject %q does not start with %q", subject, prefix+".")
		}
	}
	node, service, _ := strings.Cut(rest, ".")
	eid, err := sdk.DTNEndpoint(node, strings.ReplaceAll(service, ".", "/"))
	if err != nil {
		return "", fmt.Errorf("subject %q: %v", subject, err)
	}
	return eid, nil
}

// ObjectName is the object-store name of a bundle's payload: the bundle
// ID itself when it is short printable ASCII, otherwise "sha256-" and its
// hash. Deterministic, so a redelivery lands on the same object.
func ObjectName(bundleID string) string {
	if len(bundleID) > 0 && len(bundleID) <= 256 && printableNoSpace(bundleID) {
		return bundleID
	}
	sum := sha256.Sum256([]byte(bundleID))
	return "sha256-" + hex.EncodeToString(sum[:])
}

// printableNoSpace tells whether s is printable ASCII without spaces.
func printableNoSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// ObjectRef is the body of a reference message: where the payload is.
type ObjectRef struct {
	Bucket   string `json:"bucket"`
	Name     string `json:"name"`
	Size     uint64 `json:"size"`
	Digest   string `json:"digest"`
	BundleID string `json:"bundle_id,omitempty"`
}

// ParseObjectHeader parses a Mulegate-Object header, "<bucket>/<name>".
// The bucket cannot contain '/'; the name can.
func ParseObjectHeader(h string) (bucket, name string, err error) {
	bucket, name, ok := strings.Cut(h, "/")
	if !ok {
		return "", "", fmt.Errorf("%s %q: want <bucket>/<name>", HeaderObject, h)
	}
	if !validBucket(bucket) {
		return "", "", fmt.Errorf("%s %q: bad bucket name %q", HeaderObject, h, bucket)
	}
	if name == "" || !utf8.ValidString(name) {
		return "", "", fmt.Errorf("%s %q: bad object name", HeaderObject, h)
	}
	return bucket, name, nil
}

// ParseObjectRef parses a reference message's body.
func ParseObjectRef(body []byte) (ObjectRef, error) {
	var r ObjectRef
	if err := json.Unmarshal(body, &r); err != nil {
		return ObjectRef{}, fmt.Errorf("object reference: %v", err)
	}
	if !validBucket(r.Bucket) || r.Name == "" {
		return ObjectRef{}, errors.New("object reference: bucket or name missing")
	}
	return r, nil
}

// headerValue makes s safe as a header value: no line breaks.
func headerValue(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	return s
}
