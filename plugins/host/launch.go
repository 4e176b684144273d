package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/mulegate/mulegate/plugins"
	"github.com/mulegate/mulegate/plugins/sdk"
)

// proc is one running adapter process.
type proc struct {
	client   *plugin.Client
	ad       *plugins.GRPCClient
	desc     plugins.Description
	pid      int
	started  time.Time
	exited   <-chan struct{}
	lifeline *os.File // the write end; the adapter watches the read end
	once     sync.Once
}

// kill ends the process: a clean shutdown if it cooperates within
// go-plugin's two seconds, SIGKILL otherwise, then SIGKILL to its process
// group so that nothing the adapter started lingers either.
func (p *proc) kill() {
	p.client.Kill()
	p.killGroup()
	p.release()
}

// release closes the node's end of the lifeline once the process is gone.
func (p *proc) release() {
	p.once.Do(func() { _ = p.lifeline.Close() })
}

// dispensed is what the host-side plugin hands out: the client, and a
// channel closed when go-plugin sees the process exit.
type dispensed struct {
	ad     *plugins.GRPCClient
	exited <-chan struct{}
}

// hostPlugin is the node's half of plugins.GRPCPlugin: it also captures the
// context go-plugin cancels when the process exits, which is how a crash
// is noticed at once rather than at the next Check.
type hostPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (hostPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host: hostPlugin only dials adapters")
}

func (hostPlugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &dispensed{ad: plugins.NewGRPCClient(c), exited: ctx.Done()}, nil
}

// launch starts one process for the adapter and configures it. Every
// failure leaves no process behind.
func (in *instance) launch(ctx context.Context) (_ *proc, err error) {
	in.mu.Lock()
	spec := in.spec
	in.mu.Unlock()
	opts := in.m.opts

	var secure *plugin.SecureConfig
	path, args := opts.Self, []string{"adapter", spec.Builtin}
	if spec.Path != "" {
		path, args = filepath.Join(opts.PluginDir, spec.Path), nil
		sum, err := decodeSHA256(spec.SHA256)
		if err != nil {
			return nil, fmt.Errorf("adapter %q: sha256: %w", in.name, err)
		}
		secure = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}

	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("adapter %q: making its lifeline pipe: %w", in.name, err)
	}
	defer func() {
		_ = lifeR.Close() // the child has its own copy now
		if err != nil {
			_ = lifeW.Close()
		}
	}()

	cmd := exec.Command(path, args...)
	if spec.Builtin != "" {
		// ps shows the binary's name rather than /proc/self/exe.
		if self, err := os.Executable(); err == nil {
			cmd.Args[0] = self
		}
	}
	cmd.Env = in.env(spec)
	if !opts.noLifeline {
		cmd.ExtraFiles = []*os.File{lifeR} // fd 3 in the adapter
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so that killing it takes whatever it
		// started along, and a terminal's ^C reaches only the node, which
		// then shuts adapters down in order.
		Setpgid: true,
	}
	if !opts.noPdeathsig {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}

	stderrTail := &tail{max: 2048}
	logStream := func(stream string) io.Writer {
		return newLineLogger(in.log.With(zap.String("stream", stream)), zapcore.InfoLevel)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugins.Handshake(),
		Plugins:          plugin.PluginSet{plugins.PluginName: hostPlugin{}},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		SkipHostEnv:      true, // in.env passes the environment on, cleaned
		StartTimeout:     opts.StartTimeout,
		Logger:           newHCLogZap(in.log, filepath.Base(cmd.Path)),
		Stderr:           stderrTail,
		SyncStdout:       logStream("stdout"),
		SyncStderr:       logStream("stderr"),
		GRPCDialOptions:  plugins.DialOptions(),
	})
	defer func() {
		if err != nil {
			client.Kill()
		}
	}()

	if _, err := client.Start(); err != nil {
		client.Kill() // returns once the adapter's stderr has been read to the end
		return nil, in.startError(path, spec, err, stderrTail)
	}
	rpc, err := client.Client()
	if err != nil {
		return nil, fmt.Errorf("adapter %q: connecting to it: %w", in.name, err)
	}
	raw, err := rpc.Dispense(plugins.PluginName)
	if err != nil {
		return nil, fmt.Errorf("adapter %q: it does not serve the mulegate adapter contract: %w", in.name, err)
	}
	d := raw.(*dispensed)
	p := &proc{client: client, ad: d.ad, exited: d.exited, lifeline: lifeW, started: time.Now()}
	if rc := client.ReattachConfig(); rc != nil {
		p.pid = rc.Pid
	} else if pid, err := strconv.Atoi(client.ID()); err == nil {
		p.pid = pid
	}

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if p.desc, err = p.ad.Describe(ctx); err != nil {
		return nil, fmt.Errorf("adapter %q: describe: %w", in.name, err)
	}
	if err = p.ad.Configure(ctx, spec.Config); err != nil {
		var ce plugins.ConfigErrors
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("adapter %q (%s) refused its configuration: %w", in.name, p.desc.Name, err)
		}
		return nil, fmt.Errorf("adapter %q: configure: %w", in.name, err)
	}
	return p, nil
}

