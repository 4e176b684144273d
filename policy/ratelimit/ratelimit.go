// Package ratelimit gives every principal (a peer, or a bundle's original
// sender) its own budget of bundles and bytes per second.
//
// Limits are configured by pattern (policy/acl patterns: *, campfire/*,
// campfire/alice, dtn://alice/) for three points: inbound peers, outbound
// peers and original senders. The first rule whose pattern matches a
// principal gives its limits; a principal no rule matches is not limited,
// and a rule with no rates is an explicit exemption:
//
//	ratelimit:
//	  max_principals: 10000
//	  inbound:
//	    - match: dtn://gateway/          # exempt
//	    - match: "*"
//	      bundles_per_second: 20
//	      bundle_burst: 100
//	      bytes_per_second: 1048576
//	      byte_burst: 16777216
//	  senders:
//	    - match: campfire/*
//	      bundles_per_second: 5
//
// Every principal a rule matches gets a token bucket of its own
// (golang.org/x/time/rate), created on first use: two principals matching
// the same rule never share a budget. Buckets live in a map bounded by
// max_principals. A bucket that has refilled completely is indistinguishable
// from a new one, so such idle buckets are evicted first, and freely. When
// the map is full of buckets still refilling, a new principal is refused
// (transiently) rather than evicting someone's partly spent budget: evicting
// it would hand that principal a fresh burst, which is exactly what a flood
// of identities would be after.
//
// A bundle larger than the byte burst is admitted when the bucket holds at
// least a full burst; the rest is taken as debt, which delays that
// principal's next bundles until it is paid off. Large bundles are therefore
// neither refused forever nor let through at a discount.
//
// Going over a limit is transient: Allow returns a *LimitError wrapping
// ErrRateLimited, with the delay after which the same request would pass.
// ErrRateLimited carries ReasonTrafficPared, the BPv7 reason for a node
// shedding load; nothing is deleted, so no status report is due. The
// convergence layer maps it to a transient refusal ("retry after"), so the
// peer backs off and keeps the bundle.
package ratelimit

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/acl"
)

// DefaultMaxPrincipals bounds each point's bucket map unless configured. It
// matches identity.MaxPins, the most trust-on-first-use nodes a node knows.
const DefaultMaxPrincipals = 10000

// ErrRateLimited is what every refusal wraps. It is transient.
var ErrRateLimited = bundle.NewError(bundle.ReasonTrafficPared, "rate limit exceeded")

// IsTransient reports whether err is a rate-limit refusal, which a caller
// retries after RetryAfter(err).
func IsTransient(err error) bool { return errors.Is(err, ErrRateLimited) }

// RetryAfter is the delay a rate-limit refusal asks for, or 0 when err is
// not one.
func RetryAfter(err error) time.Duration {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Delay
	}
	return 0
}

// LimitError is a refusal: who, which limit, and how long to wait.
type LimitError struct {
	Principal acl.Principal
	Rule      string        // the pattern of the rule that set the limit
	Limit     string        // "bundles", "bytes", or "principals" (the map is full)
	Delay     time.Duration // after this, the same request would pass
}

func (e *LimitError) Error() string {
	if e.Limit == "principals" {
		return fmt.Sprintf("%v: %s: too many principals are spending their budgets at once; retry in %v", ErrRateLimited, e.Principal, e.Delay)
	}
	return fmt.Sprintf("%v: %s is over its %s limit (rule %q); retry in %v", ErrRateLimited, e.Principal, e.Limit, e.Rule, e.Delay)
}

func (e *LimitError) Unwrap() error { return ErrRateLimited }

// Rule sets the limits of the principals its pattern matches. A zero rate
// means no limit of that kind; a zero burst means one second's worth (at
// least 1).
type Rule struct {
	Match            string  `yaml:"match" json:"match"`
	BundlesPerSecond float64 `yaml:"bundles_per_second,omitempty" json:"bundles_per_second,omitempty"`
	BundleBurst      int     `yaml:"bundle_burst,omitempty" json:"bundle_burst,omitempty"`
	BytesPerSecond   float64 `yaml:"bytes_per_second,omitempty" json:"bytes_per_second,omitempty"`
	ByteBurst        int64   `yaml:"byte_burst,omitempty" json:"byte_burst,omitempty"`
}

// Config is the YAML shape (see the package documentation).
type Config struct {
	// MaxPrincipals bounds the buckets kept for each point; 0 means
	// DefaultMaxPrincipals.
	MaxPrincipals int    `yaml:"max_principals,omitempty" json:"max_principals,omitempty"`
	Inbound       []Rule `yaml:"inbound,omitempty" json:"inbound,omitempty"`
	Outbound      []Rule `yaml:"outbound,omitempty" json:"outbound,omitempty"`
	Senders       []Rule `yaml:"senders,omitempty" json:"senders,omitempty"`
}

// Limiters are the three points' limiters.
type Limiters struct {
	Inbound  *Limiter // peers handing this node bundles, keyed by the TLS identity
	Outbound *Limiter // peers this node hands bundles to
	Senders  *Limiter // original senders, keyed by the bundle's signer
}

