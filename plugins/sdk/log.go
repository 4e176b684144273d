package sdk

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns a zap logger for an adapter. It writes JSON lines to the
// process's stderr in the shape go-plugin forwards to the node ("@level",
// "@message", "@timestamp"), so each line reappears in the node's log at
// its level, tagged with the adapter's name. Its level is the node's.
//
// Make it before calling Serve: Serve redirects os.Stderr afterwards, and a
// logger made then would write to the redirected stream, where lines lose
// their level.
func NewLogger() *zap.Logger {
	level, err := zapcore.ParseLevel(logLevelName())
	if err != nil {
		level = zapcore.InfoLevel
	}
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		MessageKey:    "@message",
		LevelKey:      "@level",
		TimeKey:       "@timestamp",
		NameKey:       "@module",
		CallerKey:     "@caller",
		StacktraceKey: "stacktrace",
		LineEnding:    zapcore.DefaultLineEnding,
		EncodeLevel:   encodeHCLogLevel,
		// go-plugin parses exactly this layout and drops lines it cannot.
		EncodeTime:     zapcore.TimeEncoderOfLayout("2006-01-02T15:04:05.000000Z07:00"),
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeCaller:   zapcore.ShortCallerEncoder,
	})
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), level)
	log := zap.New(core, zap.AddCaller())
	if name := os.Getenv(EnvAdapterName); name != "" {
		log = log.Named(name)
	}
	return log
}

// encodeHCLogLevel writes the level names go-hclog knows; zap's dpanic,
// panic and fatal would otherwise arrive at the node as unlevelled text.
func encodeHCLogLevel(l zapcore.Level, enc zapcore.PrimitiveArrayEncoder) {
	switch {
	case l <= zapcore.DebugLevel:
		enc.AppendString("debug")
	case l == zapcore.InfoLevel:
		enc.AppendString("info")
	case l == zapcore.WarnLevel:
		enc.AppendString("warn")
	default:
		enc.AppendString("error")
	}
}

func logLevelName() string {
	if l := os.Getenv(EnvLogLevel); l != "" {
		return l
	}
	return "info"
}
