package gateway

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// dirSize is the total size of the regular files in dir.
func dirSize(dir string) int64 {
	var total int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
	}
	return total
}

// patternReader yields a deterministic payload without holding it.
type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		x := p.off + int64(i)
		b[i] = byte(x*7 + x>>13)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// TestResumeInterruptedTransfer cuts a 500 MiB transfer in the middle by
// stopping the sender, restarts it, and checks that the receiver completes
// the bundle from the part it kept: only the missing range travels again.
func TestResumeInterruptedTransfer(t *testing.T) {
	const size = 500 << 20
	ctx := context.Background()
	aCfg := testConfig(t, "a")
	a := startNode(t, aCfg)
	m := startNode(t, testConfig(t, "m"))

	id, err := a.Send(ctx, SendRequest{Destination: bundle.MustParseEID("dtn://c/big"), Lifetime: time.Hour, Length: size}, &patternReader{n: size})
	if err != nil {
		t.Fatal(err)
	}
	// The sender comes back on the same address.
	aCfg.QUIC.Listen = a.ListenAddrs()[0]
	m.AddPeer(a.ID(), a.ListenAddrs()[0])
	var before int64
	waitFor(t, "half of the payload to reach the mule", func() bool {
		before = dirSize(filepath.Join(m.cfg.DataDir, "store", "tmp"))
		return before > size/2
	})
	a.Close() // the mule walks away mid-transfer
	var kept uint64
	waitFor(t, "the mule to keep the partial reception", func() bool {
		st, err := m.store.Lookup(ctx, id)
		kept = st.Received
		return err == nil && st.Partial && st.Received > 0
	})
	t.Logf("first contact: %d bytes on the wire, %d payload bytes kept", before, kept)

	// The same node comes back, from its data directory; the mule redials.
	a2 := startNode(t, aCfg)
	waitFor(t, "the mule to complete the bundle", func() bool { return holds(m, id) })
	// What the sender wrote in its session with the mule: the resumed range
	// and the summaries, never the part the mule kept.
	var sent uint64
	found := false
	for _, p := range a2.Peers() {
		if p.Node == m.ID().String() && p.Session != nil {
			sent, found = p.Session.BytesSent, true
		}
	}
	if !found {
		t.Fatal("the restarted sender has no session with the mule: the resumed bytes cannot be counted")
	}
	missing := uint64(size) - kept
	t.Logf("second contact: %d bytes on the wire for %d missing payload bytes", sent, missing)
	if missing+1<<20 > size*3/4 {
		t.Fatalf("the mule kept only %d of %d bytes: too little for the bounds below to tell a resumption from a resend", kept, size)
	}
	if sent < missing {
		t.Fatalf("the second contact carried %d bytes, fewer than the %d missing: the bundle cannot have been completed through it", sent, missing)
	}
	if sent > missing+1<<20 {
		t.Fatalf("the second contact carried %d bytes; only the missing %d (plus summaries) should travel, not the whole %d", sent, missing, size)
	}
	p, err := m.OpenPayload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h1, h2 := sha256.New(), sha256.New()
	if _, err := io.Copy(h1, p); err != nil {
		t.Fatal(err)
	}
	io.Copy(h2, &patternReader{n: size})
	if string(h1.Sum(nil)) != string(h2.Sum(nil)) {
		t.Fatal("the resumed bundle's payload differs from what was sent")
	}
}
