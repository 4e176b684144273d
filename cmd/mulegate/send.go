package main

import (
	"encoding/json"
	"fmt"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/spf13/cobra"
)

func newSendCmd() *cobra.Command {
	var (
		cf       clientFlags
		to       string
		lifetime string
		report   bool
		reports  string
		flags    string
		reportTo string
		source   string
		hopLimit uint64
		sign     bool
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "send --to EID [flags] FILE|-",
		Short: "Send a file (or standard input) as a bundle through the local node",
		Long: `Send a file as a bundle through the local node's API, and print its bundle ID
once the node has stored it durably. From then on the node carries it: to a
peer, a mule, an adapter, or a local endpoint.

With -, standard input is spooled to a temporary file first (a bundle's
length is in its header), never held in memory. A progress bar shows on a
terminal for large files.`,
		Example: `  mulegate send --to dtn://cloud/logs/syslog /var/log/syslog
  tar c photos | mulegate send --to dtn://~campfire/drop --lifetime 7d -
  mulegate send --to dtn://base/inbox --report notes.txt   # delivery and deletion reports come back to dtn://<this node>/`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p api.SendParams
			var err error
			if p.Destination, err = bundle.ParseEID(to); err != nil {
				return fmt.Errorf("--to %q: %w", to, err)
			}
			if p.Lifetime, err = api.ParseDuration(lifetime); err != nil {
				return fmt.Errorf("--lifetime: %w", err)
			}
			if report {
				p.Reports, _ = api.ParseReports("delivery,deletion")
			}
			if reports != "" {
				f, err := api.ParseReports(reports)
				if err != nil {
					return fmt.Errorf("--reports: %w", err)
				}
				p.Reports |= f
			}
			if flags != "" {
				if p.Flags, err = api.ParseFlags(flags); err != nil {
					return fmt.Errorf("--flags: %w", err)
				}
			}
			if reportTo != "" {
				if p.ReportTo, err = bundle.ParseEID(reportTo); err != nil {
					return fmt.Errorf("--report-to %q: %w", reportTo, err)
				}
				if p.Reports == 0 {
					return fmt.Errorf("--report-to needs --report or --reports: say which status reports to send there")
				}
			}
			if source != "" {
				if p.Source, err = bundle.ParseEID(source); err != nil {
					return fmt.Errorf("--source %q: %w", source, err)
				}
			}
			p.HopLimit = hopLimit
			if cmd.Flags().Changed("sign") {
				p.Sign = &sign
			}

			c, addr, err := cf.client()
			if err != nil {
				return err
			}
			in, size, cleanup, err := openSizedInput(args[0], cmd.InOrStdin())
			if err != nil {
				return err
			}
			defer cleanup()
			ctx, stop := signalContext(cmd)
			defer stop()
			bar := newProgress(cmd, size, "sending")
			res, err := c.Send(ctx, p, withProgress(in, bar), size)
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return explain(err, addr)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.ID)
			return nil
		},
	}
	cf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&to, "to", "", "destination endpoint `EID`, e.g. dtn://cloud/inbox or dtn://~campfire/chat")
	fl.StringVar(&lifetime, "lifetime", "24h", "how long the bundle is worth carrying (90m, 24h, 7d)")
	fl.BoolVar(&report, "report", false, "ask for delivery and deletion status reports (they come to the node's own endpoint, or --report-to)")
	fl.StringVar(&reports, "reports", "", "status reports to ask for: reception,forwarding,delivery,deletion or all")
	fl.StringVar(&flags, "flags", "", "other bundle flags to set: must_not_fragment,app_ack,status_time")
	fl.StringVar(&reportTo, "report-to", "", "endpoint `EID` the status reports go to (default: the source)")
	fl.StringVar(&source, "source", "", "source endpoint `EID` on this node (default: the node ID)")
	fl.Uint64Var(&hopLimit, "hop-limit", 0, "hops the bundle may take, 1-255 (default: the node's routing.default_hop_limit)")
	fl.BoolVar(&sign, "sign", true, "sign the bundle with the node's key (BPSec, COSE); --sign=false sends it unsigned (default: the node's signatures.sign)")
	fl.BoolVar(&asJSON, "json", false, "print the node's answer as JSON")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
