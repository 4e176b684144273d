package nats

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Config is the nats adapter's configuration block. See the package
// documentation for what each key means and its default.
type Config struct {
	URLs           []string     `json:"urls"`
	Name           string       `json:"name"`
	Auth           Auth         `json:"auth"`
	TLS            TLS          `json:"tls"`
	ConnectTimeout sdk.Duration `json:"connect_timeout"`
	PublishTimeout sdk.Duration `json:"publish_timeout"`
	Subject        string       `json:"subject"`
	Streams        []Stream     `json:"streams"`
	ObjectStore    ObjectStore  `json:"object_store"`
	Inbound        *Inbound     `json:"inbound"`
}

// Auth holds at most one way to authenticate: a credentials file, an nkey
// seed file, a token, or a user and password.
type Auth struct {
	CredsFile    string `json:"creds_file"`
	NkeySeedFile string `json:"nkey_seed_file"`
	Token        string `json:"token"`
	User         string `json:"user"`
	Password     string `json:"password"`
}

// TLS turns on TLS (it is also on for tls:// URLs). Without ca_file the
// system roots verify the server.
type TLS struct {
	CAFile     string `json:"ca_file"`
	CertFile   string `json:"cert_file"`
	KeyFile    string `json:"key_file"`
	ServerName string `json:"server_name"`
}

func (t TLS) enabled() bool { return t != TLS{} }

// Stream is a stream the adapter creates when it is missing. An existing
// stream is used as it is, never changed.
type Stream struct {
	Name       string       `json:"name"`
	Subjects   []string     `json:"subjects"`
	Storage    string       `json:"storage"` // "file" (default) or "memory"
	MaxAge     sdk.Duration `json:"max_age"`
	Duplicates sdk.Duration `json:"duplicates"`
	Replicas   int          `json:"replicas"`
}

// ObjectStore is where payloads too large for one message go. An empty
// bucket turns the object store off: such bundles are then rejected.
type ObjectStore struct {
	Bucket   string       `json:"bucket"`
	Storage  string       `json:"storage"`
	MaxAge   sdk.Duration `json:"max_age"`
	Replicas int          `json:"replicas"`
}

// Inbound configures Fetch: a durable pull consumer on a stream, and how a
// message's subject or header names its destination.
type Inbound struct {
	Stream            string        `json:"stream"`
	Consumer          string        `json:"consumer"`
	Subjects          []string      `json:"subjects"`
	Prefix            *string       `json:"prefix"`
	DestinationHeader *string       `json:"destination_header"`
	Batch             int           `json:"batch"`
	MaxAckPending     int           `json:"max_ack_pending"`
	AckWait           sdk.Duration  `json:"ack_wait"`
	NackDelay         *sdk.Duration `json:"nack_delay"`
	DeadLetter        string        `json:"dead_letter"`
	Lifetime          sdk.Duration  `json:"lifetime"`
}

// Defaults.
const (
	defaultConnectTimeout = 5 * time.Second
	defaultPublishTimeout = 10 * time.Second
	defaultBucket         = "mulegate-payloads"
	defaultPrefix         = "to"
	defaultConsumer       = "mulegate"
	defaultBatch          = 64
	defaultMaxAckPending  = 1024
	defaultAckWait        = time.Minute
	defaultNackDelay      = 5 * time.Second
	// maxBatch bounds one pull request, and so the messages held in memory
	// by one Fetch.
	maxBatch = 4096
)

// settings is a validated configuration with its defaults applied and its
// connection options built.
type settings struct {
	Config
	prefix     string
	destHeader string
	nackDelay  time.Duration
	opts       []nats.Option
}

func defaultConfig() Config {
	return Config{
		ConnectTimeout: sdk.Duration(defaultConnectTimeout),
		PublishTimeout: sdk.Duration(defaultPublishTimeout),
		ObjectStore:    ObjectStore{Bucket: defaultBucket},
	}
}

