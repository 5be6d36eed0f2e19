package watcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// This file follows the services of an engine that is a Swarm manager. A
// running task becomes an entry of the snapshot like a container's, with
// its service's labels and its attachments to the service's networks
// (source.Container.Task set), so that the resolver balances, gates and
// pins per task as it does per container. The engine's event stream has no
// task events: service and node events, and the events of the task
// containers on the watched node, lead to a re-list, and while tasks are
// in transition (starting, or marked for shutdown while they still run)
// the watcher lists again every swarmPoll until they settle.

// swarmPoll is how often a manager is listed while tasks are in
// transition: the bound on how late a task that started on another node,
// which no event of the watched engine announces, is seen.
const swarmPoll = 50 * time.Millisecond

// swarmPollFor bounds the polling after the last change a listing saw: a
// task that stays pending (no node fits it) would keep it going for ever.
// The periodic resync follows it from then on.
const swarmPollFor = 30 * time.Second

// The label the engine puts on a task's container with the task's ID.
const labelTaskID = "com.docker.swarm.task.id"

// swarmHint reports whether cs shows its engine in a swarm: a container
// runs a task.
func swarmHint(cs []source.Container) bool {
	return slices.ContainsFunc(cs, func(c source.Container) bool { return c.Labels[labelTaskID] != "" })
}

// swarmRole is what a ping's Swarm header says of an engine.
type swarmRole int

const (
	swarmNone    swarmRole = iota // not in a swarm, or the header was absent
	swarmWorker                   // a worker: services are a manager's to list
	swarmManager                  // a manager: services and tasks are listed
)

// roleOf reads a ping's Swarm header. Engines of API 1.40 and later send
// it, so every engine this watcher supports does.
func roleOf(res client.PingResult) swarmRole {
	s := res.SwarmStatus
	switch {
	case s == nil || s.NodeState != swarm.LocalNodeStateActive:
		return swarmNone
	case s.ControlAvailable:
		return swarmManager
	}
	return swarmWorker
}

// noteRole records the engine's Swarm role from a ping and logs a change.
// An engine whose ping has no Swarm header (before API 1.42) is asked by
// infoRole instead.
func (l *loop) noteRole(res client.PingResult) {
	if res.SwarmStatus == nil {
		l.roleByInfo = true
		return
	}
	l.roleByInfo = false
	l.setRole(roleOf(res))
}

// infoRole asks the engine for its Swarm role when its pings do not say
// (before API 1.42) and it gives a hint of Swarm (swarmHint): once a
// session, at its first listing that has the hint, and at every resync
// while it has it or is a manager, since joining or leaving a swarm makes
// no event. /info is asked for nothing else, and not at all of an engine
// without Swarm tasks: the socket proxy of deploy/ refuses it. An engine
// that refuses it is not asked again, and says so once; another error
// leaves the role as it was.
func (l *loop) infoRole(ctx context.Context) {
	if !l.roleByInfo || l.infoDenied {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := l.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		if cerrdefs.IsPermissionDenied(err) || cerrdefs.IsUnauthorized(err) {
			l.infoDenied = true
			l.log.Warn("the engine runs Swarm tasks, but refuses /info (a socket proxy?): its Swarm services are not followed; allow GET /info, /services, /tasks and /nodes to follow them", errField(err))
			return
		}
		l.log.Debug("engine info failed; Swarm role unchanged", errField(err))
		return
	}
	sw := res.Info.Swarm
	l.setRole(roleOf(client.PingResult{SwarmStatus: &client.SwarmStatus{NodeState: sw.LocalNodeState, ControlAvailable: sw.ControlAvailable}}))
}

func (l *loop) setRole(role swarmRole) {
	if role == l.role {
		return
	}
	l.role = role
	switch role {
	case swarmManager:
		l.log.Info("engine is a Swarm manager: following its services and tasks")
	case swarmWorker:
		l.log.Info("engine is a Swarm worker: its services are followed only through a manager (--engine)")
	default:
		l.log.Info("engine left Swarm mode, or is not in it")
	}
}

// swarmListing is what a manager lists of its services, tasks and nodes.
type swarmListing struct {
	services []swarm.Service
	tasks    []swarm.Task
	nodes    []swarm.Node
	err      error
}

