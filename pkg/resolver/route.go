package resolver

import (
	"slices"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// Route is what the proxy serves on one listening port: the backends a new
// connection may be forwarded to, and why. Routes are immutable once
// returned.
type Route struct {
	// Name is stable across resolutions and meant for humans (logs,
	// metrics, rewire): the decimal listen port, e.g. "6379", with /udp
	// for a UDP route, "53/udp".
	Name string
	// Protocol is the transport: TCP, the only one so far. Routes are
	// keyed by Protocol and Listen.
	Protocol string
	// Listen is the port to listen on, 1..65535.
	Listen int
	// Backends are the places to forward to, in order. A container backend
	// has Addr "IP:port" and ID the container's full ID, so that it stays
	// pinned to that container even if another one later gets its IP. A
	// static backend, or a fallback, has Addr Endpoint.Addr() and no ID.
	// Empty when nothing can serve the route; NoBackend says why.
	Backends []source.Backend
	// Source says where the route came from: the Source of its Spec,
	// "link NAME:ALIAS" for a link of the ambassador, or
	// "label ambassador.target=NAME" for the ambassador's own label.
	Source string
	// Target is the name the route's containers were looked up by; empty
	// for a static route.
	Target string
	// Engine is the engine Target names a container of (Spec.Engine, or
	// a rewire to ENGINE/NAME); "" for the local engine and for a static
	// route. Claims on Target count from every engine all the same.
	Engine string
	// Port is the backend port of a target route (a claimer's
	// ambassador.port label overrides it for that claimer); 0 for a static
	// route.
	Port int
	// Candidates are the containers considered for Target, sorted by Name,
	// ID and Engine, each saying why it was chosen or skipped, for logs and
	// `ambassadord explain`. Empty for static routes and without a
	// snapshot.
	Candidates []Candidate
	// NoBackend says why Backends is empty, e.g. "docker engine not
	// reached"; empty when there are backends.
	NoBackend string
	// ListenTLS: the route listens with TLS (Options.ListenTLS, or, on a
	// route of the ambassador's own label or links, its ambassador.tls=true
	// label).
	ListenTLS bool
	// Override is the rewire applied to this route (Options.Overrides):
	// the target name or HOST:PORT it was moved to; "" when none.
	Override string
	// Balance is how the route's chosen claimers ask new connections to
	// be balanced (their ambassador.balance labels): BalanceLeastConn if
	// any says so, else BalanceRoundRobin if any says so, else "" (the
	// controller's default for the route). Always "" for UDP.
	Balance string
}

// Candidate is one container considered for a route's target.
type Candidate struct {
	ID   string // full container ID
	Name string
	// Engine is the engine the container is on (source.Container.Engine):
	// two engines may each have a container of that name.
	Engine string
	// Task names a Swarm service's task and its node ("redis.2 on
	// node-1"); "" for a plain container.
	Task string `json:",omitempty"`
	// Chosen reports whether the container is among the route's Backends.
	Chosen bool
	// Reason says why, e.g. "claims redis, priority 10, healthy",
	// "unhealthy", "paused", "lower priority (0 < 10)".
	Reason string
}

// Equal reports whether r and o serve the same thing for the same reason:
// every field but Candidates, which only explain, is equal. Backends are
// compared in order; Resolve returns them in a deterministic order, so an
// unchanged snapshot yields Equal routes. Compare route sets with
// slices.EqualFunc(a, b, Route.Equal).
func (r Route) Equal(o Route) bool {
	return r.Name == o.Name && r.Protocol == o.Protocol && r.Listen == o.Listen && r.Source == o.Source &&
		r.Target == o.Target && r.Engine == o.Engine && r.Port == o.Port && r.NoBackend == o.NoBackend &&
		r.Override == o.Override && r.Balance == o.Balance && slices.Equal(r.Backends, o.Backends)
}

// Static turns specs into routes without consulting Docker: it is
// Resolve(specs, nil, Options{}).Routes. Static routes get their backends;
// target routes get their fallback, or no backend and NoBackend "docker
// engine not reached". Routes are sorted by Listen; of two specs with the
// same Listen only the first is kept, so check conflicts with Merge first.
func Static(specs []Spec) []Route {
	return Resolve(specs, nil, Options{}).Routes
}