// New checks c and builds the limiters. now is the clock (time.Now when
// nil); tests inject their own. Errors name the offending key, as
// "ratelimit.inbound[1].match: …".
func New(c Config, now func() time.Time) (*Limiters, error) {
	if now == nil {
		now = time.Now
	}
	if c.MaxPrincipals < 0 {
		return nil, fmt.Errorf("ratelimit.max_principals: %d is negative", c.MaxPrincipals)
	}
	maxBuckets := c.MaxPrincipals
	if maxBuckets == 0 {
		maxBuckets = DefaultMaxPrincipals
	}
	var errs []error
	mk := func(name string, rs []Rule) *Limiter {
		l, err := NewLimiter(name, rs, maxBuckets, now)
		if err != nil {
			errs = append(errs, err)
		}
		return l
	}
	ls := &Limiters{
		Inbound:  mk("ratelimit.inbound", c.Inbound),
		Outbound: mk("ratelimit.outbound", c.Outbound),
		Senders:  mk("ratelimit.senders", c.Senders),
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ls, nil
}

// Limiter holds the buckets of one point. It is safe for concurrent use. A
// nil *Limiter limits nothing.
type Limiter struct {
	name  string
	rules []rule
	max   int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     *list.List               // front: most recently used
}

type rule struct {
	pattern acl.Pattern
	bundles rate.Limit // 0: unlimited
	bBurst  int
	bytes   rate.Limit
	yBurst  int
}

type bucket struct {
	key     string
	rule    *rule
	bundles *rate.Limiter // nil: unlimited
	bytes   *rate.Limiter
}

// NewLimiter builds one point's limiter; name prefixes error keys.
// maxBuckets bounds the buckets kept (at least 1).
func NewLimiter(name string, rules []Rule, maxBuckets int, now func() time.Time) (*Limiter, error) {
	if now == nil {
		now = time.Now
	}
	l := &Limiter{name: name, max: max(maxBuckets, 1), now: now, buckets: map[string]*list.Element{}, lru: list.New()}
	var errs []error
	for i, r := range rules {
		key := fmt.Sprintf("%s[%d]", name, i)
		p, err := acl.ParsePattern(r.Match)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.match: %w", key, err))
			continue
		}
		bad := func(field string, v float64) bool {
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				errs = append(errs, fmt.Errorf("%s.%s: %v is not a rate", key, field, v))
				return true
			}
			return false
		}
		if bad("bundles_per_second", r.BundlesPerSecond) || bad("bytes_per_second", r.BytesPerSecond) {
			continue
		}
		if r.BundleBurst < 0 || r.ByteBurst < 0 || r.ByteBurst > math.MaxInt32*int64(1<<16) {
			errs = append(errs, fmt.Errorf("%s: bursts must be between 0 and 2^47", key))
			continue
		}
		l.rules = append(l.rules, rule{
			pattern: p,
			bundles: rate.Limit(r.BundlesPerSecond), bBurst: burst(int64(r.BundleBurst), r.BundlesPerSecond),
			bytes: rate.Limit(r.BytesPerSecond), yBurst: burst(r.ByteBurst, r.BytesPerSecond),
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return l, nil
}

func burst(b int64, perSecond float64) int {
	if b > 0 {
		return int(b)
	}
	return int(max(1, math.Ceil(min(perSecond, 1<<47))))
}

// Allow asks whether principal p may pass one bundle of n bytes now, without
// blocking. It returns nil and charges p's budget, or a *LimitError (wrapping
// ErrRateLimited) whose Delay says when the same request would pass, and
// charges nothing.
func (l *Limiter) Allow(p acl.Principal, n int64) error {
	return l.allow(p, 1, n)
}

// AllowBytes is Allow for bytes alone, for a caller that charges a stream
// chunk by chunk after charging the bundle itself with Allow(p, 0).
func (l *Limiter) AllowBytes(p acl.Principal, n int64) error {
	return l.allow(p, 0, n)
}

// Len is the number of buckets held.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

func (l *Limiter) allow(p acl.Principal, bundles int, n int64) error {
	if l == nil {
		return nil
	}
	n = max(n, 0)
	r := l.match(p)
	if r == nil || r.bundles == 0 && r.bytes == 0 {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := l.bucket(p, r, now)
	if err != nil {
		return err
	}
	if what, d := b.admit(now, bundles, n); d > 0 {
		return &LimitError{Principal: p, Rule: r.pattern.String(), Limit: what, Delay: d}
	}
	return nil
}

func (l *Limiter) match(p acl.Principal) *rule {
	for i := range l.rules {
		if l.rules[i].pattern.Match(p) {
			return &l.rules[i]
		}
	}
	return nil
}

// bucket finds or makes p's bucket, evicting idle ones; l.mu is held.
func (l *Limiter) bucket(p acl.Principal, r *rule, now time.Time) (*bucket, error) {
	key := p.Key()
	if e, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(e)
		b := e.Value.(*bucket)
		if b.rule != r { // cannot happen: rules are fixed; keep it honest anyway
			b.reset(r)
		}
		return b, nil
	}
	// Drop idle buckets from the cold end: they hold no state worth keeping.
	for i := 0; i < 4 && l.lru.Len() > 0; i++ {
		back := l.lru.Back()
		if !back.Value.(*bucket).idle(now) {
			break
		}
		l.remove(back)
	}
	if l.lru.Len() >= l.max {
		back := l.lru.Back().Value.(*bucket)
		return nil, &LimitError{Principal: p, Rule: r.pattern.String(), Limit: "principals", Delay: back.untilIdle(now)}
	}
	b := &bucket{key: key}
	b.reset(r)
	l.buckets[key] = l.lru.PushFront(b)
	return b, nil
}

func (l *Limiter) remove(e *list.Element) {
	delete(l.buckets, e.Value.(*bucket).key)
	l.lru.Remove(e)
}
