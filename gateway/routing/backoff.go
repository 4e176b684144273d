package routing

import (
	"math/rand/v2"
	"time"
)

// Backoff is jittered exponential backoff with a cap: the delay before
// retry number attempt (1 for the first retry) is a random duration in
// [d/2, d], where d = Min·2^(attempt-1), capped at Max. Jitter keeps many
// nodes that failed together from retrying together.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before the given retry.
func (b Backoff) Delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := b.Min
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}
