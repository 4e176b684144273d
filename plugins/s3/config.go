package s3

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Config is the s3 adapter's configuration block. See the package
// documentation for what each key means and its default.
type Config struct {
	Endpoint           string       `json:"endpoint"`
	Region             string       `json:"region"`
	Bucket             string       `json:"bucket"`
	PathStyle          bool         `json:"path_style"`
	Credentials        *Credentials `json:"credentials"`
	TLS                TLS          `json:"tls"`
	Key                string       `json:"key"`
	ContentType        string       `json:"content_type"`
	Checksums          *bool        `json:"checksums"`
	PartSize           ByteSize     `json:"part_size"`
	MultipartThreshold ByteSize     `json:"multipart_threshold"`
	ConnectTimeout     sdk.Duration `json:"connect_timeout"`
	ResponseTimeout    sdk.Duration `json:"response_timeout"`
	MaxAttempts        int          `json:"max_attempts"`
	Limits             Limits       `json:"limits"`
	Inbound            *Inbound     `json:"inbound"`
}

// Credentials are a static access key. Without them the AWS SDK's default
// chain finds credentials (environment, shared files, web identity, ECS,
// EC2 instance metadata).
type Credentials struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token"`
}

// TLS configures how the server's certificate is verified.
type TLS struct {
	// CAFile holds PEM roots to trust instead of the system's.
	CAFile string `json:"ca_file"`
}

// Limits bound what the adapter holds at once.
type Limits struct {
	// MaxBuffer is the most payload bytes all deliveries together hold in
	// memory at once (single-request payloads and multipart parts).
	MaxBuffer ByteSize `json:"max_buffer"`
	// PartConcurrency is how many parts of one multipart upload are in
	// flight at once.
	PartConcurrency int `json:"part_concurrency"`
	// MaxScan is how many inbound keys one Fetch lists at most.
	MaxScan int `json:"max_scan"`
}

// Inbound configures Fetch; without it Fetch is unsupported.
type Inbound struct {
	Prefix             string       `json:"prefix"`
	RejectedPrefix     string       `json:"rejected_prefix"`
	DefaultDestination string       `json:"default_destination"`
	Lifetime           sdk.Duration `json:"lifetime"`
	PollInterval       sdk.Duration `json:"poll_interval"`
	Lease              sdk.Duration `json:"lease"`
	NackDelay          sdk.Duration `json:"nack_delay"`
}

// Defaults, and the limits S3 sets.
const (
	defaultRegion             = "us-east-1"
	defaultKey                = "bundles/{src_node}/{date}/{bundle_key}"
	defaultContentType        = "application/octet-stream"
	defaultPartSize           = 8 << 20
	defaultMultipartThreshold = 16 << 20
	defaultMaxBuffer          = 128 << 20
	defaultPartConcurrency    = 2
	defaultMaxScan            = 10000
	defaultConnectTimeout     = 5 * time.Second
	defaultResponseTimeout    = time.Minute
	defaultMaxAttempts        = 3
	defaultInboundPrefix      = "inbox/"
	defaultRejectedPrefix     = "rejected/"
	defaultPollInterval       = 2 * time.Second
	defaultLease              = 10 * time.Minute
	defaultNackDelay          = 30 * time.Second

	// S3's own limits: a part is 5 MiB to 5 GiB (the last may be
	// smaller), an upload has at most 10,000 parts, and one PutObject
	// takes at most 5 GiB.
	minPartSize    = 5 << 20
	maxPartSize    = 5 << 30
	maxParts       = 10000
	maxSinglePut   = 5 << 30
	maxKeyLen      = 1024
	maxConcurrency = 16
)

// settings is a validated configuration with its defaults applied.
type settings struct {
	Config
	checksums bool
	inbound   *Inbound // nil without an inbound block
	caPEM     []byte
}

