package main

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// loopbackContainer is a fake container whose "IP" is 127.0.0.1 and whose
// service is a loopback listener (its ambassador.port, which counts for
// claimers); the ambassador runs outside any container (Self nil), so every
// network counts as shared.
func loopbackContainer(name string, port int, labels map[string]string) source.Container {
	if labels == nil {
		labels = map[string]string{}
	}
	labels[resolver.LabelPort] = strconv.Itoa(port)
	return source.Container{
		ID: "id-" + name, Name: name, State: "running", Labels: labels,
		Networks: []source.Network{{Name: "app", ID: "n-app", IP: "127.0.0.1"}},
	}
}

// newTestDynamic returns the daemon's run loop, fed by the test instead of
// a watcher, with its route table and metrics: listening on loopback, no
// --backend-wait, plus args. Claims count on its explicit routes, from the
// loopback containers' network app: these tests are about what claims do
// to a route (TestClaimsInvited is about where they count).
func newTestDynamic(t *testing.T, args ...string) (*dynamic, *routeTable, *metrics) {
	t.Helper()
	cfg, err := parseConfig(append([]string{"--docker=off", "--listen-address=127.0.0.1", "--backend-wait=0",
		"--claims=label,routes", "--network=app"}, args...), env())
	require.NoError(t, err)
	specs, _, err := cfg.specs(nil)
	require.NoError(t, err)
	m := newMetrics("dev", "")
	table := newRouteTable(cfg, zaptest.NewLogger(t), m)
	t.Cleanup(table.shutdown)
	return newDynamic(cfg, zaptest.NewLogger(t), table, m, specs, true), table, m
}

func TestDynamicRewire(t *testing.T) {
	oldAddr := greeter(t, "old")
	newAddr := greeter(t, "new")
	// A backend that holds its connection open, to check what happens to
	// established connections.
	held := make(chan net.Conn, 1)
	holdLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { holdLn.Close() })
	go func() {
		c, err := holdLn.Accept()
		if err == nil {
			held <- c
		}
	}()

	listen := freePort(t)
	d, table, _ := newTestDynamic(t, "--route", strconv.Itoa(listen)+":redis:"+portOf(t, oldAddr))
	addr := "127.0.0.1:" + strconv.Itoa(listen)
	ctx := context.Background()

	claim := map[string]string{resolver.LabelTarget: "redis"}
	snap := func(cs ...source.Container) source.Update {
		return source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: cs}}
	}

	// The container named redis serves the target.
	d.update(ctx, snap(loopbackContainer("redis", portOf2(t, oldAddr), nil)))
	assert.Equal(t, "old", read(t, addr))

	// A claimer takes over: new connections move at once.
	d.update(ctx, snap(loopbackContainer("redis", portOf2(t, oldAddr), nil), loopbackContainer("redis2", portOf2(t, newAddr), claim)))
	assert.Equal(t, "new", read(t, addr))

	// A higher-priority claimer whose connections are held open; then it
	// goes away: its established connection is closed at once.
	prio := map[string]string{resolver.LabelTarget: "redis", resolver.LabelPriority: "10"}
	holder := loopbackContainer("holder", holdLn.Addr().(*net.TCPAddr).Port, prio)
	d.update(ctx, snap(loopbackContainer("redis2", portOf2(t, newAddr), claim), holder))
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	backendSide := <-held
	defer backendSide.Close()
	// A byte from the holder proves the proxy has established the
	// connection: until it has, forgetting the holder retries the connect
	// on the fallback, which is right but not what this checks.
	_, err = backendSide.Write([]byte("h"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)

	d.update(ctx, source.Update{Connected: true, Gone: []string{holder.ID},
		Snapshot: &source.Snapshot{Containers: []source.Container{loopbackContainer("redis2", portOf2(t, newAddr), claim)}}})
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Read(make([]byte, 1))
	assert.Error(t, err, "the connection to the gone backend was closed")
	assert.Equal(t, "new", read(t, addr), "new connections go to the remaining claimer")

	// Identical snapshots leave the route alone.
	before := table.routes[listen].proxy.Backends()
	d.update(ctx, snap(loopbackContainer("redis2", portOf2(t, newAddr), claim)))
	assert.Equal(t, before, table.routes[listen].proxy.Backends())
}

func portOf2(t *testing.T, addr string) int {
	t.Helper()
	p, err := strconv.Atoi(portOf(t, addr))
	require.NoError(t, err)
	return p
}

