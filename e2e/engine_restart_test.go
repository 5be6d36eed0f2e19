//go:build e2e

package e2e

// The engine restart test: the engine an ambassador follows is stopped and
// started again, as an upgrade or a crash of dockerd does. Never the
// shared engine: each case starts a private, throw-away dockerd
// (harness.Dockerd: its own data root, exec root, socket, bridge and
// cgroup parent, named after the run) and tears it down when it ends. The
// private engine starts empty and cannot pull, so the data server image is
// copied to it from the shared engine (docker save | docker load).
//
// The ambassador runs on the host, as the binary the run built, pointed at
// the private engine's socket with --docker-host: in a container of the
// private engine it would go down with the engine (without live restore),
// and restarting the ambassador is not what is tested. It reaches the
// backends on the private bridge directly. Every helper's name starts with
// engineRestart so that it cannot clash with the other e2e files.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// engineRestartHold is how long the engine stays down in the live-restore
// case: long enough for several failed reconnects, so that the watcher's
// backoff has grown when the engine comes back.
const engineRestartHold = 2 * time.Second

// engineRestartBackendWait is the ambassador's --backend-wait: how long a
// connection with no backend waits for one.
const engineRestartBackendWait = 3 * time.Second

// engineRestartStop bounds the ambassador's exit on SIGTERM when the test
// ends (its --shutdown-grace is 1s).
const engineRestartStop = 10 * time.Second

// engineRestartDaemons makes private dockerd IDs unique within the run.
var engineRestartDaemons atomic.Int64

// TestEngineRestart: the engine is stopped (SIGTERM) and started again
// with the same paths.
//
// With live restore the backend keeps running while the engine is down:
// a load of fresh connections through the ambassador never fails, an
// established connection keeps echoing, ambassadord_docker_connected is 0;
// once the engine answers again the ambassador reconnects (the reconnects
// counter grows, connected is 1) and resyncs in full (the route serves the
// same container, by ID, as the restarted engine lists it), and follows a
// change made after the restart: a claimer of a higher priority takes new
// connections within a bound while the established connection stays on
// the old one. Every connection the servers saw, and every byte, is one
// the test sent.
//
// Without live restore the engine stops its containers: a backend with
// --restart always comes back when the engine starts, and the ambassador
// converges to it; connections fail only while no backend ran.
func TestEngineRestart(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	t.Run("live-restore", func(t *testing.T) { engineRestartLive(t, ctx) })
	t.Run("restart-always", func(t *testing.T) { engineRestartAlways(t, ctx) })
}

