package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/spf13/cobra"
)

func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Create and inspect BPv7 bundle files",
		Long: "Operator tools for looking inside bundle bytes, like dtn7's dtn-tool.\n" +
			"Use them to check mulegate's codec against bundles made by ION, HDTN, µD3TN, dtn7 or Hardy.",
	}
	cmd.AddCommand(newBundleCreateCmd(), newBundleShowCmd())
	return cmd
}

func newBundleCreateCmd() *cobra.Command {
	var (
		src, dst, reportTo string
		lifetime           time.Duration
		crc                string
		payloadPath, out   string
		hopLimit, seq      uint64
		reports            bool
	)
	cmd := &cobra.Command{
		Use:   "create --src EID --dst EID [--payload FILE|-] [-o OUT]",
		Short: "Write an encoded bundle",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			source, err := bundle.ParseEID(src)
			if err != nil {
				return fmt.Errorf("--src: %w", err)
			}
			dest, err := bundle.ParseEID(dst)
			if err != nil {
				return fmt.Errorf("--dst: %w", err)
			}
			var rpt bundle.EID
			if reportTo != "" {
				if rpt, err = bundle.ParseEID(reportTo); err != nil {
					return fmt.Errorf("--report-to: %w", err)
				}
			}
			crcType, err := bundle.ParseCRCType(crc)
			if err != nil {
				return fmt.Errorf("--crc: %w", err)
			}
			payload, size, cleanup, err := openSizedInput(payloadPath, cmd.InOrStdin())
			if err != nil {
				return err
			}
			defer cleanup()
			var flags bundle.BundleFlags
			if reports {
				flags |= bundle.FlagReportDelivery | bundle.FlagReportDeletion | bundle.FlagStatusTimeRequested
			}
			params := bundle.Params{
				Source: source, Destination: dest, ReportTo: rpt, Flags: flags,
				Sequence: seq, Lifetime: lifetime, CRCType: crcType, HopLimit: hopLimit,
				PayloadLength: uint64(size),
			}
			if crcType == bundle.CRCNone {
				// RFC 9171 requires a CRC on the primary block unless a BIB
				// protects it; "none" applies to the other blocks.
				params.CRCType = bundle.CRC16
			}
			b, err := bundle.New(params)
			if err != nil {
				return err
			}
			b.Payload.CRCType = crcType
			for i := range b.Blocks {
				b.Blocks[i].CRCType = crcType
			}
			w := cmd.OutOrStdout()
			var f *os.File
			if out != "" && out != "-" {
				if f, err = os.Create(out); err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			bw := bufio.NewWriterSize(w, 256<<10)
			if _, err := bundle.Encode(bw, b, payload); err != nil {
				return err
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			if f != nil {
				return f.Close()
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&src, "src", "", "source endpoint ID, e.g. dtn://alice/app (required)")
	fl.StringVar(&dst, "dst", "", "destination endpoint ID (required)")
	fl.StringVar(&reportTo, "report-to", "", "report-to endpoint ID (default: the source)")
	fl.DurationVar(&lifetime, "lifetime", time.Hour, "bundle lifetime")
	fl.StringVar(&crc, "crc", "32", "CRC type for the blocks: 16, 32 or none (the primary block keeps CRC-16 with none)")
	fl.StringVar(&payloadPath, "payload", "-", "payload file, or - for standard input")
	fl.StringVarP(&out, "output", "o", "-", "output file, or - for standard output")
	fl.Uint64Var(&hopLimit, "hop-limit", 0, "add a hop count block with this limit")
	fl.Uint64Var(&seq, "seq", 0, "creation timestamp sequence number")
	fl.BoolVar(&reports, "report", false, "request delivery and deletion status reports")
	_ = cmd.MarkFlagRequired("src")
	_ = cmd.MarkFlagRequired("dst")
	return cmd
}

// openSizedInput opens a payload source whose length must be known before
// encoding. Standard input is spooled to a temporary file, never to memory.
func openSizedInput(path string, stdin io.Reader) (io.Reader, int64, func(), error) {
	if path != "-" && path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, nil, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, nil, err
		}
		return f, st.Size(), func() { f.Close() }, nil
	}
	tmp, err := os.CreateTemp("", "mulegate-payload-*")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("spooling standard input: %w", err)
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	n, err := io.Copy(tmp, stdin)
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("spooling standard input: %w", err)
	}
	return tmp, n, cleanup, nil
}

// bundleJSON is `bundle show --json` output. Its field names are stable.
type bundleJSON struct {
	ID             string      `json:"id"`
	Source         string      `json:"source"`
	Destination    string      `json:"destination"`
	ReportTo       string      `json:"report_to"`
	CreationTime   uint64      `json:"creation_time"`
	CreationUTC    string      `json:"creation_time_utc,omitempty"`
	Sequence       uint64      `json:"sequence"`
	LifetimeMS     int64       `json:"lifetime_ms"`
	Flags          uint64      `json:"flags"`
	FlagNames      []string    `json:"flag_names"`
	CRCType        string      `json:"crc_type"`
	FragmentOffset *uint64     `json:"fragment_offset,omitempty"`
	TotalADULength *uint64     `json:"total_adu_length,omitempty"`
	Blocks         []blockJSON `json:"blocks"`
	PayloadLength  uint64      `json:"payload_length"`
	PayloadSHA256  string      `json:"payload_sha256"`
}

