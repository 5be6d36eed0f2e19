package main

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newLogger builds the daemon's logger: JSON, or a console encoder for a
// person at a terminal. Messages are lower-case with fixed field keys
// (route, listen, backend, container, remote, event).
func newLogger(cfg *config, stderr *os.File) *zap.Logger {
	format := cfg.logFormat
	if format == "auto" {
		format = "json"
		if isTerminal(stderr) {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		encCfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(stderr), cfg.logLevel)
	// Sampling keeps a flood of identical lines (a backend refusing every
	// connection, an fd shortage) from drowning everything else.
	core = zapcore.NewSamplerWithOptions(core, 1e9, 100, 100)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(stderr)))
}
