package daemon

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// awaitHealth waits for the monitor's next change and applies it, as the
// run loop does.
func awaitHealth(t *testing.T, d *Daemon) {
	t.Helper()
	select {
	case <-d.health.Changed():
		d.healthChanged(context.Background())
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no health change")
	}
}

// TestHealthCheckGatesANewBackend: a claimer with ambassador.check that
// does not listen yet takes nothing; the backend it replaces serves until
// it passes (make-before-break); after fall failures it leaves the set.
func TestHealthCheckGatesANewBackend(t *testing.T) {
	oldAddr := nettest.Greeter(t, "old")
	newPort := nettest.FreePort(t)
	listen := nettest.FreePort(t)
	opts := testOptions(t, strconv.Itoa(listen)+":redis:"+strconv.Itoa(nettest.Port(t, oldAddr)))
	opts.BackendWait = 2 * time.Second
	d, m := newTestDaemon(t, opts)
	addr := "127.0.0.1:" + strconv.Itoa(listen)
	ctx := context.Background()
	snap := func(cs ...source.Container) source.Update {
		return source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: cs}}
	}
	old := loopbackContainer("redis", nettest.Port(t, oldAddr), nil)
	d.update(ctx, 0, snap(old))
	assert.Equal(t, "old", nettest.Read(t, addr))

	checked := loopbackContainer("redis2", newPort, map[string]string{
		resolver.LabelTarget: "redis", resolver.LabelPriority: "10",
		resolver.LabelCheck: "tcp,interval=250ms,rise=2,fall=2"})
	d.update(ctx, 0, snap(old, checked))
	rs, ok := d.Status().Route(strconv.Itoa(listen))
	require.True(t, ok)
	assert.Equal(t, noneHealthy, d.table.routes[routeKey{resolver.TCP, listen}].spec.NoBackend)
	require.Len(t, rs.Backends, 1, "the status shows the resolved backend")
	assert.Equal(t, "tcp,interval=250ms,timeout=250ms,rise=2,fall=2", rs.Backends[0].Check)
	assert.Contains(t, []string{"pending", "down"}, rs.Backends[0].CheckState)
	assert.Empty(t, d.table.routes[routeKey{resolver.TCP, listen}].proxy.Backends(), "not in the set before it passes")
	for range 3 {
		assert.Equal(t, "old", nettest.Read(t, addr), "the old backend serves meanwhile")
	}

	stop := nettest.GreeterOn(t, "127.0.0.1:"+strconv.Itoa(newPort), "new")
	awaitHealth(t, d)
	assert.Equal(t, "new", nettest.Read(t, addr))
	rs, _ = d.Status().Route(strconv.Itoa(listen))
	assert.Equal(t, "up", rs.Backends[0].CheckState)
	f := metricstest.Value(t, metricstest.Scrape(t, m.Handler()), "ambassadord_health_backends", metricstest.Labels{"state": "up"})
	assert.Equal(t, 1.0, f)
	assert.Positive(t, metricstest.Value(t, metricstest.Scrape(t, m.Handler()), "ambassadord_health_checks_total", metricstest.Labels{"result": "pass"}))

	stop()
	awaitHealth(t, d)
	assert.Empty(t, d.table.routes[routeKey{resolver.TCP, listen}].proxy.Backends(), "out of the set after fall failures")
	rs, _ = d.Status().Route(strconv.Itoa(listen))
	assert.Equal(t, "down", rs.Backends[0].CheckState)
	assert.Contains(t, rs.Backends[0].CheckDetail, "failures in a row: connect")
}

