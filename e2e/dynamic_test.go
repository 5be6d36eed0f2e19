//go:build e2e

package e2e

// The dynamic tests: ambassadors that follow the engine through the Docker
// socket while the engine changes under a load of fresh connections
// (dynamic_load_test.go). Each test runs in networks of its own; every
// container and network carries the run label and is removed when the test
// ends. Backends are dataservers answering ModeWhoami with their name, so
// the load knows which one served each connection, and when.

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// Labels read by ambassadord (see the README's label table).
const (
	labelTarget   = "ambassador.target"
	labelPriority = "ambassador.priority"
	labelPorts    = "ambassador.ports"
	labelNetwork  = "ambassador.network"
)

// dataPort is where the dataserver fixture listens.
const dataPort = 9000

// fastHealth is a dataserver healthcheck that reacts within about 250ms:
// one failed probe makes the container unhealthy, one passing probe
// healthy.
var fastHealth = &container.HealthConfig{
	Test:     []string{"CMD", "/dataserver", "healthcheck"},
	Interval: 250 * time.Millisecond,
	Timeout:  2 * time.Second,
	Retries:  1,
}

// dockerSocket returns the engine's unix socket on this host, to be
// bind-mounted into ambassadors; without one the test is skipped.
func dockerSocket(t *testing.T) string {
	t.Helper()
	host := eng.Client.DaemonHost()
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		t.Skipf("the engine is at %s, not on a unix socket that an ambassador could mount", host)
	}
	return path
}

// testPrefix is the test's name in a form usable in container names.
func testPrefix(t *testing.T) string {
	return unsafeName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "-")
}

// short returns the short name (harness.Spec.Name) of the test's container
// or network called name. Unlike start's names it has no counter, so a
// container can be recreated under the same name.
func short(t *testing.T, name string) string { return testPrefix(t) + "-" + name }

// fullName returns the engine's name for the test's container called name:
// what ambassador.target labels and --route name.
func fullName(t *testing.T, name string) string { return eng.Name(short(t, name)) }

// newNetwork creates a network for the test, removed when it ends (after
// its containers, whose cleanups were registered later).
func newNetwork(t *testing.T, ctx context.Context, name string, fixedSubnet bool) *harness.Network {
	t.Helper()
	n, err := eng.CreateNetwork(ctx, short(t, name), fixedSubnet)
	require.NoError(t, err)
	t.Logf("$ docker network create %s%s", n.Name, map[bool]string{true: " --subnet " + n.Subnet.String()}[n.Subnet.IsValid()])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, eng.RemoveNetwork(ctx, n.ID))
	})
	return n
}

// startServer starts a dataserver named short(t, s.Name) that answers
// whoami with ident, and waits until it accepts. It is removed when the
// test ends.
func startServer(t *testing.T, ctx context.Context, s harness.Spec, ident string) *harness.Container {
	t.Helper()
	c := createServer(t, ctx, s, ident)
	startCreated(t, ctx, c)
	return c
}

// createServer creates the dataserver startServer would start, for
// startCreated to start.
func createServer(t *testing.T, ctx context.Context, s harness.Spec, ident string) *harness.Container {
	t.Helper()
	s.Name = short(t, s.Name)
	s.Image = dataImage
	s.Env = append(s.Env, "NAME="+ident)
	t.Logf("$ %s", eng.Command(s))
	c, err := eng.Create(ctx, s)
	require.NoError(t, err)
	t.Cleanup(func() { remove(t, c) })
	return c
}

// startCreated starts a dataserver made by createServer and waits until
// it accepts.
func startCreated(t *testing.T, ctx context.Context, c *harness.Container) {
	t.Helper()
	require.NoError(t, eng.StartCreated(ctx, c))
	// The admin port listens after the data port: waiting for it does not
	// count as a connection to the data port.
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(ctx, addr(c, dataproto.AdminPort)))
}

