package watcher

import (
	"context"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// This file holds what the watcher does differently for Podman, whose
// `podman system service` answers the Docker Engine API with gaps
// (measured on Podman 4.3.1, API 1.41; docs/podman.md lists them all):
//
//   - A container's death is "died" inside Podman: an event filter
//     event=die matches nothing, though the stream then reports the event
//     as "die". The filter asks for both.
//   - Removal is "remove", not "destroy"; podman stop sends no kill
//     event, and no stop either (restart does): die is all there is.
//   - A listing without all=true leaves paused containers out, which
//     would make a pause look like a death, and stopping ones (podman
//     stop's drain, which no event announces), which would cut their
//     established connections; its status filter refuses "stopping". The
//     watcher lists every container and keeps those whose process exists.
//   - The listing's Status carries no health, and health_status events
//     carry none either, and come on every probe rather than on a change:
//     the health of a container with a healthcheck is read by inspecting
//     it at every listing.
//   - Network events name the container as their actor, with neither the
//     network's ID nor the container in their attributes: they cannot
//     take the disconnect fast path, and lead to a re-list at once.

// Engine kinds, as [source.Update].Engine starts with them.
const (
	kindDocker = "Docker"
	kindPodman = "Podman"
)

// Podman's names of event actions that Docker names otherwise.
const (
	// actionRemove is Podman's destroy.
	actionRemove events.Action = "remove"
	// podmanDied is what an event filter must say to match Podman's die
	// events, which its stream reports as "die".
	podmanDied = "died"
)

// engineInfo is what the engine says it is.
type engineInfo struct {
	kind    string // kindDocker or kindPodman; "" until known
	version string // the engine's version
	api     string // the API version the client speaks to it
}

// String describes the engine for logs and the status: "Podman 4.3.1
// (API 1.41)", the API being the highest the engine speaks; "" while
// unknown.
func (e engineInfo) String() string {
	if e.kind == "" {
		return ""
	}
	s := e.kind
	if e.version != "" {
		s += " " + e.version
	}
	if e.api != "" {
		s += " (API " + e.api + ")"
	}
	return s
}

// podman reports whether the engine is Podman.
func (e engineInfo) podman() bool { return e.kind == kindPodman }

// identifyEngine tells Podman from Docker by the components /version
// lists: Podman's compat API names "Podman Engine", Docker's "Engine".
// The version strings are the engine's to set: they are clipped where
// they are logged or shown.
func identifyEngine(v client.ServerVersionResult) engineInfo {
	e := engineInfo{kind: kindDocker, version: clip(v.Version), api: clip(v.APIVersion)}
	for _, c := range v.Components {
		if strings.HasPrefix(c.Name, "Podman") {
			e.kind = kindPodman
			if c.Version != "" {
				e.version = clip(c.Version)
			}
		}
	}
	return e
}

// identify asks the engine what it is, once per session (an engine may be
// replaced by another on the same socket). The session's first update
// carries it, and the log line that says the watcher is connected.
// An engine that does not answer /version is taken for Docker: the
// session's listing says soon enough whether it answers at all.
func (l *loop) identify(ctx context.Context) {
	// The ping's timeout: an engine that just answered a ping answers
	// this as fast, and the session's listing waits for it.
	ctx, cancel := context.WithTimeout(ctx, l.w.pingTimeout())
	defer cancel()
	v, err := l.cli.ServerVersion(ctx, client.ServerVersionOptions{})
	e := identifyEngine(v)
	if err != nil {
		l.log.Debug("engine version unknown; taking it for Docker", errField(err))
		e = engineInfo{kind: kindDocker}
	}
	if e == l.engine {
		return
	}
	if l.engine.kind != "" {
		// The same socket, another engine: the next update says so.
		l.log.Info("engine changed", zap.String("engine", e.String()), zap.String("was", l.engine.String()))
		l.stale = true
	}
	l.engine = e
	if e.podman() {
		l.log.Info("the engine is Podman: its die, remove and health events, paused containers and health are read the Podman way",
			zap.String("engine", e.String()))
	}
}

// eventFilters asks the engine for the events that can change a snapshot,
// sparing the stream the frequent ones that cannot (exec_* from every
// healthcheck run, attach, resize, top, ...). The loop filters again:
// filters are a courtesy of the engine, not a guarantee. Podman's names
// of die and destroy are asked for too; Docker matches no event by them.
// Docker's Swarm services and nodes are asked for too, but of Docker
// alone: Podman has neither.
func eventFilters(podman bool) client.Filters {
	types := []string{string(events.ContainerEventType), string(events.NetworkEventType)}
	if !podman {
		types = append(types, string(events.ServiceEventType), string(events.NodeEventType))
	}
	return make(client.Filters).
		Add("type", types...).
		Add("event",
			string(events.ActionStart), string(events.ActionRestart),
			string(events.ActionPause), string(events.ActionUnPause),
			string(events.ActionRename), string(events.ActionKill),
			string(events.ActionDie), podmanDied, string(events.ActionStop),
			string(events.ActionDestroy), string(actionRemove),
			// A filter without the colon matches every health_status
			// action by prefix.
			string(events.ActionHealthStatus),
			string(events.ActionConnect), string(events.ActionDisconnect),
			// A Swarm manager's services and nodes (a node drained,
			// down, or back): their tasks are listed again. (Podman's
			// remove is asked for above.)
			string(events.ActionCreate), string(events.ActionUpdate),
		)
}

// listOptions lists what the engine runs: without all=true, Docker lists
// every container whose process exists, paused, restarting and stopping
// ones included. Podman then lists running ones alone, and its status
// filter refuses "stopping" (and "restarting"): on Podman the watcher
// lists them all, and podmanAlive keeps those whose process exists.
func (l *loop) listOptions() client.ContainerListOptions {
	if !l.engine.podman() {
		return client.ContainerListOptions{}
	}
	return client.ContainerListOptions{All: true}
}

// podmanAlive keeps, of a Podman listing of every container, those whose
// process exists: running, paused, and stopping. Podman's "stopping" is a
// container podman stop has sent its stop signal, draining until it dies
// (Podman sends no event for it): its state is source.StateStopping, so it
// gets no new connections and keeps its established ones.
func podmanAlive(items []container.Summary) []container.Summary {
	out := items[:0:0]
	for _, s := range items {
		switch s.State {
		case container.StateRunning, container.StatePaused, source.StateStopping:
			out = append(out, s)
		}
	}
	return out
}

// podmanHealth fills in the health of the listed containers that have a
// healthcheck, which Podman's listing does not give, by inspecting them.
// Whether a container has one is learnt by inspecting it once; the
// containers known to have none are remembered (by ID, forgotten when
// they are no longer listed), so a listing costs one inspect per
// container with a healthcheck. A container that vanished between the
// listing and the inspect keeps no health: the next event re-lists.
func (l *loop) podmanHealth(ctx context.Context, cs []source.Container) error {
	listed := make(map[string]bool, len(cs))
	for i := range cs {
		c := &cs[i]
		listed[c.ID] = true
		if l.noHealthcheck[c.ID] || c.Health != "" {
			continue
		}
		ins, err := l.cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("inspect container %s for its health: %w", c.ID, err)
		}
		st := ins.Container.State
		if st == nil || st.Health == nil || st.Health.Status == "" || st.Health.Status == container.NoHealthcheck {
			if ins.Container.Config == nil || ins.Container.Config.Healthcheck == nil || len(ins.Container.Config.Healthcheck.Test) == 0 ||
				ins.Container.Config.Healthcheck.Test[0] == "NONE" {
				l.noHealthcheck[c.ID] = true
			}
			continue
		}
		switch st.Health.Status {
		case container.Starting, container.Healthy, container.Unhealthy:
			c.Health = string(st.Health.Status)
		}
	}
	for id := range l.noHealthcheck {
		if !listed[id] {
			delete(l.noHealthcheck, id)
		}
	}
	return nil
}
