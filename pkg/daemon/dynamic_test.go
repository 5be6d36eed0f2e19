package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestDynamicRewire(t *testing.T) {
	oldAddr := nettest.Greeter(t, "old")
	newAddr := nettest.Greeter(t, "new")
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

	listen := nettest.FreePort(t)
	d, _ := newTestDaemon(t, testOptions(t, strconv.Itoa(listen)+":redis:"+strconv.Itoa(nettest.Port(t, oldAddr))))
	table := d.table
	addr := "127.0.0.1:" + strconv.Itoa(listen)
	ctx := context.Background()

	claim := map[string]string{resolver.LabelTarget: "redis"}
	snap := func(cs ...source.Container) source.Update {
		return source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: cs}}
	}

	// The container named redis serves the target.
	d.update(ctx, 0, snap(loopbackContainer("redis", nettest.Port(t, oldAddr), nil)))
	assert.Equal(t, "old", nettest.Read(t, addr))

	// A claimer takes over: new connections move at once.
	d.update(ctx, 0, snap(loopbackContainer("redis", nettest.Port(t, oldAddr), nil), loopbackContainer("redis2", nettest.Port(t, newAddr), claim)))
	assert.Equal(t, "new", nettest.Read(t, addr))

	// A higher-priority claimer whose connections are held open; then it
	// goes away: its established connection is closed at once.
	prio := map[string]string{resolver.LabelTarget: "redis", resolver.LabelPriority: "10"}
	holder := loopbackContainer("holder", holdLn.Addr().(*net.TCPAddr).Port, prio)
	d.update(ctx, 0, snap(loopbackContainer("redis2", nettest.Port(t, newAddr), claim), holder))
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

	d.update(ctx, 0, source.Update{Connected: true, Gone: []string{holder.ID},
		Snapshot: &source.Snapshot{Containers: []source.Container{loopbackContainer("redis2", nettest.Port(t, newAddr), claim)}}})
	nettest.RequireClosed(t, c, "the connection to the gone backend was closed")
	assert.Equal(t, "new", nettest.Read(t, addr), "new connections go to the remaining claimer")

	// Identical snapshots leave the route alone.
	key := routeKey{resolver.TCP, listen}
	before := table.routes[key].proxy.Backends()
	d.update(ctx, 0, snap(loopbackContainer("redis2", nettest.Port(t, newAddr), claim)))
	assert.Equal(t, before, table.routes[key].proxy.Backends())
}

// TestRefusedRewireChangesNothing: a rewire to a target with no usable
// backend is refused (409) without touching the route, not even for a
// moment: its backends are never replaced, so no rewire is counted.
func TestRefusedRewireChangesNothing(t *testing.T) {
	addrA := nettest.Greeter(t, "a")
	listen := nettest.FreePort(t)
	d, m := newTestDaemon(t, testOptions(t, strconv.Itoa(listen)+":redis:"+strconv.Itoa(nettest.Port(t, addrA))))
	table, key := d.table, routeKey{resolver.TCP, listen}
	ctx := context.Background()
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{
		loopbackContainer("redis", nettest.Port(t, addrA), nil),
	}}})
	route := strconv.Itoa(listen)
	backends := table.routes[key].proxy.Backends()
	require.NotEmpty(t, backends)
	rewires := metricstest.Value(t, metricstest.Scrape(t, m.Handler()), "ambassadord_rewires_total", metricstest.Labels{"route": route})

	reply := d.rewire(ctx, api.RewireRequest{Key: route, Target: "nobody"})
	assert.Equal(t, api.Unusable, reply.Refusal, reply.Error) // 409
	assert.Contains(t, reply.Error, "nothing changed")
	assert.Equal(t, backends, table.routes[key].proxy.Backends())
	assert.Empty(t, d.overrides)
	assert.Equal(t, rewires, metricstest.Value(t, metricstest.Scrape(t, m.Handler()), "ambassadord_rewires_total", metricstest.Labels{"route": route}))
	assert.Equal(t, "a", nettest.Read(t, "127.0.0.1:"+route))

	// With Force it is applied.
	reply = d.rewire(ctx, api.RewireRequest{Key: route, Target: "nobody", Force: true})
	assert.Empty(t, reply.Error)
	assert.Empty(t, table.routes[key].proxy.Backends())
}

// TestRewireSurvivesEngineReconnect: a rewire by hand lives in the run
// loop, not in the watcher: an outage of the engine and the full resync
// after it leave it in force.
func TestRewireSurvivesEngineReconnect(t *testing.T) {
	addrA, addrB := nettest.Greeter(t, "a"), nettest.Greeter(t, "b")
	listen := nettest.FreePort(t)
	d, _ := newTestDaemon(t, testOptions(t, strconv.Itoa(listen)+":redis:"+strconv.Itoa(nettest.Port(t, addrA))))
	ctx := context.Background()
	route, addr := strconv.Itoa(listen), "127.0.0.1:"+strconv.Itoa(listen)
	snap := &source.Snapshot{Containers: []source.Container{
		loopbackContainer("redis", nettest.Port(t, addrA), nil),
		// A claimer, whose ambassador.port counts.
		loopbackContainer("other", nettest.Port(t, addrB), map[string]string{resolver.LabelTarget: "other"}),
	}}
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap})
	assert.Equal(t, "a", nettest.Read(t, addr))

	reply := d.rewire(ctx, api.RewireRequest{Key: route, Target: "other"})
	require.Empty(t, reply.Error)
	assert.Equal(t, "b", nettest.Read(t, addr))

	// The engine goes away (the watcher keeps the last snapshot), then
	// comes back and resyncs.
	d.update(ctx, 0, source.Update{Connected: false, Snapshot: snap, Err: errors.New("EOF")})
	assert.Equal(t, "b", nettest.Read(t, addr))
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap, Stats: source.Stats{Reconnects: 1, Resyncs: 1}})
	assert.Equal(t, "b", nettest.Read(t, addr), "the rewire is still in force")
	rs, ok := d.Status().Route(route)
	require.True(t, ok)
	assert.Equal(t, "other", rs.Override)
}

