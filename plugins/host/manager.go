// Package host is the node's side of the adapter contract: it launches
// adapters as child processes (built-ins from the node's own executable,
// external ones from the plugin directory with a pinned SHA-256), speaks
// go-plugin's handshake with them over mutually authenticated TLS, polls
// their Check, restarts them with backoff when they die, and makes sure
// none outlives the node.
//
// The node owns one Manager. Manager.Adapter returns a plugins.Adapter that
// stays valid across restarts: while the adapter's process is down its calls
// fail at once with an error wrapping plugins.ErrUnavailable (Deliver answers
// Retry), so a delivery queue needs no special case for crashes.
package host

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
)

// Spec is one adapter the node runs, from the node's configuration.
type Spec struct {
	// Name identifies this adapter instance in routes, logs and status: a
	// lower-case letter or digit, then letters, digits, '-' or '_' (at most
	// 64). Several instances may run one adapter type under different names.
	Name string
	// Builtin names an adapter compiled into the node ("dir"); the node runs
	// it as `<own executable> adapter <Builtin>`. Exactly one of Builtin and
	// Path is set.
	Builtin string
	// Path is an external adapter's executable, relative to
	// Options.PluginDir.
	Path string
	// SHA256 is the hex SHA-256 of the executable at Path. Required with
	// Path: the node refuses to run an executable that does not match.
	SHA256 string
	// Config is the adapter's own configuration block, a JSON object that
	// the adapter alone validates. Nil means {}.
	Config json.RawMessage
}

// Backoff is the restart delay policy: the n-th consecutive restart waits
// about Initial·2ⁿ, never more than Max, jittered so that adapters that
// crashed together do not return together.
type Backoff struct {
	Initial, Max time.Duration
}

// Options configure a Manager. Zero values take the defaults shown.
type Options struct {
	// Log receives the manager's events and the adapters' own log lines,
	// each with an "adapter" field. Default: no logging.
	Log *zap.Logger
	// PluginDir holds external adapters' executables.
	PluginDir string
	// Self is the executable built-in adapters run from. Default:
	// /proc/self/exe, which is this very binary even after a package
	// upgrade replaced the file, so a node never runs built-ins from a
	// different build than itself.
	Self string
	// CheckInterval is how often each adapter's Check is polled. Default 15s.
	CheckInterval time.Duration
	// CheckTimeout bounds one Check. Default 5s.
	CheckTimeout time.Duration
	// StartTimeout bounds the handshake, Describe and Configure of one
	// launch. Default 20s.
	StartTimeout time.Duration
	// Backoff is the restart policy. Default 500ms doubling up to 1m.
	Backoff Backoff
	// OnChange, if set, is called with an adapter's new status whenever it
	// starts, stops, crashes, or its reachability changes. It runs on the
	// adapter's supervising goroutine and must not block.
	OnChange func(Status)

	// These turn off one of the three guards against orphaned adapters
	// (the kernel's parent-death signal, the SDK's lifeline watch, the
	// SDK's parent PID watch), so that tests can prove each works alone.
	noPdeathsig, noLifeline, noHostPID bool
}

// Status is an adapter's state, for the node's status API and the CLI.
type Status struct {
	// Name is the instance name; Source is "builtin:<type>" or the path.
	Name, Source string
	// Type and Version are what the adapter's Describe said.
	Type, Version string
	// Deliver and Fetch are the adapter's capabilities.
	Deliver, Fetch bool
	// Running is true while the adapter's process is up and configured;
	// PID is its process ID then.
	Running bool
	PID     int
	// Since is when the current process started (zero when not running).
	Since time.Time
	// Reachable is the answer of the last Check; LastCheck is when it came.
	Reachable bool
	LastCheck time.Time
	// LastError is the most recent failure of any kind (crash, failed
	// launch, failed Check), and LastErrorAt when it happened. It is kept
	// after recovery, for the operator to see.
	LastError   string
	LastErrorAt time.Time
	// Restarts counts launches after the first, successful or not.
	Restarts int
}

// Manager runs the node's adapters. It is safe for concurrent use.
type Manager struct {
	opts Options
	log  *zap.Logger

	mu       sync.Mutex
	adapters map[string]*instance
	closed   bool
}

// New returns a Manager. It starts nothing until Start.
func New(opts Options) (*Manager, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Self == "" {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			opts.Self = "/proc/self/exe"
		} else {
			self, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("finding the node's own executable to run built-in adapters from: %w", err)
			}
			opts.Self = self
		}
	}
	if opts.PluginDir != "" {
		abs, err := filepath.Abs(opts.PluginDir)
		if err != nil {
			return nil, fmt.Errorf("plugin directory %q: %w", opts.PluginDir, err)
		}
		opts.PluginDir = abs
	}
	setDefault(&opts.CheckInterval, 15*time.Second)
	setDefault(&opts.CheckTimeout, 5*time.Second)
	setDefault(&opts.StartTimeout, 20*time.Second)
	setDefault(&opts.Backoff.Initial, 500*time.Millisecond)
	setDefault(&opts.Backoff.Max, time.Minute)
	if opts.Backoff.Max < opts.Backoff.Initial {
		opts.Backoff.Max = opts.Backoff.Initial
	}
	return &Manager{opts: opts, log: opts.Log, adapters: map[string]*instance{}}, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Start launches the adapter spec describes, configures it, and keeps it