func TestDockerEngineMode(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		env        func(string) string
		wantFollow bool
		wantHost   string
	}{
		{args: []string{"--docker=off"}, env: env("DOCKER_HOST", "unix:///x.sock"), wantFollow: false},
		{args: []string{"--docker=on"}, env: env(), wantFollow: true},
		{args: []string{"--docker-host=tcp://127.0.0.1:2375"}, env: env(), wantFollow: true, wantHost: "tcp://127.0.0.1:2375"},
		{args: nil, env: env("DOCKER_HOST", "unix:///x.sock"), wantFollow: true},
	} {
		cfg, err := parseConfig(tt.args, tt.env)
		require.NoError(t, err)
		host, follow := cfg.dockerEngine(tt.env)
		assert.Equal(t, tt.wantFollow, follow, "%v", tt.args)
		assert.Equal(t, tt.wantHost, host, "%v", tt.args)
	}
}

// TestRefusedRewireChangesNothing: a rewire to a target with no usable
// backend is refused (409) without touching the route, not even for a
// moment: its backends are never replaced, so no rewire is counted.
func TestRefusedRewireChangesNothing(t *testing.T) {
	addrA := greeter(t, "a")
	listen := freePort(t)
	d, table, m := newTestDynamic(t, "--route", strconv.Itoa(listen)+":redis:"+portOf(t, addrA))
	ctx := context.Background()
	d.update(ctx, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{
		loopbackContainer("redis", portOf2(t, addrA), nil),
	}}})
	route := strconv.Itoa(listen)
	backends := table.routes[listen].proxy.Backends()
	require.NotEmpty(t, backends)
	rewires := metricValue(t, gatherMetrics(m), "ambassadord_rewires_total", seriesLabels{"route": route})

	reply := d.rewire(ctx, rewireRequest{Key: route, Target: "nobody"})
	assert.Equal(t, 409, reply.status, reply.Error)
	assert.Contains(t, reply.Error, "nothing changed")
	assert.Equal(t, backends, table.routes[listen].proxy.Backends())
	assert.Empty(t, d.overrides)
	assert.Equal(t, rewires, metricValue(t, gatherMetrics(m), "ambassadord_rewires_total", seriesLabels{"route": route}))
	assert.Equal(t, "a", read(t, "127.0.0.1:"+route))

	// With --force it is applied.
	reply = d.rewire(ctx, rewireRequest{Key: route, Target: "nobody", Force: true})
	assert.Empty(t, reply.Error)
	assert.Empty(t, table.routes[listen].proxy.Backends())
}

// TestRewireSurvivesEngineReconnect: a rewire by hand lives in the run
// loop, not in the watcher: an outage of the engine and the full resync
// after it leave it in force.
func TestRewireSurvivesEngineReconnect(t *testing.T) {
	addrA, addrB := greeter(t, "a"), greeter(t, "b")
	listen := freePort(t)
	d, _, _ := newTestDynamic(t, "--route", strconv.Itoa(listen)+":redis:"+portOf(t, addrA))
	ctx := context.Background()
	route, addr := strconv.Itoa(listen), "127.0.0.1:"+strconv.Itoa(listen)
	snap := &source.Snapshot{Containers: []source.Container{
		loopbackContainer("redis", portOf2(t, addrA), nil),
		// A claimer, whose ambassador.port counts.
		loopbackContainer("other", portOf2(t, addrB), map[string]string{resolver.LabelTarget: "other"}),
	}}
	d.update(ctx, source.Update{Connected: true, Snapshot: snap})
	assert.Equal(t, "a", read(t, addr))

	reply := d.rewire(ctx, rewireRequest{Key: route, Target: "other"})
	require.Empty(t, reply.Error)
	assert.Equal(t, "b", read(t, addr))

	// The engine goes away (the watcher keeps the last snapshot), then
	// comes back and resyncs.
	d.update(ctx, source.Update{Connected: false, Snapshot: snap, Err: errors.New("EOF")})
	assert.Equal(t, "b", read(t, addr))
	d.update(ctx, source.Update{Connected: true, Snapshot: snap, Stats: source.Stats{Reconnects: 1, Resyncs: 1}})
	assert.Equal(t, "b", read(t, addr), "the rewire is still in force")
	doc := d.status.Load()
	rs, ok := doc.route(route)
	require.True(t, ok)
	assert.Equal(t, "other", rs.Override)
}

