package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// routeTable owns the proxy routes, one per listening port, and applies
// resolver output to them. Its methods are called from the run loop's
// goroutine only; the goroutines it starts (one Serve per listener, one
// Shutdown per removed route, drain timers) are tracked by wg. It keeps the
// per-route metrics in step: every proxy route reports to an observer, and
// every change of a backend set or override is recorded as it is made.
type routeTable struct {
	cfg     *config
	log     *zap.Logger
	metrics *metrics

	routes map[int]*servedRoute // by listen port
	wg     sync.WaitGroup
	errc   chan error // a listener that fails for good
}

// servedRoute is one listening route.
type servedRoute struct {
	spec  resolver.Route // as last applied
	proxy *proxy.Route
	ln    net.Listener
	drain *time.Timer // pending drain after the last rewire, if any
}

func newRouteTable(cfg *config, log *zap.Logger, m *metrics) *routeTable {
	return &routeTable{cfg: cfg, log: log, metrics: m, routes: map[int]*servedRoute{}, errc: make(chan error, 1)}
}

// apply makes the served routes match routes: it opens listeners for new
// routes, swaps the backend sets of changed ones (skipping identical sets),
// and shuts down routes that are gone, letting their connections finish for
// the shutdown grace period. It returns the listen errors; the routes that
// could be served are served.
func (t *routeTable) apply(ctx context.Context, routes []resolver.Route) error {
	want := make(map[int]bool, len(routes))
	var errs []error
	for _, rt := range routes {
		want[rt.Listen] = true
		if s, ok := t.routes[rt.Listen]; ok {
			t.update(s, rt)
			continue
		}
		if err := t.add(ctx, rt); err != nil {
			errs = append(errs, err)
		}
	}
	for port, s := range t.routes {
		if !want[port] {
			t.remove(s)
		}
	}
	return errors.Join(errs...)
}

func (t *routeTable) add(ctx context.Context, rt resolver.Route) error {
	addr := net.JoinHostPort(t.cfg.listenAddress, strconv.Itoa(rt.Listen))
	ln, err := proxy.Listen(ctx, addr)
	if err != nil {
		return listenError(rt, err)
	}
	replay := 0
	if t.cfg.replay.covers(rt.Listen) {
		replay = t.cfg.replayBytes
	}
	p := &proxy.Route{
		Name:        rt.Name,
		DialTimeout: t.cfg.dialTimeout,
		IdleTimeout: t.cfg.idleTimeout,
		MaxConns:    t.cfg.maxConns,
		BackendWait: t.cfg.backendWait,
		ReplayBytes: replay,
		Logger:      t.log.Named("proxy").With(zap.String("route", rt.Name)),
		Observer:    t.metrics.observer(rt.Name),
	}
	backends := proxyBackends(rt.Backends)
	p.SetBackends(backends)
	t.metrics.backendSet(rt.Name, backends)
	t.metrics.overridden(rt.Name, rt.Override)
	s := &servedRoute{spec: rt, proxy: p, ln: ln}
	t.routes[rt.Listen] = s
	t.log.Info("route listening", routeFields(rt, zap.String("listen", ln.Addr().String()))...)
	t.wg.Add(1)
	go t.serveRoute(s)
	return nil
}

// serveRoute runs one route's accept loop; a named function so that stack
// dumps say what the goroutine is.
func (t *routeTable) serveRoute(s *servedRoute) {
	defer t.wg.Done()
	if err := s.proxy.Serve(s.ln); err != nil {
		select {
		case t.errc <- fmt.Errorf("route %s: %w", s.spec.Name, err):
		default:
		}
	}
}

