//go:build e2e

package e2e

// The Swarm test (issue 18): a private, throw-away dockerd made a
// single-node Swarm manager (harness.Dockerd.SwarmInit; never the shared
// engine), an attachable overlay network, a service of data servers
// labelled ambassador.target, and the image under test as a standalone
// container on that engine, attached to its default bridge (where this
// host reaches it) and to the overlay (where it reaches the tasks), with
// the engine's socket mounted. Everything runs under a load of fresh
// connections (each asking the data server who answers: its name is the
// task's, {{.Task.Name}}), failures counted; --replay all replays what a
// stopping task cut (whoami is safe to run twice).
//
// TestSwarmNodes makes a two-node swarm (harness.Cluster: each node a
// private dockerd in a network namespace and UTS namespace of its own) for
// a drained and a lost node. The routing mesh needs IPVS, which this
// machine's kernel lacks (CONFIG_IP_VS unset): the mesh path is covered by
// the resolver's unit tests only.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// swarmTakeover bounds, here, the time from a task's server listening to
// the first new connection it accepts through the ambassador; the goal
// (p99 ≤ 100 ms) is the bench's (make bench), on a quiet machine.
const swarmTakeover = time.Second

func TestSwarmService(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	h := swarmEngine(t, ctx, "swarm")
	docker := swarmDocker(t, ctx, h.d.Host)

	ovl := short(t, "ovl")
	docker("network", "create", "--driver", "overlay", "--attachable", "--label", eng.Label+"="+eng.Run, ovl)
	svc, target := short(t, "svc"), short(t, "cache")
	docker("service", "create", "--detach", "--no-resolve-image", "--name", svc,
		"--label", labelTarget+"="+target, "--label", eng.Label+"="+eng.Run,
		"--network", ovl, "--replicas", "3", "--env", "NAME={{.Task.Name}}",
		"--update-order", "start-first", "--update-parallelism", "1", "--update-delay", "0s",
		"--stop-grace-period", "2s", dataImage)

	amb, err := h.priv.Start(ctx, harness.Spec{
		Name: "amb", Image: ambassadorImage,
		Networks: []string{"bridge", ovl},
		Binds:    []string{filepath.Join(h.d.Dir, "docker.sock") + ":/var/run/docker.sock"},
		Cmd: append([]string{
			"--route", fmt.Sprintf("%d:%s:%d", dataPort, target, dataPort), "--claims", "label,routes",
			"--replay", "all", "--backend-wait", engineRestartBackendWait.String(),
		}, publicAdmin...),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			stdout, stderr, _ := h.priv.Logs(context.Background(), amb.ID)
			t.Logf("ambassador log:\n%s%s", stdout, stderr)
		}
	})
	route := addr(amb, dataPort)
	admin := fmt.Sprintf("http://%s", addr(amb, ambAdminPort))
	waitCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(waitCtx, addr(amb, ambAdminPort)))

	// 1. Three replicas claim the target: each takes new connections,
	// and /routes names the service, the task and the node.
	tasks := swarmWaitBackends(t, ctx, admin, svc, 3)
	l := startLoad(t, route)
	for _, b := range tasks {
		_, err := l.WaitLanded(ctx, b.Container, time.Now(), 5)
		require.NoError(t, err, "task %s takes connections", b.Task)
	}
	r := swarmRoute(t, ctx, admin)
	for _, b := range r.Backends {
		assert.Equal(t, svc, b.Service)
		assert.Regexp(t, `^`+svc+`\.[1-3]$`, b.Task)
		assert.NotEmpty(t, b.Node)
		assert.Equal(t, ovl, b.Network)
	}
	require.Len(t, r.Candidates, 3)
	assert.Contains(t, r.Candidates[0].Reason, "claims "+target)
	metrics := swarmGet(t, ctx, admin+"/metrics")
	for _, b := range r.Backends {
		assert.Contains(t, metrics, fmt.Sprintf(`ambassadord_backend_task{backend=%q,node=%q,route="%d",service=%q,task=%q} 1`,
			b.Addr, b.Node, dataPort, svc, b.Task))
	}

	// 2. A start-first rolling update under load: no new connection
	// fails; the new tasks take connections as they start.
	before := swarmNames(tasks)
	updating := time.Now()
	docker("service", "update", "--detach=false", "--no-resolve-image", "--env-add", "GEN=2", svc)
	updated := swarmWaitBackends(t, ctx, admin, svc, 3)
	for _, b := range updated {
		assert.NotContains(t, before, b.Container, "every task was replaced")
		_, err := l.WaitLanded(ctx, b.Container, updating, 5)
		require.NoError(t, err)
	}
	res := l.Result()
	requireNoFailures(t, res)
	takeovers := swarmTakeovers(t, res, swarmNames(updated), updating)

	// 3. Scale 3 → 1 → 3: the tasks shut down take no new connections;
	// the new ones take them.
	docker("service", "scale", "--detach=false", svc+"=1")
	one := swarmWaitBackends(t, ctx, admin, svc, 1)
	scaled := time.Now()
	_, err = l.WaitLanded(ctx, one[0].Container, scaled, 50)
	require.NoError(t, err)
	none(t, l.Result().Filter(func(x load.Attempt) bool {
		return x.Start.After(scaled) && x.ID.Name != one[0].Container && x.OK()
	}), "connections to tasks scaled away")
	scaling := time.Now()
	docker("service", "scale", "--detach=false", svc+"=3")
	three := swarmWaitBackends(t, ctx, admin, svc, 3)
	for _, b := range three {
		_, err := l.WaitLanded(ctx, b.Container, scaling, 5)
		require.NoError(t, err)
	}
	takeovers = append(takeovers, swarmTakeovers(t, l.Result(), slices.DeleteFunc(swarmNames(three), func(n string) bool { return n == one[0].Container }), scaling)...)

	// 4. A task's container killed: Swarm starts another in its slot,
	// which takes connections; the dead one none.
	victim := three[0]
	killed := time.Now()
	docker("kill", victim.ContainerID)
	var replaced []api.Backend
	require.Eventually(t, func() bool {
		replaced = swarmBackends(t, ctx, admin, svc)
		return len(replaced) == 3 && !slices.Contains(swarmNames(replaced), victim.Container)
	}, readyTimeout, 50*time.Millisecond, "the killed task replaced")
	for _, b := range replaced {
		_, err := l.WaitLanded(ctx, b.Container, killed, 5)
		require.NoError(t, err)
	}
	// A fresh connection the ambassador passed to a task in the
	// milliseconds before its stop signal or its kill, which the task
	// accepted and left unanswered as it exited (the data server drains
	// only the connections it holds), is replayed (--replay all) whether
	// its close or the task's death reaches the ambassador first: none
	// fails.
	res = l.Result()
	requireNoFailures(t, res)

	// 5. The service removed: no backend, and the route says why.
	docker("service", "rm", svc)
	require.Eventually(t, func() bool {
		r := swarmRoute(t, ctx, admin)
		return len(r.Backends) == 0 && strings.Contains(r.NoBackend, target)
	}, readyTimeout, 50*time.Millisecond, "no backend once the service is removed")
	res = l.Stop()

	slices.Sort(takeovers)
	t.Logf("load: %s", res)
	t.Logf("task listening → first connection through the ambassador, over %d new tasks: median %s, max %s",
		len(takeovers), takeovers[len(takeovers)/2].Round(time.Millisecond), takeovers[len(takeovers)-1].Round(time.Millisecond))
	assert.LessOrEqual(t, takeovers[len(takeovers)-1], swarmTakeover)
}

