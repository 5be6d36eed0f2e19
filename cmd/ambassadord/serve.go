package main

import (
	"cmp"
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/proxy"
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
	host, follow := cfg.dockerEngine(os.Getenv)
	if !follow && len(specs) == 0 {
		return errNoRoutes
	}
	local := localPrefixes(cfg.listenAddress)
	if err := resolver.SelfLoops(specs, local, dnsLookup(specs, follow)); err != nil {
		return err
	}
	saved, err := loadState(cfg.stateFile)
	if err != nil {
		return err
	}

	m := newMetrics(version, buildCommit())
	table := newRouteTable(cfg, log, m)
	defer table.shutdown()
	d := newDynamic(cfg, log, table, m, specs, follow)
	d.local = local
	for _, o := range saved {
		d.overrides[o.Key] = o
		log.Info("rewire restored from the state file", zap.String("route", o.Key), zap.String("target", o.Target))
	}
	var w *watcher.Watcher
	if follow {
		d.docker.Host = cmp.Or(host, watcher.DefaultHost())
		w = &watcher.Watcher{
			Host:    host,
			SelfIDs: watcher.SelfCandidates("/proc"),
			Logger:  log.Named("watcher"),
			Resync:  cfg.resync,
		}
		// Before the first status is published and the admin endpoint
		// serves it.
		d.followStats(w.Stats)
	}
	// At start-up every route that can be served must listen: a port in use
	// stops the ambassador instead of leaving it half-configured. Without
	// an engine yet, routes whose target has no fallback wait for it.
	if err := d.resolve(ctx); err != nil {
		return err
	}
	log.Debug("listen backlog", zap.Int("somaxconn", proxy.Backlog()))

	adm, err := startAdmin(ctx, cfg, log.Named("admin"), d, m.Handler())
	if err != nil {
		return err
	}
	defer adm.stop()

	var updates <-chan source.Update
	if follow {
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Run returns nil on cancellation and never gives up on the
			// engine; an error means it could not start at all.
			if err := w.Run(wctx); err != nil {
				log.Error("cannot follow the docker engine", errorField(err))
			}
		}()
		defer wg.Wait()
		defer cancel()
		updates = w.Updates()
		log.Info("following the docker engine", zap.String("host", d.docker.Host))
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-table.errc:
			log.Error("listener failed; shutting down", errorField(err))
			return err
		case req := <-d.requests:
			req.reply <- d.rewire(ctx, req)
		case u, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			d.update(ctx, u)
		}
	}
}

// dynamic is the run loop's state: the route specs, the latest snapshot,
// the overrides, and what was last applied. Only serve's goroutine uses it;
// the admin endpoint reads the status it publishes and sends rewire
// requests through requests.
type dynamic struct {
	cfg     *config
	log     *zap.Logger
	table   *routeTable
	metrics *metrics
	specs   []resolver.Spec
	local   []netip.Prefix // the ambassador's own listening addresses (resolver.Options.Local)

	snap      *source.Snapshot    // nil until the engine answered
	routes    []resolver.Route    // as last resolved
	overrides map[string]override // by key: a route name or a target
	warnings  []string            // of the last resolution, logged when they change
	noRoutes  bool                // "no routes yet" was logged
	docker    dockerStatus
	stats     func() source.Stats // the watcher's counters now; nil when none is followed

	status   atomic.Pointer[statusDoc]
	requests chan rewireRequest
}

func newDynamic(cfg *config, log *zap.Logger, table *routeTable, m *metrics, specs []resolver.Spec, follow bool) *dynamic {
	return &dynamic{
		cfg: cfg, log: log, table: table, metrics: m, specs: specs,
		overrides: map[string]override{},
		docker:    dockerStatus{Following: follow, Synced: !follow},
		requests:  make(chan rewireRequest),
	}
}

// update applies one watcher update.
func (d *dynamic) update(ctx context.Context, u source.Update) {
	if len(u.Gone) > 0 {
		// First, before anything else: new connections must not reach an
		// address Docker may already have handed to another container.
		d.table.forget(u.Gone)
	}
	d.docker = dockerStatusOf(u, d.docker)
	d.metrics.dockerState(u.Connected, u.StreamErr == nil)
	if u.Snapshot == nil {
		// The engine has never answered (the watcher logs why): keep
		// serving the routes that need no engine.
		d.publish()
		return
	}
	d.snap = u.Snapshot
	d.docker.Synced = true
	if err := d.resolve(ctx); err != nil {
		d.log.Error("cannot serve route", errorField(err))
	}
	d.table.pruneFallbacks(usable(u.Snapshot))
	if !u.EventTime.IsZero() {
		d.metrics.applied(time.Since(u.EventTime))
	}
	if len(d.routes) == 0 && !d.noRoutes {
		d.log.Warn("no routes yet: link a container, label the ambassador ambassador.target=NAME, or pass --route")
	}
	d.noRoutes = len(d.routes) == 0
}

