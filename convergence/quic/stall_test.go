package quic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
)

// TestSendStall: a peer whose sink hangs (a stuck disk) keeps its session
// alive with keepalives but takes no more data. Send must give up after
// SendStallTimeout with a transient error that says so, cancel its stream,
// and leave the session usable once the peer recovers.
func TestSendStall(t *testing.T) {
	const stall = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		bob  func(*Options)
		// before, if not nil, is a bundle sent first, which takes the
		// peer's only stream credit and is still in its sink.
		before  uint64
		payload uint64 // of the bundle that stalls
	}{
		// 4 MiB is far beyond the 512 KiB a stream starts with, and the
		// window grows only as the sink reads.
		{name: "flow control exhausted", payload: 4 << 20},
		// A small bundle goes to quic-go in one piece when flow control
		// has room for it; here it has not, and it is written, and
		// watched, like a large one.
		{
			name:    "small bundle, connection window exhausted",
			bob:     func(o *Options) { o.ConnectionReceiveWindow = 4 << 10 },
			payload: smallPayload,
		},
		{
			name:    "stream credit exhausted",
			bob:     func(o *Options) { o.MaxIncomingStreams = 1 },
			before:  100,
			payload: 100,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			p := newPair(ctx, t, func(o *Options) { o.SendStallTimeout = stall }, tc.bob)
			p.bob.sink.setKeep()
			entered := make(chan *bundle.Bundle, 4)
			release := make(chan struct{})
			p.bob.sink.setRefuse(func(b *bundle.Bundle) error {
				entered <- b
				<-release
				return nil
			})
			// Runs before the layers close (cleanups run last first), which
			// waits for the sink.
			released := false
			unblock := func() {
				if !released {
					released = true
					close(release)
				}
			}
			t.Cleanup(unblock)

			if tc.before > 0 {
				if err := p.ab.Send(ctx, newBundle(t, 1, tc.before), io.LimitReader(zeros{}, int64(tc.before))); err != nil {
					t.Fatal(err)
				}
				waitEntered(ctx, t, entered) // the sink holds the only credit
			}
			stalled := newBundle(t, 2, tc.payload)
			start := time.Now()
			err := p.ab.Send(ctx, stalled, io.LimitReader(zeros{}, int64(tc.payload)))
			elapsed := time.Since(start)
			t.Logf("Send after %v: %v", elapsed, err)
			if !errors.Is(err, convergence.ErrStalled) {
				t.Fatalf("Send: %v; want an error matching convergence.ErrStalled", err)
			}
			var rej *convergence.RejectError
			if errors.As(err, &rej) {
				t.Errorf("Send: %v is a refusal; a stall is a transient failure", err)
			}
			if !strings.Contains(err.Error(), "stopped reading") {
				t.Errorf("Send: %q does not say the peer stopped reading", err)
			}
			if elapsed < stall {
				t.Errorf("Send gave up after %v, before the stall timeout of %v", elapsed, stall)
			}
			if p.ab.Err() != nil || p.ba.Err() != nil {
				t.Fatalf("a stall ended the session: %v / %v", p.ab.Err(), p.ba.Err())
			}
			if s := p.ab.Stats(); s.SendsFailed != 1 || s.SendsRefused != 0 {
				t.Errorf("sender stats %+v; want one failed Send", s)
			}

			// The peer recovers. A stream that was cut off reaches the sink
			// as an interrupted transfer, cancelled by the sender; the
			// session carries bundles again.
			unblock()
			if tc.before == 0 {
				p.bob.sink.wait(ctx, t, "the cut-off bundle", func() bool { return len(p.bob.sink.partials) == 1 })
				var se *quicgo.StreamError
				if part := p.bob.sink.partials[0]; !errors.As(part.err, &se) || !se.Remote || Code(se.ErrorCode) != CodeTransferCancelled {
					t.Errorf("bob's payload error: %v; want the sender's %v", part.err, CodeTransferCancelled)
				}
			}
			after := newBundle(t, 3, 10)
			if err := p.ab.Send(ctx, after, bytes.NewReader(make([]byte, 10))); err != nil {
				t.Fatalf("Send after the peer recovered: %v", err)
			}
			p.bob.sink.wait(ctx, t, "the bundle after", func() bool { _, ok := p.bob.sink.got[after.ID()]; return ok })
		})
	}
}

// TestSmallBundleWaitsForFlowControl: a small bundle that the peer's flow
// control has no room for at once is written as the room comes, not
// refused or dropped.
func TestSmallBundleWaitsForFlowControl(t *testing.T) {
	ctx := testContext(t, time.Minute)
	p := newPair(ctx, t, nil, func(o *Options) { o.ConnectionReceiveWindow = 4 << 10 })
	p.bob.sink.setKeep()
	data := randomBytes(5, smallPayload)
	b := newBundle(t, 5, uint64(len(data)))
	if err := p.ab.Send(ctx, b, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p.bob.sink.wait(ctx, t, "the bundle", func() bool { return len(p.bob.sink.got) == 1 })
	if st := p.bob.sink.got[b.ID()]; !bytes.Equal(st.data, data) {
		t.Fatal("the bundle arrived damaged")
	}
}

func waitEntered(ctx context.Context, t *testing.T, entered <-chan *bundle.Bundle) {
	t.Helper()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the bundle never reached the sink")
	}
}

