// Package api holds the documents of ambassadord's admin API: the status
// that the controller (pkg/daemon) publishes and the admin endpoint
// (pkg/admin) serves on /routes, and the rewire requests and replies of
// POST /rewire. The CLI decodes and prints the same types, so the three
// cannot drift apart.
//
// They are plain JSON values, shared by the package that produces them and
// those that serve or print them, so that the admin endpoint needs no
// import of the controller. A published Status is never mutated: the
// controller builds a new one for every change, and hands out copies.
// Nothing here starts a goroutine or holds a lock.
package api

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// Status is what the admin endpoint reports on /routes (and /readyz) and
// what `ambassadord status` and `explain` print.
type Status struct {
	Ready    bool     `json:"ready"`
	NotReady []string `json:"not_ready,omitempty"`
	// Docker is the first source's state (the local Docker engine, named
	// "local", unless only --engine ones are followed), or Following false
	// when no engine is followed. It is the field clients of a single
	// engine have always read; Sources has every engine, in order.
	Docker    Source     `json:"docker"`
	Sources   []Source   `json:"sources,omitempty"`
	Routes    []Route    `json:"routes"`
	Overrides []Override `json:"overrides"`
	Warnings  []string   `json:"warnings,omitempty"`
}

// Source is the state of one followed engine.
type Source struct {
	// Name tells sources apart (source.Source.Name): the engine's name,
	// "local" for the engine of --docker and --docker-host, the NAME of
	// --engine for the others; empty in Docker when no engine is followed.
	Name      string `json:"name,omitempty"`
	Following bool   `json:"following"`
	Host      string `json:"host,omitempty"`
	// Engine says which engine answers there, as it describes itself
	// (source.Update.Engine): "Docker 20.10.24 (API 1.41)", "Podman 4.3.1
	// (API 1.41)"; empty until it answered.
	Engine string `json:"engine,omitempty"`
	// Remote says the engine is on another host: its containers are
	// reached at its address and the ports they publish, and dropped once
	// it has been unreachable for Grace.
	Remote    bool   `json:"remote"`
	Connected bool   `json:"connected"`
	Synced    bool   `json:"synced"` // a snapshot of it has been applied
	Error     string `json:"error,omitempty"`
	// UnreachableSince is when the engine stopped answering; zero while
	// it answers.
	UnreachableSince time.Time `json:"unreachable_since,omitzero"`
	// Grace is how long a remote engine's containers stay candidates once
	// it is unreachable (--engine-grace); zero for a local engine, whose
	// last snapshot is served however long it is down.
	Grace Duration `json:"grace,omitempty"`
	// Dropped says the remote engine has been unreachable for longer
	// than Grace: its containers are not candidates for new connections
	// until it answers again.
	Dropped bool `json:"dropped"`
	// StreamError says why the engine's events are not followed while it
	// answers (source.Update.StreamErr): the routes follow it by listing
	// at every --resync meanwhile.
	StreamError string `json:"stream_error,omitempty"`
	Self        string `json:"self,omitempty"` // the ambassador's own container, if this engine runs it
	// Events and the next three are the source's counters
	// (source.Stats), read when the document is served: a source publishes
	// no update for an event or a resync that changes nothing.
	Events     uint64 `json:"events"`
	Reconnects uint64 `json:"reconnects"`
	Resyncs    uint64 `json:"resyncs"`
	Drift      uint64 `json:"drift"`
}

// Route is one route's state.
type Route struct {
	Name       string               `json:"name"`
	Protocol   string               `json:"protocol"`         // tcp or udp
	Listen     string               `json:"listen,omitempty"` // "" when not listening
	TLS        bool                 `json:"tls,omitempty"`    // listens with TLS, a client certificate required
	Target     string               `json:"target,omitempty"`
	Port       int                  `json:"port,omitempty"`
	Source     string               `json:"source"`
	Override   string               `json:"override,omitempty"`
	Backends   []Backend            `json:"backends"`
	NoBackend  string               `json:"no_backend,omitempty"`
	Candidates []resolver.Candidate `json:"candidates,omitempty"`
	// Balance is how new connections pick their backend: round-robin or
	// least-conn; empty for UDP.
	Balance string `json:"balance,omitempty"`
	// Active is the number of connections open now, read when the
	// document is served.
	Active int `json:"active_connections"`
}

