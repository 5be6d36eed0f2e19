package main

import (
	"net"
	"strings"

	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// statusDoc is what the admin endpoint reports (/routes, /readyz) and what
// `ambassadord status` and `explain` print. The run loop builds a new one
// after every change and publishes it whole; it is never mutated after.
type statusDoc struct {
	Ready     bool          `json:"ready"`
	NotReady  []string      `json:"not_ready,omitempty"`
	Docker    dockerStatus  `json:"docker"`
	Routes    []routeStatus `json:"routes"`
	Overrides []override    `json:"overrides"`
	Warnings  []string      `json:"warnings,omitempty"`

	stats func() source.Stats // for Docker's counters, read when the document is served; nil for none
}

type dockerStatus struct {
	Following bool   `json:"following"`
	Host      string `json:"host,omitempty"`
	Connected bool   `json:"connected"`
	Synced    bool   `json:"synced"` // a snapshot has been applied
	Error     string `json:"error,omitempty"`
	// StreamError says why the engine's events are not followed while it
	// answers (source.Update.StreamErr): the routes follow it by listing
	// at every --resync meanwhile.
	StreamError string `json:"stream_error,omitempty"`
	Self        string `json:"self,omitempty"` // the ambassador's own container
	Events      uint64 `json:"events"`         // this and the next three: the watcher's counters, set by withLive
	Reconnects  uint64 `json:"reconnects"`
	Resyncs     uint64 `json:"resyncs"`
	Drift       uint64 `json:"drift"`
}

type routeStatus struct {
	Name       string               `json:"name"`
	Listen     string               `json:"listen,omitempty"` // "" when not listening
	Target     string               `json:"target,omitempty"`
	Port       int                  `json:"port,omitempty"`
	Source     string               `json:"source"`
	Override   string               `json:"override,omitempty"`
	Backends   []backendStatus      `json:"backends"`
	NoBackend  string               `json:"no_backend,omitempty"`
	Candidates []resolver.Candidate `json:"candidates,omitempty"`
	Active     int                  `json:"active_connections"`

	proxy *proxy.Route // for Active, read when the document is served
}

type backendStatus struct {
	Addr        string `json:"addr"`
	ContainerID string `json:"container_id,omitempty"`
	Container   string `json:"container,omitempty"`
	Network     string `json:"network,omitempty"`
	State       string `json:"state,omitempty"`
	Health      string `json:"health,omitempty"`
}

// buildStatus assembles the document from the run loop's state.
func buildStatus(d *dynamic) *statusDoc {
	doc := &statusDoc{
		Docker:    d.docker,
		Overrides: d.overrideList(),
		Warnings:  d.warnings,
		Routes:    []routeStatus{},
		stats:     d.stats,
	}
	if doc.Overrides == nil {
		doc.Overrides = []override{}
	}
	containers := map[string]source.Container{}
	if d.snap != nil {
		for _, c := range d.snap.Containers {
			containers[c.ID] = c
		}
		if d.snap.Self != nil {
			doc.Docker.Self = d.snap.Self.Name
		}
	}
	for _, rt := range d.routes {
		rs := routeStatus{
			Name: rt.Name, Target: rt.Target, Port: rt.Port, Source: rt.Source,
			Override: rt.Override, NoBackend: rt.NoBackend, Candidates: rt.Candidates,
			Backends: []backendStatus{},
		}
		if s, ok := d.table.routes[rt.Listen]; ok {
			rs.Listen = s.ln.Addr().String()
			rs.proxy = s.proxy
		} else {
			doc.NotReady = append(doc.NotReady, "route "+rt.Name+" is not listening")
		}
		for _, b := range rt.Backends {
			bs := backendStatus{Addr: b.Addr, ContainerID: b.ID}
			if c, ok := containers[b.ID]; ok {
				bs.Container, bs.State, bs.Health = c.Name, c.State, c.Health
				host, _, _ := net.SplitHostPort(b.Addr)
				for _, n := range c.Networks {
					if n.IP == host {
						bs.Network = n.Name
					}
				}
			}
			rs.Backends = append(rs.Backends, bs)
		}
		doc.Routes = append(doc.Routes, rs)
	}
	if d.docker.Following && !d.docker.Synced {
		doc.NotReady = append(doc.NotReady, "waiting for the first sync with the docker engine")
	}
	doc.Ready = len(doc.NotReady) == 0
	return doc
}

// withLive returns a copy of doc with the values that change without the
// run loop publishing a new document: the connection counts, and the
// watcher's counters (it publishes no update for an event or a resync that
// changes nothing).
func (doc *statusDoc) withLive() *statusDoc {
	out := *doc
	if doc.stats != nil {
		s := doc.stats()
		out.Docker.Events, out.Docker.Reconnects, out.Docker.Resyncs, out.Docker.Drift = s.Events, s.Reconnects, s.Resyncs, s.Drift
	}
	out.Routes = make([]routeStatus, len(doc.Routes))
	for i, r := range doc.Routes {
		if r.proxy != nil {
			r.Active = r.proxy.Active()
		}
		out.Routes[i] = r
	}
	return &out
}

// route finds a route by name, listen port or target.
func (doc *statusDoc) route(key string) (routeStatus, bool) {
	for _, r := range doc.Routes {
		if r.Name == key || r.Target == key || strings.HasSuffix(r.Listen, ":"+key) {
			return r, true
		}
	}
	return routeStatus{}, false
}

func dockerStatusOf(u source.Update, prev dockerStatus) dockerStatus {
	s := prev
	s.Connected = u.Connected
	s.Error, s.StreamError = "", ""
	if u.Err != nil {
		s.Error = u.Err.Error()
	}
	if u.StreamErr != nil {
		s.StreamError = u.StreamErr.Error()
	}
	// Not u.Stats: the counters are read live when the document is served.
	return s
}
