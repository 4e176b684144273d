package s3

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Object metadata the adapter writes on the objects it delivers
// (x-amz-meta-<name>), and reads on the objects it fetches. Values are
// percent-encoded where they hold anything but printable ASCII (and '%'
// itself): see MetaValue.
const (
	// MetaBundleID is the bundle ID.
	MetaBundleID = "mulegate-bundle-id"
	// MetaSource is the bundle's source EID.
	MetaSource = "mulegate-source"
	// MetaDestination is the bundle's destination EID. On a fetched
	// object it names the destination, before the key does.
	MetaDestination = "mulegate-destination"
	// MetaReportTo is the bundle's report-to EID, unless it is dtn:none.
	MetaReportTo = "mulegate-report-to"
	// MetaCreated is the creation time, RFC 3339 in UTC with milliseconds;
	// absent when the source had no clock.
	MetaCreated = "mulegate-created"
	// MetaLifetime is the lifetime in milliseconds, as in BPv7. On a
	// fetched object it asks for that lifetime.
	MetaLifetime = "mulegate-lifetime"
	// MetaSignature is the node's verdict on the bundle's signature
	// ("valid:campfire/alice", "unsigned"); absent when not checked.
	MetaSignature = "mulegate-signature"

	// Metadata of an object set aside under the rejected prefix: why,
	// when, and where it was.
	MetaRejectedReason = "mulegate-rejected-reason"
	MetaRejectedAt     = "mulegate-rejected-at"
	MetaOriginalKey    = "mulegate-original-key"
)

// placeholders are the ones the key template may use: those the adapter
// fills from a bundle's metadata exactly as the node fills route options,
// and that make usable key segments.
var (
	placeholder     = regexp.MustCompile(`\{[^{}]*\}`)
	keyPlaceholders = map[string]bool{
		"{src_node}": true, "{dst_node}": true, "{service}": true, "{date}": true, "{seq}": true, "{bundle_key}": true,
	}
)

// sampleMeta is a bundle to try the key template on.
var sampleMeta = plugins.Meta{
	BundleID: "dtn://mule1/app|800000000000.1", Source: "dtn://mule1/app", Destination: "dtn://cloud/files/app",
	CreationTime: 800000000000, Sequence: 1,
}

func checkKeyTemplate(t string) error {
	for _, p := range placeholder.FindAllString(t, -1) {
		if !keyPlaceholders[p] {
			return fmt.Errorf("%s cannot be used here; the adapter fills {src_node}, {dst_node}, {service}, {date}, {seq} and {bundle_key} (a route's key option can use the node's others)", p)
		}
	}
	if err := checkKey(placeholder.ReplaceAllString(t, "x")); err != nil {
		return err
	}
	if !strings.Contains(t, "{bundle_key}") && !strings.Contains(t, "{seq}") {
		return fmt.Errorf("%q would put different bundles under one key: include {bundle_key}", t)
	}
	return nil
}

// ExpandKey fills the configured key template from a bundle's metadata, as
// the node fills route options: {src_node} and {dst_node} are node names
// ("none" when there is none; "." and ".." as "%2E" and "%2E%2E"),
// {service} the destination's service with '/' as '.' (the same), {date} the creation date (YYYY-MM-DD,
// UTC; "undated" when the source had no clock, so that the key stays the
// same on every delivery), {seq} the creation sequence number, and
// {bundle_key} the node's 32-hex-digit key of the bundle ID.
func ExpandKey(tmpl string, m plugins.Meta) string { return expandKey(tmpl, m) }

func expandKey(tmpl string, m plugins.Meta) string {
	srcNode, _ := sdk.SplitEID(m.Source)
	dstNode, svc := sdk.SplitEID(m.Destination)
	svc = strings.ReplaceAll(strings.Trim(svc, "/"), "/", ".")
	date := "undated"
	if m.CreationTime != 0 {
		date = m.Created().UTC().Format("2006-01-02")
	}
	or := func(s string) string {
		switch s {
		case "":
			return "none"
		case ".", "..": // valid node names, but not key segments
			return strings.ReplaceAll(s, ".", "%2E")
		}
		return s
	}
	return strings.NewReplacer(
		"{src_node}", or(srcNode),
		"{dst_node}", or(dstNode),
		"{service}", or(svc),
		"{date}", date,
		"{seq}", strconv.FormatUint(m.Sequence, 10),
		"{bundle_key}", sdk.BundleKey(m.BundleID),
	).Replace(tmpl)
}

