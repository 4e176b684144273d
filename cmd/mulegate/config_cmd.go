package main

import (
	"fmt"
	"os"

	"github.com/mulegate/mulegate/config"
	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check and print configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file; every error names its key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0], os.Environ())
			if err != nil {
				return err
			}
			if err := cfg.Expanded().Validate(); err != nil {
				return fmt.Errorf("%s:\n%w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (node %s, data %s)\n", args[0], cfg.Node, cfg.DataDir)
			return nil
		},
	}, &cobra.Command{
		Use:   "default",
		Short: "Print the embedded defaults as YAML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.DefaultsYAML())
			return err
		},
	})
	return cmd
}