// startFollower starts an ambassador that follows the engine through its
// socket, and waits until it listens.
func startFollower(t *testing.T, ctx context.Context, s harness.Spec) *harness.Container {
	t.Helper()
	s.Binds = append(s.Binds, dockerSocket(t)+":/var/run/docker.sock")
	return startAmbassador(t, ctx, s)
}

// waitServedBy waits until a fresh connection to addr is answered by the
// server named ident.
func waitServedBy(t *testing.T, ctx context.Context, addr, ident string) dataproto.Identity {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var id dataproto.Identity
	err := harness.Poll(ctx, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		if id, err = load.Whoami(actx, addr); err != nil {
			return err
		}
		if id.Name != ident {
			return fmt.Errorf("served by %s", id.Name)
		}
		return nil
	})
	require.NoError(t, err, "wait for %s to be served by %s", addr, ident)
	return id
}

// stats fetches a dataserver's counters from its admin port.
func stats(ctx context.Context, c *harness.Container) (dataproto.Stats, error) {
	var s dataproto.Stats
	if err := fetchJSON(ctx, "http://"+addr(c, dataproto.AdminPort)+dataproto.StatsPath, &s); err != nil {
		return s, fmt.Errorf("stats of %s: %w", c.Name, err)
	}
	return s, nil
}

// setHealthy makes a dataserver's healthcheck pass or fail from its next
// probe on.
func setHealthy(t *testing.T, ctx context.Context, c *harness.Container, ok bool) {
	t.Helper()
	setSwitch(t, ctx, c, dataproto.HealthPath, ok)
}

// setSwitch turns one of a dataserver's admin switches (dataproto's
// HealthPath, AcceptPath) on or off.
func setSwitch(t *testing.T, ctx context.Context, c *harness.Container, path string, ok bool) {
	t.Helper()
	url := "http://" + addr(c, dataproto.AdminPort) + path + "?ok=" + strconv.FormatBool(ok)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	require.NoError(t, err)
	res, err := httpClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, "POST %s", url)
}

// waitHealth waits until the container's health status is want.
func waitHealth(t *testing.T, ctx context.Context, c *harness.Container, want container.HealthStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := harness.Poll(ctx, func(ctx context.Context) error {
		insp, err := eng.Inspect(ctx, c.ID)
		if err != nil {
			return harness.Permanent(err)
		}
		if insp.State == nil || insp.State.Health == nil {
			return harness.Permanent(fmt.Errorf("%s has no health state", c.Name))
		}
		if got := insp.State.Health.Status; got != want {
			return fmt.Errorf("health %s", got)
		}
		return nil
	})
	require.NoError(t, err, "wait for %s to be %s", c.Name, want)
}

// waitEvent waits, within readyTimeout, for the first event of the
// container id whose action starts with action at or after after, and
// returns its time by the engine's clock.
func waitEvent(t *testing.T, ctx context.Context, evs *harness.EventLog, id, action string, after time.Time) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	at, err := evs.Wait(ctx, id, action, after)
	require.NoError(t, err)
	return at
}

// openSession connects to addr and reads which server answered. The
// connection keeps a deadline 10 s away, and is closed when the test ends.
func openSession(t *testing.T, ctx context.Context, addr string) *load.Session {
	t.Helper()
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := load.Open(octx, addr)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	require.NoError(t, s.Conn.SetDeadline(time.Now().Add(10*time.Second)))
	return s
}

// echo sends msg on s and requires it back.
func echo(t *testing.T, s *load.Session, msg string) {
	t.Helper()
	require.NoError(t, s.Echo([]byte(msg), 5*time.Second), "echo on the established connection")
}

// rewire is one change of backend seen by a load.
type rewire struct {
	from, to string
	change   time.Time    // the engine's time of the event that made it
	first    load.Attempt // the first connection the new backend accepted
}

// latency is the time from the change to the new backend accepting its
// first connection.
func (r rewire) latency() time.Duration { return max(r.first.ID.Accepted.Sub(r.change), 0) }

