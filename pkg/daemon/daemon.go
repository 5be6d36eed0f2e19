package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/health"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// Options configure a Daemon. They are plain values; the zero value of a
// field is its documented default. Only Specs or Sources must be set: a
// daemon with neither has nothing to serve.
type Options struct {
	// Specs are the configured routes (--route, AMBASSADORD_ROUTES, the
	// classic link variables), as resolver.Merge returns them.
	Specs []resolver.Spec

	// Sources are the engines to follow, by distinct names. Run starts
	// each one's Run and stops it. Without any, only Specs are served,
	// and a target name resolves to its fallback, if it has one.
	Sources []source.Source

	// SourceHosts are the addresses of the sources' engines, by source
	// name, for the status only (the Docker source's
	// "unix:///var/run/docker.sock"). A source without one shows none.
	SourceHosts map[string]string

	// Engines describes the sources' engines, by source name, as
	// resolver.Options.Engines does: a Remote engine's containers are
	// reached at its Address and the host ports they publish. A source
	// not in the map is local. A remote engine is also one whose
	// containers are dropped from the candidates once it has been
	// unreachable for EngineGrace, and one that need not answer for the
	// daemon to be ready: see the package doc.
	Engines map[string]resolver.Engine

	// NoLocality is the resolver's option of the same name: at equal
	// priority, remote backends are balanced with local ones, where by
	// default they serve only while no local one is usable.
	NoLocality bool

	// EngineGrace is how long a remote engine's containers stay
	// candidates once it is unreachable: they may still serve, and a
	// connect that fails moves on to the next backend. After it they are
	// dropped from the merged view (new connections no longer go to them;
	// established ones are left alone) until the engine answers again.
	// Zero means 5s. A local engine's last snapshot is served however long
	// it is down.
	EngineGrace time.Duration

	// ListenAddress is the IP address the routes listen on; empty means
	// every interface.
	ListenAddress string

	// DialTimeout, IdleTimeout, BackendWait and MaxConns are every route's
	// proxy.Route settings of the same names: zero means the proxy's
	// default (5s), never, fail at once, and no limit.
	DialTimeout time.Duration
	IdleTimeout time.Duration
	BackendWait time.Duration
	MaxConns    int

	// ReplayAll, or a route's listen port in ReplayPorts, has the route
	// keep ReplayBytes of what a client sends first, to replay the
	// connection on another backend (proxy.Route.ReplayBytes). None by
	// default: replay is only for protocols whose first message is safe
	// to run twice.
	ReplayAll   bool
	ReplayPorts []int
	ReplayBytes int

	// SendProxyAll, or a route's listen port in SendProxyPorts, has the
	// route write a PROXY protocol header of SendProxyVersion (proxy.ProxyV1,
	// ProxyV2) to its backends ahead of the client's bytes
	// (proxy.Route.ProxyProtocol); a backend labelled
	// ambassador.proxy-protocol gets its own version whatever the route's.
	SendProxyAll     bool
	SendProxyPorts   []int
	SendProxyVersion int

	// AcceptProxyAll, or a route's listen port in AcceptProxyPorts, has the
	// route read a PROXY header from every client, and take from
	// AcceptProxyFrom only, resetting any other client
	// (proxy.Route.AcceptProxy). A route is never given an empty list:
	// with none, it reads no header. ProxyHeaderTimeout bounds the wait
	// for a header; zero means the proxy's default (5s).
	AcceptProxyAll     bool
	AcceptProxyPorts   []int
	AcceptProxyFrom    []netip.Prefix
	ProxyHeaderTimeout time.Duration

	// LeastConnAll, or a route's listen port in LeastConnPorts, balances
	// the route's new connections by least connections (proxy.LeastConn)
	// rather than round-robin, unless its claimers' ambassador.balance
	// labels say otherwise.
	LeastConnAll   bool
	LeastConnPorts []int

	// Checks are the active health checks of the TCP routes, by listen
	// port; the check at port 0 is that of every route without one of its
	// own. A backend's ambassador.check label wins over its route's. A
	// checked backend enters its route's set only once it passes (see
	// pkg/health). None by default.
	Checks map[int]source.Check

	// HealthConcurrency bounds the health checks in flight at once. Zero
	// means 16.
	HealthConcurrency int

	// EjectAfter, EjectTime and MaxEjectTime are every TCP route's
	// proxy.Route settings of the same names: passive outlier detection.
	// Zero EjectAfter never ejects.
	EjectAfter   int
	EjectTime    time.Duration
	MaxEjectTime time.Duration

	// ListenTLS says which routes listen with TLS (resolver.Options'
	// field of that name), with ServerTLS, the configuration that
	// decides which client certificates they require; a route that must
	// listen with TLS while ServerTLS is nil is not served (never in
	// plain text). BackendTLS gives the configuration to dial a TLS
	// backend at an address (proxy.Route.BackendTLS); nil refuses them.
	ListenTLS  resolver.ListenTLS
	ServerTLS  *tls.Config
	BackendTLS func(addr string) *tls.Config

	// UDPIdleTimeout and UDPMaxFlows are proxy.UDPRoute's IdleTimeout and
	// MaxFlows for every UDP route: zero means the proxy's defaults.
	UDPIdleTimeout time.Duration
	UDPMaxFlows    int

	// Drain closes, this long after a rewire, the connections still on
	// the backends the rewire dropped. Zero keeps them until they end. A
	// rewire by hand with a drain of its own (api.RewireRequest.Drain)
	// overrides it for that rewire.
	Drain time.Duration

	// ShutdownGrace is how long established connections may go on once
	// Run's context is cancelled, or once their route is removed, before
	// they are closed. Zero closes them at once.
	ShutdownGrace time.Duration

	// Network, ClaimScope and Claims are the resolver's options of the
	// same names: the network to reach backends on, and where claims by
	// label count.
	Network    string
	ClaimScope resolver.ClaimScope
	Claims     resolver.Claims

	// StateFile keeps the rewires made by hand across restarts; empty
	// keeps them in memory only. New checks that its directory takes a
	// file, and reads the rewires it holds.
	StateFile string

	// Logger receives the controller's logs; the proxy's are scoped under
	// it as "proxy". Nil means none.
	Logger *zap.Logger

	// Metrics receives what the controller does, for metrics. Nil means
	// none.
	Metrics Metrics
}

