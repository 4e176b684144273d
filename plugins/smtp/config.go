package smtp

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Config is the smtp adapter's configuration block. See the package
// documentation (and README.md) for what each key means.
type Config struct {
	// Outbound.
	Server         string       `json:"server"`
	TLS            TLS          `json:"tls"`
	Auth           *Auth        `json:"auth"`
	HeloName       string       `json:"helo_name"`
	Domain         string       `json:"domain"`
	From           string       `json:"from"`
	EnvelopeFrom   string       `json:"envelope_from"`
	Subject        string       `json:"subject"`
	Format         string       `json:"format"`
	ConnectTimeout sdk.Duration `json:"connect_timeout"`
	CommandTimeout sdk.Duration `json:"command_timeout"`
	DataTimeout    sdk.Duration `json:"data_timeout"`
	MaxMessageSize int64        `json:"max_message_size"`
	MaxHeaderBytes int          `json:"max_header_bytes"`
	MaxConnections int          `json:"max_connections"`
	IdleTimeout    sdk.Duration `json:"idle_timeout"`
	RetryAfter     sdk.Duration `json:"retry_after"`

	// Inbound: the adapter's own SMTP server. Without it Fetch is
	// unsupported.
	Inbound *Inbound `json:"inbound"`
}

// TLS says how the connection to the server is protected.
type TLS struct {
	// Mode is "starttls" (required; the default), "opportunistic"
	// (STARTTLS when the server offers it), "implicit" (TLS from the first
	// byte, port 465) or "off".
	Mode string `json:"mode"`
	// CAFile holds PEM roots for the server (default: the system's).
	CAFile string `json:"ca_file"`
	// ServerName is the name to verify instead of the server's host.
	ServerName string `json:"server_name"`
}

// Auth is AUTH PLAIN with a username and password.
type Auth struct {
	Username string `json:"username"`
	Password string `json:"password"`
	// AllowInsecure allows AUTH over a connection without TLS (a relay on
	// loopback, a test server). Otherwise the adapter never sends the
	// password in the clear.
	AllowInsecure bool `json:"allow_insecure"`
}

// Inbound configures the adapter's SMTP server.
type Inbound struct {
	Listen            string            `json:"listen"`
	Hostname          string            `json:"hostname"`
	Domains           []string          `json:"domains"`
	Recipients        map[string]string `json:"recipients"`
	DefaultService    *string           `json:"default_service"`
	Spool             string            `json:"spool"`
	MaxMessageSize    int64             `json:"max_message_size"`
	MaxRecipients     int               `json:"max_recipients"`
	MaxMessages       int               `json:"max_messages"`
	MaxBytes          int64             `json:"max_bytes"`
	MaxConnections    int               `json:"max_connections"`
	ReadTimeout       sdk.Duration      `json:"read_timeout"`
	WriteTimeout      sdk.Duration      `json:"write_timeout"`
	Auth              *InboundAuth      `json:"auth"`
	TLS               *InboundTLS       `json:"tls"`
	AllowInsecureAuth bool              `json:"allow_insecure_auth"`
	Lifetime          sdk.Duration      `json:"lifetime"`
	NackDelay         *sdk.Duration     `json:"nack_delay"`
	Lease             sdk.Duration      `json:"lease"`
}

// InboundAuth makes the server require AUTH PLAIN with these credentials
// before MAIL FROM.
type InboundAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// InboundTLS makes the server offer STARTTLS with this certificate.
type InboundTLS struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
}

// Defaults.
const (
	defaultConnectTimeout = 10 * time.Second
	defaultCommandTimeout = time.Minute
	defaultDataTimeout    = 10 * time.Minute
	defaultMaxHeaderBytes = 64 << 10
	maxMaxHeaderBytes     = 1 << 20
	defaultMaxConnections = 8
	defaultIdleTimeout    = 30 * time.Second
	defaultRetryAfter     = time.Minute
	defaultFrom           = "{src_node}@{domain}"
	defaultSubject        = "Message from {src}"

	defaultInboundMaxMessage  = 25 << 20
	defaultInboundRecipients  = 50
	defaultInboundMaxMessages = 10000
	defaultInboundMaxBytes    = 1 << 30
	defaultInboundConnections = 32
	defaultInboundTimeout     = 2 * time.Minute
	defaultDefaultService     = "mail"
	defaultNackDelay          = 30 * time.Second
	defaultLease              = 10 * time.Minute
)

// TLS modes.
const (
	TLSStartTLS      = "starttls"
	TLSOpportunistic = "opportunistic"
	TLSImplicit      = "implicit"
	TLSOff           = "off"
)

