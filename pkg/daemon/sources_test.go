package daemon

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// twoSources returns options with two fake sources, docker and edge (a
// second engine), serving routes; nothing else changes in the controller.
func twoSources(t *testing.T, routes ...string) (Options, *fakeSource, *fakeSource) {
	t.Helper()
	opts := testOptions(t, routes...)
	docker, edge := newFakeSource("docker"), newFakeSource("edge")
	opts.Sources = []source.Source{docker, edge}
	opts.SourceHosts = map[string]string{"docker": "unix:///var/run/docker.sock", "edge": "tcp://edge:2375"}
	return opts, docker, edge
}

// backendsOf returns the container IDs of the route's backends, in the
// status the daemon publishes.
func backendsOf(d *Daemon, route string) []string {
	doc := d.Status()
	if doc == nil {
		return nil
	}
	r, ok := doc.Route(route)
	if !ok {
		return nil
	}
	var ids []string
	for _, b := range r.Backends {
		ids = append(ids, b.ContainerID)
	}
	return ids
}

// requireBackends waits until the route's backends are the containers
// want.
func requireBackends(t *testing.T, d *Daemon, route string, want ...string) {
	t.Helper()
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual(want, backendsOf(d, route)) },
		5*time.Second, time.Millisecond, "route %s: want backends %v, have %v", route, want, backendsOf(d, route))
}

// TestSourcesMerged feeds the controller from two sources, through Run as
// an engine would, and checks the routes of their merged view: claimers
// of either source compete by priority; the ambassador's own container,
// found by one source, gives its label route, served by a claimer the
// other source found; each source has its own state in the status, the
// first being "docker"; and the routes without a backend wait for every
// source's first sync.
func TestSourcesMerged(t *testing.T) {
	a, b, c := echoBackend(t, "a"), echoBackend(t, "b"), echoBackend(t, "c")
	listen, labelled := nettest.FreePort(t), nettest.FreePort(t)
	route, labelRoute := strconv.Itoa(listen), strconv.Itoa(labelled)
	opts, docker, edge := twoSources(t, route+":svc:1")
	d, _ := runDaemon(t, opts)

	svc := func(prio string) map[string]string {
		return map[string]string{resolver.LabelTarget: "svc", resolver.LabelPriority: prio}
	}
	ca := loopbackContainer("a", nettest.Port(t, a), svc("0"))
	cb := loopbackContainer("b", nettest.Port(t, b), svc("10"))
	cc := loopbackContainer("c", nettest.Port(t, c), map[string]string{resolver.LabelTarget: "cache"})
	// The ambassador runs on the edge engine; its labels ask for a route
	// to cache.
	self := loopbackContainer("amb", 1, map[string]string{resolver.LabelTarget: "cache", resolver.LabelPorts: labelRoute})
	delete(self.Labels, resolver.LabelPort)

	// Only docker has answered: the route its claimer serves listens, and
	// the daemon is not ready until edge answers too.
	docker.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{ca, cc}}})
	requireBackends(t, d, route, ca.ID)
	_, name := dialBackend(t, "127.0.0.1:"+route)
	assert.Equal(t, "a", name)
	doc := d.Status()
	assert.False(t, doc.Ready)
	assert.Contains(t, doc.NotReady, "waiting for the first sync with the edge engine")
	assert.NotContains(t, doc.NotReady, "waiting for the first sync with the docker engine")

	// edge answers with a claimer of higher priority, and the ambassador's
	// own container.
	edge.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Self: &self, Containers: []source.Container{self, cb}}})
	requireBackends(t, d, route, cb.ID)
	_, name = dialBackend(t, "127.0.0.1:"+route)
	assert.Equal(t, "b", name, "the claimer of higher priority, whichever source found it")
	requireBackends(t, d, labelRoute, cc.ID)
	_, name = dialBackend(t, "127.0.0.1:"+labelRoute)
	assert.Equal(t, "c", name, "the label route of the ambassador edge found, served by the claimer docker found")

	doc = d.Status()
	assert.True(t, doc.Ready, "%v", doc.NotReady)
	rs, ok := doc.Route(route)
	require.True(t, ok)
	var candidates []string
	for _, c := range rs.Candidates {
		candidates = append(candidates, c.Name)
	}
	assert.Equal(t, []string{"a", "b"}, candidates, "candidates of both sources")
	assert.Equal(t, []api.Source{
		{Name: "docker", Following: true, Host: "unix:///var/run/docker.sock", Connected: true, Synced: true},
		{Name: "edge", Following: true, Host: "tcp://edge:2375", Connected: true, Synced: true, Self: "amb"},
	}, doc.Sources)
	assert.Equal(t, doc.Sources[0], doc.Docker, "docker is the first source")

	// docker loses its engine, edge its event stream: each says so alone,
	// and the routes stay.
	docker.publish(t, source.Update{Connected: false, Err: assert.AnError, Snapshot: &source.Snapshot{Containers: []source.Container{ca, cc}}})
	edge.setStats(source.Stats{Events: 7, Resyncs: 2})
	require.Eventually(t, func() bool { return !d.Status().Docker.Connected }, 5*time.Second, time.Millisecond)
	doc = d.Status()
	assert.Equal(t, assert.AnError.Error(), doc.Sources[0].Error)
	assert.True(t, doc.Sources[1].Connected)
	assert.Equal(t, uint64(7), doc.Sources[1].Events, "counters read live from each source")
	assert.Equal(t, uint64(0), doc.Sources[0].Events)
	assert.Equal(t, []string{cb.ID}, backendsOf(d, route))
}