// Metrics is what the controller reports, for metrics (pkg/metrics
// implements it). Its methods must be safe for concurrent use: the
// observers it returns are called from connection goroutines.
type Metrics interface {
	// Observer returns the observer of the route named route, set as its
	// proxy.Route's Observer.
	Observer(route string) proxy.Observer
	// UDPObserver is Observer for a UDP route (proxy.UDPRoute).
	UDPObserver(route string) proxy.UDPObserver
	// BackendSet records the route's backend set, whenever it changes.
	BackendSet(route string, backends []proxy.Backend)
	// Rewired counts a change of the route's backend set, not its first.
	Rewired(route string)
	// Overridden records the route's rewire by hand: the target it was
	// rewired to, "" when it is not.
	Overridden(route, target string)
	// TaskBackends records which of the route's backends, by address,
	// are Swarm tasks.
	TaskBackends(route string, tasks map[string]*source.Task)
	// RouteRemoved forgets the route's series.
	RouteRemoved(route string)
	// SourceState records whether the source's engine is reachable, and
	// whether its events are followed.
	SourceState(source string, connected, streaming bool)
	// FollowSource gives the source's live counters, to read when they
	// are served.
	FollowSource(source string, stats func() source.Stats)
	// SourceDropped records whether the source's containers are dropped
	// from the merged view, its engine unreachable beyond EngineGrace.
	SourceDropped(source string, dropped bool)
	// Applied records the time from an engine event to the routes it led
	// to being applied.
	Applied(latency time.Duration)
	// HealthChecked counts one health check by result (health.ResultPass
	// or ResultFail); it is called from the checkers' goroutines.
	HealthChecked(result string)
	// FollowHealth gives the numbers of checked backends up and down now,
	// to read when they are served.
	FollowHealth(counts func() (up, down int))
}

// nopMetrics is the sink of a Daemon without Metrics.
type nopMetrics struct{}

func (nopMetrics) Observer(string) proxy.Observer               { return nil }
func (nopMetrics) UDPObserver(string) proxy.UDPObserver         { return nil }
func (nopMetrics) BackendSet(string, []proxy.Backend)           {}
func (nopMetrics) Rewired(string)                               {}
func (nopMetrics) Overridden(string, string)                    {}
func (nopMetrics) RouteRemoved(string)                          {}
func (nopMetrics) TaskBackends(string, map[string]*source.Task) {}
func (nopMetrics) SourceState(string, bool, bool)               {}
func (nopMetrics) FollowSource(string, func() source.Stats)     {}
func (nopMetrics) SourceDropped(string, bool)                   {}
func (nopMetrics) Applied(time.Duration)                        {}
func (nopMetrics) HealthChecked(string)                         {}
func (nopMetrics) FollowHealth(func() (int, int))               {}

