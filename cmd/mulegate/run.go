package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// runFlags are the essentials `mulegate run` takes on the command line, so
// that a node can be started from a script with no configuration file.
type runFlags struct {
	configFile string
	node       string
	data       string
	listenQUIC string
	api        string
	peers      []string
	discovery  bool
	logLevel   string
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a node",
		Long: `Run a mulegate node: store bundles, carry them between peers over QUIC,
and deliver them to local applications and adapters.

With no flags and no configuration file, the node runs on its embedded
defaults (see 'mulegate config default'): node ID dtn://<hostname>/, data in
~/.local/share/mulegate, QUIC on [::]:4556, the API on 127.0.0.1:4557, LAN
discovery on, and the built-in dir adapter as a gateway to the file system.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadRunConfig(cmd, f)
			if err != nil {
				return err
			}
			log, err := newLogger(cfg.Log)
			if err != nil {
				return err
			}
			defer log.Sync()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runNode(ctx, cfg, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "YAML configuration `file` (keys not in it keep their defaults)")
	fl.StringVar(&f.node, "node", "", "this node's ID, e.g. dtn://mule1/ (default dtn://<hostname>/)")
	fl.StringVar(&f.data, "data", "", "data `directory` for the store, identity and API token")
	fl.StringVar(&f.listenQUIC, "listen-quic", "", "QUIC listen `address` host:port (default [::]:4556)")
	fl.StringVar(&f.api, "api", "", "API listen address host:port or unix:/path (default 127.0.0.1:4557)")
	fl.StringArrayVar(&f.peers, "peer", nil, "static peer `EID@HOST:PORT`, e.g. dtn://cloud/@gw.example.org:4556 (repeatable)")
	fl.BoolVar(&f.discovery, "discovery", true, "announce and discover peers on the LAN by UDP multicast")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	return cmd
}

// loadRunConfig builds the configuration: defaults, then the file, then
// MULEGATE_* variables, then flags.
func loadRunConfig(cmd *cobra.Command, f runFlags) (*config.Config, error) {
	cfg, err := config.Load(f.configFile, os.Environ())
	if err != nil {
		return nil, err
	}
	fl := cmd.Flags()
	if fl.Changed("node") {
		cfg.Node = f.node
	}
	if fl.Changed("data") {
		cfg.DataDir = f.data
	}
	if fl.Changed("listen-quic") {
		cfg.QUIC.Listen = f.listenQUIC
	}
	if fl.Changed("api") {
		cfg.API.Listen = f.api
	}
	if fl.Changed("discovery") {
		cfg.Discovery.Enabled = f.discovery
	}
	if fl.Changed("log-level") {
		cfg.Log.Level = f.logLevel
	}
	for _, p := range f.peers {
		peer, err := parsePeerFlag(p)
		if err != nil {
			return nil, err
		}
		cfg.Peers = append(cfg.Peers, peer)
	}
	cfg = cfg.Expanded()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration:\n%w", err)
	}
	return cfg, nil
}

// parsePeerFlag reads EID@HOST:PORT.
func parsePeerFlag(s string) (config.Peer, error) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return config.Peer{}, fmt.Errorf("--peer %q: want EID@HOST:PORT, e.g. dtn://cloud/@gw.example.org:4556", s)
	}
	e, err := bundle.ParseEID(s[:i])
	if err != nil {
		return config.Peer{}, fmt.Errorf("--peer %q: %w", s, err)
	}
	return config.Peer{Node: e.NodeID().String(), Address: s[i+1:]}, nil
}

// runNode runs a node until ctx ends, then shuts it down: in-flight stores
// finish before the process exits.
func runNode(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	n, err := gateway.New(gateway.Options{Config: cfg, Logger: log})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		n.Close()
		return err
	}
	log.Info("mulegate running", zap.Stringer("node", n.ID()), zap.Strings("quic", n.ListenAddrs()), zap.String("api", cfg.API.Listen), zap.String("data", cfg.DataDir))
	services, err := startServices(ctx, n, cfg, log)
	if err != nil {
		n.Close()
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	errs := []error{services.Close(), n.Close()}
	return errors.Join(errs...)
}

// newLogger builds the process logger: JSON in production, readable
// console lines on a terminal.
func newLogger(c config.Log) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	format := c.Format
	if format == "auto" {
		format = "json"
		if isTerminal(os.Stderr) {
			format = "console"
		}
	}
	var zc zap.Config
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		zc.DisableStacktrace = true
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "time"
		zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.OutputPaths, zc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	return zc.Build()
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