// engineRestartLive is the live-restore case of TestEngineRestart.
func engineRestartLive(t *testing.T, ctx context.Context) {
	d, priv := engineRestartEngine(t, ctx, true)
	target := fullName(t, "svc")
	a := engineRestartServer(t, ctx, d, priv, "a", target, 0)
	amb := engineRestartAmbassador(t, ctx, d, target)
	amb.waitRoute(t, ctx, readyTimeout, a)
	aStarted := engineRestartStartedAt(t, ctx, priv, a)

	l := startLoad(t, amb.route)
	_, err := l.WaitLanded(ctx, "a", time.Now(), 20)
	require.NoError(t, err)
	s := openSession(t, ctx, amb.route)
	require.Equal(t, "a", s.ID.Name, "the established connection")
	echoed := 0 // payload bytes echoed on the established connection
	echo := func(msg string) {
		t.Helper()
		echo(t, s, msg)
		echoed += len(msg)
	}
	echo("before the engine stops")
	before := amb.metrics(t, ctx)
	require.Equal(t, 1.0, before.connected, "ambassadord_docker_connected before the engine stops")

	stopping := time.Now()
	require.NoError(t, d.Stop(ctx))
	stopTook := time.Since(stopping)
	noticed := dockerFaultWait(t, ctx, dockerFaultSlack, "ambassadord_docker_connected 0", func(ctx context.Context) error {
		return amb.checkMetrics(ctx, func(m dockerFaultCounters) bool { return m.connected == 0 })
	})
	// Hold the engine down, checking all along that the ambassador
	// serves: a deadline, not a synchronisation.
	holding := time.Now()
	checks := 0
	require.NoError(t, harness.Poll(ctx, func(ctx context.Context) error {
		echo("while the engine is down " + strconv.Itoa(checks))
		checks++
		if err := amb.checkMetrics(ctx, func(m dockerFaultCounters) bool { return m.connected == 0 }); err != nil {
			return harness.Permanent(err)
		}
		if time.Since(holding) < engineRestartHold {
			return errors.New("holding the engine down")
		}
		return nil
	}))
	down, err := amb.status(ctx)
	require.NoError(t, err)
	ids, _ := down.backends(amb.port)
	assert.Equal(t, []string{a.ID}, ids, "the route's backends while the engine is down")
	assert.False(t, down.Docker.Connected, "/routes says connected while the engine is down")
	t.Logf("engine stopped in %s (SIGTERM to exit); the ambassador noticed %s later; held down %s with %d echoes and scrapes; /routes: connected=%v error=%q backends=%v",
		stopTook.Round(time.Millisecond), noticed.Round(time.Millisecond), time.Since(holding).Round(time.Millisecond),
		checks, down.Docker.Connected, down.Docker.Error, ids)

	restarting := time.Now()
	require.NoError(t, d.Start(ctx))
	answered := time.Now()
	assert.Equal(t, aStarted, engineRestartStartedAt(t, ctx, priv, a), "a was restarted: live restore did not keep it")
	var reconnected dockerFaultCounters
	bound := dockerFaultMaxBackoff + dockerFaultSlack
	took := dockerFaultWait(t, ctx, bound, "the ambassador to reconnect", func(ctx context.Context) error {
		return amb.checkMetrics(ctx, func(m dockerFaultCounters) bool {
			reconnected = m
			return m.connected == 1 && m.reconnects > before.reconnects
		})
	})
	// The reconnect's full listing is the resync: the route serves a, by
	// its ID, as the restarted engine lists it.
	amb.waitRoute(t, ctx, dockerFaultSlack, a)
	up, err := amb.status(ctx)
	require.NoError(t, err)
	assert.True(t, up.Docker.Connected && up.Docker.Synced, "/routes after the reconnect: %+v", up.Docker)
	echo("after the engine restarted")
	t.Logf("engine answered %s after its start (down %s in all); the ambassador reconnected and resynced %s later (bound %s)",
		answered.Sub(restarting).Round(time.Millisecond), answered.Sub(stopping).Round(time.Millisecond),
		took.Round(time.Millisecond), bound)

	// A change after the restart: b claims the target with a higher
	// priority. The time of the change is the engine's start event.
	evs := priv.Events(ctx)
	changing := time.Now()
	b := engineRestartServer(t, ctx, d, priv, "b", target, 10)
	started := waitEvent(t, ctx, evs, b.ID, "start", changing)
	amb.waitRoute(t, ctx, dockerFaultResync+dockerFaultSlack, b)
	routed := time.Since(started)
	_, err = l.WaitLanded(ctx, "b", changing, 50)
	require.NoError(t, err)
	echo("after b took over")
	res := l.Stop()
	after := amb.metrics(t, ctx)

	t.Logf("engine metrics before the stop: %s; after the reconnect: %s; at the end: %s", before, reconnected, after)
	t.Logf("load: %s; longest attempt %s", res, res.Longest().Round(time.Millisecond))
	requireNoFailures(t, res)
	none(t, res.Filter(func(x load.Attempt) bool { return x.ID.Name != "a" && x.ID.Name != "b" }), "connections answered by neither a nor b")
	duringDown := func(x load.Attempt) bool { return !x.Start.Before(stopping) && x.End.Before(answered) }
	whileDown := res.Filter(duringDown)
	assert.NotEmpty(t, whileDown, "no connection of the load ran while the engine was down")
	none(t, res.Filter(func(x load.Attempt) bool { return duringDown(x) && x.ID.Name != "a" }), "connections not served by a while the engine was down")
	rw := checkRewire(t, res, "a", "b", started, time.Time{})
	t.Logf("while the engine was down (%s): %d fresh connections, all served by a, 0 failed", answered.Sub(stopping).Round(time.Millisecond), len(whileDown))
	t.Logf("b took over: /routes served b within %s of its start event, b accepted its first connection %s after it; the established connection to a echoed %d bytes across the restart",
		routed.Round(time.Millisecond), rw.latency().Round(time.Millisecond), echoed)

	// Nothing reached a server that the test did not send: a saw the load's
	// connections it answered and the established one, b the load's.
	onA, onB := len(res.On("a")), len(res.On("b"))
	engineRestartCheckStats(t, ctx, a, onA+1, (onA+1)*dataproto.HeaderSize+echoed)
	engineRestartCheckStats(t, ctx, b, onB, onB*dataproto.HeaderSize)
}

