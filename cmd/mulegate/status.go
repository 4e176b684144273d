package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/mulegate/mulegate/gateway/api"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// printJSON prints v indented, for --json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func newStatusCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the local node's status: peers, endpoints, store use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client, addr string) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), st)
				}
				t := newTable(cmd.OutOrStdout())
				fmt.Fprintf(t, "node\t%s\n", st.Node)
				fmt.Fprintf(t, "up\t%s (since %s)\n", st.Uptime, st.Started.Local().Format("2006-01-02 15:04:05"))
				fmt.Fprintf(t, "listening\t%s\n", orNone(strings.Join(st.Listen, ", ")))
				fmt.Fprintf(t, "API\t%s\n", addr)
				fmt.Fprintf(t, "routing\t%s\n", st.Strategy)
				fmt.Fprintf(t, "peers\t%d known, %d in contact\n", st.Peers, st.Contacts)
				fmt.Fprintf(t, "endpoints\t%s\n", orNone(strings.Join(st.Endpoints, ", ")))
				s := st.Store
				fmt.Fprintf(t, "store\t%d bundles, %s", s.Bundles, humanSize(s.BundleBytes))
				if s.Partials > 0 {
					fmt.Fprintf(t, "; %d partial (%s)", s.Partials, humanSize(s.PartialBytes))
				}
				if s.Receiving > 0 {
					fmt.Fprintf(t, "; %d being received", s.Receiving)
				}
				fmt.Fprintln(t)
				fmt.Fprintf(t, "quota\t%s of %s used (%s), %d of %d bundles\n", humanSize(s.UsedBytes), humanSize(s.MaxBytes), percent(s.UsedBytes, s.MaxBytes), s.UsedBundles, s.MaxBundles)
				if len(s.Destinations) > 0 {
					dests := make([]string, 0, len(s.Destinations))
					for d := range s.Destinations {
						dests = append(dests, d)
					}
					sort.Strings(dests)
					for i, d := range dests {
						c := s.Destinations[d]
						label := ""
						if i == 0 {
							label = "queues"
						}
						fmt.Fprintf(t, "%s\t%s: %d pending, %d in flight, %d done, %d failed\n", label, d, c.Pending, c.InFlight, c.Done, c.Failed)
					}
				}
				if s.Quarantined > 0 {
					fmt.Fprintf(t, "quarantined\t%d payloads failed verification since start\n", s.Quarantined)
				}
				fmt.Fprintf(t, "trust\t%s\n", st.Trust)
				fmt.Fprintf(t, "identity\t%s\n", st.Identity)
				return t.Flush()
			})
		},
	}
	cf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, for scripts")
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func percent(n, of int64) string {
	if of <= 0 {
		return "no quota"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

// humanSize prints a byte count with binary units.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
