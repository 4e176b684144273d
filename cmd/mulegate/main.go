// Command mulegate is the single mulegate binary: the node (`run`), the
// operator tools (`bundle`, `identity`, `config`, …), the API clients
// (`send`, `recv`, `status`, …) and the built-in adapters run in plugin mode
// (`adapter NAME`).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mulegate:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mulegate",
		Short:         "A delay-tolerant networking gateway: data mules carry BPv7 bundles to the cloud",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Each subcommand lives in its own file and is added here, one line each.
	root.AddCommand(
		newBundleCmd(),
		newAdapterCmd(),
		newAdaptersCmd(),
		newIdentityCmd(),
		newRunCmd(),
		newConfigCmd(),
		newSendCmd(),
		newRecvCmd(),
		newStatusCmd(),
		newPeersCmd(),
		newBundlesCmd(),
		newChatCmd(),
	)
	return root
}

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}

// defaultDataDir is where a node keeps its store, identity and API token when
// neither the configuration nor --data says otherwise:
// $XDG_DATA_HOME/mulegate, or ~/.local/share/mulegate.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return d + "/mulegate"
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".mulegate"
	}
	return home + "/.local/share/mulegate"
}