// TestSendSlowPeerNotStalled: a peer whose store is slow but steady takes
// several stall timeouts to take a bundle, and Send waits for it, because
// every byte that gets through restarts the clock.
func TestSendSlowPeerNotStalled(t *testing.T) {
	const stall = 400 * time.Millisecond
	const size = 6 << 20
	ctx := testContext(t, time.Minute)
	got := make(chan error, 1)
	slow := convergence.Sink(sinkFunc(func(ctx context.Context, _ convergence.Session, b *bundle.Bundle, pr *bundle.PayloadReader) error {
		// A slow disk: 16 KiB every 5 ms, about 3 MB/s. The pauses are the
		// behaviour under test, not a wait for something.
		buf := make([]byte, 16<<10)
		for {
			_, err := pr.Read(buf)
			if err == io.EOF {
				got <- nil
				return nil
			}
			if err != nil {
				got <- err
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
	}))
	p := newPair(ctx, t, func(o *Options) { o.SendStallTimeout = stall }, func(o *Options) { o.Sink = slow })
	start := time.Now()
	if err := p.ab.Send(ctx, newBundle(t, 1, size), io.LimitReader(zeros{}, size)); err != nil {
		t.Fatalf("Send to a slow peer: %v", err)
	}
	elapsed := time.Since(start)
	t.Logf("6 MiB to a 3 MB/s sink in %v, stall timeout %v", elapsed, stall)
	if elapsed < 2*stall {
		t.Fatalf("Send took %v: too fast to show that progress restarts the stall clock (%v)", elapsed, stall)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("sink: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the bundle never arrived whole")
	}
}

type sinkFunc func(context.Context, convergence.Session, *bundle.Bundle, *bundle.PayloadReader) error

func (f sinkFunc) Receive(ctx context.Context, s convergence.Session, b *bundle.Bundle, pr *bundle.PayloadReader) error {
	return f(ctx, s, b, pr)
}

// fakeStream plays back what each Write does: how many bytes it takes
// before its deadline passes. It records the deadline each Write had.
type fakeStream struct {
	takes     []int // bytes each Write takes before the deadline; after the last, all
	deadline  time.Time
	deadlines []time.Time
	written   int
}

func (f *fakeStream) SetWriteDeadline(t time.Time) error {
	f.deadline = t
	return nil
}

func (f *fakeStream) Write(p []byte) (int, error) {
	f.deadlines = append(f.deadlines, f.deadline)
	if len(f.takes) == 0 {
		f.written += len(p)
		return len(p), nil
	}
	n := min(f.takes[0], len(p))
	f.takes = f.takes[1:]
	f.written += n
	return n, fmt.Errorf("quic-go's: %w", os.ErrDeadlineExceeded)
}

// TestStreamWriterProgress checks streamWriter's rule on its own: a write
// window in which some bytes got through is progress, and only a window
// in which none did is a stall.
func TestStreamWriterProgress(t *testing.T) {
	const stall = time.Minute
	for _, tc := range []struct {
		name    string
		takes   []int
		stalled bool
		written int
	}{
		{"no wait", nil, false, 100},
		{"slow: progress in every window", []int{10, 1, 30}, false, 100},
		{"stalls at once", []int{0}, true, 0},
		{"stalls part way", []int{10, 20, 0}, true, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeStream{takes: tc.takes}
			w := &streamWriter{str: f, stall: stall}
			before := time.Now()
			n, err := w.Write(make([]byte, 100))
			if stalled := errors.Is(err, convergence.ErrStalled); stalled != tc.stalled || (!tc.stalled && err != nil) {
				t.Fatalf("Write: %v; want stalled %v", err, tc.stalled)
			}
			if n != tc.written || f.written != tc.written || w.n != uint64(tc.written) {
				t.Errorf("Write says %d, the stream took %d, counted %d; want %d", n, f.written, w.n, tc.written)
			}
			// Each window starts when its Write does, not when the first did.
			for i, d := range f.deadlines {
				if d.Before(before.Add(stall)) {
					t.Errorf("write %d had its deadline %v before the stall timeout from its start", i, d.Sub(before))
				}
			}
			if want := len(tc.takes) + 1; !tc.stalled && len(f.deadlines) != want {
				t.Errorf("%d writes, want %d", len(f.deadlines), want)
			}
		})
	}
	t.Run("disabled", func(t *testing.T) {
		f := &fakeStream{}
		w := &streamWriter{str: f}
		if _, err := w.Write(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		if !f.deadline.IsZero() {
			t.Errorf("a deadline was set with no stall timeout: %v", f.deadline)
		}
	})
}

func TestSendStallTimeoutDefaults(t *testing.T) {
	id := mustIdentity(t, "dtn://alice/")
	for _, tc := range []struct {
		set, want time.Duration
	}{
		{0, DefaultSendStallTimeout},
		{-1, 0}, // no bound
		{5 * time.Second, 5 * time.Second},
	} {
		o := Options{TLS: convergence.IdentityTLS(id, pinnedTrust(t, id)), Sink: newMemSink(), SendStallTimeout: tc.set}
		if err := o.setDefaults(); err != nil {
			t.Fatal(err)
		}
		if o.SendStallTimeout != tc.want {
			t.Errorf("SendStallTimeout %v becomes %v, want %v", tc.set, o.SendStallTimeout, tc.want)
		}
	}
}
