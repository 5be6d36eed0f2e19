package daemon

import (
	"cmp"
	"context"
	"crypto/tls"
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

// routeTable owns the proxy routes, one per protocol and listen port, and
// applies resolver output to them. Its methods are called from the run
// loop's goroutine only; the goroutines it starts (one Serve per listener,
// one Shutdown per removed route, drain timers) are tracked by wg. It
// keeps the per-route metrics in step: every proxy route reports to an
// observer, and every change of a backend set or override is recorded as
// it is made.
type routeTable struct {
	opts    *Options
	log     *zap.Logger
	metrics Metrics

	routes map[routeKey]*servedRoute
	wg     sync.WaitGroup
	errc   chan error // a listener that fails for good
}

// routeKey identifies a listening route: tcp/53 and udp/53 are two.
type routeKey struct {
	proto  string
	listen int
}

func keyOf(rt resolver.Route) routeKey {
	return routeKey{proto: cmp.Or(rt.Protocol, resolver.TCP), listen: rt.Listen}
}

// servedRoute is one listening route.
type servedRoute struct {
	spec  resolver.Route // as last applied
	proxy forwarder
	addr  net.Addr     // where it listens
	serve func() error // runs until the route is closed
	drain *time.Timer  // pending drain after the last rewire, if any
}

// forwarder is what the table does with a route's data path: a TCP
// proxy.Route, or a UDP one (udpForwarder).
type forwarder interface {
	SetBackends(bs []proxy.Backend)
	Backends() []proxy.Backend
	Forget(ids ...string) int
	PruneFallback(keep func(proxy.Backend) bool)
	// CloseConns ends the connections (flows) whose backend matches.
	CloseConns(match func(proxy.Backend) bool) int
	// Active is the number of connections (flows) now.
	Active() int
	// Ejections are the backends passive outlier detection ejected.
	Ejections() []proxy.Ejection
	// Shutdown stops taking new ones, lets those open finish until ctx
	// is done, then closes them.
	Shutdown(ctx context.Context) error
}

// udpForwarder is a UDP route as a forwarder: flows for connections. It
// has no fallback tier (a datagram is not refused the way a connect is),
// and nothing to drain at shutdown: a flow has no end to wait for.
type udpForwarder struct{ *proxy.UDPRoute }

func (u udpForwarder) PruneFallback(func(proxy.Backend) bool)        {}
func (u udpForwarder) CloseConns(match func(proxy.Backend) bool) int { return u.CloseFlows(match) }
func (u udpForwarder) Active() int                                   { return u.Flows() }
func (u udpForwarder) Ejections() []proxy.Ejection                   { return nil }
func (u udpForwarder) Shutdown(context.Context) error                { return u.Close() }

func newRouteTable(opts *Options, log *zap.Logger, m Metrics) *routeTable {
	return &routeTable{opts: opts, log: log, metrics: m, routes: map[routeKey]*servedRoute{}, errc: make(chan error, 1)}
}

// apply makes the served routes match routes: it opens listeners for new
// routes, swaps the backend sets of changed ones (skipping identical sets),
// and shuts down routes that are gone, letting their connections finish for
// the shutdown grace period. It returns the listen errors; the routes that
// could be served are served.
func (t *routeTable) apply(ctx context.Context, routes []resolver.Route) error {
	want := make(map[routeKey]bool, len(routes))
	var errs []error
	for _, rt := range routes {
		want[keyOf(rt)] = true
		if s, ok := t.routes[keyOf(rt)]; ok {
			if err := t.update(s, rt); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := t.add(ctx, rt); err != nil {
			errs = append(errs, err)
		}
	}
	for key, s := range t.routes {
		if !want[key] {
			t.remove(s)
		}
	}
	return errors.Join(errs...)
}

func (t *routeTable) add(ctx context.Context, rt resolver.Route) error {
	switch key := keyOf(rt); key.proto {
	case resolver.UDP:
		return t.addUDP(ctx, rt)
	case resolver.TCP:
	default:
		return fmt.Errorf("route %s (from %s): protocol %q is not served", rt.Name, rt.Source, key.proto)
	}
	if err := t.checkTLS(rt); err != nil {
		return err
	}
	addr := net.JoinHostPort(t.opts.ListenAddress, strconv.Itoa(rt.Listen))
	ln, err := proxy.Listen(ctx, addr)
	if err != nil {
		return listenError(rt, err)
	}
	p := &proxy.Route{
		Name:               rt.Name,
		DialTimeout:        t.opts.DialTimeout,
		IdleTimeout:        t.opts.IdleTimeout,
		MaxConns:           t.opts.MaxConns,
		BackendWait:        t.opts.BackendWait,
		ReplayBytes:        t.replayBytes(rt.Listen),
		ProxyHeaderTimeout: t.opts.ProxyHeaderTimeout,
		BackendTLS:         t.opts.BackendTLS,
		EjectAfter:         t.opts.EjectAfter,
		EjectTime:          t.opts.EjectTime,
		MaxEjectTime:       t.opts.MaxEjectTime,
		Logger:             t.log.Named("proxy").With(zap.String("route", rt.Name)),
		Observer:           t.metrics.Observer(rt.Name),
	}
	if t.opts.SendProxyAll || slices.Contains(t.opts.SendProxyPorts, rt.Listen) {
		p.ProxyProtocol = cmp.Or(t.opts.SendProxyVersion, proxy.ProxyV2)
	}
	if t.opts.AcceptProxyAll || slices.Contains(t.opts.AcceptProxyPorts, rt.Listen) {
		p.AcceptProxy = slices.Clone(t.opts.AcceptProxyFrom)
	}
	p.SetBalance(balanceOf(t.opts, rt))
	if rt.ListenTLS {
		p.SetTLS(t.opts.ServerTLS)
	}
	t.start(&servedRoute{spec: rt, proxy: p, addr: ln.Addr(), serve: func() error { return p.Serve(ln) }})
	return nil
}

// addUDP opens a UDP route's socket and serves its datagrams.
func (t *routeTable) addUDP(ctx context.Context, rt resolver.Route) error {
	addr := net.JoinHostPort(t.opts.ListenAddress, strconv.Itoa(rt.Listen))
	pc, err := proxy.ListenUDP(ctx, addr)
	if err != nil {
		return listenError(rt, err)
	}
	p := &proxy.UDPRoute{
		Name:        rt.Name,
		IdleTimeout: t.opts.UDPIdleTimeout,
		MaxFlows:    t.opts.UDPMaxFlows,
		Logger:      t.log.Named("proxy").With(zap.String("route", rt.Name)),
		Observer:    t.metrics.UDPObserver(rt.Name),
	}
	t.start(&servedRoute{spec: rt, proxy: udpForwarder{p}, addr: pc.LocalAddr(), serve: func() error { return p.Serve(pc) }})
	return nil
}

// start sets s's backends and serves it.
func (t *routeTable) start(s *servedRoute) {
	rt := s.spec
	backends := proxyBackends(rt.Backends)
	s.proxy.SetBackends(backends)
	t.metrics.BackendSet(rt.Name, backends)
	t.metrics.Overridden(rt.Name, rt.Override)
	t.routes[keyOf(rt)] = s
	t.log.Info("route listening", routeFields(rt, zap.String("listen", s.addr.String()))...)
	t.wg.Add(1)
	go t.serveRoute(s)
}

// serveRoute runs one route's accept loop; a named function so that stack
// dumps say what the goroutine is.
func (t *routeTable) serveRoute(s *servedRoute) {
	defer t.wg.Done()
	if err := s.serve(); err != nil {
		select {
		case t.errc <- fmt.Errorf("route %s: %w", s.spec.Name, err):
		default:
		}
	}
}

// checkTLS refuses a route that must listen with TLS when there is no
// configuration to serve it with: it is never served in plain text.
func (t *routeTable) checkTLS(rt resolver.Route) error {
	if rt.ListenTLS && t.opts.ServerTLS == nil {
		return fmt.Errorf("route %s (from %s) must listen with TLS, and there is no TLS certificate to serve: give --tls-cert, --tls-key and --tls-client-ca (or --tls-ca)", rt.Name, rt.Source)
	}
	return nil
}

// update applies a served route's new resolution: its backend set, and
// whether it listens with TLS, for the connections accepted from then on.
func (t *routeTable) update(s *servedRoute, rt resolver.Route) error {
	if rt.ListenTLS != s.spec.ListenTLS {
		if err := t.checkTLS(rt); err != nil {
			// Not in plain text where TLS is wanted: not at all.
			t.remove(s)
			return err
		}
		var cfg *tls.Config
		if rt.ListenTLS {
			cfg = t.opts.ServerTLS
		}
		if p, ok := s.proxy.(*proxy.Route); ok {
			p.SetTLS(cfg)
		}
		t.log.Info("route listens with TLS from now on", zap.String("route", rt.Name), zap.Bool("tls", rt.ListenTLS))
	}
	old := s.spec
	s.spec = rt
	if p, ok := s.proxy.(*proxy.Route); ok && balanceOf(t.opts, old) != balanceOf(t.opts, rt) {
		p.SetBalance(balanceOf(t.opts, rt))
		t.log.Info("route balances anew", zap.String("route", rt.Name), zap.Stringer("balance", balanceOf(t.opts, rt)))
	}
	if old.Override != rt.Override {
		t.metrics.Overridden(rt.Name, rt.Override)
	}
	if slices.Equal(old.Backends, rt.Backends) {
		return nil
	}
	t.log.Info("route rewired", routeFields(rt, zap.Stringers("previous", old.Backends))...)
	backends := proxyBackends(rt.Backends)
	s.proxy.SetBackends(backends)
	t.metrics.BackendSet(rt.Name, backends)
	t.metrics.Rewired(rt.Name)
	if t.opts.Drain > 0 {
		// Options.Drain: connections to backends the rewire dropped are
		// closed once the drain period is over, unless a later rewire
		// brought them back.
		t.drainAfter(keyOf(rt), t.opts.Drain)
	}
	return nil
}

// remove stops serving a route that no source names any more.
func (t *routeTable) remove(s *servedRoute) {
	delete(t.routes, keyOf(s.spec))
	if s.drain != nil {
		s.drain.Stop()
	}
	t.metrics.RouteRemoved(s.spec.Name)
	t.log.Info("route removed", zap.String("route", s.spec.Name), zap.String("listen", s.addr.String()))
	t.wg.Add(1)
	go t.drainRemoved(s)
}

// drainRemoved lets a removed route's connections finish for the shutdown
// grace period, then closes them.
func (t *routeTable) drainRemoved(s *servedRoute) {
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.ShutdownGrace)
	defer cancel()
	s.proxy.Shutdown(ctx)
}

// replayBytes is what a TCP route on port listen keeps of a client's
// first bytes to replay its connection (proxy.Route.ReplayBytes): none
// unless --replay names it.
func (t *routeTable) replayBytes(listen int) int {
	if t.opts.ReplayAll || slices.Contains(t.opts.ReplayPorts, listen) {
		return t.opts.ReplayBytes
	}
	return 0
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
			t.metrics.BackendSet(s.spec.Name, after)
		}
		switch {
		case n == 0:
		case keyOf(s.spec).proto == resolver.UDP:
			t.log.Info("backend gone; its flows move at their next datagram", zap.String("route", s.spec.Name),
				zap.Strings("container", ids), zap.Int("flows", n))
		case t.replayBytes(s.spec.Listen) > 0:
			t.log.Info("backend gone; closed its connections, replayed those it had not answered", zap.String("route", s.spec.Name),
				zap.Strings("container", ids), zap.Int("connections", n))
		default:
			t.log.Info("backend gone; closed its connections", zap.String("route", s.spec.Name),
				zap.Strings("container", ids), zap.Int("closed", n))
		}
	}
}