// env is the adapter's environment: the node's, minus anything that would
// confuse the handshake or the lifeline, plus what the SDK reads.
func (in *instance) env(spec Spec) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PLUGIN_") || strings.HasPrefix(k, "MULEGATE_HOST_") ||
			strings.HasPrefix(k, "MULEGATE_ADAPTER") {
			continue
		}
		env = append(env, kv)
	}
	level := "info"
	for _, l := range []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel} {
		if in.log.Core().Enabled(l) {
			level = l.String()
			break
		}
	}
	env = append(env, sdk.EnvAdapterName+"="+spec.Name, sdk.EnvLogLevel+"="+level)
	if !in.m.opts.noHostPID {
		env = append(env, sdk.EnvHostPID+"="+strconv.Itoa(os.Getpid()))
	}
	if !in.m.opts.noLifeline {
		env = append(env, sdk.EnvLifelineFD+"=3")
	}
	return env
}

// startError turns go-plugin's start failures into errors that say what the
// operator or the adapter's author should do.
func (in *instance) startError(path string, spec Spec, err error, stderr *tail) error {
	msg := err.Error()
	note := ""
	if s := stderr.String(); s != "" {
		note = "; its stderr ends with: " + strconv.Quote(s)
	}
	const unrecognized = "Unrecognized remote plugin message: "
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		actual, herr := fileSHA256(path)
		if herr != nil {
			actual = "unreadable (" + herr.Error() + ")"
		}
		return fmt.Errorf("adapter %q: refusing to run %s: its SHA-256 is %s but the configuration pins %s; "+
			"if you replaced the adapter on purpose, put the new hash in its sha256: %w",
			in.name, path, actual, strings.ToLower(spec.SHA256), err)
	case strings.HasPrefix(msg, unrecognized):
		line, _, _ := strings.Cut(msg[len(unrecognized):], "\n")
		if line != "" {
			return strayStdout(in.name, line)
		}
		return fmt.Errorf("adapter %q (%s) exited before the plugin handshake%s", in.name, path, note)
	case strings.HasPrefix(msg, "error parsing core protocol version"):
		// Output without a newline runs into the handshake line, which
		// starts with "1|"; the parse error quotes what came before it.
		if m := quotedAtoi.FindStringSubmatch(msg); m != nil {
			if s, err := strconv.Unquote(m[1]); err == nil {
				return strayStdout(in.name, strings.TrimSuffix(s, strconv.Itoa(plugin.CoreProtocolVersion)))
			}
		}
		return fmt.Errorf("adapter %q: garbled plugin handshake (did it write to stdout?): %w", in.name, err)
	case strings.Contains(msg, "plugin exited before we could connect"):
		return fmt.Errorf("adapter %q (%s) exited before the plugin handshake%s", in.name, path, note)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("adapter %q (%s) did not complete the plugin handshake within %s; is it a mulegate adapter?%s",
			in.name, path, in.m.opts.StartTimeout, note)
	}
	return fmt.Errorf("adapter %q: starting %s: %w%s", in.name, path, err, note)
}

var quotedAtoi = regexp.MustCompile(`parsing ("(?:[^"\\]|\\.)*"): invalid syntax`)

func strayStdout(name, line string) error {
	const maxShown = 200
	if len(line) > maxShown {
		line = line[:maxShown] + "…"
	}
	return fmt.Errorf("adapter %q wrote to stdout before the plugin handshake: %q; adapters must log to stderr", name, line)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func decodeSHA256(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%q is not a SHA-256 in hex (64 hex digits, as sha256sum prints)", s)
	}
	return b, nil
}

// tail keeps the last max bytes written to it: the end of an adapter's
// stderr, for the error when it dies before the handshake.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}