// swarmEngine starts a private engine named name, makes it a single-node
// swarm's manager and gives it the image under test (and the data
// server's, as every private engine of enginesStart).
func swarmEngine(t *testing.T, ctx context.Context, name string) *enginesHost {
	t.Helper()
	h := enginesStart(t, ctx, name, harness.DockerdOptions{})
	require.NoError(t, h.d.SwarmInit(ctx))
	require.NoError(t, eng.CopyImage(ctx, h.priv, ambassadorImage))
	return h
}

// swarmRoute returns the ambassador's only route, or an empty one if the
// admin endpoint does not answer as expected (the callers poll).
func swarmRoute(t *testing.T, ctx context.Context, admin string) api.Route {
	t.Helper()
	var st api.Status
	if err := fetchJSON(ctx, admin+"/routes", &st); err != nil || len(st.Routes) != 1 {
		t.Logf("GET %s/routes: %v, %d routes", admin, err, len(st.Routes))
		return api.Route{}
	}
	return st.Routes[0]
}

// swarmBackends returns the route's backends that are running tasks of
// svc, with their container named as the data server answers: the task's
// name.
func swarmBackends(t *testing.T, ctx context.Context, admin, svc string) []api.Backend {
	t.Helper()
	var out []api.Backend
	for _, b := range swarmRoute(t, ctx, admin).Backends {
		if b.Service == svc {
			// Docker names the container SERVICE.SLOT.TASKID, as
			// {{.Task.Name}} is.
			out = append(out, b)
		}
	}
	return out
}