// TestSourceGoneForgetsOnlyItsContainers: two sources each find a claimer
// of the same route, which balances over both, with a connection held on
// each. What one source reports gone, or all of one source once it ends,
// is forgotten at once, its connections closed; the other source's
// backend keeps its connection and takes the new ones.
func TestSourceGoneForgetsOnlyItsContainers(t *testing.T) {
	for _, tt := range []struct {
		name   string
		act    func(t *testing.T, docker, edge *fakeSource, ca, cb source.Container)
		closed string // the backend whose connection is closed
	}{
		{name: "gone from docker", closed: "a", act: func(t *testing.T, docker, edge *fakeSource, ca, cb source.Container) {
			docker.publish(t, source.Update{Connected: true, Gone: []string{ca.ID}, Snapshot: &source.Snapshot{}})
		}},
		{name: "gone from edge", closed: "b", act: func(t *testing.T, docker, edge *fakeSource, ca, cb source.Container) {
			edge.publish(t, source.Update{Connected: true, Gone: []string{cb.ID}, Snapshot: &source.Snapshot{}})
		}},
		{name: "edge ends", closed: "b", act: func(t *testing.T, docker, edge *fakeSource, ca, cb source.Container) {
			edge.end()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := echoBackend(t, "a"), echoBackend(t, "b")
			listen := nettest.FreePort(t)
			route, addr := strconv.Itoa(listen), "127.0.0.1:"+strconv.Itoa(listen)
			opts, docker, edge := twoSources(t, route+":svc:1")
			d, _ := runDaemon(t, opts)
			claim := func() map[string]string { return map[string]string{resolver.LabelTarget: "svc"} }
			ca := loopbackContainer("a", nettest.Port(t, a), claim())
			cb := loopbackContainer("b", nettest.Port(t, b), claim())
			docker.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{ca}}})
			edge.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{cb}}})
			requireBackends(t, d, route, ca.ID, cb.ID)

			// Round-robin: a connection on each backend.
			conns := map[string]net.Conn{}
			for i := 0; len(conns) < 2; i++ {
				require.Less(t, i, 10, "round-robin never reached both backends")
				c, name := dialBackend(t, addr)
				if conns[name] == nil {
					conns[name] = c
				}
			}

			tt.act(t, docker, edge, ca, cb)
			kept, keptID := "a", ca.ID
			if tt.closed == "a" {
				kept, keptID = "b", cb.ID
			}
			nettest.RequireClosed(t, conns[tt.closed], "the connection to the forgotten backend")
			requireEcho(t, conns[kept], "the other source's connection")
			requireBackends(t, d, route, keptID)
			for range 3 {
				_, name := dialBackend(t, addr)
				assert.Equal(t, kept, name)
			}
			doc := d.Status()
			assert.True(t, doc.Sources[0].Connected)
			assert.Equal(t, tt.name != "edge ends", doc.Sources[1].Connected, "edge's state")
		})
	}
}

// TestMergeTakesSelfFromALocalSource: the ambassador runs on its own
// host, so a container a remote engine reports as Self (found by the same
// hints on another host) is not it, whichever source comes first.
func TestMergeTakesSelfFromALocalSource(t *testing.T) {
	mine := source.Container{ID: "a", Name: "amb"}
	theirs := source.Container{ID: "b", Name: "amb", Engine: "big"}
	local := &sourceState{name: "local", snap: &source.Snapshot{Self: &mine, Containers: []source.Container{mine}}}
	remote := &sourceState{name: "big", remote: true, snap: &source.Snapshot{Self: &theirs, Containers: []source.Container{theirs}}}

	got := merge([]*sourceState{remote, local})
	require.NotNil(t, got)
	assert.Same(t, &mine, got.Self)
	assert.Len(t, got.Containers, 2)

	alone := merge([]*sourceState{remote})
	require.NotNil(t, alone)
	assert.Nil(t, alone.Self, "a remote engine alone has no Self")
	assert.Equal(t, []source.Container{theirs}, alone.Containers)

	assert.Same(t, local.snap, merge([]*sourceState{local}), "one local source is its snapshot, unchanged")
}
