package ratelimit

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/acl"
)

// clock is an injected clock: tests move it, nothing sleeps.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	alice   = acl.Principal{NodeID: "dtn://alice/", Name: "campfire/alice", Authenticated: true}
	mallory = acl.Principal{NodeID: "dtn://mallory/", Name: "campfire/mallory", Authenticated: true}
	gateway = acl.Principal{NodeID: "dtn://gateway/", Authenticated: true}
)

func member(i int) acl.Principal {
	return acl.Principal{NodeID: fmt.Sprintf("dtn://n%d/", i), Name: fmt.Sprintf("campfire/n%d", i), Authenticated: true}
}

func limiter(t *testing.T, c *clock, maxBuckets int, rules ...Rule) *Limiter {
	t.Helper()
	l, err := NewLimiter("ratelimit.test", rules, maxBuckets, c.now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustRefuse(t *testing.T, err error, limit string) time.Duration {
	t.Helper()
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("got %v, want a *LimitError", err)
	}
	if le.Limit != limit {
		t.Fatalf("refused by the %s limit, want %s: %v", le.Limit, limit, err)
	}
	if !IsTransient(err) || !errors.Is(err, ErrRateLimited) || bundle.ReasonOf(err) != bundle.ReasonTrafficPared {
		t.Fatalf("%v: not a transient traffic-pared refusal (reason %v)", err, bundle.ReasonOf(err))
	}
	if le.Delay <= 0 || RetryAfter(err) != le.Delay {
		t.Fatalf("%v: delay %v, RetryAfter %v", err, le.Delay, RetryAfter(err))
	}
	return le.Delay
}

// TestPerPrincipal: two principals matching the same rule each have their
// own budget, and spending one leaves the other untouched.
func TestPerPrincipal(t *testing.T) {
	c := newClock()
	l := limiter(t, c, 100, Rule{Match: "campfire/*", BundlesPerSecond: 1, BundleBurst: 2})
	for i := range 2 {
		if err := l.Allow(alice, 10); err != nil {
			t.Fatalf("alice bundle %d: %v", i, err)
		}
	}
	d := mustRefuse(t, l.Allow(alice, 10), "bundles")
	if d != time.Second {
		t.Errorf("delay %v, want 1s at 1 bundle/s", d)
	}
	for i := range 2 {
		if err := l.Allow(mallory, 10); err != nil {
			t.Fatalf("mallory bundle %d after alice spent hers: %v", i, err)
		}
	}
	mustRefuse(t, l.Allow(mallory, 10), "bundles")
	if l.Len() != 2 {
		t.Errorf("%d buckets, want 2", l.Len())
	}
}

// TestDelayThenAccept: a refused request passes once its delay has passed,
// and not a moment before.
func TestDelayThenAccept(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rule  Rule
		spend int64 // bytes of the first, accepted bundle
		next  int64 // bytes of the refused one
		limit string
		delay time.Duration
	}{
		{"bundles", Rule{Match: "*", BundlesPerSecond: 4, BundleBurst: 1}, 0, 0, "bundles", 250 * time.Millisecond},
		{"bytes", Rule{Match: "*", BytesPerSecond: 100, ByteBurst: 1000}, 600, 600, "bytes", 2 * time.Second},
		// 5000 bytes against a burst of 1000: admitted on a full bucket,
		// leaving 4000 bytes of debt before the next byte.
		{"debt", Rule{Match: "*", BytesPerSecond: 100, ByteBurst: 1000}, 5000, 1, "bytes", 40010 * time.Millisecond},
		{"both", Rule{Match: "*", BundlesPerSecond: 10, BytesPerSecond: 100, ByteBurst: 100}, 100, 50, "bytes", 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			l := limiter(t, c, 10, tc.rule)
			if err := l.Allow(alice, tc.spend); err != nil {
				t.Fatal(err)
			}
			d := mustRefuse(t, l.Allow(alice, tc.next), tc.limit)
			if d != tc.delay {
				t.Errorf("delay %v, want %v", d, tc.delay)
			}
			// A refusal charges nothing: asking again at once gives the same delay.
			if d2 := mustRefuse(t, l.Allow(alice, tc.next), tc.limit); d2 != d {
				t.Errorf("second refusal delay %v, want %v (the first charged something)", d2, d)
			}
			c.advance(d - time.Millisecond)
			mustRefuse(t, l.Allow(alice, tc.next), tc.limit)
			c.advance(time.Millisecond)
			if err := l.Allow(alice, tc.next); err != nil {
				t.Errorf("after %v: %v", d, err)
			}
		})
	}
}

// TestBytesRefusalReleasesBundle: when the byte budget refuses, the bundle
// token taken first is given back.
func TestBytesRefusalReleasesBundle(t *testing.T) {
	c := newClock()
	l := limiter(t, c, 10, Rule{Match: "*", BundlesPerSecond: 1, BundleBurst: 5, BytesPerSecond: 10, ByteBurst: 10})
	if err := l.Allow(alice, 10); err != nil { // bundles 4 left, bytes 0
		t.Fatal(err)
	}
	mustRefuse(t, l.Allow(alice, 5), "bytes") // must not keep a bundle token
	c.advance(500 * time.Millisecond)         // bundles 4.5, bytes 5
	if err := l.Allow(alice, 5); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // 3.5 bundle tokens left; 2.5 if the refusal had kept one
		if err := l.Allow(alice, 0); err != nil {
			t.Fatalf("bundle %d: %v (the bytes refusal kept its bundle token)", i, err)
		}
	}
	mustRefuse(t, l.Allow(alice, 0), "bundles")
}

