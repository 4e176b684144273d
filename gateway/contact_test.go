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

// recordingSession keeps the summaries a contact sends.
type recordingSession struct {
	failingSession
	sent []control.Summary
}

func (s *recordingSession) Send(_ context.Context, _ *bundle.Bundle, payload io.Reader) error {
	data, err := io.ReadAll(payload)
	if err != nil {
		return err
	}
	rec, err := bundle.UnmarshalAdminRecord(data)
	if err != nil {
		return err
	}
	sum, err := control.UnmarshalSummary(rec.Content)
	if err != nil {
		return err
	}
	s.sent = append(s.sent, sum)
	return nil
}

// TestLostFullSummaryIsAskedFor: deltas alone cannot stand for a full
// summary that never arrived (it came before this side of the contact was
// ready, say). From an epoch's second delta on, the contact asks for a
// full one, and stops asking once it has it; asked, a contact sends a
// full summary at once.
func TestLostFullSummaryIsAskedFor(t *testing.T) {
	n := memNode(t, mem.NewNetwork(), "a", nil)
	ctx := context.Background()
	peer := bundle.MustParseEID("dtn://p/")
	sess := &recordingSession{failingSession: failingSession{peer: peer, done: make(chan struct{})}}
	c := &contact{
		n: n, peer: peer, dest: "peer:" + peer.String(), log: zap.NewNop(), ctx: ctx, cancel: func() {},
		sess: sess, sent: map[control.Digest]bundle.ID{}, sending: map[control.Digest]bool{},
		noticesSent: map[string]bool{}, fullNow: make(chan struct{}, 1),
	}
	last := func() control.Summary {
		t.Helper()
		c.sendSummary(ctx, false)
		if len(sess.sent) == 0 {
			t.Fatal("no summary sent")
		}
		return sess.sent[len(sess.sent)-1]
	}

	// The first delta of an unknown epoch may have overtaken its full
	// summary: wait for it.
	c.applySummary(ctx, control.Summary{Epoch: 7, Seq: 1})
	if s := last(); s.WantFull {
		t.Fatal("asked for a full summary after one delta; the full one may still be on its way")
	}
	// The second: it is lost. Ask, in every summary until it comes.
	c.applySummary(ctx, control.Summary{Epoch: 7, Seq: 2})
	for range 2 {
		if s := last(); !s.WantFull {
			t.Fatalf("summary %+v does not ask for the full summary it lacks", s)
		}
	}
	c.applySummary(ctx, control.Summary{Epoch: 8, Full: true})
	before := len(sess.sent)
	for range 3 {
		c.sendSummary(ctx, false) // may send nothing: nothing changed
	}
	for _, s := range sess.sent[before:] {
		if s.WantFull {
			t.Fatal("still asking for a full summary after one arrived")
		}
	}

	// Asked by the peer: the contact's loop is woken, and the next summary
	// is full, in a new epoch, even though nothing changed.
	epoch := sess.sent[len(sess.sent)-1].Epoch
	c.applySummary(ctx, control.Summary{Epoch: 8, Seq: 1, WantFull: true})
	select {
	case <-c.fullNow:
	default:
		t.Fatal("the peer's request did not wake the summary loop")
	}
	if s := last(); !s.Full || s.Epoch == epoch {
		t.Fatalf("after the peer asked: %+v, want a full summary of a new epoch", s)
	}
	before = len(sess.sent)
	c.sendSummary(ctx, false)
	for _, s := range sess.sent[before:] {
		if s.Full {
			t.Fatal("a second full summary, though the peer asked once")
		}
	}
}
