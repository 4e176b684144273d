package gateway

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"go.uber.org/zap/zaptest"
)

// withDirAdapter gives a test node the dir adapter: bundles for
// dtn://NODE/outbox/** become files in out, files in inbox become bundles.
func withDirAdapter(t testing.TB, c *config.Config) (out, inbox string) {
	out, inbox = filepath.Join(c.DataDir, "out"), filepath.Join(c.DataDir, "inbox")
	c.Adapters = []config.Adapter{{
		Name: "files", Builtin: "dir", MaxInFlight: 8, Fetch: true,
		Config: map[string]any{"out": out, "inbox": inbox, "min_age": "0s"},
	}}
	c.Routes = []config.Route{{Match: c.Node + "outbox/**", Adapter: "files", Options: map[string]string{"name": "{src_node}-{bundle_key}"}}}
	c.AdapterCheckInterval = 200 * time.Millisecond
	return out, inbox
}

func TestDirAdapterThroughTheNode(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "gw")
	out, inbox := withDirAdapter(t, cfg)
	self, _ := os.Executable()
	n, err := New(Options{Config: cfg, AdapterExecutable: self, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })

	const count = 200
	var ids []bundle.ID
	for i := 0; i < count; i++ {
		body := []byte(fmt.Sprintf("report %d", i))
		id, err := n.Send(ctx, SendRequest{Destination: bundle.MustParseEID("dtn://gw/outbox/reports"), Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waitFor(t, "every bundle to be written by the adapter", func() bool { return countFiles(out) >= count })
	seen := map[string]bool{}
	for _, id := range ids {
		data, err := os.ReadFile(filepath.Join(out, "gw-"+id.Key()))
		if err != nil {
			t.Fatal(err)
		}
		seen[string(data)] = true
	}
	if got := countFiles(out); got != count || len(seen) != count {
		t.Fatalf("%d files, %d distinct payloads in out; want %d", got, len(seen), count)
	}
	// Delivered bundles are deleted from the store.
	waitFor(t, "delivered bundles to leave the store", func() bool { return n.store.Stats().Bundles == 0 })

	// Inbound: a file dropped in the inbox for dtn://gw/app becomes a
	// bundle there, and the file goes only once the bundle is stored.
	dir := filepath.Join(inbox, "dtn", "gw", "app")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, ".hello.tmp"), []byte("hello from the cloud"), 0o644)
	os.Rename(filepath.Join(dir, ".hello.tmp"), filepath.Join(dir, "hello.txt"))
	app := bundle.MustParseEID("dtn://gw/app")
	waitFor(t, "the inbound file to arrive as a bundle", func() bool {
		got, _ := n.Deliveries(ctx, app, 10)
		return len(got) == 1
	})
	got, _ := n.Deliveries(ctx, app, 10)
	p, _ := n.OpenPayload(ctx, got[0].ID)
	var buf bytes.Buffer
	buf.ReadFrom(p)
	p.Close()
	if buf.String() != "hello from the cloud" {
		t.Fatalf("payload %q", buf.String())
	}
	waitFor(t, "the inbox file to be removed after storing", func() bool {
		_, err := os.Stat(filepath.Join(dir, "hello.txt"))
		return os.IsNotExist(err)
	})
	st := n.Adapters()
	if len(st) != 1 || !st[0].Running || !st[0].Reachable || st[0].Queue.Pending != 0 {
		t.Fatalf("adapter status %+v", st)
	}
}

func countFiles(dir string) int {
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() {
			n++
		}
	}
	return n
}
