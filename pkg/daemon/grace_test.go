package daemon

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// testGrace is the engine grace of these tests: long enough to tell
// "kept during the grace" from "dropped at once", short enough to wait
// for.
const testGrace = 300 * time.Millisecond

// twoEngines returns options with two fake sources: local, the engine the
// ambassador runs on, and big, a remote engine on 127.0.0.1, with the
// engine grace of the tests.
func twoEngines(t *testing.T, routes ...string) (Options, *fakeSource, *fakeSource) {
	t.Helper()
	opts := testOptions(t, routes...)
	local, big := newFakeSource("local"), newFakeSource("big")
	opts.Sources = []source.Source{local, big}
	opts.SourceHosts = map[string]string{"local": "unix:///var/run/docker.sock", "big": "tcp://127.0.0.1:2376"}
	opts.Engines = map[string]resolver.Engine{"big": {Remote: true, Address: "127.0.0.1"}}
	opts.EngineGrace = testGrace
	return opts, local, big
}

// onEngine makes c a container of the engine named engine, publishing its
// service port on the same port of the engine's host: reached at
// 127.0.0.1 and that port whether its engine counts as local or remote.
func onEngine(c source.Container, engine string) source.Container {
	c.Engine = engine
	port, _ := strconv.Atoi(c.Labels[resolver.LabelPort])
	c.Ports = []source.Port{{Port: port, Proto: "tcp", Published: []source.Binding{{HostIP: "0.0.0.0", HostPort: port}}}}
	return c
}

// sourceStatus returns the status of the source named name.
func sourceStatus(t *testing.T, d *Daemon, name string) api.Source {
	t.Helper()
	for _, s := range d.Status().Sources {
		if s.Name == name {
			return s
		}
	}
	require.FailNow(t, "no source "+name+" in the status")
	return api.Source{}
}

// TestEngineGrace: a remote engine that becomes unreachable keeps its
// containers as candidates for the engine grace, then they are dropped:
// the routes are resolved again, new connections go to the other engine's
// backend, established ones are left alone; the status and the metrics say
// so. When the engine answers again (a resync), its containers are
// candidates again.
func TestEngineGrace(t *testing.T) {
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	listen := nettest.FreePort(t)
	route, addr := strconv.Itoa(listen), "127.0.0.1:"+strconv.Itoa(listen)
	opts, local, big := twoEngines(t, route+":svc:1")
	d, m := runDaemon(t, opts)
	big1 := seriesLabels{"engine": "big"}
	metric := func(name string) float64 {
		t.Helper()
		return metricstest.Value(t, metricstest.Scrape(t, m.Handler()), name, big1)
	}

	// The remote claimer has the higher priority: it serves while it is a
	// candidate.
	ca := onEngine(loopbackContainer("a", nettest.Port(t, a), map[string]string{resolver.LabelTarget: "svc"}), "local")
	cb := onEngine(loopbackContainer("b", nettest.Port(t, b), map[string]string{resolver.LabelTarget: "svc", resolver.LabelPriority: "10"}), "big")
	local.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{ca}}})
	bigSnap := &source.Snapshot{Containers: []source.Container{cb}}
	big.publish(t, source.Update{Connected: true, Snapshot: bigSnap})
	requireBackends(t, d, route, cb.ID)
	held, name := dialBackend(t, addr)
	require.Equal(t, "b", name)
	st := sourceStatus(t, d, "big")
	assert.True(t, st.Remote)
	assert.Equal(t, api.Duration(testGrace), st.Grace)
	assert.False(t, sourceStatus(t, d, "local").Remote)
	assert.Zero(t, sourceStatus(t, d, "local").Grace, "no grace for the local engine")

	// big is lost. During the grace its container still takes new
	// connections.
	lost := time.Now()
	big.publish(t, source.Update{Connected: false, Err: assert.AnError, Snapshot: bigSnap})
	require.Eventually(t, func() bool { return !sourceStatus(t, d, "big").Connected }, 5*time.Second, time.Millisecond)
	st = sourceStatus(t, d, "big")
	assert.False(t, st.Dropped)
	assert.False(t, st.UnreachableSince.IsZero())
	assert.Equal(t, assert.AnError.Error(), st.Error)
	if time.Since(lost) < testGrace/2 {
		assert.Equal(t, []string{cb.ID}, backendsOf(d, route), "within the grace")
		_, name = dialBackend(t, addr)
		assert.Equal(t, "b", name, "a new connection within the grace")
	}

	// After the grace: dropped, not before, and within a second of it.
	requireBackends(t, d, route, ca.ID)
	took := time.Since(lost)
	assert.GreaterOrEqual(t, took, testGrace, "dropped before the grace was over")
	assert.Less(t, took, testGrace+time.Second)
	for range 3 {
		_, name = dialBackend(t, addr)
		assert.Equal(t, "a", name, "new connections go to the other engine's backend")
	}
	requireEcho(t, held, "the connection established on the dropped engine's backend")
	st = sourceStatus(t, d, "big")
	assert.True(t, st.Dropped)
	assert.False(t, st.Connected)
	assert.True(t, d.Status().Ready, "a dropped engine does not make the daemon unready: %v", d.Status().NotReady)
	assert.Equal(t, 1.0, metric("ambassadord_docker_dropped"))
	assert.Equal(t, 1.0, metric("ambassadord_docker_drops_total"))
	assert.Equal(t, 0.0, metric("ambassadord_docker_connected"))

	// big answers again, with its container: a candidate again.
	big.publish(t, source.Update{Connected: true, Snapshot: bigSnap})
	requireBackends(t, d, route, cb.ID)
	_, name = dialBackend(t, addr)
	assert.Equal(t, "b", name)
	st = sourceStatus(t, d, "big")
	assert.False(t, st.Dropped)
	assert.True(t, st.Connected)
	assert.True(t, st.UnreachableSince.IsZero())
	assert.Equal(t, 0.0, metric("ambassadord_docker_dropped"))
	assert.Equal(t, 1.0, metric("ambassadord_docker_drops_total"))

	// Lost and back within the grace: nothing is dropped.
	big.publish(t, source.Update{Connected: false, Err: assert.AnError, Snapshot: bigSnap})
	big.publish(t, source.Update{Connected: true, Snapshot: bigSnap})
	assert.Never(t, func() bool { return !assert.ObjectsAreEqual([]string{cb.ID}, backendsOf(d, route)) },
		3*testGrace, 10*time.Millisecond, "a grace cancelled by the engine's return dropped its containers")
	assert.Equal(t, 1.0, metric("ambassadord_docker_drops_total"))
	requireEcho(t, held, "the connection established on big's backend, all along")
}

