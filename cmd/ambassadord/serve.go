package main

import (
	"cmp"
	"context"
	"errors"
	"os"
	"sync"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/admin"
	"github.com/ambassadord/ambassadord/pkg/daemon"
	"github.com/ambassadord/ambassadord/pkg/metrics"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
	"github.com/ambassadord/ambassadord/pkg/tlsconf"
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
	engines := cfg.engineSpecs()
	if err := checkEngines(ctx, engines, log); err != nil {
		return err
	}
	var sources []source.Source
	hosts := map[string]string{}
	self := watcher.SelfCandidates("/proc")
	if host, follow := cfg.dockerEngine(os.Getenv); follow {
		w := &watcher.Watcher{
			Engine:  watcher.LocalName,
			Host:    host,
			SelfIDs: self,
			Logger:  log.Named("watcher"),
			Resync:  cfg.resync,
		}
		sources = append(sources, w)
		hosts[w.Name()] = cmp.Or(host, watcher.DefaultHost())
	}
	for _, spec := range engines {
		w := &watcher.Watcher{
			Spec:   &spec,
			Logger: log.Named("watcher").Named(spec.Name),
			Resync: cfg.resync,
		}
		if spec.HostAddress() == "" {
			// An engine on this host may run the ambassador's own
			// container; a remote one cannot.
			w.SelfIDs = self
		}
		sources = append(sources, w)
		hosts[w.Name()] = spec.URL
	}
	return serveSources(ctx, cfg, specs, sources, hosts, log)
}

// checkEngines checks every engine of --engine at once before anything is
// served (watcher.Check: its TLS files, then one ping of at most 5s), so
// that a configuration that can never work stops start-up, with an error
// naming the engine and the fix. An engine that is merely unreachable is
// logged and followed: it may answer later. An engine without TLS
// (insecure) is logged as a warning.
func checkEngines(ctx context.Context, specs []watcher.EngineSpec, log *zap.Logger) error {
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, spec := range specs {
		if spec.Insecure {
			log.Warn("engine followed without TLS (insecure): its API, which controls every container of its host, travels in clear text to whoever answers",
				zap.String("engine", spec.Name), zap.String("host", spec.URL))
		}
		wg.Add(1)
		go checkEngine(ctx, &wg, spec, &errs[i])
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case errors.Is(err, watcher.ErrUnreachable):
			log.Warn("engine unreachable at start; following it until it answers",
				zap.String("engine", specs[i].Name), zap.String("host", specs[i].URL), errorField(err))
			errs[i] = nil
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			// Stopped during the checks: what follows stops at once too.
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// checkEngine checks one engine, and stores the outcome in *err.
func checkEngine(ctx context.Context, wg *sync.WaitGroup, spec watcher.EngineSpec, err *error) {
	defer wg.Done()
	*err = watcher.Check(ctx, spec)
}

// serveSources runs the controller on the sources, and the admin endpoint
// once the controller serves: the routes listen first, so that a port in
// use stops start-up before anything else is served. Either one ending
// stops the other; their errors are returned together.
func serveSources(ctx context.Context, cfg *config, specs []resolver.Spec, sources []source.Source, hosts map[string]string, log *zap.Logger) error {
	m := metrics.New(version, buildCommit())
	opts := cfg.daemonOptions(specs, sources, hosts, log, m)
	store, err := cfg.tlsStore(&opts, log.Named("tls"))
	if err != nil {
		return err
	}
	m.TLS(store)
	d, err := daemon.New(opts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var tlsDone sync.WaitGroup
	defer tlsDone.Wait()
	defer cancel() // before the wait: Run returns once ctx is done
	tlsDone.Add(1)
	go runTLSStore(ctx, store, &tlsDone)
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

// tlsStore loads the TLS material (--tls-*), checked now so that a
// mistake stops start-up with its fix, and sets the controller's TLS
// options from it: the configuration of the routes that listen with TLS,
// when there is a certificate to serve and a CA to verify clients, and
// the one to dial TLS backends (against the system's roots without
// --tls-ca).
func (c *config) tlsStore(opts *daemon.Options, log *zap.Logger) (*tlsconf.Store, error) {
	files, any := c.tlsFiles()
	if !any {
		// Nothing to load but the system's roots, for a tls:// backend:
		// no line about it at start.
		log = log.WithOptions(zap.IncreaseLevel(zap.WarnLevel))
	}
	store, err := tlsconf.Load(files, log)
	if err != nil {
		return nil, err
	}
	opts.BackendTLS = store.ClientConfigFor
	if files.Cert != "" && (files.ClientCA != "" || files.CA != "") {
		if opts.ServerTLS, err = store.ServerConfig(); err != nil {
			return nil, err
		}
	}
	return store, nil
}

// runTLSStore keeps the TLS material current until ctx is cancelled.
func runTLSStore(ctx context.Context, s *tlsconf.Store, wg *sync.WaitGroup) {
	defer wg.Done()
	s.Run(ctx)
}
