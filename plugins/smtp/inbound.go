package smtp

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// inbound is the adapter's SMTP server and its spool.
type inbound struct {
	cfg     *settings
	log     *zap.Logger
	sp      *spool
	mapping Mapping
	srv     *gosmtp.Server
	ln      net.Listener
	done    chan struct{}
	once    sync.Once
}

// Replies of the inbound server.
var (
	replyAuthRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	replySpoolFull    = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage: too much mail waits for the node; try again later"}
	replyLineTooLong  = &gosmtp.SMTPError{Code: 500, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	replyLocalError   = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing; try again later"}
)

// startInbound opens the spool and starts the server on its address.
func startInbound(st *state) (*inbound, error) {
	cfg := st.cfg
	in := cfg.Inbound
	sp, err := openSpool(in.Spool, in.MaxMessages, in.MaxBytes, st.log)
	if err != nil {
		return nil, plugins.ConfigErrors{{Key: "inbound.spool", Message: fmt.Sprintf("cannot use it: %v", err)}}
	}
	ib := &inbound{cfg: cfg, log: st.log, sp: sp, done: make(chan struct{}),
		mapping: Mapping{Recipients: cfg.recipients, Domains: cfg.domains, DefaultService: cfg.defaultSvc}}
	ln, err := net.Listen("tcp", in.Listen)
	if err != nil {
		return nil, plugins.ConfigErrors{{Key: "inbound.listen", Message: fmt.Sprintf("cannot listen: %v", err)}}
	}
	ib.ln = &limitListener{Listener: ln, slots: make(chan struct{}, in.MaxConnections)}
	s := gosmtp.NewServer(gosmtp.BackendFunc(ib.newSession))
	s.Domain = cfg.inboundHost
	s.MaxMessageBytes = in.MaxMessageSize
	s.MaxRecipients = in.MaxRecipients
	s.ReadTimeout = time.Duration(in.ReadTimeout)
	s.WriteTimeout = time.Duration(in.WriteTimeout)
	// TLS is offered, never required before MAIL: a server that takes
	// mail for its domains is an MX, which RFC 3207 forbids to require
	// STARTTLS. The password is what needs it: go-smtp advertises AUTH
	// only after STARTTLS and answers AUTH in the clear with 523 5.7.10,
	// unless allow_insecure_auth says otherwise; with inbound.auth, MAIL
	// before AUTH gets 530 (TestInboundStartTLS).
	s.AllowInsecureAuth = in.AllowInsecureAuth
	s.TLSConfig = cfg.inboundTLS
	s.ErrorLog = zapPrintf{st.log}
	ib.srv = s
	go func() {
		err := s.Serve(ib.ln)
		select {
		case <-ib.done:
		default:
			st.log.Error("the inbound SMTP server stopped", zap.Error(err))
		}
	}()
	return ib, nil
}

func (ib *inbound) addr() string { return ib.ln.Addr().String() }

// stop closes the listener and every session. A client cut off before
// its 250 has no promise and sends again.
func (ib *inbound) stop() {
	ib.once.Do(func() {
		close(ib.done)
		_ = ib.srv.Close()
	})
}

func (ib *inbound) check() error {
	select {
	case <-ib.done:
		return errors.New("the SMTP server is stopped")
	default:
	}
	return ib.sp.check()
}

func (ib *inbound) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	s := &session{ib: ib, conn: c}
	if ib.cfg.Inbound.Auth != nil {
		return &authSession{session: s}, nil
	}
	return s, nil
}

// destination is one destination of a message being received, with the
// recipients that map to it.
type destination struct {
	eid   string
	rcpts []string
}

// session is one SMTP session with a client.
type session struct {
	ib     *inbound
	conn   *gosmtp.Conn
	authed bool
	from   string
	dests  []destination
}