// TestStatusWithoutEventStream: while the engine answers but its /events
// does not (source.Update.StreamErr), the status says connected, and why
// the events are not followed; once a stream answers, it says no more.
func TestStatusWithoutEventStream(t *testing.T) {
	d, _, _ := newTestDynamic(t)
	ctx := context.Background()
	snap := &source.Snapshot{}
	d.update(ctx, source.Update{Connected: true, Snapshot: snap, StreamErr: errors.New("subscribe to events: no answer within 10s")})
	doc := d.status.Load()
	assert.True(t, doc.Docker.Connected)
	assert.Equal(t, "subscribe to events: no answer within 10s", doc.Docker.StreamError)
	var out strings.Builder
	printStatus(&out, doc.withLive())
	assert.Contains(t, out.String(), "EVENTS UNAVAILABLE (subscribe to events: no answer within 10s): following the engine by listing at every --resync")

	d.update(ctx, source.Update{Connected: true, Snapshot: snap})
	doc = d.status.Load()
	assert.Empty(t, doc.Docker.StreamError)
	out.Reset()
	printStatus(&out, doc.withLive())
	assert.NotContains(t, out.String(), "EVENTS UNAVAILABLE")
}

// incrServer counts the "INCR\n" commands it runs. With die set, it reads
// the first command alone, runs it, and dies with whatever the client
// pipelined after it unread: its kernel resets the connection, as a
// killed redis's does.
func incrServer(t *testing.T, die bool) (addr string, ran *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ran = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, len("INCR\n"))
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					ran.Add(1)
					if die {
						c.(*net.TCPConn).SetLinger(0)
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), ran
}

// TestReplayOffByDefault: a backend reads a client's first command whole,
// runs it and dies with a second, pipelined one unread. By default the
// client sees the reset, and nothing runs again; with --replay the
// connection is replayed on the next backend, which runs the first command
// a second time: why replay is only for protocols whose first message is
// safe to run twice.
func TestReplayOffByDefault(t *testing.T) {
	for _, tt := range []struct {
		name     string
		args     []string
		wantNext int64 // commands the next backend ran
	}{
		{name: "default", wantNext: 0},
		{name: "--replay all", args: []string{"--replay", "all"}, wantNext: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dying, ranDying := incrServer(t, true)
			next, ranNext := incrServer(t, false)
			listen := freePort(t)
			// --backend-wait: the engine's report of the death first
			// empties the set (Gone), then brings the next backend.
			d, _, m := newTestDynamic(t, append([]string{"--route", strconv.Itoa(listen) + ":svc:1", "--backend-wait", "2s"}, tt.args...)...)
			ctx := context.Background()
			// Claimers, whose ambassador.port counts.
			claim := func() map[string]string { return map[string]string{resolver.LabelTarget: "svc"} }
			first := loopbackContainer("dying", portOf2(t, dying), claim())
			d.update(ctx, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{first}}})

			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(listen))
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write([]byte("INCR\nINCR\n"))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return ranDying.Load() == 1 }, 5*time.Second, time.Millisecond)
			// The proxy has seen the reset (the connection to the dying
			// backend has ended, or a replay has begun) before the
			// engine reports the death, as when a container is stopped:
			// its kernel resets its connections first.
			route := strconv.Itoa(listen)
			require.Eventually(t, func() bool {
				active, ok := sampleValue(gatherMetrics(m), "ambassadord_connections_active", seriesLabels{"route": route, "backend": dying})
				return ok && active == 0
			}, 5*time.Second, time.Millisecond)
			// The engine reports the death: the backend leaves the set.
			second := loopbackContainer("next", portOf2(t, next), claim())
			d.update(ctx, source.Update{Connected: true, Gone: []string{first.ID},
				Snapshot: &source.Snapshot{Containers: []source.Container{second}}})

			if tt.wantNext == 0 {
				require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
				_, err = c.Read(make([]byte, 1))
				require.ErrorIs(t, err, syscall.ECONNRESET, "the client sees the backend's reset")
			} else {
				require.Eventually(t, func() bool { return ranNext.Load() == tt.wantNext }, 5*time.Second, time.Millisecond)
			}
			assert.Equal(t, tt.wantNext, ranNext.Load(), "commands the next backend ran")
			assert.Equal(t, float64(tt.wantNext/2), metricValue(t, gatherMetrics(m), "ambassadord_replays_total", seriesLabels{"route": route}))
		})
	}
}