// running until Stop or Close. It returns once the adapter is up and has
// accepted its configuration, or with the reason it could not be: a
// checksum mismatch, configuration errors (find them with errors.As and
// plugins.ConfigErrors), output on stdout before the handshake, a crash. A
// failed Start leaves nothing running.
func (m *Manager) Start(ctx context.Context, spec Spec) error {
	if err := m.validate(&spec); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("adapter %q: the adapter manager is closed", spec.Name)
	}
	if _, dup := m.adapters[spec.Name]; dup {
		m.mu.Unlock()
		return fmt.Errorf("adapter %q: already running; names must be unique", spec.Name)
	}
	in := newInstance(m, spec)
	m.adapters[spec.Name] = in
	m.mu.Unlock()

	if err := in.start(ctx); err != nil {
		m.mu.Lock()
		delete(m.adapters, spec.Name)
		m.mu.Unlock()
		return err
	}
	return nil
}

func (m *Manager) validate(spec *Spec) error {
	if !validName.MatchString(spec.Name) {
		return fmt.Errorf("adapter name %q: use a lower-case letter or digit, then letters, digits, '-' or '_' (at most 64)", spec.Name)
	}
	switch {
	case spec.Builtin != "" && spec.Path != "":
		return fmt.Errorf("adapter %q: set either builtin or path, not both", spec.Name)
	case spec.Builtin == "" && spec.Path == "":
		return fmt.Errorf("adapter %q: set builtin (an adapter compiled into mulegate) or path (an executable in the plugin directory)", spec.Name)
	case spec.Builtin != "":
		if !validName.MatchString(spec.Builtin) {
			return fmt.Errorf("adapter %q: built-in name %q is not a valid adapter name", spec.Name, spec.Builtin)
		}
		if spec.SHA256 != "" {
			return fmt.Errorf("adapter %q: sha256 applies to external adapters (path), not built-ins, which are part of the node's own binary", spec.Name)
		}
	default:
		if m.opts.PluginDir == "" {
			return fmt.Errorf("adapter %q: path %q needs a plugin directory; set plugin_dir", spec.Name, spec.Path)
		}
		if !filepath.IsLocal(spec.Path) {
			return fmt.Errorf("adapter %q: path %q must name a file inside the plugin directory %s", spec.Name, spec.Path, m.opts.PluginDir)
		}
		full := filepath.Join(m.opts.PluginDir, spec.Path)
		if spec.SHA256 == "" {
			hint := ""
			if sum, err := fileSHA256(full); err == nil {
				hint = fmt.Sprintf(" (the file there now has %s; check that it is the one you mean before pinning it)", sum)
			}
			return fmt.Errorf("adapter %q: sha256 is required for an external adapter; compute it with `sha256sum %s`%s", spec.Name, full, hint)
		}
		if _, err := decodeSHA256(spec.SHA256); err != nil {
			return fmt.Errorf("adapter %q: sha256: %w", spec.Name, err)
		}
	}
	if len(spec.Config) == 0 {
		spec.Config = json.RawMessage("{}")
	}
	if !json.Valid(spec.Config) {
		return fmt.Errorf("adapter %q: config is not valid JSON", spec.Name)
	}
	spec.Config = slices.Clone(spec.Config)
	return nil
}

// Adapter returns the adapter with this name. The value stays valid across
// restarts of its process; while the process is down its calls fail with an
// error wrapping plugins.ErrUnavailable, and Deliver answers Retry.
func (m *Manager) Adapter(name string) (plugins.Adapter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	in, ok := m.adapters[name]
	if !ok {
		return nil, fmt.Errorf("no adapter named %q is running; adapters: %v", name, m.namesLocked())
	}
	return in, nil
}

// Status returns one adapter's state.
func (m *Manager) Status(name string) (Status, bool) {
	m.mu.Lock()
	in, ok := m.adapters[name]
	m.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	return in.status(), true
}

// Statuses returns every adapter's state, sorted by name.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	ins := make([]*instance, 0, len(m.adapters))
	for _, in := range m.adapters {
		ins = append(ins, in)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(ins))
	for _, in := range ins {
		out = append(out, in.status())
	}
	slices.SortFunc(out, func(a, b Status) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Stop stops one adapter and kills its process; its Adapter value then
// answers ErrUnavailable for good.
func (m *Manager) Stop(name string) error {
	m.mu.Lock()
	in, ok := m.adapters[name]
	delete(m.adapters, name)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("no adapter named %q is running", name)
	}
	in.shutdown()
	return nil
}

// Close stops every adapter and kills their processes. It waits for them
// (each gets two seconds to exit cleanly) and is safe to call twice.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ins := make([]*instance, 0, len(m.adapters))
	for _, in := range m.adapters {
		ins = append(ins, in)
	}
	clear(m.adapters)
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Go(in.shutdown)
	}
	wg.Wait()
	return nil
}

func (m *Manager) namesLocked() []string {
	names := make([]string, 0, len(m.adapters))
	for n := range m.adapters {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
