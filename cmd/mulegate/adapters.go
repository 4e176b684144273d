package main

import (
	"context"
	"fmt"
	"github.com/mulegate/mulegate/gateway/api"
	"time"

	"github.com/spf13/cobra"
)

// newAdaptersCmd is the operator's view of the node's adapters (not to be
// confused with `mulegate adapter NAME`, which runs one in plugin mode).
func newAdaptersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "adapters", Short: "Show the node's delivery adapters and check their services"}
	var (
		cf     clientFlags
		asJSON bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "Each adapter's state, connectivity, queue depth and last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client, _ string) error {
				as, err := c.Adapters(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), as)
				}
				if len(as) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no adapters configured")
					return nil
				}
				now := time.Now()
				t := newTable(cmd.OutOrStdout())
				fmt.Fprintln(t, "ADAPTER\tTYPE\tSTATE\tSERVICE\tPENDING\tIN FLIGHT\tFAILED\tRESTARTS\tLAST ERROR")
				for _, a := range as {
					state := "down"
					if a.Running {
						state = "up " + shortDuration(now.Sub(a.Since))
					}
					service := "unreachable"
					if a.Reachable {
						service = "reachable"
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", a.Name, a.Type, state, service, a.Queue.Pending, a.Queue.InFlight, a.Queue.Failed, a.Restarts, a.LastError)
				}
				return t.Flush()
			})
		},
	}
	cf.add(list)
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var checkFlags clientFlags
	check := &cobra.Command{
		Use:   "check NAME",
		Short: "Ask an adapter now whether its service is reachable; exits 1 if not",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return checkFlags.call(cmd, func(ctx context.Context, c *api.Client, _ string) error {
				res, err := c.CheckAdapter(ctx, args[0])
				if err != nil {
					return err
				}
				if !res.Reachable {
					return fmt.Errorf("adapter %s: service unreachable: %s", res.Name, res.Error)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "adapter %s: service reachable\n", res.Name)
				return nil
			})
		},
	}
	checkFlags.add(check)
	cmd.AddCommand(list, check)
	return cmd
}
