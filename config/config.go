// Package config is mulegate's configuration: the schema, the embedded
// defaults, loading (defaults, then a YAML file, then MULEGATE_*
// environment variables, then command-line flags, each overriding the one
// before), and validation whose every error names the offending key.
package config

import (
	_ "embed"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/policy/acl"
	"github.com/mulegate/mulegate/policy/bpsec"
	"github.com/mulegate/mulegate/policy/ratelimit"
)

// DefaultQUICPort is the IANA-registered DTN port, used for QUIC.
const DefaultQUICPort = 4556

// DefaultAPIPort is where the local HTTP API listens on loopback.
const DefaultAPIPort = 4557

//go:embed defaults.yaml
var defaultsYAML []byte

// DefaultsYAML returns the embedded defaults, as `mulegate config default`
// prints them.
func DefaultsYAML() []byte { return append([]byte(nil), defaultsYAML...) }

// Config is a node's whole configuration. Field tags give the YAML keys;
// the environment variable for a key is MULEGATE_ followed by the key path
// in upper case with dots as underscores (quic.listen → MULEGATE_QUIC_LISTEN).
type Config struct {
	// Node is this node's ID, e.g. dtn://alice/. Empty means
	// dtn://<hostname>/.
	Node string `yaml:"node"`
	// DataDir holds the store, the identity and the API token. Empty means
	// $XDG_DATA_HOME/mulegate or ~/.local/share/mulegate.
	DataDir   string    `yaml:"data_dir"`
	Log       Log       `yaml:"log"`
	QUIC      QUIC      `yaml:"quic"`
	API       API       `yaml:"api"`
	Discovery Discovery `yaml:"discovery"`
	Peers     []Peer    `yaml:"peers"`
	Limits    Limits    `yaml:"limits"`
	Store     Store     `yaml:"store"`
	Routing   Routing   `yaml:"routing"`
	Endpoints []string  `yaml:"endpoints"`
	// PluginDir is where external adapter executables live.
	PluginDir string `yaml:"plugin_dir"`
	// AdapterCheckInterval is how often each adapter's Check (is the
	// service reachable?) is polled.
	AdapterCheckInterval time.Duration `yaml:"adapter_check_interval"`
	Adapters             []Adapter     `yaml:"adapters"`
	Routes               []Route       `yaml:"routes"`
	// ACL decides which peers may hand this node bundles, whose bundles it
	// carries, and to whom it hands them (policy/acl).
	ACL acl.Config `yaml:"acl"`
	// RateLimit gives each principal its own budget (policy/ratelimit).
	RateLimit ratelimit.Config `yaml:"ratelimit"`
	// Signatures says which bundles must be signed, and whether this node
	// signs what it originates (policy/bpsec).
	Signatures Signatures `yaml:"signatures"`
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // auto (console on a terminal, else JSON), json, console
}

// QUIC configures the QUIC convergence layer.
type QUIC struct {
	// Listen is host:port; "" disables listening (a mule that only dials).
	Listen             string        `yaml:"listen"`
	KeepAlive          time.Duration `yaml:"keepalive"`
	IdleTimeout        time.Duration `yaml:"idle_timeout"`
	MaxIncomingStreams int64         `yaml:"max_incoming_streams"`
	HandshakeTimeout   time.Duration `yaml:"handshake_timeout"`
	MaxConcurrentSends int           `yaml:"max_concurrent_sends"`
	// SendStallTimeout is how long a send waits for a peer that takes no
	// more of a bundle (its store stuck, say, with the connection alive)
	// before giving up on that bundle for now; a slow but steady peer is
	// not stalled.
	SendStallTimeout time.Duration `yaml:"send_stall_timeout"`
}

// API configures the local HTTP API.
type API struct {
	// Listen is host:port, or unix:/path/to/socket.
	Listen string `yaml:"listen"`
}

// Discovery configures LAN discovery by UDP multicast beacons.
type Discovery struct {
	Enabled  bool          `yaml:"enabled"`
	Group    string        `yaml:"group"`
	Interval time.Duration `yaml:"interval"`
}

// Peer is a static peer: its address and the node ID its certificate must
// carry.
type Peer struct {
	Node    string `yaml:"node"`
	Address string `yaml:"address"`
}