// resolve recomputes the routes from the specs, the snapshot and the
// overrides, applies them, and publishes the status. It returns the listen
// errors.
func (d *dynamic) resolve(ctx context.Context) error {
	return d.apply(ctx, resolver.Resolve(d.specs, d.snap, d.options()))
}

// apply applies a resolution of the specs, the snapshot and the overrides,
// and publishes the status. It returns the listen errors.
func (d *dynamic) apply(ctx context.Context, res resolver.Result) error {
	if !slices.Equal(res.Warnings, d.warnings) {
		for _, w := range res.Warnings {
			if !slices.Contains(d.warnings, w) {
				d.log.Warn(w)
			}
		}
		d.warnings = res.Warnings
	}
	d.routes = res.Routes
	routes := res.Routes
	if !d.docker.Synced {
		routes = servable(routes)
	}
	err := d.table.apply(ctx, routes)
	d.publish()
	return err
}

func (d *dynamic) options() resolver.Options {
	o := resolver.Options{Network: d.cfg.network, ClaimScope: d.cfg.claimScope, Claims: d.cfg.claims, Local: d.local}
	if len(d.overrides) > 0 {
		o.Overrides = make(map[string]string, len(d.overrides))
		for k, v := range d.overrides {
			o.Overrides[k] = v.Target
		}
	}
	return o
}

// followStats makes the status and the metrics read the Docker counters
// from stats (watcher.Watcher.Stats) when they are served, rather than from
// the updates: the watcher publishes no update for an event or a resync
// that changes nothing, so on a quiet engine counters from updates would
// stand still. Call it before the status is first published.
func (d *dynamic) followStats(stats func() source.Stats) {
	d.stats = stats
	d.metrics.statsFrom(stats)
}

func (d *dynamic) publish() { d.status.Store(buildStatus(d)) }

func (d *dynamic) overrideList() []override {
	out := make([]override, 0, len(d.overrides))
	for _, o := range d.overrides {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b override) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// usable returns whether a backend may still take new connections as a
// make-before-break fallback: static backends always, containers while they
// run (a paused one takes none).
func usable(snap *source.Snapshot) func(proxy.Backend) bool {
	running := map[string]bool{}
	for _, c := range snap.Containers {
		if c.State == "running" {
			running[c.ID] = true
		}
	}
	return func(b proxy.Backend) bool { return b.ID == "" || running[b.ID] }
}

// servable drops the routes that cannot be served before the engine has
// answered: those to a target name without a static fallback.
func servable(routes []resolver.Route) []resolver.Route {
	return slices.DeleteFunc(routes, func(r resolver.Route) bool { return len(r.Backends) == 0 })
}

// dockerEngine returns the engine's address and whether to follow it:
// always with --docker=on, never with off, and with auto when DOCKER_HOST
// or --docker-host names one or the default socket exists.
func (c *config) dockerEngine(getenv func(string) string) (host string, follow bool) {
	host = c.dockerHost
	switch c.docker {
	case "on":
		return host, true
	case "off":
		return host, false
	}
	if host != "" || getenv("DOCKER_HOST") != "" {
		return host, true
	}
	_, err := os.Stat(watcher.SocketPath(""))
	return host, err == nil
}

// errorField logs an error as a plain string: zap's default adds a verbose
// variant for joined errors that repeats the message.
func errorField(err error) zap.Field {
	return zap.String("error", err.Error())
}

// localPrefixes returns the addresses the ambassador listens on, for
// refusing a backend that is the ambassador itself: listen, or with
// listen empty or unspecified every address of the machine's (or the
// container's) interfaces, the loopback ranges whole, and the unspecified
// addresses, which reach a listener on every address too.
func localPrefixes(listen string) []netip.Prefix {
	if a, err := netip.ParseAddr(listen); err == nil && !a.IsUnspecified() {
		a = a.Unmap().WithZone("")
		return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
	}
	out := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128"),
	}
	addrs, _ := net.InterfaceAddrs() // none known: the loopback and unspecified ones still count
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				ip = ip.Unmap()
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	return out
}

// selfLoopLookupTimeout bounds the start-up lookup of a static route's
// host name for SelfLoops: a name that does not resolve at once is not
// the ambassador's own address as far as start-up can tell.
const selfLoopLookupTimeout = time.Second

// dnsLookup returns the lookup SelfLoops uses: the host names that DNS
// will resolve at connect time are resolved once. Those are the backends
// of static specs, and a target's fallback where it is used: without the
// engine, or with a dot in it (see resolver.Resolve); the engine resolves
// a plain target name.
func dnsLookup(specs []resolver.Spec, follow bool) func(string) []netip.Addr {
	names := map[string]bool{}
	for _, s := range specs {
		for _, e := range s.Backends {
			if s.Target == "" || !follow || strings.Contains(strings.TrimSuffix(e.Host, "."), ".") {
				names[e.Host] = true
			}
		}
	}
	return func(host string) []netip.Addr {
		if !names[host] {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), selfLoopLookupTimeout)
		defer cancel()
		addrs, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		return addrs
	}
}
