package host

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/internal/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m, runHost) }

func newManager(t *testing.T, opts Options) *Manager {
	t.Helper()
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func dirConfig(t *testing.T) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"out": %q}`, t.TempDir()))
}

// statusWatch returns an OnChange hook and a function that waits until an
// adapter's status satisfies a condition.
func statusWatch() (func(Status), func(t *testing.T, what string, ok func(Status) bool) Status) {
	ch := make(chan Status, 1024)
	hook := func(s Status) { ch <- s }
	wait := func(t *testing.T, what string, ok func(Status) bool) Status {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case s := <-ch:
				if ok(s) {
					return s
				}
			case <-deadline:
				t.Fatalf("timed out waiting for: %s", what)
			}
		}
	}
	return hook, wait
}

func TestBuiltinStartsAndAnswers(t *testing.T) {
	m := newManager(t, Options{})
	if err := m.Start(t.Context(), Spec{Name: "files", Builtin: "dir", Config: dirConfig(t)}); err != nil {
		t.Fatal(err)
	}
	ad, err := m.Adapter("files")
	if err != nil {
		t.Fatal(err)
	}
	d, err := ad.Describe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "dir" || !d.Deliver || !d.Fetch {
		t.Errorf("Describe = %+v, want the dir adapter with both capabilities", d)
	}
	st, _ := m.Status("files")
	if !st.Running || st.PID <= 0 || st.PID == os.Getpid() || st.Source != "builtin:dir" {
		t.Errorf("status = %+v, want a running child process", st)
	}
	if _, err := m.Adapter("nope"); err == nil {
		t.Error("Adapter(unknown name) succeeded")
	}
}

func TestSHA256(t *testing.T) {
	pluginDir := t.TempDir()
	file, sum := plugintest.LinkAdapter(t, pluginDir, "dir")
	const wrong = "0000000000000000000000000000000000000000000000000000000000000001"
	tests := []struct {
		name    string
		sha     string
		wantErr []string // substrings; nil means success
	}{
		{"matching hash runs", sum, nil},
		{"matching hash in upper case runs", strings.ToUpper(sum), nil},
		{"mismatch is refused with both hashes", wrong, []string{"refusing to run", "its SHA-256 is " + sum, "pins " + wrong}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, Options{PluginDir: pluginDir})
			err := m.Start(t.Context(), Spec{Name: "ext", Path: file, SHA256: tt.sha, Config: dirConfig(t)})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("Start succeeded; want a checksum error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if len(m.Statuses()) != 0 {
				t.Errorf("a refused adapter is listed: %+v", m.Statuses())
			}
		})
	}
}

func TestSpecValidation(t *testing.T) {
	pluginDir := t.TempDir()
	file, _ := plugintest.LinkAdapter(t, pluginDir, "dir")
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"bad name", Spec{Name: "Bad Name", Builtin: "dir"}, "adapter name"},
		{"neither builtin nor path", Spec{Name: "x"}, "set builtin"},
		{"both", Spec{Name: "x", Builtin: "dir", Path: file}, "not both"},
		{"missing hash shows the current one", Spec{Name: "x", Path: file}, "sha256 is required"},
		{"path outside the plugin dir", Spec{Name: "x", Path: "../x", SHA256: strings.Repeat("0", 64)}, "inside the plugin directory"},
		{"malformed hash", Spec{Name: "x", Path: file, SHA256: "abc"}, "not a SHA-256"},
		{"hash on a built-in", Spec{Name: "x", Builtin: "dir", SHA256: strings.Repeat("0", 64)}, "not built-ins"},
		{"config not JSON", Spec{Name: "x", Builtin: "dir", Config: json.RawMessage("{")}, "not valid JSON"},
		{"unknown built-in", Spec{Name: "x", Builtin: "nosuch"}, "exited before the plugin handshake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, Options{PluginDir: pluginDir})
			err := m.Start(t.Context(), tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestHandshakeFailuresAreExplained(t *testing.T) {
	pluginDir := t.TempDir()
	tests := []struct {
		adapter string
		want    string
	}{
		{"noisy", `adapter "x" wrote to stdout before the plugin handshake: "hello"; adapters must log to stderr`},
		{"noisy-nonl", `adapter "x" wrote to stdout before the plugin handshake: "hello"; adapters must log to stderr`},
		{"dies", `exited before the plugin handshake; its stderr ends with: "panic: cannot open the frobnicator"`},
	}
	for _, tt := range tests {
		t.Run(tt.adapter, func(t *testing.T) {
			file, sum := plugintest.LinkAdapter(t, pluginDir, tt.adapter)
			m := newManager(t, Options{PluginDir: pluginDir})
			err := m.Start(t.Context(), Spec{Name: "x", Path: file, SHA256: sum, Config: dirConfig(t)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start = %v\nwant an error containing %s", err, tt.want)
			}
		})
	}
}

func TestConfigErrorsByKey(t *testing.T) {
	abs := t.TempDir()
	tests := []struct {
		name     string
		config   string
		wantKeys []string
	}{
		{"nothing to do", `{}`, []string{"out"}},
		{"relative path and unknown key", `{"out": "rel/dir", "outt": 1}`, []string{"out", "outt"}},
		{"bad types", fmt.Sprintf(`{"out": %q, "min_age": "soon", "sidecar": "yes"}`, abs), []string{"min_age", "sidecar"}},
		{"bad destination", fmt.Sprintf(`{"inbox": %q, "default_destination": "mailto:x"}`, abs), []string{"default_destination"}},
		{"not an object", `[1, 2]`, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, Options{})
			err := m.Start(t.Context(), Spec{Name: "files", Builtin: "dir", Config: json.RawMessage(tt.config)})
			var ce plugins.ConfigErrors
			if !errors.As(err, &ce) {
				t.Fatalf("Start = %v, want ConfigErrors", err)
			}
			var keys []string
			for _, e := range ce {
				keys = append(keys, e.Key)
			}
			slices.Sort(keys)
			if strings.Join(keys, ",") != strings.Join(tt.wantKeys, ",") {
				t.Errorf("error keys = %q, want %q (errors: %v)", keys, tt.wantKeys, ce)
			}
		})
	}

	t.Run("reconfigure a running adapter", func(t *testing.T) {
		m := newManager(t, Options{})
		if err := m.Start(t.Context(), Spec{Name: "files", Builtin: "dir", Config: dirConfig(t)}); err != nil {
			t.Fatal(err)
		}
		ad, _ := m.Adapter("files")
		var ce plugins.ConfigErrors
		if err := ad.Configure(t.Context(), json.RawMessage(`{"out": "x", "bogus": true}`)); !errors.As(err, &ce) || len(ce) != 2 {
			t.Fatalf("Configure = %v, want 2 ConfigErrors", err)
		}
		if err := ad.Configure(t.Context(), dirConfig(t)); err != nil {
			t.Fatalf("Configure(valid) = %v", err)
		}
	})
}

// TestRestart kills the adapter and checks that calls fail retryably while
// it is down, that it comes back, and that the restart is counted.
func TestRestart(t *testing.T) {
	hook, wait := statusWatch()
	m := newManager(t, Options{
		OnChange: hook,
		// Long enough that the test surely calls while the adapter is down.
		Backoff: Backoff{Initial: 2 * time.Second, Max: 4 * time.Second},
	})
	if err := m.Start(t.Context(), Spec{Name: "files", Builtin: "dir", Config: dirConfig(t)}); err != nil {
		t.Fatal(err)
	}
	ad, _ := m.Adapter("files")
	first, _ := m.Status("files")
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait(t, "the host to notice the crash", func(s Status) bool { return !s.Running })

	if _, err := ad.Describe(t.Context()); !errors.Is(err, plugins.ErrUnavailable) {
		t.Errorf("Describe while down = %v, want ErrUnavailable", err)
	}
	res := ad.Deliver(t.Context(), plugins.Meta{BundleID: "b"}, strings.NewReader(""))
	if res.Status != plugins.Retry || !errors.Is(res.Err, plugins.ErrUnavailable) || res.RetryAfter <= 0 {
		t.Errorf("Deliver while down = %+v, want Retry with ErrUnavailable and a delay", res)
	}

	st := wait(t, "the adapter to come back", func(s Status) bool { return s.Running })
	if st.PID == first.PID || st.Restarts != 1 || !strings.Contains(st.LastError, "exited") {
		t.Errorf("after restart: %+v, want a new PID, 1 restart and the exit as last error", st)
	}
	if _, err := ad.Describe(t.Context()); err != nil {
		t.Errorf("Describe after restart: %v", err)
	}
	// The restarted process got the configuration again.
	if res := ad.Deliver(t.Context(), plugins.Meta{BundleID: "b"}, strings.NewReader("")); res.Status != plugins.OK {
		t.Errorf("Deliver after restart = %v", res)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{initial: 100 * time.Millisecond, max: time.Second}
	wantCaps := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, c := range wantCaps {
		c *= time.Millisecond
		d := b.next()
		if d < c/2 || d > c {
			t.Errorf("attempt %d: delay %v, want within [%v, %v]", i, d, c/2, c)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}

func TestCheckTracksReachability(t *testing.T) {
	hook, wait := statusWatch()
	m := newManager(t, Options{OnChange: hook, CheckInterval: 20 * time.Millisecond})
	out := filepath.Join(t.TempDir(), "out")
	if err := m.Start(t.Context(), Spec{Name: "files", Builtin: "dir", Config: json.RawMessage(fmt.Sprintf(`{"out": %q}`, out))}); err != nil {
		t.Fatal(err)
	}
	wait(t, "reachable", func(s Status) bool { return s.Reachable })
	if err := os.RemoveAll(out); err != nil {
		t.Fatal(err)
	}
	st := wait(t, "unreachable once out is gone", func(s Status) bool { return !s.Reachable && s.Running })
	if !strings.Contains(st.LastError, "out") || st.LastCheck.IsZero() {
		t.Errorf("status = %+v, want the reason in LastError", st)
	}
	if err := os.Mkdir(out, 0o750); err != nil {
		t.Fatal(err)
	}
	wait(t, "reachable again", func(s Status) bool { return s.Reachable })
}

func TestAdapterLogsReachZap(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	m := newManager(t, Options{Log: zap.New(core)})
	if err := m.Start(t.Context(), Spec{Name: "files", Builtin: "dir", Config: dirConfig(t)}); err != nil {
		t.Fatal(err)
	}
	// The dir adapter logs "configured" at info from its own process. The
	// line comes through its stderr, which the node reads on its own
	// time: Start may return before it is logged.
	var found bool
	for deadline := time.Now().Add(10 * time.Second); !found && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, e := range logs.FilterMessage("configured").All() {
			fields := e.ContextMap()
			if fields["adapter"] == "files" && e.Level == zapcore.InfoLevel && fields["out"] != nil {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no info entry \"configured\" with adapter=files and the adapter's fields; got %v", logs.All())
	}
}

func TestStopAndCloseKillProcesses(t *testing.T) {
	m := newManager(t, Options{})
	var pids []int
	for _, name := range []string{"a", "b", "c"} {
		if err := m.Start(t.Context(), Spec{Name: name, Builtin: "dir", Config: dirConfig(t)}); err != nil {
			t.Fatal(err)
		}
		st, _ := m.Status(name)
		pids = append(pids, st.PID)
	}
	ad, _ := m.Adapter("a")
	if err := m.Stop("a"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pids[0], procStart(pids[0]))
	if _, err := ad.Describe(t.Context()); !errors.Is(err, plugins.ErrUnavailable) {
		t.Errorf("Describe after Stop = %v, want ErrUnavailable", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids[1:] {
		waitGone(t, pid, procStart(pid))
	}
	if err := m.Start(t.Context(), Spec{Name: "d", Builtin: "dir", Config: dirConfig(t)}); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// TestNoOrphansWhenHostIsKilled runs a node (this test binary in host mode)
// with adapters, SIGKILLs it, and checks that every adapter exits: by the
// kernel's parent-death signal, by the SDK's watch of its lifeline, and by
// the SDK's watch of its parent PID, each with the other two turned off.
func TestNoOrphansWhenHostIsKilled(t *testing.T) {
	tests := []struct {
		name                               string
		noPdeathsig, noLifeline, noHostPID bool
	}{
		{"all guards", false, false, false},
		{"kernel parent-death signal alone", false, true, true},
		{"SDK lifeline alone", true, false, true},
		{"SDK parent PID watch alone", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pluginDir := t.TempDir()
			file, sum := plugintest.LinkAdapter(t, pluginDir, "dir")
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(),
				plugintest.EnvHost+"=1",
				"HOST_PLUGIN_DIR="+pluginDir,
				"HOST_EXTERNAL="+file+"="+sum,
				"HOST_OUT="+t.TempDir(),
				"HOST_NO_PDEATHSIG="+strconv.FormatBool(tt.noPdeathsig),
				"HOST_NO_LIFELINE="+strconv.FormatBool(tt.noLifeline),
				"HOST_NO_HOST_PID="+strconv.FormatBool(tt.noHostPID),
			)
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("host did not report its adapters: %v", err)
			}
			var pids []int
			if err := json.Unmarshal([]byte(line), &pids); err != nil || len(pids) != 3 {
				t.Fatalf("host said %q", line)
			}
			starts := make([]string, len(pids))
			for i, pid := range pids {
				starts[i] = procStart(pid)
				if starts[i] == "" {
					t.Fatalf("adapter %d is not running before the host is killed", pid)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			for i, pid := range pids {
				waitGone(t, pid, starts[i])
			}
		})
	}
}

// runHost is the node process of TestNoOrphansWhenHostIsKilled: it starts
// two built-in adapters and one external one, prints their PIDs, and waits
// to be killed.
func runHost() int {
	m, err := New(Options{
		Log:         zap.NewNop(),
		PluginDir:   os.Getenv("HOST_PLUGIN_DIR"),
		noPdeathsig: os.Getenv("HOST_NO_PDEATHSIG") == "true",
		noLifeline:  os.Getenv("HOST_NO_LIFELINE") == "true",
		noHostPID:   os.Getenv("HOST_NO_HOST_PID") == "true",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	file, sum, _ := strings.Cut(os.Getenv("HOST_EXTERNAL"), "=")
	config := json.RawMessage(fmt.Sprintf(`{"out": %q}`, os.Getenv("HOST_OUT")))
	specs := []Spec{
		{Name: "a", Builtin: "dir", Config: config},
		{Name: "b", Builtin: "dir", Config: config},
		{Name: "c", Path: file, SHA256: sum, Config: config},
	}
	var pids []int
	for _, s := range specs {
		if err := m.Start(context.Background(), s); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		st, _ := m.Status(s.Name)
		pids = append(pids, st.PID)
	}
	out, _ := json.Marshal(pids)
	fmt.Println(string(out))
	select {}
}

// procStart returns a process's start time from /proc (which tells it from
// a later process that reuses the PID), or "" when it has exited. A zombie
// has exited: only its entry is left until its new parent reaps it.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(s[i+1:])
	// Fields after the command: state is the 1st, starttime the 20th.
	if len(fields) < 20 || fields[0] == "Z" || fields[0] == "X" {
		return ""
	}
	return fields[19]
}

// waitGone polls until the process that had this PID and start time is
// gone. There is no event to wait on for a process that is not our child.
func waitGone(t *testing.T, pid int, start string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := procStart(pid)
		if s == "" || s != start {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("adapter process %d is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMulegateBinaryRunsBuiltins runs the dir adapter from a real mulegate
// binary, as a node does: `mulegate adapter dir`.
func TestMulegateBinaryRunsBuiltins(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build mulegate with")
	}
	bin := filepath.Join(t.TempDir(), "mulegate")
	if out, err := exec.Command(goTool, "build", "-o", bin, "github.com/mulegate/mulegate/cmd/mulegate").CombinedOutput(); err != nil {
		t.Fatalf("building mulegate: %v\n%s", err, out)
	}
	out := t.TempDir()
	m := newManager(t, Options{Self: bin})
	if err := m.Start(t.Context(), Spec{Name: "files", Builtin: "dir", Config: json.RawMessage(fmt.Sprintf(`{"out": %q}`, out))}); err != nil {
		t.Fatal(err)
	}
	ad, _ := m.Adapter("files")
	res := ad.Deliver(t.Context(), plugins.Meta{BundleID: "b-1", PayloadLength: 2, Options: map[string]string{"name": "x.txt"}}, strings.NewReader("hi"))
	if res.Status != plugins.OK {
		t.Fatalf("Deliver = %v", res)
	}
	if got, err := os.ReadFile(filepath.Join(out, "x.txt")); err != nil || string(got) != "hi" {
		t.Fatalf("delivered file = %q, %v", got, err)
	}
	err = m.Start(t.Context(), Spec{Name: "nope", Builtin: "nosuch"})
	if err == nil || !strings.Contains(err.Error(), `unknown built-in adapter \"nosuch\"`) {
		t.Fatalf("unknown built-in: %v", err)
	}
}
