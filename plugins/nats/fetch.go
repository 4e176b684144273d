package nats

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

const (
	// minPullWait is the shortest wait worth a pull request that waits.
	minPullWait = 10 * time.Millisecond
	// deadLetterRetry is how soon a message that could not be
	// dead-lettered is offered to the adapter again.
	deadLetterRetry = 10 * time.Second
	// tooLargeRetry is how soon a message the node declined as too large
	// for any fetch is offered again.
	tooLargeRetry = 30 * time.Second
)

// consumer returns the durable pull consumer, creating or updating it to
// the configuration on first use.
func (st *state) consumer(ctx context.Context) (jetstream.Consumer, error) {
	st.consMu.Lock()
	defer st.consMu.Unlock()
	if st.cons != nil {
		return st.cons, nil
	}
	if err := st.ensureStreams(ctx); err != nil {
		return nil, err
	}
	in := st.cfg.Inbound
	cc := jetstream.ConsumerConfig{
		Durable:       in.Consumer,
		Description:   "mulegate inbound",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Duration(in.AckWait),
		MaxAckPending: in.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(in.Subjects) == 1 {
		cc.FilterSubject = in.Subjects[0]
	} else {
		cc.FilterSubjects = in.Subjects
	}
	cons, err := st.js.CreateOrUpdateConsumer(ctx, in.Stream, cc)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("inbound stream %q does not exist: create it, or list it under the adapter's streams", in.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("setting up consumer %q on stream %q: %v", in.Consumer, in.Stream, err)
	}
	st.cons = cons
	return cons, nil
}

// consumerGone makes the next Fetch set the consumer up again.
func (st *state) consumerGone() {
	st.consMu.Lock()
	st.cons = nil
	st.consMu.Unlock()
}

func (a *Adapter) Fetch(ctx context.Context, req plugins.FetchRequest, fn func(plugins.Inbound) error) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	if st.cfg.Inbound == nil {
		return fmt.Errorf("%w: this nats adapter has no inbound block in its configuration", plugins.ErrUnsupported)
	}
	if err := st.connected(); err != nil {
		return err
	}
	cons, err := st.consumer(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", plugins.ErrUnreachable, err)
	}
	limit := max(req.MaxMessages, 1)
	deadline := time.Now().Add(req.Wait)
	offered := 0
	for offered < limit {
		// Take what is there at once; wait only while nothing has been
		// offered yet, and then for one message, so that a trickle is
		// offered as it comes rather than when a batch fills up.
		n := min(limit-offered, st.cfg.Inbound.Batch)
		batch, err := cons.FetchNoWait(n)
		if err != nil {
			return st.fetchFailed(err)
		}
		got, took, err := st.offerBatch(ctx, batch, offered, fn)
		offered += took
		if err != nil || offered >= limit {
			return fetchDone(err)
		}
		if got == n {
			continue // there may be more
		}
		if offered > 0 {
			return nil
		}
		wait := time.Until(deadline)
		if wait < minPullWait {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		batch, err = cons.Fetch(1, jetstream.FetchContext(wctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return st.fetchFailed(err)
		}
		got, took, err = st.offerBatch(ctx, batch, offered, fn)
		cancel()
		offered += took
		if err != nil {
			return fetchDone(err)
		}
		if got == 0 {
			return ctx.Err()
		}
	}
	return nil
}

// fetchDone is Fetch's answer when fn stopped it: nil when fn said the
// request is full.
func fetchDone(err error) error {
	if errors.Is(err, plugins.ErrFetchLimit) {
		return nil
	}
	return err
}

func (st *state) fetchFailed(err error) error {
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders) {
		// Set it up again next time (it may have been deleted).
		st.consumerGone()
	}
	return fmt.Errorf("%w: fetching from %q: %v", plugins.ErrUnreachable, st.cfg.Inbound.Stream, err)
}

// offerBatch offers a pull request's messages to fn. got counts the
// messages received, took those fn accepted; before is how many this
// Fetch offered earlier. Messages received after fn failed or said stop
// (plugins.ErrFetchLimit, returned as is) are released for redelivery at
// once.
func (st *state) offerBatch(ctx context.Context, batch jetstream.MessageBatch, before int, fn func(plugins.Inbound) error) (got, took int, err error) {
	for msg := range batch.Messages() {
		got++
		if err != nil || ctx.Err() != nil {
			_ = msg.Nak()
			continue
		}
		var ok bool
		ok, err = st.offer(ctx, msg, before+took == 0, fn)
		if ok {
			took++
		}
	}
	if err == nil && ctx.Err() != nil && took == 0 {
		err = ctx.Err()
	}
	if berr := batch.Error(); err == nil && berr != nil && !errors.Is(berr, context.DeadlineExceeded) && !errors.Is(berr, context.Canceled) && took == 0 {
		err = st.fetchFailed(berr)
	}
	return got, took, err
}

// offer hands one message to fn, or dead-letters it when it names no
// destination. ok reports that fn took it. first says that it is the
// first message this Fetch offers.
func (st *state) offer(ctx context.Context, msg jetstream.Msg, first bool, fn func(plugins.Inbound) error) (ok bool, err error) {
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to acknowledge either.
		st.log.Warn("ignoring a message without JetStream metadata", zap.String("subject", msg.Subject()), zap.Error(err))
		return false, nil
	}
	in := st.cfg.Inbound
	dest, err := st.destination(msg)
	if err != nil {
		st.deadLetter(ctx, msg, md, err.Error())
		return false, nil
	}
	payload, length, closeFn, err := st.inboundPayload(ctx, msg)
	if err != nil {
		var dead deadError
		if errors.As(err, &dead) {
			st.deadLetter(ctx, msg, md, err.Error())
		} else {
			st.log.Warn("cannot read an inbound message's payload from the object store; offering it later",
				zap.String("subject", msg.Subject()), zap.Uint64("seq", md.Sequence.Stream), zap.Error(err))
			_ = msg.NakWithDelay(max(st.cfg.nackDelay, deadLetterRetry))
		}
		return false, nil
	}
	defer closeFn()
	lifetime := time.Duration(in.Lifetime)
	if l, ok := sdk.ParseLifetime(msg.Headers().Get(HeaderLifetime)); ok {
		lifetime = l
	}
	receipt := msg.Reply()
	st.receipts.put(receipt, msg)
	err = fn(plugins.Inbound{
		Receipt:       receipt,
		MessageID:     MessageID(md.Stream, md.Sequence.Stream),
		Destination:   dest,
		Lifetime:      lifetime,
		Headers:       inboundHeaders(msg, md),
		PayloadLength: length,
		Payload:       payload,
	})
	if err != nil {
		st.receipts.take(receipt)
		if errors.Is(err, plugins.ErrFetchLimit) && first {
			// Declined as the first of a fetch: larger than any fetch the
			// node makes. Offered again at once, it would only be declined
			// again, in a tight loop.
			st.log.Warn("the node declined an inbound message larger than it fetches at once; offering it again later",
				zap.String("subject", msg.Subject()), zap.Uint64("seq", md.Sequence.Stream), zap.Int64("bytes", length))
			_ = msg.NakWithDelay(max(st.cfg.nackDelay, tooLargeRetry))
		} else {
			_ = msg.Nak()
		}
		return false, err
	}
	return true, nil
}

