package convergence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/mulegate/mulegate/bundle"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err       error
		reason    bundle.StatusReason
		transient bool
	}{
		{Reject(bundle.ReasonLifetimeExpired, errors.New("old")), bundle.ReasonLifetimeExpired, false},
		{fmt.Errorf("policy: %w", Reject(bundle.ReasonFailedSecurity, nil)), bundle.ReasonFailedSecurity, false},
		{RejectTransient(bundle.ReasonTrafficPared, errors.New("rate limit")), bundle.ReasonTrafficPared, true},
		{fmt.Errorf("decoding: %w", bundle.ErrCRCMismatch), bundle.ReasonBlockUnintelligible, false},
		{bundle.ErrTooLarge, bundle.ReasonDepletedStorage, false},
		{errors.New("disk full"), bundle.ReasonNoInformation, true},
		{context.Canceled, bundle.ReasonNoInformation, true},
	} {
		reason, transient := Classify(tc.err)
		if reason != tc.reason || transient != tc.transient {
			t.Errorf("Classify(%v) = %v, %v; want %v, %v", tc.err, reason, transient, tc.reason, tc.transient)
		}
	}
}

func TestInterruptedError(t *testing.T) {
	cause := io.ErrClosedPipe
	var err error = fmt.Errorf("reading payload: %w", &InterruptedError{Received: 42, Err: cause})
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, cause) {
		t.Fatalf("%v matches neither ErrInterrupted nor its cause", err)
	}
	var ie *InterruptedError
	if !errors.As(err, &ie) || ie.Received != 42 {
		t.Fatalf("errors.As: %v", ie)
	}
	if errors.Is(err, ErrClosed) {
		t.Error("an interruption matches ErrClosed")
	}
}

func TestRejectErrorMessage(t *testing.T) {
	err := RejectTransient(bundle.ReasonDepletedStorage, errors.New("store full"))
	if got, want := err.Error(), "bundle refused (transient, depleted_storage): store full"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got, want := Reject(bundle.ReasonHopLimitExceeded, nil).Error(), "bundle refused (fatal, hop_limit_exceeded)"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