// checkKey checks an object key the adapter writes: at most 1024 bytes of
// UTF-8 without control characters, segments separated by single '/',
// none empty, "." or "..". S3 itself takes more, but such keys make
// objects that file-backed servers and most tools cannot handle.
func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("is empty")
	case len(k) > maxKeyLen:
		return fmt.Errorf("is %d bytes long; S3 keys are at most %d", len(k), maxKeyLen)
	case !utf8.ValidString(k):
		return fmt.Errorf("%q is not UTF-8", k)
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q holds a control character", k)
		}
	}
	for rest := k; ; {
		seg, after, more := strings.Cut(rest, "/")
		switch seg {
		case "":
			return fmt.Errorf("%q has an empty segment (a '/' at an end, or two in a row)", k)
		case ".", "..":
			return fmt.Errorf("%q has a %q segment", k, seg)
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// DestinationForKey maps an inbound object's key to the EID it is for:
// "<prefix><node>/<a>/<b>/<name>" is dtn://<node>/<a>/<b>, and
// "<prefix><node>/<name>" is the node ID dtn://<node>/. A key directly
// under the prefix names no node, and maps to nothing.
func DestinationForKey(prefix, key string) (string, error) {
	rel, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", fmt.Errorf("key %q is not under %q", key, prefix)
	}
	if !utf8.ValidString(rel) {
		return "", fmt.Errorf("key %q is not UTF-8", key)
	}
	dir, name, ok := cutLast(rel, '/')
	if !ok {
		return "", fmt.Errorf("key %q names no node: put it under %s<node>/ or %s<node>/<service>/, or give it %s metadata", key, prefix, prefix, MetaDestination)
	}
	if name == "" {
		return "", fmt.Errorf("key %q ends with '/'", key)
	}
	node, service, _ := strings.Cut(dir, "/")
	eid, err := sdk.DTNEndpoint(node, service)
	if err != nil {
		return "", fmt.Errorf("key %q: %v", key, err)
	}
	if service != "" {
		for seg := range strings.SplitSeq(service, "/") {
			if seg == "" {
				return "", fmt.Errorf("key %q has an empty segment", key)
			}
		}
	}
	return eid, nil
}

func cutLast(s string, sep byte) (before, after string, ok bool) {
	if i := strings.LastIndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// MetaValue makes s safe as an object metadata value (an HTTP header,
// which S3 wants in printable ASCII): every byte outside printable ASCII,
// '%' itself, and spaces at either end (HTTP trims them) become %XX.
// ParseMetaValue undoes it.
func MetaValue(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if needsEscape(s, i) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); i++ {
		if c := s[i]; needsEscape(s, i) {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func needsEscape(s string, i int) bool {
	c := s[i]
	switch {
	case c < 0x20 || c > 0x7e || c == '%':
		return true
	case c == ' ' || c == '\t':
		return strings.TrimLeft(s[:i+1], " \t") == "" || strings.TrimRight(s[i:], " \t") == ""
	}
	return false
}

// ParseMetaValue decodes a value made by MetaValue. A value with a '%'
// that is not an escape is returned as it is (someone else wrote it).
func ParseMetaValue(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	d, err := url.PathUnescape(v)
	if err != nil {
		return v
	}
	return d
}

// A receipt is "<escaped ETag>/<key>": it names the object and also
// which version of it was offered, so that an Ack never deletes an object
// that was replaced after it was fetched, and it stays valid across
// adapter restarts.
func receiptFor(etag, key string) string { return url.PathEscape(etag) + "/" + key }

// parseReceipt reads a receipt; the key must be under prefix.
func parseReceipt(r, prefix string) (etag, key string, err error) {
	esc, key, ok := strings.Cut(r, "/")
	if !ok || esc == "" || key == "" || !utf8.ValidString(r) {
		return "", "", fmt.Errorf("%w: receipt %q: want <etag>/<key>", plugins.ErrInvalid, r)
	}
	etag, err = url.PathUnescape(esc)
	if err != nil || etag == "" {
		return "", "", fmt.Errorf("%w: receipt %q: bad ETag", plugins.ErrInvalid, r)
	}
	if !strings.HasPrefix(key, prefix) || checkKey(key) != nil {
		return "", "", fmt.Errorf("%w: %q: not an object under %q", plugins.ErrUnknownReceipt, r, prefix)
	}
	return etag, key, nil
}

// MessageID is the stable identity of one version of an inbound object:
// "s3:<bucket>/<key>@<ETag without its quotes>". The node recognises an
// object offered twice by it.
func MessageID(bucket, key, etag string) string {
	return "s3:" + bucket + "/" + key + "@" + strings.Trim(etag, `"`)
}

// objectMetadata is the metadata a delivered object carries.
func objectMetadata(m plugins.Meta) map[string]string {
	md := make(map[string]string, 7)
	md[MetaBundleID] = MetaValue(m.BundleID)
	md[MetaSource] = MetaValue(m.Source)
	md[MetaDestination] = MetaValue(m.Destination)
	if m.ReportTo != "" && m.ReportTo != "dtn:none" {
		md[MetaReportTo] = MetaValue(m.ReportTo)
	}
	if t := m.Created(); !t.IsZero() {
		md[MetaCreated] = t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	md[MetaLifetime] = strconv.FormatInt(m.Lifetime.Milliseconds(), 10)
	if m.SignatureStatus != "" {
		md[MetaSignature] = MetaValue(m.SignatureStatus)
	}
	return md
}
