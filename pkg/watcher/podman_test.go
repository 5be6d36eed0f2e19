package watcher

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// podmanVersion is what Podman 4.3.1's compat /version answers (trimmed).
var podmanVersion = client.ServerVersionResult{
	Platform:   client.PlatformInfo{Name: "linux/amd64/debian-12"},
	Version:    "4.3.1",
	APIVersion: "1.41",
	Components: []system.ComponentVersion{
		{Name: "Podman Engine", Version: "4.3.1"},
		{Name: "Conmon", Version: "conmon version 2.1.6"},
	},
}

// newPodman returns a fake engine that says it is Podman.
func newPodman(cs ...container.Summary) *fakeClient {
	f := newFake(cs...)
	f.version = &podmanVersion
	return f
}

func TestIdentifyEngine(t *testing.T) {
	for _, tt := range []struct {
		name string
		v    client.ServerVersionResult
		want string
	}{
		{"docker", client.ServerVersionResult{Version: "20.10.24", APIVersion: "1.41",
			Components: []system.ComponentVersion{{Name: "Engine", Version: "20.10.24"}, {Name: "containerd"}}}, "Docker 20.10.24 (API 1.41)"},
		{"podman", podmanVersion, "Podman 4.3.1 (API 1.41)"},
		{"podman without a component version", client.ServerVersionResult{Version: "5.0.0", APIVersion: "1.44",
			Components: []system.ComponentVersion{{Name: "Podman Engine"}}}, "Podman 5.0.0 (API 1.44)"},
		{"nothing said", client.ServerVersionResult{}, "Docker"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, identifyEngine(tt.v).String())
		})
	}
}

// The bug of issue 20: Podman records a death as "died", so a filter
// event=die matches none of its die events, and a stopped container was
// served for seconds. The filter asks for both names, and for Podman's
// "remove".
func TestEventFiltersAskForPodmansNames(t *testing.T) {
	got := eventFilters(true)
	for _, a := range []string{"die", "died", "destroy", "remove", "stop", "kill", "start", "health_status", "connect", "disconnect"} {
		assert.Contains(t, got["event"], a)
	}
	assert.Equal(t, map[string]bool{"container": true, "network": true}, got["type"], "Podman has no services or nodes")
	assert.Equal(t, map[string]bool{"container": true, "network": true, "service": true, "node": true}, eventFilters(false)["type"])
}

func TestPodmanSubscribesForDied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPodman(ctr(idRedis, "redis"))
		start(t, &Watcher{Client: f})
		synctest.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		var subscribed bool
		for _, c := range f.calls {
			if c.op == "events" {
				subscribed = true
				assert.True(t, c.filters["event"]["died"], "event filter %v", c.filters)
			}
		}
		assert.True(t, subscribed)
	})
}

// podman stop sends die (as "die" on the stream) and no kill: the die
// takes the container out at once; podman rm sends "remove", which does
// too.
func TestPodmanDieAndRemoveAreGoneAtOnce(t *testing.T) {
	for _, action := range []events.Action{events.ActionDie, actionRemove} {
		t.Run(string(action), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newPodman(ctr(idRedis, "redis", withNet("app", "app", "10.88.0.3")), ctr(idWeb, "web"))
				w := &Watcher{Client: f}
				start(t, w)
				u := take(t, w)
				assert.Equal(t, "Podman 4.3.1 (API 1.41)", u.Engine)
				lists := f.count("list")
				t0 := time.Now()

				f.send(t, containerEvent(action, idRedis, map[string]string{"containerExitCode": "0", "podId": ""}))
				u = take(t, w)
				assert.Equal(t, t0, time.Now(), "the fast path does not wait")
				assert.Equal(t, lists, f.count("list"), "the fast path does not list")
				assert.Equal(t, []string{"web"}, names(u.Snapshot))
				assert.Equal(t, []string{idRedis}, u.Gone)
			})
		})
	}
}