func TestRulesAndKeys(t *testing.T) {
	c := newClock()
	l := limiter(t, c, 10,
		Rule{Match: "dtn://gateway/"}, // exemption: first match wins
		Rule{Match: "dtn://alice/", BundlesPerSecond: 1, BundleBurst: 1},
		Rule{Match: "*", BundlesPerSecond: 1, BundleBurst: 1},
	)
	for range 100 {
		if err := l.Allow(gateway, 1<<20); err != nil {
			t.Fatalf("exempt gateway limited: %v", err)
		}
	}
	if l.Len() != 0 {
		t.Errorf("an exempt principal got a bucket")
	}
	// alice as trust-on-first-use knows her: node ID, no member name.
	pinnedAlice := acl.Principal{NodeID: "dtn://alice/", Authenticated: true}
	if err := l.Allow(pinnedAlice, 0); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, l.Allow(pinnedAlice, 0), "bundles")
	// Someone merely claiming alice's node ID (an unsigned bundle) has a
	// bucket of its own: a forger cannot spend alice's budget, nor use hers.
	if err := l.Allow(acl.Claimed("dtn://alice/"), 0); err != nil {
		t.Fatalf("claim shares alice's bucket: %v", err)
	}
	// A claim matches node-ID rules only; * is for authenticated principals.
	for range 10 {
		if err := l.Allow(acl.Claimed("dtn://carol/"), 0); err != nil {
			t.Fatalf("unmatched claim limited: %v", err)
		}
	}
	var nl *Limiter
	if nl.Allow(alice, 1) != nil || nl.Len() != 0 {
		t.Error("a nil limiter limits")
	}
}

// TestBoundedMemory: a flood of principals never grows the map past its
// bound; newcomers are refused (transiently) while every bucket is still
// refilling, and admitted once buckets go idle, which are then recycled.
func TestBoundedMemory(t *testing.T) {
	const maxBuckets = 100
	c := newClock()
	l := limiter(t, c, maxBuckets, Rule{Match: "*", BundlesPerSecond: 1, BundleBurst: 5})
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	refused := 0
	for i := range 100_000 {
		err := l.Allow(member(i), 0)
		if err != nil {
			mustRefuse(t, err, "principals")
			refused++
		}
		if i%1000 == 999 {
			c.advance(time.Second) // not enough for a spent bucket to refill
		}
		if l.Len() > maxBuckets {
			t.Fatalf("%d buckets after %d principals, bound %d", l.Len(), i+1, maxBuckets)
		}
	}
	if refused == 0 {
		t.Error("no newcomer was ever refused while the map was full of busy buckets")
	}
	// Once the buckets refill, they are idle and make room: the map takes a
	// new set of principals, and refuses the next one only while those are
	// still spending.
	c.advance(10 * time.Second)
	for i := range maxBuckets {
		if err := l.Allow(member(1_000_000+i), 0); err != nil {
			t.Fatalf("newcomer %d refused with only idle buckets around: %v", i, err)
		}
	}
	d := mustRefuse(t, l.Allow(member(1_100_000), 0), "principals")
	c.advance(d)
	if err := l.Allow(member(1_100_000), 0); err != nil {
		t.Fatalf("newcomer refused after the delay it was given: %v", err)
	}
	if l.Len() > maxBuckets {
		t.Errorf("%d buckets, bound %d", l.Len(), maxBuckets)
	}
	// A principal still spending is never evicted to make room: its budget
	// survives the flood.
	c.advance(10 * time.Second)
	for range 5 {
		if err := l.Allow(alice, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 * maxBuckets {
		l.Allow(member(2_000_000+i), 0)
	}
	mustRefuse(t, l.Allow(alice, 0), "bundles")
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 4<<20 {
		t.Errorf("heap grew by %d bytes for %d buckets", grown, maxBuckets)
	}
}

func TestConcurrent(t *testing.T) {
	c := newClock()
	l := limiter(t, c, 50, Rule{Match: "*", BundlesPerSecond: 1000, BundleBurst: 10, BytesPerSecond: 1e6})
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[string]int{}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				p := member((g*1000 + i) % 20)
				if l.Allow(p, 100) == nil {
					mu.Lock()
					admitted[p.NodeID]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for id, n := range admitted {
		if n > 10 {
			t.Errorf("%s passed %d bundles with a burst of 10 and a frozen clock", id, n)
		}
	}
}

func TestConfig(t *testing.T) {
	const doc = `
max_principals: 500
inbound:
  - match: dtn://gateway/
  - match: "*"
    bundles_per_second: 20
    bundle_burst: 100
    bytes_per_second: 1048576
    byte_burst: 16777216
senders:
  - match: campfire/*
    bundles_per_second: 5
`
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	c := newClock()
	ls, err := New(cfg, c.now)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := ls.Senders.Allow(alice, 0); err != nil {
			t.Fatal(err)
		}
	}
	mustRefuse(t, ls.Senders.Allow(alice, 0), "bundles") // burst defaults to one second's worth
	if err := ls.Inbound.Allow(alice, 16<<20); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, ls.Inbound.Allow(alice, 1), "bytes")
	if err := ls.Outbound.Allow(alice, 1<<30); err != nil {
		t.Errorf("outbound has no rules but limits: %v", err)
	}

	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Inbound: []Rule{{Match: "camp*"}}}, "ratelimit.inbound[0].match: bad pattern"},
		{Config{Senders: []Rule{{Match: "*", BytesPerSecond: -1}}}, "ratelimit.senders[0].bytes_per_second"},
		{Config{Outbound: []Rule{{Match: "*", BundleBurst: -1}}}, "ratelimit.outbound[0]: bursts"},
		{Config{MaxPrincipals: -1}, "ratelimit.max_principals"},
	} {
		if _, err := New(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
