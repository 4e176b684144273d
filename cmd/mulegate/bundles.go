package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/spf13/cobra"
)

func newBundlesCmd() *cobra.Command {
	var (
		cf     clientFlags
		q      api.BundleQuery
		dest   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "bundles [ID]",
		Short: "List the bundles the local node holds, and where each stands with each destination",
		Long: `List the bundles the local node holds, oldest first, with their progress
towards each destination (a peer, an adapter, a local endpoint): pending,
in_flight, done or failed, with attempts and the last error. "carried"
bundles have no destination on this node yet: they wait for a peer.

With an ID, show that one bundle.`,
		Example: `  mulegate bundles --state failed
  mulegate bundles --destination dtn://cloud/logs/syslog --json
  mulegate bundles 'dtn://alice/|797000000000.0'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dest != "" {
				e, err := bundle.ParseEID(dest)
				if err != nil {
					return fmt.Errorf("--destination %q: %w", dest, err)
				}
				q.Destination = e
			}
			if q.State != "" && !contains(api.States, q.State) {
				return fmt.Errorf("--state %q: use one of %s", q.State, strings.Join(api.States, ", "))
			}
			c, addr, err := cf.client()
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			w := cmd.OutOrStdout()
			if len(args) == 1 {
				if _, err := bundle.ParseID(args[0]); err != nil {
					return err
				}
				bi, err := c.Bundle(ctx, args[0])
				if err != nil {
					return explain(err, addr)
				}
				if asJSON {
					return printJSON(w, bi)
				}
				printBundleInfo(w, bi)
				return nil
			}
			list, err := c.Bundles(ctx, q)
			if err != nil {
				return explain(err, addr)
			}
			if asJSON {
				return printJSON(w, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no bundles")
				return nil
			}
			now := time.Now()
			t := newTable(w)
			fmt.Fprintln(t, "ID\tSOURCE\tDESTINATION\tSIZE\tAGE\tEXPIRES IN\tPROGRESS")
			for _, b := range list {
				age := "-"
				if !b.Created.IsZero() {
					age = shortDuration(now.Sub(b.Created))
				}
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Source, b.Destination, humanSize(int64(b.Length)), age, shortDuration(b.Expires.Sub(now)), progressSummary(b.Progress))
			}
			return t.Flush()
		},
	}
	cf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&q.State, "state", "", "only bundles with a destination in this `state`: "+strings.Join(api.States, ", "))
	fl.StringVar(&dest, "destination", "", "only bundles for this endpoint `EID`")
	fl.IntVar(&q.Limit, "limit", 0, "list at most `N` bundles (default 1000)")
	fl.BoolVar(&asJSON, "json", false, "print JSON, for scripts")
	return cmd
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func progressSummary(ps []gateway.ProgressInfo) string {
	if len(ps) == 0 {
		return "carried"
	}
	var parts []string
	for _, p := range ps {
		s := p.Destination + " " + p.State
		if p.Attempts > 0 && p.State != "done" {
			s += fmt.Sprintf(" (%d attempts)", p.Attempts)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func printBundleInfo(w io.Writer, b gateway.BundleInfo) {
	t := newTable(w)
	fmt.Fprintf(t, "id\t%s\n", b.ID)
	fmt.Fprintf(t, "source\t%s\n", b.Source)
	fmt.Fprintf(t, "destination\t%s\n", b.Destination)
	if !b.Created.IsZero() {
		fmt.Fprintf(t, "created\t%s\n", b.Created.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(t, "received\t%s from %s\n", b.Received.Local().Format(time.RFC3339), b.From)
	fmt.Fprintf(t, "expires\t%s\n", b.Expires.Local().Format(time.RFC3339))
	fmt.Fprintf(t, "payload\t%s (%d bytes)\n", humanSize(int64(b.Length)), b.Length)
	if b.HopCount != nil {
		fmt.Fprintf(t, "hops\t%d of %d\n", b.HopCount.Count, b.HopCount.Limit)
	}
	if b.Fragment {
		fmt.Fprintf(t, "fragment\tyes\n")
	}
	if len(b.Progress) == 0 {
		fmt.Fprintf(t, "progress\tcarried: no destination on this node yet\n")
	}
	for i, p := range b.Progress {
		label := ""
		if i == 0 {
			label = "progress"
		}
		line := fmt.Sprintf("%s: %s, %d attempts", p.Destination, p.State, p.Attempts)
		if !p.NextAttempt.IsZero() && p.State != "done" {
			line += ", next " + p.NextAttempt.Local().Format("15:04:05")
		}
		if p.LastError != "" {
			line += ", last error: " + p.LastError
		}
		fmt.Fprintf(t, "%s\t%s\n", label, line)
	}
	t.Flush()
}