// engineRestartAlways is the case of TestEngineRestart without live
// restore, with a backend that has --restart always.
func engineRestartAlways(t *testing.T, ctx context.Context) {
	d, priv := engineRestartEngine(t, ctx, false)
	target := fullName(t, "svc")
	a := engineRestartServer(t, ctx, d, priv, "a", target, 0)
	_, err := priv.Client.ContainerUpdate(ctx, a.ID, client.ContainerUpdateOptions{
		RestartPolicy: &container.RestartPolicy{Name: container.RestartPolicyAlways},
	})
	require.NoError(t, err)
	t.Logf("$ docker update --restart always %s", a.Name)
	firstStart := engineRestartStartedAt(t, ctx, priv, a)
	amb := engineRestartAmbassador(t, ctx, d, target)
	amb.waitRoute(t, ctx, readyTimeout, a)

	l := startLoad(t, amb.route)
	_, err = l.WaitLanded(ctx, "a", time.Now(), 20)
	require.NoError(t, err)
	before := amb.metrics(t, ctx)

	stopping := time.Now()
	require.NoError(t, d.Stop(ctx))
	stopTook := time.Since(stopping)
	dockerFaultWait(t, ctx, dockerFaultSlack, "ambassadord_docker_connected 0", func(ctx context.Context) error {
		return amb.checkMetrics(ctx, func(m dockerFaultCounters) bool { return m.connected == 0 })
	})
	down, err := amb.status(ctx)
	require.NoError(t, err)
	kept, _ := down.backends(amb.port)

	restarting := time.Now()
	require.NoError(t, d.Start(ctx))
	answered := time.Now()
	var restarted string
	dockerFaultWait(t, ctx, readyTimeout, "a to be started again by its restart policy", func(ctx context.Context) error {
		insp, err := priv.Inspect(ctx, a.ID)
		if err != nil {
			return err
		}
		if insp.State == nil || !insp.State.Running || insp.State.StartedAt == firstStart {
			return errors.New("not started again yet")
		}
		restarted = insp.State.StartedAt
		// The engine may give it another address; the helpers that
		// reach it directly (its admin port) use a.IP.
		if ep := insp.NetworkSettings.Networks["bridge"]; ep != nil {
			t.Logf("a started again at %s with address %s (was %s)", restarted, ep.IPAddress, a.IP)
			a.IP = ep.IPAddress
		}
		return nil
	})
	backAt, err := time.Parse(time.RFC3339Nano, restarted)
	require.NoError(t, err)
	engineRestartWaitServer(t, ctx, a)
	bound := dockerFaultMaxBackoff + dockerFaultSlack
	took := dockerFaultWait(t, ctx, bound, "the ambassador to reconnect", func(ctx context.Context) error {
		return amb.checkMetrics(ctx, func(m dockerFaultCounters) bool { return m.connected == 1 && m.reconnects > before.reconnects })
	})
	amb.waitRoute(t, ctx, dockerFaultSlack, a)
	converged := time.Now()
	_, err = l.WaitLanded(ctx, "a", converged, 50)
	require.NoError(t, err)
	res := l.Stop()
	after := amb.metrics(t, ctx)

	t.Logf("engine stopped in %s (it stops its containers); the route's backends while it was down: %v; the engine answered %s after its start, a ran again %s after its start, the ambassador reconnected %s after the engine answered (bound %s)",
		stopTook.Round(time.Millisecond), kept, answered.Sub(restarting).Round(time.Millisecond),
		backAt.Sub(restarting).Round(time.Millisecond), took.Round(time.Millisecond), bound)
	t.Logf("engine metrics before the stop: %s; at the end: %s", before, after)
	t.Logf("load: %s; longest attempt %s", res, res.Longest().Round(time.Millisecond))
	// No backend ran from the moment the engine began stopping a until
	// the ambassador converged on the restarted a: only connections that
	// overlapped that window may fail.
	inGap := func(x load.Attempt) bool { return !x.End.Before(stopping) && !x.Start.After(converged) }
	none(t, res.Filter(func(x load.Attempt) bool { return !inGap(x) && (!x.OK() || x.ID.Name != "a") }),
		"connections outside the engine's downtime that failed or were answered by another than a")
	// A connection with no backend waits --backend-wait for one: those
	// that started less than that before the convergence (less a second
	// for the dial) must have been served, but those a reset or closed
	// within a second as the engine stopped it, which no proxy can save
	// (its bytes had been forwarded). One that waited for a backend in
	// vain ends after the whole wait.
	waited := converged.Add(-engineRestartBackendWait + time.Second)
	cutByStop := func(x load.Attempt) bool {
		return !x.OK() && load.Closed(x.Err) && x.Took() < time.Second &&
			!x.Start.Before(stopping) && !x.Start.After(stopping.Add(stopTook))
	}
	t.Logf("connections a cut as the engine stopped it: %d\n%s", len(res.Filter(cutByStop)), load.Describe(res.Filter(cutByStop)))
	none(t, res.Filter(func(x load.Attempt) bool { return !x.OK() && x.Start.After(waited) && !cutByStop(x) }),
		"failed connections started less than --backend-wait (%s) before the convergence, but those a cut as it stopped", engineRestartBackendWait)
	gap := res.Filter(inGap)
	failed := len(res.Filter(func(x load.Attempt) bool { return inGap(x) && !x.OK() }))
	t.Logf("connections overlapping the downtime (%s from the stop to the convergence): %d, of which %d failed (no backend ran, for longer than --backend-wait)",
		converged.Sub(stopping).Round(time.Millisecond), len(gap), failed)
	if first, ok := res.First("a", backAt); ok {
		t.Logf("the restarted a accepted its first connection through the ambassador %s after it started", first.ID.Accepted.Sub(backAt).Round(time.Millisecond))
	}
	assert.Greater(t, after.reconnects, before.reconnects, "ambassadord_docker_reconnects_total")
}

