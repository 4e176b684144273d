package main

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/gateway/api"
)

// TestMuleScenario is the scenario of the node issue with three real
// `mulegate run` processes on loopback:
//  1. A sends to C; C is not running.
//  2. A and the mule M meet, and M takes the bundle.
//  3. A stops, then C starts.
//  4. M meets C, and C receives the bundle with the same SHA-256.
//  5. The delivery notice reaches M, and M deletes its copy.
//
// It runs once as written, and once with M killed (SIGKILL) and restarted
// after it took the bundle: what M acknowledged survives.
func TestMuleScenario(t *testing.T) {
	for _, kill := range []bool{false, true} {
		name := "as written"
		if kill {
			name = "mule killed and restarted"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a, m, c := newTestNode(t, "a"), newTestNode(t, "m"), newTestNode(t, "c")
			a.Start(t)
			m.Start(t, a)

			payload := make([]byte, 3<<20)
			for i := range payload {
				payload[i] = byte(i * 31 / 7)
			}
			file := filepath.Join(t.TempDir(), "report.bin")
			if err := os.WriteFile(file, payload, 0o600); err != nil {
				t.Fatal(err)
			}
			id := strings.TrimSpace(string(a.mustMG(t, ctx, nil, "send", "--to", "dtn://c/inbox", "--lifetime", "1h", file)))
			if id == "" {
				t.Fatal("send printed no bundle ID")
			}
			muleHolds := func() bool {
				bs, err := m.Client(t).Bundles(ctx, api.BundleQuery{})
				if err != nil {
					return false
				}
				for _, b := range bs {
					if b.ID == id {
						return true
					}
				}
				return false
			}
			eventually(t, time.Minute, "the mule takes the bundle from A", muleHolds)

			if kill {
				m.Kill(t)
				m.Start(t, a)
				if !muleHolds() {
					t.Fatal("after SIGKILL and restart, the mule lost the bundle it had acknowledged")
				}
			}

			a.Stop(t)
			c.Start(t, m)
			got := c.RecvOne(t, ctx, "dtn://c/inbox", time.Minute)
			if sha256.Sum256(got) != sha256.Sum256(payload) {
				t.Fatal("C received different bytes")
			}
			eventually(t, time.Minute, "the delivery notice makes the mule delete its copy", func() bool { return !muleHolds() })
			if n := m.metric(t, "mulegate_delivery_notices_total", map[string]string{"outcome": "accepted"}); n < 1 {
				t.Errorf("the mule accepted %v delivery notices, want ≥ 1", n)
			}
		})
	}
}
