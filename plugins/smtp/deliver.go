package smtp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

func (a *Adapter) Deliver(ctx context.Context, meta plugins.Meta, payload io.Reader) plugins.Result {
	st, err := a.cur.Get()
	if err != nil {
		return plugins.RetryLater(0, err.Error())
	}
	if st.cfg.Server == "" {
		return plugins.Rejected("this smtp adapter has no server configured (it only receives mail); route these bundles elsewhere, or set server")
	}
	if res, ok := sdk.CheckMeta(meta, "given a stable Message-ID"); !ok {
		return res
	}
	cc, err := composeConfigFor(&st.cfg.Config, meta.Options, meta)
	if err != nil {
		return plugins.Rejected(err.Error())
	}
	br := st.readers.Get().(*bufio.Reader)
	br.Reset(sdk.ExactPayload(payload, meta.PayloadLength))
	defer func() {
		br.Reset(nil)
		st.readers.Put(br)
	}()
	p, err := prepare(br, meta, cc)
	if err != nil {
		var perm *permanentError
		if errors.As(err, &perm) {
			return plugins.Rejected(perm.msg)
		}
		return plugins.RetryLater(0, err.Error())
	}
	if max := st.cfg.MaxMessageSize; max > 0 {
		if n := p.estimate(true); n > max {
			return plugins.Rejected(fmt.Sprintf("the message would be about %d bytes; max_message_size is %d", n, max))
		}
	}
	res := st.send(ctx, p)
	if res.Status != plugins.OK {
		st.log.Debug("delivery not done", zap.String("bundle", meta.BundleID), zap.Stringer("result", res))
	}
	return res
}

// send runs the transaction on a pooled session. A reused session that
// turns out dead before the payload was touched (the server closed it
// while idle) is replaced once.
func (st *state) send(ctx context.Context, p *prepared) plugins.Result {
	for attempt := 0; ; attempt++ {
		c, reused, err := st.pool.get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return plugins.RetryLater(0, "delivery cancelled: "+ctx.Err().Error())
			}
			return plugins.RetryLater(0, "cannot reach the SMTP server "+st.cfg.Server+": "+err.Error())
		}
		res, stale, keep := st.transact(ctx, c, p)
		st.pool.put(c, keep)
		if stale && reused && attempt == 0 && ctx.Err() == nil {
			continue
		}
		return res
	}
}

// transact sends one message on c. stale tells that c failed at its first
// command without a reply (a dead idle session); keep, that c may serve
// the next delivery.
func (st *state) transact(ctx context.Context, c *conn, p *prepared) (res plugins.Result, stale, keep bool) {
	stop := context.AfterFunc(ctx, func() { _ = c.raw.Close() })
	defer func() {
		if !stop() {
			keep = false
			if res.Status != plugins.OK {
				res = plugins.RetryLater(0, "delivery cancelled: "+ctx.Err().Error())
			}
		}
	}()
	size := p.estimate(c.eightBit)
	if c.maxSize > 0 && size > c.maxSize {
		return plugins.Rejected(fmt.Sprintf("the message would be about %d bytes; the server takes at most %d (its SIZE)", size, c.maxSize)), false, true
	}
	opts := &gosmtp.MailOptions{Size: size}
	if !envelopeASCII(p.env) {
		if !c.utf8 {
			return plugins.Rejected("an envelope address is not ASCII, and the server does not take SMTPUTF8"), false, true
		}
		opts.UTF8 = true
	}
	if err := c.c.Mail(p.env.From, opts); err != nil {
		if smtpCode(err) == 0 {
			return st.lost("MAIL FROM", err), true, false
		}
		return st.refused(fmt.Sprintf("MAIL FROM:<%s>", p.env.From), err), false, st.reset(c, err)
	}
	for _, to := range p.env.To {
		if err := c.c.Rcpt(to, nil); err != nil {
			if smtpCode(err) == 0 {
				return st.lost("RCPT TO", err), false, false
			}
			return st.refused(fmt.Sprintf("RCPT TO:<%s>", to), err), false, st.reset(c, err)
		}
	}
	w, err := c.c.Data()
	if err != nil {
		if smtpCode(err) == 0 {
			return st.lost("DATA", err), false, false
		}
		return st.refused("DATA", err), false, st.reset(c, err)
	}
	if _, err := w.Write(p.header(c.eightBit)); err != nil {
		return st.lost("sending the message", err), false, false
	}
	if err := p.writeBody(w, c.eightBit); err != nil {
		// The payload broke off, or the connection did: the message must
		// not be committed, so the final dot is never sent. Closing the
		// connection in the middle of DATA makes the server drop it.
		return st.lost("sending the message", err), false, false
	}
	if err := w.Close(); err != nil {
		if smtpCode(err) == 0 {
			// The message went out and no answer came: it may have been
			// accepted. Retrying sends it again with the same
			// Message-ID, which is what at-least-once allows.
			return st.lost("waiting for the server's answer to the message", err), false, false
		}
		return st.refused("the message", err), false, smtpCode(err) != 421
	}
	return plugins.Delivered(), false, true
}

// reset readies c for another transaction after a refusal; it tells
// whether c is still usable.
func (st *state) reset(c *conn, err error) bool {
	if smtpCode(err) == 421 {
		return false
	}
	_ = c.raw.SetDeadline(time.Now().Add(time.Duration(st.cfg.CommandTimeout)))
	defer c.raw.SetDeadline(time.Time{})
	return c.c.Reset() == nil
}

// lost is the answer when the connection failed without a reply.
func (st *state) lost(stage string, err error) plugins.Result {
	return plugins.RetryLater(0, fmt.Sprintf("%s: %v", stage, err))
}

// refused turns the server's reply into an answer: 4xx (and refusals of
// the adapter's own credentials) are Retry after retry_after; other 5xx
// are Reject, with the server's words.
func (st *state) refused(stage string, err error) plugins.Result {
	code := smtpCode(err)
	text := replyText(err)
	switch {
	case code >= 400 && code < 500, authCode(code):
		return plugins.RetryLater(time.Duration(st.cfg.RetryAfter), fmt.Sprintf("the SMTP server answered %s with: %s", stage, text))
	case code >= 500:
		return plugins.Rejected(fmt.Sprintf("the SMTP server refused %s: %s", stage, text))
	}
	return plugins.RetryLater(0, fmt.Sprintf("%s: %v", stage, err))
}

func envelopeASCII(e Envelope) bool {
	for _, s := range append([]string{e.From}, e.To...) {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
	}
	return true
}
