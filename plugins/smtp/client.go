package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// conn is one SMTP session with the server, ready for MAIL FROM.
type conn struct {
	c        *gosmtp.Client
	raw      net.Conn
	eightBit bool  // the server takes 8BITMIME
	utf8     bool  // the server takes SMTPUTF8
	maxSize  int64 // the server's SIZE; 0: none said
	tls      bool
	used     time.Time
}

func (c *conn) close() { _ = c.raw.Close() }

// quit says goodbye politely, within a second.
func (c *conn) quit() {
	_ = c.raw.SetDeadline(time.Now().Add(time.Second))
	_ = c.c.Quit()
	_ = c.raw.Close()
}

// pool holds idle sessions with the server and bounds how many are open.
type pool struct {
	st    *state
	slots chan struct{} // one per open session, at most max_connections

	mu     sync.Mutex
	idle   []*conn
	closed bool
}

func newPool(st *state) *pool {
	return &pool{st: st, slots: make(chan struct{}, st.cfg.MaxConnections)}
}

// get returns a session, reused or new; reused tells which. Every get is
// followed by one put.
func (p *pool) get(ctx context.Context) (c *conn, reused bool, err error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("waiting for one of the %d connections to the server: %w", cap(p.slots), ctx.Err())
	}
	idleFor := time.Duration(p.st.cfg.IdleTimeout)
	p.mu.Lock()
	for len(p.idle) > 0 {
		c = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(c.used) < idleFor {
			p.mu.Unlock()
			return c, true, nil
		}
		go c.quit()
	}
	p.mu.Unlock()
	c, err = p.st.dial(ctx)
	if err != nil {
		<-p.slots
		return nil, false, err
	}
	return c, false, nil
}