// TestRouteCheckAndLabelOff: --check gives every backend of its route the
// check; a claimer's ambassador.check=off exempts it.
func TestRouteCheckAndLabelOff(t *testing.T) {
	aAddr := nettest.Greeter(t, "a")
	listen := nettest.FreePort(t)
	opts := testOptions(t, strconv.Itoa(listen)+":redis:"+strconv.Itoa(nettest.Port(t, aAddr)))
	chk, err := source.ParseCheck("tcp,interval=250ms,rise=1")
	require.NoError(t, err)
	opts.Checks = map[int]source.Check{listen: chk}
	d, _ := newTestDaemon(t, opts)
	ctx := context.Background()
	addr := "127.0.0.1:" + strconv.Itoa(listen)
	deadPort := nettest.FreePort(t)
	claim := func() map[string]string { return map[string]string{resolver.LabelTarget: "redis"} }
	off := map[string]string{resolver.LabelTarget: "redis", resolver.LabelCheck: "off"}
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{
		loopbackContainer("a", nettest.Port(t, aAddr), claim()), loopbackContainer("dead", deadPort, claim()), loopbackContainer("unchecked", deadPort, off)}}})
	key := routeKey{resolver.TCP, listen}
	// Only the unchecked one is in the set at first.
	assert.Equal(t, []proxy.Backend{{Addr: "127.0.0.1:" + strconv.Itoa(deadPort), ID: "id-unchecked"}}, d.table.routes[key].proxy.Backends())
	awaitHealth(t, d) // a passes; dead never does
	assert.ElementsMatch(t, []proxy.Backend{{Addr: aAddr, ID: "id-a"}, {Addr: "127.0.0.1:" + strconv.Itoa(deadPort), ID: "id-unchecked"}},
		d.table.routes[key].proxy.Backends())
	assert.Equal(t, "a", nettest.Read(t, addr))
}

// TestBalanceAndWeightReachTheProxy: --least-conn, the balance label and
// the weight label set the proxy route's balance and backends.
func TestBalanceAndWeightReachTheProxy(t *testing.T) {
	aAddr := nettest.Greeter(t, "a")
	listen := nettest.FreePort(t)
	opts := testOptions(t, strconv.Itoa(listen)+":redis:"+strconv.Itoa(nettest.Port(t, aAddr)))
	opts.LeastConnPorts = []int{listen}
	d, _ := newTestDaemon(t, opts)
	ctx := context.Background()
	key := routeKey{resolver.TCP, listen}
	p := func() *proxy.Route { return d.table.routes[key].proxy.(*proxy.Route) }
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: &source.Snapshot{}})
	assert.Equal(t, proxy.LeastConn, p().Balance(), "--least-conn")

	labels := map[string]string{resolver.LabelTarget: "redis", resolver.LabelWeight: "7", resolver.LabelBalance: "round-robin"}
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{
		loopbackContainer("a", nettest.Port(t, aAddr), labels)}}})
	assert.Equal(t, proxy.RoundRobin, p().Balance(), "the label wins")
	assert.Equal(t, []proxy.Backend{{Addr: aAddr, ID: "id-a", Weight: 7}}, p().Backends())
	rs, _ := d.Status().Route(strconv.Itoa(listen))
	assert.Equal(t, "round-robin", rs.Balance)
	assert.Equal(t, 7, rs.Backends[0].Weight)
}

// TestUDPBackendsAreNeverChecked: a claimer's ambassador.check applies to
// its TCP routes only.
func TestUDPBackendsAreNeverChecked(t *testing.T) {
	d := &Daemon{opts: Options{Checks: map[int]source.Check{0: {Kind: source.CheckTCP}}}}
	chk := source.Check{Kind: source.CheckSend, Expect: "x"}
	routes := d.withChecks([]resolver.Route{
		{Name: "53/udp", Protocol: resolver.UDP, Listen: 53, Backends: []source.Backend{{Addr: "10.0.0.1:53", Check: chk}}},
		{Name: "53", Protocol: resolver.TCP, Listen: 53, Backends: []source.Backend{{Addr: "10.0.0.1:53", Check: chk}, {Addr: "10.0.0.2:53"}}},
	})
	assert.Equal(t, source.Check{}, routes[0].Backends[0].Check)
	assert.Equal(t, chk, routes[1].Backends[0].Check, "the label wins")
	assert.Equal(t, source.Check{Kind: source.CheckTCP}, routes[1].Backends[1].Check, "--check all")
}