// Limits protect the store. They are checked at the edge, from the
// bundle's header, before its payload is read.
type Limits struct {
	MaxBundleSize ByteSize      `yaml:"max_bundle_size"`
	MaxLifetime   time.Duration `yaml:"max_lifetime"`
	MaxHops       uint64        `yaml:"max_hops"`
	MaxClockSkew  time.Duration `yaml:"max_clock_skew"`
}

// Store configures the durable bundle store.
type Store struct {
	MaxBytes      ByteSize      `yaml:"max_bytes"`
	MaxBundles    int64         `yaml:"max_bundles"`
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// Routing chooses and tunes the routing strategy.
type Routing struct {
	// Strategy is "epidemic" or "spray-and-wait".
	Strategy string `yaml:"strategy"`
	// PeerLimit is L: with more peers than L, ring selection picks L of
	// them. 0 means no limit.
	PeerLimit int `yaml:"peer_limit"`
	// SprayCopies is the number of copies for spray-and-wait.
	SprayCopies     int           `yaml:"spray_copies"`
	SummaryInterval time.Duration `yaml:"summary_interval"`
	// DefaultHopLimit is the hop limit given to bundles this node creates.
	DefaultHopLimit uint64        `yaml:"default_hop_limit"`
	RetryMin        time.Duration `yaml:"retry_min"`
	RetryMax        time.Duration `yaml:"retry_max"`
}

// DefaultMaxInFlight is an adapter's max_in_flight when its configuration
// does not say: enough deliveries in flight to hide a cloud service's
// round trip, few enough not to swamp a small one.
const DefaultMaxInFlight = 16

// Adapter is one delivery adapter. Exactly one of Builtin and Path is set.
type Adapter struct {
	Name string `yaml:"name"`
	// Builtin names an adapter compiled into mulegate (dir, nats, …).
	Builtin string `yaml:"builtin"`
	// Path is an executable in PluginDir (or absolute), pinned by SHA256.
	Path   string `yaml:"path"`
	SHA256 string `yaml:"sha256"`
	// Config is the adapter's own block, validated by the adapter.
	Config map[string]any `yaml:"config"`
	// MaxInFlight bounds concurrent deliveries to this adapter. Unset (0)
	// means DefaultMaxInFlight.
	MaxInFlight int `yaml:"max_in_flight"`
	// Fetch turns on the inbound fetch loop.
	Fetch bool `yaml:"fetch"`
	// InboundLifetime is the lifetime of bundles made from inbound
	// messages that do not say.
	InboundLifetime time.Duration `yaml:"inbound_lifetime"`
}

// Route sends bundles whose destination matches Match to Adapter, with
// Options expanded per bundle from templates such as {src_node}.
type Route struct {
	Match   string            `yaml:"match"`
	Adapter string            `yaml:"adapter"`
	Options map[string]string `yaml:"options"`
}

// Signatures configures BPSec bundle signatures.
type Signatures struct {
	// Sign makes this node sign the bundles it originates (API sends,
	// inbound adapter messages, status reports) with its identity key, so
	// that any node can verify them offline.
	Sign bool `yaml:"sign"`
	// RequireAll and RequireFor (destination patterns) name the bundles
	// this node refuses unless their source signed them validly.
	RequireAll bool     `yaml:"require_all"`
	RequireFor []string `yaml:"require_for"`
}

// Requirement is the signature requirement in policy/bpsec's terms.
func (s Signatures) Requirement() bpsec.RequireConfig {
	return bpsec.RequireConfig{RequireAll: s.RequireAll, RequireFor: s.RequireFor}
}

// ByteSize is a size in bytes, written as 1048576, "1MiB", "10 GB", …
type ByteSize uint64

// UnmarshalText parses sizes with optional B, KB, MB, GB, TB (powers of
// 1000) or KiB, MiB, GiB, TiB (powers of 1024) suffixes.
func (s *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText prints the size in the largest exact binary unit.
func (s ByteSize) MarshalText() ([]byte, error) {
	units := []string{"TiB", "GiB", "MiB", "KiB"}
	for i, u := range units {
		n := uint64(1) << (10 * (len(units) - i))
		if s != 0 && uint64(s)%n == 0 {
			return []byte(strconv.FormatUint(uint64(s)/n, 10) + u), nil
		}
	}
	return []byte(strconv.FormatUint(uint64(s), 10)), nil
}

// ParseByteSize parses a ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.TrimSpace(t[i:])
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: use a number of bytes, optionally with KB, MB, GB, KiB, MiB or GiB", s)
	}
	mult := map[string]uint64{
		"": 1, "B": 1,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown size unit %q: use KB, MB, GB, KiB, MiB or GiB", s, unit)
	}
	if n > (1<<64-1)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n * mult), nil
}

