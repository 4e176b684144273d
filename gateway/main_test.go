package gateway

import (
	"fmt"
	"os"
	"testing"

	"github.com/mulegate/mulegate/plugins/builtin"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// TestMain lets the test binary serve as the built-in adapters the nodes
// under test launch (`<test binary> adapter NAME`), so adapter tests run
// real plugin processes without building mulegate.
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "adapter" {
		os.Exit(serveAdapter(os.Args[2]))
	}
	os.Exit(m.Run())
}

func serveAdapter(name string) int {
	mod, err := builtin.Lookup(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := sdk.NewLogger()
	if err := sdk.Serve(mod.New(log), sdk.WithLogger(log)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