// MessageID is the stable identity of the message with this stream
// sequence: the node recognises a message offered twice by it.
func MessageID(stream string, seq uint64) string {
	return "nats:" + stream + ":" + strconv.FormatUint(seq, 10)
}

// destination is where a fetched message goes: the destination header's
// EID, or else its subject's.
func (st *state) destination(msg jetstream.Msg) (string, error) {
	if h := st.cfg.destHeader; h != "" {
		if v := msg.Headers().Values(h); len(v) > 0 {
			if err := sdk.CheckEID(v[0]); err != nil {
				return "", fmt.Errorf("header %s: %v", h, err)
			}
			return v[0], nil
		}
	}
	return DestinationForSubject(st.cfg.prefix, msg.Subject())
}

// deadError marks an inbound message that no retry can make deliverable.
type deadError struct{ error }

// inboundPayload returns a message's payload: its data, or for a
// reference message the object it names, streamed.
func (st *state) inboundPayload(ctx context.Context, msg jetstream.Msg) (io.Reader, int64, func(), error) {
	ref := msg.Headers().Get(HeaderObject)
	if ref == "" {
		return bytes.NewReader(msg.Data()), int64(len(msg.Data())), func() {}, nil
	}
	bucket, name, err := ParseObjectHeader(ref)
	if err != nil {
		return nil, 0, nil, deadError{err}
	}
	// Only the adapter's own bucket: a reference must not make the adapter
	// carry off objects from wherever its credentials reach.
	if bucket != st.cfg.ObjectStore.Bucket {
		return nil, 0, nil, deadError{fmt.Errorf("%s refers to bucket %q, not this adapter's object store (%q)", HeaderObject, bucket, st.cfg.ObjectStore.Bucket)}
	}
	obs, err := st.objectStore(ctx, false)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, 0, nil, deadError{fmt.Errorf("the object store bucket %q it refers to does not exist", bucket)}
	}
	if err != nil {
		return nil, 0, nil, err
	}
	res, err := obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, nil, deadError{fmt.Errorf("the object %q it refers to is not in bucket %q", name, bucket)}
	}
	if err != nil {
		return nil, 0, nil, err
	}
	info, err := res.Info()
	if err != nil {
		_ = res.Close()
		return nil, 0, nil, err
	}
	r := sdk.ExactPayload(res, int64(info.Size))
	return r, int64(info.Size), func() { _ = res.Close() }, nil
}

