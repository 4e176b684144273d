package ratelimit

import (
	"time"

	"golang.org/x/time/rate"
)

func (b *bucket) reset(r *rule) {
	b.rule = r
	b.bundles, b.bytes = nil, nil
	if r.bundles > 0 {
		b.bundles = rate.NewLimiter(r.bundles, r.bBurst)
	}
	if r.bytes > 0 {
		b.bytes = rate.NewLimiter(r.bytes, r.yBurst)
	}
}

// admit charges k bundles and n bytes at now if both budgets allow it, and
// otherwise charges nothing and says which limit refused and for how long.
func (b *bucket) admit(now time.Time, k int, n int64) (string, time.Duration) {
	var held *rate.Reservation
	if b.bundles != nil && k > 0 {
		held = b.bundles.ReserveN(now, k)
		if d := held.DelayFrom(now); d > 0 || !held.OK() {
			held.CancelAt(now)
			return "bundles", max(d, time.Nanosecond)
		}
	}
	if b.bytes != nil && n > 0 {
		lim := b.bytes
		burst := int64(lim.Burst())
		// A bundle larger than the burst needs a full bucket now; the rest
		// becomes debt.
		first := min(n, burst)
		r := lim.ReserveN(now, int(first))
		if d := r.DelayFrom(now); d > 0 || !r.OK() {
			r.CancelAt(now)
			if held != nil {
				held.CancelAt(now)
			}
			return "bytes", max(d, time.Nanosecond)
		}
		if rest := n - first; rest > 0 {
			// ReserveN refuses more than the burst at once, so widen the
			// burst for this one reservation. Tokens never exceed the old
			// burst (no time passes), and the debt stays after the burst is
			// put back. b's limiter is only ever used under Limiter.mu.
			lim.SetBurstAt(now, int(max(rest, burst)))
			lim.ReserveN(now, int(rest))
			lim.SetBurstAt(now, int(burst))
		}
	}
	return "", 0
}

// idle reports whether the bucket has refilled completely, so that
// forgetting it changes nothing.
func (b *bucket) idle(now time.Time) bool {
	for _, lim := range []*rate.Limiter{b.bundles, b.bytes} {
		if lim != nil && lim.TokensAt(now) < float64(lim.Burst()) {
			return false
		}
	}
	return true
}

// untilIdle is how long until the bucket has refilled completely.
func (b *bucket) untilIdle(now time.Time) time.Duration {
	var d time.Duration
	for _, lim := range []*rate.Limiter{b.bundles, b.bytes} {
		if lim == nil {
			continue
		}
		missing := float64(lim.Burst()) - lim.TokensAt(now)
		if missing > 0 {
			d = max(d, time.Duration(missing/float64(lim.Limit())*float64(time.Second))+time.Millisecond)
		}
	}
	return max(d, time.Millisecond)
}
