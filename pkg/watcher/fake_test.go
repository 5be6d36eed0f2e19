package watcher

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/require"
)

// fakeClient is a scripted Docker engine: a mutable container list, an
// inspect table, a switchable ping, and one event stream per Events call,
// which the test drives.
type fakeClient struct {
	mu sync.Mutex
	// The fields below are guarded by mu.
	containers []container.Summary
	inspect    map[string]container.InspectResponse
	pingErr    error         // returned by Ping and, when set, by ContainerList
	pingHang   bool          // Ping blocks until its context ends
	eventsHang bool          // Events blocks until its context ends
	listGate   chan struct{} // when set, ContainerList waits until it is closed
	calls      []call
	streams    []*fakeStream

	// A Swarm manager's view, when swarm is set: Ping says the engine is
	// a manager.
	swarm         bool
	noSwarmHeader bool  // pings say nothing of Swarm, as before API 1.42
	servicesErr   error // ServiceList's, as a socket proxy's refusal
	infoErr       error // Info's, as a socket proxy's refusal
	services      []swarm.Service
	tasks         []swarm.Task
	nodes         []swarm.Node

	version    *client.ServerVersionResult // what ServerVersion answers; nil: Docker 20.10.24
	versionErr error                       // when set, ServerVersion fails with it (a proxy that refuses /version)
}

// call records one API call and the fake clock's time when it was made.
type call struct {
	op      string // "ping", "events", "list", "inspect"
	at      time.Time
	since   string         // Events' Since
	filters client.Filters // Events' Filters
	arg     string         // inspect's ID
	list    client.ContainerListOptions
}

// fakeStream is one event stream. Sends on msgs block until the watcher's
// reader takes them, as the real client's do.
type fakeStream struct {
	ctx  context.Context
	msgs chan events.Message
	errs chan error
}

func newFake(containers ...container.Summary) *fakeClient {
	return &fakeClient{containers: containers, inspect: map[string]container.InspectResponse{}}
}

func (f *fakeClient) record(c call) {
	c.at = time.Now()
	f.calls = append(f.calls, c)
}

func (f *fakeClient) DaemonHost() string { return "unix:///var/run/docker.sock" }

func (f *fakeClient) Ping(ctx context.Context, _ client.PingOptions) (client.PingResult, error) {
	f.mu.Lock()
	f.record(call{op: "ping"})
	err, hang := f.pingErr, f.pingHang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return client.PingResult{}, ctx.Err()
	}
	res := client.PingResult{APIVersion: "1.41"}
	switch {
	case f.noSwarmHeader:
	case f.swarm:
		res.SwarmStatus = &client.SwarmStatus{NodeState: swarm.LocalNodeStateActive, ControlAvailable: true}
	default:
		res.SwarmStatus = &client.SwarmStatus{NodeState: swarm.LocalNodeStateInactive}
	}
	return res, err
}

func (f *fakeClient) ServiceList(context.Context, client.ServiceListOptions) (client.ServiceListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{op: "services"})
	return client.ServiceListResult{Items: slices.Clone(f.services)}, f.servicesErr
}

// TaskList honours the desired-state filter, as the engine does.
func (f *fakeClient) TaskList(_ context.Context, opts client.TaskListOptions) (client.TaskListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{op: "tasks", filters: opts.Filters})
	var out []swarm.Task
	for _, t := range f.tasks {
		if want := opts.Filters["desired-state"]; len(want) == 0 || want[string(t.DesiredState)] {
			out = append(out, t)
		}
	}
	return client.TaskListResult{Items: out}, nil
}

// Info reports the Swarm role when the fake's pings do not (noSwarmHeader).
func (f *fakeClient) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{op: "info"})
	if f.infoErr != nil {
		return client.SystemInfoResult{}, f.infoErr
	}
	var res client.SystemInfoResult
	if f.swarm {
		res.Info.Swarm = swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true}
	}
	return res, nil
}

func (f *fakeClient) NodeList(context.Context, client.NodeListOptions) (client.NodeListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{op: "nodes"})
	return client.NodeListResult{Items: slices.Clone(f.nodes)}, nil
}

// setSwarm makes the engine a manager with these services, tasks and
// nodes.
func (f *fakeClient) setSwarm(services []swarm.Service, tasks []swarm.Task, nodes []swarm.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.swarm, f.services, f.tasks, f.nodes = true, services, tasks, nodes
}