// Podman's listing without all=true leaves paused and stopping containers
// out, and its status filter refuses "stopping": the watcher lists every
// container and keeps those whose process exists. A stopping one (podman
// stop's drain, which no event announces) is StateStopping: no new
// connections, and not gone, so its established ones are kept.
func TestPodmanListsPausedAndStoppingContainers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPodman(
			ctr(idRedis, "redis"),
			ctr(idWeb, "web"),
			ctr(id64("paused"), "paused", withStatus(container.StatePaused, "Up 1 minute (Paused)")),
			ctr(id64("exited"), "exited", withStatus(container.StateExited, "Exited (0) 1 minute ago")),
			ctr(id64("new"), "new", withStatus(container.StateCreated, "Created")),
		)
		w := &Watcher{Client: f}
		start(t, w)
		u := take(t, w)
		assert.Equal(t, []string{"paused", "redis", "web"}, names(u.Snapshot))
		f.mu.Lock()
		for _, c := range f.calls {
			if c.op == "list" {
				assert.Equal(t, client.ContainerListOptions{All: true}, c.list)
			}
		}
		f.mu.Unlock()

		// podman stop: web drains; a re-list (another container's
		// event) finds it stopping.
		time.Sleep(w.quiet())
		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web", withStatus("stopping", "Stopping")),
			ctr(id64("paused"), "paused", withStatus(container.StatePaused, "Up 1 minute (Paused)")))
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		u = take(t, w)
		assert.Equal(t, []string{"paused", "redis", "web"}, names(u.Snapshot))
		assert.Equal(t, source.StateStopping, u.Snapshot.Containers[2].State)
		assert.Empty(t, u.Gone, "a stopping container keeps its connections")

		// Docker's listing is left as it was: no options.
		d := newFake(ctr(idRedis, "redis"))
		start(t, &Watcher{Client: d})
		synctest.Wait()
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, c := range d.calls {
			if c.op == "list" {
				assert.Equal(t, client.ContainerListOptions{}, c.list)
			}
		}
	})
}

// Podman's listing has no health in its Status: the watcher inspects the
// containers that have a healthcheck at every listing, and the others
// once.
func TestPodmanHealthIsInspected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPodman(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		health := func(s container.HealthStatus) container.InspectResponse {
			return container.InspectResponse{
				ID:     idRedis,
				Config: &container.Config{Healthcheck: &container.HealthConfig{Test: []string{"CMD", "true"}}},
				State:  &container.State{Running: true, Health: &container.Health{Status: s}},
			}
		}
		f.inspect[idRedis] = health(container.Starting)
		f.inspect[idWeb] = container.InspectResponse{ID: idWeb, Config: &container.Config{}, State: &container.State{Running: true}}
		w := &Watcher{Client: f}
		start(t, w)
		u := take(t, w)
		assert.Equal(t, "starting", u.Snapshot.Containers[0].Health)
		assert.Empty(t, u.Snapshot.Containers[1].Health)

		// Podman sends health_status on every probe, with no status in
		// it: each leads to a listing, which inspects redis alone.
		f.mu.Lock()
		f.inspect[idRedis] = health(container.Healthy)
		f.mu.Unlock()
		f.send(t, containerEvent(events.ActionHealthStatus, idRedis, nil))
		time.Sleep(w.quiet())
		u = take(t, w)
		assert.Equal(t, "healthy", u.Snapshot.Containers[0].Health)
		time.Sleep(w.quiet())
		none(t, w)

		// Another probe with the same outcome publishes nothing.
		f.send(t, containerEvent(events.ActionHealthStatus, idRedis, nil))
		time.Sleep(w.quiet())
		none(t, w)

		f.mu.Lock()
		f.inspect[idRedis] = health(container.Unhealthy)
		f.mu.Unlock()
		f.send(t, containerEvent(events.ActionHealthStatus, idRedis, nil))
		time.Sleep(w.quiet())
		u = take(t, w)
		assert.Equal(t, "unhealthy", u.Snapshot.Containers[0].Health)

		lists := f.count("list")
		f.mu.Lock()
		defer f.mu.Unlock()
		var redis, web int
		for _, c := range f.calls {
			switch {
			case c.op == "inspect" && c.arg == idRedis:
				redis++
			case c.op == "inspect" && c.arg == idWeb:
				web++
			}
		}
		assert.Equal(t, 1, web, "a container without a healthcheck is inspected once")
		assert.Equal(t, lists, redis, "one inspect of redis per listing")
	})
}

// Podman's network events name the container as their actor and say
// nothing of the network: no fast path, but a re-list at once.
func TestPodmanDisconnectRelistsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPodman(ctr(idRedis, "redis", withNet("app", "app", "10.88.0.3")))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)
		time.Sleep(w.quiet()) // nothing listed since: the next event re-lists at once
		t0 := time.Now()

		f.set(ctr(idRedis, "redis"))
		f.send(t, events.Message{Type: events.NetworkEventType, Action: events.ActionDisconnect, Actor: events.Actor{
			ID: idRedis, Attributes: map[string]string{"containerExitCode": "0", "image": "", "name": "redis", "podId": ""},
		}})
		u := take(t, w)
		assert.Equal(t, t0, time.Now(), "the re-list does not wait")
		assert.Nil(t, u.Snapshot.Containers[0].Networks)
		assert.Equal(t, []string{idRedis}, u.Gone)
	})
}

// An engine (or a proxy in front of it) that refuses /version is taken
// for Docker: the session goes on, and the update says "Docker".
func TestEngineVersionRefusedIsDocker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		f.versionErr = errors.New("Error response from daemon: 403 Forbidden")
		w := &Watcher{Client: f}
		start(t, w)
		u := take(t, w)
		assert.True(t, u.Connected)
		assert.Equal(t, "Docker", u.Engine)
		assert.Equal(t, []string{"redis"}, names(u.Snapshot))
	})
}
