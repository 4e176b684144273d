package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// processGone reports whether pid has exited (a zombie counts as gone).
func processGone(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// TestNoOrphanAdapters: a `mulegate run` killed with SIGKILL leaves no
// adapter process behind.
func TestNoOrphanAdapters(t *testing.T) {
	ctx := context.Background()
	n := newTestNode(t, "gw")
	cfg := strings.Replace(testConfig, "adapters: []\nroutes: []\n", `adapters:
  - name: files
    builtin: dir
    max_in_flight: 2
    config: {out: "`+filepath.Join(filepath.Dir(n.data), "out")+`"}
routes:
  - {match: "dtn://gw/outbox/**", adapter: files}
adapter_check_interval: 200ms
`, 1)
	if err := os.WriteFile(filepath.Join(filepath.Dir(n.data), "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start(t)
	var pid int
	eventually(t, 30*time.Second, "the adapter to be running", func() bool {
		as, err := n.client(t).Adapters(ctx)
		if err != nil || len(as) != 1 || !as[0].Running {
			return false
		}
		pid = as[0].PID
		return pid > 0
	})
	if processGone(pid) {
		t.Fatalf("adapter pid %d is not running", pid)
	}
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.done
	n.done <- nil
	eventually(t, 10*time.Second, "the adapter process to exit after the node was killed", func() bool { return processGone(pid) })
}