// checkRewire finds, in res, the first connection to land on to at or
// after change, and checks that no connection started after that one had
// been answered landed on from: once a new backend has served, the previous
// one is done with. A zero until considers the whole load; otherwise only
// connections that ended before until, when the next change began.
func checkRewire(t *testing.T, res load.Result, from, to string, change, until time.Time) rewire {
	t.Helper()
	if !until.IsZero() {
		res = load.Result{Attempts: res.Filter(func(a load.Attempt) bool { return a.End.Before(until) })}
	}
	first, ok := res.First(to, change)
	if !ok {
		t.Fatalf("no connection landed on %s after the change at %s; %s", to, change.Format("15:04:05.000"), res)
	}
	late := res.StartedAfter(first.End).On(from)
	none(t, late, "connections that landed on %s after %s had served", from, to)
	return rewire{from: from, to: to, change: change, first: first}
}

// none reports the attempts as an error, if there are any, with what and a
// short list of them.
func none(t *testing.T, as []load.Attempt, what string, args ...any) bool {
	t.Helper()
	if len(as) == 0 {
		return true
	}
	t.Errorf("%d %s:\n%s", len(as), fmt.Sprintf(what, args...), load.Describe(as))
	return false
}

// requireNoFailures fails the test if any attempt of the load failed.
func requireNoFailures(t *testing.T, res load.Result) {
	t.Helper()
	if !none(t, res.Failed(), "failed connections (%s)", res) {
		t.FailNow()
	}
}

// cutBy returns whether an attempt failed because the backend serving it
// went away at gone (the engine's die event): killed (docker rm -f), or
// stopped, which closes its listener and resets the connections still in
// its accept queue. It started before and failed within a second after.
// No proxy can save such a connection: its bytes had been forwarded.
func cutBy(gone ...time.Time) func(load.Attempt) bool {
	return func(a load.Attempt) bool {
		if a.OK() {
			return false
		}
		for _, g := range gone {
			if !a.Start.After(g) && a.End.Before(g.Add(time.Second)) {
				return true
			}
		}
		return false
	}
}

// checkFailures fails the test if any attempt failed other than those cut
// by their backend going away at one of the gone times, and returns how
// many were cut, and how many failed otherwise.
func checkFailures(t *testing.T, res load.Result, gone ...time.Time) (cut, failed int) {
	t.Helper()
	isCut := cutBy(gone...)
	cut = len(res.Filter(isCut))
	others := res.Filter(func(a load.Attempt) bool { return !a.OK() && !isCut(a) })
	t.Logf("connections cut by their backend going away: %d; other failures: %d\n%s", cut, len(others), load.Describe(res.Filter(isCut)))
	none(t, others, "failed connections (%s)", res)
	return cut, len(others)
}

