package s3_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mulegate/mulegate/internal/servertest"
	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/host"
	"github.com/mulegate/mulegate/plugins/internal/plugintest"
	"github.com/mulegate/mulegate/plugins/s3"
	"github.com/mulegate/mulegate/plugins/s3/internal/s3test"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// TestMain lets the test binary be the s3 adapter the host launches
// (`<test binary> adapter s3`), and the other test adapters plugintest
// knows.
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" && os.Args[2] == "s3" {
		log := sdk.NewLogger()
		if err := sdk.Serve(s3.New(log), sdk.WithLogger(log)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	plugintest.Main(m, nil)
}

const bucket = "mulegate"

var (
	startServer = s3test.StartServer
	newServer   = s3test.NewServer
	eventually  = servertest.Eventually
)

// obj is a JSON object literal, for configurations.
type obj = map[string]any

// serverConfig is the adapter's configuration for srv, with more keys.
func serverConfig(srv *s3test.Server, more obj) obj {
	cfg := obj{
		"endpoint":    srv.URL(),
		"bucket":      bucket,
		"path_style":  true,
		"region":      s3test.Region,
		"credentials": obj{"access_key_id": s3test.AccessKey, "secret_access_key": s3test.SecretKey},
	}
	for k, v := range more {
		cfg[k] = v
	}
	return cfg
}

// startAdapter runs the s3 adapter in its own process, as the node does,
// configured with cfg (marshalled to JSON).
func startAdapter(t testing.TB, cfg any) (*host.Manager, plugins.Adapter) {
	t.Helper()
	m, err := launchAdapter(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := m.Adapter("objects")
	if err != nil {
		t.Fatal(err)
	}
	return m, ad
}

// launchAdapter is startAdapter for a test that expects the adapter to
// refuse cfg: it returns what the host's Start returned.
func launchAdapter(t testing.TB, cfg any) (*host.Manager, error) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := host.New(host.Options{
		Log:           zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
		CheckInterval: time.Hour, // the tests call Check themselves
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, m.Start(t.Context(), host.Spec{Name: "objects", Builtin: "s3", Config: raw})
}

func adapterPID(m *host.Manager) int {
	st, _ := m.Status("objects")
	return st.PID
}

// inProcess returns the adapter as a plain Go value, configured.
func inProcess(t testing.TB, cfg any) *s3.Adapter {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ad := s3.New(zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)))
	if err := ad.Configure(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ad.Close() })
	return ad
}

// testBundle returns bundle i's metadata and payload. Odd bundles carry a
// route key option (as the node expands "files/{src_node}/{bundle_key}"),
// even ones leave the key to the adapter's template.
func testBundle(i, size int) (plugins.Meta, []byte) {
	payload := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range payload {
		payload[j] = byte(r.Uint32())
	}
	src := fmt.Sprintf("dtn://mule%d/app", i%5)
	created := uint64(800000000000 + i)
	m := plugins.Meta{
		BundleID:      fmt.Sprintf("%s|%d.%d", src, created, i),
		Source:        src,
		Destination:   fmt.Sprintf("dtn://cloud/files/app%d", i%3),
		ReportTo:      "dtn:none",
		CreationTime:  created,
		Sequence:      uint64(i),
		Lifetime:      24 * time.Hour,
		PayloadLength: int64(size),
		Route:         "dtn://cloud/files/**",
	}
	if i%2 == 1 {
		m.Options = map[string]string{"key": fmt.Sprintf("files/mule%d/%s", i%5, sdk.BundleKey(m.BundleID)), "content_type": "text/plain"}
		m.ReportTo = "dtn://mule0/reports"
	}
	if i%4 == 0 {
		m.SignatureStatus = "valid:campfire/mule" + strconv.Itoa(i%5)
	}
	return m, payload
}

// patternReader yields size pseudo-random bytes without holding them, and
// hashes what it yields.
type patternReader struct {
	r    *rand.Rand
	left int64
	h    hash.Hash
	cur  uint64 // random bits not yet handed out
	bits int
}

func newPatternReader(seed uint64, size int64) *patternReader {
	return &patternReader{r: rand.New(rand.NewPCG(seed, 99)), left: size, h: sha256.New()}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		if p.bits == 0 {
			p.cur, p.bits = p.r.Uint64(), 64
		}
		b[i] = byte(p.cur)
		p.cur >>= 8
		p.bits -= 8
	}
	p.left -= int64(len(b))
	p.h.Write(b)
	return len(b), nil
}

func sumOf(seed uint64, size int64) [32]byte {
	p := newPatternReader(seed, size)
	_, _ = io.Copy(io.Discard, p)
	var s [32]byte
	copy(s[:], p.h.Sum(nil))
	return s
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
