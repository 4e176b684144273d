package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

func TestLimits(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	lim := Limits{MaxBundleSize: 10_000, MaxLifetime: 24 * time.Hour, MaxHops: 10, MaxClockSkew: time.Minute}
	mk := func(mut func(b *bundle.Bundle)) *bundle.Bundle {
		b, err := bundle.New(bundle.Params{
			Source: bundle.MustParseEID("dtn://a/"), Destination: bundle.MustParseEID("dtn://b/"),
			Created: now.Add(-time.Minute), Lifetime: time.Hour, CRCType: bundle.CRC32C, HopLimit: 5, PayloadLength: 100,
		})
		if err != nil {
			t.Fatal(err)
		}
		if mut != nil {
			mut(b)
		}
		return b
	}
	tests := []struct {
		name   string
		b      *bundle.Bundle
		want   error
		reason bundle.StatusReason
	}{
		{"ok", mk(nil), nil, 0},
		{"too large", mk(func(b *bundle.Bundle) { b.Payload.Length = 20_000 }), ErrTooLarge, bundle.ReasonDepletedStorage},
		{"lifetime too long", mk(func(b *bundle.Bundle) { b.Primary.Lifetime = 48 * time.Hour }), ErrLifetimeTooLong, bundle.ReasonNoInformation},
		{"expired", mk(func(b *bundle.Bundle) { b.Primary.Creation.Time = bundle.FromTime(now.Add(-2 * time.Hour)) }), ErrExpired, bundle.ReasonLifetimeExpired},
		{"expired by age", mk(func(b *bundle.Bundle) { b.Primary.Creation.Time = 0; b.SetAge(2 * time.Hour) }), ErrExpired, bundle.ReasonLifetimeExpired},
		{"from the future", mk(func(b *bundle.Bundle) { b.Primary.Creation.Time = bundle.FromTime(now.Add(time.Hour)) }), ErrFromTheFuture, bundle.ReasonNoInformation},
		{"within skew", mk(func(b *bundle.Bundle) { b.Primary.Creation.Time = bundle.FromTime(now.Add(30 * time.Second)) }), nil, 0},
		{"over its own hop limit", mk(func(b *bundle.Bundle) { b.SetHopCount(bundle.HopCount{Limit: 5, Count: 6}) }), ErrHopLimitExceeded, bundle.ReasonHopLimitExceeded},
		{"over the node's hop limit", mk(func(b *bundle.Bundle) { b.SetHopCount(bundle.HopCount{Limit: 50, Count: 11}) }), ErrHopLimitExceeded, bundle.ReasonHopLimitExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lim.Check(tt.b, now)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err != nil && bundle.ReasonOf(err) != tt.reason {
				t.Fatalf("reason %v, want %v", bundle.ReasonOf(err), tt.reason)
			}
		})
	}
}