// Formats: how Deliver reads a payload.
const (
	// FormatAuto sends a payload that starts with a header block as the
	// message it is, and wraps any other.
	FormatAuto = "auto"
	// FormatMessage requires a header block; a payload without one is
	// rejected.
	FormatMessage = "message"
	// FormatBody always wraps the payload in a new message.
	FormatBody = "body"
)

// settings is a validated configuration with its defaults applied.
type settings struct {
	Config
	tlsConfig   *tls.Config // for the outbound server; nil with mode off
	defaultSvc  string
	nackDelay   time.Duration
	inboundTLS  *tls.Config
	recipients  map[string]string // lower-cased address → EID
	domains     map[string]bool   // lower-cased
	inboundHost string
}

func defaultConfig() Config {
	return Config{
		ConnectTimeout: sdk.Duration(defaultConnectTimeout),
		CommandTimeout: sdk.Duration(defaultCommandTimeout),
		DataTimeout:    sdk.Duration(defaultDataTimeout),
		MaxHeaderBytes: defaultMaxHeaderBytes,
		MaxConnections: defaultMaxConnections,
		IdleTimeout:    sdk.Duration(defaultIdleTimeout),
		RetryAfter:     sdk.Duration(defaultRetryAfter),
		From:           defaultFrom,
		Subject:        defaultSubject,
		Format:         FormatAuto,
		TLS:            TLS{Mode: TLSStartTLS},
	}
}

