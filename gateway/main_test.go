package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/builtin"
	"github.com/mulegate/mulegate/plugins/dir"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// TestMain lets the test binary serve as the built-in adapters the nodes
// under test launch (`<test binary> adapter NAME`), so adapter tests run
// real plugin processes without building mulegate. Besides the real
// built-ins it serves two test adapters, "scripted" and
// "scripted-noreject" (see scripted).
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" {
		os.Exit(serveAdapter(os.Args[2]))
	}
	os.Exit(m.Run())
}

func serveAdapter(name string) int {
	log := sdk.NewLogger()
	var a plugins.Adapter
	switch name {
	case "scripted":
		a = newScripted(log)
	case "scripted-noreject":
		// Only the Adapter methods: Reject is not served, as by an
		// adapter built before it existed.
		a = struct{ plugins.Adapter }{newScripted(log)}
	default:
		mod, err := builtin.Lookup(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		a = mod.New(log)
	}
	if err := sdk.Serve(a, sdk.WithLogger(log)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// scriptControl is what a test writes to a scripted adapter's control
// file to steer it; the adapter reads the file on every call, so a test
// changes its behaviour while it runs. The zero value is the dir adapter.
type scriptControl struct {
	// Down: the service is gone. Check fails, and Deliver answers a plain
	// Retry, as an adapter whose client got "connection refused" does.
	Down bool `json:"down"`
	// Reject: Deliver refuses every bundle for good.
	Reject bool `json:"reject"`
	// RetryTimes: each bundle's first RetryTimes deliveries (counted by
	// this process) answer Retry, after RetryAfterMs (0: the node's
	// backoff).
	RetryTimes   int `json:"retry_times"`
	RetryAfterMs int `json:"retry_after_ms"`
	// DelayMs: each delivery takes at least this long, as a slow service.
	DelayMs int `json:"delay_ms"`
}

// scripted is the dir adapter with behaviour a test controls through a
// file (scriptControl), and a journal of what happened to it: one line per
// event, "<event> <unix nanoseconds> <argument>", appended with O_APPEND so
// that concurrent lines, and lines from successive processes, never mix.
// Events: attempt and delivered (argument: the bundle ID), check, nack
// (the receipt and the reason), max_in_flight (the most deliveries at once
// so far). Its two extra configuration keys, "control" and "journal", name
// the files; the rest goes to the dir adapter.
type scripted struct {
	*dir.Adapter

	mu               sync.Mutex
	control, journal string
	tries            map[string]int

	inFlight, maxInFlight atomic.Int64
}

func newScripted(log *zap.Logger) *scripted {
	return &scripted{Adapter: dir.New(log), tries: map[string]int{}}
}

func (s *scripted) Configure(ctx context.Context, raw json.RawMessage) error {
	var block map[string]any
	if err := json.Unmarshal(raw, &block); err != nil {
		return plugins.ConfigErrors{{Message: err.Error()}}
	}
	control, _ := block["control"].(string)
	journal, _ := block["journal"].(string)
	delete(block, "control")
	delete(block, "journal")
	rest, err := json.Marshal(block)
	if err != nil {
		return err
	}
	if err := s.Adapter.Configure(ctx, rest); err != nil {
		return err
	}
	s.mu.Lock()
	s.control, s.journal = control, journal
	s.mu.Unlock()
	return nil
}

func (s *scripted) script() scriptControl {
	s.mu.Lock()
	path := s.control
	s.mu.Unlock()
	var c scriptControl
	if data, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(data, &c)
	}
	return c
}

func (s *scripted) note(event, arg string) {
	s.mu.Lock()
	path := s.journal
	s.mu.Unlock()
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %d %s\n", event, time.Now().UnixNano(), arg)
}

func (s *scripted) Check(ctx context.Context) error {
	s.note("check", "")
	if s.script().Down {
		return fmt.Errorf("%w: the scripted service is down", plugins.ErrUnreachable)
	}
	return s.Adapter.Check(ctx)
}

func (s *scripted) Deliver(ctx context.Context, meta plugins.Meta, payload io.Reader) plugins.Result {
	now := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		top := s.maxInFlight.Load()
		if now <= top {
			break
		}
		if s.maxInFlight.CompareAndSwap(top, now) {
			s.note("max_in_flight", strconv.FormatInt(now, 10))
			break
		}
	}
	s.note("attempt", meta.BundleID)
	c := s.script()
	if c.DelayMs > 0 {
		t := time.NewTimer(time.Duration(c.DelayMs) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return plugins.RetryLater(0, ctx.Err().Error())
		case <-t.C:
		}
	}
	switch {
	case c.Down:
		return plugins.RetryLater(0, "dial tcp 127.0.0.1:4222: connection refused")
	case c.Reject:
		return plugins.Rejected("the scripted service refuses this bundle")
	}
	if c.RetryTimes > 0 {
		s.mu.Lock()
		s.tries[meta.BundleID]++
		n := s.tries[meta.BundleID]
		s.mu.Unlock()
		if n <= c.RetryTimes {
			return plugins.RetryLater(time.Duration(c.RetryAfterMs)*time.Millisecond, "the scripted service is busy")
		}
	}
	res := s.Adapter.Deliver(ctx, meta, payload)
	if res.Status == plugins.OK {
		s.note("delivered", meta.BundleID)
	}
	return res
}

func (s *scripted) Nack(ctx context.Context, receipt, reason string) error {
	s.note("nack", receipt+" "+reason)
	return s.Adapter.Nack(ctx, receipt, reason)
}

// script is a test's handle on a scripted adapter.
type script struct {
	t                testing.TB
	control, journal string
}

// withScripted gives a test node a scripted adapter called "files" (builtin
// name: scripted or scripted-noreject): bundles for dtn://NODE/outbox/**
// become files in out, files in inbox become bundles.
func withScripted(t testing.TB, c *config.Config, builtin string) (sc *script, out, inbox string) {
	t.Helper()
	out, inbox = withDirAdapter(t, c)
	sc = &script{t: t, control: filepath.Join(c.DataDir, "..", "control.json"), journal: filepath.Join(c.DataDir, "..", "journal")}
	c.Adapters[0].Builtin = builtin
	c.Adapters[0].Config["control"] = sc.control
	c.Adapters[0].Config["journal"] = sc.journal
	sc.set(scriptControl{})
	return sc, out, inbox
}

// set replaces the control file atomically, so the adapter never reads half
// of it.
func (sc *script) set(c scriptControl) {
	sc.t.Helper()
	data, _ := json.Marshal(c)
	tmp := sc.control + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		sc.t.Fatal(err)
	}
	if err := os.Rename(tmp, sc.control); err != nil {
		sc.t.Fatal(err)
	}
}

// journalEntry is one line of the journal.
type journalEntry struct {
	event string
	at    time.Time
	arg   string
}

func (sc *script) entries() []journalEntry {
	sc.t.Helper()
	f, err := os.Open(sc.journal)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		sc.t.Fatal(err)
	}
	defer f.Close()
	var out []journalEntry
	r := bufio.NewScanner(f)
	r.Buffer(make([]byte, 64<<10), 1<<20)
	for r.Scan() {
		event, rest, _ := strings.Cut(r.Text(), " ")
		ns, arg, _ := strings.Cut(rest, " ")
		n, err := strconv.ParseInt(ns, 10, 64)
		if err != nil {
			continue // a line being written
		}
		out = append(out, journalEntry{event: event, at: time.Unix(0, n), arg: arg})
	}
	return out
}

// count returns how many times each argument of event appears.
func (sc *script) count(event string) map[string]int {
	out := map[string]int{}
	for _, e := range sc.entries() {
		if e.event == event {
			out[e.arg]++
		}
	}
	return out
}

// total returns how many events of this kind the journal holds.
func (sc *script) total(event string) int {
	n := 0
	for _, e := range sc.entries() {
		if e.event == event {
			n++
		}
	}
	return n
}