type blockJSON struct {
	Type         uint64           `json:"type"`
	TypeName     string           `json:"type_name"`
	Number       uint64           `json:"number"`
	Flags        uint64           `json:"flags"`
	CRCType      string           `json:"crc_type"`
	DataLength   int              `json:"data_length"`
	HopCount     *bundle.HopCount `json:"hop_count,omitempty"`
	AgeMS        *int64           `json:"age_ms,omitempty"`
	PreviousNode string           `json:"previous_node,omitempty"`
}

func newBundleShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [--json] FILE|-",
		Short: "Decode a bundle, validate it, and print every block",
		Long:  "Decodes and validates a bundle. An invalid bundle makes the command exit with status 1 and the reason.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			br := bufio.NewReaderSize(in, 256<<10)
			b, pr, err := bundle.Decode(br, bundle.Limits{})
			if err != nil {
				return fmt.Errorf("invalid bundle: %w", err)
			}
			h := sha256.New()
			if _, err := io.Copy(h, pr); err != nil {
				return fmt.Errorf("invalid bundle: %w", err)
			}
			if _, err := br.ReadByte(); err == nil {
				return fmt.Errorf("invalid bundle: %w", bundle.ErrTrailingData)
			}
			view := describeBundle(b, hex.EncodeToString(h.Sum(nil)))
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(view)
			}
			printBundle(cmd.OutOrStdout(), view)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON with stable field names")
	return cmd
}

func describeBundle(b *bundle.Bundle, payloadSum string) bundleJSON {
	p := b.Primary
	v := bundleJSON{
		ID:            b.ID().String(),
		Source:        p.Source.String(),
		Destination:   p.Destination.String(),
		ReportTo:      p.ReportTo.String(),
		CreationTime:  uint64(p.Creation.Time),
		Sequence:      p.Creation.Sequence,
		LifetimeMS:    p.Lifetime.Milliseconds(),
		Flags:         uint64(p.Flags),
		FlagNames:     p.Flags.Names(),
		CRCType:       p.CRCType.String(),
		PayloadLength: b.Payload.Length,
		PayloadSHA256: payloadSum,
	}
	if v.FlagNames == nil {
		v.FlagNames = []string{}
	}
	if p.Creation.Time != 0 {
		v.CreationUTC = p.Creation.Time.String()
	}
	if p.IsFragment() {
		off, total := p.FragmentOffset, p.TotalADULength
		v.FragmentOffset, v.TotalADULength = &off, &total
	}
	for _, blk := range b.Blocks {
		bj := blockJSON{Type: uint64(blk.Type), TypeName: blk.Type.String(), Number: blk.Number, Flags: uint64(blk.Flags), CRCType: blk.CRCType.String(), DataLength: len(blk.Data)}
		switch blk.Type {
		case bundle.BlockHopCount:
			if hc, _, err := b.HopCount(); err == nil {
				bj.HopCount = &hc
			}
		case bundle.BlockBundleAge:
			if age, _, err := b.Age(); err == nil {
				ms := age.Milliseconds()
				bj.AgeMS = &ms
			}
		case bundle.BlockPreviousNode:
			if prev, _, err := b.PreviousNode(); err == nil {
				bj.PreviousNode = prev.String()
			}
		}
		v.Blocks = append(v.Blocks, bj)
	}
	v.Blocks = append(v.Blocks, blockJSON{Type: uint64(bundle.BlockPayload), TypeName: bundle.BlockPayload.String(), Number: 1, Flags: uint64(b.Payload.Flags), CRCType: b.Payload.CRCType.String(), DataLength: int(min(b.Payload.Length, 1<<62))})
	return v
}

func printBundle(w io.Writer, v bundleJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "bundle\t%s\n", v.ID)
	fmt.Fprintf(tw, "source\t%s\n", v.Source)
	fmt.Fprintf(tw, "destination\t%s\n", v.Destination)
	fmt.Fprintf(tw, "report-to\t%s\n", v.ReportTo)
	created := "unknown (0)"
	if v.CreationUTC != "" {
		created = fmt.Sprintf("%s (%d)", v.CreationUTC, v.CreationTime)
	}
	fmt.Fprintf(tw, "created\t%s, sequence %d\n", created, v.Sequence)
	fmt.Fprintf(tw, "lifetime\t%s\n", time.Duration(v.LifetimeMS)*time.Millisecond)
	flags := strings.Join(v.FlagNames, ", ")
	if flags == "" {
		flags = "none"
	}
	fmt.Fprintf(tw, "flags\t%#x (%s)\n", v.Flags, flags)
	fmt.Fprintf(tw, "primary CRC\t%s\n", v.CRCType)
	if v.FragmentOffset != nil {
		fmt.Fprintf(tw, "fragment\toffset %d of %d bytes\n", *v.FragmentOffset, *v.TotalADULength)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nblocks:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tTYPE\tFLAGS\tCRC\tLENGTH\tCONTENT")
	for _, blk := range v.Blocks {
		content := ""
		switch {
		case blk.HopCount != nil:
			content = fmt.Sprintf("%d of %d hops", blk.HopCount.Count, blk.HopCount.Limit)
		case blk.AgeMS != nil:
			content = (time.Duration(*blk.AgeMS) * time.Millisecond).String()
		case blk.PreviousNode != "":
			content = blk.PreviousNode
		case blk.Type == uint64(bundle.BlockPayload):
			content = "sha256 " + v.PayloadSHA256
		}
		fmt.Fprintf(tw, "  %d\t%s (%d)\t%s\t%s\t%d\t%s\n", blk.Number, blk.TypeName, blk.Type, bundle.BlockFlags(blk.Flags), blk.CRCType, blk.DataLength, content)
	}
	tw.Flush()
}
