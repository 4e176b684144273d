// Command mulegate-webhook is an example external mulegate adapter: it
// delivers each bundle as an HTTP POST to a configured URL. Copy this
// directory to start your own adapter; plugins/README.md walks through it.
package main

import (
	"fmt"
	"os"

	"github.com/mulegate/mulegate/plugins/sdk"
)

func main() {
	log := sdk.NewLogger()
	if err := sdk.Serve(newWebhook(log), sdk.WithLogger(log)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