// TestLocalEngineNeverDropped: the local engine's last snapshot is served
// however long it is unreachable (a local engine restarting with
// live-restore leaves its containers serving), while a remote engine lost
// at the same time is dropped after its grace.
func TestLocalEngineNeverDropped(t *testing.T) {
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	la, lb := nettest.FreePort(t), nettest.FreePort(t)
	routeA, routeB := strconv.Itoa(la), strconv.Itoa(lb)
	opts, local, big := twoEngines(t, routeA+":one:1", routeB+":two:1")
	d, _ := runDaemon(t, opts)
	ca := onEngine(loopbackContainer("a", nettest.Port(t, a), map[string]string{resolver.LabelTarget: "one"}), "local")
	cb := onEngine(loopbackContainer("b", nettest.Port(t, b), map[string]string{resolver.LabelTarget: "two"}), "big")
	localSnap, bigSnap := &source.Snapshot{Containers: []source.Container{ca}}, &source.Snapshot{Containers: []source.Container{cb}}
	local.publish(t, source.Update{Connected: true, Snapshot: localSnap})
	big.publish(t, source.Update{Connected: true, Snapshot: bigSnap})
	requireBackends(t, d, routeA, ca.ID)
	requireBackends(t, d, routeB, cb.ID)

	local.publish(t, source.Update{Connected: false, Err: assert.AnError, Snapshot: localSnap})
	big.publish(t, source.Update{Connected: false, Err: assert.AnError, Snapshot: bigSnap})
	requireBackends(t, d, routeB)
	assert.Never(t, func() bool { return !assert.ObjectsAreEqual([]string{ca.ID}, backendsOf(d, routeA)) },
		3*testGrace, 10*time.Millisecond, "the local engine's containers were dropped")
	_, name := dialBackend(t, "127.0.0.1:"+routeA)
	assert.Equal(t, "a", name)
	st := sourceStatus(t, d, "local")
	assert.False(t, st.Connected)
	assert.False(t, st.Dropped)
	assert.False(t, st.UnreachableSince.IsZero())
	assert.True(t, sourceStatus(t, d, "big").Dropped)
}

// TestReadinessWithEngines: the daemon is ready once every engine has
// synced; but a remote engine that fails its first attempt counts as
// settled, so that a lost host does not keep the ambassador unready: it is
// ready, and the engine's status says it never synced. A local engine
// that does not answer keeps it unready, as it always did. The route,
// listening on its fallback from the start, keeps listening throughout,
// without a backend once an engine has answered without one.
func TestReadinessWithEngines(t *testing.T) {
	for _, tt := range []struct {
		name      string
		failing   string // the engine whose first attempt fails
		wantReady bool
	}{
		{name: "remote unreachable at start", failing: "big", wantReady: true},
		{name: "local unreachable at start", failing: "local", wantReady: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			listen := nettest.FreePort(t)
			route := strconv.Itoa(listen)
			opts, local, big := twoEngines(t, route+":svc:1")
			d, _ := runDaemon(t, opts)
			waiting := func(engine string) string { return "waiting for the first sync with the " + engine + " engine" }

			doc := d.Status()
			assert.False(t, doc.Ready)
			assert.Contains(t, doc.NotReady, waiting("local"))
			assert.Contains(t, doc.NotReady, waiting("big"))

			failing, answering := big, local
			if tt.failing == "local" {
				failing, answering = local, big
			}
			answering.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{}})
			require.Eventually(t, func() bool { return sourceStatus(t, d, answering.name).Synced }, 5*time.Second, time.Millisecond)
			doc = d.Status()
			assert.False(t, doc.Ready, "one engine has not answered nor failed yet")
			assert.Equal(t, []string{waiting(tt.failing)}, doc.NotReady)
			r, ok := doc.Route(route)
			require.True(t, ok)
			assert.Empty(t, r.Backends)
			assert.NotEmpty(t, r.Listen, "the route listening on its fallback keeps listening")

			failing.publish(t, source.Update{Connected: false, Err: assert.AnError})
			require.Eventually(t, func() bool { return sourceStatus(t, d, tt.failing).Error != "" }, 5*time.Second, time.Millisecond)
			doc = d.Status()
			assert.Equal(t, tt.wantReady, doc.Ready, "%v", doc.NotReady)
			st := sourceStatus(t, d, tt.failing)
			assert.False(t, st.Synced)
			assert.False(t, st.Connected)
			if tt.wantReady {
				assert.Empty(t, doc.NotReady)
			} else {
				assert.Equal(t, []string{waiting("local")}, doc.NotReady)
			}
			r, ok = doc.Route(route)
			require.True(t, ok)
			assert.NotEmpty(t, r.Listen)
		})
	}
}
