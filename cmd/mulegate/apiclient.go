package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// apiEnv chooses the node the API commands talk to, like --api.
const apiEnv = "MULEGATE_API"

// clientFlags are the flags of every command that talks to a node's API:
// which node, and where its token is.
type clientFlags struct {
	api    string
	data   string
	config string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.api, "api", "", "the node's API `address`, host:port or unix:/path (default $"+apiEnv+", else api.listen of the configuration: 127.0.0.1:4557)")
	fl.StringVar(&f.data, "data", "", "the node's data `directory`, where its API token is (default $"+api.TokenEnv+", else data_dir of the configuration)")
	fl.StringVar(&f.config, "config", "", "the node's configuration `file`, to find its API address and data directory")
}

// resolve returns the API address and the data directory.
func (f *clientFlags) resolve() (addr, dataDir string, err error) {
	// The file and the environment apply as they do to `mulegate run`, so
	// that a client started beside its node (the same shell, the same
	// container, MULEGATE_DATA_DIR set) finds it. (MULEGATE_API and
	// MULEGATE_API_TOKEN are the client's own; the loader skips them.)
	cfg, err := config.Load(f.config, os.Environ())
	if err != nil {
		return "", "", err
	}
	addr = f.api
	if addr == "" {
		addr = os.Getenv(apiEnv)
	}
	if addr == "" {
		addr = cfg.API.Listen
	}
	if addr == "" {
		return "", "", errors.New("the node's API is off (api.listen is empty): give its address with --api or " + apiEnv)
	}
	dataDir = f.data
	if dataDir == "" {
		dataDir = cfg.DataDir
	}
	return dialable(addr), dataDir, nil
}

// dialable turns a wildcard listen address (0.0.0.0:4557, [::]:4557) into
// the loopback address that reaches it.
func dialable(addr string) string {
	if strings.HasPrefix(addr, "unix:") || strings.Contains(addr, "://") {
		return addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	switch host {
	case "", "0.0.0.0":
		return net.JoinHostPort("127.0.0.1", port)
	case "::":
		return net.JoinHostPort("::1", port)
	}
	return addr
}

// client makes the API client: the token comes from --data if given, else
// from $MULEGATE_API_TOKEN, else from the configured data directory.
func (f *clientFlags) client() (*api.Client, string, error) {
	addr, dataDir, err := f.resolve()
	if err != nil {
		return nil, "", err
	}
	token := ""
	if f.data == "" {
		token = os.Getenv(api.TokenEnv)
	}
	if token == "" {
		token, err = api.ReadToken(dataDir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, "", fmt.Errorf("no API token at %s: has the node run with this data directory? Point --data at it, or set %s", api.TokenPath(dataDir), api.TokenEnv)
			}
			return nil, "", fmt.Errorf("reading the API token: %w", err)
		}
	}
	c, err := api.NewClient(addr, token)
	return c, addr, err
}

// explain adds what to do to an error reaching the node.
func explain(err error, addr string) error {
	var ne *net.OpError
	if errors.As(err, &ne) && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) || ne.Op == "dial") {
		return fmt.Errorf("cannot reach the node's API at %s: is `mulegate run` running? (choose the node with --api or %s): %w", addr, apiEnv, err)
	}
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == 401 {
		return fmt.Errorf("%w\n(the token is read from --data DIR/%s or $%s)", err, api.TokenFile, api.TokenEnv)
	}
	return err
}

// signalContext ends on ctrl+c, SIGTERM or SIGHUP (the terminal closed), so
// that a transfer under way cleans up after itself.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
}

// progressMin is the smallest transfer that gets a progress bar.
const progressMin = 1 << 20

// newProgress returns a progress bar on stderr for a transfer of size
// bytes, or nil when stderr is not a terminal or the transfer is small.
func newProgress(cmd *cobra.Command, size int64, desc string) *progressbar.ProgressBar {
	f, ok := cmd.ErrOrStderr().(*os.File)
	if !ok || !isTerminal(f) || size < progressMin {
		return nil
	}
	return progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
	)
}

// withProgress counts what r delivers on bar, if there is one.
func withProgress(r io.Reader, bar *progressbar.ProgressBar) io.Reader {
	if bar == nil {
		return r
	}
	return io.TeeReader(r, bar)
}

// call runs fn against the node f names, with a context that ends on
// Ctrl-C; an error fn returns is explained as explain does.
func (f *clientFlags) call(cmd *cobra.Command, fn func(ctx context.Context, c *api.Client, addr string) error) error {
	c, addr, err := f.client()
	if err != nil {
		return err
	}
	ctx, stop := signalContext(cmd)
	defer stop()
	return explain(fn(ctx, c, addr), addr)
}