func defaultConfig() Config {
	return Config{
		Region:             defaultRegion,
		Key:                defaultKey,
		ContentType:        defaultContentType,
		PartSize:           defaultPartSize,
		MultipartThreshold: defaultMultipartThreshold,
		ConnectTimeout:     sdk.Duration(defaultConnectTimeout),
		ResponseTimeout:    sdk.Duration(defaultResponseTimeout),
		MaxAttempts:        defaultMaxAttempts,
		Limits: Limits{
			MaxBuffer:       defaultMaxBuffer,
			PartConcurrency: defaultPartConcurrency,
			MaxScan:         defaultMaxScan,
		},
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
	s := &settings{Config: cfg, checksums: cfg.Checksums == nil || *cfg.Checksums}

	if !errs.Has("endpoint") && cfg.Endpoint != "" {
		if err := checkEndpoint(cfg.Endpoint, cfg.PathStyle); err != nil {
			errs = errs.Add("endpoint", "%v", err)
		}
	}
	if !errs.Has("region") && !validRegion(cfg.Region) {
		errs = errs.Add("region", "%q is not a region name such as \"us-east-1\"", cfg.Region)
	}
	if !errs.Has("bucket") {
		if err := checkBucket(cfg.Bucket); err != nil {
			errs = errs.Add("bucket", "%v", err)
		}
	}
	if c := cfg.Credentials; c != nil {
		switch {
		case c.AccessKeyID == "" && !errs.Has("credentials.access_key_id"):
			errs = errs.Add("credentials.access_key_id", "is required with credentials (leave credentials out to use the AWS SDK's default chain)")
		case c.SecretAccessKey == "" && !errs.Has("credentials.secret_access_key"):
			errs = errs.Add("credentials.secret_access_key", "is required with credentials.access_key_id")
		}
	}
	if cfg.TLS.CAFile != "" && !errs.Has("tls.ca_file") {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		switch {
		case err != nil:
			errs = errs.Add("tls.ca_file", "cannot be read: %v", err)
		case !x509.NewCertPool().AppendCertsFromPEM(pem):
			errs = errs.Add("tls.ca_file", "%s holds no PEM certificate", cfg.TLS.CAFile)
		default:
			s.caPEM = pem
		}
		if strings.HasPrefix(cfg.Endpoint, "http://") && !errs.Has("tls.ca_file") {
			errs = errs.Add("tls.ca_file", "the endpoint is plain http://, so no certificate is verified")
		}
	}
	if !errs.Has("key") {
		if err := checkKeyTemplate(cfg.Key); err != nil {
			errs = errs.Add("key", "%v", err)
		}
	}
	if !errs.Has("content_type") && (cfg.ContentType == "" || !printableASCII(cfg.ContentType)) {
		errs = errs.Add("content_type", "must be a media type such as %q", defaultContentType)
	}
	if !errs.Has("part_size") && (cfg.PartSize < minPartSize || cfg.PartSize > maxPartSize) {
		errs = errs.Add("part_size", "must be between 5MiB and 5GiB (S3's limits for a part), not %v", cfg.PartSize)
	}
	if !errs.Has("multipart_threshold") && (cfg.MultipartThreshold < 1 || cfg.MultipartThreshold > maxSinglePut) {
		errs = errs.Add("multipart_threshold", "must be between 1B and 5GiB (the most one PutObject takes), not %v", cfg.MultipartThreshold)
	}
	for _, d := range []struct {
		key string
		v   sdk.Duration
	}{{"connect_timeout", cfg.ConnectTimeout}, {"response_timeout", cfg.ResponseTimeout}} {
		if d.v <= 0 && !errs.Has(d.key) {
			errs = errs.Add(d.key, `must be positive, e.g. "5s"`)
		}
	}
	if !errs.Has("max_attempts") && (cfg.MaxAttempts < 1 || cfg.MaxAttempts > 10) {
		errs = errs.Add("max_attempts", "must be between 1 and 10 (the node retries too), not %d", cfg.MaxAttempts)
	}
	errs = s.checkLimits(errs)
	if cfg.Inbound != nil {
		errs = s.checkInbound(errs)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *settings) checkLimits(errs plugins.ConfigErrors) plugins.ConfigErrors {
	l := s.Limits
	if !errs.Has("limits.part_concurrency") && (l.PartConcurrency < 1 || l.PartConcurrency > maxConcurrency) {
		errs = errs.Add("limits.part_concurrency", "must be between 1 and %d, not %d", maxConcurrency, l.PartConcurrency)
	}
	if !errs.Has("limits.max_scan") && (l.MaxScan < 1 || l.MaxScan > 1_000_000) {
		errs = errs.Add("limits.max_scan", "must be between 1 and 1000000, not %d", l.MaxScan)
	}
	if errs.Has("limits.max_buffer") || errs.Has("part_size") || errs.Has("multipart_threshold") || errs.Has("limits.part_concurrency") {
		return errs
	}
	// One delivery must be able to make progress alone: a whole
	// single-request payload, or a part being filled while the others of
	// its upload are in flight.
	need := max(s.MultipartThreshold, s.PartSize*ByteSize(l.PartConcurrency+1))
	if l.MaxBuffer < need {
		errs = errs.Add("limits.max_buffer", "must be at least %v: multipart_threshold (%v), and part_size × (part_concurrency + 1) (%v)",
			need, s.MultipartThreshold, s.PartSize*ByteSize(l.PartConcurrency+1))
	}
	return errs
}

func (s *settings) checkInbound(errs plugins.ConfigErrors) plugins.ConfigErrors {
	in := *s.Config.Inbound
	if in.Prefix == "" {
		in.Prefix = defaultInboundPrefix
	}
	if in.RejectedPrefix == "" {
		in.RejectedPrefix = defaultRejectedPrefix
	}
	if in.PollInterval == 0 {
		in.PollInterval = sdk.Duration(defaultPollInterval)
	}
	if in.Lease == 0 {
		in.Lease = sdk.Duration(defaultLease)
	}
	if in.NackDelay == 0 {
		in.NackDelay = sdk.Duration(defaultNackDelay)
	}
	for _, p := range []struct{ key, v string }{{"inbound.prefix", in.Prefix}, {"inbound.rejected_prefix", in.RejectedPrefix}} {
		if errs.Has(p.key) {
			continue
		}
		if err := checkPrefix(p.v); err != nil {
			errs = errs.Add(p.key, "%v", err)
		}
	}
	if strings.HasPrefix(in.RejectedPrefix, in.Prefix) || strings.HasPrefix(in.Prefix, in.RejectedPrefix) {
		errs = errs.Add("inbound.rejected_prefix", "%q and inbound.prefix %q must not contain one another, or rejected objects would be fetched again", in.RejectedPrefix, in.Prefix)
	}
	if !errs.Has("key") && !errs.Has("inbound.prefix") {
		if sample := expandKey(s.Key, sampleMeta); strings.HasPrefix(sample, in.Prefix) {
			errs = errs.Add("key", "%q makes keys under inbound.prefix %q (e.g. %q): the adapter would fetch its own deliveries", s.Key, in.Prefix, sample)
		}
	}
	if in.DefaultDestination != "" && !errs.Has("inbound.default_destination") {
		if err := sdk.CheckEID(in.DefaultDestination); err != nil {
			errs = errs.Add("inbound.default_destination", "is not a usable endpoint ID: %v", err)
		}
	}
	if in.Lease < sdk.Duration(time.Second) && !errs.Has("inbound.lease") {
		errs = errs.Add("inbound.lease", "must be at least 1s, or a slow node would be offered the same object twice")
	}
	if in.PollInterval < sdk.Duration(10*time.Millisecond) && !errs.Has("inbound.poll_interval") {
		errs = errs.Add("inbound.poll_interval", "must be at least 10ms: every poll is a LIST request")
	}
	s.inbound = &in
	return errs
}

func checkEndpoint(e string, pathStyle bool) error {
	u, err := url.Parse(e)
	if err != nil {
		return fmt.Errorf("is not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("must be an http:// or https:// URL, not %q", e)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%q names no host", e)
	}
	if u.User != nil {
		return errors.New("must not carry credentials; use credentials.access_key_id and credentials.secret_access_key")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: no query or fragment, please", e)
	}
	if net.ParseIP(u.Hostname()) != nil && !pathStyle {
		return fmt.Errorf("%q is an IP address, which cannot carry the bucket as a subdomain: set path_style: true", e)
	}
	return nil
}

func validRegion(r string) bool {
	if r == "" || len(r) > 64 {
		return false
	}
	for _, c := range r {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkBucket applies S3's bucket naming rules, relaxed as far as
// S3-compatible servers go (upper case and '_' are allowed).
func checkBucket(b string) error {
	if b == "" {
		return errors.New(`is required, e.g. "mulegate"`)
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("%q: a bucket name is 3 to 63 characters long", b)
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
	for i := 0; i < len(b); i++ {
		if c := b[i]; !alnum(c) && c != '.' && c != '-' && c != '_' {
			return fmt.Errorf("%q: a bucket name holds letters, digits, '.', '-' and '_' only", b)
		}
	}
	if !alnum(b[0]) || !alnum(b[len(b)-1]) {
		return fmt.Errorf("%q: a bucket name starts and ends with a letter or a digit", b)
	}
	return nil
}

// checkPrefix checks an inbound or rejected prefix: a key prefix of
// whole segments, ending in '/'.
func checkPrefix(p string) error {
	if !strings.HasSuffix(p, "/") {
		return fmt.Errorf("%q must end with '/'", p)
	}
	if err := checkKey(strings.TrimSuffix(p, "/")); err != nil {
		return err
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ByteSize is a size in bytes, written in configuration as a number of
// bytes or a string such as "8MiB", "16MB" or "512KiB".
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// ParseByteSize parses "8MiB", "16 MB", "1024" and the like.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimRightFunc(n, unicode.IsSpace), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || (n > 0 && mult > (1<<63-1)/n) {
		return 0, fmt.Errorf(`must be a size such as "8MiB", "16MB" or a number of bytes, not %q`, s)
	}
	return ByteSize(n * mult), nil
}

func (b *ByteSize) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	var n int64
	if err := json.Unmarshal(data, &n); err == nil {
		if n < 0 {
			return fmt.Errorf("must not be negative, not %d", n)
		}
		*b = ByteSize(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf(`must be a size such as "8MiB" or a number of bytes, not %s`, data)
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

func (b ByteSize) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

func (b ByteSize) String() string {
	v := int64(b)
	for i := 3; i >= 0; i-- { // TiB down to KiB: the largest that divides
		if u := sizeUnits[i]; v >= u.mult && v%u.mult == 0 {
			return strconv.FormatInt(v/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(v, 10) + "B"
}

// newClient builds the S3 client and the HTTP transport under it. It does
// not contact the server: a server that is down is Check's business.
func (s *settings) newClient(ctx context.Context) (*s3.Client, *http.Transport, error) {
	// A BuildableClient, so that the SDK can apply a CA bundle to it
	// (tls.ca_file, or else $AWS_CA_BUNDLE); its transport is then taken
	// out, to keep a handle on its connections.
	bc := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = time.Duration(s.ConnectTimeout)
			d.KeepAlive = 30 * time.Second
		}).
		WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConns = 256
			tr.MaxIdleConnsPerHost = 128 // the node keeps up to max_in_flight deliveries going
			tr.MaxConnsPerHost = 0
			tr.TLSHandshakeTimeout = time.Duration(s.ConnectTimeout)
			tr.ResponseHeaderTimeout = time.Duration(s.ResponseTimeout)
			tr.ExpectContinueTimeout = time.Second
		})
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(s.Region),
		awsconfig.WithHTTPClient(bc),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = s.MaxAttempts
				o.MaxBackoff = 2 * time.Second
				// The node backs off and retries whole deliveries; a
				// client-side retry quota would only turn a brief outage
				// into errors of its own.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if s.caPEM != nil {
		opts = append(opts, awsconfig.WithCustomCABundle(bytes.NewReader(s.caPEM)))
	}
	if c := s.Credentials; c != nil {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	if s.checksums {
		opts = append(opts,
			awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenSupported),
			awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenSupported))
	} else {
		opts = append(opts,
			awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
			awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, nil, plugins.ConfigErrors{{Key: "credentials", Message: fmt.Sprintf("the AWS SDK's default configuration cannot be loaded: %v", err)}}
	}
	var tr *http.Transport
	if b, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		tr = b.GetTransport()
	} else {
		tr = bc.GetTransport()
	}
	awsCfg.HTTPClient = &http.Client{
		Transport: tr,
		// S3 answers a wrong region with a redirect; the SDK reads it as
		// an error, and so must the client.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if s.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.Endpoint)
		}
		o.UsePathStyle = s.PathStyle
		// Objects read back through GetObject without asking for a
		// checksum: nothing to validate, nothing to warn about.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return client, tr, nil
}