// shutdown stops every route: listeners close at once, established
// connections get the grace period, then are closed. It waits for every
// goroutine the table started.
func (t *routeTable) shutdown() {
	t.log.Info("shutting down", zap.Duration("grace", t.opts.ShutdownGrace))
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range t.routes {
		if s.drain != nil {
			s.drain.Stop()
		}
		wg.Add(1)
		go t.shutdownRoute(ctx, &wg, s)
	}
	wg.Wait()
	t.wg.Wait()
	t.routes = map[routeKey]*servedRoute{}
}

// shutdownRoute shuts one route down at shutdown, and says whether the
// grace period ran out on open connections.
func (t *routeTable) shutdownRoute(ctx context.Context, wg *sync.WaitGroup, s *servedRoute) {
	defer wg.Done()
	if open := s.proxy.Active(); s.proxy.Shutdown(ctx) != nil {
		t.log.Info("grace period over; closed connections", zap.String("route", s.spec.Name), zap.Int("open", open))
	}
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
		out[i] = proxy.Backend{Addr: b.Addr, ID: b.ID, TLS: b.TLS, ProxyProtocol: b.ProxyProtocol, Weight: b.Weight}
	}
	return out
}

// listening returns the address rt listens on and its data path, if it
// listens.
func (t *routeTable) listening(rt resolver.Route) (addr string, p forwarder, ok bool) {
	s, ok := t.routes[keyOf(rt)]
	if !ok {
		return "", nil, false
	}
	return s.addr.String(), s.proxy, true
}