// fetchSwarm lists a manager's services, tasks and nodes, the three at
// once, while the caller lists the containers: a listing takes as long as
// the slowest call, not their sum (on a busy engine, 100 ms against 30).
// The channel has room for the result: the goroutines end whether or not
// it is read.
func (l *loop) fetchSwarm(ctx context.Context) <-chan swarmListing {
	out := make(chan swarmListing, 1)
	var services, tasks, nodes = make(chan error, 1), make(chan error, 1), make(chan error, 1)
	var res swarmListing
	go func() {
		r, err := l.cli.ServiceList(ctx, client.ServiceListOptions{})
		res.services = r.Items
		services <- wrap("list services", err)
	}()
	go func() {
		// Tasks meant to run, and those marked for shutdown, which may
		// still run (stopping): the history of ended ones is left out.
		r, err := l.cli.TaskList(ctx, client.TaskListOptions{
			Filters: make(client.Filters).Add("desired-state", string(swarm.TaskStateRunning), string(swarm.TaskStateShutdown)),
		})
		res.tasks = r.Items
		tasks <- wrap("list tasks", err)
	}()
	go func() {
		r, err := l.cli.NodeList(ctx, client.NodeListOptions{})
		res.nodes = r.Items
		nodes <- wrap("list nodes", err)
	}()
	go func() {
		// Each channel's receive orders its goroutine's write to res
		// before the send below.
		res.err = errors.Join(<-services, <-tasks, <-nodes)
		out <- res
	}()
	return out
}

