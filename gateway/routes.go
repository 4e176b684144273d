package gateway

import (
	"fmt"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
)

// route is a compiled configuration route: destinations matching pattern go
// to adapter, with options expanded per bundle.
type route struct {
	pattern string
	adapter string
	options map[string]string
}

func compileRoutes(rs []config.Route) ([]route, error) {
	out := make([]route, 0, len(rs))
	for i, r := range rs {
		if err := config.ValidPattern(r.Match); err != nil {
			return nil, fmt.Errorf("routes[%d].match: %w", i, err)
		}
		out = append(out, route{pattern: r.Match, adapter: r.Adapter, options: r.Options})
	}
	return out, nil
}

// MatchEID reports whether e matches pattern: "*" matches within one
// segment (up to the next "/"), a final "**" matches any rest, and "**"
// alone matches everything.
func MatchEID(pattern string, e bundle.EID) bool {
	return matchGlob(pattern, e.String())
}

func matchGlob(p, s string) bool {
	if p == "**" {
		return true
	}
	if strings.HasSuffix(p, "**") {
		prefix := p[:len(p)-2]
		for i := 0; i <= len(s); i++ {
			if matchSegment(prefix, s[:i]) {
				return true
			}
		}
		return false
	}
	return matchSegment(p, s)
}

// matchSegment matches with "*" standing for any run of characters other
// than "/".
func matchSegment(p, s string) bool {
	for len(p) > 0 {
		if p[0] == '*' {
			p = p[1:]
			for i := 0; i <= len(s); i++ {
				if i > 0 && s[i-1] == '/' {
					return false
				}
				if matchSegment(p, s[i:]) {
					return true
				}
			}
			return false
		}
		if len(s) == 0 || p[0] != s[0] {
			return false
		}
		p, s = p[1:], s[1:]
	}
	return len(s) == 0
}

// routeFor returns the first route matching dst.
func (n *Node) routeFor(dst bundle.EID) (route, bool) {
	for _, r := range n.routes {
		if MatchEID(r.pattern, dst) {
			return r, true
		}
	}
	return route{}, false
}

// ExpandOptions fills a route's option templates from a bundle's fields:
// {src}, {src_node} (the source node name), {dst}, {dst_node}, {service}
// (the destination's service, slashes as dots), {bundle_id}, {bundle_key}
// (32 hex characters), {date} (creation date, YYYY-MM-DD), {seq}.
func ExpandOptions(opts map[string]string, b *bundle.Bundle) map[string]string {
	if len(opts) == 0 {
		return nil
	}
	p := b.Primary
	id := b.ID()
	created := p.Creation.Time.Time()
	if p.Creation.Time == 0 {
		created = time.Now()
	}
	svc := strings.ReplaceAll(strings.Trim(p.Destination.Service(), "/"), "/", ".")
	r := strings.NewReplacer(
		"{src}", p.Source.String(),
		"{src_node}", p.Source.NodeName(),
		"{dst}", p.Destination.String(),
		"{dst_node}", p.Destination.NodeName(),
		"{service}", svc,
		"{bundle_id}", id.String(),
		"{bundle_key}", id.Key(),
		"{date}", created.UTC().Format("2006-01-02"),
		"{seq}", fmt.Sprint(p.Creation.Sequence),
	)
	out := make(map[string]string, len(opts))
	for k, v := range opts {
		out[k] = r.Replace(v)
	}
	return out
}
