package watcher

import (
	"errors"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

func service(id, name string, labels map[string]string, ports ...swarm.PortConfig) swarm.Service {
	s := swarm.Service{ID: id}
	s.Spec.Name = name
	s.Spec.Labels = labels
	s.Endpoint.Ports = ports
	return s
}

func overlay(id, name string) swarm.Network {
	n := swarm.Network{ID: id}
	n.Spec.Name = name
	n.Spec.Scope = "swarm"
	n.Spec.DriverConfiguration = &swarm.Driver{Name: "overlay"}
	return n
}

// task builds a task of service svc in slot on node with a container and
// an address on the overlay ov.
func task(id, svc string, slot int, node, containerID string, state, desired swarm.TaskState, ov swarm.Network, ip string) swarm.Task {
	t := swarm.Task{ID: id, ServiceID: svc, Slot: slot, NodeID: node, DesiredState: desired}
	t.Status.State = state
	if containerID != "" {
		t.Status.ContainerStatus = &swarm.ContainerStatus{ContainerID: containerID}
	}
	ingress := swarm.Network{ID: "ingress-id"}
	ingress.Spec.Name, ingress.Spec.Ingress = "ingress", true
	t.NetworksAttachments = []swarm.NetworkAttachment{
		{Network: ingress, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.9/24")}},
		{Network: ov, Addresses: []netip.Prefix{netip.MustParsePrefix(ip + "/24")}},
	}
	return t
}

func node(id, host string, state swarm.NodeState) swarm.Node {
	n := swarm.Node{ID: id}
	n.Description.Hostname = host
	n.Status.State, n.Status.Addr = state, "192.0.2.1"
	return n
}

var (
	ovApp   = overlay("ov-app", "app")
	idTask1 = id64("task1")
	idTask2 = id64("task2")
	idTask3 = id64("task3")
)

func TestConvertTasks(t *testing.T) {
	svc := service("s1", "redis", map[string]string{"ambassador.target": "redis"},
		swarm.PortConfig{Protocol: network.TCP, TargetPort: 6379, PublishedPort: 16379, PublishMode: swarm.PortConfigPublishModeIngress})
	nodes := []swarm.Node{node("n1", "manager-1", swarm.NodeStateReady), node("n2", "worker-2", swarm.NodeStateDown)}
	tasks := []swarm.Task{
		task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3"),
		// Marked for shutdown, still running: stopping.
		task("t2", "s1", 2, "n1", idTask2, swarm.TaskStateRunning, swarm.TaskStateShutdown, ovApp, "10.1.0.4"),
		// On a node that is down: left out.
		task("t3", "s1", 3, "n2", idTask3, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.5"),
		// Of a service that is gone: left out.
		task("t4", "s-gone", 1, "n1", id64("task4"), swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.6"),
	}
	// The watched node runs task 1's container, which the listing has
	// with its own labels and health; web is a plain container.
	local := convertContainers([]container.Summary{
		ctr(idTask1, "redis.1.t1", withLabels(labelTaskID, "t1", "ambassador.target", "other", "image", "redis"),
			withStatus(container.StateRunning, "Up 2 minutes (healthy)"), withNet("app", "ov-app", "10.1.0.3")),
		ctr(idWeb, "web"),
	}, "local")

	out, busy := convertTasks([]swarm.Service{svc}, tasks, nodes, local, "local")
	assert.True(t, busy, "task 2 is marked for shutdown and still runs")
	require.Equal(t, []string{"redis.1.t1", "redis.2.t2", "web"}, names(&source.Snapshot{Containers: out}))

	t1 := out[0]
	assert.Equal(t, idTask1, t1.ID, "the container's ID: pinning and the fast paths go by it")
	assert.Equal(t, "redis", t1.Labels["ambassador.target"], "the service's label wins over its container's")
	assert.Equal(t, "redis", t1.Labels["image"], "the container's other labels stay")
	assert.Equal(t, "healthy", t1.Health, "the container's health")
	assert.Equal(t, "running", t1.State)
	assert.Equal(t, []source.Network{{Name: "app", ID: "ov-app", IP: "10.1.0.3", Overlay: true}}, t1.Networks, "ingress left out")
	require.NotNil(t, t1.Task)
	assert.Equal(t, source.Task{ID: "t1", Service: "redis", Slot: 1, Node: "manager-1",
		Mesh: []source.Port{{Port: 6379, Proto: "tcp", Published: []source.Binding{{HostPort: 16379}}}}}, *t1.Task)
	assert.Equal(t, "redis.1", t1.Task.String())

	t2 := out[1]
	assert.Equal(t, source.StateStopping, t2.State)
	assert.Equal(t, idTask2, t2.ID)
	assert.Empty(t, t2.Health, "no container here: the manager's word")
	assert.Equal(t, "redis", t2.Labels["ambassador.target"])

	assert.Nil(t, out[2].Task, "a plain container stays one")

	// Settled: one running task, no update under way.
	out, busy = convertTasks([]swarm.Service{svc}, tasks[:1], nodes, local, "local")
	assert.False(t, busy)
	assert.Len(t, out, 2)
}

func TestConvertTasksTransitions(t *testing.T) {
	svc := service("s1", "redis", nil)
	nodes := []swarm.Node{node("n1", "manager-1", swarm.NodeStateReady)}

	t.Run("starting on another node", func(t *testing.T) {
		tasks := []swarm.Task{task("t1", "s1", 1, "n1", "", swarm.TaskStateStarting, swarm.TaskStateRunning, ovApp, "10.1.0.3")}
		out, busy := convertTasks([]swarm.Service{svc}, tasks, nodes, nil, "e")
		assert.True(t, busy, "polled until it runs")
		assert.Empty(t, out)
	})
	t.Run("started here before the manager knows", func(t *testing.T) {
		// Not even its container's ID: the node reports it with the
		// task's state.
		tasks := []swarm.Task{task("t1", "s1", 1, "n1", "", swarm.TaskStateStarting, swarm.TaskStateRunning, ovApp, "10.1.0.3")}
		local := convertContainers([]container.Summary{ctr(idTask1, "redis.1.t1", withLabels(labelTaskID, "t1"))}, "e")
		out, busy := convertTasks([]swarm.Service{svc}, tasks, nodes, local, "e")
		assert.False(t, busy, "the node runs it: settled")
		require.Len(t, out, 1)
		assert.Equal(t, idTask1, out[0].ID, "the container's ID, from the node")
		assert.Equal(t, "running", out[0].State)
		assert.NotNil(t, out[0].Task)
	})
	t.Run("a task without its container ID yet waits for it", func(t *testing.T) {
		tasks := []swarm.Task{task("t1", "s1", 1, "n1", "", swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3")}
		out, busy := convertTasks([]swarm.Service{svc}, tasks, nodes, nil, "e")
		assert.Empty(t, out, "no ID to pin it by: one taken now would change")
		assert.True(t, busy, "polled until the manager knows it")
	})
	t.Run("while the manager does not know the container, two bearing the label are none", func(t *testing.T) {
		tasks := []swarm.Task{task("t1", "s1", 1, "n1", "", swarm.TaskStateStarting, swarm.TaskStateRunning, ovApp, "10.1.0.3")}
		local := convertContainers([]container.Summary{
			ctr(idTask1, "redis.1.t1", withLabels(labelTaskID, "t1")), ctr(idWeb, "forger", withLabels(labelTaskID, "t1")),
		}, "e")
		out, busy := convertTasks([]swarm.Service{svc}, tasks, nodes, local, "e")
		assert.True(t, busy)
		assert.Equal(t, []string{"forger", "redis.1.t1"}, names(&source.Snapshot{Containers: out}), "plain containers until the manager says")
	})
	t.Run("a container bearing another task's label", func(t *testing.T) {
		tasks := []swarm.Task{task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3")}
		local := convertContainers([]container.Summary{
			ctr(idTask1, "redis.1.t1", withLabels(labelTaskID, "t1"), withStatus(container.StateRunning, "Up 1 minute (healthy)")),
			ctr(idWeb, "forger", withLabels(labelTaskID, "t1", "ambassador.priority", "100"), withStatus(container.StateRunning, "Up 1 minute (unhealthy)")),
		}, "e")
		out, _ := convertTasks([]swarm.Service{svc}, tasks, nodes, local, "e")
		require.Equal(t, []string{"forger", "redis.1.t1"}, names(&source.Snapshot{Containers: out}))
		// In the other order too.
		out2, _ := convertTasks([]swarm.Service{svc}, tasks, nodes, []source.Container{local[1], local[0]}, "e")
		assert.ElementsMatch(t, out, out2)
		assert.Equal(t, idTask1, out[1].ID, "the manager's container")
		assert.Equal(t, "healthy", out[1].Health)
		assert.Empty(t, out[1].Labels["ambassador.priority"], "nothing of the forger's")
		assert.Nil(t, out[0].Task, "the forger stays a plain container")
	})
	t.Run("an update under way", func(t *testing.T) {
		s := svc
		s.UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStateUpdating}
		tasks := []swarm.Task{task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3")}
		_, busy := convertTasks([]swarm.Service{s}, tasks, nodes, nil, "e")
		assert.True(t, busy)
	})
	t.Run("a global service's task", func(t *testing.T) {
		tk := task("t1", "s1", 0, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3")
		tk.Status.PortStatus.Ports = []swarm.PortConfig{{Protocol: network.UDP, TargetPort: 53, PublishedPort: 5353, PublishMode: swarm.PortConfigPublishModeHost}}
		out, _ := convertTasks([]swarm.Service{svc}, []swarm.Task{tk}, nodes, nil, "e")
		require.Len(t, out, 1)
		assert.Equal(t, "redis.n1.t1", out[0].Name, "as Docker names its container")
		assert.Equal(t, "redis@manager-1", out[0].Task.String())
		assert.Equal(t, []source.Port{{Port: 53, Proto: "udp", Published: []source.Binding{{HostIP: "192.0.2.1", HostPort: 5353}}}}, out[0].Ports,
			"host mode: on its node's address")
	})
}

// On a manager, the watcher lists services, tasks and nodes with the
// containers, polls while tasks are in transition, and lists again on
// service and node events.
func TestWatcherFollowsSwarmServices(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := service("s1", "redis", map[string]string{"ambassador.target": "redis"})
		nodes := []swarm.Node{node("n1", "manager-1", swarm.NodeStateReady)}
		f := newFake(ctr(idWeb, "web"))
		f.setSwarm([]swarm.Service{svc}, []swarm.Task{
			task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3"),
		}, nodes)
		w := &Watcher{Client: f}
		start(t, w)
		u := take(t, w)
		assert.Equal(t, []string{"redis.1.t1", "web"}, names(u.Snapshot))
		filters := firstCall(t, f, "tasks").filters
		assert.Equal(t, map[string]bool{"running": true, "shutdown": true}, filters["desired-state"])
		assert.True(t, firstCall(t, f, "events").filters["type"]["service"] && firstCall(t, f, "events").filters["type"]["node"])

		// A scale-up: the new task starts on another node, which no
		// event of this engine announces; the service event leads to a
		// listing that finds it starting, and polling finds it running.
		f.setSwarm([]swarm.Service{svc}, []swarm.Task{
			task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3"),
			task("t2", "s1", 2, "n1", "", swarm.TaskStateStarting, swarm.TaskStateRunning, ovApp, "10.1.0.4"),
		}, nodes)
		f.send(t, events.Message{Type: events.ServiceEventType, Action: events.ActionUpdate, Actor: events.Actor{ID: "s1"}})
		time.Sleep(w.quiet())
		none(t, w) // starting: nothing new
		t0 := time.Now()
		f.setSwarm([]swarm.Service{svc}, []swarm.Task{
			task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3"),
			task("t2", "s1", 2, "n1", idTask2, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.4"),
		}, nodes)
		time.Sleep(swarmPoll)
		u = take(t, w)
		assert.Equal(t, []string{"redis.1.t1", "redis.2.t2", "web"}, names(u.Snapshot))
		assert.LessOrEqual(t, time.Since(t0), swarmPoll, "seen by the next poll")

		// Settled: no more polling.
		n := f.count("tasks")
		time.Sleep(10 * swarmPoll)
		none(t, w)
		assert.Equal(t, n, f.count("tasks"))

		// A task that stays pending is polled for swarmPollFor, not for ever.
		f.setSwarm([]swarm.Service{svc}, []swarm.Task{
			task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3"),
			task("t2", "s1", 2, "n1", idTask2, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.4"),
			task("t3", "s1", 3, "", "", swarm.TaskStatePending, swarm.TaskStateRunning, ovApp, "10.1.0.5"),
		}, nodes)
		f.send(t, events.Message{Type: events.NodeEventType, Action: events.ActionUpdate, Actor: events.Actor{ID: "n1"}})
		time.Sleep(swarmPollFor + time.Second)
		n = f.count("tasks")
		time.Sleep(10 * swarmPoll)
		assert.Equal(t, n, f.count("tasks"), "polling gave up on the pending task")
		none(t, w)

		// The service removed: its tasks are gone.
		f.setSwarm(nil, nil, nodes)
		f.send(t, events.Message{Type: events.ServiceEventType, Action: events.ActionRemove, Actor: events.Actor{ID: "s1"}})
		time.Sleep(w.quiet())
		u = take(t, w)
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
		assert.ElementsMatch(t, []string{idTask1, idTask2}, u.Gone)
	})
}

// A task's container that dies takes the container fast path: the entry
// goes at once, before the manager hears of it.
func TestTaskContainerDeathIsGoneAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := service("s1", "redis", map[string]string{"ambassador.target": "redis"})
		nodes := []swarm.Node{node("n1", "manager-1", swarm.NodeStateReady)}
		f := newFake(ctr(idTask1, "redis.1.t1", withLabels(labelTaskID, "t1"), withNet("app", "ov-app", "10.1.0.3")))
		f.setSwarm([]swarm.Service{svc}, []swarm.Task{
			task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3"),
		}, nodes)
		w := &Watcher{Client: f}
		start(t, w)
		require.Len(t, take(t, w).Snapshot.Containers, 1)

		f.set() // the container died; the manager still says running
		f.send(t, containerEvent(events.ActionDie, idTask1, nil))
		u := take(t, w)
		assert.Empty(t, u.Snapshot.Containers)
		assert.Equal(t, []string{idTask1}, u.Gone)
		time.Sleep(w.quiet())
		none(t, w) // the re-list, where the manager lags, does not revive it
	})
}

// An engine that is not a manager is never asked for services.
func TestNoSwarmCallsOffAManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idWeb, "web"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)
		assert.Zero(t, f.count("services"))
		assert.Equal(t, swarmWorker, roleOf(client.PingResult{SwarmStatus: &client.SwarmStatus{NodeState: swarm.LocalNodeStateActive}}))
		assert.Equal(t, swarmNone, roleOf(client.PingResult{SwarmStatus: &client.SwarmStatus{NodeState: swarm.LocalNodeStateInactive}}))
	})
}

// firstCall returns the first call of op.
func firstCall(t *testing.T, f *fakeClient, op string) call {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if c.op == op {
			return c
		}
	}
	require.FailNow(t, "no call", op)
	return call{}
}

