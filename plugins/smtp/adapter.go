// Package smtp is the built-in "smtp" adapter: it sends bundles as mail
// through an SMTP server, idempotent by Message-ID, and, when configured,
// runs an SMTP server of its own whose mail becomes inbound messages. The
// node runs it as `mulegate adapter smtp`. README.md beside this file has
// the configuration table, the decisions behind the design, and examples.
//
// # Configuration
//
//	server:           host:port of the SMTP server bundles go to (submission: 587; implicit TLS: 465)
//	tls:
//	  mode:             "starttls" (required, the default), "opportunistic", "implicit" or "off"
//	  ca_file:          PEM roots for the server (default: the system's)
//	  server_name:      the name to verify instead of server's host
//	auth:             AUTH PLAIN: username, password; allow_insecure: true to allow it without TLS
//	helo_name:        the name said in EHLO (default: the host's name)
//	domain:           domain of generated Message-IDs and of {domain} (required with server)
//	from:             From of wrapped bodies (default "{src_node}@{domain}")
//	envelope_from:    MAIL FROM (default: the message's From)
//	subject:          Subject of wrapped bodies (default "Message from {src}")
//	format:           "auto" (default), "message" or "body": see Delivery
//	connect_timeout:  one connection attempt (default "10s")
//	command_timeout:  one command's reply, and each write (default "1m")
//	data_timeout:     the reply to the whole message (default "10m")
//	max_message_size: refuse bigger messages without trying (default 0: the server's SIZE only)
//	max_header_bytes: how much of a payload is read for its header block (default 65536)
//	max_connections:  sessions with the server at once (default 8)
//	idle_timeout:     an unused session is closed after this (default "30s")
//	retry_after:      the delay asked for after a 4xx reply (default "1m")
//	inbound:          the adapter's own SMTP server; without it Fetch is unsupported
//	  listen:           host:port (required)
//	  hostname:         the name in its greeting (default: helo_name)
//	  domains:          domains whose node+service@domain addresses it takes
//	  recipients:       {address: EID} for addresses mapped one by one (looked at first)
//	  default_service:  the service of node@domain (default "mail")
//	  spool:            absolute directory where accepted mail waits (required)
//	  max_message_size: bigger messages get 552 (default 25 MiB)
//	  max_recipients:   per message (default 50)
//	  max_messages, max_bytes: the spool's bounds; when full, 452 (default 10000, 1 GiB)
//	  max_connections:  sessions at once (default 32)
//	  read_timeout, write_timeout: per command (default "2m")
//	  auth:             username, password: AUTH PLAIN required before MAIL
//	  tls:              cert_file, key_file: offer STARTTLS
//	  allow_insecure_auth: allow AUTH without TLS
//	  lifetime:         bundle lifetime asked for inbound messages (default: the node's)
//	  nack_delay:       after a Nack, offer the message again after this (default "30s")
//	  lease:            offer a fetched, unacknowledged message again after this (default "10m")
//
// # Delivery
//
// A payload that starts with a mail header block (see ScanHeader) is a
// complete RFC 5322 message and is sent as it is, with the adapter's
// X-Mulegate-* headers before its own (ones of those names it had are
// dropped), a Message-ID (MessageIDFor), Date and From added when it has
// none, and its Bcc removed. Any other payload is a body that the adapter
// wraps in a message: From, To, Subject, Date, Message-ID, and the body
// as text (7bit or 8bit) when it is short UTF-8 text, or base64 otherwise.
// Route option "format" (or the configuration's) forces one reading.
//
// Recipients are the route's "to" option (a list of addresses), else the
// message's own To, Cc and Bcc, else the address that ends the
// destination EID (dtn://cloud/mail/alice@example.org). The envelope
// sender is envelope_from, else the message's From, else "from". Route
// options "from", "subject", "content_type" and "envelope_from" override
// the configuration.
//
// The payload streams into DATA: only the header block (at most
// max_header_bytes) is held. Deliver answers OK only after the server's
// 250 to the message; a 4xx (or a refusal of the adapter's credentials)
// is Retry after retry_after, a network failure Retry, and any other 5xx
// Reject with the server's reply. A recipient refused makes the whole
// delivery stop before DATA: all recipients or none.
//
// # Inbound
//
// See Mapping for how a recipient becomes a destination; one that maps
// to nothing is refused with 550 at RCPT. Each accepted message is
// written to the spool, fsynced and renamed into place (and the directory
// fsynced) before the server answers 250 to DATA. Fetch offers each
// (message, destination) pair once; Ack deletes it, Nack leaves it for
// nack_delay, Reject moves it to spool/rejected with a .reason file.
package smtp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Version is the smtp adapter's version, reported by Describe.
const Version = "1.0.0"

