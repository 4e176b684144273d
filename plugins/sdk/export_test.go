package sdk

import "google.golang.org/grpc"

// WithServerOptions adds options to the adapter's gRPC server, so that a
// test adapter can behave like one built otherwise (one that answers
// DeliverSession with UNIMPLEMENTED, say).
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *serveOptions) { o.grpcOpts = append(o.grpcOpts, opts...) }
}
