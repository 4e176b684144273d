// Package dir is the built-in "dir" adapter: it delivers bundles as files
// into a directory and turns files dropped into an inbox directory into
// inbound messages. With it a node demonstrates a gateway with no cloud
// account, and adapter authors have a complete example to copy.
//
// Configuration (every key is optional, but out or inbox must be set):
//
//	out:                 absolute directory bundles are delivered into
//	inbox:               absolute directory inbound files are taken from
//	default_destination: EID for files placed directly in the inbox
//	sidecar:             write metadata beside each delivery (default true)
//	min_age:             leave inbox files alone until unchanged this long (default "1s")
//	nack_delay:          after a Nack, offer the file again after this (default "30s")
//	lease:               offer a fetched but unacknowledged file again after this (default "10m")
//	lifetime:            bundle lifetime asked for inbound messages (default: the node's)
//
// Delivery. A bundle lands in out/<name>, written to a temporary file,
// fsynced, renamed into place and the directory fsynced, so a reader never
// sees half a file and a crash never leaves one. <name> is the route's
// "name" option (a relative path; each segment escaped, so it cannot leave
// out/) or else the escaped bundle ID; either way delivering the same bundle
// again overwrites the same file. The metadata goes to
// out/.meta/<name>.json first, so it is there when the payload appears.
// Temporary files are hidden (".mulegate-tmp-…"); ones left by a crash are
// removed when the adapter next starts.
//
// Inbound. See InboxDir for how a file's place in the inbox names its
// destination. Files and directories whose names start with '.' are
// ignored: write a file as ".name" and rename it when complete, or copy it
// in and rely on min_age. A fetched file stays until the node acknowledges
// it, and only then is it removed. A file the node refuses for good
// (Reject) moves to inbox/rejected/, keeping its path, with the node's
// reason in "<name>.reason" beside it; that directory is never scanned. A
// file larger than the node takes is left where it is, with a warning.
package dir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// Version is the dir adapter's version, reported by Describe.
const Version = "1.0.0"

// Config is the dir adapter's configuration block.
type Config struct {
	Out                string       `json:"out"`
	Inbox              string       `json:"inbox"`
	DefaultDestination string       `json:"default_destination"`
	Sidecar            *bool        `json:"sidecar"`
	MinAge             sdk.Duration `json:"min_age"`
	NackDelay          sdk.Duration `json:"nack_delay"`
	Lease              sdk.Duration `json:"lease"`
	Lifetime           sdk.Duration `json:"lifetime"`
}

// Adapter is the dir adapter. The zero value is not usable; call New.
type Adapter struct {
	log *zap.Logger
	cur sdk.Current[*state]

	mu     sync.Mutex
	leases map[string]time.Time // inbox path → not offered again before
	warned map[string]bool      // inbox paths already logged as unusable
}

// state is one configuration in force, with its directories open.
type state struct {
	cfg   Config
	out   *os.Root // nil without out
	inbox *os.Root // nil without inbox
}

var (
	_ plugins.Adapter  = (*Adapter)(nil)
	_ plugins.Rejecter = (*Adapter)(nil)
)

// New returns an unconfigured dir adapter.
func New(log *zap.Logger) *Adapter {
	if log == nil {
		log = zap.NewNop()
	}
	return &Adapter{log: log, leases: map[string]time.Time{}, warned: map[string]bool{}}
}

func (a *Adapter) Describe(context.Context) (plugins.Description, error) {
	return plugins.Description{Name: "dir", Version: Version, Deliver: true, Fetch: true}, nil
}