func (t *routeTable) update(s *servedRoute, rt resolver.Route) {
	old := s.spec
	s.spec = rt
	if old.Override != rt.Override {
		t.metrics.overridden(rt.Name, rt.Override)
	}
	if slices.Equal(old.Backends, rt.Backends) {
		return
	}
	t.log.Info("route rewired", routeFields(rt, zap.Stringers("previous", old.Backends))...)
	backends := proxyBackends(rt.Backends)
	s.proxy.SetBackends(backends)
	t.metrics.backendSet(rt.Name, backends)
	t.metrics.rewired(rt.Name)
	if t.cfg.drain > 0 {
		// --drain: connections to backends the rewire dropped are closed
		// once the drain period is over, unless a later rewire brought
		// them back.
		t.drainAfter(rt.Listen, t.cfg.drain)
	}
}

// remove stops serving a route that no source names any more.
func (t *routeTable) remove(s *servedRoute) {
	delete(t.routes, s.spec.Listen)
	if s.drain != nil {
		s.drain.Stop()
	}
	t.metrics.routeRemoved(s.spec.Name)
	t.log.Info("route removed", zap.String("route", s.spec.Name), zap.String("listen", s.ln.Addr().String()))
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.shutdownGrace)
		defer cancel()
		s.proxy.Shutdown(ctx)
	}()
}

// forget closes connections to, and stops new connections reaching,
// containers that are gone. The backend sets it shrinks are counted as
// rewires by the update that follows, when the resolved routes drop them
// too; ambassadord_backends follows at once.
func (t *routeTable) forget(ids []string) {
	for _, s := range t.routes {
		before := s.proxy.Backends()
		n := s.proxy.Forget(ids...)
		if after := s.proxy.Backends(); !slices.Equal(before, after) {
			t.metrics.backendSet(s.spec.Name, after)
		}
		if n > 0 {
			t.log.Info("backend gone; closed its connections", zap.String("route", s.spec.Name),
				zap.Strings("container", ids), zap.Int("closed", n))
		}
	}
}

// shutdown stops every route: listeners close at once, established
// connections get the grace period, then are closed. It waits for every
// goroutine the table started.
func (t *routeTable) shutdown() {
	t.log.Info("shutting down", zap.Duration("grace", t.cfg.shutdownGrace))
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.shutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range t.routes {
		if s.drain != nil {
			s.drain.Stop()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if open := s.proxy.Active(); s.proxy.Shutdown(ctx) != nil {
				t.log.Info("grace period over; closed connections", zap.String("route", s.spec.Name), zap.Int("open", open))
			}
		}()
	}
	wg.Wait()
	t.wg.Wait()
	t.routes = map[int]*servedRoute{}
}

func routeFields(rt resolver.Route, extra ...zap.Field) []zap.Field {
	fields := []zap.Field{zap.String("route", rt.Name), zap.Stringers("backend", rt.Backends), zap.String("source", rt.Source)}
	if rt.Target != "" {
		fields = append(fields, zap.String("target", rt.Target))
	}
	if len(rt.Backends) == 0 {
		fields = append(fields, zap.String("no_backend", rt.NoBackend))
	}
	return append(fields, extra...)
}

// listenError explains a failed listen in terms a person can act on.
func listenError(rt resolver.Route, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("route %s (from %s): port %d is already in use by another process "+
			"(stop it, or give the route another listen port; with --network host the port is the host's): %w",
			rt.Name, rt.Source, rt.Listen, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("route %s (from %s): not allowed to listen on port %d (ports below 1024 need root or CAP_NET_BIND_SERVICE): %w",
			rt.Name, rt.Source, rt.Listen, err)
	}
	return fmt.Errorf("route %s (from %s): %w", rt.Name, rt.Source, err)
}

// pruneFallbacks drops make-before-break fallbacks that keep rejects.
func (t *routeTable) pruneFallbacks(keep func(proxy.Backend) bool) {
	for _, s := range t.routes {
		s.proxy.PruneFallback(keep)
	}
}

// proxyBackends converts the resolver's backends to the proxy's: the same
// values, in a type of the proxy's own, which knows nothing of sources.
func proxyBackends(bs []source.Backend) []proxy.Backend {
	if bs == nil {
		return nil
	}
	out := make([]proxy.Backend, len(bs))
	for i, b := range bs {
		out[i] = proxy.Backend{Addr: b.Addr, ID: b.ID}
	}
	return out
}
