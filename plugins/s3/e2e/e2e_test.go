// Package e2e holds the s3 adapter's end-to-end tests: real `mulegate
// run` nodes, which run the adapter as `mulegate adapter s3` under their
// adapter queues, against a real versitygw process, with bundles carried
// by a mule between nodes that never meet. They build the mulegate
// binary, so they are skipped with -short. They live apart from the
// adapter's own tests so that those never depend on the node's packages.
package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/mulegate/mulegate/internal/nodetest"
	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins/s3"
	"github.com/mulegate/mulegate/plugins/s3/internal/s3test"
)

var (
	eventually = servertest.Eventually
	errNotYet  = servertest.ErrNotYet
)

const bucket = "mulegate"

// s3NodeConfig is a gateway node's configuration with the s3 adapter
// routing dtn://cloud/files/** to objects "files/{src_node}/{bundle_key}",
// and, with fetch, taking inbound objects from inbox/.
func s3NodeConfig(srv *s3test.Server, fetch bool) string {
	return fmt.Sprintf(`adapters:
  - name: objects
    builtin: s3
    max_in_flight: 16
    fetch: %v
    config:
      endpoint: %q
      bucket: %s
      path_style: true
      region: %s
      credentials: {access_key_id: %q, secret_access_key: %q}
      connect_timeout: 1s
      max_attempts: 2
      inbound: {prefix: inbox/, poll_interval: 200ms}
routes:
  - match: "dtn://cloud/files/**"
    adapter: objects
    options: {key: "files/{src_node}/{bundle_key}", content_type: "application/x-report"}
`, fetch, srv.URL(), bucket, s3test.Region, s3test.AccessKey, s3test.SecretKey)
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 8))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// send sends payload to dst through the node's API and returns the
// bundle's ID.
func send(t *testing.T, n *nodetest.Node, dst string, payload []byte) string {
	t.Helper()
	eid, err := bundle.ParseEID(dst)
	if err != nil {
		t.Fatal(err)
	}
	res, err := n.Client(t).Send(t.Context(), api.SendParams{Destination: eid, Lifetime: time.Hour}, bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
}

// TestE2EBundleThroughMuleLandsInS3: a bundle sent at node A for
// dtn://cloud/files/report is picked up by the mule M, which then meets
// the cloud gateway; its route hands the bundle to the s3 adapter, and it
// lands as one object at files/a/<bundle_key>, with its bytes and the
// bundle's metadata.
func TestE2EBundleThroughMuleLandsInS3(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	srv := s3test.StartServer(t, bucket)
	a := nodetest.New(t, bin, "a", "adapters: []\nroutes: []\n")
	m := nodetest.New(t, bin, "mule", "adapters: []\nroutes: []\n")
	g := nodetest.New(t, bin, "cloud", s3NodeConfig(srv, false))

	a.Start(t)
	body := randomBytes(1, 300<<10)
	id := send(t, a, "dtn://cloud/files/report", body)
	parsed, err := bundle.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	key := "files/a/" + parsed.Key()

	// The mule meets A, takes the bundle, and leaves; A goes away.
	m.Start(t, a)
	m.WaitHolds(t, id, 60*time.Second)
	a.Stop(t)
	if keys := srv.Keys(bucket, ""); len(keys) != 0 {
		t.Fatalf("objects before the gateway ever saw the bundle: %q", keys)
	}

	// The gateway meets the mule: the bundle lands in the bucket.
	g.Start(t, m)
	eventually(t, 60*time.Second, "the object is in the bucket", func() error {
		if _, ok := srv.Get(bucket, key); !ok {
			return fmt.Errorf("no object at %s; bucket holds %q", key, srv.Keys(bucket, ""))
		}
		return nil
	})
	o, _ := srv.Get(bucket, key)
	if sha256.Sum256(o.Body) != sha256.Sum256(body) {
		t.Fatalf("the object's %d bytes differ from the %d sent", len(o.Body), len(body))
	}
	if got := s3.ParseMetaValue(o.Metadata[s3.MetaBundleID]); got != id {
		t.Errorf("object's bundle ID %q, want %q", got, id)
	}
	if got := o.Metadata[s3.MetaDestination]; got != "dtn://cloud/files/report" || !strings.HasPrefix(o.Metadata[s3.MetaSource], "dtn://a/") || o.ContentType != "application/x-report" {
		t.Errorf("object's metadata %v, content type %q", o.Metadata, o.ContentType)
	}
	eventually(t, 30*time.Second, "the gateway's queue drained", func() error {
		if q := g.Queued(t); q != 0 {
			return fmt.Errorf("%d still queued", q)
		}
		return nil
	})
	if keys := srv.Keys(bucket, ""); len(keys) != 1 {
		t.Errorf("bucket holds %q, want one object", keys)
	}
}

// TestE2EInboundObjectThroughMule: an object put at
// inbox/nodeC/inbox/msg.bin is fetched by the cloud gateway G (deleted
// only once G stored it), carried by the mule M, which meets G and then
// C, and received on C with the same bytes. An object whose key names no
// node is moved to rejected/ with the reason.
func TestE2EInboundObjectThroughMule(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	srv := s3test.StartServer(t, bucket)
	body := randomBytes(2, 200<<10)
	srv.Put(bucket, "inbox/nodeC/inbox/msg.bin", body, nil)
	srv.Put(bucket, "inbox/stray.bin", []byte("for nobody"), nil)

	g := nodetest.New(t, bin, "cloud", s3NodeConfig(srv, true))
	m := nodetest.New(t, bin, "mule", "adapters: []\nroutes: []\n")
	c := nodetest.New(t, bin, "nodeC", "adapters: []\nroutes: []\n")
	g.Start(t)

	var id string
	eventually(t, 30*time.Second, "G holds the bundle for dtn://nodeC/inbox", func() error {
		l, err := g.Client(t).Bundles(t.Context(), api.BundleQuery{Limit: 100})
		if err != nil {
			return err
		}
		for _, b := range l {
			if b.Destination == "dtn://nodeC/inbox" && b.Length == uint64(len(body)) {
				id = b.ID
				return nil
			}
		}
		return errNotYet
	})
	eventually(t, 10*time.Second, "the object deleted once stored, the stray one set aside", func() error {
		keys := srv.Keys(bucket, "")
		if len(keys) != 1 || keys[0] != "rejected/stray.bin" {
			return fmt.Errorf("bucket holds %q", keys)
		}
		return nil
	})
	o, _ := srv.Get(bucket, "rejected/stray.bin")
	if reason := s3.ParseMetaValue(o.Metadata[s3.MetaRejectedReason]); !strings.Contains(reason, "names no node") {
		t.Errorf("set aside with reason %q", reason)
	}

	m.Start(t, g)
	m.WaitHolds(t, id, 60*time.Second)
	g.Stop(t)
	c.Start(t, m)
	got := c.RecvOne(t, t.Context(), c.ID()+"inbox", 90*time.Second)
	if sha256.Sum256(got) != sha256.Sum256(body) {
		t.Fatalf("C received %d bytes that differ from the %d put", len(got), len(body))
	}
}

// TestE2EServerDownAtStart: with the S3 server down, bundles wait in the
// queue and `mulegate adapters list` shows the adapter unreachable, with
// the reason; once the server starts, the queue drains by itself, one
// object per bundle.
func TestE2EServerDownAtStart(t *testing.T) {
	bin := nodetest.BuildForTest(t)
	srv := s3test.NewServer(t)
	srv.Start()
	srv.CreateBucket(bucket)
	srv.Kill()
	g := nodetest.New(t, bin, "cloud", s3NodeConfig(srv, false))
	g.Start(t)
	const count = 50
	for i := range count {
		send(t, g, fmt.Sprintf("dtn://cloud/files/r%d", i), randomBytes(uint64(i), 1000+i))
	}

	eventually(t, 20*time.Second, "`mulegate adapters list` shows the adapter unreachable with the bundles queued", func() error {
		r := g.CLI(t.Context(), nil, "adapters", "list", "--json")
		out := r.Stdout
		if r.Err != nil {
			return fmt.Errorf("mulegate adapters list: %v\n%s", r.Err, r.Stderr)
		}
		var list []struct {
			Name      string `json:"name"`
			LastError string `json:"last_error"`
			Running   bool   `json:"running"`
			Reachable bool   `json:"reachable"`
			Queue     struct {
				Pending  int64 `json:"pending"`
				InFlight int64 `json:"in_flight"`
			} `json:"queue"`
		}
		if err := json.Unmarshal(out, &list); err != nil || len(list) != 1 {
			return fmt.Errorf("adapters list --json: %s (%v)", out, err)
		}
		a := list[0]
		if a.Name != "objects" || !a.Running || a.Reachable || !strings.Contains(a.LastError, "cannot reach") ||
			a.Queue.Pending+a.Queue.InFlight != count {
			return fmt.Errorf("adapters list: %+v", a)
		}
		return nil
	})
	if r := g.CLI(t.Context(), nil, "adapters", "list"); r.Err != nil || !regexp.MustCompile(`(?m)^objects\s.*\sunreachable\s`).Match(r.Stdout) {
		t.Errorf("mulegate adapters list (%v):\n%s", r.Err, r.Stdout)
	}

	srv.Start()
	eventually(t, time.Minute, "the queue drained by itself", func() error {
		if q := g.Queued(t); q != 0 {
			return fmt.Errorf("%d still queued", q)
		}
		return nil
	})
	if keys := srv.Keys(bucket, "files/cloud/"); len(keys) != count {
		t.Fatalf("bucket holds %d objects, want %d", len(keys), count)
	}
}
