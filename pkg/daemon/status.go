package daemon

import (
	"net"
	"slices"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// published is a status document as the run loop built it, with what the
// values that change without a new document are read from when it is
// served: the connection counts from the proxy routes, and the sources'
// counters (a source publishes no update for an event or a resync that
// changes nothing). It is never mutated once stored.
type published struct {
	doc     api.Status
	proxies []forwarder           // by index of doc.Routes; nil when not listening
	stats   []func() source.Stats // by index of doc.Sources
}

// publish builds the status document from the run loop's state and
// stores it for Status.
func (d *Daemon) publish() {
	p := &published{doc: api.Status{
		Overrides: d.overrideList(),
		Warnings:  d.warnings,
		Routes:    []api.Route{},
	}}
	doc := &p.doc
	containers := map[string]source.Container{}
	if d.snap != nil {
		for _, c := range d.snap.Containers {
			containers[c.ID] = c
		}
	}
	for _, s := range d.sources {
		st := api.Source{
			Name: s.name, Following: true, Host: s.host, Engine: s.engine, Remote: s.remote, Connected: s.connected, Synced: s.synced,
			Error: s.err, StreamError: s.streamErr, UnreachableSince: s.lost.UTC(), Dropped: s.dropped,
		}
		if s.remote {
			st.Grace = api.Duration(d.engineGrace())
		}
		if s.snap != nil && s.snap.Self != nil {
			st.Self = s.snap.Self.Name
		}
		doc.Sources = append(doc.Sources, st)
		p.stats = append(p.stats, s.src.Stats)
	}
	for _, rt := range d.routes {
		rs := api.Route{
			Name: rt.Name, Target: rt.Target, Port: rt.Port, Source: rt.Source,
			Override: rt.Override, NoBackend: rt.NoBackend, Candidates: rt.Candidates,
			Backends: []api.Backend{}, TLS: rt.ListenTLS, Protocol: keyOf(rt).proto,
		}
		if rs.Protocol == resolver.TCP {
			rs.Balance = balanceOf(&d.opts, rt).String()
		}
		listen, pr, ok := d.table.listening(rt)
		if ok {
			rs.Listen = listen
		} else {
			doc.NotReady = append(doc.NotReady, "route "+rt.Name+" is not listening")
		}
		var tasks map[string]*source.Task
		for _, b := range rt.Backends {
			bs := api.Backend{Addr: b.Addr, TLS: b.TLS, ContainerID: b.ID, Weight: b.Weight}
			if b.Check.Enabled() {
				bs.Check = source.FormatCheck(b.Check)
				bs.CheckState, bs.CheckDetail = d.checkState(b)
			}
			if c, ok := containers[b.ID]; ok {
				bs.Container, bs.State, bs.Health = c.Name, c.State, c.Health
				if t := c.Task; t != nil {
					bs.Service, bs.Task, bs.Node = t.Service, t.String(), t.Node
					if tasks == nil {
						tasks = map[string]*source.Task{}
					}
					tasks[b.Addr] = t
				}
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
		p.proxies = append(p.proxies, pr)
		d.metrics.TaskBackends(rt.Name, tasks)
	}
	doc.NotReady = append(doc.NotReady, notSynced(d.sources)...)
	doc.Ready = len(doc.NotReady) == 0
	d.status.Store(p)
}

// live returns a copy of the document with the values read now: the
// connection counts and the sources' counters; Docker is the first
// source's state, or, with none, says that no engine is followed.
func (p *published) live() *api.Status {
	out := p.doc
	out.Routes = make([]api.Route, len(p.doc.Routes))
	for i, r := range p.doc.Routes {
		if p.proxies[i] != nil {
			r.Active = p.proxies[i].Active()
			if ej := p.proxies[i].Ejections(); len(ej) > 0 {
				r.Backends = slices.Clone(r.Backends)
				for j, b := range r.Backends {
					for _, e := range ej {
						if e.Backend.Addr == b.Addr && e.Backend.ID == b.ContainerID {
							r.Backends[j].EjectedUntil, r.Backends[j].Ejections = e.Until.UTC(), e.Ejections
						}
					}
				}
			}
		}
		out.Routes[i] = r
	}
	out.Sources = make([]api.Source, len(p.doc.Sources))
	for i, s := range p.doc.Sources {
		st := p.stats[i]()
		s.Events, s.Reconnects, s.Resyncs, s.Drift = st.Events, st.Reconnects, st.Resyncs, st.Drift
		out.Sources[i] = s
	}
	out.Docker = api.Source{Synced: true}
	if len(out.Sources) > 0 {
		out.Docker = out.Sources[0]
	} else {
		out.Sources = nil
	}
	return &out
}
