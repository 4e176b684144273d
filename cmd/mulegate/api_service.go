package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway"
	"github.com/mulegate/mulegate/gateway/api"
	"go.uber.org/zap"
)

// startAPI serves the local API on cfg.API.Listen (none if it is empty)
// with the token in DATA_DIR/api.token, made on first run. The function it
// returns stops the server: new requests are refused, delivery streams end,
// and uploads under way get a few seconds to finish storing.
func startAPI(ctx context.Context, n *gateway.Node, cfg *config.Config, log *zap.Logger) (func() error, error) {
	log = log.Named("api")
	if cfg.API.Listen == "" {
		log.Info("the API is off (api.listen is empty)")
		return func() error { return nil }, nil
	}
	token, tightened, err := api.LoadOrCreateToken(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if tightened {
		log.Warn("the API token file could be read by others; it is now private (0600)", zap.String("file", api.TokenPath(cfg.DataDir)))
	}
	srv, err := api.New(api.Options{Node: n, Token: token, Logger: log})
	if err != nil {
		return nil, err
	}
	ln, err := api.Listen(cfg.API.Listen)
	if err != nil {
		return nil, err
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		log.Warn("the API listens beyond loopback, over plain HTTP: only the token protects it", zap.String("address", ln.Addr().String()))
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("API listening", zap.String("address", apiAddrString(ln.Addr())), zap.String("token_file", api.TokenPath(cfg.DataDir)))
	return func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if serr := <-done; serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	}, nil
}

func apiAddrString(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return strings.TrimSpace(a.String())
}
