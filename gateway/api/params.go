package api

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// DefaultLifetime is the lifetime of a bundle sent without one.
const DefaultLifetime = 24 * time.Hour

// MaxListLimit bounds the limit parameter of the listing routes.
const MaxListLimit = 10000

// ParamError is a malformed request parameter. The API answers it with 400
// and names the parameter.
type ParamError struct {
	Param string // the query parameter
	Msg   string // what is wrong with it
}

func (e *ParamError) Error() string { return "parameter " + e.Param + ": " + e.Msg }

func paramErr(param, format string, args ...any) *ParamError {
	return &ParamError{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// parseQuery parses a raw query string strictly: a parameter not in allowed,
// or one given twice, is an error, so a typo is not silently ignored.
func parseQuery(raw string, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, &ParamError{Param: "query", Msg: "not a valid query string: " + err.Error()}
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if k == "" {
			return nil, &ParamError{Param: "query", Msg: "a parameter without a name"}
		}
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		if !known {
			if len(allowed) == 0 {
				return nil, paramErr(k, "unknown parameter: this route takes none")
			}
			return nil, paramErr(k, "unknown parameter: this route takes %s", strings.Join(allowed, ", "))
		}
		if len(q[k]) > 1 {
			return nil, paramErr(k, "given %d times; give it once", len(q[k]))
		}
	}
	return q, nil
}

// parseEID reads an endpoint ID parameter; required says whether it may be
// absent (the zero EID is then returned).
func parseEID(q url.Values, name string, required bool) (bundle.EID, error) {
	s, ok := q[name]
	if !ok || s[0] == "" {
		if required {
			return bundle.EID{}, paramErr(name, "required: an endpoint ID such as dtn://node/service or dtn://~group/service")
		}
		return bundle.EID{}, nil
	}
	e, err := bundle.ParseEID(s[0])
	if err != nil {
		return bundle.EID{}, paramErr(name, "%q is not an endpoint ID: %v", s[0], err)
	}
	return e, nil
}

// ParseDuration reads a lifetime: a Go duration (90m, 24h, 1h30m) or a
// whole number of days (7d).
func ParseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok && d != "" && !strings.ContainsAny(d, "hmsuµn.") {
		n, err := strconv.ParseUint(d, 10, 32)
		if err != nil || n > 365*100 {
			return 0, fmt.Errorf("%q: want a number of days such as 7d, at most 36500d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: use e.g. 90m, 24h or 7d", s)
	}
	return d, nil
}

func parseLimit(q url.Values) (int, error) {
	s, ok := q["limit"]
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(s[0])
	if err != nil || n < 1 || n > MaxListLimit {
		return 0, paramErr("limit", "%q: want a whole number from 1 to %d", s[0], MaxListLimit)
	}
	return n, nil
}

func parseBool(q url.Values, name string) (bool, error) {
	s, ok := q[name]
	if !ok {
		return false, nil
	}
	switch s[0] {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no", "":
		return false, nil
	}
	return false, paramErr(name, "%q: want true or false", s[0])
}

// reportFlags are the status reports a sender may ask for, by name.
var reportFlags = []struct {
	name string
	flag bundle.BundleFlags
}{
	{"reception", bundle.FlagReportReception},
	{"forwarding", bundle.FlagReportForwarding},
	{"delivery", bundle.FlagReportDelivery},
	{"deletion", bundle.FlagReportDeletion},
}

// ParseReports reads a comma-separated list of status reports to request:
// reception, forwarding, delivery, deletion, or all.
func ParseReports(s string) (bundle.BundleFlags, error) {
	var f bundle.BundleFlags
	if s == "" {
		return 0, nil
	}
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		if w == "all" {
			for _, r := range reportFlags {
				f |= r.flag
			}
			continue
		}
		found := false
		for _, r := range reportFlags {
			if r.name == w {
				f |= r.flag
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("%q is not a status report: use reception, forwarding, delivery, deletion or all, separated by commas", w)
		}
	}
	return f, nil
}

// bundleFlags are the bundle processing control flags, other than status
// report requests, that a sender may set (RFC 9171 §4.2.3). The rest are
// the node's to set: "is a fragment", "administrative record".
var bundleFlags = []struct {
	name string
	flag bundle.BundleFlags
}{
	{"must_not_fragment", bundle.FlagMustNotFragment},
	{"app_ack", bundle.FlagAppAckRequested},
	{"status_time", bundle.FlagStatusTimeRequested},
}

// ParseFlags reads a comma-separated list of bundle flag names
// (must_not_fragment, app_ack, status_time).
func ParseFlags(s string) (bundle.BundleFlags, error) {
	var f bundle.BundleFlags
	if s == "" {
		return 0, nil
	}
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		found := false
		for _, bf := range bundleFlags {
			if bf.name == w {
				f |= bf.flag
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("%q is not a bundle flag a sender may set: use must_not_fragment, app_ack or status_time, separated by commas", w)
		}
	}
	return f, nil
}

// FlagNames lists the flags of f that ParseFlags reads.
func FlagNames(f bundle.BundleFlags) []string {
	var out []string
	for _, bf := range bundleFlags {
		if f&bf.flag != 0 {
			out = append(out, bf.name)
		}
	}
	return out
}

// ReportNames lists the status reports f asks for, as ParseReports reads
// them.
func ReportNames(f bundle.BundleFlags) []string {
	var out []string
	for _, r := range reportFlags {
		if f.Has(r.flag) {
			out = append(out, r.name)
		}
	}
	return out
}

// SendParams are the query parameters of POST /v1/bundles. The payload is
// the request body; its length is the Content-Length.
type SendParams struct {
	// Destination is required.
	Destination bundle.EID
	// Source is an endpoint of this node; zero means the node ID.
	Source bundle.EID
	// ReportTo receives the status reports Reports asks for; zero means
	// Source.
	ReportTo bundle.EID
	// Lifetime zero means DefaultLifetime.
	Lifetime time.Duration
	// Reports are status report request flags (bundle.FlagReport…).
	Reports bundle.BundleFlags
	// Flags are the other bundle processing control flags the sender sets
	// (see ParseFlags).
	Flags bundle.BundleFlags
	// HopLimit zero means the node's default.
	HopLimit uint64
	// Sign asks for (true) or against (false) signing the bundle with the
	// node's key; nil leaves it to the node's signatures.sign.
	Sign *bool
}

var sendParamNames = []string{"destination", "source", "report_to", "lifetime", "report", "flags", "hop_limit", "sign"}

// ParseSendParams reads SendParams from a raw query string. Its errors are
// *ParamError.
func ParseSendParams(raw string) (SendParams, error) {
	var p SendParams
	q, err := parseQuery(raw, sendParamNames...)
	if err != nil {
		return p, err
	}
	if p.Destination, err = parseEID(q, "destination", true); err != nil {
		return p, err
	}
	if p.Destination.IsNone() {
		return p, paramErr("destination", "dtn:none cannot receive bundles")
	}
	if p.Source, err = parseEID(q, "source", false); err != nil {
		return p, err
	}
	if !p.Source.IsZero() && (p.Source.IsNone() || !p.Source.IsSingleton()) {
		return p, paramErr("source", "%s cannot send: the source must be an endpoint of this node", p.Source)
	}
	if p.ReportTo, err = parseEID(q, "report_to", false); err != nil {
		return p, err
	}
	if s, ok := q["lifetime"]; ok {
		d, err := ParseDuration(s[0])
		if err != nil {
			return p, paramErr("lifetime", "%v", err)
		}
		if d < time.Millisecond {
			return p, paramErr("lifetime", "%q: must be at least 1ms", s[0])
		}
		p.Lifetime = d
	} else {
		p.Lifetime = DefaultLifetime
	}
	if s, ok := q["report"]; ok {
		if p.Reports, err = ParseReports(s[0]); err != nil {
			return p, paramErr("report", "%v", err)
		}
	}
	if s, ok := q["flags"]; ok {
		if p.Flags, err = ParseFlags(s[0]); err != nil {
			return p, paramErr("flags", "%v", err)
		}
	}
	if !p.ReportTo.IsZero() && p.Reports == 0 {
		return p, paramErr("report_to", "given without report: say which status reports to send there (report=delivery,deletion)")
	}
	if s, ok := q["hop_limit"]; ok {
		n, err := strconv.ParseUint(s[0], 10, 64)
		if err != nil || n < 1 || n > 255 {
			return p, paramErr("hop_limit", "%q: want a whole number from 1 to 255", s[0])
		}
		p.HopLimit = n
	}
	if _, ok := q["sign"]; ok {
		v, err := parseBool(q, "sign")
		if err != nil {
			return p, err
		}
		p.Sign = &v
	}
	return p, nil
}

// Query encodes p as ParseSendParams reads it.
func (p SendParams) Query() string {
	q := url.Values{}
	if !p.Destination.IsZero() {
		q.Set("destination", p.Destination.String())
	}
	if !p.Source.IsZero() {
		q.Set("source", p.Source.String())
	}
	if !p.ReportTo.IsZero() {
		q.Set("report_to", p.ReportTo.String())
	}
	if p.Lifetime != 0 {
		q.Set("lifetime", p.Lifetime.String())
	}
	if names := ReportNames(p.Reports); len(names) > 0 {
		q.Set("report", strings.Join(names, ","))
	}
	if names := FlagNames(p.Flags); len(names) > 0 {
		q.Set("flags", strings.Join(names, ","))
	}
	if p.HopLimit != 0 {
		q.Set("hop_limit", strconv.FormatUint(p.HopLimit, 10))
	}
	if p.Sign != nil {
		q.Set("sign", strconv.FormatBool(*p.Sign))
	}
	return q.Encode()
}

// BundleQuery are the parameters of GET /v1/bundles.
type BundleQuery struct {
	// State is pending, in_flight, done, failed, or carried (no progress
	// record: held for peers only); empty means any.
	State       string
	Destination bundle.EID
	Limit       int
}

// States are the values of BundleQuery.State.
var States = []string{"pending", "in_flight", "done", "failed", "carried"}

// ParseBundleQuery reads BundleQuery from a raw query string.
func ParseBundleQuery(raw string) (BundleQuery, error) {
	var b BundleQuery
	q, err := parseQuery(raw, "state", "destination", "limit")
	if err != nil {
		return b, err
	}
	if s, ok := q["state"]; ok {
		found := false
		for _, st := range States {
			found = found || s[0] == st
		}
		if !found {
			return b, paramErr("state", "%q: want one of %s", s[0], strings.Join(States, ", "))
		}
		b.State = s[0]
	}
	if b.Destination, err = parseEID(q, "destination", false); err != nil {
		return b, err
	}
	b.Limit, err = parseLimit(q)
	return b, err
}

// Query encodes b as ParseBundleQuery reads it.
func (b BundleQuery) Query() string {
	q := url.Values{}
	if b.State != "" {
		q.Set("state", b.State)
	}
	if !b.Destination.IsZero() {
		q.Set("destination", b.Destination.String())
	}
	if b.Limit > 0 {
		q.Set("limit", strconv.Itoa(b.Limit))
	}
	return q.Encode()
}

// parseEndpointQuery reads the endpoint parameter (required) and, where
// the route takes it, limit.
func parseEndpointQuery(raw string, withLimit bool) (bundle.EID, int, error) {
	names := []string{"endpoint"}
	if withLimit {
		names = append(names, "limit")
	}
	q, err := parseQuery(raw, names...)
	if err != nil {
		return bundle.EID{}, 0, err
	}
	ep, err := parseEID(q, "endpoint", true)
	if err != nil {
		return bundle.EID{}, 0, err
	}
	if ep.IsNone() {
		return bundle.EID{}, 0, paramErr("endpoint", "dtn:none is not an endpoint")
	}
	limit := 0
	if withLimit {
		if limit, err = parseLimit(q); err != nil {
			return bundle.EID{}, 0, err
		}
	}
	return ep, limit, nil
}

// parseID reads a bundle ID from a path segment.
func parseID(s string) (bundle.ID, error) {
	id, err := bundle.ParseID(s)
	if err != nil {
		return id, &ParamError{Param: "id", Msg: err.Error() + " (escape it in the path: url.PathEscape, or jq's @uri)"}
	}
	return id, nil
}