// swarmWaitBackends waits until the route has n backends, all tasks of
// svc, and returns them.
func swarmWaitBackends(t *testing.T, ctx context.Context, admin, svc string, n int) []api.Backend {
	t.Helper()
	var bs []api.Backend
	if !assert.Eventually(t, func() bool {
		bs = swarmBackends(t, ctx, admin, svc)
		return len(bs) == n && len(swarmRoute(t, ctx, admin).Backends) == n
	}, readyTimeout, 20*time.Millisecond) {
		require.FailNowf(t, "backends", "want %d tasks of %s, have %+v", n, svc, swarmRoute(t, ctx, admin))
	}
	return bs
}

func swarmNames(bs []api.Backend) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Container)
	}
	return out
}

// swarmTakeovers returns, for each task named, the time from its server
// listening to the first connection it accepted through the ambassador.
func swarmTakeovers(t *testing.T, res load.Result, tasks []string, after time.Time) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, name := range tasks {
		first, ok := res.First(name, after)
		require.True(t, ok, "no connection landed on %s", name)
		out = append(out, first.ID.Accepted.Sub(first.ID.Listening))
	}
	return out
}

// TestDeploySwarmStack deploys deploy/swarm/stack.yml on a private
// single-node swarm: the ambassador runs as a global service on the
// manager, follows a service that claims its target on amb_backend, and
// answers on its port with the service's tasks.
func TestDeploySwarmStack(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	h := swarmEngine(t, ctx, "stack")
	root, err := harness.RepoRoot(ctx)
	require.NoError(t, err)
	stack, target := "amb", short(t, "cache")
	// DOCKER_SOCKET: the private engine's socket, on this host it
	// shares with the engine every other test uses.
	docker := swarmDocker(t, ctx, h.d.Host, "AMBASSADORD_IMAGE="+ambassadorImage, "AMBASSADOR_TARGET="+target,
		fmt.Sprintf("AMBASSADOR_PORTS=%d", dataPort), "DOCKER_SOCKET="+filepath.Join(h.d.Dir, "docker.sock"))
	docker("stack", "deploy", "-c", filepath.Join(root, "deploy", "swarm", "stack.yml"), "--resolve-image", "never", stack)
	svc := short(t, "svc")
	docker("service", "create", "--detach", "--no-resolve-image", "--name", svc,
		"--label", labelTarget+"="+target, "--network", stack+"_backend", "--replicas", "2",
		"--env", "NAME={{.Task.Name}}", dataImage)

	// The ambassador's task: its container, and its address on this
	// engine's docker_gwbridge, where this host reaches it.
	var ambID string
	require.Eventually(t, func() bool {
		ambID = docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_ambassador")
		return ambID != "" && !strings.Contains(ambID, "\n")
	}, readyTimeout, 100*time.Millisecond, "the ambassador's task runs")
	gw := docker("network", "inspect", "docker_gwbridge", "--format",
		`{{range $id, $c := .Containers}}{{if eq (slice $id 0 12) "`+ambID[:12]+`"}}{{$c.IPv4Address}}{{end}}{{end}}`)
	ip, _, ok := strings.Cut(gw, "/")
	require.True(t, ok, "the ambassador's address on docker_gwbridge: %q", gw)
	route := fmt.Sprintf("%s:%d", ip, dataPort)

	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "-H", h.d.Host, "logs", ambID).CombinedOutput()
			t.Logf("ambassador's log:\n%s", out)
			out, _ = exec.Command("docker", "-H", h.d.Host, "service", "ps", "--no-trunc", svc).CombinedOutput()
			t.Logf("tasks:\n%s", out)
		}
	})

	// Both tasks answer through it.
	l := startLoad(t, route)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("load: %s\n%s", l.Result(), load.Describe(l.Result().Failed()[:min(5, len(l.Result().Failed()))]))
		}
	})
	seen := map[string]bool{}
	require.Eventually(t, func() bool {
		for _, a := range l.Result().Attempts {
			if a.OK() && strings.HasPrefix(a.ID.Name, svc+".") {
				seen[a.ID.Name] = true
			}
		}
		return len(seen) == 2
	}, readyTimeout, 50*time.Millisecond, "both tasks of %s answer through the stack's ambassador (seen %v)", svc, seen)
	stdout := docker("exec", ambID, "/ambassadord", "status")
	t.Logf("$ docker exec %s /ambassadord status\n%s", ambID[:12], stdout)
	assert.Contains(t, stdout, svc+".1 on ")
	assert.Contains(t, stdout, svc+".2 on ")
}

