//go:build e2e

package e2e

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// maxPriority is the highest ambassador.priority a claimer can set.
const maxPriority = "2147483647"

// TestLinkNotClaimable: a link means the linked container. On the default
// bridge, which the ambassador shares with every container started
// without --network, a hostile container claims the linked container's
// name at the highest priority, with its service listening: it receives
// not one connection or byte of the classic `--link web:web` route, nor of
// `--route 9001:<web>:9000`, while a load runs, whether it starts before
// the ambassador or during the load. `explain` says why it is refused.
func TestLinkNotClaimable(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	web := startServer(t, ctx, harness.Spec{Name: "web"}, "web")
	hostile := func(name string) harness.Spec {
		return harness.Spec{Name: name, Labels: map[string]string{labelTarget: web.Name, labelPriority: maxPriority}}
	}
	early := startServer(t, ctx, hostile("early"), "early")
	const routePort = dataPort + 1
	amb := startFollower(t, ctx, harness.Spec{
		Links: []string{link(web, "web")},
		Cmd:   []string{"--route", strconv.Itoa(routePort) + ":" + web.Name + ":" + strconv.Itoa(dataPort)},
	})
	linkAddr, routeAddr := addr(amb, dataPort), addr(amb, routePort)
	waitServedBy(t, ctx, linkAddr, "web")
	waitServedBy(t, ctx, routeAddr, "web")

	viaLink, viaRoute := startLoad(t, linkAddr), startLoad(t, routeAddr)
	for _, l := range []*load.Load{viaLink, viaRoute} {
		_, err := l.WaitLanded(ctx, "web", time.Now(), 20)
		require.NoError(t, err)
	}
	late := startServer(t, ctx, hostile("late"), "late")
	// Long after the ambassador has seen the late claimer (tens of
	// milliseconds), many connections later.
	for _, l := range []*load.Load{viaLink, viaRoute} {
		_, err := l.WaitLanded(ctx, "web", time.Now().Add(time.Second), 50)
		require.NoError(t, err)
	}
	for name, l := range map[string]*load.Load{"link": viaLink, "route": viaRoute} {
		res := l.Stop()
		t.Logf("%s: %s", name, res)
		requireNoFailures(t, res)
		assert.Len(t, res.On("web"), len(res.Attempts), "every %s connection reached web", name)
	}
	for _, c := range []*harness.Container{early, late} {
		st, err := stats(ctx, c)
		require.NoError(t, err)
		assert.Zero(t, st.Conns, "connections %s accepted", c.Name)
		assert.Zero(t, st.Bytes, "bytes %s received", c.Name)
	}

	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "explain", strconv.Itoa(dataPort))
	require.Zero(t, code, stderr)
	assert.Contains(t, stdout, "claims do not count on a route from a link")
	stdout, stderr, code = dockerExec(t, ctx, amb, "/ambassadord", "explain", strconv.Itoa(routePort))
	require.Zero(t, code, stderr)
	assert.Contains(t, stdout, "claims do not count on a route from --route")
}

// TestClaimerDecidesNoListener: a label-target ambassador listens on its
// own ports only (here its --expose 7000, no ambassador.ports label). A
// claimer that takes over at a higher priority, exposing 22 and 53 but
// not 7000, opens no listener and closes none: new connections on 7000
// move to it without a failure, and a connection established on the
// previous claimer keeps working well past --shutdown-grace, which is
// when a removed route would have cut it.
func TestClaimerDecidesNoListener(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	claimer := func(name string, priority string, expose ...uint16) harness.Spec {
		return harness.Spec{Name: name, Networks: []string{n.Name}, Expose: expose,
			Labels: map[string]string{labelTarget: svc, labelPriority: priority, "ambassador.port": strconv.Itoa(dataPort)}}
	}
	startServer(t, ctx, claimer("a", "0", 7000), "a")
	const listen = 7000
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Expose:   []uint16{listen},
		Labels:   map[string]string{labelTarget: svc},
		Cmd:      []string{"--shutdown-grace", "1s"},
	})
	target := addr(amb, listen)
	waitServedBy(t, ctx, target, "a")
	routes := func() []string {
		var names []string
		for _, r := range statusOf(t, ctx, amb).Routes {
			names = append(names, r.Name)
		}
		return names
	}
	require.Equal(t, []string{"7000"}, routes(), "the ambassador's own exposed port, not the claimer's 9000")

	held := openSession(t, ctx, target)
	require.Equal(t, "a", held.ID.Name)
	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "a", time.Now(), 20)
	require.NoError(t, err)
	startServer(t, ctx, claimer("b", "10", 22, 53), "b")
	_, err = l.WaitLanded(ctx, "b", time.Now(), 50)
	require.NoError(t, err)
	// Past the shutdown grace (1s) a removed route's connections would
	// have been cut.
	time.Sleep(2 * time.Second)
	echo(t, held, "still on a")
	res := l.Stop()
	t.Logf("load: %s", res)
	requireNoFailures(t, res)

	assert.Equal(t, []string{"7000"}, routes(), "a claimer changes no listener")
	for _, p := range []uint16{22, 53, dataPort} {
		c, err := net.DialTimeout("tcp", addr(amb, p), 2*time.Second)
		if err == nil {
			c.Close()
		}
		assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "port %d of the ambassador: want refused, got %v", p, err)
	}
}