func (f *fakeClient) Events(ctx context.Context, opts client.EventsListOptions) client.EventsResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{op: "events", since: opts.Since, filters: opts.Filters})
	if f.eventsHang {
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
	}
	s := &fakeStream{ctx: ctx, msgs: make(chan events.Message), errs: make(chan error, 1)}
	f.streams = append(f.streams, s)
	return client.EventsResult{Messages: s.msgs, Err: s.errs}
}

func (f *fakeClient) ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error) {
	f.mu.Lock()
	f.record(call{op: "list", list: opts})
	gate := f.listGate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return client.ContainerListResult{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pingErr != nil {
		return client.ContainerListResult{}, f.pingErr
	}
	return client.ContainerListResult{Items: slices.Clone(f.containers)}, nil
}

func (f *fakeClient) ContainerInspect(_ context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{op: "inspect", arg: id})
	c, ok := f.inspect[id]
	if !ok {
		return client.ContainerInspectResult{}, fmt.Errorf("no such container: %s: %w", id, cerrdefs.ErrNotFound)
	}
	return client.ContainerInspectResult{Container: c}, nil
}

// set replaces the container list.
func (f *fakeClient) set(cs ...container.Summary) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers = cs
}

func (f *fakeClient) setPing(err error, hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pingErr, f.pingHang = err, hang
}

// setEventsHang makes the next subscriptions hang (Events blocks until its
// context ends, as through a proxy that black-holes /events), or answer.
func (f *fakeClient) setEventsHang(hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eventsHang = hang
}

// ops returns the operations called so far, in order.
func (f *fakeClient) ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ops []string
	for _, c := range f.calls {
		ops = append(ops, c.op)
	}
	return ops
}

func (f *fakeClient) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.op == op {
			n++
		}
	}
	return n
}

// callTimes returns when each call of op was made.
func (f *fakeClient) callTimes(op string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ts []time.Time
	for _, c := range f.calls {
		if c.op == op {
			ts = append(ts, c.at)
		}
	}
	return ts
}

// stream returns the newest event stream, which must still be open.
func (f *fakeClient) stream(t *testing.T) *fakeStream {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(t, f.streams, "no event stream")
	s := f.streams[len(f.streams)-1]
	require.NoError(t, s.ctx.Err(), "the newest event stream was cancelled")
	return s
}

// send delivers events on the newest stream, each once the reader took the
// previous one.
func (f *fakeClient) send(t *testing.T, ms ...events.Message) {
	t.Helper()
	s := f.stream(t)
	for _, m := range ms {
		s.msgs <- m
	}
}

// ctr builds a listed container.
func ctr(id, name string, opts ...func(*container.Summary)) container.Summary {
	s := container.Summary{
		ID:              id,
		Names:           []string{"/" + name},
		State:           container.StateRunning,
		Status:          "Up 5 minutes",
		NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{}},
	}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func withNet(name, id, ip string) func(*container.Summary) {
	return func(s *container.Summary) {
		ep := &network.EndpointSettings{NetworkID: id}
		if ip != "" {
			ep.IPAddress = netip.MustParseAddr(ip)
		}
		s.NetworkSettings.Networks[name] = ep
	}
}

func withLabels(kv ...string) func(*container.Summary) {
	return func(s *container.Summary) {
		s.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withStatus(state container.ContainerState, status string) func(*container.Summary) {
	return func(s *container.Summary) { s.State, s.Status = state, status }
}

func withPorts(ps ...container.PortSummary) func(*container.Summary) {
	return func(s *container.Summary) { s.Ports = ps }
}

// containerEvent and networkEvent build events as the engine sends them.
func containerEvent(action events.Action, id string, attrs map[string]string) events.Message {
	return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: id, Attributes: attrs}}
}

func networkEvent(action events.Action, networkID, containerID string) events.Message {
	return events.Message{Type: events.NetworkEventType, Action: action, Actor: events.Actor{
		ID: networkID, Attributes: map[string]string{"container": containerID, "name": "net", "type": "bridge"},
	}}
}

// id64 makes a 64-hex container ID from a short tag; tags of up to six
// characters give IDs that differ in their first 12 digits.
func id64(tag string) string {
	return (hex.EncodeToString([]byte(tag)) + strings.Repeat("0", 64))[:64]
}

func (f *fakeClient) ServerVersion(context.Context, client.ServerVersionOptions) (client.ServerVersionResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(call{op: "version"})
	if f.versionErr != nil {
		return client.ServerVersionResult{}, f.versionErr
	}
	if f.version != nil {
		return *f.version, nil
	}
	return client.ServerVersionResult{Version: "20.10.24", APIVersion: "1.41"}, nil
}