// checkTimeout bounds Check's conversation with the server.
const checkTimeout = 10 * time.Second

// Adapter is the smtp adapter. The zero value is not usable; call New.
type Adapter struct {
	log *zap.Logger
	cur sdk.Current[*state]
}

var (
	_ plugins.Adapter  = (*Adapter)(nil)
	_ plugins.Rejecter = (*Adapter)(nil)
)

// New returns an unconfigured smtp adapter.
func New(log *zap.Logger) *Adapter {
	if log == nil {
		log = zap.NewNop()
	}
	return &Adapter{log: log}
}

func (a *Adapter) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "smtp", Version: Version, Deliver: true, Fetch: true}, nil
}

// state is one configuration in force, with its connections and server.
type state struct {
	cfg     *settings
	log     *zap.Logger
	pool    *pool
	readers sync.Pool // *bufio.Reader of max_header_bytes
	in      *inbound  // nil without inbound
	done    chan struct{}
	wg      sync.WaitGroup
}

func (a *Adapter) Configure(_ context.Context, raw json.RawMessage) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	st := &state{cfg: cfg, log: a.log, done: make(chan struct{})}
	size := cfg.MaxHeaderBytes
	st.readers.New = func() any { return bufio.NewReaderSize(nil, size) }
	if cfg.Server != "" {
		st.pool = newPool(st)
		st.wg.Go(st.pruneLoop)
	}

	if cfg.Inbound != nil {
		// The old server goes first: the new one may take its address and
		// its spool, which one server alone may own.
		if old, err := a.cur.Get(); err == nil && old.in != nil {
			old.in.stop()
		}
		in, err := startInbound(st)
		if err != nil {
			_ = st.Close()
			return err
		}
		st.in = in
	}
	a.cur.Swap(st)
	fields := []zap.Field{zap.String("server", cfg.Server)}
	if st.in != nil {
		fields = append(fields, zap.String("inbound", st.in.addr()), zap.String("spool", cfg.Inbound.Spool))
	}
	a.log.Info("configured", fields...)
	return nil
}

// Check connects to the server, greets it, starts TLS and authenticates
// as a delivery would, then says NOOP and QUIT. With only inbound
// configured, it checks that the spool is usable.
func (a *Adapter) Check(ctx context.Context) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	if st.in != nil {
		if err := st.in.check(); err != nil {
			return fmt.Errorf("%w: inbound: %v", plugins.ErrUnreachable, err)
		}
	}
	if st.cfg.Server == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	c, err := st.dial(ctx)
	if err != nil {
		return fmt.Errorf("%w: SMTP server %s: %v", plugins.ErrUnreachable, st.cfg.Server, err)
	}
	defer c.close()
	stop := context.AfterFunc(ctx, func() { _ = c.raw.Close() })
	defer stop()
	if err := c.c.Noop(); err != nil {
		return fmt.Errorf("%w: SMTP server %s: NOOP: %v", plugins.ErrUnreachable, st.cfg.Server, err)
	}
	_ = c.c.Quit()
	return nil
}

// Close stops the inbound server (sessions in the middle of a message are
// cut off, and their clients, having no 250, send again) and closes the
// connections to the server.
func (a *Adapter) Close() error { return a.cur.Close() }

// Close stops the state's inbound server and its connections; a second
// Close does nothing.
func (st *state) Close() error {
	select {
	case <-st.done:
		return nil
	default:
	}
	close(st.done)
	if st.in != nil {
		st.in.stop()
	}
	if st.pool != nil {
		st.pool.close()
	}
	st.wg.Wait()
	return nil
}

// pruneLoop closes idle sessions that outlived idle_timeout.
func (st *state) pruneLoop() {
	t := time.NewTicker(max(time.Duration(st.cfg.IdleTimeout)/2, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-st.done:
			return
		case <-t.C:
			st.pool.prune()
		}
	}
}