// engineRestartEngine starts a private dockerd for the test, with or
// without live restore, and returns it with an Engine for it that holds
// the data server image. It is torn down when the test ends, after the
// test's containers and ambassador. Without dockerd, or without root, the
// test is skipped, unless an engine is required.
// skipWithoutDockerd skips the test when err says that this machine cannot
// run a private engine (no dockerd, not root), unless an engine is
// required.
func skipWithoutDockerd(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, harness.ErrNoDockerd) {
		return
	}
	if os.Getenv(requireEngineEnv) == "1" {
		t.Fatalf("%s=1, but %v", requireEngineEnv, err)
	}
	t.Skipf("%v; set %s=1 to fail instead", err, requireEngineEnv)
}

// privateDockerdID returns a new ID for a private engine of this run.
func privateDockerdID() string { return eng.Run + strconv.FormatInt(engineRestartDaemons.Add(1), 10) }

func engineRestartEngine(t *testing.T, ctx context.Context, liveRestore bool) (*harness.Dockerd, *harness.Engine) {
	t.Helper()
	id := privateDockerdID()
	started := time.Now()
	d, err := harness.StartDockerd(ctx, id, liveRestore)
	skipWithoutDockerd(t, err)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of private dockerd %s (tail):\n%s", d.ID, d.LogTail())
		}
		assert.NoError(t, d.Close(), "tear down private dockerd %s", d.ID)
	})
	t.Logf("$ ip link add %s type bridge && ip addr add %s/%d dev %s  # a free /24", d.Bridge, d.Subnet.Addr().Next(), d.Subnet.Bits(), d.Bridge)
	t.Logf("$ %s  # answered in %s", d.Command(), time.Since(started).Round(time.Millisecond))
	priv, err := d.Engine(ctx, eng.Label, eng.Run)
	require.NoError(t, err)
	t.Cleanup(func() { priv.Close() })
	copying := time.Now()
	require.NoError(t, eng.CopyImage(ctx, priv, dataImage))
	t.Logf("$ docker save %s | docker -H %s load  # %s", dataImage, d.Host, time.Since(copying).Round(time.Millisecond))
	return d, priv
}

// engineRestartServer starts on the private engine a data server named
// short(t, name), answering whoami with name, that claims target with
// priority, and waits until it accepts. It is removed when the test ends.
func engineRestartServer(t *testing.T, ctx context.Context, d *harness.Dockerd, priv *harness.Engine, name, target string, priority int) *harness.Container {
	t.Helper()
	s := harness.Spec{
		Name:   short(t, name),
		Image:  dataImage,
		Env:    []string{"NAME=" + name},
		Labels: map[string]string{labelTarget: target, labelPriority: strconv.Itoa(priority)},
	}
	t.Logf("$ DOCKER_HOST=%s %s", d.Host, priv.Command(s))
	c, err := priv.Start(ctx, s)
	if c != nil {
		t.Cleanup(func() {
			// A test that failed with the engine down leaves the
			// container to the engine's teardown.
			if !d.Running() {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			assert.NoError(t, priv.Remove(ctx, c.ID))
		})
	}
	require.NoError(t, err)
	engineRestartWaitServer(t, ctx, c)
	return c
}

// engineRestartWaitServer waits until a data server accepts on its admin
// port, which listens after the data port: waiting for it does not count
// as a connection to the data port.
func engineRestartWaitServer(t *testing.T, ctx context.Context, c *harness.Container) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(ctx, addr(c, dataproto.AdminPort)))
}

