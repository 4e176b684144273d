package sdk

import (
	"context"
	"time"
)

// LongPoll is the waiting of a Fetch whose service cannot say when a
// message arrives (a directory, a bucket): it calls offer until offer
// takes something (n > 0) or fails, and between two calls waits every, or
// until wake fires (nil: never), for at most wait in all. It returns
// offer's error, nil when wait passed with nothing taken, or ctx's error
// if ctx ended first.
func LongPoll(ctx context.Context, wait, every time.Duration, wake <-chan struct{}, offer func() (n int, err error)) error {
	deadline := time.Now().Add(wait)
	for {
		n, err := offer()
		if err != nil || n > 0 {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		t := time.NewTimer(min(left, every))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-wake:
			t.Stop()
		case <-t.C:
		}
	}
}
