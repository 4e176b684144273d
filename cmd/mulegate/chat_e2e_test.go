package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tmuxServer is a private tmux server for one test.
type tmuxServer struct {
	sock string
}

func newTmux(t *testing.T) *tmuxServer {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("MULEGATE_TOOLS_BIN") != "" {
			t.Fatal("tmux is missing: scripts/test-servers installs it")
		}
		t.Skip("tmux is not installed (scripts/test-servers installs it)")
	}
	s := &tmuxServer{sock: filepath.Join(t.TempDir(), "tmux.sock")}
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", s.sock, "kill-server").Run() })
	return s
}

func (s *tmuxServer) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", s.sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start runs argv in a new detached session of 220×40.
func (s *tmuxServer) start(t *testing.T, session string, env []string, argv ...string) {
	t.Helper()
	args := []string{"new-session", "-d", "-s", session, "-x", "220", "-y", "40"}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	// Keep the pane after the program exits, to read what it said.
	s.run(t, append(args, argv...)...)
	s.run(t, "set-option", "-t", session, "remain-on-exit", "on")
}

func (s *tmuxServer) screen(t *testing.T, session string) string {
	t.Helper()
	return s.run(t, "capture-pane", "-p", "-t", session)
}

func (s *tmuxServer) typeLine(t *testing.T, session, line string) {
	t.Helper()
	s.run(t, "send-keys", "-t", session, "-l", line)
	s.run(t, "send-keys", "-t", session, "Enter")
}

// waitScreen waits until session's screen shows every one of want.
func (s *tmuxServer) waitScreen(t *testing.T, session string, within time.Duration, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		scr := s.screen(t, session)
		missing := ""
		for _, w := range want {
			if !strings.Contains(scr, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return scr
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the screen of %s does not show %q:\n%s", within, session, missing, scr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Two friends chat through their two nodes: what one types appears on the
// other's screen with its sender, hops and age; a shared file lands in the
// other's incoming directory, never overwriting; the commands work; and
// nothing claims the messages are signed.
func TestChatTwoNodesInTmux(t *testing.T) {
	tm := newTmux(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice, bob := newTestNode(t, "alice"), newTestNode(t, "bob")
	alice.Start(t)
	bob.Start(t, alice)

	chat := func(n *testNode) []string {
		return []string{mulegateBin, "chat", "--group", "campfire", "--api", n.API, "--data", n.Data}
	}
	env := []string{"TERM=xterm-256color", "LANG=C.UTF-8"}
	tm.start(t, "alice", env, chat(alice)...)
	tm.start(t, "bob", env, chat(bob)...)
	for _, who := range []string{"alice", "bob"} {
		tm.waitScreen(t, who, 20*time.Second, "joined dtn://~campfire/chat as "+who, "verified signature")
	}
	// Both nodes registered the group.
	for _, n := range []*testNode{alice, bob} {
		eps, err := n.Client(t).Endpoints(ctx)
		if err != nil || len(eps.Endpoints) != 1 || eps.Endpoints[0] != "dtn://~campfire/chat" {
			t.Fatalf("%s's endpoints: %+v %v", n.Name, eps, err)
		}
	}

	tm.typeLine(t, "alice", "hello from alice, by the fire")
	// Alice sees her own message at once (0 hops), Bob one hop away.
	tm.waitScreen(t, "alice", 10*time.Second, "alice ✓ (0 hops, ")
	tm.waitScreen(t, "bob", 30*time.Second, "alice ✓ (1 hop, ", "old): hello from alice, by the fire")

	tm.typeLine(t, "bob", "hi alice — ünïcode too")
	tm.waitScreen(t, "alice", 30*time.Second, "bob ✓ (1 hop, ", "hi alice — ünïcode too")

	// A shared file arrives in Bob's incoming directory; shared twice, the
	// second copy does not overwrite the first.
	share := filepath.Join(t.TempDir(), "map of the woods.txt")
	content := bytes.Repeat([]byte("north is up\n"), 10000)
	if err := os.WriteFile(share, content, 0o600); err != nil {
		t.Fatal(err)
	}
	tm.typeLine(t, "alice", "/share "+share)
	tm.waitScreen(t, "alice", 10*time.Second, "shared map of the woods.txt (")
	incoming := filepath.Join(bob.Data, "chat", "campfire", "incoming")
	first := filepath.Join(incoming, "map of the woods.txt")
	tm.waitScreen(t, "bob", 30*time.Second, "alice ✓ (1 hop, ", "shared map of the woods.txt (117.2 KiB), saved as "+incoming)
	if got, err := os.ReadFile(first); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the shared file on Bob's side: %v, %d bytes", err, len(got))
	}
	if err := os.WriteFile(share, []byte("the second version\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tm.typeLine(t, "alice", "/share "+share)
	second := filepath.Join(incoming, "map of the woods (1).txt")
	tm.waitScreen(t, "bob", 30*time.Second, "saved as "+filepath.Join(incoming, "map of the woods (1)"))
	if got, _ := os.ReadFile(second); string(got) != "the second version\n" {
		t.Errorf("the second share: %q", got)
	}
	if got, _ := os.ReadFile(first); !bytes.Equal(got, content) {
		t.Error("the second share overwrote the first")
	}

	// The commands.
	tm.typeLine(t, "bob", "/peers")
	tm.waitScreen(t, "bob", 10*time.Second, "-- peers:", "dtn://alice/  in contact since")
	tm.typeLine(t, "bob", "/history 3")
	tm.waitScreen(t, "bob", 10*time.Second, "-- the last 3 messages in ", "-- end of history")
	tm.typeLine(t, "bob", "/help")
	tm.waitScreen(t, "bob", 10*time.Second, "/share FILE", "/quit")
	tm.typeLine(t, "bob", "/nonsense")
	tm.waitScreen(t, "bob", 10*time.Second, "/nonsense is not a command")

	// Everything taken was acknowledged: nothing waits at either node.
	for _, n := range []*testNode{alice, bob} {
		eventually(t, 10*time.Second, n.Name+" still has chat messages waiting", func() bool {
			d, err := n.Client(t).Deliveries(ctx, mustEID(t, "dtn://~campfire/chat"), 0)
			return err == nil && len(d) == 0
		})
	}
	// The history file kept them.
	hist, err := os.ReadFile(filepath.Join(bob.Data, "chat", "campfire", "history.jsonl"))
	if err != nil || !strings.Contains(string(hist), "hello from alice, by the fire") {
		t.Errorf("Bob's history: %v\n%s", err, hist)
	}

	tm.typeLine(t, "alice", "/quit")
	eventually(t, 10*time.Second, "/quit did not end alice's chat", func() bool {
		return strings.TrimSpace(tm.run(t, "display-message", "-p", "-t", "alice", "#{pane_dead}")) == "1"
	})
}
