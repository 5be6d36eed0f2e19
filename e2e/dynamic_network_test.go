//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// TestBackendNetworks: a backend is reached on a network it shares with
// the ambassador. Network names are chosen so that the lowest one is never
// the right answer by accident.
func TestBackendNetworks(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	netA := newNetwork(t, ctx, "net-a", false) // sorts first
	netB := newNetwork(t, ctx, "net-b", false)
	both := []string{netA.Name, netB.Name}

	// servedOn waits until fresh connections to addr reach the backend
	// ident at its address on want, and then requires that ten more do.
	// Until the ambassador has heard from the engine, a --route to a name
	// is served by its DNS fallback, which may pick another address.
	servedOn := func(t *testing.T, ctx context.Context, addr, ident string, want *harness.Network, c *harness.Container) {
		t.Helper()
		ip := c.IPs[want.Name]
		require.True(t, ip.IsValid(), "%s has no address on %s", c.Name, want.Name)
		check := func(ctx context.Context) error {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			id, err := load.Whoami(actx, addr)
			switch {
			case err != nil:
				return err
			case id.Name != ident || id.Local.Addr() != ip:
				return fmt.Errorf("served by %s at %s, want %s at %s (its %s address)", id.Name, id.Local.Addr(), ident, ip, want.Name)
			}
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		require.NoError(t, harness.Poll(wctx, check))
		for range 10 {
			assert.NoError(t, check(ctx))
		}
	}

	t.Run("only-shared-network", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		// The backend's first network is net-a, which the ambassador is
		// not on: only its net-b address can work.
		x := startServer(t, ctx, harness.Spec{Name: "x", Networks: both}, "x")
		amb := startFollower(t, ctx, harness.Spec{
			Networks: []string{netB.Name},
			Labels:   map[string]string{labelTarget: x.Name, labelPorts: strconv.Itoa(dataPort)},
		})
		servedOn(t, ctx, addr(amb, dataPort), "x", netB, x)
	})

	t.Run("choice-among-shared", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		// Both on net-a and net-b, like the ambassador: y asks for net-b
		// with its label, z takes the lowest name, net-a, unless the
		// ambassador's --network says otherwise.
		y := startServer(t, ctx, harness.Spec{Name: "y", Networks: both, Labels: map[string]string{labelNetwork: netB.Name}}, "y")
		z := startServer(t, ctx, harness.Spec{Name: "z", Networks: both}, "z")
		route := func(listen int, c *harness.Container) string {
			return fmt.Sprintf("%d:%s:%d", listen, c.Name, dataPort)
		}
		amb := startFollower(t, ctx, harness.Spec{
			Networks: both,
			Cmd:      []string{"--route", route(dataPort, y), "--route", route(dataPort+2, z)},
		})
		servedOn(t, ctx, addr(amb, dataPort), "y", netB, y)
		servedOn(t, ctx, addr(amb, dataPort+2), "z", netA, z)

		preferB := startFollower(t, ctx, harness.Spec{
			Name:     "ambassador-network-flag",
			Networks: both,
			Cmd:      []string{"--network", netB.Name, "--route", route(dataPort, z)},
		})
		servedOn(t, ctx, addr(preferB, dataPort), "z", netB, z)
	})
}

// TestNetworkDisconnect: a backend disconnected from the network vanishes
// without a FIN; the ambassador must close the client's established
// connection at once rather than leave it hanging.
func TestNetworkDisconnect(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	backend := startServer(t, ctx, harness.Spec{Name: "backend", Networks: []string{n.Name}}, "backend")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: backend.Name, labelPorts: strconv.Itoa(dataPort)},
		Cmd:      []string{"--backend-wait=200ms"},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "backend")

	s := openSession(t, ctx, target)
	require.Equal(t, "backend", s.ID.Name)
	echo(t, s, "before the disconnect")

	evs := eng.Events(ctx)
	disconnecting := time.Now()
	require.NoError(t, eng.Disconnect(ctx, n.ID, backend.ID))
	disconnected := time.Now()

	// The client reads until its connection ends; a hanging one is cut by
	// the deadline and fails the test.
	require.NoError(t, s.Conn.SetReadDeadline(disconnecting.Add(10*time.Second)))
	n2, err := io.Copy(io.Discard, s.R)
	closed := time.Now()
	require.NoError(t, err, "the established connection must end with EOF (or a reset), not hang")
	assert.Zero(t, n2, "bytes after the disconnect")
	event := waitEvent(t, ctx, evs, backend.ID, "disconnect", disconnecting)
	t.Logf("disconnect call took %s; the client's connection was closed %s after the call returned, %s after the disconnect event",
		disconnected.Sub(disconnecting).Round(time.Millisecond), closed.Sub(disconnected).Round(time.Millisecond), closed.Sub(event).Round(time.Millisecond))
	assert.Less(t, closed.Sub(disconnected), 2*time.Second, "time to close the client's connection")

	// And a new connection finds no backend.
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	id, err := load.Whoami(actx, target)
	assert.Error(t, err, "a new connection after the disconnect was served by %s", id.Name)
}

