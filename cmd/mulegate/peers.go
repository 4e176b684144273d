package main

import (
	"context"
	"fmt"
	"github.com/mulegate/mulegate/gateway/api"
	"time"

	"github.com/spf13/cobra"
)

func newPeersCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers the local node knows, and its contacts with them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client, addr string) error {
				peers, err := c.Peers(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), peers)
				}
				if len(peers) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no peers: none configured (--peer, peers:) and none met yet")
					return nil
				}
				now := time.Now()
				t := newTable(cmd.OutOrStdout())
				fmt.Fprintln(t, "PEER\tADDRESS\tCONTACT\tCONTACTS\tERRORS\tSENT\tRECEIVED\tLAST ERROR")
				for _, p := range peers {
					contact := "-"
					switch {
					case p.Connected:
						contact = "up " + shortDuration(now.Sub(p.ContactSince))
						if p.Selected {
							contact += " (selected)"
						}
					case !p.LastSeen.IsZero():
						contact = "seen " + shortDuration(now.Sub(p.LastSeen)) + " ago"
					}
					if p.Static {
						contact += ", static"
					}
					sent, recv := "-", "-"
					if p.Session != nil {
						sent = fmt.Sprintf("%d", p.Session.BundlesSent)
						recv = fmt.Sprintf("%d", p.Session.BundlesReceived)
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Node, orNone(p.Address), contact, p.Contacts, p.RecentErrors, sent, recv, orNone(p.LastError))
				}
				return t.Flush()
			})
		},
	}
	cf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, for scripts")
	return cmd
}

// shortDuration prints 4s, 12m, 3h05m, 2d04h.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