// inboundHeaders is what the node learns about a fetched message besides
// its destination: where it was, and its NATS headers as "header.<Name>".
func inboundHeaders(msg jetstream.Msg, md *jetstream.MsgMetadata) map[string]string {
	h := map[string]string{
		"subject":    msg.Subject(),
		"stream":     md.Stream,
		"stream_seq": strconv.FormatUint(md.Sequence.Stream, 10),
		"timestamp":  md.Timestamp.UTC().Format(time.RFC3339Nano),
	}
	for k, vs := range msg.Headers() {
		h["header."+k] = strings.Join(vs, ", ")
	}
	return h
}

// deadLetter takes a message with no usable destination off the consumer
// without losing it (see setAside). If that fails, the message is offered
// to the adapter again after deadLetterRetry, and set aside then.
func (st *state) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, reason string) {
	log := st.log.With(zap.String("subject", msg.Subject()), zap.Uint64("seq", md.Sequence.Stream), zap.String("reason", reason))
	to, err := st.setAside(ctx, msg.Reply(), deadMsg{
		subject: msg.Subject(), header: msg.Headers(), data: msg.Data(), stream: md.Stream, seq: md.Sequence.Stream,
	}, reason)
	if err != nil {
		log.Warn("cannot set aside an inbound message with no destination; keeping it", zap.Error(err))
		_ = msg.NakWithDelay(deadLetterRetry)
		return
	}
	log.Warn("set aside an inbound message with no destination", zap.String("to", to))
}

// deadMsg is a message to set aside: its subject, headers and data, and
// where it is in its stream.
type deadMsg struct {
	subject string
	header  nats.Header
	data    []byte
	stream  string
	seq     uint64
}

// setAside takes the message with this receipt (its ack subject) off the
// consumer for good, without losing it: with a dead_letter subject, it is
// republished there with the reason and, only once the server has stored
// that copy, terminated; without one, it is terminated with the reason,
// which the server announces in its MSG_TERMINATED advisory. The
// termination is confirmed by the server, so a nil error means that the
// message will not be delivered again. On an error the message stays
// pending (a dead letter already published is made again as a duplicate
// of itself: its Nats-Msg-Id is fixed). to says where the message went,
// for the log. m is needed only with a dead_letter subject.
func (st *state) setAside(ctx context.Context, receipt string, m deadMsg, reason string) (to string, err error) {
	in := st.cfg.Inbound
	timeout := time.Duration(st.cfg.PublishTimeout)
	reason = headerValue(reason)
	term := reason
	to = "terminated"
	if in.DeadLetter != "" {
		out := nats.NewMsg(in.DeadLetter)
		for k, vs := range m.header {
			out.Header[k] = vs
		}
		if id := out.Header.Get(HeaderMsgID); id != "" {
			out.Header.Set(HeaderOriginalMsgID, id)
		}
		out.Header.Set(HeaderMsgID, "dead:"+MessageID(m.stream, m.seq))
		out.Header.Set(HeaderDeadReason, reason)
		out.Header.Set(HeaderOriginalSubject, m.subject)
		out.Header.Set(HeaderOriginalStream, m.stream)
		out.Header.Set(HeaderOriginalSequence, strconv.FormatUint(m.seq, 10))
		out.Data = m.data
		pctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := st.js.PublishMsg(pctx, out)
		cancel()
		if err != nil {
			return "", fmt.Errorf("publishing it to dead_letter subject %q (is it bound to a stream?): %w", in.DeadLetter, err)
		}
		to = in.DeadLetter
		term = "dead-lettered to " + in.DeadLetter + ": " + reason
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := st.nc.RequestWithContext(tctx, receipt, []byte("+TERM "+term)); err != nil {
		return "", fmt.Errorf("terminating it: %w", err)
	}
	return to, nil
}

func (a *Adapter) Ack(ctx context.Context, receipt string) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	if msg, ok := st.receipts.take(receipt); ok {
		if err := msg.DoubleAck(ctx); err != nil {
			return st.ackFailed("ack", err)
		}
		return nil
	}
	if !st.ownsReceipt(receipt) {
		return fmt.Errorf("%w: %q", plugins.ErrUnknownReceipt, receipt)
	}
	// Fetched before a restart, or kept past ack_wait: the ack subject
	// still names the message.
	if _, err := st.nc.RequestWithContext(ctx, receipt, []byte("+ACK")); err != nil {
		return st.ackFailed("ack", err)
	}
	return nil
}