func (s *session) Reset() {
	s.from = ""
	s.dests = nil
}

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	if s.ib.cfg.Inbound.Auth != nil && !s.authed {
		return replyAuthRequired
	}
	var size int64
	if opts != nil {
		size = opts.Size
	}
	if err := s.ib.sp.room(size); err != nil {
		s.ib.log.Warn("refusing mail: the spool is full", zap.Error(err))
		return replySpoolFull
	}
	s.from = from
	s.dests = nil
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	eid, err := s.ib.mapping.Destination(to)
	if err != nil {
		s.ib.log.Info("refusing a recipient", zap.String("rcpt", to), zap.Error(err))
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "<" + truncate(to, 200) + ">: no such recipient here"}
	}
	for i := range s.dests {
		if s.dests[i].eid == eid {
			s.dests[i].rcpts = append(s.dests[i].rcpts, to)
			return nil
		}
	}
	s.dests = append(s.dests, destination{eid: eid, rcpts: []string{to}})
	return nil
}

// Data writes the message to the spool and returns only once it is
// durable: go-smtp answers 250 when Data returns nil.
func (s *session) Data(r io.Reader) error {
	rec, err := s.ib.sp.begin()
	if err != nil {
		if errors.Is(err, errSpoolFull) {
			return replySpoolFull
		}
		s.ib.log.Error("cannot write to the spool", zap.Error(err))
		return replyLocalError
	}
	if _, err := io.Copy(rec, r); err != nil {
		rec.abort()
		var se *gosmtp.SMTPError
		switch {
		case errors.As(err, &se):
			return se // 552: over max_message_size
		case errors.Is(err, errSpoolFull):
			return replySpoolFull
		case errors.Is(err, gosmtp.ErrTooLongLine):
			return replyLineTooLong
		case errors.Is(err, gosmtp.ErrDataReset), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
			return err // the client went away: nobody to answer
		}
		s.ib.log.Error("cannot write to the spool", zap.Error(err))
		return replyLocalError
	}
	base := entryMeta{MailFrom: s.from, Received: time.Now().UTC(), Helo: s.conn.Hostname()}
	if a := s.conn.Conn().RemoteAddr(); a != nil {
		base.Remote = a.String()
	}
	if err := rec.commit(base, s.dests); err != nil {
		s.ib.log.Error("cannot commit a message to the spool", zap.Error(err))
		return replyLocalError
	}
	s.ib.log.Debug("accepted mail", zap.String("from", s.from), zap.Int("destinations", len(s.dests)), zap.Int64("bytes", rec.n))
	return nil
}

// authSession is a session on a server that requires AUTH PLAIN.
type authSession struct{ *session }

