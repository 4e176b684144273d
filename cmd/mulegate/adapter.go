package main

import (
	"github.com/spf13/cobra"

	"github.com/mulegate/mulegate/plugins/builtin"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// newAdapterCmd runs a built-in adapter in plugin mode. The node starts it
// (as `<its own executable> adapter NAME`); people do not, so it is hidden.
func newAdapterCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "adapter NAME",
		Short:  "Run the built-in adapter NAME as a plugin process (started by the node)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mod, err := builtin.Lookup(args[0])
			if err != nil {
				return err
			}
			log := sdk.NewLogger()
			defer func() { _ = log.Sync() }()
			return sdk.Serve(mod.New(log), sdk.WithLogger(log))
		},
	}
}