// swarmDocker returns a function that runs the docker CLI against host's
// engine and returns its trimmed output, failing the test on an error.
func swarmDocker(t *testing.T, ctx context.Context, host string, env ...string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		t.Logf("$ DOCKER_HOST=%s docker %s", host, strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "docker", args...)
		cmd.Env = append(append(os.Environ(), env...), "DOCKER_HOST="+host)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		return strings.TrimSpace(string(out))
	}
}

// swarmGet returns the body of a GET of url.
func swarmGet(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	res, err := httpClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	return string(body)
}

// TestSwarmNodes: a two-node swarm (harness.Cluster: a manager and a worker,
// each a private dockerd in a network namespace of its own, with its own
// host name, joined by a link of their own), a service of 4 replicas
// spread over both, and the ambassador on the manager, attached to the
// overlay, reaching the worker's tasks over VXLAN.
//
//  1. Tasks on both nodes take new connections; /routes names their nodes.
//  2. The worker drained: its tasks are marked for shutdown and take no
//     new connection from then on; Swarm starts their replacements on the
//     manager, which take them. No fresh connection fails.
//  3. The worker lost (its daemon killed): once Swarm has the node down,
//     its tasks are dropped, and the replacements followed.
func TestSwarmNodes(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	started := time.Now()
	c, err := harness.StartCluster(ctx, privateDockerdID())
	skipWithoutDockerd(t, err)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager's log (tail):\n%s", c.Manager.LogTail())
			t.Logf("worker's log (tail):\n%s", c.Worker.LogTail())
		}
		assert.NoError(t, c.Close(), "tear down cluster %s", c.ID)
	})
	t.Logf("cluster %s: manager %s (%s), worker %s (%s), in %s", c.ID, c.Manager.Netns, c.Manager.Address, c.Worker.Netns, c.Worker.Address,
		time.Since(started).Round(time.Millisecond))
	var privs []*harness.Engine
	for _, d := range []*harness.Dockerd{c.Manager, c.Worker} {
		p, err := d.Engine(ctx, eng.Label, eng.Run)
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		require.NoError(t, eng.CopyImage(ctx, p, dataImage))
		privs = append(privs, p)
	}
	require.NoError(t, eng.CopyImage(ctx, privs[0], ambassadorImage))
	docker := swarmDocker(t, ctx, c.Manager.Host)

	ovl, svc, target := short(t, "ovl"), short(t, "svc"), short(t, "cache")
	docker("network", "create", "--driver", "overlay", "--attachable", ovl)
	docker("service", "create", "--detach=false", "--quiet", "--no-resolve-image", "--name", svc,
		"--label", labelTarget+"="+target, "--network", ovl, "--replicas", "4", "--placement-pref", "spread=node.id",
		"--env", "NAME={{.Task.Name}}", "--stop-grace-period", "2s", dataImage)
	amb, err := privs[0].Start(ctx, harness.Spec{
		Name: "amb", Image: ambassadorImage, Networks: []string{"bridge", ovl},
		Binds:   []string{filepath.Join(c.Manager.Dir, "docker.sock") + ":/var/run/docker.sock"},
		Publish: map[uint16]netip.Addr{dataPort: c.Manager.Address, ambAdminPort: c.Manager.Address},
		Cmd: append([]string{
			"--route", fmt.Sprintf("%d:%s:%d", dataPort, target, dataPort), "--claims", "label,routes",
			"--replay", "all", "--backend-wait", engineRestartBackendWait.String(), "--dial-timeout", "1s",
		}, publicAdmin...),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			stdout, stderr, _ := privs[0].Logs(context.Background(), amb.ID)
			t.Logf("ambassador log:\n%s%s", stdout, stderr)
		}
	})
	routeAddr, err := privs[0].HostPort(ctx, amb.ID, dataPort)
	require.NoError(t, err)
	adminAddr, err := privs[0].HostPort(ctx, amb.ID, ambAdminPort)
	require.NoError(t, err)
	route, admin := routeAddr.String(), "http://"+adminAddr.String()
	waitCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(waitCtx, adminAddr.String()))

	// 1. Both nodes' tasks serve.
	tasks := swarmWaitBackends(t, ctx, admin, svc, 4)
	onWorker := swarmOn(tasks, c.Worker.Netns)
	require.Len(t, onWorker, 2, "spread: two tasks on the worker, %+v", tasks)
	require.Len(t, swarmOn(tasks, c.Manager.Netns), 2)
	l := startLoad(t, route)
	for _, b := range tasks {
		_, err := l.WaitLanded(ctx, b.Container, time.Now(), 5)
		require.NoError(t, err, "task %s on %s takes connections", b.Task, b.Node)
	}

	// 2. The worker drained.
	draining := time.Now()
	docker("node", "update", "--availability", "drain", c.Worker.Netns)
	var drained []api.Backend
	require.Eventually(t, func() bool {
		drained = swarmBackends(t, ctx, admin, svc)
		return len(drained) == 4 && len(swarmOn(drained, c.Manager.Netns)) == 4
	}, readyTimeout, 50*time.Millisecond, "the worker's tasks replaced on the manager")
	for _, b := range drained {
		_, err := l.WaitLanded(ctx, b.Container, draining, 5)
		require.NoError(t, err)
	}
	settled := time.Now()
	_, err = l.WaitLanded(ctx, drained[0].Container, settled, 50)
	require.NoError(t, err)
	res := l.Result()
	requireNoFailures(t, res)
	none(t, res.Filter(func(x load.Attempt) bool {
		return x.Start.After(settled) && slices.Contains(swarmNames(onWorker), x.ID.Name)
	}), "connections to the drained worker's tasks")

	// 3. The worker back, the tasks spread again, then the worker lost.
	docker("node", "update", "--availability", "active", c.Worker.Netns)
	docker("service", "update", "--detach=false", "--quiet", "--no-resolve-image", "--force", svc)
	spread := swarmWaitBackends(t, ctx, admin, svc, 4)
	require.Eventually(t, func() bool {
		spread = swarmBackends(t, ctx, admin, svc)
		return len(spread) == 4 && len(swarmOn(spread, c.Worker.Netns)) > 0
	}, readyTimeout, 50*time.Millisecond, "tasks on the worker again")
	lostTasks := swarmOn(spread, c.Worker.Netns)
	killed := time.Now()
	require.NoError(t, c.Worker.Kill(ctx))
	var after []api.Backend
	require.Eventually(t, func() bool {
		after = swarmBackends(t, ctx, admin, svc)
		return len(swarmOn(after, c.Worker.Netns)) == 0
	}, 2*time.Minute, 100*time.Millisecond, "the lost worker's tasks dropped")
	dropped := time.Now()
	t.Logf("worker killed → its %d tasks dropped in %s (Swarm marks a node down after missed heartbeats)", len(lostTasks), dropped.Sub(killed).Round(time.Millisecond))
	replaced := swarmWaitBackends(t, ctx, admin, svc, 4)
	for _, b := range replaced {
		_, err := l.WaitLanded(ctx, b.Container, dropped, 5)
		require.NoError(t, err)
	}
	res = l.Stop()
	t.Logf("load: %s", res)
	none(t, res.Filter(func(x load.Attempt) bool { return !x.OK() && x.Start.After(dropped) }), "failed connections once the lost tasks were dropped")
	none(t, res.Filter(func(x load.Attempt) bool { return !x.OK() && x.Start.Before(killed) }), "failed connections before the worker was lost")
	t.Logf("while the worker was lost and not yet reported down: %d of %d fresh connections failed",
		len(res.Filter(func(x load.Attempt) bool { return !x.OK() && !x.Start.Before(killed) && !x.Start.After(dropped) })),
		len(res.Filter(func(x load.Attempt) bool { return !x.Start.Before(killed) && !x.Start.After(dropped) })))
}

// swarmOn returns the backends that are tasks on node.
func swarmOn(bs []api.Backend, node string) []api.Backend {
	var out []api.Backend
	for _, b := range bs {
		if b.Node == node {
			out = append(out, b)
		}
	}
	return out
}
