package host

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// hclogZap is the hclog.Logger go-plugin gets, writing to zap. go-plugin
// uses one logger for two things: its own chatter, and the adapter's stderr
// log lines, which it re-logs through Named(<runner name>). The first is
// logged at debug (the host logs what matters itself), the second at the
// level the adapter gave each line.
type hclogZap struct {
	z       *zap.Logger
	name    string
	forward bool
	// stderrName is the name go-plugin uses for the adapter's stderr stream:
	// filepath.Base of the command path.
	stderrName string
	implied    []any
}

var _ hclog.Logger = (*hclogZap)(nil)

func newHCLogZap(z *zap.Logger, stderrName string) *hclogZap {
	return &hclogZap{z: z, stderrName: stderrName}
}

func (l *hclogZap) Log(level hclog.Level, msg string, args ...any) {
	switch level {
	case hclog.Trace, hclog.Debug:
		l.Debug(msg, args...)
	case hclog.Info:
		l.Info(msg, args...)
	case hclog.Warn:
		l.Warn(msg, args...)
	case hclog.Error:
		l.Error(msg, args...)
	default:
		l.Info(msg, args...)
	}
}

func (l *hclogZap) log(level zapcore.Level, msg string, args []any) {
	if !l.forward {
		level = zapcore.DebugLevel
	} else if level == zapcore.DebugLevel && len(args) == 0 {
		// go-plugin logs a stderr line that is not hclog JSON (a plain
		// fmt.Fprintln, a panic's stack) at debug with no fields; those are
		// exactly the lines an operator needs to see.
		level = zapcore.InfoLevel
	}
	ce := l.z.Check(level, msg)
	if ce == nil {
		return
	}
	ce.Write(l.fields(args)...)
}

func (l *hclogZap) fields(args []any) []zap.Field {
	all := append(slicesClone(l.implied), args...)
	fs := make([]zap.Field, 0, len(all)/2+1)
	for i := 0; i < len(all); i += 2 {
		key := fmt.Sprint(all[i])
		if key == "timestamp" && l.forward {
			// go-plugin adds the adapter's own timestamp; zap has one.
			continue
		}
		if i+1 >= len(all) {
			fs = append(fs, zap.Any("EXTRA_VALUE", all[i]))
			break
		}
		fs = append(fs, zap.Any(key, all[i+1]))
	}
	return fs
}

func slicesClone(s []any) []any { return append([]any(nil), s...) }

func (l *hclogZap) Trace(msg string, args ...any) { l.log(zapcore.DebugLevel, msg, args) }
func (l *hclogZap) Debug(msg string, args ...any) { l.log(zapcore.DebugLevel, msg, args) }
func (l *hclogZap) Info(msg string, args ...any)  { l.log(zapcore.InfoLevel, msg, args) }
func (l *hclogZap) Warn(msg string, args ...any)  { l.log(zapcore.WarnLevel, msg, args) }
func (l *hclogZap) Error(msg string, args ...any) { l.log(zapcore.ErrorLevel, msg, args) }

func (l *hclogZap) IsTrace() bool { return false }
func (l *hclogZap) IsDebug() bool { return l.z.Core().Enabled(zapcore.DebugLevel) }
func (l *hclogZap) IsInfo() bool  { return l.z.Core().Enabled(zapcore.InfoLevel) }
func (l *hclogZap) IsWarn() bool  { return l.z.Core().Enabled(zapcore.WarnLevel) }
func (l *hclogZap) IsError() bool { return l.z.Core().Enabled(zapcore.ErrorLevel) }

func (l *hclogZap) ImpliedArgs() []any { return l.implied }

func (l *hclogZap) With(args ...any) hclog.Logger {
	c := *l
	c.implied = append(slicesClone(l.implied), args...)
	return &c
}

func (l *hclogZap) Name() string { return l.name }

func (l *hclogZap) Named(name string) hclog.Logger {
	c := *l
	if name == l.stderrName {
		c.forward = true
	}
	if c.name == "" {
		c.name = name
	} else {
		c.name += "." + name
	}
	return &c
}

func (l *hclogZap) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	c.forward = name == l.stderrName
	return &c
}

// SetLevel is a no-op: the node's zap configuration owns the level.
func (l *hclogZap) SetLevel(hclog.Level) {}

func (l *hclogZap) GetLevel() hclog.Level {
	switch {
	case l.z.Core().Enabled(zapcore.DebugLevel):
		return hclog.Debug
	case l.z.Core().Enabled(zapcore.InfoLevel):
		return hclog.Info
	case l.z.Core().Enabled(zapcore.WarnLevel):
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (l *hclogZap) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(nil), "", 0)
}

func (l *hclogZap) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return newLineLogger(l.z, zapcore.InfoLevel)
}

// lineLogger is an io.Writer that logs each line written to it. It receives
// whatever an adapter writes to os.Stdout or os.Stderr after the handshake
// (go-plugin forwards both over gRPC).
type lineLogger struct {
	z     *zap.Logger
	level zapcore.Level
	mu    sync.Mutex
	buf   []byte
}

// maxLine bounds what a misbehaving adapter can make the node buffer.
const maxLine = 16 << 10

func newLineLogger(z *zap.Logger, level zapcore.Level) *lineLogger {
	return &lineLogger{z: z, level: level}
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if len(w.buf) >= maxLine {
				w.emit()
			}
			break
		}
		w.buf = append(w.buf, p[:i]...)
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineLogger) emit() {
	line := bytes.TrimRight(w.buf, "\r")
	if len(line) > 0 {
		w.z.Check(w.level, string(line)).Write()
	}
	w.buf = w.buf[:0]
}