// parseConfig decodes and validates a configuration block, reporting every
// problem by key.
func parseConfig(raw json.RawMessage) (*settings, error) {
	cfg := defaultConfig()
	errs, ok := sdk.DecodeConfigErrors(raw, &cfg)
	if !ok {
		return nil, errs
	}
	s := &settings{Config: cfg}

	if len(cfg.URLs) == 0 && !errs.Has("urls") {
		errs = errs.Add("urls", `list at least one server, e.g. ["nats://127.0.0.1:4222"]`)
	}
	for i, u := range cfg.URLs {
		if err := checkURL(u); err != nil {
			errs = errs.Add(fmt.Sprintf("urls[%d]", i), "%v", err)
		}
	}
	errs = s.checkAuth(errs)
	var tlsConfig *tls.Config
	tlsConfig, errs = checkTLS(cfg.TLS, errs)
	for _, d := range []struct {
		key string
		v   sdk.Duration
	}{{"connect_timeout", cfg.ConnectTimeout}, {"publish_timeout", cfg.PublishTimeout}} {
		if d.v <= 0 && !errs.Has(d.key) {
			errs = errs.Add(d.key, `must be positive, e.g. "5s"`)
		}
	}
	if cfg.Subject != "" && !errs.Has("subject") {
		if err := checkSubjectTemplate(cfg.Subject); err != nil {
			errs = errs.Add("subject", "%v", err)
		}
	}
	names := map[string]bool{}
	for i, st := range cfg.Streams {
		key := fmt.Sprintf("streams[%d]", i)
		errs = checkStream(key, st, errs)
		if names[st.Name] {
			errs = errs.Add(key+".name", "stream %q is listed twice", st.Name)
		}
		names[st.Name] = true
	}
	errs = checkObjectStore(cfg.ObjectStore, errs)
	if cfg.Inbound != nil {
		errs = s.checkInbound(errs)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	s.opts = s.connectOptions(tlsConfig)
	return s, nil
}

func checkURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("is not a URL: %v", err)
	}
	switch p.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("must be a nats://, tls://, ws:// or wss:// URL, not %q", u)
	}
	if p.Hostname() == "" {
		return fmt.Errorf("%q names no host", u)
	}
	if p.User != nil {
		return errors.New("must not carry credentials; use auth.user and auth.password, or auth.token")
	}
	return nil
}

func (s *settings) checkAuth(errs plugins.ConfigErrors) plugins.ConfigErrors {
	a := s.Auth
	var set []string
	if a.CredsFile != "" {
		set = append(set, "auth.creds_file")
	}
	if a.NkeySeedFile != "" {
		set = append(set, "auth.nkey_seed_file")
	}
	if a.Token != "" {
		set = append(set, "auth.token")
	}
	if a.User != "" || a.Password != "" {
		set = append(set, "auth.user")
		if a.User == "" {
			errs = errs.Add("auth.user", "is required with auth.password")
		}
		if a.Password == "" {
			errs = errs.Add("auth.password", "is required with auth.user")
		}
	}
	if len(set) > 1 {
		errs = errs.Add(set[1], "choose one way to authenticate; %s is set too", strings.Join(slices.Delete(slices.Clone(set), 1, 2), ", "))
	}
	for _, f := range []struct{ key, path string }{{"auth.creds_file", a.CredsFile}, {"auth.nkey_seed_file", a.NkeySeedFile}} {
		if f.path != "" && !errs.Has(f.key) {
			if err := readable(f.path); err != nil {
				errs = errs.Add(f.key, "%v", err)
			}
		}
	}
	if a.NkeySeedFile != "" && !errs.Has("auth.nkey_seed_file") {
		if _, err := nats.NkeyOptionFromSeed(a.NkeySeedFile); err != nil {
			errs = errs.Add("auth.nkey_seed_file", "holds no usable nkey seed: %v", err)
		}
	}
	return errs
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot be read: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory, not a file", path)
	}
	return nil
}

