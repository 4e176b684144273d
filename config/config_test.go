package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefaultsAreValid(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Expanded().Validate(); err != nil {
		t.Fatalf("embedded defaults do not validate:\n%v", err)
	}
	if !strings.HasPrefix(c.Node, "dtn://") || !strings.HasSuffix(c.Node, "/") {
		t.Errorf("default node %q is not dtn://<hostname>/", c.Node)
	}
	if c.QUIC.Listen != "[::]:4556" || c.API.Listen != "127.0.0.1:4557" || !c.Discovery.Enabled {
		t.Errorf("defaults: quic %q api %q discovery %v", c.QUIC.Listen, c.API.Listen, c.Discovery.Enabled)
	}
	if c.Limits.MaxBundleSize != 4<<30 || c.QUIC.KeepAlive != 15*time.Second {
		t.Errorf("limits %d keepalive %v", c.Limits.MaxBundleSize, c.QUIC.KeepAlive)
	}
	e := c.Expanded()
	if want := c.Node + "outbox/**"; e.Routes[0].Match != want {
		t.Errorf("route match %q, want %q", e.Routes[0].Match, want)
	}
	if e.Adapters[0].Config["out"] != c.DataDir+"/outbox" {
		t.Errorf("adapter config not expanded: %v", e.Adapters[0].Config)
	}
}

func TestLoadFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mule.yaml")
	os.WriteFile(path, []byte(`
node: dtn://mule/
data_dir: /var/lib/mule
quic:
  listen: "127.0.0.1:5000"
limits:
  max_bundle_size: 10MiB
peers:
  - node: dtn://cloud/
    address: cloud.example:4556
`), 0o600)
	c, err := Load(path, []string{"MULEGATE_QUIC_KEEPALIVE=3s", "MULEGATE_DISCOVERY_ENABLED=false", "MULEGATE_LOG_LEVEL=debug", "OTHER=1", "MULEGATE_API_TOKEN=x"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "dtn://mule/" || c.QUIC.Listen != "127.0.0.1:5000" || c.Limits.MaxBundleSize != 10<<20 {
		t.Errorf("file not applied: %+v", c)
	}
	if c.QUIC.IdleTimeout != 60*time.Second {
		t.Errorf("defaults lost under the file: idle %v", c.QUIC.IdleTimeout)
	}
	if c.QUIC.KeepAlive != 3*time.Second || c.Discovery.Enabled || c.Log.Level != "debug" {
		t.Errorf("env not applied: %+v %+v %+v", c.QUIC, c.Discovery, c.Log)
	}
	if len(c.Peers) != 1 || c.Peers[0].Address != "cloud.example:4556" {
		t.Errorf("peers = %+v", c.Peers)
	}
	if err := c.Expanded().Validate(); err != nil {
		t.Fatal(err)
	}
}

// An adapter without max_in_flight gets the default; one that says keeps it.
func TestAdapterMaxInFlightDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "adapters:\n  - {name: a, builtin: dir}\n  - {name: b, builtin: dir, max_in_flight: 3}\nroutes: []\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, nil)
	if err == nil {
		err = c.Expanded().Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := []int{c.Adapters[0].MaxInFlight, c.Adapters[1].MaxInFlight}; got[0] != DefaultMaxInFlight || got[1] != 3 {
		t.Errorf("max_in_flight = %v, want [%d 3]", got, DefaultMaxInFlight)
	}
}

// Every error names the key that is wrong.
func TestErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, yaml string
		env        []string
		wantKeys   []string
	}{
		{"unknown top-level key", "nodes: dtn://x/\n", nil, []string{"nodes"}},
		{"unknown nested key", "quic:\n  lisen: x\n", nil, []string{"quic.lisen"}},
		{"unknown key in a list item", "peers:\n  - node: dtn://a/\n    adress: h:1\n", nil, []string{"peers[0].adress"}},
		{"bad node", "node: http://x/\n", nil, []string{"node"}},
		{"endpoint as node", "node: dtn://x/app\n", nil, []string{"node"}},
		{"bad listen", "quic:\n  listen: nope\n", nil, []string{"quic.listen"}},
		{"keepalive not below idle", "quic:\n  keepalive: 2m\n", nil, []string{"quic.keepalive"}},
		{"bad size", "limits:\n  max_bundle_size: 10 parsecs\n", nil, []string{"max_bundle_size"}},
		{"bad strategy", "routing:\n  strategy: flooding\n", nil, []string{"routing.strategy"}},
		{"peer without port", "peers:\n  - node: dtn://a/\n    address: host\n", nil, []string{"peers[0].address"}},
		{"peer endpoint", "peers:\n  - node: dtn://a/x\n    address: h:1\n", nil, []string{"peers[0].node"}},
		{"route to unknown adapter", "routes:\n  - match: dtn://c/**\n    adapter: nope\n", nil, []string{"routes[0].adapter"}},
		{"external adapter without hash", "adapters:\n  - name: x\n    path: x\n    max_in_flight: 1\n", nil, []string{"adapters[0].sha256"}},
		{"two adapters one name", "adapters:\n  - {name: a, builtin: dir, max_in_flight: 1}\n  - {name: a, builtin: dir, max_in_flight: 1}\nroutes: []\n", nil, []string{"adapters[1].name"}},
		{"bad pattern", "routes:\n  - match: cloud/**\n    adapter: files\n", nil, []string{"routes[0].match"}},
		{"not a multicast group", "discovery:\n  group: 10.0.0.1:4558\n", nil, []string{"discovery.group"}},
		{"env names no key", "", []string{"MULEGATE_QUIC_LISEN=1"}, []string{"MULEGATE_QUIC_LISEN"}},
		{"env bad duration", "", []string{"MULEGATE_QUIC_KEEPALIVE=soon"}, []string{"MULEGATE_QUIC_KEEPALIVE"}},
		{"wrong type", "quic:\n  max_incoming_streams: many\n", nil, []string{"max_incoming_streams"}},
		{"negative max_in_flight", "adapters:\n  - {name: a, builtin: dir, max_in_flight: -1}\nroutes: []\n", nil, []string{"adapters[0].max_in_flight"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(tt.yaml), 0o600)
			c, err := Load(path, tt.env)
			if err == nil {
				err = c.Expanded().Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, k := range tt.wantKeys {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("error does not name %q:\n%v", k, err)
				}
			}
			var ce Errors
			if strings.HasPrefix(tt.name, "unknown") && !errors.As(err, &ce) {
				t.Errorf("unknown-key error is not config.Errors: %T", err)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "1024": 1024, "1KiB": 1024, "10 MB": 10e6, "4GiB": 4 << 30, "1TB": 1e12} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "1 XB", "-1", "99999999999 TiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", in)
		}
	}
	if b, _ := ByteSize(4 << 30).MarshalText(); string(b) != "4GiB" {
		t.Errorf("MarshalText = %s", b)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(defaultsYAML))
	f.Add([]byte("quic: {listen: x}\npeers: [{node: a}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &Config{}
		if err := decodeStrict(data, "fuzz", c); err != nil {
			return
		}
		c.resolve()
		_ = c.Expanded().Validate()
	})
}

// The example configurations in deploy/ must stay valid: the files, the
// compose stack's, and the one the Kubernetes ConfigMap carries.
func TestDeployExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob("../deploy/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configurations in deploy/")
	}
	files = append(files, "../deploy/compose/mulegate.yaml")
	dir := t.TempDir()
	for i, cfg := range configMapData(t, "../deploy/k8s/mulegate.yaml", "mulegate.yaml") {
		p := filepath.Join(dir, fmt.Sprintf("k8s-configmap-%d.yaml", i))
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	for _, f := range files {
		c, err := Load(f, nil)
		if err == nil {
			err = c.Expanded().Validate()
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// configMapData returns the value of key in every ConfigMap of the
// multi-document manifest at path, and fails the test if there is none.
func configMapData(t *testing.T, path, key string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if v, ok := doc.Data[key]; doc.Kind == "ConfigMap" && ok {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no ConfigMap with %q", path, key)
	}
	return out
}