func (a *Adapter) Configure(_ context.Context, raw json.RawMessage) error {
	cfg := Config{
		MinAge:    sdk.Duration(time.Second),
		NackDelay: sdk.Duration(30 * time.Second),
		Lease:     sdk.Duration(10 * time.Minute),
	}
	// Decoding problems and validation problems are reported together, so
	// an operator fixes the block in one go; a key that failed to decode is
	// not validated again.
	errs, ok := sdk.DecodeConfigErrors(raw, &cfg)
	if !ok {
		return errs
	}
	if cfg.Out == "" && cfg.Inbox == "" && !errs.Has("out") && !errs.Has("inbox") {
		errs = errs.Add("out", "set out (where bundles are delivered), inbox (where inbound files are taken from), or both")
	}
	for _, d := range []struct{ key, path string }{{"out", cfg.Out}, {"inbox", cfg.Inbox}} {
		if d.path != "" && !filepath.IsAbs(d.path) && !errs.Has(d.key) {
			errs = errs.Add(d.key, "must be an absolute path, not %q", d.path)
		}
	}
	if cfg.Out != "" && cfg.Out == cfg.Inbox {
		errs = errs.Add("inbox", "must differ from out, or the adapter would fetch its own deliveries")
	}
	if cfg.DefaultDestination != "" && !errs.Has("default_destination") {
		if cfg.Inbox == "" {
			errs = errs.Add("default_destination", "only applies with inbox")
		} else if _, err := InboxDir(cfg.DefaultDestination); err != nil {
			errs = errs.Add("default_destination", "is not a usable endpoint ID: %v", err)
		}
	}
	if cfg.Lease > 0 && time.Duration(cfg.Lease) < time.Second && !errs.Has("lease") {
		errs = errs.Add("lease", "must be at least 1s, or a slow node would be offered the same file twice")
	}
	if len(errs) > 0 {
		return errs
	}

	st := &state{cfg: cfg}
	open := func(key, path string) *os.Root {
		if err := os.MkdirAll(path, 0o750); err != nil {
			errs = errs.Add(key, "cannot create directory: %v", err)
			return nil
		}
		r, err := os.OpenRoot(path)
		if err != nil {
			errs = errs.Add(key, "cannot open directory: %v", err)
			return nil
		}
		return r
	}
	if cfg.Out != "" {
		st.out = open("out", cfg.Out)
	}
	if cfg.Inbox != "" {
		st.inbox = open("inbox", cfg.Inbox)
	}
	if len(errs) > 0 {
		_ = st.Close()
		return errs
	}
	if st.out != nil {
		a.removeStaleTemps(st.out)
	}

	a.cur.Swap(st)
	a.log.Info("configured", zap.String("out", cfg.Out), zap.String("inbox", cfg.Inbox))
	return nil
}

// Check reports the directories unusable when they are gone or, for out,
// not writable: the nearest a directory comes to "unreachable".
func (a *Adapter) Check(context.Context) error {
	st, err := a.cur.Get()
	if err != nil {
		return err
	}
	if st.out != nil {
		if err := usableDir(st.cfg.Out, true); err != nil {
			return fmt.Errorf("%w: out: %v", plugins.ErrUnreachable, err)
		}
	}
	if st.inbox != nil {
		if err := usableDir(st.cfg.Inbox, true); err != nil {
			return fmt.Errorf("%w: inbox: %v", plugins.ErrUnreachable, err)
		}
	}
	return nil
}

func usableDir(path string, writable bool) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	if writable {
		const wOK = 2
		if err := syscall.Access(path, wOK); err != nil {
			return fmt.Errorf("%s is not writable: %w", path, err)
		}
	}
	return nil
}

// Close releases the directories.
func (a *Adapter) Close() error { return a.cur.Close() }

// Close releases the state's directories.
func (st *state) Close() error {
	if st.out != nil {
		_ = st.out.Close()
	}
	if st.inbox != nil {
		_ = st.inbox.Close()
	}
	return nil
}

const tempPrefix = ".mulegate-tmp-"

// removeStaleTemps deletes temporary files left by a process that died in
// the middle of a delivery. Each name carries its writer's PID; files of a
// live process are left alone.
func (a *Adapter) removeStaleTemps(root *os.Root) {
	_ = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		pidText, _, _ := strings.Cut(strings.TrimPrefix(d.Name(), tempPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err == nil && pid > 0 {
			if pid == os.Getpid() {
				return nil // a delivery in flight across a reconfiguration
			}
			if err := syscall.Kill(pid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
				return nil
			}
		}
		if err := root.Remove(p); err == nil {
			a.log.Info("removed a temporary file left by an interrupted delivery", zap.String("file", p))
		}
		return nil
	})
}
