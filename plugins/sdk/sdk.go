// Package sdk is what a delivery adapter imports: implement
// plugins.Adapter, then call Serve from main.
//
//	func main() {
//		log := sdk.NewLogger()
//		if err := sdk.Serve(myadapter.New(log)); err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//	}
//
// Serve speaks the go-plugin handshake and serves the adapter over gRPC with
// mutual TLS. It also makes sure the adapter never outlives the node that
// started it: the node asks the kernel to kill the adapter when it dies, and
// as a second line Serve exits when the node's lifeline pipe closes or the
// adapter's parent process changes.
//
// Logs go to stderr as JSON lines that the node re-logs under the adapter's
// name (NewLogger). Never write to stdout: before the handshake the node
// refuses an adapter that does, and after it the node logs stdout as noise.
//
// Optional interfaces are found by type assertion on the value given to
// Serve: io.Closer (Serve calls Close when the node shuts the adapter down),
// and plugins.Rejecter, for an adapter that fetches and can set a message
// the node refuses for good aside (a dead-letter queue, a "rejected"
// folder) instead of offering it again and again. Without Rejecter, Serve
// answers the node's Reject with UNIMPLEMENTED and the node nacks such
// messages instead.
package sdk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/mulegate/mulegate/plugins"
)

// Environment variables the node sets for its adapters, beside go-plugin's
// own. They are part of the contract for adapters written without this SDK.
const (
	// EnvHostPID is the node's process ID. An adapter whose parent process
	// is no longer this one exits.
	EnvHostPID = "MULEGATE_HOST_PID"
	// EnvLifelineFD is the number of a file descriptor (a pipe) that the
	// node never writes to and holds open while it lives. When a read from
	// it returns end of file, the node is gone and the adapter exits.
	EnvLifelineFD = "MULEGATE_HOST_LIFELINE_FD"
	// EnvLogLevel is the node's log level (debug, info, warn, error), so that
	// adapters do not format lines the node would drop.
	EnvLogLevel = "MULEGATE_ADAPTER_LOG_LEVEL"
	// EnvAdapterName is the adapter's name in the node's configuration.
	EnvAdapterName = "MULEGATE_ADAPTER_NAME"
)

// ErrNotStartedByNode is returned by Serve when the program was run by hand
// rather than by a mulegate node.
var ErrNotStartedByNode = errors.New("this program is a mulegate adapter: a mulegate node starts it " +
	"(list it under `adapters:` in the node's configuration); it does not run on its own")

// Option changes how Serve runs.
type Option func(*serveOptions)

type serveOptions struct {
	log        *zap.Logger
	parentPoll time.Duration
	// grpcOpts are added to the gRPC server's options. Only tests set them
	// (export_test.go): to serve the contract as an adapter written
	// elsewhere would, say.
	grpcOpts []grpc.ServerOption
}

// WithLogger sets the logger Serve reports its own events to (the node going
// away, say). Default: NewLogger().
func WithLogger(log *zap.Logger) Option { return func(o *serveOptions) { o.log = log } }

// adapterGCPercent is the garbage collector's target for an adapter
// process, unless GOGC in its environment says otherwise. An adapter's
// live heap is small (the deliveries in flight, bounded by the node's
// max_in_flight), while it allocates per delivery, so with Go's default
// of 100 it collected often, each collection a
// fixed cost: at 400 the nats adapter spent 17 µs of CPU a 1 KiB bundle
// instead of 21, and delivered 19% more a second; the price is a heap of
// up to 5 times the live one rather than 2 times.
const adapterGCPercent = 400

// Serve serves the adapter to the node that started this process, and
// returns when the node closes the connection. If the adapter implements
// io.Closer, Serve calls Close before it returns. If the node dies instead,
// Serve exits the process. Run by hand, it returns ErrNotStartedByNode.
func Serve(adapter plugins.Adapter, opts ...Option) error {
	o := serveOptions{parentPoll: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if os.Getenv(plugins.MagicCookieKey) != plugins.MagicCookieValue {
		return ErrNotStartedByNode
	}
	// go-plugin swaps os.Stderr for a pipe once it serves; loggers made now
	// keep the real stderr, which the node reads as the log stream.
	stderr := os.Stderr
	if o.log == nil {
		o.log = NewLogger()
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(adapterGCPercent)
	}
	if err := watchHost(o.log, o.parentPoll); err != nil {
		return err
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugins.Handshake(),
		Plugins:         plugins.PluginSet(adapter),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return newGRPCServer(append(opts, o.grpcOpts...))
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Output:     stderr,
			JSONFormat: true,
			Level:      hclog.LevelFromString(logLevelName()),
		}),
	})
	if c, ok := adapter.(io.Closer); ok {
		if err := c.Close(); err != nil {
			return fmt.Errorf("closing adapter: %w", err)
		}
	}
	return nil
}

// newGRPCServer adds the contract's transport tuning (plugins.ServerOptions:
// larger flow-control windows, a codec with right-sized buffers) to
// go-plugin's options.
func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return plugin.DefaultGRPCServer(append(opts, plugins.ServerOptions()...))
}

// watchHost makes the adapter exit when the node that started it is gone,
// even if the kernel's parent-death signal was missed (it is tied to the
// thread that forked us, not the node process).
func watchHost(log *zap.Logger, poll time.Duration) error {
	exit := func(why string) {
		log.Warn("the mulegate node that started this adapter is gone; exiting so as not to outlive it", zap.String("why", why))
		os.Exit(3)
	}
	if s := os.Getenv(EnvLifelineFD); s != "" {
		fd, err := strconv.Atoi(s)
		if err != nil || fd < 3 {
			return fmt.Errorf("%s=%q: want a file descriptor number ≥ 3", EnvLifelineFD, s)
		}
		// The lifeline must not leak into programs the adapter runs: they
		// would keep it open and blind the next adapter's watch.
		syscall.CloseOnExec(fd)
		lifeline := os.NewFile(uintptr(fd), "mulegate-lifeline")
		go func() {
			var b [1]byte
			for {
				if _, err := lifeline.Read(b[:]); err != nil {
					exit("lifeline closed: " + err.Error())
					return
				}
			}
		}()
	}
	if s := os.Getenv(EnvHostPID); s != "" {
		host, err := strconv.Atoi(s)
		if err != nil || host <= 0 {
			return fmt.Errorf("%s=%q: want a process ID", EnvHostPID, s)
		}
		if os.Getppid() != host {
			exit(fmt.Sprintf("parent process is %d, not the node %d", os.Getppid(), host))
		}
		go func() {
			t := time.NewTicker(poll)
			defer t.Stop()
			for range t.C {
				if p := os.Getppid(); p != host {
					exit(fmt.Sprintf("parent process is now %d, not the node %d", p, host))
					return
				}
			}
		}()
	}
	return nil
}
