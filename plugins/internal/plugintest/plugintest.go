// Package plugintest lets a test binary act as the adapters its tests
// launch, so that tests run real adapter processes without building
// anything: the host starts built-ins as `<test binary> adapter NAME`, and
// external adapters are symlinks to the test binary named "adapter-NAME".
package plugintest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mulegate/mulegate/plugins/dir"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// EnvHost makes Main run the host function instead of the tests, for tests
// that need the node to be a separate process they can kill.
const EnvHost = "MULEGATE_TEST_HOST"

// Main is the test binary's TestMain: it serves an adapter when started as
// one, runs host when EnvHost is set, and runs the tests otherwise.
func Main(m *testing.M, host func() int) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" {
		os.Exit(serve(os.Args[2]))
	}
	if name, ok := strings.CutPrefix(filepath.Base(os.Args[0]), "adapter-"); ok {
		os.Exit(serve(name))
	}
	if os.Getenv(EnvHost) != "" && host != nil {
		os.Exit(host())
	}
	os.Exit(m.Run())
}

// The adapters a test binary can be.
func serve(name string) int {
	log := sdk.NewLogger()
	switch name {
	case "dir":
	case "noisy":
		// A common mistake: a stray print before the handshake.
		fmt.Println("hello")
	case "noisy-nonl":
		fmt.Print("hello")
	case "dies":
		fmt.Fprintln(os.Stderr, "panic: cannot open the frobnicator")
		return 2
	default:
		fmt.Fprintf(os.Stderr, "plugintest: no test adapter %q\n", name)
		return 2
	}
	if err := sdk.Serve(dir.New(log), sdk.WithLogger(log)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// LinkAdapter makes an external adapter called name in pluginDir (a
// symlink to the test binary, which then serves adapter name) and returns
// its file name and SHA-256.
func LinkAdapter(t testing.TB, pluginDir, name string) (file, sum string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	file = "adapter-" + name
	if err := os.Symlink(self, filepath.Join(pluginDir, file)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return file, hex.EncodeToString(h.Sum(nil))
}