func (s *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *authSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	want := s.ib.cfg.Inbound.Auth
	return sasl.NewPlainServer(func(_, user, pass string) error {
		u := subtle.ConstantTimeCompare([]byte(user), []byte(want.Username))
		p := subtle.ConstantTimeCompare([]byte(pass), []byte(want.Password))
		if u&p != 1 {
			s.ib.log.Warn("failed SMTP authentication", zap.String("user", user))
			return gosmtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

// limitListener bounds the sessions open at once; more wait in the
// kernel's backlog.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// zapPrintf lets go-smtp's server log through zap.
type zapPrintf struct{ log *zap.Logger }

func (z zapPrintf) Printf(format string, v ...any) {
	z.log.Warn(strings.TrimSpace(fmt.Sprintf(format, v...)), zap.String("from", "smtp server"))
}

func (z zapPrintf) Println(v ...any) {
	z.log.Warn(strings.TrimSpace(fmt.Sprintln(v...)), zap.String("from", "smtp server"))
}

// Fetch offers the spool's entries, oldest first, waiting up to req.Wait
// for mail when there is none.
func (a *Adapter) Fetch(ctx context.Context, req plugins.FetchRequest, fn func(plugins.Inbound) error) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	if st.in == nil {
		return fmt.Errorf("%w: this smtp adapter has no inbound server configured", plugins.ErrUnsupported)
	}
	ib := st.in
	// Arrivals wake the wait; leases ending do not, hence the poll.
	return sdk.LongPoll(ctx, req.Wait, time.Second, ib.sp.arrivals, func() (int, error) {
		return ib.offer(ctx, req, fn)
	})
}

func (ib *inbound) offer(ctx context.Context, req plugins.FetchRequest, fn func(plugins.Inbound) error) (int, error) {
	limit := max(req.MaxMessages, 1)
	lease := time.Duration(ib.cfg.Inbound.Lease)
	taken := 0
	for _, e := range ib.sp.ready(time.Now()) {
		if taken >= limit {
			break
		}
		if err := ctx.Err(); err != nil {
			return taken, err
		}
		if req.MaxBytes > 0 && e.meta.Size > req.MaxBytes {
			ib.sp.warnOnce(e.name, fmt.Sprintf("leaving spooled mail alone: its %d bytes are more than the node takes (%d)", e.meta.Size, req.MaxBytes))
			continue
		}
		if !ib.sp.lease(e.name, lease) {
			continue
		}
		err := ib.offerOne(e, fn)
		if err != nil {
			ib.sp.unlease(e.name)
			if errors.Is(err, plugins.ErrFetchLimit) {
				return taken, nil
			}
			return taken, err
		}
		taken++
	}
	return taken, nil
}

func (ib *inbound) offerOne(e *entry, fn func(plugins.Inbound) error) error {
	f, size, err := ib.sp.open(e)
	if err != nil {
		return err
	}
	defer f.Close()
	m := e.meta
	headers := map[string]string{
		"mail_from": strings.ToValidUTF8(m.MailFrom, "\uFFFD"),
		"rcpt_to":   strings.ToValidUTF8(strings.Join(m.Recipients, ", "), "\uFFFD"),
		"received":  m.Received.UTC().Format(time.RFC3339Nano),
	}
	for k, v := range map[string]string{"from": m.From, "subject": m.Subject, "message_id": m.MessageID, "remote": m.Remote, "helo": m.Helo} {
		if v != "" {
			headers[k] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
	headers["content_type"] = "message/rfc822"
	return fn(plugins.Inbound{
		Receipt:       e.name,
		MessageID:     "smtp:" + e.name,
		Destination:   m.Destination,
		Lifetime:      time.Duration(ib.cfg.Inbound.Lifetime),
		Headers:       headers,
		PayloadLength: size,
		Payload:       f,
	})
}

// Ack deletes the entry; its message goes with its last entry.
func (a *Adapter) Ack(_ context.Context, receipt string) error {
	ib, name, err := a.receipt(receipt)
	if err != nil {
		return err
	}
	return ib.sp.remove(name)
}

// Nack keeps the entry and holds it back for nack_delay.
func (a *Adapter) Nack(_ context.Context, receipt, reason string) error {
	ib, name, err := a.receipt(receipt)
	if err != nil {
		return err
	}
	if ib.sp.holdFor(name, ib.cfg.nackDelay) {
		ib.log.Info("the node could not take spooled mail; offering it again later",
			zap.String("entry", name), zap.String("reason", reason), zap.Duration("after", ib.cfg.nackDelay))
	}
	return nil
}

// Reject moves the entry to spool/rejected: its message as <entry>.eml,
// its metadata as <entry>.json, and the node's reason in <entry>.reason.
// It is never offered again.
func (a *Adapter) Reject(_ context.Context, receipt, reason string) error {
	ib, name, err := a.receipt(receipt)
	if err != nil {
		return err
	}
	e, err := ib.sp.reject(name, reason)
	if err != nil {
		return err
	}
	if e != nil {
		ib.log.Warn("the node refused spooled mail for good; moved it aside",
			zap.String("entry", name), zap.String("to", ib.sp.path(spoolRejected, name+".eml")),
			zap.String("destination", e.meta.Destination), zap.String("reason", reason))
	}
	return nil
}

func (a *Adapter) receipt(r string) (*inbound, string, error) {
	name, err := parseReceipt(r)
	if err != nil {
		return nil, "", err
	}
	st, err := a.cur.Get()
	if err != nil {
		return nil, "", err
	}
	if st.in == nil {
		return nil, "", fmt.Errorf("%w: this smtp adapter has no inbound server configured", plugins.ErrUnsupported)
	}
	return st.in, name, nil
}