// Error is a configuration error that names its key.
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string { return e.Key + ": " + e.Msg }

// Errors is every problem found in a configuration.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// NodeID returns the parsed node ID.
func (c *Config) NodeID() (bundle.EID, error) {
	e, err := bundle.ParseEID(c.Node)
	if err != nil {
		return bundle.EID{}, err
	}
	return e.NodeID(), nil
}

// Validate checks the whole configuration and reports every problem, each
// naming its key.
func (c *Config) Validate() error {
	var errs Errors
	add := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if e, err := bundle.ParseEID(c.Node); err != nil {
		add("node", "%v", err)
	} else if !e.IsNodeID() && e.NodeID() != e {
		add("node", "%s is an endpoint, not a node ID; use %s", e, e.NodeID())
	} else if !e.IsSingleton() {
		add("node", "%s is a group; a node ID must name one node", e)
	}
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "json", "console":
	default:
		add("log.format", "%q: use auto, json or console", c.Log.Format)
	}
	if c.QUIC.Listen != "" {
		if _, _, err := net.SplitHostPort(c.QUIC.Listen); err != nil {
			add("quic.listen", "%q: want host:port, e.g. [::]:%d: %v", c.QUIC.Listen, DefaultQUICPort, err)
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			add(key, "must be a positive duration such as 10s")
		}
	}
	positive("quic.keepalive", c.QUIC.KeepAlive)
	positive("quic.idle_timeout", c.QUIC.IdleTimeout)
	positive("quic.handshake_timeout", c.QUIC.HandshakeTimeout)
	positive("quic.send_stall_timeout", c.QUIC.SendStallTimeout)
	if c.QUIC.KeepAlive >= c.QUIC.IdleTimeout && c.QUIC.KeepAlive > 0 {
		add("quic.keepalive", "%v must be shorter than quic.idle_timeout (%v)", c.QUIC.KeepAlive, c.QUIC.IdleTimeout)
	}
	if c.QUIC.MaxIncomingStreams <= 0 {
		add("quic.max_incoming_streams", "must be positive")
	}
	if c.QUIC.MaxConcurrentSends <= 0 {
		add("quic.max_concurrent_sends", "must be positive")
	}
	if c.API.Listen != "" && !strings.HasPrefix(c.API.Listen, "unix:") {
		if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
			add("api.listen", "%q: want host:port or unix:/path: %v", c.API.Listen, err)
		}
	}
	if c.Discovery.Enabled {
		if _, err := net.ResolveUDPAddr("udp", c.Discovery.Group); err != nil {
			add("discovery.group", "%q: want a multicast host:port: %v", c.Discovery.Group, err)
		} else if a, _ := net.ResolveUDPAddr("udp", c.Discovery.Group); !a.IP.IsMulticast() {
			add("discovery.group", "%s is not a multicast address", a.IP)
		}
		positive("discovery.interval", c.Discovery.Interval)
	}
	for i, p := range c.Peers {
		key := fmt.Sprintf("peers[%d]", i)
		if e, err := bundle.ParseEID(p.Node); err != nil {
			add(key+".node", "%v", err)
		} else if e.NodeID() != e {
			add(key+".node", "%s is not a node ID; use %s", e, e.NodeID())
		}
		if _, _, err := net.SplitHostPort(p.Address); err != nil {
			add(key+".address", "%q: want host:port: %v", p.Address, err)
		}
	}
	if c.Limits.MaxBundleSize == 0 {
		add("limits.max_bundle_size", "must be positive")
	}
	positive("limits.max_lifetime", c.Limits.MaxLifetime)
	if c.Limits.MaxHops == 0 {
		add("limits.max_hops", "must be positive")
	}
	if c.Limits.MaxClockSkew < 0 {
		add("limits.max_clock_skew", "must not be negative")
	}
	if c.Store.MaxBytes == 0 {
		add("store.max_bytes", "must be positive")
	}
	if c.Store.MaxBundles <= 0 {
		add("store.max_bundles", "must be positive")
	}
	positive("store.sweep_interval", c.Store.SweepInterval)
	switch c.Routing.Strategy {
	case "epidemic", "spray-and-wait":
	default:
		add("routing.strategy", "%q: use epidemic or spray-and-wait", c.Routing.Strategy)
	}
	if c.Routing.PeerLimit < 0 {
		add("routing.peer_limit", "must not be negative (0 means no limit)")
	}
	if c.Routing.Strategy == "spray-and-wait" && c.Routing.SprayCopies < 1 {
		add("routing.spray_copies", "must be at least 1")
	}
	positive("routing.summary_interval", c.Routing.SummaryInterval)
	positive("routing.retry_min", c.Routing.RetryMin)
	if c.Routing.RetryMax < c.Routing.RetryMin {
		add("routing.retry_max", "%v is less than routing.retry_min (%v)", c.Routing.RetryMax, c.Routing.RetryMin)
	}
	if c.Routing.DefaultHopLimit == 0 || c.Routing.DefaultHopLimit > c.Limits.MaxHops {
		add("routing.default_hop_limit", "must be between 1 and limits.max_hops (%d)", c.Limits.MaxHops)
	}
	for i, ep := range c.Endpoints {
		if err := validEndpoint(ep); err != nil {
			add(fmt.Sprintf("endpoints[%d]", i), "%v", err)
		}
	}
	if len(c.Adapters) > 0 {
		positive("adapter_check_interval", c.AdapterCheckInterval)
	}
	names := map[string]bool{}
	for i, a := range c.Adapters {
		key := fmt.Sprintf("adapters[%d]", i)
		switch {
		case a.Name == "":
			add(key+".name", "must not be empty")
		case names[a.Name]:
			add(key+".name", "%q is used by another adapter", a.Name)
		case strings.ContainsAny(a.Name, " /:"):
			add(key+".name", "%q: use letters, digits, - and _", a.Name)
		}
		names[a.Name] = true
		switch {
		case a.Builtin == "" && a.Path == "":
			add(key, "set builtin (e.g. dir) or path (an executable in plugin_dir)")
		case a.Builtin != "" && a.Path != "":
			add(key, "set builtin or path, not both")
		case a.Path != "" && len(a.SHA256) != 64:
			add(key+".sha256", "an external adapter must be pinned by its SHA-256 (64 hex characters; run sha256sum on it)")
		}
		if a.MaxInFlight < 0 {
			add(key+".max_in_flight", "must be positive (leave it out for %d)", DefaultMaxInFlight)
		}
		if a.InboundLifetime < 0 {
			add(key+".inbound_lifetime", "must not be negative (0 means 24h)")
		}
	}
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if err := ValidPattern(r.Match); err != nil {
			add(key+".match", "%v", err)
		}
		if !names[r.Adapter] {
			add(key+".adapter", "%q is not a configured adapter", r.Adapter)
		}
	}
	// The policy packages validate their own sections, naming the key.
	policyErr := func(err error) {
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				key, msg, ok := strings.Cut(line, ": ")
				if !ok {
					key, msg = "policy", line
				}
				add(key, "%s", msg)
			}
		}
	}
	_, err := acl.New(c.ACL)
	policyErr(err)
	_, err = ratelimit.New(c.RateLimit, nil)
	policyErr(err)
	_, err = bpsec.NewRequirement(c.Signatures.Requirement())
	policyErr(err)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func validEndpoint(ep string) error {
	e, err := bundle.ParseEID(ep)
	if err != nil {
		return err
	}
	if e.IsNone() {
		return fmt.Errorf("dtn:none cannot be registered")
	}
	return nil
}

// ValidPattern checks an endpoint pattern: an EID where "*" matches one
// path segment and "**" any rest, e.g. dtn://cloud/logs/**.
func ValidPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	if p == "**" {
		return nil
	}
	if !strings.HasPrefix(p, "dtn://") && !strings.HasPrefix(p, "ipn:") {
		return fmt.Errorf("%q: a pattern starts with dtn:// or ipn:", p)
	}
	if i := strings.Index(p, "**"); i >= 0 && i != len(p)-2 {
		return fmt.Errorf("%q: ** may only end a pattern", p)
	}
	return nil
}

// defaultNode derives dtn://<hostname>/.
func defaultNode() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	h = strings.ToLower(h)
	var b strings.Builder
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	return "dtn://" + b.String() + "/"
}

// DefaultDataDir is $XDG_DATA_HOME/mulegate, or ~/.local/share/mulegate.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "mulegate")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".mulegate"
	}
	return filepath.Join(home, ".local", "share", "mulegate")
}
