package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/convergence/mem"
	"github.com/mulegate/mulegate/gateway/control"
	"github.com/mulegate/mulegate/gateway/routing"
	"github.com/mulegate/mulegate/gateway/store"
	"go.uber.org/zap"
)

// failingSession is a session whose every Send fails with err, which may
// or may not have ended.
type failingSession struct {
	peer   bundle.EID
	err    error
	done   chan struct{}
	ended  error  // nil while the session lasts
	during func() // runs during the Send, if set
}

func (s *failingSession) Peer() bundle.EID         { return s.peer }
func (s *failingSession) RemoteAddr() net.Addr     { return &net.UDPAddr{} }
func (s *failingSession) Stats() convergence.Stats { return convergence.Stats{} }
func (s *failingSession) Close(error) error        { return nil }
func (s *failingSession) Done() <-chan struct{}    { return s.done }
func (s *failingSession) Err() error               { return s.ended }
func (s *failingSession) Send(_ context.Context, _ *bundle.Bundle, payload io.Reader) error {
	_, _ = io.Copy(io.Discard, payload)
	if s.during != nil {
		s.during()
	}
	return s.err
}

// TestSendErrorBacksOff: a send that fails while the contact lasts (not a
// refusal: the link itself failed) is retried after a jittered backoff, not
// at once; one that fails because the contact ended is due at once, for
// the next contact.
func TestSendErrorBacksOff(t *testing.T) {
	const retryMin = 10 * time.Second
	n := memNode(t, mem.NewNetwork(), "a", func(c *config.Config) {
		c.Routing.RetryMin, c.Routing.RetryMax = retryMin, time.Minute
	})
	ctx := context.Background()
	peer := bundle.MustParseEID("dtn://p/")
	stalled := errors.New("the peer stopped taking data")
	for _, tc := range []struct {
		name        string
		sendErr     error
		ended       error // the session's end, if it ended
		cancelled   bool  // the contact's context ends during the send
		wantBackoff bool
	}{
		{"a link error while the contact lasts", stalled, nil, false, true},
		{"the session ended", convergence.ErrClosed, convergence.ErrClosed, false, false},
		{"the contact was closed", context.Canceled, nil, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.name)
			id, err := n.Send(ctx, SendRequest{Destination: bundle.MustParseEID("dtn://p/inbox"), Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			meta, err := n.store.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			sess := &failingSession{peer: peer, err: tc.sendErr, done: make(chan struct{}), ended: tc.ended}
			if tc.cancelled {
				sess.during = cancel
			}
			c := &contact{
				n: n, peer: peer, dest: "peer:" + peer.String(), log: zap.NewNop(), ctx: cctx, cancel: cancel,
				sess: sess,
				sent: map[control.Digest]bundle.ID{}, sending: map[control.Digest]bool{},
			}
			before := time.Now()
			c.send(cctx, control.DigestOf(id), meta, 0, routing.Decision{Send: true})
			var got store.Progress
			ps, err := n.store.ProgressOf(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				if p.Dest == c.dest {
					got = p
				}
			}
			if got.State != store.Pending || got.Attempts != 1 {
				t.Fatalf("progress after a failed send: %+v, want pending after one attempt", got)
			}
			if tc.wantBackoff {
				// The first retry waits a random time in [min/2, min].
				if earliest := before.Add(retryMin / 2); got.NextAttempt.Before(earliest) {
					t.Fatalf("retry due at %v, before the backoff's least %v", got.NextAttempt, earliest)
				}
				if latest := time.Now().Add(retryMin); got.NextAttempt.After(latest) {
					t.Fatalf("retry due at %v, after the first backoff's most %v", got.NextAttempt, latest)
				}
			} else if got.NextAttempt.After(time.Now()) {
				t.Fatalf("retry due at %v; after a contact ends the next contact should try at once", got.NextAttempt)
			}
		})
	}
}