// ErrNoRoutes is the start-up error of a daemon with nothing to serve and
// no engine to learn routes from.
var ErrNoRoutes = errors.New("no routes: link a container (docker run --link redis:redis ...), " +
	"set a classic variable (-e REDIS_PORT_6379_TCP=tcp://HOST:6379), pass --route 6379:HOST:6379, " +
	"or mount the Docker socket (-v /var/run/docker.sock:/var/run/docker.sock) and label the ambassador ambassador.target=NAME")

// Daemon is the controller. Build it with New, run it with Run (once).
type Daemon struct {
	opts    Options
	log     *zap.Logger
	metrics Metrics
	local   []netip.Prefix // the ambassador's own listening addresses (resolver.Options.Local)

	// The fields below belong to the run loop: Run's goroutine, or the
	// caller of New before Run starts.
	table     *routeTable
	sources   []*sourceState          // in Options.Sources' order
	snap      *source.Snapshot        // the sources' merged view; nil until one answered
	routes    []resolver.Route        // as last resolved, each backend with its health check
	last      resolver.Result         // the last resolution, applied again when a backend's health changes
	health    *health.Monitor         // the active health checks; its own goroutines
	overrides map[string]api.Override // by key: a route name or a target
	warnings  []string                // of the last resolution, logged when they change
	noRoutes  bool                    // "no routes yet" was logged

	grace    *time.Timer               // fires at the earliest end of a remote engine's grace; stopped when none runs
	status   atomic.Pointer[published] // the latest document, for any goroutine
	requests chan rewireRequest        // from Rewire to the run loop
	running  atomic.Bool               // Run was called
	serving  chan struct{}             // closed once the first routes listen
	stopped  chan struct{}             // closed when Run returns
}

// New checks opts and prepares a daemon: the specs against the
// ambassador's own addresses (a route to itself would loop until
// descriptors run out), the state file's directory and the rewires it
// holds, and the sources' names. Nothing listens yet.
func New(opts Options) (*Daemon, error) {
	if len(opts.Specs) == 0 && len(opts.Sources) == 0 {
		return nil, ErrNoRoutes
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	d := &Daemon{
		opts:      opts,
		log:       log,
		metrics:   opts.Metrics,
		local:     localPrefixes(opts.ListenAddress),
		overrides: map[string]api.Override{},
		requests:  make(chan rewireRequest),
		serving:   make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	if d.metrics == nil {
		d.metrics = nopMetrics{}
	}
	if err := resolver.SelfLoops(opts.Specs, d.local, dnsLookup(opts.Specs, len(opts.Sources) > 0)); err != nil {
		return nil, err
	}
	for _, src := range opts.Sources {
		name := src.Name()
		if slices.ContainsFunc(d.sources, func(s *sourceState) bool { return s.name == name }) {
			return nil, fmt.Errorf("follow sources: two are named %q", name)
		}
		d.sources = append(d.sources, &sourceState{src: src, name: name, host: opts.SourceHosts[name], remote: opts.Engines[name].Remote})
	}
	saved, err := loadState(opts.StateFile)
	if err != nil {
		return nil, err
	}
	for _, o := range saved {
		d.overrides[o.Key] = o
		log.Info("rewire restored from the state file", zap.String("route", o.Key), zap.String("target", o.Target))
	}
	// Before the first status is published and the metrics are served.
	for _, s := range d.sources {
		d.metrics.FollowSource(s.name, s.src.Stats)
	}
	d.table = newRouteTable(&d.opts, log, d.metrics)
	d.health = &health.Monitor{
		MaxConcurrent: opts.HealthConcurrency,
		Logger:        log.Named("health"),
		OnCheck:       d.metrics.HealthChecked,
	}
	d.metrics.FollowHealth(d.health.Counts)
	// Stopped until a remote engine is lost (armGrace).
	d.grace = time.NewTimer(time.Hour)
	d.grace.Stop()
	return d, nil
}

// Run serves the routes until ctx is cancelled, then lets established
// connections finish for the shutdown grace period and returns nil. At
// start every route that can be served must listen: an error (a port in
// use) is returned before anything is served, with nothing left running.
// Without an engine yet, routes whose target has no fallback wait for it.
// Run returns an error later only when a listener fails for good.
func (d *Daemon) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("daemon: Run called twice")
	}
	defer close(d.stopped)
	defer d.table.shutdown()
	defer d.health.Close()
	defer d.grace.Stop()
	if err := d.resolve(ctx); err != nil {
		return err
	}
	d.log.Debug("listen backlog", zap.Int("somaxconn", proxy.Backlog()))

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	updates := make(chan sourceUpdate)
	for i, s := range d.sources {
		wg.Add(2)
		go d.runSource(sctx, &wg, s)
		go d.forward(sctx, &wg, i, s.src, updates)
	}
	close(d.serving)

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-d.table.errc:
			d.log.Error("listener failed; shutting down", errorField(err))
			return err
		case req := <-d.requests:
			req.reply <- d.rewire(ctx, req.RewireRequest)
		case <-d.grace.C:
			d.graceOver(ctx)
		case <-d.health.Changed():
			d.healthChanged(ctx)
		case u := <-updates:
			if u.ended {
				d.sourceEnded(ctx, u.index)
				continue
			}
			d.update(ctx, u.index, u.Update)
		}
	}
}