// parseConfig decodes and validates a configuration block, reporting
// every problem by key.
func parseConfig(raw json.RawMessage) (*settings, error) {
	cfg := defaultConfig()
	errs, ok := sdk.DecodeConfigErrors(raw, &cfg)
	if !ok {
		return nil, errs
	}
	s := &settings{Config: cfg}
	if cfg.Server == "" && cfg.Inbound == nil && !errs.Has("server") && !errs.Has("inbound") {
		errs = errs.Add("server", `set server (the SMTP server bundles are delivered to, e.g. "smtp.example.org:587"), inbound (an SMTP server of the adapter's own), or both`)
	}
	if cfg.Server != "" {
		errs = s.checkOutbound(errs)
	}
	if cfg.Inbound != nil {
		errs = s.checkInbound(errs)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *settings) checkOutbound(errs plugins.ConfigErrors) plugins.ConfigErrors {
	c := &s.Config
	if !errs.Has("server") {
		if err := checkHostPort(c.Server); err != nil {
			errs = errs.Add("server", "%v", err)
		}
	}
	switch c.TLS.Mode {
	case TLSStartTLS, TLSOpportunistic, TLSImplicit, TLSOff:
	default:
		if !errs.Has("tls.mode") {
			errs = errs.Add("tls.mode", `must be "starttls" (required), "opportunistic", "implicit" or "off", not %q`, c.TLS.Mode)
		}
	}
	if c.TLS.Mode != TLSOff {
		host, _, _ := net.SplitHostPort(c.Server)
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		if c.TLS.ServerName != "" {
			cfg.ServerName = c.TLS.ServerName
		}
		if c.TLS.CAFile != "" && !errs.Has("tls.ca_file") {
			pool, err := loadCA(c.TLS.CAFile)
			if err != nil {
				errs = errs.Add("tls.ca_file", "%v", err)
			}
			cfg.RootCAs = pool
		}
		s.tlsConfig = cfg
	} else if (c.TLS.CAFile != "" || c.TLS.ServerName != "") && !errs.Has("tls.mode") {
		errs = errs.Add("tls.mode", `is "off", so tls.ca_file and tls.server_name would not be used; choose a mode or remove them`)
	}
	if a := c.Auth; a != nil {
		if a.Username == "" && !errs.Has("auth.username") {
			errs = errs.Add("auth.username", "is required with auth")
		}
		if a.Password == "" && !errs.Has("auth.password") {
			errs = errs.Add("auth.password", "is required with auth")
		}
		if c.TLS.Mode == TLSOff && !a.AllowInsecure && !errs.Has("auth.allow_insecure") {
			errs = errs.Add("auth.allow_insecure", `tls.mode is "off", so the password would travel in the clear; use TLS, or set auth.allow_insecure: true (a relay on loopback)`)
		}
	}
	if c.HeloName == "" {
		c.HeloName = defaultHeloName()
	} else if !validHostname(c.HeloName) && !errs.Has("helo_name") {
		errs = errs.Add("helo_name", "%q is not a host name", c.HeloName)
	}
	if !errs.Has("domain") {
		if c.Domain == "" {
			errs = errs.Add("domain", `is required: the domain of generated Message-IDs and of {domain} in "from", e.g. "gw.example.org"`)
		} else if !validHostname(c.Domain) {
			errs = errs.Add("domain", "%q is not a domain name", c.Domain)
		}
	}
	for _, t := range []struct{ key, v string }{{"from", c.From}, {"envelope_from", c.EnvelopeFrom}} {
		if t.v == "" || errs.Has(t.key) {
			continue
		}
		if err := checkTemplate(t.v, addressPlaceholders); err != nil {
			errs = errs.Add(t.key, "%v", err)
			continue
		}
		if _, err := mail.ParseAddress(expandSample(t.v)); err != nil {
			errs = errs.Add(t.key, "%q does not make an email address: %v", t.v, err)
		}
	}
	if !errs.Has("subject") {
		if err := checkTemplate(c.Subject, addressPlaceholders); err != nil {
			errs = errs.Add("subject", "%v", err)
		} else if strings.ContainsAny(c.Subject, "\r\n") {
			errs = errs.Add("subject", "must be one line")
		}
	}
	switch c.Format {
	case FormatAuto, FormatMessage, FormatBody:
	default:
		if !errs.Has("format") {
			errs = errs.Add("format", `must be "auto", "message" or "body", not %q`, c.Format)
		}
	}
	for _, d := range []struct {
		key string
		v   sdk.Duration
	}{{"connect_timeout", c.ConnectTimeout}, {"command_timeout", c.CommandTimeout}, {"data_timeout", c.DataTimeout}, {"idle_timeout", c.IdleTimeout}} {
		if d.v <= 0 && !errs.Has(d.key) {
			errs = errs.Add(d.key, `must be positive, e.g. "30s"`)
		}
	}
	if c.MaxMessageSize < 0 && !errs.Has("max_message_size") {
		errs = errs.Add("max_message_size", "must be ≥ 0 (0: the server's own limit), not %d", c.MaxMessageSize)
	}
	if (c.MaxHeaderBytes < 1024 || c.MaxHeaderBytes > maxMaxHeaderBytes) && !errs.Has("max_header_bytes") {
		errs = errs.Add("max_header_bytes", "must be between 1024 and %d, not %d", maxMaxHeaderBytes, c.MaxHeaderBytes)
	}
	if (c.MaxConnections < 1 || c.MaxConnections > 1024) && !errs.Has("max_connections") {
		errs = errs.Add("max_connections", "must be between 1 and 1024, not %d", c.MaxConnections)
	}
	return errs
}

func (s *settings) checkInbound(errs plugins.ConfigErrors) plugins.ConfigErrors {
	in := *s.Inbound
	if !errs.Has("inbound.listen") {
		if in.Listen == "" {
			errs = errs.Add("inbound.listen", `is required: the address the adapter's SMTP server listens on, e.g. "127.0.0.1:2525"`)
		} else if err := checkHostPort(in.Listen); err != nil {
			errs = errs.Add("inbound.listen", "%v", err)
		}
	}
	if !errs.Has("inbound.spool") {
		if in.Spool == "" {
			errs = errs.Add("inbound.spool", "is required: an absolute directory where received mail waits for the node")
		} else if !filepath.IsAbs(in.Spool) {
			errs = errs.Add("inbound.spool", "must be an absolute path, not %q", in.Spool)
		}
	}
	s.domains = map[string]bool{}
	for i, d := range in.Domains {
		if !validHostname(d) {
			errs = errs.Add(fmt.Sprintf("inbound.domains[%d]", i), "%q is not a domain name", d)
		}
		s.domains[strings.ToLower(d)] = true
	}
	s.recipients = map[string]string{}
	keys := make([]string, 0, len(in.Recipients))
	for k := range in.Recipients {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		key := "inbound.recipients." + k
		if _, err := mail.ParseAddress(k); err != nil || strings.ContainsAny(k, "<> ") {
			errs = errs.Add(key, "%q is not an email address (write it bare: user@example.org)", k)
			continue
		}
		if err := sdk.CheckEID(in.Recipients[k]); err != nil {
			errs = errs.Add(key, "is not a destination endpoint ID: %v", err)
			continue
		}
		s.recipients[strings.ToLower(k)] = in.Recipients[k]
	}
	if len(in.Domains) == 0 && len(in.Recipients) == 0 && !errs.Has("inbound.domains") && !errs.Has("inbound.recipients") {
		errs = errs.Add("inbound.domains", `list the domains whose node+service@domain addresses the server takes, or map addresses in inbound.recipients; otherwise every recipient would be refused`)
	}
	s.defaultSvc = defaultDefaultService
	if in.DefaultService != nil {
		s.defaultSvc = *in.DefaultService
		if _, err := sdk.DTNEndpoint("node", s.defaultSvc); err != nil && !errs.Has("inbound.default_service") {
			errs = errs.Add("inbound.default_service", "node@domain would map to no endpoint ID: %v", err)
		}
	}
	if in.Hostname == "" {
		in.Hostname = s.HeloName
		if in.Hostname == "" {
			in.Hostname = defaultHeloName()
		}
	} else if !validHostname(in.Hostname) && !errs.Has("inbound.hostname") {
		errs = errs.Add("inbound.hostname", "%q is not a host name", in.Hostname)
	}
	s.inboundHost = in.Hostname
	positive := func(key string, v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
		if *v < 0 && !errs.Has(key) {
			errs = errs.Add(key, "must be positive, not %d", *v)
		}
	}
	positive("inbound.max_message_size", &in.MaxMessageSize, defaultInboundMaxMessage)
	positive("inbound.max_bytes", &in.MaxBytes, defaultInboundMaxBytes)
	for _, p := range []struct {
		key string
		v   *int
		def int
	}{{"inbound.max_recipients", &in.MaxRecipients, defaultInboundRecipients},
		{"inbound.max_messages", &in.MaxMessages, defaultInboundMaxMessages},
		{"inbound.max_connections", &in.MaxConnections, defaultInboundConnections}} {
		if *p.v == 0 {
			*p.v = p.def
		}
		if *p.v < 0 && !errs.Has(p.key) {
			errs = errs.Add(p.key, "must be positive, not %d", *p.v)
		}
	}
	if in.MaxBytes > 0 && in.MaxMessageSize > in.MaxBytes && !errs.Has("inbound.max_message_size") {
		errs = errs.Add("inbound.max_message_size", "%d is more than the whole spool may hold (inbound.max_bytes %d)", in.MaxMessageSize, in.MaxBytes)
	}
	for _, d := range []struct {
		key string
		v   *sdk.Duration
		def time.Duration
	}{{"inbound.read_timeout", &in.ReadTimeout, defaultInboundTimeout},
		{"inbound.write_timeout", &in.WriteTimeout, defaultInboundTimeout},
		{"inbound.lease", &in.Lease, defaultLease}} {
		if *d.v == 0 {
			*d.v = sdk.Duration(d.def)
		}
	}
	if in.Lease < sdk.Duration(time.Second) && !errs.Has("inbound.lease") {
		errs = errs.Add("inbound.lease", "must be at least 1s, or a slow node would be offered the same message twice")
	}
	s.nackDelay = defaultNackDelay
	if in.NackDelay != nil {
		s.nackDelay = time.Duration(*in.NackDelay)
	}
	if a := in.Auth; a != nil {
		if a.Username == "" && !errs.Has("inbound.auth.username") {
			errs = errs.Add("inbound.auth.username", "is required with inbound.auth")
		}
		if a.Password == "" && !errs.Has("inbound.auth.password") {
			errs = errs.Add("inbound.auth.password", "is required with inbound.auth")
		}
		if in.TLS == nil && !in.AllowInsecureAuth && !errs.Has("inbound.allow_insecure_auth") {
			errs = errs.Add("inbound.allow_insecure_auth", "inbound.auth without inbound.tls lets clients send the password in the clear; add inbound.tls, or set inbound.allow_insecure_auth: true")
		}
	}
	if t := in.TLS; t != nil {
		switch {
		case t.CertFile == "" && !errs.Has("inbound.tls.cert_file"):
			errs = errs.Add("inbound.tls.cert_file", "is required with inbound.tls")
		case t.KeyFile == "" && !errs.Has("inbound.tls.key_file"):
			errs = errs.Add("inbound.tls.key_file", "is required with inbound.tls")
		case !errs.Has("inbound.tls.cert_file") && !errs.Has("inbound.tls.key_file"):
			pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				errs = errs.Add("inbound.tls.cert_file", "cannot load the certificate and key: %v", err)
			} else {
				s.inboundTLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
			}
		}
	}
	s.Inbound = &in
	return errs
}

func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%q: want host:port, e.g. \"smtp.example.org:587\" (%v)", hp, err)
	}
	if port == "" {
		return fmt.Errorf("%q names no port", hp)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q: bad port %q", hp, port)
	}
	_ = host // empty: every address (for listen)
	return nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// validHostname accepts DNS names (letters, digits, '-', '.') and address
// literals such as "[127.0.0.1]".
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		return net.ParseIP(strings.TrimPrefix(h[1:len(h)-1], "IPv6:")) != nil
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// defaultHeloName is the host's name when it is usable in EHLO, else
// "localhost".
func defaultHeloName() string {
	if h, err := os.Hostname(); err == nil && validHostname(h) {
		return h
	}
	return "localhost"
}