// Backend is one backend of a route, with what the engine says of its
// container.
type Backend struct {
	Addr        string `json:"addr"`
	TLS         bool   `json:"tls,omitempty"` // dialled with TLS
	ContainerID string `json:"container_id,omitempty"`
	Container   string `json:"container,omitempty"`
	Network     string `json:"network,omitempty"`
	State       string `json:"state,omitempty"`
	Health      string `json:"health,omitempty"`
	// Service, Task and Node are set for a Swarm service's task: the
	// service, the task as Docker names it ("redis.2", or "redis@node"
	// for a global service's), and the node it runs on.
	Service string `json:"service,omitempty"`
	Task    string `json:"task,omitempty"`
	Node    string `json:"node,omitempty"`
	// Weight is the backend's ambassador.weight; omitted for 1.
	Weight int `json:"weight,omitempty"`
	// Check is the backend's active health check (ParseCheck's syntax);
	// CheckState "pending", "up" or "down" (a backend that is not up is
	// not in the proxy's set), CheckDetail why.
	Check       string `json:"check,omitempty"`
	CheckState  string `json:"check_state,omitempty"`
	CheckDetail string `json:"check_detail,omitempty"`
	// EjectedUntil is when the backend's ejection by passive outlier
	// detection (--eject-after) ends; zero when it is not ejected.
	// Ejections counts the ejections in a row.
	EjectedUntil time.Time `json:"ejected_until,omitzero"`
	Ejections    int       `json:"ejections,omitempty"`
}

// Route finds a route by name, listen port or target.
func (s *Status) Route(key string) (Route, bool) {
	for _, r := range s.Routes {
		if r.Name == key || r.Target == key || strings.HasSuffix(r.Listen, ":"+key) {
			return r, true
		}
	}
	return Route{}, false
}

// Override is one rewire made by hand with `ambassadord rewire`: the route
// (by name) or the target named Key is served by Target instead. The state
// file keeps them in this form too.
type Override struct {
	Key    string    `json:"key"`
	Target string    `json:"target"`
	Since  time.Time `json:"since"`
	// Drain is how long connections on the previous backends were given
	// before being closed; zero keeps them.
	Drain Duration `json:"drain,omitempty"`
}

// Duration is a time.Duration that reads and writes as "30s" in JSON.
type Duration time.Duration

// MarshalJSON writes d as time.Duration.String does.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads what time.ParseDuration accepts.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// RewireRequest asks the controller to rewire a route or target by hand,
// or to drop such overrides (Reset). It is the body of POST /rewire.
type RewireRequest struct {
	Key    string        `json:"key"`              // a route name (listen port) or a target name; "" with Reset means all
	Target string        `json:"target,omitempty"` // the new target name or HOST:PORT
	Drain  time.Duration `json:"drain,omitempty"`  // close connections on the previous backends after this long; 0 leaves it to the controller's own drain
	Reset  bool          `json:"reset,omitempty"`  // return to label- and link-driven resolution
	Force  bool          `json:"force,omitempty"`  // accept a target that has no usable backend now
}

// RewireReply is the outcome of a rewire: the routes it changed, or why
// nothing was (Error, and Refusal for the transport to map).
type RewireReply struct {
	Routes  []Route `json:"routes,omitempty"`
	Error   string  `json:"error,omitempty"`
	Refusal Refusal `json:"-"`
}

// Refusal classifies why a rewire was refused, so that the admin endpoint
// can answer with the matching HTTP status without the controller knowing
// HTTP.
type Refusal int

// The refusals.
const (
	Accepted Refusal = iota // not refused
	Invalid                 // the request is malformed (HTTP 400)
	Unknown                 // no such route, target or rewire (HTTP 404)
	Unusable                // the new target has no usable backend and Force was not set (HTTP 409)
)