// TestFollowNameAcrossRecreate: a route to the target web follows the
// container named web when it is removed (docker rm -f) and a new web
// starts with another address; connections opened in the gap wait
// (--backend-wait) and land on the new one. Both ways of naming the target:
// `--route 9000:web:9000` and the ambassador's labels
// ambassador.target=web and ambassador.ports=9000. Neither falls back to
// DNS for the name while the engine is watched.
func TestFollowNameAcrossRecreate(t *testing.T) {
	t.Parallel()
	setup(t) // skips without an engine; each subtest has its own context
	for _, tt := range []struct {
		name string
		amb  func(web string) harness.Spec
	}{
		{"route", func(web string) harness.Spec {
			return harness.Spec{Cmd: []string{"--route", fmt.Sprintf("%d:%s:%d", dataPort, web, dataPort)}}
		}},
		{"label", func(web string) harness.Spec {
			return harness.Spec{Labels: map[string]string{labelTarget: web, labelPorts: strconv.Itoa(dataPort)}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A context of its own: parallel subtests wait for a free slot,
			// and the parent's deadline would run meanwhile.
			ctx := setup(t)
			n := newNetwork(t, ctx, "net", true)
			web := func(host byte) harness.Spec {
				return harness.Spec{Name: "web", Networks: []string{n.Name}, IPs: map[string]netip.Addr{n.Name: n.Addr(host)}}
			}
			web1 := startServer(t, ctx, web(10), "web-1")
			spec := tt.amb(fullName(t, "web"))
			spec.Networks = []string{n.Name}
			spec.Env = append(spec.Env, recreateWait)
			amb := startFollower(t, ctx, spec)
			target := addr(amb, dataPort)
			waitServedBy(t, ctx, target, "web-1")
			followRecreate(t, ctx, target, web1, func() *harness.Container { return startServer(t, ctx, web(11), "web-2") })
		})
	}
}

// recreateWait is the --backend-wait of the ambassadors in the recreate
// tests: longer than a busy machine takes to remove a container and start
// its replacement (seconds, on a loaded 2-core machine), shorter than a
// load attempt's timeout, so that connections opened in the gap wait and
// land on the replacement.
const recreateWait = "AMBASSADORD_BACKEND_WAIT=8s"

// followRecreate runs a load against target, removes web1 (docker rm -f)
// and starts web-2 with recreate, and checks that the load moves to it
// without a failure.
func followRecreate(t *testing.T, ctx context.Context, target string, web1 *harness.Container, recreate func() *harness.Container) load.Result {
	t.Helper()
	evs := eng.Events(ctx)
	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "web-1", time.Now(), 20)
	require.NoError(t, err)

	removing := time.Now()
	require.NoError(t, eng.Remove(ctx, web1.ID)) // docker rm -f: SIGKILL
	removed := time.Now()
	web2 := recreate()
	require.NotEqual(t, web1.IP, web2.IP, "the new web has a new address")
	_, err = l.WaitLanded(ctx, "web-2", time.Now(), 50)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("load: %s", res)

	died := waitEvent(t, ctx, evs, web1.ID, "die", removing)
	started := waitEvent(t, ctx, evs, web2.ID, "start", removing)
	rw := checkRewire(t, res, "web-1", "web-2", started, time.Time{})
	var last time.Time // web-1's last accepted connection
	for _, a := range res.On("web-1") {
		if a.ID.Accepted.After(last) {
			last = a.ID.Accepted
		}
	}
	t.Logf("rm -f took %s; web-1 died %s after the call; web-2 started %s after that and accepted its first connection %s after its start event",
		removed.Sub(removing).Round(time.Millisecond), died.Sub(removing).Round(time.Millisecond),
		started.Sub(died).Round(time.Millisecond), rw.latency().Round(time.Millisecond))
	t.Logf("gap between web-1's last and web-2's first accepted connection: %s; longest connection: %s",
		rw.first.ID.Accepted.Sub(last).Round(time.Millisecond), res.Longest().Round(time.Millisecond))
	// docker rm -f kills web-1 with connections in progress: those are
	// lost whatever the ambassador does.
	checkFailures(t, res, died)
	return res
}

// TestClaimRewire: an ambassador labelled ambassador.target=redis serves
// the container named redis until redis2 claims the target with the same
// label: new connections move to redis2 at once, and a connection
// established before keeps working on redis.
func TestClaimRewire(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	startServer(t, ctx, harness.Spec{Name: "redis", Networks: []string{n.Name}}, "redis")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: fullName(t, "redis"), labelPorts: strconv.Itoa(dataPort)},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "redis")

	established := openSession(t, ctx, target)
	require.Equal(t, "redis", established.ID.Name)
	echo(t, established, "before the claim")

	evs := eng.Events(ctx)
	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "redis", time.Now(), 20)
	require.NoError(t, err)
	claiming := time.Now()
	redis2 := startServer(t, ctx, harness.Spec{
		Name: "redis2", Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: fullName(t, "redis")},
	}, "redis2")
	_, err = l.WaitLanded(ctx, "redis2", time.Now(), 50)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("load: %s", res)

	started := waitEvent(t, ctx, evs, redis2.ID, "start", claiming)
	rw := checkRewire(t, res, "redis", "redis2", started, time.Time{})
	t.Logf("redis2 accepted its first connection %s after its start event", rw.latency().Round(time.Millisecond))
	requireNoFailures(t, res)

	echo(t, established, "after the claim, still on redis")
}

