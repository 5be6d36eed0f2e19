package resolver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// ovl is a Swarm overlay network; the ambassador of these tests is
// attached to it unless a test says otherwise.
var ovl = source.Network{Name: "ovl", ID: "n-ovl", Overlay: true}

// taskOf returns a running task of service svc in slot on node-1, on ovl
// at ip, with the service's labels.
func taskOf(svc string, slot int, ip string, opts ...func(*source.Container)) source.Container {
	name := svc + "." + string(rune('0'+slot)) + ".t" + string(rune('0'+slot))
	c := source.Container{ID: "id-" + name, Name: name, State: "running", Networks: []source.Network{on(ovl, ip)},
		Task: &source.Task{ID: "t", Service: svc, Slot: slot, Node: "node-1"}}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func mesh(port, published int) func(*source.Container) {
	return func(c *source.Container) {
		c.Task.Mesh = []source.Port{{Port: port, Proto: TCP, Published: []source.Binding{bind("", published)}}}
	}
}

func engine(e string) func(*source.Container) { return func(c *source.Container) { c.Engine = e } }

// A service's tasks are backends per task: by the service's claim label,
// and by the service's name; a task marked for shutdown takes no new
// connections; explain names the task and its node.
func TestSwarmTasks(t *testing.T) {
	self := amb(nets(on(ovl, "10.1.0.2")))
	tasks := []source.Container{
		taskOf("redis", 1, "10.1.0.3", claims("cache")),
		taskOf("redis", 2, "10.1.0.4", claims("cache")),
		taskOf("redis", 3, "10.1.0.5", claims("cache"), state(source.StateStopping)),
	}
	for _, target := range []string{"cache", "redis"} {
		t.Run(target, func(t *testing.T) {
			res := Resolve([]Spec{mustParseRoute(t, "6379:"+target+":6379")}, snapshot(self, tasks...), Options{Claims: Claims{Routes: true}})
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			assert.Equal(t, []source.Backend{backend("10.1.0.3:6379", "id-redis.1.t1"), backend("10.1.0.4:6379", "id-redis.2.t2")}, rt.Backends)
			require.Len(t, rt.Candidates, 3)
			assert.Equal(t, "redis.1 on node-1", rt.Candidates[0].Task)
			assert.True(t, rt.Candidates[0].Chosen)
			assert.Equal(t, "not running (stopping)", rt.Candidates[2].Reason)
		})
	}
}

// An overlay's addresses are reached only from a container attached to
// it: an ambassador on the host, or on other networks, skips the tasks
// and says what to do.
func TestSwarmTaskOnAnOverlayTheAmbassadorIsNotOn(t *testing.T) {
	tk := taskOf("redis", 1, "10.1.0.3")
	for _, tt := range []struct {
		name string
		self *source.Container
	}{
		{"ambassador on the host", nil},
		{"ambassador on another network", amb()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := Resolve([]Spec{mustParseRoute(t, "6379:redis:6379")}, snapshot(tt.self, tk), Options{})
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			assert.Empty(t, rt.Backends)
			assert.Contains(t, rt.NoBackend, "redis.1.t1: ")
			assert.Contains(t, rt.NoBackend, "task of service redis on [ovl], networks the ambassador is not attached to: attach it to one (an attachable overlay: docker network connect)")
		})
	}
}

// A remote engine's swarm: tasks on an overlay the ambassador is attached
// to are reached there, per task; otherwise through the routing mesh at
// the engine's address, one backend for the service.
func TestSwarmTasksOfARemoteEngine(t *testing.T) {
	self := amb(claims("redis"), ports(tcp(6379)))
	opts := Options{Engines: testEngines}

	t.Run("routing mesh", func(t *testing.T) {
		res := Resolve(nil, snapshot(self,
			taskOf("cache", 1, "10.1.0.3", claims("redis"), engine("big"), mesh(6379, 16379)),
			taskOf("cache", 2, "10.1.0.4", claims("redis"), engine("big"), mesh(6379, 16379)),
		), opts)
		require.Len(t, res.Routes, 1)
		rt := res.Routes[0]
		assert.Equal(t, []source.Backend{backend("192.168.1.52:16379", "id-cache.1.t1")}, rt.Backends)
		require.Len(t, rt.Candidates, 3)
		assert.Contains(t, rt.Candidates[1].Reason, "engine big, through the routing mesh at 192.168.1.52:16379: no network shared with the task")
		assert.False(t, rt.Candidates[2].Chosen)
		assert.Equal(t, "reached through the routing mesh at 192.168.1.52:16379, as cache.1.t1 is: Swarm balances the tasks there", rt.Candidates[2].Reason)
	})
	t.Run("nothing published", func(t *testing.T) {
		res := Resolve(nil, snapshot(self, taskOf("cache", 1, "10.1.0.3", claims("redis"), engine("big"))), opts)
		rt := res.Routes[0]
		assert.Empty(t, rt.Backends)
		assert.Contains(t, rt.NoBackend, "shares no network with the ambassador and publishes nothing for port 6379 (attach the ambassador to one of its overlay networks [ovl], or publish the port: docker service update --publish-add 6379)")
	})
	t.Run("an overlay shared", func(t *testing.T) {
		self := amb(claims("redis"), ports(tcp(6379)), nets(on(ovl, "10.1.0.2")))
		res := Resolve(nil, snapshot(self,
			taskOf("cache", 1, "10.1.0.3", claims("redis"), engine("big"), mesh(6379, 16379)),
			taskOf("cache", 2, "10.1.0.4", claims("redis"), engine("big"), mesh(6379, 16379)),
		), opts)
		rt := res.Routes[0]
		assert.Equal(t, []source.Backend{backend("10.1.0.3:6379", "id-cache.1.t1"), backend("10.1.0.4:6379", "id-cache.2.t2")}, rt.Backends)
	})
}
