// Package policy decides what a node accepts and from whom: bundle limits
// (size, lifetime, hops, clock skew), and — in its subpackages — identities
// and trust (policy/identity). Every refusal carries a status report reason
// (bundle.ReasonOf), so logs, metrics, API errors and status reports agree.
package policy

import (
	"fmt"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// Refusals by Limits.Check. Each wraps one of these.
var (
	ErrTooLarge         = bundle.NewError(bundle.ReasonDepletedStorage, "bundle too large")
	ErrExpired          = bundle.NewError(bundle.ReasonLifetimeExpired, "bundle lifetime expired")
	ErrLifetimeTooLong  = bundle.NewError(bundle.ReasonNoInformation, "bundle lifetime exceeds this node's maximum")
	ErrHopLimitExceeded = bundle.NewError(bundle.ReasonHopLimitExceeded, "bundle hop limit exceeded")
	ErrFromTheFuture    = bundle.NewError(bundle.ReasonNoInformation, "bundle creation time is in the future")
)

// Limits protect a node's storage. They are checked from a bundle's header,
// before any payload byte is read.
type Limits struct {
	// MaxBundleSize bounds the encoded bundle, payload included.
	MaxBundleSize uint64
	// MaxLifetime bounds the lifetime a bundle may ask for.
	MaxLifetime time.Duration
	// MaxHops bounds the hop count, whatever limit the bundle sets itself.
	MaxHops uint64
	// MaxClockSkew is how far in the future a creation time may be before
	// the bundle is refused: clocks on disconnected devices drift.
	MaxClockSkew time.Duration
}

// Check applies the limits to b, received (or about to be received) at
// now. It returns nil or an error wrapping one of this package's Err
// values.
func (l Limits) Check(b *bundle.Bundle, now time.Time) error {
	if l.MaxBundleSize > 0 {
		size, err := b.EncodedLen()
		if err != nil {
			return err
		}
		if size > l.MaxBundleSize {
			return fmt.Errorf("%w: %d bytes; the limit is %d", ErrTooLarge, size, l.MaxBundleSize)
		}
	}
	p := &b.Primary
	if l.MaxLifetime > 0 && p.Lifetime > l.MaxLifetime {
		return fmt.Errorf("%w: %v asked, at most %v allowed", ErrLifetimeTooLong, p.Lifetime, l.MaxLifetime)
	}
	if p.Creation.Time != 0 {
		created := p.Creation.Time.Time()
		if created.Sub(now) > l.MaxClockSkew {
			return fmt.Errorf("%w: created %s, %v ahead of this node's clock (allowed skew %v)", ErrFromTheFuture, created.UTC().Format(time.RFC3339), created.Sub(now).Round(time.Second), l.MaxClockSkew)
		}
	}
	if exp := b.ExpiresAt(now); !exp.After(now) {
		return fmt.Errorf("%w: expired at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	hc, ok, err := b.HopCount()
	if err != nil {
		return err
	}
	if ok {
		if hc.Exceeded() {
			return fmt.Errorf("%w: %d hops, limit %d", ErrHopLimitExceeded, hc.Count, hc.Limit)
		}
		if l.MaxHops > 0 && hc.Count > l.MaxHops {
			return fmt.Errorf("%w: %d hops, this node allows %d", ErrHopLimitExceeded, hc.Count, l.MaxHops)
		}
	}
	return nil
}
