package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// rewire applies req. Overrides take effect at once for new connections,
// are kept across engine reconnects (they live here, not in a source),
// and are written to the state file when there is one.
func (d *Daemon) rewire(ctx context.Context, req api.RewireRequest) api.RewireReply {
	before := maps.Clone(d.overrides)
	var keys []string
	if req.Reset {
		switch _, ok := d.overrides[req.Key]; {
		case req.Key == "":
			keys = slices.Sorted(maps.Keys(d.overrides))
			clear(d.overrides)
		case ok:
			keys = []string{req.Key}
			delete(d.overrides, req.Key)
		default:
			return api.RewireReply{Error: fmt.Sprintf("no rewire of %q to reset (see ambassadord status)", req.Key), Refusal: api.Unknown}
		}
	} else {
		if err := resolver.ParseOverride(req.Target); err != nil {
			return api.RewireReply{Error: fmt.Sprintf("new target %q: %v", req.Target, err), Refusal: api.Invalid}
		}
		if !d.knows(req.Key) {
			return api.RewireReply{Error: fmt.Sprintf("no route or target %q: give a route's listen port or a target name (see ambassadord status)", req.Key), Refusal: api.Unknown}
		}
		keys = []string{req.Key}
		d.overrides[req.Key] = api.Override{Key: req.Key, Target: req.Target, Since: time.Now().UTC().Truncate(time.Second), Drain: api.Duration(req.Drain)}
	}

	previous := slices.Clone(d.routes)
	// Resolve, and check, before applying: a refused rewire must not touch
	// the routes, not even for a moment.
	res := resolver.Resolve(d.opts.Specs, d.snap, d.resolverOptions())
	if !req.Reset && !req.Force {
		for _, rt := range affected(previous, res.Routes, keys) {
			if len(rt.Backends) == 0 {
				// Refuse rather than leave the route with nothing to
				// forward to; --force accepts it (a target about to start).
				d.overrides = before
				return api.RewireReply{Error: fmt.Sprintf("route %s: %s has no usable backend now (%s); nothing changed (use --force to rewire anyway)",
					rt.Name, req.Target, rt.NoBackend), Refusal: api.Unusable}
			}
		}
	}
	if err := d.apply(ctx, res); err != nil {
		d.log.Error("cannot serve route", errorField(err))
	}
	changed := affected(previous, d.routes, keys)
	if err := saveState(d.opts.StateFile, d.overrideList()); err != nil {
		d.log.Error("rewire applied but not saved", errorField(err))
	}
	var reply api.RewireReply
	for _, rt := range changed {
		old := routeByName(previous, rt.Name)
		fields := []zap.Field{zap.String("route", rt.Name), zap.Stringers("backend", rt.Backends), zap.Stringers("previous", old.Backends)}
		if req.Reset {
			d.log.Info("rewire reset", fields...)
		} else {
			d.log.Info("rewired by hand", append(fields, zap.String("target", req.Target), zap.Duration("drain", req.Drain))...)
		}
		if req.Drain > 0 {
			// The request's own drain replaces the one Options.Drain
			// started when the routes were applied.
			d.table.drainAfter(keyOf(rt), req.Drain)
		}
		if rs, ok := d.status.Load().doc.Route(rt.Name); ok {
			reply.Routes = append(reply.Routes, rs)
		}
	}
	return reply
}

// knows reports whether key names a route (its name, i.e. listen port) or
// the target of one.
func (d *Daemon) knows(key string) bool {
	for _, rt := range d.routes {
		if rt.Name == key || rt.Target == key {
			return true
		}
	}
	// A target already rewired away is still a valid key.
	for _, o := range d.overrides {
		if o.Key == key {
			return true
		}
	}
	return false
}

// affected returns the routes of current that keys name, before or after
// the change from previous: by name, or by target (a rewire by target
// changes the route's target, and a reset changes it back).
func affected(previous, current []resolver.Route, keys []string) []resolver.Route {
	var out []resolver.Route
	for _, rt := range current {
		old := routeByName(previous, rt.Name)
		if slices.ContainsFunc(keys, func(k string) bool { return rt.Name == k || rt.Target == k || old.Target == k }) {
			out = append(out, rt)
		}
	}
	return out
}

func routeByName(routes []resolver.Route, name string) resolver.Route {
	for _, r := range routes {
		if r.Name == name {
			return r
		}
	}
	return resolver.Route{}
}

// drainAfter closes, after d, the connections of the route at key that are
// not on its backends of that moment. A drain pending on the route is
// replaced.
func (t *routeTable) drainAfter(key routeKey, d time.Duration) {
	s, ok := t.routes[key]
	if !ok {
		return
	}
	if s.drain != nil {
		s.drain.Stop()
	}
	p, name, log := s.proxy, s.spec.Name, t.log
	s.drain = time.AfterFunc(d, func() { closeDropped(p, name, log) })
}

// closeDropped ends a drain: it closes the route's connections (flows)
// that are not on its backends of this moment, which a rewire dropped.
func closeDropped(p forwarder, route string, log *zap.Logger) {
	current := p.Backends()
	n := p.CloseConns(func(b proxy.Backend) bool { return !slices.Contains(current, b) })
	if n > 0 {
		log.Info("drain over; closed connections to previous backends", zap.String("route", route), zap.Int("closed", n))
	}
}
