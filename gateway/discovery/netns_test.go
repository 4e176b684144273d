package discovery

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Multicast on the host's loopback interface usually does not work (lo lacks
// the MULTICAST flag), and a test must not depend on the host's network. So
// the tests that need sockets build their own network: a lab of Linux network
// namespaces, made with iproute2, in which the test binary runs itself again
// (`ip netns exec NS /proc/self/exe -test.run=^TestX$`) with childEnv set to
// say which part to play. The namespaces are deleted when the test ends, and
// any left behind by a test that was killed are deleted by the next run.
//
// This needs root and iproute2, as CI has. Without them the tests fail, with
// a message saying so; they do not skip.

// childEnv, in a re-executed test binary, names the part it plays.
const childEnv = "MULEGATE_DISCOVERY_TEST_CHILD"

// nsPrefix starts the names of the lab's namespaces; the creating process's
// PID follows, so that stale ones can be recognised.
const nsPrefix = "mgdisc-"

// childMarker is printed by a child that ran to the end, so the parent can
// tell a child that passed from one that ran nothing.
const childMarker = "MGDISC child done"

var nsSeq atomic.Int64

type lab struct {
	t *testing.T
}

func newLab(t *testing.T) *lab {
	t.Helper()
	const need = "the discovery tests build network namespaces and need root and iproute2 (`ip netns`)"
	if os.Geteuid() != 0 {
		t.Fatalf("%s; running as uid %d", need, os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("%s: %v (apt-get install iproute2)", need, err)
	}
	sweepStaleNamespaces(t)
	return &lab{t: t}
}

// sweepStaleNamespaces deletes lab namespaces whose creator is gone.
func sweepStaleNamespaces(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
				t.Logf("deleting stale namespace %s: %v: %s", e.Name(), err, out)
			}
		}
	}
}

// ns makes a namespace with its loopback interface up and returns its name.
// It is deleted, with every interface in it, when the test ends.
func (l *lab) ns(role string) string {
	l.t.Helper()
	name := fmt.Sprintf("%s%d-%d-%s", nsPrefix, os.Getpid(), nsSeq.Add(1), role)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		l.t.Fatalf("this test needs network namespaces (root and iproute2): ip netns add %s: %v: %s", name, err, out)
	}
	l.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			l.t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	l.ip("-n", name, "link", "set", "lo", "up")
	return name
}

// ip runs iproute2's ip with args, failing the test if it fails.
func (l *lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addIface configures a fresh interface: the given IPv4 address and a fixed
// IPv6 link-local one (no duplicate address detection, so it is usable at
// once, and no address of the kernel's choosing beside it), then up.
func (l *lab) addIface(ns, dev, v4, linkLocal string) {
	l.ip("-n", ns, "link", "set", dev, "addrgenmode", "none")
	l.ip("-n", ns, "addr", "add", v4, "dev", dev)
	l.ip("-n", ns, "addr", "add", linkLocal, "dev", dev, "nodad")
	l.ip("-n", ns, "link", "set", dev, "up")
}

// child is the test binary run again inside a namespace.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout, line by line; closed at EOF

	mu  sync.Mutex
	out bytes.Buffer // stdout and stderr, for the failure message
}

// start runs test (a top-level test function's name) in ns, with env added
// to the environment.
func (l *lab) start(ctx context.Context, name, ns, test string, env ...string) *child {
	l.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	c := &child{name: name, lines: make(chan string, 100)}
	c.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", ns, exe,
		"-test.run=^"+test+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.out.Write(p)
	})
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		l.t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		l.t.Fatalf("starting %s in %s: %v", name, ns, err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.mu.Lock()
			c.out.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			c.lines <- sc.Text()
		}
	}()
	return c
}

// waitLine waits for a stdout line starting with prefix.
func (c *child) waitLine(ctx context.Context, prefix string) (string, error) {
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("%s ended before printing %q", c.name, prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no %q: %w", c.name, prefix, ctx.Err())
		}
	}
}

// finish closes the child's stdin (its signal to stop), waits for it, and
// fails the test unless it passed and printed childMarker.
func (c *child) finish(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	for range c.lines { // drain, so the reader ends
	}
	err := c.cmd.Wait()
	c.mu.Lock()
	out := c.out.String()
	c.mu.Unlock()
	if err != nil || !strings.Contains(out, childMarker) {
		t.Errorf("%s failed (%v); its output:\n%s", c.name, err, out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// childDone is what a child prints last.
func childDone() { fmt.Println(childMarker) }

// waitStdinEOF blocks until the parent closes the child's stdin.
func waitStdinEOF() { io.Copy(io.Discard, os.Stdin) }

// testTimeout bounds every wait in these tests; it is a failure deadline,
// not a sleep.
const testTimeout = 20 * time.Second
