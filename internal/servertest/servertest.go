// Package servertest runs, for tests, the server programs that
// scripts/test-servers installs (nats-server, versitygw, mailpit): it
// finds the binary, picks free loopback ports, starts the program and
// waits until it answers, and kills it as a crash would, so that a test
// can start it again on the same ports and files. The packages that know
// each server (natstest, s3test, mailpittest) build on it.
package servertest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EnvToolsBin names the directory `make test` installs the servers in and
// sets for the tests. When it is set, a missing server fails a test
// rather than skipping it.
const EnvToolsBin = "MULEGATE_TOOLS_BIN"

// FreePort returns a loopback port, free for TCP and UDP, that no other
// test of this machine is given until this test ends.
//
// A port the kernel picks (listening on port 0) is free only at that
// moment: when a test starts its server later (a test that starts with
// the server down waits seconds), another test process may have been
// given the same port by the kernel for a server of its own, and the
// node under test talks to the wrong server. (That happened: a node
// published to another test's NATS.) So ports come from outside the
// kernel's ephemeral range, which it never hands out for port 0, and
// each is held by a lock file for the test's life, which keeps the other
// test processes off it.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := reservedRange()
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		if lockPort(t, port) {
			return port
		}
	}
	t.Fatalf("no free loopback port in %d-%d after 1000 tries", lo, hi)
	return 0
}

// FreeUDP is FreePort as a UDP address, "127.0.0.1:PORT".
func FreeUDP(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// reservedRange is the ports FreePort picks from: below the kernel's
// ephemeral range (/proc/sys/net/ipv4/ip_local_port_range, by default
// 32768-60999), and above the well-known and common ones.
func reservedRange() (lo, hi int) {
	lo, hi = 10000, 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(data), &first, &last); err == nil {
			switch {
			case first > lo+1000:
				hi = first
			case last < 64535:
				lo, hi = last+1, 65536
			}
		}
	}
	return lo, hi
}

// lockPort takes port for the test if no other test holds it and nothing
// listens on it, for TCP or UDP.
func lockPort(t testing.TB, port int) bool {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "mulegate-test-ports")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("locking a test port: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%d.lock", port)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("locking a test port: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false // another test holds it
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		f.Close()
		return false
	}
	l.Close()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		f.Close()
		return false
	}
	c.Close()
	// Closing the file releases the lock; the file stays for the next.
	t.Cleanup(func() { f.Close() })
	return true
}

// Lookup finds the program name in $MULEGATE_TOOLS_BIN, on $PATH, or in
// the module's .cache/bin, where scripts/test-servers installs it.
func Lookup(name string) (string, error) {
	if dir := os.Getenv(EnvToolsBin); dir != "" {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if p := filepath.Join(d, ".cache", "bin", name); isExecutable(p) {
			return p, nil
		}
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
			break
		}
	}
	return "", fmt.Errorf("%s not found in $%s, $PATH or .cache/bin: run ./scripts/test-servers (or make test-servers)", name, EnvToolsBin)
}

// Binary is Lookup for a test that needs the program: missing, it fails
// the test.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BinaryOrSkip is Lookup for a test that may be skipped on a machine
// without the program: missing, it skips the test, unless
// $MULEGATE_TOOLS_BIN is set (as `make test` sets it, after installing
// the servers), where it fails it.
func BinaryOrSkip(t testing.TB, name string) string {
	t.Helper()
	p, err := Lookup(name)
	switch {
	case err == nil:
	case os.Getenv(EnvToolsBin) != "":
		t.Fatal(err)
	default:
		t.Skip(err)
	}
	return p
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// startTimeout bounds how long Run waits for a server to answer.
const startTimeout = 20 * time.Second

// Process is one server program a test runs, started and killed as often
// as the test likes. What it writes goes to a log file, which a failed
// test shows the end of.
type Process struct {
	t    testing.TB
	name string
	dir  string
	logf string
	cmd  *exec.Cmd
	done chan struct{}
}

// NewProcess returns a Process for the program called name, not running.
// The test's cleanup kills it.
func NewProcess(t testing.TB, name string) *Process {
	t.Helper()
	tmp := t.TempDir() // removed after the cleanup below has killed the program
	p := &Process{t: t, name: name, dir: filepath.Join(tmp, "data"), logf: filepath.Join(tmp, name+".log")}
	if err := os.Mkdir(p.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			if tail := p.logTail(20); tail != "" {
				t.Logf("last lines of the %s log:\n%s", name, tail)
			}
		}
	})
	return p
}

// Run starts the program (found by Binary) with args, its output going to
// the log, and waits until ready returns nil. It fails the test if the
// program exits first, or does not get ready in time.
func (p *Process) Run(ready func() error, args ...string) {
	p.t.Helper()
	logf, err := os.OpenFile(p.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(Binary(p.t, p.name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(p.done)
	deadline := time.Now().Add(startTimeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited at start: %v\n%s", p.name, cmd.ProcessState, p.logTail(50))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready after %v: %v\n%s", p.name, startTimeout, err, p.logTail(50))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Dir is an empty directory for the program's files (its store, its
// database), kept across restarts and removed once it has been killed.
func (p *Process) Dir() string { return p.dir }

// PID is the running program's process ID, 0 when it is not running.
func (p *Process) PID() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill stops the program abruptly, as a crash would.
func (p *Process) Kill() {
	if p.cmd != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.cmd = nil
	}
}

func (p *Process) logTail(n int) string {
	data, err := os.ReadFile(p.logf)
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ErrNotYet is what a condition returns when it has nothing better to say.
var ErrNotYet = errors.New("not yet")

// Eventually polls cond until it returns nil, and fails the test with
// cond's last error if that takes longer than within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
