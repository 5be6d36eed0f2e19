package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// rewireRequest asks the run loop to rewire a route or target by hand, or
// to drop such overrides (Reset). The admin endpoint sends it; the run loop
// answers on reply.
type rewireRequest struct {
	Key    string        `json:"key"`              // a route name (listen port) or a target name; "" with Reset means all
	Target string        `json:"target,omitempty"` // the new target name or HOST:PORT
	Drain  time.Duration `json:"drain,omitempty"`  // close connections on the previous backends after this long; 0 keeps them
	Reset  bool          `json:"reset,omitempty"`  // return to label- and link-driven resolution
	Force  bool          `json:"force,omitempty"`  // accept a target that has no usable backend now

	reply chan rewireReply
}

// rewireReply is the outcome: the routes it changed, or why nothing was.
type rewireReply struct {
	Routes []routeStatus `json:"routes,omitempty"`
	Error  string        `json:"error,omitempty"`
	status int           // HTTP status for an error
}

// rewire applies req. Overrides take effect at once for new connections,
// are kept across engine reconnects (they live here, not in the watcher),
// and are written to --state-file when there is one.
func (d *dynamic) rewire(ctx context.Context, req rewireRequest) rewireReply {
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
			return rewireReply{Error: fmt.Sprintf("no rewire of %q to reset (see ambassadord status)", req.Key), status: 404}
		}
	} else {
		if err := resolver.ParseOverride(req.Target); err != nil {
			return rewireReply{Error: fmt.Sprintf("new target %q: %v", req.Target, err), status: 400}
		}
		if !d.knows(req.Key) {
			return rewireReply{Error: fmt.Sprintf("no route or target %q: give a route's listen port or a target name (see ambassadord status)", req.Key), status: 404}
		}
		keys = []string{req.Key}
		d.overrides[req.Key] = override{Key: req.Key, Target: req.Target, Since: time.Now().UTC().Truncate(time.Second), Drain: duration(req.Drain)}
	}

	previous := slices.Clone(d.routes)
	// Resolve, and check, before applying: a refused rewire must not touch
	// the routes, not even for a moment.
	res := resolver.Resolve(d.specs, d.snap, d.options())
	if !req.Reset && !req.Force {
		for _, rt := range affected(previous, res.Routes, keys) {
			if len(rt.Backends) == 0 {
				// Refuse rather than leave the route with nothing to
				// forward to; --force accepts it (a target about to start).
				d.overrides = before
				return rewireReply{Error: fmt.Sprintf("route %s: %s has no usable backend now (%s); nothing changed (use --force to rewire anyway)",
					rt.Name, req.Target, rt.NoBackend), status: 409}
			}
		}
	}
	if err := d.apply(ctx, res); err != nil {
		d.log.Error("cannot serve route", errorField(err))
	}
	changed := affected(previous, d.routes, keys)
	if err := saveState(d.cfg.stateFile, d.overrideList()); err != nil {
		d.log.Error("rewire applied but not saved", errorField(err))
	}
	var reply rewireReply
	for _, rt := range changed {
		old := routeByName(previous, rt.Name)
		fields := []zap.Field{zap.String("route", rt.Name), zap.Stringers("backend", rt.Backends), zap.Stringers("previous", old.Backends)}
		if req.Reset {
			d.log.Info("rewire reset", fields...)
		} else {
			d.log.Info("rewired by hand", append(fields, zap.String("target", req.Target), zap.Duration("drain", req.Drain))...)
		}
		if req.Drain > 0 {
			d.table.drainAfter(rt.Listen, req.Drain)
		}
		if rs, ok := d.status.Load().route(rt.Name); ok {
			reply.Routes = append(reply.Routes, rs)
		}
	}
	return reply
}

// knows reports whether key names a route (its name, i.e. listen port) or
// the target of one.
func (d *dynamic) knows(key string) bool {
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

// drainAfter closes, after d, the connections of the route on listen port
// that are not on its backends of that moment.
func (t *routeTable) drainAfter(listen int, d time.Duration) {
	s, ok := t.routes[listen]
	if !ok {
		return
	}
	if s.drain != nil {
		s.drain.Stop()
	}
	p, log := s.proxy, t.log
	s.drain = time.AfterFunc(d, func() {
		current := p.Backends()
		n := p.CloseConns(func(b proxy.Backend) bool { return !slices.Contains(current, b) })
		if n > 0 {
			log.Info("drain over; closed connections to previous backends", zap.String("route", p.Name), zap.Int("closed", n))
		}
	})
}
