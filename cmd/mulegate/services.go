package main

import (
	"context"
	"errors"

	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/gateway"
	"go.uber.org/zap"
)

// services are what runs beside the node in `mulegate run`: the local API,
// LAN discovery, the adapters. Each is started here and closed in reverse.
type services struct {
	closers []func() error
}

func (s *services) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

func startServices(ctx context.Context, n *gateway.Node, cfg *config.Config, log *zap.Logger) (*services, error) {
	s := &services{}
	for _, start := range []func(context.Context, *gateway.Node, *config.Config, *zap.Logger) (func() error, error){
		startAPI,
	} {
		stop, err := start(ctx, n, cfg, log)
		if err != nil {
			s.Close() // whatever started before this one
			return nil, err
		}
		s.closers = append(s.closers, stop)
	}
	return s, nil
}