// TestClaimPriority: of two claimers the higher ambassador.priority wins;
// when it stops, the other takes over again.
func TestClaimPriority(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc") // claimed only: no container has this name
	claimer := func(name, priority string) harness.Spec {
		return harness.Spec{Name: name, Networks: []string{n.Name}, Labels: map[string]string{labelTarget: svc, labelPriority: priority}}
	}
	startServer(t, ctx, claimer("a", "0"), "a")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: strconv.Itoa(dataPort)},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "a")

	evs := eng.Events(ctx)
	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "a", time.Now(), 20)
	require.NoError(t, err)

	before := time.Now()
	b := startServer(t, ctx, claimer("b", "10"), "b")
	_, err = l.WaitLanded(ctx, "b", time.Now(), 50)
	require.NoError(t, err)
	started := waitEvent(t, ctx, evs, b.ID, "start", before)

	stopping := time.Now()
	require.NoError(t, eng.Stop(ctx, b.ID, 5*time.Second))
	_, err = l.WaitLanded(ctx, "a", time.Now(), 50)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("load: %s", res)
	// The stop signal (the kill event) takes b out of new connections
	// while it drains; its death follows.
	killed := waitEvent(t, ctx, evs, b.ID, "kill", stopping)
	died := waitEvent(t, ctx, evs, b.ID, "die", stopping)

	up := checkRewire(t, res, "a", "b", started, killed)
	down := checkRewire(t, res, "b", "a", killed, time.Time{})
	t.Logf("b (priority 10) took over %s after its start event; a took back over %s after b was sent its stop signal",
		up.latency().Round(time.Millisecond), down.latency().Round(time.Millisecond))
	checkFailures(t, res, died)
}

// TestHealthGatedClaim: a claimer whose healthcheck fails gets no
// connection, not even while the container named by the target is there to
// take them; once healthy it takes the target, and when it fails again it
// gives the target back.
func TestHealthGatedClaim(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	startServer(t, ctx, harness.Spec{Name: "app", Networks: []string{n.Name}}, "named")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: fullName(t, "app"), labelPorts: strconv.Itoa(dataPort)},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "named")

	evs := eng.Events(ctx)
	l := startLoad(t, target)
	claimer := startServer(t, ctx, harness.Spec{
		Name: "claimer", Networks: []string{n.Name},
		Labels:      map[string]string{labelTarget: fullName(t, "app")},
		Healthcheck: fastHealth,
		Cmd:         []string{"-healthy=false"},
	}, "claimer")
	waitHealth(t, ctx, claimer, container.Unhealthy)
	// A second of load while it is unhealthy: the ambassador has seen
	// the claimer's start and health events long before.
	_, err := l.WaitLanded(ctx, "named", time.Now().Add(time.Second), 20)
	require.NoError(t, err)
	st, err := stats(ctx, claimer)
	require.NoError(t, err)
	assert.Zero(t, st.Conns, "connections the unhealthy claimer accepted")

	healing := time.Now()
	setHealthy(t, ctx, claimer, true)
	healthy := waitEvent(t, ctx, evs, claimer.ID, "health_status: healthy", healing)
	_, err = l.WaitLanded(ctx, "claimer", healthy, 50)
	require.NoError(t, err)

	failing := time.Now()
	setHealthy(t, ctx, claimer, false)
	unhealthy := waitEvent(t, ctx, evs, claimer.ID, "health_status: unhealthy", failing)
	_, err = l.WaitLanded(ctx, "named", unhealthy, 50)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("load: %s", res)

	before := res.Filter(func(a load.Attempt) bool { return a.ID.Accepted.Before(healthy) })
	none(t, load.Result{Attempts: before}.On("claimer"), "connections the claimer accepted before it was healthy")
	up := checkRewire(t, res, "named", "claimer", healthy, unhealthy)
	down := checkRewire(t, res, "claimer", "named", unhealthy, time.Time{})
	t.Logf("the claimer took the target %s after its healthy event, and gave it back %s after its unhealthy event",
		up.latency().Round(time.Millisecond), down.latency().Round(time.Millisecond))
	requireNoFailures(t, res)
}

