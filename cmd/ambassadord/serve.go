package main

import (
	"cmp"
	"context"
	"errors"
	"os"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/admin"
	"github.com/ambassadord/ambassadord/pkg/daemon"
	"github.com/ambassadord/ambassadord/pkg/metrics"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
	"github.com/ambassadord/ambassadord/pkg/watcher"
)

// serve runs the ambassador until ctx is cancelled, then drains established
// connections for the shutdown grace period. It returns an error only when
// the configuration cannot be served at all: nothing is left half-running.
func serve(ctx context.Context, cfg *config, environ []string, log *zap.Logger) error {
	specs, warnings, err := cfg.specs(environ)
	for _, w := range warnings {
		log.Warn(w)
	}
	if err != nil {
		return err
	}
	var sources []source.Source
	hosts := map[string]string{}
	if host, follow := cfg.dockerEngine(os.Getenv); follow {
		w := &watcher.Watcher{
			Host:    host,
			SelfIDs: watcher.SelfCandidates("/proc"),
			Logger:  log.Named("watcher"),
			Resync:  cfg.resync,
		}
		sources = append(sources, w)
		hosts[w.Name()] = cmp.Or(host, watcher.DefaultHost())
	}
	return serveSources(ctx, cfg, specs, sources, hosts, log)
}

// serveSources runs the controller on the sources, and the admin endpoint
// once the controller serves: the routes listen first, so that a port in
// use stops start-up before anything else is served. Either one ending
// stops the other; their errors are returned together.
func serveSources(ctx context.Context, cfg *config, specs []resolver.Spec, sources []source.Source, hosts map[string]string, log *zap.Logger) error {
	m := metrics.New(version, buildCommit())
	d, err := daemon.New(cfg.daemonOptions(specs, sources, hosts, log, m))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ended := make(chan error, 1)
	go runController(ctx, d, ended)
	select {
	case err := <-ended:
		// A start-up error, or ctx was cancelled before anything served.
		return err
	case <-d.Serving():
	}
	for _, s := range sources {
		log.Info("following the "+s.Name()+" engine", zap.String("host", hosts[s.Name()]))
	}
	adminEnded := make(chan error, 1)
	go runAdmin(ctx, cfg.adminServer(d, m.Handler(), log.Named("admin")), adminEnded)
	select {
	case err := <-ended:
		cancel()
		return errors.Join(err, <-adminEnded)
	case err := <-adminEnded:
		cancel()
		return errors.Join(err, <-ended)
	}
}

// runController runs the controller, and reports how it ended.
func runController(ctx context.Context, d *daemon.Daemon, ended chan<- error) {
	ended <- d.Run(ctx)
}

// runAdmin runs the admin endpoint, and reports how it ended.
func runAdmin(ctx context.Context, s *admin.Server, ended chan<- error) {
	ended <- s.Run(ctx)
}

// errorField logs an error as a plain string: zap's default adds a verbose
// variant for joined errors that repeats the message.
func errorField(err error) zap.Field {
	return zap.String("error", err.Error())
}
