package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/cmd/mulegate/incoming"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/spf13/cobra"
)

// errEnough ends a receive loop once --count payloads are taken.
var errEnough = errors.New("enough")

// recvResult is what `recv --json` prints for each payload taken.
type recvResult struct {
	ID          string `json:"id"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Bytes       int64  `json:"bytes"`
	Path        string `json:"path,omitempty"`
	HopCount    uint64 `json:"hop_count,omitempty"`
	AgeMS       int64  `json:"age_ms"`
}

func newRecvCmd() *cobra.Command {
	var (
		cf       clientFlags
		endpoint string
		follow   bool
		count    int
		out      string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "recv --endpoint EID [--follow] [--count N] [--out DIR|-]",
		Short: "Take the bundles delivered to an endpoint of the local node",
		Long: `Take the payloads of the bundles waiting at an endpoint of the local node,
oldest first, and acknowledge each one only once it is written: with --out
DIR, into a new file in DIR (named after its source and creation time, never
overwriting a file) that is fsynced first; with --out - (the default), to
standard output.

Without --follow, recv takes what is waiting and ends; with --follow, it
waits for more. --count N ends after N payloads. A group endpoint
(dtn://~name/…) is registered on the node first.`,
		Example: `  mulegate recv --endpoint dtn://base/inbox --out ~/inbox
  mulegate recv --endpoint dtn://base/inbox --follow --count 1 > payload.bin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ep, err := bundle.ParseEID(endpoint)
			if err != nil {
				return fmt.Errorf("--endpoint %q: %w", endpoint, err)
			}
			if count < 0 {
				return errors.New("--count must not be negative")
			}
			c, addr, err := cf.client()
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			if !ep.IsSingleton() {
				if _, err := c.Register(ctx, ep); err != nil {
					return explain(err, addr)
				}
			}
			r := &receiver{cmd: cmd, c: c, ep: ep, out: out, json: asJSON, count: count}
			if out != "-" {
				if err := os.MkdirAll(out, 0o700); err != nil {
					return err
				}
			}
			if follow {
				err = c.Stream(ctx, ep, func(d api.Delivery) error { return r.take(ctx, d) })
			} else {
				err = r.drain(ctx)
			}
			switch {
			case errors.Is(err, errEnough):
				err = nil
			case errors.Is(err, context.Canceled) && ctx.Err() != nil:
				err = nil // interrupted: what was taken is acknowledged
			}
			if err != nil {
				return explain(err, addr)
			}
			if !follow && r.taken == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "nothing waiting at %s\n", ep)
			}
			return nil
		},
	}
	cf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&endpoint, "endpoint", "", "the endpoint `EID` to take bundles from, e.g. dtn://base/inbox")
	fl.BoolVar(&follow, "follow", false, "keep waiting for bundles (until interrupted, or --count)")
	fl.IntVar(&count, "count", 0, "take at most `N` payloads (0: no limit)")
	fl.StringVar(&out, "out", "-", "a `DIR` to write each payload into as a new file, or - for standard output")
	fl.BoolVar(&asJSON, "json", false, "with --out DIR, print a JSON line for each payload taken")
	_ = cmd.MarkFlagRequired("endpoint")
	return cmd
}

type receiver struct {
	cmd   *cobra.Command
	c     *api.Client
	ep    bundle.EID
	out   string
	json  bool
	count int
	taken int
}

// drain takes what is waiting now.
func (r *receiver) drain(ctx context.Context) error {
	for {
		list, err := r.c.Deliveries(ctx, r.ep, 0)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return nil
		}
		for _, d := range list {
			if err := r.take(ctx, d); err != nil {
				return err
			}
		}
	}
}

// take writes one payload out, checks it against the node's length and
// checksum, and only then acknowledges it.
func (r *receiver) take(ctx context.Context, d api.Delivery) error {
	p, err := r.c.OpenPayload(ctx, d.ID)
	if err != nil {
		return err
	}
	defer p.Close()
	bar := newProgress(r.cmd, p.Length, "receiving")
	cr := &crc32cReader{r: withProgress(p, bar), h: crc32.New(crc32.MakeTable(crc32.Castagnoli))}
	check := func(n int64) error {
		if n != int64(d.Length) {
			return fmt.Errorf("bundle %s: %d of %d payload bytes arrived", d.ID, n, d.Length)
		}
		if p.HasCRC && cr.h.Sum32() != p.CRC32C {
			return fmt.Errorf("bundle %s: the payload's CRC-32C is %08x, the node's is %08x", d.ID, cr.h.Sum32(), p.CRC32C)
		}
		return nil
	}
	res := recvResult{ID: d.ID, Source: d.Source, Destination: d.Destination, AgeMS: d.AgeMS}
	if d.HopCount != nil {
		res.HopCount = d.HopCount.Count
	}
	if r.out == "-" {
		w := r.cmd.OutOrStdout()
		n, err := io.Copy(w, cr)
		if err == nil {
			err = check(n)
		}
		if err == nil {
			if f, ok := w.(*os.File); ok {
				// A file or a pipe: make what was written durable if it can
				// be (a pipe or terminal cannot, and says so).
				if serr := f.Sync(); serr != nil && !errors.Is(serr, os.ErrInvalid) && !isUnsyncable(serr) {
					err = serr
				}
			}
		}
		if bar != nil {
			_ = bar.Finish()
		}
		if err != nil {
			return err
		}
		res.Bytes = n
	} else {
		path, n, err := incoming.Save(r.out, fileNameFor(d), cr, check)
		if bar != nil {
			_ = bar.Finish()
		}
		if err != nil {
			return err
		}
		res.Bytes, res.Path = n, path
	}
	if err := r.c.Ack(ctx, r.ep, d.ID); err != nil {
		return fmt.Errorf("acknowledging %s: %w", d.ID, err)
	}
	r.taken++
	switch {
	case r.out == "-":
		fmt.Fprintf(r.cmd.ErrOrStderr(), "%s: %d bytes from %s\n", d.ID, res.Bytes, d.Source)
	case r.json:
		b, _ := json.Marshal(res)
		fmt.Fprintln(r.cmd.OutOrStdout(), string(b))
	default:
		fmt.Fprintln(r.cmd.OutOrStdout(), res.Path)
		fmt.Fprintf(r.cmd.ErrOrStderr(), "%s: %d bytes from %s\n", filepath.Base(res.Path), res.Bytes, d.Source)
	}
	if r.count > 0 && r.taken >= r.count {
		return errEnough
	}
	return nil
}

// fileNameFor names a payload's file after its source node and creation:
// SOURCE-YYYYMMDDTHHMMSS.mmmZ-SEQ (and -OFFSET+LEN for a fragment).
func fileNameFor(d api.Delivery) string {
	name := "bundle"
	if src, err := bundle.ParseEID(d.Source); err == nil && src.NodeName() != "" {
		name = src.NodeName()
	}
	t := d.Created
	if t.IsZero() {
		t = d.Received
	}
	name += "-" + t.UTC().Format("20060102T150405.000Z")
	if id, err := bundle.ParseID(d.ID); err == nil {
		name += fmt.Sprintf("-%d", id.Creation.Sequence)
		if id.Fragment {
			name += fmt.Sprintf("-%d+%d", id.Offset, id.Length)
		}
	}
	return incoming.SafeName(name)
}

type crc32cReader struct {
	r io.Reader
	h hash.Hash32
}

func (c *crc32cReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	return n, err
}

// isUnsyncable reports an fsync error that only says the file (a pipe, a
// terminal, /dev/null) cannot be synced.
func isUnsyncable(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EBADF)
}