func checkTLS(t TLS, errs plugins.ConfigErrors) (*tls.Config, plugins.ConfigErrors) {
	if !t.enabled() {
		return nil, errs
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" && !errs.Has("tls.ca_file") {
		pem, err := os.ReadFile(t.CAFile)
		switch {
		case err != nil:
			errs = errs.Add("tls.ca_file", "cannot be read: %v", err)
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = errs.Add("tls.ca_file", "%s holds no PEM certificate", t.CAFile)
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		key := "tls.key_file"
		if t.CertFile == "" {
			key = "tls.cert_file"
		}
		errs = errs.Add(key, "a client certificate needs both tls.cert_file and tls.key_file")
	case t.CertFile != "" && !errs.Has("tls.cert_file") && !errs.Has("tls.key_file"):
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = errs.Add("tls.cert_file", "cannot load the client certificate and key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, errs
}

func checkStream(key string, st Stream, errs plugins.ConfigErrors) plugins.ConfigErrors {
	if err := checkName(st.Name); err != nil && !errs.Has(key+".name") {
		errs = errs.Add(key+".name", "%v", err)
	}
	if len(st.Subjects) == 0 && !errs.Has(key+".subjects") {
		errs = errs.Add(key+".subjects", `list the subjects the stream stores, e.g. ["logs.>"]`)
	}
	for i, subj := range st.Subjects {
		if err := checkSubject(subj, true); err != nil {
			errs = errs.Add(fmt.Sprintf("%s.subjects[%d]", key, i), "%v", err)
		}
	}
	if _, err := storageType(st.Storage); err != nil && !errs.Has(key+".storage") {
		errs = errs.Add(key+".storage", "%v", err)
	}
	if st.Replicas < 0 || st.Replicas > 5 {
		errs = errs.Add(key+".replicas", "must be between 1 and 5 (0: 1), not %d", st.Replicas)
	}
	if st.MaxAge > 0 && st.Duplicates > st.MaxAge {
		errs = errs.Add(key+".duplicates", "must not be longer than max_age (%v)", time.Duration(st.MaxAge))
	}
	if st.Duplicates > 0 && st.Duplicates < sdk.Duration(100*time.Millisecond) {
		errs = errs.Add(key+".duplicates", "must be at least 100ms")
	}
	return errs
}

func checkObjectStore(o ObjectStore, errs plugins.ConfigErrors) plugins.ConfigErrors {
	if o.Bucket == "" {
		return errs
	}
	if !validBucket(o.Bucket) && !errs.Has("object_store.bucket") {
		errs = errs.Add("object_store.bucket", "%q: use letters, digits, '-' and '_' only (empty turns the object store off)", o.Bucket)
	}
	if _, err := storageType(o.Storage); err != nil && !errs.Has("object_store.storage") {
		errs = errs.Add("object_store.storage", "%v", err)
	}
	if o.Replicas < 0 || o.Replicas > 5 {
		errs = errs.Add("object_store.replicas", "must be between 1 and 5 (0: 1), not %d", o.Replicas)
	}
	return errs
}

func (s *settings) checkInbound(errs plugins.ConfigErrors) plugins.ConfigErrors {
	in := *s.Inbound
	s.prefix = defaultPrefix
	if in.Prefix != nil {
		s.prefix = *in.Prefix
	}
	s.destHeader = HeaderDestination
	if in.DestinationHeader != nil {
		s.destHeader = *in.DestinationHeader
	}
	if s.prefix != "" && !errs.Has("inbound.prefix") {
		if err := checkSubject(s.prefix, false); err != nil {
			errs = errs.Add("inbound.prefix", "%v", err)
		}
	}
	if s.destHeader != "" && !errs.Has("inbound.destination_header") && !validHeaderName(s.destHeader) {
		errs = errs.Add("inbound.destination_header", "%q is not a header name", s.destHeader)
	}
	if err := checkName(in.Stream); err != nil && !errs.Has("inbound.stream") {
		errs = errs.Add("inbound.stream", "%v", err)
	}
	if in.Consumer == "" {
		in.Consumer = defaultConsumer
	}
	if err := checkName(in.Consumer); err != nil && !errs.Has("inbound.consumer") {
		errs = errs.Add("inbound.consumer", "%v", err)
	}
	if len(in.Subjects) == 0 && !errs.Has("inbound.subjects") {
		if s.prefix == "" {
			errs = errs.Add("inbound.subjects", `list the subjects to fetch (required when inbound.prefix is ""), e.g. ["*.>"]`)
		} else {
			in.Subjects = []string{s.prefix + ".>"}
		}
	}
	for i, subj := range in.Subjects {
		if err := checkSubject(subj, true); err != nil {
			errs = errs.Add(fmt.Sprintf("inbound.subjects[%d]", i), "%v", err)
		}
	}
	if in.Batch == 0 {
		in.Batch = defaultBatch
	}
	if (in.Batch < 1 || in.Batch > maxBatch) && !errs.Has("inbound.batch") {
		errs = errs.Add("inbound.batch", "must be between 1 and %d, not %d", maxBatch, in.Batch)
	}
	if in.MaxAckPending == 0 {
		in.MaxAckPending = defaultMaxAckPending
	}
	if in.MaxAckPending < 1 && !errs.Has("inbound.max_ack_pending") {
		errs = errs.Add("inbound.max_ack_pending", "must be at least 1, not %d", in.MaxAckPending)
	}
	if in.AckWait == 0 {
		in.AckWait = sdk.Duration(defaultAckWait)
	}
	if in.AckWait < sdk.Duration(time.Second) && !errs.Has("inbound.ack_wait") {
		errs = errs.Add("inbound.ack_wait", "must be at least 1s: the node needs time to store a message before it is offered again")
	}
	s.nackDelay = defaultNackDelay
	if in.NackDelay != nil {
		s.nackDelay = time.Duration(*in.NackDelay)
	}
	if in.DeadLetter != "" && !errs.Has("inbound.dead_letter") {
		if err := checkSubject(in.DeadLetter, false); err != nil {
			errs = errs.Add("inbound.dead_letter", "%v", err)
		} else if slices.ContainsFunc(in.Subjects, func(f string) bool { return subjectMatches(f, in.DeadLetter) }) {
			errs = errs.Add("inbound.dead_letter", "%q is among the inbound subjects, so dead letters would be fetched again", in.DeadLetter)
		}
	}
	s.Inbound = &in
	return errs
}

func storageType(s string) (jetstream.StorageType, error) {
	switch s {
	case "", "file":
		return jetstream.FileStorage, nil
	case "memory":
		return jetstream.MemoryStorage, nil
	}
	return 0, fmt.Errorf(`must be "file" or "memory", not %q`, s)
}

// checkName checks a stream or consumer name.
func checkName(n string) error {
	if n == "" {
		return errors.New("is required")
	}
	if len(n) > 255 {
		return errors.New("is longer than 255 characters")
	}
	for _, c := range []byte(n) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`.*>/\`, c) >= 0 {
			return fmt.Errorf("%q: names cannot contain spaces, '.', '*', '>', slashes or control characters", n)
		}
	}
	return nil
}

func validBucket(b string) bool {
	if b == "" || len(b) > 200 {
		return false
	}
	for _, c := range []byte(b) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, c := range []byte(h) {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// connectOptions builds the nats.go options. The connection retries
// forever, from the first attempt on: a server that is down when the
// adapter starts is Check's business, not Configure's.
func (s *settings) connectOptions(tlsConfig *tls.Config) []nats.Option {
	name := s.Name
	if name == "" {
		name = "mulegate"
		if inst := os.Getenv(sdk.EnvAdapterName); inst != "" {
			name += "-" + inst
		}
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(time.Duration(s.ConnectTimeout)),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, time.Second),
		// Wrong credentials may be fixed on the server side; keep trying
		// rather than close for good after two refusals.
		nats.IgnoreAuthErrorAbort(),
		// While disconnected, publishing fails at once (and the bundle is
		// retried) instead of piling up in a buffer.
		nats.ReconnectBufSize(-1),
	}
	a := s.Auth
	switch {
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NkeySeedFile != "":
		if o, err := nats.NkeyOptionFromSeed(a.NkeySeedFile); err == nil {
			opts = append(opts, o)
		}
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if tlsConfig != nil {
		opts = append(opts, nats.Secure(tlsConfig))
	}
	return opts
}