// engineRestartStartedAt returns when the engine last started c.
func engineRestartStartedAt(t *testing.T, ctx context.Context, priv *harness.Engine, c *harness.Container) string {
	t.Helper()
	insp, err := priv.Inspect(ctx, c.ID)
	require.NoError(t, err)
	require.NotNil(t, insp.State)
	require.True(t, insp.State.Running, "%s is not running", c.Name)
	return insp.State.StartedAt
}

// engineRestartCheckStats requires a data server's counters to be exactly
// the connections and bytes the test sent it.
func engineRestartCheckStats(t *testing.T, ctx context.Context, c *harness.Container, conns, bytes int) {
	t.Helper()
	st, err := stats(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, uint64(conns), st.Conns, "connections %s accepted", c.Name)
	assert.Equal(t, uint64(bytes), st.Bytes, "bytes %s received", c.Name)
	t.Logf("%s accepted %d connections and received %d bytes: exactly what the test sent it", c.Name, st.Conns, st.Bytes)
}

// engineRestartAmb is an ambassador running on the host, following a
// private engine, with one route to a target name on 127.0.0.1.
type engineRestartAmb struct {
	route string // the route's listen address, 127.0.0.1:port
	port  int
	admin string // the admin endpoint's base URL
	out   *engineRestartOutput

	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	waitErr error         // read after exited is closed
}