// put gives a session back: kept for the next delivery when ok, closed
// otherwise.
func (p *pool) put(c *conn, ok bool) {
	defer func() { <-p.slots }()
	if c == nil {
		return
	}
	if !ok {
		c.close()
		return
	}
	c.used = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		go c.quit()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// prune closes sessions idle for longer than idle_timeout.
func (p *pool) prune() {
	idleFor := time.Duration(p.st.cfg.IdleTimeout)
	p.mu.Lock()
	keep := p.idle[:0]
	var old []*conn
	for _, c := range p.idle {
		if time.Since(c.used) < idleFor {
			keep = append(keep, c)
		} else {
			old = append(old, c)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, c := range old {
		c.quit()
	}
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(c.quit)
	}
	wg.Wait()
}

// deadlineConn gives every write a deadline, so that a server that stops
// reading in the middle of DATA cannot hold a delivery forever. (go-smtp
// sets deadlines for commands and replies, not for the data it writes.)
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (d deadlineConn) Write(p []byte) (int, error) {
	_ = d.Conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.Conn.Write(p)
}

// greetedConn replays the server's greeting to go-smtp's client, which
// expects one, after the adapter has greeted the server and run STARTTLS
// itself (go-smtp cannot start TLS on a session it opened without it, so
// it could not do opportunistic STARTTLS, and it would say EHLO localhost
// before TLS).
type greetedConn struct {
	net.Conn
	greeting []byte
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if len(g.greeting) > 0 {
		n := copy(p, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// dial opens a session with the server: TCP, TLS as configured, EHLO,
// AUTH. Its errors are *gosmtp.SMTPError for the server's refusals.
func (st *state) dial(ctx context.Context) (c *conn, err error) {
	cfg := st.cfg
	d := net.Dialer{Timeout: time.Duration(cfg.ConnectTimeout)}
	raw, err := d.DialContext(ctx, "tcp", cfg.Server)
	if err != nil {
		return nil, err
	}
	// Until the session is ready, a cancelled context ends it.
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			_ = raw.Close()
		}
	}()
	timeout := time.Duration(cfg.CommandTimeout)
	var nc net.Conn = deadlineConn{Conn: raw, timeout: timeout}
	isTLS := false
	switch cfg.TLS.Mode {
	case TLSImplicit:
		tc := tls.Client(nc, st.cfg.tlsConfig)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc, isTLS = tc, true
	case TLSStartTLS, TLSOpportunistic:
		nc, isTLS, err = startTLS(nc, cfg, timeout)
		if err != nil {
			return nil, err
		}
	}
	client := gosmtp.NewClient(nc)
	client.CommandTimeout = timeout
	client.SubmissionTimeout = time.Duration(cfg.DataTimeout)
	if err := client.Hello(cfg.HeloName); err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if a := cfg.Auth; a != nil {
		if !isTLS && !a.AllowInsecure {
			return nil, errors.New("the server did not start TLS, and AUTH without TLS would send the password in the clear (auth.allow_insecure is not set)")
		}
		if !client.SupportsAuth("PLAIN") {
			_, mechs := client.Extension("AUTH")
			return nil, fmt.Errorf("the server does not offer AUTH PLAIN (it offers %q)", mechs)
		}
		if err := client.Auth(sasl.NewPlainClient("", a.Username, a.Password)); err != nil {
			return nil, fmt.Errorf("AUTH PLAIN as %q: %w", a.Username, err)
		}
	}
	c = &conn{c: client, raw: raw, tls: isTLS}
	c.eightBit, _ = client.Extension("8BITMIME")
	c.utf8, _ = client.Extension("SMTPUTF8")
	if n, ok := client.MaxMessageSize(); ok {
		c.maxSize = int64(n)
	}
	return c, nil
}

// startTLS greets the server, says EHLO, and runs STARTTLS when the
// server offers it (or fails, in mode starttls, when it does not). It
// returns the connection to hand go-smtp, with the greeting to replay.
func startTLS(nc net.Conn, cfg *settings, timeout time.Duration) (net.Conn, bool, error) {
	_ = nc.SetDeadline(time.Now().Add(timeout))
	defer nc.SetDeadline(time.Time{})
	tp := textproto.NewConn(nc)
	_, greeting, err := tp.ReadResponse(220)
	if err != nil {
		return nil, false, fmt.Errorf("greeting: %w", err)
	}
	first, _, _ := strings.Cut(greeting, "\n")
	replay := []byte("220 " + first + "\r\n")
	offered := false
	if err := tp.PrintfLine("EHLO %s", cfg.HeloName); err != nil {
		return nil, false, err
	}
	_, ext, err := tp.ReadResponse(250)
	if err == nil {
		for _, l := range strings.Split(ext, "\n") {
			if strings.EqualFold(strings.TrimSpace(l), "STARTTLS") {
				offered = true
			}
		}
	} else if !isSMTPRefusal(err) {
		return nil, false, fmt.Errorf("EHLO: %w", err)
	}
	if !offered {
		if cfg.TLS.Mode == TLSStartTLS {
			return nil, false, fmt.Errorf("the server does not offer STARTTLS, and tls.mode is %q (required); use \"opportunistic\" or \"off\" for a server without TLS", TLSStartTLS)
		}
		return &greetedConn{Conn: nc, greeting: replay}, false, nil
	}
	if err := tp.PrintfLine("STARTTLS"); err != nil {
		return nil, false, err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, false, fmt.Errorf("STARTTLS: %w", err)
	}
	tc := tls.Client(nc, cfg.tlsConfig)
	if err := tc.Handshake(); err != nil {
		return nil, false, fmt.Errorf("TLS handshake after STARTTLS: %w", err)
	}
	return &greetedConn{Conn: tc, greeting: replay}, true, nil
}

func isSMTPRefusal(err error) bool {
	var te *textproto.Error
	var se *gosmtp.SMTPError
	return errors.As(err, &te) || errors.As(err, &se)
}

// smtpCode returns the server's reply code in err, 0 when err is not a
// reply.
func smtpCode(err error) int {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// replyText is the server's reply in err as the server said it: code,
// enhanced code and text.
func replyText(err error) string {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		s := fmt.Sprintf("%d", se.Code)
		if se.EnhancedCode != gosmtp.EnhancedCodeNotSet && se.EnhancedCode != gosmtp.NoEnhancedCode {
			s += fmt.Sprintf(" %d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		if se.Message != "" {
			s += " " + se.Message
		}
		return s
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return fmt.Sprintf("%d %s", te.Code, te.Msg)
	}
	return err.Error()
}

// authCode tells the reply codes that are about the adapter's own
// credentials, not about a bundle: no bundle is to blame, so they are
// retried, not rejected.
func authCode(code int) bool {
	return code == 530 || code == 534 || code == 535 || code == 538
}