// TestIPReuse: when a backend is removed and the engine gives its address
// to an unrelated container listening on the same port, no connection
// through the ambassador may reach that container: it must not receive a
// single byte. The other container is created beforehand and started as
// soon as the backend is gone, as a busy engine would, and connections
// keep coming throughout. Both ways of naming the target: the ambassador's
// label, and --route, whose name must not bring the old address back
// through Docker's DNS either.
func TestIPReuse(t *testing.T) {
	t.Parallel()
	setup(t) // skips without an engine; each subtest has its own context
	for _, tt := range []struct {
		name string
		amb  func(target string) harness.Spec
	}{
		{"label", func(target string) harness.Spec {
			return harness.Spec{Labels: map[string]string{labelTarget: target, labelPorts: strconv.Itoa(dataPort)}}
		}},
		// The route's name is no DNS fallback while the engine is watched:
		// Docker's DNS could still answer with the address being reused.
		{"route", func(target string) harness.Spec {
			return harness.Spec{Cmd: []string{"--route", fmt.Sprintf("%d:%s:%d", dataPort, target, dataPort)}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A context of its own: parallel subtests wait for a free slot,
			// and the parent's deadline would run meanwhile.
			ctx := setup(t)
			n := newNetwork(t, ctx, "net", true)
			ip := n.Addr(20)
			on := func(name string) harness.Spec {
				return harness.Spec{Name: name, Networks: []string{n.Name}, IPs: map[string]netip.Addr{n.Name: ip}}
			}
			a := startServer(t, ctx, on("db"), "a")
			spec := tt.amb(a.Name)
			spec.Networks = []string{n.Name}
			spec.Cmd = append(spec.Cmd, "--backend-wait=200ms")
			amb := startFollower(t, ctx, spec)
			target := addr(amb, dataPort)
			waitServedBy(t, ctx, target, "a")
			b := createServer(t, ctx, on("other"), "b")

			l := startLoad(t, target)
			_, err := l.WaitLanded(ctx, "a", time.Now(), 20)
			require.NoError(t, err)
			removing := time.Now()
			require.NoError(t, eng.Remove(ctx, a.ID))
			removed := time.Now()
			startCreated(t, ctx, b)
			require.Equal(t, ip, b.IP)
			up := time.Now()
			t.Logf("a (%s) removed in %s; b took %s and listened %s later",
				ip, removed.Sub(removing).Round(time.Millisecond), ip, up.Sub(removed).Round(time.Millisecond))

			// At least a second of load while b holds a's address.
			wctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			err = harness.Poll(wctx, func(context.Context) error {
				if time.Since(up) < time.Second || len(l.Result().StartedAfter(up).Attempts) < 100 {
					return errors.New("not enough load yet")
				}
				return nil
			})
			require.NoError(t, err)
			res := l.Stop()
			t.Logf("load: %s", res)

			st, err := stats(ctx, b)
			require.NoError(t, err)
			assert.Zero(t, st.Conns, "connections b accepted")
			assert.Zero(t, st.Bytes, "bytes b received")
			none(t, res.On("b"), "connections through the ambassador answered by b")
			after := res.StartedAfter(removed)
			none(t, after.On("a"), "connections answered by a after it was removed")
			slow := after.Filter(func(a load.Attempt) bool {
				return !a.OK() && (!load.IsNoBackend(a.Err) || a.End.Sub(a.Start) > 2*time.Second)
			})
			none(t, slow, "connections after the removal that were not closed within --backend-wait (200ms) for want of a backend")
			stdout, stderr, err := eng.Logs(ctx, amb.ID)
			require.NoError(t, err)
			assert.Contains(t, stdout+stderr, "no_backend", "the ambassador says the route has no backend")

			// b really was reachable at the address: the ambassador chose
			// not to use it.
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			id, err := load.Whoami(actx, addr(b, dataPort))
			require.NoError(t, err)
			require.Equal(t, "b", id.Name)
		})
	}
}