// engineRestartOutput collects the ambassador's log; it is written by the
// process's copier goroutine and read by the test.
type engineRestartOutput struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (o *engineRestartOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *engineRestartOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// engineRestartAmbassador starts the binary under test on the host with
// the route LISTEN:target:9000 on 127.0.0.1, following the private engine
// d, and waits until the route listens. It is stopped (SIGTERM, which must
// make it exit 0) when the test ends.
func engineRestartAmbassador(t *testing.T, ctx context.Context, d *harness.Dockerd, target string) *engineRestartAmb {
	t.Helper()
	port, adminPort := engineRestartFreePort(t), engineRestartFreePort(t)
	a := &engineRestartAmb{
		route:  net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		port:   port,
		admin:  "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort)),
		out:    &engineRestartOutput{},
		exited: make(chan struct{}),
	}
	args := []string{
		"--docker", "on", "--docker-host", d.Host,
		"--route", fmt.Sprintf("%d:%s:%d", port, target, dataPort),
		// The servers claim the target: claims are invited on the route,
		// and, the ambassador being on the host, counted from the
		// private engine's default bridge only.
		"--claims", "label,routes", "--network", "bridge",
		"--listen-address", "127.0.0.1",
		"--admin-address", strings.TrimPrefix(a.admin, "http://"),
		// The default admin socket, /run/ambassadord/admin.sock on the
		// host, would clash with a concurrent run's.
		"--admin-socket", "",
		"--resync", dockerFaultResync.String(),
		"--backend-wait", engineRestartBackendWait.String(),
		"--shutdown-grace", "1s",
		"--log-format", "json",
	}
	a.start(t, ctx, args)
	return a
}

// start runs the binary under test on the host with args, in an empty
// environment, and waits until a route listens; it is stopped (SIGTERM,
// which must make it exit 0) when the test ends. Every test that runs the
// binary on the host starts it here, or with startEnv.
func (a *engineRestartAmb) start(t *testing.T, ctx context.Context, args []string) {
	t.Helper()
	a.startEnv(t, ctx, nil, args)
}

// startEnv is start with the environment env and nothing else (the
// test's own could hold DOCKER_HOST, AMBASSADORD_* or link variables,
// which would change the routes), and, when listening names addresses,
// waits until a route listens on each of them.
func (a *engineRestartAmb) startEnv(t *testing.T, ctx context.Context, env, args []string, listening ...string) {
	t.Helper()
	shown := slices.Clone(args)
	for i, arg := range shown {
		if arg == "" {
			shown[i] = "''"
		}
	}
	t.Logf("$ %sambassadord %s", strings.Join(append(slices.Clone(env), ""), " "), strings.Join(shown, " "))
	a.cmd = exec.Command(ambassadorBin, args...)
	a.cmd.Env = append([]string{}, env...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	require.NoError(t, a.cmd.Start())
	go a.wait()
	t.Cleanup(func() { a.stop(t) })

	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := harness.Poll(ctx, func(context.Context) error {
		select {
		case <-a.exited:
			return harness.Permanent(fmt.Errorf("ambassadord exited: %v", a.waitErr))
		default:
		}
		out := a.out.String()
		if !strings.Contains(out, "route listening") {
			return errors.New("no route listening yet")
		}
		for _, l := range listening {
			if !slices.ContainsFunc(strings.Split(out, "\n"), func(line string) bool {
				return strings.Contains(line, "route listening") && strings.Contains(line, `"listen":"`+l+`"`)
			}) {
				return fmt.Errorf("no route listening on %s yet", l)
			}
		}
		return nil
	})
	// Not WaitTCP: the ambassador logs the route once it listens, and a
	// probe connection would reach a backend, which counts every one (or,
	// on a TLS route, be a failed handshake, counted).
	require.NoError(t, err, "ambassadord output:\n%s", a.out)
}

// wait reaps the ambassador; a named function so that stack dumps say
// what the goroutine is.
func (a *engineRestartAmb) wait() {
	a.waitErr = a.cmd.Wait()
	close(a.exited)
}

// stop sends SIGTERM and requires a clean exit within engineRestartStop.
func (a *engineRestartAmb) stop(t *testing.T) {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
		assert.NoError(t, a.waitErr, "ambassadord's exit on SIGTERM")
	case <-time.After(engineRestartStop):
		a.cmd.Process.Kill()
		<-a.exited
		t.Errorf("ambassadord still running %s after SIGTERM; killed", engineRestartStop)
	}
	if t.Failed() {
		t.Logf("ambassadord output:\n%s", a.out)
	}
}

// engineRestartFreePort returns a TCP port free on 127.0.0.1 now. Another
// process could take it before the ambassador listens; the ambassador
// then fails to start, saying so.
func engineRestartFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// status fetches the ambassador's GET /routes.
func (a *engineRestartAmb) status(ctx context.Context) (dockerFaultDoc, error) {
	return routesAt(ctx, a.admin)
}

// scrape returns the ambassador's engine connection metrics.
func (a *engineRestartAmb) scrape(ctx context.Context) (dockerFaultCounters, error) {
	var c dockerFaultCounters
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f, err := scrape(ctx, a.admin+"/metrics")
	if err != nil {
		return c, err
	}
	var ok [5]bool
	c.connected, ok[0] = f.value("ambassadord_docker_connected", localEngine)
	c.reconnects, ok[1] = f.value("ambassadord_docker_reconnects_total", localEngine)
	c.resyncs, ok[2] = f.value("ambassadord_docker_resyncs_total", localEngine)
	c.drift, ok[3] = f.value("ambassadord_docker_resync_drift_total", localEngine)
	c.events, ok[4] = f.value("ambassadord_docker_events_total", localEngine)
	if slices.Contains(ok[:], false) {
		return c, fmt.Errorf("missing engine metrics: %v", ok)
	}
	return c, nil
}

// metrics scrapes the engine connection metrics, waiting for a scrape
// that works.
func (a *engineRestartAmb) metrics(t *testing.T, ctx context.Context) dockerFaultCounters {
	t.Helper()
	var c dockerFaultCounters
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.Poll(ctx, func(ctx context.Context) error {
		var err error
		c, err = a.scrape(ctx)
		return err
	}))
	return c
}

// checkMetrics scrapes once and says, as an error, why ok does not accept
// the metrics.
func (a *engineRestartAmb) checkMetrics(ctx context.Context, ok func(dockerFaultCounters) bool) error {
	m, err := a.scrape(ctx)
	if err != nil {
		return err
	}
	if !ok(m) {
		return fmt.Errorf("metrics: %s", m)
	}
	return nil
}

// waitRoute waits, for up to within, until the route serves exactly the
// containers want (by ID), and returns how long it took.
func (a *engineRestartAmb) waitRoute(t *testing.T, ctx context.Context, within time.Duration, want ...*harness.Container) time.Duration {
	t.Helper()
	return waitRouteServes(t, ctx, a.admin, "the ambassador", a.port, within, want...)
}
