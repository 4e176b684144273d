package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mulegate/mulegate/config"
)

// runConfig loads `mulegate run`'s configuration from args as the command
// would, without starting a node.
func runConfig(t *testing.T, args ...string) (*config.Config, error) {
	t.Helper()
	cmd := newRunCmd()
	if err := cmd.ParseFlags(args); err != nil {
		return nil, err
	}
	var f runFlags
	fl := cmd.Flags()
	f.configFile, _ = fl.GetString("config")
	f.node, _ = fl.GetString("node")
	f.data, _ = fl.GetString("data")
	f.listenQUIC, _ = fl.GetString("listen-quic")
	f.api, _ = fl.GetString("api")
	f.peers, _ = fl.GetStringArray("peer")
	f.discovery, _ = fl.GetBool("discovery")
	f.logLevel, _ = fl.GetString("log-level")
	return loadRunConfig(cmd, f)
}

// Flags override the file, which overrides the defaults; --peer repeats.
func TestRunFlagsOverrideConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(file, []byte("node: dtn://fromfile/\nquic:\n  listen: 127.0.0.1:4999\nlog:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := runConfig(t, "--config", file, "--node", "dtn://fromflag/", "--data", dir,
		"--api", "unix:"+filepath.Join(dir, "api.sock"), "--discovery=false", "--log-level", "debug",
		"--peer", "dtn://cloud/@gw.example.org:4556", "--peer", "ipn:7.0@[::1]:4600")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ what, got, want string }{
		{"node (flag over file)", cfg.Node, "dtn://fromflag/"},
		{"quic.listen (file over default)", cfg.QUIC.Listen, "127.0.0.1:4999"},
		{"data", cfg.DataDir, dir},
		{"api.listen", cfg.API.Listen, "unix:" + filepath.Join(dir, "api.sock")},
		{"log.level (flag over file)", cfg.Log.Level, "debug"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if cfg.Discovery.Enabled {
		t.Error("--discovery=false left discovery on")
	}
	want := []config.Peer{{Node: "dtn://cloud/", Address: "gw.example.org:4556"}, {Node: "ipn:7.0", Address: "[::1]:4600"}}
	if len(cfg.Peers) != len(want) {
		t.Fatalf("peers = %+v, want %+v", cfg.Peers, want)
	}
	for i := range want {
		if cfg.Peers[i].Node != want[i].Node || cfg.Peers[i].Address != want[i].Address {
			t.Errorf("peer %d = %+v, want %+v", i, cfg.Peers[i], want[i])
		}
	}
}

func TestRunFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"peer without @", []string{"--peer", "dtn://cloud/"}, "EID@HOST:PORT"},
		{"peer with a bad EID", []string{"--peer", "cloud@host:1"}, "cloud@host:1"},
		{"bad node ID", []string{"--node", "mule"}, "node"},
		{"bad log level", []string{"--log-level", "chatty"}, "log.level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runConfig(t, append(tc.args, "--data", t.TempDir())...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not mention %q", err, tc.want)
			}
		})
	}
}

// `config default` prints YAML that `config validate` accepts; an unknown
// key is refused, naming the key and its line.
func TestConfigCommands(t *testing.T) {
	run := func(args ...string) (string, error) { return runCommand(newConfigCmd(), args...) }
	defaults, err := run("default")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(defaults, "quic:") || !strings.Contains(defaults, "4556") {
		t.Fatalf("config default does not look like the defaults:\n%s", defaults)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "defaults.yaml")
	if err := os.WriteFile(good, []byte(defaults), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("validate", good); err != nil || !strings.Contains(out, "valid") {
		t.Fatalf("config validate of the defaults: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("node: dtn://x/\nquic:\n  lisen: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = run("validate", bad)
	if err == nil || !strings.Contains(err.Error(), "quic.lisen") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("config validate of an unknown key: %v; want it to name quic.lisen and line 3", err)
	}
}