func (a *Adapter) Nack(ctx context.Context, receipt, reason string) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	delay := st.cfg.nackDelay
	msg, ok := st.receipts.take(receipt)
	switch {
	case ok && delay > 0:
		err = msg.NakWithDelay(delay)
	case ok:
		err = msg.Nak()
	case !st.ownsReceipt(receipt):
		return fmt.Errorf("%w: %q", plugins.ErrUnknownReceipt, receipt)
	case delay > 0:
		err = st.nc.Publish(receipt, fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds()))
	default:
		err = st.nc.Publish(receipt, []byte("-NAK"))
	}
	if err != nil {
		return st.ackFailed("nack", err)
	}
	st.log.Info("the node could not take an inbound message; it will be offered again",
		zap.String("reason", reason), zap.Duration("after", delay))
	return nil
}

// Reject sets aside for good a message the node refuses for good (its
// destination, its lifetime or its size is refused by the node's limits
// or policy): republished to dead_letter with the node's reason in
// Mulegate-Dead-Reason and then terminated, or, without dead_letter,
// terminated with the reason (see setAside). Either way it is never
// offered again, and never lost. The receipt of a message fetched before
// the adapter restarted still works: the message is read back from the
// stream by the sequence its ack subject names. A message no longer in the
// stream is already gone: Reject succeeds. An error (no connection, a
// dead-letter subject bound to no stream) leaves the message pending: the
// node nacks it, and rejects it again when it comes back.
func (a *Adapter) Reject(ctx context.Context, receipt, reason string) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	in := st.cfg.Inbound
	if in == nil {
		return fmt.Errorf("%w: this nats adapter has no inbound block in its configuration", plugins.ErrUnsupported)
	}
	stream, consumer, seq, ok := parseAckSubject(receipt)
	if !ok || stream != in.Stream || consumer != in.Consumer {
		return fmt.Errorf("%w: %q", plugins.ErrUnknownReceipt, receipt)
	}
	if err := st.connected(); err != nil {
		return err
	}
	msg, held := st.receipts.take(receipt)
	m := deadMsg{stream: stream, seq: seq}
	switch {
	case held:
		m.subject, m.header, m.data = msg.Subject(), msg.Headers(), msg.Data()
	case in.DeadLetter != "":
		// Not held (fetched before a restart, or past ack_wait): read it
		// back. Without dead_letter, the contents are not needed.
		var gone bool
		if m, gone, err = st.storedMsg(ctx, seq); err != nil {
			return fmt.Errorf("rejecting %s: %w", MessageID(stream, seq), err)
		}
		if gone {
			// Removed from the stream (by its limits, or by hand): nothing
			// to set aside. Terminate it anyway, so that the consumer
			// forgets it; if that fails, the server skips it later.
			tctx, cancel := context.WithTimeout(ctx, time.Duration(st.cfg.PublishTimeout))
			_, _ = st.nc.RequestWithContext(tctx, receipt, []byte("+TERM "+headerValue(reason)))
			cancel()
			st.log.Info("the node refused an inbound message for good, but it is no longer in the stream",
				zap.String("stream", stream), zap.Uint64("seq", seq), zap.String("reason", reason))
			return nil
		}
	}
	to, err := st.setAside(ctx, receipt, m, reason)
	if err != nil {
		return fmt.Errorf("rejecting %s: %w", MessageID(stream, seq), err)
	}
	st.log.Warn("the node refused an inbound message for good; set it aside",
		zap.String("subject", m.subject), zap.String("stream", stream), zap.Uint64("seq", seq),
		zap.String("to", to), zap.String("reason", reason))
	return nil
}