// wrap prefixes a non-nil err with what failed.
func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// convertTasks returns cs, the containers the engine lists, with an entry
// for every running task of services in place of the task's container when
// the engine runs it, sorted as convertContainers sorts, and whether tasks
// are in transition.
//
// A task counts while it runs and is meant to (state and desired state
// running), marked stopping once Swarm means to shut it down (desired
// state shutdown) until it stops. The container of a task that the watched
// node runs is the fresher truth: running there while the manager still
// reports the task starting, it counts (with its health), as a container
// does from its start event on. Tasks of a node that is down are left out.
func convertTasks(services []swarm.Service, tasks []swarm.Task, nodes []swarm.Node, cs []source.Container, engine string) ([]source.Container, bool) {
	byService := make(map[string]*swarm.Service, len(services))
	busy := false
	for i := range services {
		s := &services[i]
		byService[s.ID] = s
		if u := s.UpdateStatus; u != nil && (u.State == swarm.UpdateStateUpdating || u.State == swarm.UpdateStateRollbackStarted) {
			busy = true
		}
	}
	byNode := make(map[string]*swarm.Node, len(nodes))
	for i := range nodes {
		byNode[nodes[i].ID] = &nodes[i]
	}
	// The watched node's task containers, by task ID: the label says it
	// before the manager hears the container's ID from the node.
	local := make(map[string][]int)
	for i, c := range cs {
		if id := c.Labels[labelTaskID]; id != "" {
			local[id] = append(local[id], i)
		}
	}

	replaced := make(map[string]bool)
	var entries []source.Container
	for i := range tasks {
		t := &tasks[i]
		svc := byService[t.ServiceID]
		if svc == nil {
			continue
		}
		id := ""
		if t.Status.ContainerStatus != nil {
			id = t.Status.ContainerStatus.ContainerID
		}
		ctr := (*source.Container)(nil)
		// A container of this node that bears the task's label, unless
		// the manager knows the task's container to be another: any
		// container can bear any label.
		if ids := local[t.ID]; len(ids) == 1 && (id == "" || id == cs[ids[0]].ID) {
			ctr = &cs[ids[0]]
		} else if id != "" {
			// Several bear it: the one the manager knows, if any.
			for _, j := range ids {
				if cs[j].ID == id {
					ctr = &cs[j]
				}
			}
		}
		if ctr != nil {
			id = ctr.ID
			replaced[id] = true
		}
		running := t.Status.State == swarm.TaskStateRunning
		if ctr != nil {
			// The node that runs it knows better than the manager,
			// which hears of it later.
			running = ctr.State == "running" || ctr.State == "paused"
		}
		if meant := t.DesiredState == swarm.TaskStateRunning; meant != running {
			busy = true // starting, or marked for shutdown and still running
		}
		if !running {
			continue
		}
		if id == "" {
			// Running, says the manager, without its container's ID
			// yet: the entry waits for it, as its ID must not change
			// (a backend's new ID is another backend).
			busy = true
			continue
		}
		node := byNode[t.NodeID]
		if node != nil && node.Status.State == swarm.NodeStateDown {
			continue
		}
		entries = append(entries, taskEntry(svc, t, node, ctr, id, engine))
	}
	if len(entries) == 0 && len(replaced) == 0 {
		return cs, busy
	}
	out := make([]source.Container, 0, len(cs)+len(entries))
	for _, c := range cs {
		if !replaced[c.ID] {
			out = append(out, c)
		}
	}
	out = append(out, entries...)
	slices.SortFunc(out, func(a, b source.Container) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out, busy
}

// taskEntry makes the entry of a running task t of svc on node (nil when
// the manager does not know it): ctr is its container when the watched
// engine runs it, id its container's ID.
func taskEntry(svc *swarm.Service, t *swarm.Task, node *swarm.Node, ctr *source.Container, id, engine string) source.Container {
	var labels map[string]string
	if ctr != nil && len(ctr.Labels) > 0 {
		labels = maps.Clone(ctr.Labels)
	}
	if len(svc.Spec.Labels) > 0 {
		if labels == nil {
			labels = make(map[string]string, len(svc.Spec.Labels))
		}
		// The service's labels are what its owner sets for the
		// ambassador; they win over its containers'.
		maps.Copy(labels, svc.Spec.Labels)
	}
	nodeName, nodeAddr := t.NodeID, ""
	if node != nil {
		nodeName = cmp.Or(node.Description.Hostname, node.ID)
		nodeAddr = node.Status.Addr
	}
	slot := strconv.Itoa(t.Slot)
	if t.Slot == 0 {
		slot = t.NodeID // a global service's task, as Docker names its container
	}
	e := source.Container{
		ID:     id,
		Name:   svc.Spec.Name + "." + slot + "." + t.ID,
		Labels: labels,
		State:  "running",
		Engine: engine,
		Task: &source.Task{
			ID:      t.ID,
			Service: svc.Spec.Name,
			Slot:    t.Slot,
			Node:    nodeName,
			Mesh:    meshPorts(svc.Endpoint.Ports),
		},
		Networks: taskNetworks(t.NetworksAttachments),
		Ports:    hostModePorts(t.Status.PortStatus.Ports, nodeAddr),
	}
	if ctr != nil {
		e.Health = ctr.Health
		if ctr.State == "paused" {
			e.State = "paused"
		}
	}
	if t.DesiredState != swarm.TaskStateRunning {
		e.State = source.StateStopping
	}
	return e
}

// taskNetworks returns a task's attachments sorted by name, the routing
// mesh's ingress network left out: no ambassador can join it.
func taskNetworks(as []swarm.NetworkAttachment) []source.Network {
	var out []source.Network
	for _, a := range as {
		if a.Network.Spec.Ingress {
			continue
		}
		ip := ""
		for _, p := range a.Addresses {
			if addr := p.Addr().Unmap(); addr.Is4() {
				ip = addr.String()
				break
			}
		}
		out = append(out, source.Network{
			Name:    a.Network.Spec.Name,
			ID:      a.Network.ID,
			IP:      ip,
			Overlay: a.Network.Spec.Scope == "swarm" || a.Network.Spec.DriverConfiguration == nil || a.Network.Spec.DriverConfiguration.Name == "overlay",
		})
	}
	slices.SortFunc(out, func(a, b source.Network) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// meshPorts returns the ports a service publishes through the routing
// mesh, sorted, each on every node's address (HostIP "").
func meshPorts(ps []swarm.PortConfig) []source.Port {
	return publishedPorts(ps, swarm.PortConfigPublishModeIngress, "")
}

// hostModePorts returns the ports a task publishes in host mode, on its
// node's address (the node's only; "" when unknown, every address).
func hostModePorts(ps []swarm.PortConfig, nodeAddr string) []source.Port {
	return publishedPorts(ps, swarm.PortConfigPublishModeHost, nodeAddr)
}

func publishedPorts(ps []swarm.PortConfig, mode swarm.PortConfigPublishMode, hostIP string) []source.Port {
	var out []source.Port
	for _, p := range ps {
		if p.PublishMode != mode || p.PublishedPort == 0 || p.TargetPort == 0 || p.TargetPort > 65535 || p.PublishedPort > 65535 {
			continue
		}
		proto := cmp.Or(string(p.Protocol), "tcp")
		b := source.Binding{HostIP: hostIP, HostPort: int(p.PublishedPort)}
		if i := slices.IndexFunc(out, func(q source.Port) bool { return q.Port == int(p.TargetPort) && q.Proto == proto }); i >= 0 {
			out[i].Published = append(out[i].Published, b)
			continue
		}
		out = append(out, source.Port{Port: int(p.TargetPort), Proto: proto, Published: []source.Binding{b}})
	}
	slices.SortFunc(out, func(a, b source.Port) int { return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto)) })
	return out
}

// pollSwarm returns when to list again after a listing of a manager that
// found cs, with tasks in transition if busy: in swarmPoll while they are,
// for up to swarmPollFor after the last change; else the zero time.
func (l *loop) pollSwarm(busy bool, cs []source.Container) time.Time {
	now := time.Now()
	switch {
	case !busy:
		l.busySince = time.Time{}
		return time.Time{}
	case l.busySince.IsZero() || l.snap == nil || !reflect.DeepEqual(l.snap.Containers, cs):
		l.busySince = now
	case now.Sub(l.busySince) >= swarmPollFor:
		return time.Time{}
	}
	return now.Add(swarmPoll)
}

// swarmFailed reports whether a manager's Swarm listing failed, and logs a
// new failure once: the containers are served without the tasks until a
// listing succeeds, rather than the engine counted as lost.
func (l *loop) swarmFailed(err error) bool {
	if err == nil {
		if l.swarmErr != "" {
			l.log.Info("Swarm services listed again")
			l.swarmErr = ""
		}
		return false
	}
	if msg := err.Error(); msg != l.swarmErr {
		l.swarmErr = msg
		l.log.Warn("engine is a Swarm manager, but its services cannot be listed: serving its containers without them "+
			"(a socket proxy must allow GET /services, /tasks, /nodes and /info)", errField(err))
	}
	return true
}
