package daemon

import (
	"context"
	"fmt"
	"slices"

	"github.com/ambassadord/ambassadord/pkg/health"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// noneHealthy is a route's NoBackend when it has backends, none of which
// has passed its health check yet.
const noneHealthy = "no backend passes its health check yet"

// routeCheck returns the health check Options.Checks gives the route rt,
// by its listen port, else the one for every route; TCP routes only.
func (d *Daemon) routeCheck(rt resolver.Route) source.Check {
	if keyOf(rt).proto != resolver.TCP {
		return source.Check{}
	}
	if c, ok := d.opts.Checks[rt.Listen]; ok {
		return c
	}
	return d.opts.Checks[0]
}

// withChecks gives every backend of a TCP route the check it is to have:
// its own label's, else its route's (Options.Checks). UDP backends have
// none, whatever their labels say: a check is a TCP connect, which a UDP
// service need not answer.
func (d *Daemon) withChecks(routes []resolver.Route) []resolver.Route {
	out := make([]resolver.Route, len(routes))
	for i, rt := range routes {
		def := d.routeCheck(rt)
		udp := keyOf(rt).proto != resolver.TCP
		rt.Backends = slices.Clone(rt.Backends)
		for j, b := range rt.Backends {
			switch {
			case udp:
				rt.Backends[j].Check = source.Check{}
			case b.Check.Kind == "":
				rt.Backends[j].Check = def
			}
		}
		out[i] = rt
	}
	return out
}

// healthy starts checking every checked backend of routes (stopping the
// checks of backends no longer named), and returns routes with only the
// backends that are not checked or pass their checks: a backend enters a
// route's set once it has passed Rise times in a row, and leaves it after
// Fall failures. Make-before-break holds: when a route's new backends do
// not pass yet, the backends it drops stay the proxy's fallback until one
// of them does (proxy.Route.SetBackends), unless they fail their own
// checks (pruneUnhealthy).
func (d *Daemon) healthy(routes []resolver.Route) []resolver.Route {
	var targets []health.Target
	out := make([]resolver.Route, len(routes))
	for i, rt := range routes {
		var kept []source.Backend
		for _, b := range rt.Backends {
			if b.Check.Enabled() {
				t := health.Target{Addr: b.Addr, Check: b.Check}
				targets = append(targets, t)
				if !d.health.Up(t) {
					continue
				}
			}
			kept = append(kept, b)
		}
		if len(kept) < len(rt.Backends) {
			rt.Backends = kept
			if len(kept) == 0 {
				rt.NoBackend = noneHealthy
			}
		}
		out[i] = rt
	}
	d.health.Set(targets)
	return out
}

// pruneUnhealthy drops from the routes' make-before-break fallbacks the
// backends that are checked and down: a fallback is for a backend that
// still works while its replacement starts.
func (d *Daemon) pruneUnhealthy(routes []resolver.Route) {
	down := map[proxy.Backend]bool{}
	for _, rt := range routes {
		for _, b := range rt.Backends {
			if b.Check.Enabled() && !d.health.Up(health.Target{Addr: b.Addr, Check: b.Check}) {
				down[proxy.Backend{Addr: b.Addr, ID: b.ID, TLS: b.TLS, Weight: b.Weight}] = true
			}
		}
	}
	if len(down) == 0 {
		return
	}
	d.table.pruneFallbacks(func(b proxy.Backend) bool { return !down[b] })
}

// healthChanged re-applies the last resolution when a checked backend
// went up or down.
func (d *Daemon) healthChanged(ctx context.Context) {
	if err := d.apply(ctx, d.last); err != nil {
		d.log.Error("cannot serve route", errorField(err))
	}
}

// checkState describes the check of b for the status: "" when b has
// none, else "up" or "down", with the failures and the last error.
func (d *Daemon) checkState(b source.Backend) (state, detail string) {
	if !b.Check.Enabled() {
		return "", ""
	}
	s, ok := d.health.State(health.Target{Addr: b.Addr, Check: b.Check})
	switch {
	case !ok || s.Checks == 0:
		return "pending", "not checked yet"
	case s.Up:
		return "up", fmt.Sprintf("%d passes in a row", s.Passes)
	case s.Passes > 0:
		return "down", fmt.Sprintf("%d of %d passes", s.Passes, b.Check.Rise)
	}
	return "down", fmt.Sprintf("%d failures in a row: %s", s.Fails, s.LastError)
}

// balanceOf returns the proxy's balance for rt: its claimers' label, else
// Options.LeastConnAll or LeastConnPorts, else round-robin.
func balanceOf(opts *Options, rt resolver.Route) proxy.Balance {
	switch rt.Balance {
	case resolver.BalanceLeastConn:
		return proxy.LeastConn
	case resolver.BalanceRoundRobin:
		return proxy.RoundRobin
	}
	if opts.LeastConnAll || slices.Contains(opts.LeastConnPorts, rt.Listen) {
		return proxy.LeastConn
	}
	return proxy.RoundRobin
}