// Serving is closed once Run has the routes that can be served listening
// and follows the sources: the moment to start serving the status.
func (d *Daemon) Serving() <-chan struct{} { return d.serving }

// Status returns the current status document, with the connection counts
// and the sources' counters read now; nil before Run first publishes one.
// It is safe to call from any goroutine, and the caller may keep it.
func (d *Daemon) Status() *api.Status {
	p := d.status.Load()
	if p == nil {
		return nil
	}
	return p.live()
}

// errDaemonStopped is Rewire's error once Run has returned.
var errDaemonStopped = errors.New("the daemon has stopped")

// Rewire asks the run loop to apply req, and returns its answer. It
// returns an error only when the loop did not take the request: ctx ended
// first (the loop is busy, or not running yet), or Run has returned. Once
// taken, the request is answered however long that takes, so that the
// reply says what was done.
func (d *Daemon) Rewire(ctx context.Context, req api.RewireRequest) (api.RewireReply, error) {
	r := rewireRequest{RewireRequest: req, reply: make(chan api.RewireReply, 1)}
	select {
	case d.requests <- r:
	case <-ctx.Done():
		return api.RewireReply{}, fmt.Errorf("send rewire: %w", ctx.Err())
	case <-d.stopped:
		return api.RewireReply{}, fmt.Errorf("send rewire: %w", errDaemonStopped)
	}
	return <-r.reply, nil
}

// rewireRequest is a rewire on its way to the run loop, which answers on
// reply.
type rewireRequest struct {
	api.RewireRequest
	reply chan api.RewireReply
}

// resolve recomputes the routes from the specs, the merged snapshot and
// the overrides, applies them, and publishes the status. It returns the
// listen errors.
func (d *Daemon) resolve(ctx context.Context) error {
	return d.apply(ctx, resolver.Resolve(d.opts.Specs, d.snap, d.resolverOptions()))
}

// apply applies a resolution of the specs, the snapshot and the overrides,
// and publishes the status. It returns the listen errors.
func (d *Daemon) apply(ctx context.Context, res resolver.Result) error {
	if !slices.Equal(res.Warnings, d.warnings) {
		for _, w := range res.Warnings {
			if !slices.Contains(d.warnings, w) {
				d.log.Warn(w)
			}
		}
		d.warnings = res.Warnings
	}
	d.last = res
	d.routes = d.withChecks(res.Routes)
	routes := d.routes
	if !d.settled() {
		routes = d.servable(routes)
	}
	err := d.table.apply(ctx, d.healthy(routes))
	d.pruneUnhealthy(d.routes)
	d.publish()
	return err
}

func (d *Daemon) resolverOptions() resolver.Options {
	o := resolver.Options{
		Network: d.opts.Network, ClaimScope: d.opts.ClaimScope, Claims: d.opts.Claims, Local: d.local,
		Engines: d.opts.Engines, NoLocality: d.opts.NoLocality, ListenTLS: d.opts.ListenTLS,
	}
	if len(d.overrides) > 0 {
		o.Overrides = make(map[string]string, len(d.overrides))
		for k, v := range d.overrides {
			o.Overrides[k] = v.Target
		}
	}
	return o
}

func (d *Daemon) overrideList() []api.Override {
	out := make([]api.Override, 0, len(d.overrides))
	for _, o := range d.overrides {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b api.Override) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// servable drops the routes that cannot be served before every engine has
// answered (or, for a remote one, failed to): those to a target name
// without a usable fallback, unless they listen already. One that listens
// (on its fallback, before any engine answered) keeps listening without a
// backend meanwhile, new connections waiting for one: closing it to open
// it again when the next engine answers would refuse connections in
// between, and race the closing listener for the port.
func (d *Daemon) servable(routes []resolver.Route) []resolver.Route {
	return slices.DeleteFunc(slices.Clone(routes), func(r resolver.Route) bool {
		_, listening := d.table.routes[keyOf(r)]
		return len(r.Backends) == 0 && !listening
	})
}

// errorField logs an error as a plain string: zap's default adds a verbose
// variant for joined errors that repeats the message.
func errorField(err error) zap.Field {
	return zap.String("error", err.Error())
}