// TestStatusWithoutEventStream: while the engine answers but its /events
// does not (source.Update.StreamErr), the status says connected, and why
// the events are not followed; once a stream answers, it says no more.
// (How `ambassadord status` prints it: cmd/ambassadord's
// TestPrintStatusWithoutEventStream.)
func TestStatusWithoutEventStream(t *testing.T) {
	d, _ := newTestDaemon(t, testOptions(t))
	ctx := context.Background()
	snap := &source.Snapshot{}
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap, StreamErr: errors.New("subscribe to events: no answer within 10s")})
	doc := d.Status()
	assert.True(t, doc.Docker.Connected)
	assert.Equal(t, "subscribe to events: no answer within 10s", doc.Docker.StreamError)
	assert.Equal(t, doc.Docker, doc.Sources[0])

	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap})
	doc = d.Status()
	assert.True(t, doc.Docker.Connected)
	assert.Empty(t, doc.Docker.StreamError)
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
		replay   bool  // ReplayAll (--replay all)
		wantNext int64 // commands the next backend ran
	}{
		{name: "default", wantNext: 0},
		{name: "--replay all", replay: true, wantNext: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dying, ranDying := incrServer(t, true)
			next, ranNext := incrServer(t, false)
			listen := nettest.FreePort(t)
			// --backend-wait: the engine's report of the death first
			// empties the set (Gone), then brings the next backend.
			opts := testOptions(t, strconv.Itoa(listen)+":svc:1")
			opts.BackendWait = 2 * time.Second
			opts.ReplayAll, opts.ReplayBytes = tt.replay, 4096
			d, m := newTestDaemon(t, opts)
			ctx := context.Background()
			// Claimers, whose ambassador.port counts.
			claim := func() map[string]string { return map[string]string{resolver.LabelTarget: "svc"} }
			first := loopbackContainer("dying", nettest.Port(t, dying), claim())
			d.update(ctx, 0, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{first}}})

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
				active, ok := metricstest.Sample(metricstest.Gather(m.Handler()), "ambassadord_connections_active", metricstest.Labels{"route": route, "backend": dying})
				return ok && active == 0
			}, 5*time.Second, time.Millisecond)
			// The engine reports the death: the backend leaves the set.
			second := loopbackContainer("next", nettest.Port(t, next), claim())
			d.update(ctx, 0, source.Update{Connected: true, Gone: []string{first.ID},
				Snapshot: &source.Snapshot{Containers: []source.Container{second}}})

			if tt.wantNext == 0 {
				require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
				_, err = c.Read(make([]byte, 1))
				require.ErrorIs(t, err, syscall.ECONNRESET, "the client sees the backend's reset")
			} else {
				require.Eventually(t, func() bool { return ranNext.Load() == tt.wantNext }, 5*time.Second, time.Millisecond)
			}
			assert.Equal(t, tt.wantNext, ranNext.Load(), "commands the next backend ran")
			assert.Equal(t, float64(tt.wantNext/2), metricstest.Value(t, metricstest.Scrape(t, m.Handler()), "ambassadord_replays_total", metricstest.Labels{"route": route}))
		})
	}
}

// TestRewireNotTaken: a rewire the run loop does not take, because it is
// not running yet or any more, returns an error instead of waiting for
// ever; the admin endpoint answers 503 then.
func TestRewireNotTaken(t *testing.T) {
	d, err := New(testOptions(t, strconv.Itoa(nettest.FreePort(t))+":127.0.0.1:1"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = d.Rewire(ctx, api.RewireRequest{Key: "x", Target: "y"})
	require.ErrorIs(t, err, context.DeadlineExceeded, "before Run")

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	<-d.Serving()
	reply, err := d.Rewire(context.Background(), api.RewireRequest{Key: "nosuch", Target: "y"})
	require.NoError(t, err, "while running")
	assert.Equal(t, api.Unknown, reply.Refusal, reply.Error)
	stop()
	require.NoError(t, <-done)
	_, err = d.Rewire(context.Background(), api.RewireRequest{Key: "x", Target: "y"})
	require.ErrorIs(t, err, errDaemonStopped, "after Run")
	assert.Error(t, d.Run(context.Background()), "Run twice")
}

// TestStatusSaysWhichEngine: the status names the engine a source
// follows as its updates describe it (Docker or Podman, its version and
// API), and keeps the last one known through an outage, whose updates
// carry none.
func TestStatusSaysWhichEngine(t *testing.T) {
	d, _ := newTestDaemon(t, testOptions(t))
	ctx := context.Background()
	snap := &source.Snapshot{}
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap, Engine: "Podman 4.3.1 (API 1.41)"})
	assert.Equal(t, "Podman 4.3.1 (API 1.41)", d.Status().Docker.Engine)
	d.update(ctx, 0, source.Update{Connected: false, Snapshot: snap, Err: errors.New("EOF")})
	assert.Equal(t, "Podman 4.3.1 (API 1.41)", d.Status().Docker.Engine)
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap, Engine: "Docker 20.10.24 (API 1.41)"})
	assert.Equal(t, "Docker 20.10.24 (API 1.41)", d.Status().Docker.Engine)
}
