package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/gateway/api"
)

// The API commands say what went wrong and what to do, and exit non-zero.
func TestCLIClientErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := newTestNode(t, "solo")
	n.Start(t)
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyData := t.TempDir()
	dead := freeTCP(t)
	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"no token file", nil, []string{"status", "--api", n.API, "--data", emptyData}, []string{"no API token", "MULEGATE_API_TOKEN"}},
		{"wrong token", []string{"MULEGATE_API_TOKEN=" + strings.Repeat("0", 64), "MULEGATE_API=" + n.API}, []string{"peers"}, []string{"wrong API token", "401"}},
		{"nobody listening", nil, []string{"status", "--api", dead, "--data", n.Data}, []string{"cannot reach the node's API at " + dead, "mulegate run"}},
		{"lifetime over the node's maximum", nil, []string{"send", "--to", "dtn://x/y", "--lifetime", "1000d", file, "--api", n.API, "--data", n.Data}, []string{"lifetime exceeds", "422"}},
		{"bad destination", nil, []string{"send", "--to", "bob", file, "--api", n.API, "--data", n.Data}, []string{"--to \"bob\""}},
		{"missing file", nil, []string{"send", "--to", "dtn://x/y", filepath.Join(emptyData, "nope"), "--api", n.API, "--data", n.Data}, []string{"no such file"}},
		{"another node's endpoint", nil, []string{"recv", "--endpoint", "dtn://other/inbox", "--api", n.API, "--data", n.Data}, []string{"belongs to node dtn://other/"}},
		{"unknown state", nil, []string{"bundles", "--state", "lost", "--api", n.API, "--data", n.Data}, []string{"--state \"lost\"", "pending"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runMulegate(t, ctx, nil, c.env, c.args...)
			if r.Err == nil {
				t.Fatalf("mulegate %s succeeded: %s", strings.Join(c.args, " "), r.Stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(string(r.Stderr), w) {
					t.Errorf("stderr does not say %q:\n%s", w, r.Stderr)
				}
			}
		})
	}
	// The token from the environment, and the address from MULEGATE_API,
	// work without --data.
	r := runMulegate(t, ctx, nil, []string{"MULEGATE_API_TOKEN=" + n.Token, "MULEGATE_API=" + n.API}, "status", "--json")
	if r.Err != nil || !strings.Contains(string(r.Stdout), `"node": "dtn://solo/"`) {
		t.Errorf("status with MULEGATE_API and MULEGATE_API_TOKEN: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	// The node's own configuration variables find it too, as in a
	// container whose image sets them for `mulegate run`.
	r = runMulegate(t, ctx, nil, []string{"MULEGATE_DATA_DIR=" + n.Data, "MULEGATE_API_LISTEN=" + n.API}, "status", "--json")
	if r.Err != nil || !strings.Contains(string(r.Stdout), `"node": "dtn://solo/"`) {
		t.Errorf("status with MULEGATE_DATA_DIR and MULEGATE_API_LISTEN: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	// A variable that names no key is refused, as `mulegate run` refuses it.
	r = runMulegate(t, ctx, nil, []string{"MULEGATE_DATA_DIRR=" + n.Data, "MULEGATE_API=" + n.API}, "status")
	if r.Err == nil || !strings.Contains(string(r.Stderr), "MULEGATE_DATA_DIRR") {
		t.Errorf("status with a misspelt variable: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	// Nothing any refused send did was stored.
	if list, err := n.Client(t).Bundles(ctx, api.BundleQuery{}); err != nil || len(list) != 0 {
		t.Errorf("refused sends left %d bundles (%v)", len(list), err)
	}
}