// TestRename: `docker rename db db-old` and a new container named db: the
// route to target db moves to the new one.
func TestRename(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	db1 := startServer(t, ctx, harness.Spec{Name: "db", Networks: []string{n.Name}}, "db-1")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: fullName(t, "db"), labelPorts: strconv.Itoa(dataPort)},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "db-1")

	evs := eng.Events(ctx)
	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "db-1", time.Now(), 20)
	require.NoError(t, err)

	renaming := time.Now()
	require.NoError(t, eng.Rename(ctx, db1.ID, fullName(t, "db-old")))
	renamed := waitEvent(t, ctx, evs, db1.ID, "rename", renaming)
	// Some load while no container is named db: the route has no backend,
	// and db-old is only a make-before-break fallback.
	settled := renamed.Add(100 * time.Millisecond)
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	err = harness.Poll(wctx, func(context.Context) error {
		if n := len(l.Result().StartedAfter(settled).Attempts); n < 20 {
			return fmt.Errorf("%d attempts so far", n)
		}
		return nil
	})
	cancel()
	require.NoError(t, err)
	t.Logf("while no container is named db: %s", l.Result().StartedAfter(settled))

	db2 := startServer(t, ctx, harness.Spec{Name: "db", Networks: []string{n.Name}}, "db-2")
	_, err = l.WaitLanded(ctx, "db-2", time.Now(), 50)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("load: %s", res)
	started := waitEvent(t, ctx, evs, db2.ID, "start", renaming)
	rw := checkRewire(t, res, "db-1", "db-2", started, time.Time{})
	t.Logf("the new db accepted its first connection %s after its start event", rw.latency().Round(time.Millisecond))
	requireNoFailures(t, res)
}

// TestClassicLinkFollowsName: the classic form, `--link web:web` and the
// socket, no arguments. When web is recreated with another address, the
// ambassador follows the name read from its own HostConfig.Links; the
// address in the WEB_PORT_9000_TCP variable Docker injected is only a
// fallback until the engine is in view, never after: Docker hands it to
// the next container at once.
func TestClassicLinkFollowsName(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	web1 := startServer(t, ctx, harness.Spec{Name: "web"}, "web-1")
	amb := startFollower(t, ctx, harness.Spec{Links: []string{link(web1, "web")}, Env: []string{recreateWait}})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "web-1")
	stdout, stderr, err := eng.Logs(ctx, amb.ID)
	require.NoError(t, err)
	require.Contains(t, stdout+stderr, "WEB_PORT_9000_TCP", "the route comes from the link variable")

	// Another container in between, so that the new web gets another
	// address; should the engine hand it web-1's, the ambassador must not
	// take it for web. An engine that hands out the lowest free address
	// (Docker 20.10) may release web-1's only after `rm -f` returned: then
	// the first filler gets another one, and a second, a moment later,
	// takes web-1's.
	res := followRecreate(t, ctx, target, web1, func() *harness.Container {
		filler := startServer(t, ctx, harness.Spec{Name: "filler"}, "filler")
		t.Logf("web-1 was %s; filler is %s", web1.IP, filler.IP)
		if filler.IP != web1.IP {
			time.Sleep(500 * time.Millisecond)
			filler2 := startServer(t, ctx, harness.Spec{Name: "filler2"}, "filler2")
			t.Logf("filler2 is %s", filler2.IP)
		}
		web2 := startServer(t, ctx, harness.Spec{Name: "web"}, "web-2")
		t.Logf("web-2 is %s", web2.IP)
		return web2
	})
	none(t, res.On("filler"), "connections that reached the filler")
	none(t, res.On("filler2"), "connections that reached the second filler")
}
