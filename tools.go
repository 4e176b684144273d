//go:build tools

// This file pins the project's chosen dependencies in go.mod before the code
// that uses each of them lands. Remove an import once real code imports it.
package tools

import (
	_ "charm.land/bubbletea/v2"
	_ "github.com/fxamacker/cbor/v2"
	_ "github.com/hashicorp/go-plugin"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/quic-go/quic-go"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/spf13/cobra"
	_ "github.com/veraison/go-cose"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/zap"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/time/rate"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
)
