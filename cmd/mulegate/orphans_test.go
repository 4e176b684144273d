package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	n.Configure(t, `adapters:
  - name: files
    builtin: dir
    max_in_flight: 2
    config: {out: "`+filepath.Join(n.Dir, "out")+`"}
routes:
  - {match: "dtn://gw/outbox/**", adapter: files}
`)
	n.Start(t)
	var pid int
	eventually(t, 30*time.Second, "the adapter to be running", func() bool {
		as, err := n.Client(t).Adapters(ctx)
		if err != nil || len(as) != 1 || !as[0].Running {
			return false
		}
		pid = as[0].PID
		return pid > 0
	})
	if processGone(pid) {
		t.Fatalf("adapter pid %d is not running", pid)
	}
	n.Kill(t)
	eventually(t, 10*time.Second, "the adapter process to exit after the node was killed", func() bool { return processGone(pid) })
}