var _ plugins.Rejecter = (*Adapter)(nil)

// storedMsg reads message seq of the inbound stream back, for a receipt
// whose message the adapter no longer holds (fetched before a restart, or
// kept past ack_wait). gone reports that the stream no longer has it.
func (st *state) storedMsg(ctx context.Context, seq uint64) (m deadMsg, gone bool, err error) {
	in := st.cfg.Inbound
	ctx, cancel := context.WithTimeout(ctx, time.Duration(st.cfg.PublishTimeout))
	defer cancel()
	s, err := st.js.Stream(ctx, in.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return deadMsg{}, true, nil
	}
	if err != nil {
		return deadMsg{}, false, fmt.Errorf("looking up stream %q: %w", in.Stream, err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return deadMsg{}, true, nil
	}
	if err != nil {
		return deadMsg{}, false, fmt.Errorf("reading message %d of stream %q: %w", seq, in.Stream, err)
	}
	return deadMsg{subject: raw.Subject, header: raw.Header, data: raw.Data, stream: in.Stream, seq: seq}, false, nil
}

func (st *state) ackFailed(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", plugins.ErrUnreachable, op, err)
}

// ownsReceipt tells whether receipt is an ack subject of this adapter's
// consumer: "$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
// seq>.<time>.<pending>", or the longer form with a domain and account
// hash before the stream.
func (st *state) ownsReceipt(receipt string) bool {
	in := st.cfg.Inbound
	if in == nil {
		return false
	}
	stream, consumer, _, ok := parseAckSubject(receipt)
	return ok && stream == in.Stream && consumer == in.Consumer
}

// parseAckSubject reads an ack subject: the stream and consumer it
// belongs to, and the stream sequence of its message.
func parseAckSubject(s string) (stream, consumer string, seq uint64, ok bool) {
	t := strings.Split(s, ".")
	if len(t) < 9 || t[0] != "$JS" || t[1] != "ACK" {
		return "", "", 0, false
	}
	var nums []string
	switch {
	case len(t) == 9:
		stream, consumer, nums = t[2], t[3], t[4:9]
	case len(t) >= 11:
		stream, consumer, nums = t[4], t[5], t[6:11]
	default:
		return "", "", 0, false
	}
	// <delivered>.<stream seq>.<consumer seq>.<time>.<pending>
	for i, n := range nums {
		v, err := strconv.ParseUint(n, 10, 64)
		if err != nil {
			return "", "", 0, false
		}
		if i == 1 {
			seq = v
		}
	}
	return stream, consumer, seq, stream != "" && consumer != "" && seq != 0
}

// receipts maps the receipts of offered messages to the messages, until
// the node acks or nacks them. It is bounded: the consumer never has more
// than max_ack_pending messages out, and past ack_wait a message is
// redelivered anyway, so older entries are dropped first when it is full.
type receipts struct {
	mu  sync.Mutex
	cap int
	ttl time.Duration
	m   map[string]pendingMsg
}

type pendingMsg struct {
	msg     jetstream.Msg
	expires time.Time
}

func (r *receipts) init(capacity int, ttl time.Duration) {
	r.cap, r.ttl, r.m = max(capacity, 1), ttl, map[string]pendingMsg{}
}

func (r *receipts) put(receipt string, msg jetstream.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if len(r.m) >= r.cap {
		var oldest string
		var oldestAt time.Time
		for k, p := range r.m {
			if now.After(p.expires) {
				delete(r.m, k)
			} else if oldest == "" || p.expires.Before(oldestAt) {
				oldest, oldestAt = k, p.expires
			}
		}
		if len(r.m) >= r.cap {
			delete(r.m, oldest)
		}
	}
	r.m[receipt] = pendingMsg{msg: msg, expires: now.Add(r.ttl)}
}

func (r *receipts) take(receipt string) (jetstream.Msg, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.m[receipt]
	if ok {
		delete(r.m, receipt)
	}
	return p.msg, ok
}

func (r *receipts) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