// Engines before API 1.42 (Docker 20.10) send no Swarm header with their
// pings: the role comes from /info, asked only of an engine that runs
// Swarm tasks (the socket proxy of deploy/ refuses /info): at the first
// listing that shows one, and at resyncs while it does.
func TestSwarmRoleFromInfo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idWeb, "web"))
		f.noSwarmHeader = true
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)
		time.Sleep(w.resync())
		none(t, w)
		assert.Zero(t, f.count("info"), "no task runs here: /info is not asked for")

		// swarm init, and a task starts here.
		svc := service("s1", "redis", map[string]string{"ambassador.target": "redis"})
		f.setSwarm([]swarm.Service{svc}, []swarm.Task{
			task("t1", "s1", 1, "n1", idTask1, swarm.TaskStateRunning, swarm.TaskStateRunning, ovApp, "10.1.0.3"),
		}, []swarm.Node{node("n1", "manager-1", swarm.NodeStateReady)})
		f.set(ctr(idWeb, "web"), ctr(idTask1, "redis.1.t1", withLabels(labelTaskID, "t1"), withNet("app", "ov-app", "10.1.0.3")))
		f.send(t, containerEvent(events.ActionStart, idTask1, nil))
		time.Sleep(w.quiet())
		u := take(t, w)
		assert.Equal(t, []string{"redis.1.t1", "web"}, names(u.Snapshot))
		assert.NotNil(t, u.Snapshot.Containers[0].Task, "followed as a task at once")
		assert.Equal(t, 1, f.count("info"))
	})
}

// An engine that refuses /info (a socket proxy) is asked once, and its
// containers are served as containers.
func TestSwarmInfoRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idTask1, "redis.1.t1", withLabels(labelTaskID, "t1")))
		f.noSwarmHeader = true
		f.infoErr = cerrdefs.ErrPermissionDenied
		w := &Watcher{Client: f}
		start(t, w)
		assert.Equal(t, []string{"redis.1.t1"}, names(take(t, w).Snapshot))
		time.Sleep(3 * w.resync())
		none(t, w)
		assert.Equal(t, 1, f.count("info"), "refused: not asked again")
		assert.Zero(t, f.count("services"))
	})
}

// A manager whose services cannot be listed (a socket proxy that allows
// only the container reads) is no lost engine: its containers are served.
func TestSwarmListingRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idWeb, "web"))
		f.setSwarm([]swarm.Service{service("s1", "redis", nil)}, nil, nil)
		f.servicesErr = errors.New("Error response from daemon: 403 Forbidden")
		w := &Watcher{Client: f}
		start(t, w)
		u := take(t, w)
		assert.True(t, u.Connected)
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
	})
}
