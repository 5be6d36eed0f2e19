package watcher

import (
	"context"
	"io"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start runs w until the test ends, and then checks that Run returned nil
// and closed the mailbox. Call it inside a synctest bubble.
func start(t *testing.T, w *Watcher) {
	t.Helper()
	if w.Logger == nil {
		w.Logger = zaptest.NewLogger(t)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		for range w.Updates() { // drains, and ends because Run closed it
		}
	})
}

// take returns the update waiting in the mailbox once everything in the
// bubble has settled, without advancing the clock.
func take(t *testing.T, w *Watcher) source.Update {
	t.Helper()
	synctest.Wait()
	select {
	case u, ok := <-w.Updates():
		require.True(t, ok, "mailbox closed")
		return u
	default:
		require.FailNow(t, "no update")
		return source.Update{}
	}
}

// none checks that no update waits in the mailbox once everything in the
// bubble has settled.
func none(t *testing.T, w *Watcher) {
	t.Helper()
	synctest.Wait()
	select {
	case u := <-w.Updates():
		require.FailNow(t, "unexpected update", "%+v", u)
	default:
	}
}

// names returns the names of a snapshot's containers.
func names(s *source.Snapshot) []string {
	var ns []string
	for _, c := range s.Containers {
		ns = append(ns, c.Name)
	}
	return ns
}

var (
	idAmb   = id64("amb")
	idRedis = id64("redis")
	idWeb   = id64("web")
)

func TestInitialSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(
			ctr(idWeb, "web", withStatus(container.StateRunning, "Up 3 seconds (health: starting)"),
				withNet("app", "n-app", "172.18.0.4"), withPorts(container.PortSummary{PrivatePort: 80, Type: "tcp"})),
			ctr(idAmb, "amb", withLabels("ambassador.role", "ambassador", "ambassador.target", "redis"),
				withNet("bridge", "n-bridge", "172.17.0.2"), withNet("app", "n-app", "172.18.0.2")),
			ctr(idRedis, "redis", withStatus(container.StateRunning, "Up 2 hours (healthy)"),
				withLabels("ambassador.target", "redis"), withNet("bridge", "n-bridge", "172.17.0.3"),
				withPorts(
					container.PortSummary{PrivatePort: 6379, PublicPort: 16379, Type: "tcp"},
					container.PortSummary{PrivatePort: 6379, PublicPort: 16379, Type: "tcp"},
				),
				func(s *container.Summary) { s.Names = []string{"/amb/redis", "/redis"} }),
		)
		f.inspect[idAmb] = container.InspectResponse{ID: idAmb, HostConfig: &container.HostConfig{
			Links: []string{"/redis:/amb/redis", "/web:/amb/www"},
		}}
		w := &Watcher{Client: f, SelfIDs: []string{"0123456789ab", idAmb[:12]}}
		start(t, w)

		self := source.Container{
			ID: idAmb, Name: "amb", State: "running",
			Labels: map[string]string{"ambassador.role": "ambassador", "ambassador.target": "redis"},
			Networks: []source.Network{
				{Name: "app", ID: "n-app", IP: "172.18.0.2"},
				{Name: "bridge", ID: "n-bridge", IP: "172.17.0.2"},
			},
			Links:  []source.Link{{Name: "redis", Alias: "redis"}, {Name: "web", Alias: "www"}},
			Engine: "docker",
		}
		want := &source.Snapshot{
			Self: &self,
			Containers: []source.Container{
				self,
				{
					ID: idRedis, Name: "redis", State: "running", Health: "healthy",
					Labels:   map[string]string{"ambassador.target": "redis"},
					Networks: []source.Network{{Name: "bridge", ID: "n-bridge", IP: "172.17.0.3"}},
					Ports:    []source.Port{{Port: 6379, Proto: "tcp", Published: []source.Binding{{HostPort: 16379}}}},
					Engine:   "docker",
				},
				{
					ID: idWeb, Name: "web", State: "running", Health: "starting",
					Networks: []source.Network{{Name: "app", ID: "n-app", IP: "172.18.0.4"}},
					Ports:    []source.Port{{Port: 80, Proto: "tcp"}},
					Engine:   "docker",
				},
			},
		}
		u := take(t, w)
		assert.Equal(t, source.Update{Source: "docker", Snapshot: want, Connected: true, Engine: "Docker 20.10.24 (API 1.41)"}, u)
		none(t, w)
	})
}

func TestSinceIsTakenBeforeTheListing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idAmb, "amb"))
		f.inspect[idAmb] = container.InspectResponse{HostConfig: &container.HostConfig{}}
		start(t, &Watcher{Client: f, SelfIDs: []string{idAmb}})
		synctest.Wait()

		// The listing does not wait for the engine to answer the
		// subscription (TestHungSubscriptionIsFollowedByListing), so
		// the two calls may come in either order; since is what counts.
		ops := f.ops()
		require.Len(t, ops, 5)
		assert.Equal(t, []string{"ping", "version"}, ops[:2])
		assert.ElementsMatch(t, []string{"events", "list", "inspect"}, ops[2:])
		var ev, list call
		f.mu.Lock()
		for _, c := range f.calls {
			switch c.op {
			case "events":
				ev = c
			case "list":
				list = c
			}
		}
		f.mu.Unlock()
		sec, nsec, ok := strings.Cut(ev.since, ".")
		require.True(t, ok, "since %q", ev.since)
		s, err := strconv.ParseInt(sec, 10, 64)
		require.NoError(t, err)
		ns, err := strconv.ParseInt(nsec, 10, 64)
		require.NoError(t, err)
		since := time.Unix(s, ns)
		assert.False(t, since.After(list.at), "since %v is after the listing at %v", since, list.at)
		assert.Equal(t, ev.at, since, "since is the time of the subscription")

		assert.Equal(t, map[string]bool{"container": true, "network": true, "service": true, "node": true}, ev.filters["type"])
		for _, a := range []string{"start", "die", "stop", "destroy", "pause", "unpause", "health_status", "connect", "disconnect"} {
			assert.True(t, ev.filters["event"][a], "event filter lacks %s", a)
		}
	})
}

func TestEventsConvergeToTheListing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		// The engine's truth moves on: web starts, redis restarts and
		// joins a network. The events arrive duplicated, and those of
		// web interleaved with those of redis.
		f.set(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.9")), ctr(idWeb, "web"))
		f.send(t,
			containerEvent(events.ActionStart, idWeb, nil),
			containerEvent(events.ActionDie, idRedis, nil),
			containerEvent(events.ActionStart, idWeb, nil),
			networkEvent(events.ActionConnect, "n-app", idRedis),
			containerEvent(events.ActionStart, idRedis, nil),
			networkEvent(events.ActionConnect, "n-app", idRedis),
			containerEvent(events.ActionStart, idWeb, nil),
		)
		// Nobody reads the mailbox meanwhile: the newest update replaces
		// the fast path's, and inherits its Gone.
		time.Sleep(w.maxDelay())
		u := take(t, w)
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
		assert.Equal(t, []source.Network{{Name: "app", ID: "n-app", IP: "172.18.0.9"}}, u.Snapshot.Containers[0].Networks)
		assert.Equal(t, []string{idRedis}, u.Gone)
		assert.Equal(t, uint64(7), u.Stats.Events)
		none(t, w)
		assert.Equal(t, 2, f.count("list"), "one burst, one re-list")
	})
}

func TestIdenticalSnapshotsAreNotRepublished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		for _, m := range []events.Message{
			containerEvent(events.ActionStart, idWeb, nil),
			containerEvent(events.ActionHealthStatusHealthy, idWeb, nil),
			networkEvent(events.ActionConnect, "n-app", idWeb),
			containerEvent(events.ActionKill, idWeb, map[string]string{"signal": "1"}),
			containerEvent(events.ActionExecStart+": sh", idWeb, nil),
		} {
			f.send(t, m)
			time.Sleep(time.Second)
		}
		none(t, w)
		// The first listing; the start, which came with it, after the
		// quiet period; the next three, a second apart, at once and after
		// the quiet period; exec not at all.
		assert.Equal(t, 1+1+3*2, f.count("list"), "each relevant event re-lists; exec does not")
	})
}

func TestStoppedContainerIsGoneAtOnce(t *testing.T) {
	for _, action := range []events.Action{events.ActionDie, events.ActionStop, events.ActionDestroy} {
		t.Run(string(action), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3")), ctr(idWeb, "web"))
				w := &Watcher{Client: f}
				start(t, w)
				take(t, w)
				lists := f.count("list")
				t0 := time.Now()

				f.set(ctr(idWeb, "web"))
				f.send(t, containerEvent(action, idRedis, nil))
				u := take(t, w)
				assert.Equal(t, t0, time.Now(), "the fast path does not wait")
				assert.Equal(t, lists, f.count("list"), "the fast path does not list")
				assert.Equal(t, []string{"web"}, names(u.Snapshot))
				assert.Equal(t, []string{idRedis}, u.Gone)
				assert.True(t, u.Connected)

				// The re-list confirms, and finds nothing new.
				time.Sleep(w.quiet())
				none(t, w)
				assert.Equal(t, lists+1, f.count("list"))

				// A second event for the same container changes nothing.
				f.send(t, containerEvent(events.ActionDestroy, idRedis, nil))
				none(t, w)
			})
		})
	}
}

// The engine announces a death before its listing drops the container
// (Docker 20.10: by some 80ms). A re-list in between must not bring the
// container back.
func TestListingThatLagsADeathDoesNotReviveIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3")), ctr(idWeb, "web"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		f.send(t, containerEvent(events.ActionDie, idRedis, nil))
		assert.Equal(t, []string{"web"}, names(take(t, w).Snapshot))
		time.Sleep(w.quiet()) // the re-list still shows redis running
		none(t, w)
		f.send(t, networkEvent(events.ActionDisconnect, "n-app", idRedis))
		time.Sleep(w.quiet())
		none(t, w)

		// The listing catches up; later re-lists agree.
		f.set(ctr(idWeb, "web"))
		time.Sleep(tombstoneTTL)
		none(t, w)
		f.send(t, containerEvent(events.ActionStart, idWeb, nil))
		time.Sleep(w.quiet())
		none(t, w)

		// Restarted: the start event revives it at once.
		f.set(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3")), ctr(idWeb, "web"))
		f.send(t, containerEvent(events.ActionDie, idRedis, nil), containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(w.quiet())
		u := take(t, w)
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
		assert.Empty(t, u.Gone, "it was never published as gone")
	})
}

func TestListingThatLagsADisconnectDoesNotReattach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3"), withNet("db", "n-db", "172.19.0.3")))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		f.send(t, networkEvent(events.ActionDisconnect, "n-app", idRedis))
		u := take(t, w)
		assert.Equal(t, []source.Network{{Name: "db", ID: "n-db", IP: "172.19.0.3"}}, u.Snapshot.Containers[0].Networks)
		time.Sleep(w.quiet()) // the re-list still shows the attachment
		none(t, w)

		// Connected again, with another address.
		f.set(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.7"), withNet("db", "n-db", "172.19.0.3")))
		f.send(t, networkEvent(events.ActionConnect, "n-app", idRedis))
		time.Sleep(w.quiet())
		u = take(t, w)
		assert.Equal(t, []source.Network{
			{Name: "app", ID: "n-app", IP: "172.18.0.7"},
			{Name: "db", ID: "n-db", IP: "172.19.0.3"},
		}, u.Snapshot.Containers[0].Networks)
	})
}

// A death the listing never confirms (the start that followed it was lost,
// say) overrides the listing only for a while: then the listing wins.
func TestTheListingWinsOverAnOldTombstone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		f.send(t, containerEvent(events.ActionDie, idRedis, nil))
		t0 := time.Now()
		assert.Equal(t, []string{"web"}, names(take(t, w).Snapshot))
		time.Sleep(tombstoneTTL - time.Millisecond)
		none(t, w)
		time.Sleep(time.Millisecond)
		u := take(t, w)
		assert.Equal(t, tombstoneTTL, time.Since(t0))
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
	})
}

func TestPauseAndKillAreNotGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3")))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		// SIGHUP: a reload, the container keeps running as it was.
		f.send(t, containerEvent(events.ActionKill, idRedis, map[string]string{"signal": "1"}))
		none(t, w)
		time.Sleep(w.quiet())
		none(t, w)

		f.set(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3"),
			withStatus(container.StatePaused, "Up 1 hour (Paused)")))
		f.send(t, containerEvent(events.ActionPause, idRedis, nil))
		none(t, w)
		time.Sleep(w.quiet())
		u := take(t, w)
		assert.Equal(t, "paused", u.Snapshot.Containers[0].State)
		assert.Empty(t, u.Gone)
	})
}

// docker stop sends the stop signal and the app drains for seconds before
// die: the container must take no new connection meanwhile, and keep its
// established ones.
func TestStopSignalMarksStoppingAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3")), ctr(idWeb, "web"))
		w := &Watcher{Client: f, Logger: zap.New(core)}
		start(t, w)
		first := take(t, w)
		time.Sleep(w.resync() / 2) // so that the first resync falls inside the mark
		lists := f.count("list")
		t0 := time.Now()

		// The listing still shows redis running, as the engine's does
		// until it dies.
		f.send(t, containerEvent(events.ActionKill, idRedis, map[string]string{"signal": "15"}))
		u := take(t, w)
		// (The re-list the event calls for runs at once too, since
		// nothing was listed for the quiet period; it may come first.)
		assert.Equal(t, t0, time.Now(), "the fast path does not wait")
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
		assert.Equal(t, source.StateStopping, u.Snapshot.Containers[0].State)
		assert.Equal(t, first.Snapshot.Containers[0].Networks, u.Snapshot.Containers[0].Networks)
		assert.Empty(t, u.Gone, "established connections are the app's to drain")
		assert.Equal(t, "running", first.Snapshot.Containers[0].State, "published snapshots are not mutated")
		entries := logs.FilterMessage("container stopping; no new connections").AllUntimed()
		require.Len(t, entries, 1)
		assert.Equal(t, map[string]any{"container": idRedis, "event": "kill", "signal": "15"}, entries[0].ContextMap())

		// Re-lists, the periodic resync among them, keep it stopping.
		time.Sleep(time.Second)
		none(t, w)
		f.send(t, containerEvent(events.ActionHealthStatusHealthy, idWeb, nil))
		time.Sleep(w.resync()/2 + time.Second)
		none(t, w)
		assert.Equal(t, lists+5, f.count("list"), "at once and trailing after the kill and the health event, and the resync")

		// A reconnect too: the fresh listing cannot tell.
		f.stream(t).errs <- io.EOF
		time.Sleep(minBackoff)
		none(t, w)
		assert.Equal(t, 2, f.count("events"))

		// It dies: gone, as any dead container.
		f.set(ctr(idWeb, "web"))
		f.send(t, containerEvent(events.ActionDie, idRedis, nil))
		u = take(t, w)
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
		assert.Equal(t, []string{idRedis}, u.Gone)
		time.Sleep(w.quiet())
		none(t, w)
	})
}

func TestStopSignals(t *testing.T) {
	for _, tt := range []struct {
		signal string
		stop   bool
	}{
		{"15", true}, {"9", true}, {"2", true}, {"3", true},
		{"SIGTERM", true}, {"TERM", true}, {"sigkill", true}, {" 15 ", true}, {"SIGQUIT", true}, {"int", true},
		{"1", false}, {"10", false}, {"28", false}, {"19", false}, {"150", false},
		{"SIGHUP", false}, {"USR1", false}, {"SIGWINCH", false}, {"SIG", false}, {"", false}, {"-15", false},
	} {
		assert.Equal(t, tt.stop, isStopSignal(tt.signal), "%q", tt.signal)
	}
}

func TestOtherSignalsChangeNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		for _, sig := range []string{"1", "10", "28", "SIGHUP", ""} {
			f.send(t, containerEvent(events.ActionKill, idRedis, map[string]string{"signal": sig}))
			time.Sleep(w.quiet())
			none(t, w)
		}
		f.send(t, containerEvent(events.ActionKill, idRedis, nil))
		time.Sleep(w.quiet())
		none(t, w)
	})
}

// A container still running long after a stop signal handled it (a reload,
// or an app that ignores SIGTERM): it takes new connections again.
func TestStoppingExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		time.Sleep(time.Second) // so that the resync falls inside the mark
		f.send(t, containerEvent(events.ActionKill, idRedis, map[string]string{"signal": "15"}))
		t0 := time.Now()
		assert.Equal(t, source.StateStopping, take(t, w).Snapshot.Containers[0].State)
		time.Sleep(stoppingTTL - time.Millisecond)
		none(t, w)
		time.Sleep(time.Millisecond)
		u := take(t, w)
		assert.Equal(t, stoppingTTL, time.Since(t0))
		assert.Equal(t, "running", u.Snapshot.Containers[0].State)
		assert.Empty(t, u.Gone)
		assert.Equal(t, uint64(1), u.Stats.Resyncs, "a resync came and went meanwhile")
	})
}

// startSignalled starts a watcher of an engine running redis, and has
// redis sent a stop signal: it is stopping.
func startSignalled(t *testing.T) (*fakeClient, *Watcher) {
	t.Helper()
	f := newFake(ctr(idRedis, "redis"))
	w := &Watcher{Client: f}
	start(t, w)
	take(t, w)
	f.send(t, containerEvent(events.ActionKill, idRedis, map[string]string{"signal": "15"}))
	require.Equal(t, source.StateStopping, take(t, w).Snapshot.Containers[0].State)
	return f, w
}

func TestStartClearsStopping(t *testing.T) {
	for _, action := range []events.Action{events.ActionStart, events.ActionRestart} {
		t.Run(string(action), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f, w := startSignalled(t)
				time.Sleep(w.quiet())
				none(t, w)

				// docker restart: kill, die, start, restart; the die
				// event was lost, and the listing never saw it dead.
				f.send(t, containerEvent(action, idRedis, nil))
				time.Sleep(w.quiet())
				u := take(t, w)
				assert.Equal(t, "running", u.Snapshot.Containers[0].State)
				assert.Empty(t, u.Gone)
			})
		})
	}
}

// An engine that restarts signals its containers as it shuts down, and
// starts again those with a restart policy before the watcher's next
// session subscribes: their start events are never seen, and the stop
// marks of the shutdown's signals must not outlive the outage (they took
// the containers out of new connections for stoppingTTL: TestEngineRestart
// in CI).
func TestEngineRestartForgetsStopSignals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, w := startSignalled(t)
		f.setPing(dialErr(syscall.ECONNREFUSED), false)
		f.stream(t).errs <- io.EOF
		synctest.Wait()
		require.False(t, take(t, w).Connected)

		// Back, the container running again (the same ID).
		f.setPing(nil, false)
		time.Sleep(maxBackoff)
		u := take(t, w)
		require.True(t, u.Connected)
		assert.Equal(t, "running", u.Snapshot.Containers[0].State)
	})
}

// docker stop resumes a paused container to deliver the signal, and the
// engine reports the unpause after the kill: the unpause must not undo it.
func TestStopSignalToAPausedContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis", withStatus(container.StatePaused, "Up 1 hour (Paused)")))
		w := &Watcher{Client: f}
		start(t, w)
		assert.Equal(t, "paused", take(t, w).Snapshot.Containers[0].State)

		f.send(t, containerEvent(events.ActionKill, idRedis, map[string]string{"signal": "15"}))
		none(t, w) // paused: it takes no new connection anyway
		f.set(ctr(idRedis, "redis"))
		f.send(t, containerEvent(events.ActionUnPause, idRedis, nil))
		time.Sleep(w.quiet())
		u := take(t, w)
		assert.Equal(t, source.StateStopping, u.Snapshot.Containers[0].State)
		assert.Empty(t, u.Gone)
	})
}

// The signal attribute can be forged by the container's own labels: that
// may only concern the container itself.
func TestForgedSignalConcernsOnlyItsContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web", withLabels("signal", "15", "container", idRedis)))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		// docker kill -s HUP web: Docker copies web's labels over the
		// attributes.
		f.send(t, containerEvent(events.ActionKill, idWeb, map[string]string{"signal": "15", "container": idRedis, "name": "redis"}))
		u := take(t, w)
		assert.Equal(t, "running", u.Snapshot.Containers[0].State, "redis")
		assert.Equal(t, source.StateStopping, u.Snapshot.Containers[1].State, "web")
		assert.Empty(t, u.Gone)
	})
}

func TestNetworkDisconnectIsGoneAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(
			ctr(idAmb, "amb", withNet("app", "n-app", "172.18.0.2")),
			ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3"), withNet("db", "n-db", "172.19.0.3")),
		)
		f.inspect[idAmb] = container.InspectResponse{HostConfig: &container.HostConfig{}}
		w := &Watcher{Client: f, SelfIDs: []string{idAmb}}
		start(t, w)
		take(t, w)

		f.set(ctr(idAmb, "amb", withNet("app", "n-app", "172.18.0.2")),
			ctr(idRedis, "redis", withNet("db", "n-db", "172.19.0.3")))
		f.send(t, networkEvent(events.ActionDisconnect, "n-app", idRedis))
		u := take(t, w)
		assert.Equal(t, []source.Network{{Name: "db", ID: "n-db", IP: "172.19.0.3"}}, u.Snapshot.Containers[1].Networks)
		assert.Equal(t, []string{idRedis}, u.Gone)
		assert.Equal(t, []source.Network{{Name: "app", ID: "n-app", IP: "172.18.0.2"}}, u.Snapshot.Self.Networks)

		// The ambassador itself is disconnected: Self follows.
		f.set(ctr(idAmb, "amb"), ctr(idRedis, "redis", withNet("db", "n-db", "172.19.0.3")))
		f.send(t, networkEvent(events.ActionDisconnect, "n-app", idAmb))
		u = take(t, w)
		assert.Nil(t, u.Snapshot.Self.Networks)
		assert.Equal(t, u.Snapshot.Containers[0], *u.Snapshot.Self)

		time.Sleep(w.quiet())
		none(t, w)
	})
}

func TestForgedAttributesChangeNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(
			ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3")),
			ctr(idWeb, "web", withNet("app", "n-app", "172.18.0.4"), withLabels("container", idRedis, "name", "redis")),
		)
		w := &Watcher{Client: f}
		start(t, w)
		first := take(t, w)

		// web's labels name redis, and Docker copies them into web's
		// events. Its events must still only ever concern web.
		forged := map[string]string{"container": idRedis, "name": "redis", "image": "redis"}
		f.send(t,
			containerEvent(events.ActionStart, idWeb, forged),
			containerEvent(events.ActionAttach, idWeb, forged),
		)
		// A disconnect from a network the hinted container is not on.
		f.send(t, networkEvent(events.ActionDisconnect, "n-other", idRedis))
		none(t, w)
		time.Sleep(w.quiet())
		none(t, w)

		f.set(ctr(idRedis, "redis", withNet("app", "n-app", "172.18.0.3")))
		f.send(t, containerEvent(events.ActionDie, idWeb, forged))
		u := take(t, w)
		assert.Equal(t, []string{idWeb}, u.Gone)
		assert.Equal(t, first.Snapshot.Containers[:1], u.Snapshot.Containers)
		time.Sleep(w.quiet())
		none(t, w)
	})
}

func TestHealthStatusEventRelists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis", withStatus(container.StateRunning, "Up 1 second (health: starting)")))
		w := &Watcher{Client: f}
		start(t, w)
		assert.Equal(t, "starting", take(t, w).Snapshot.Containers[0].Health)

		f.set(ctr(idRedis, "redis", withStatus(container.StateRunning, "Up 31 seconds (healthy)")))
		f.send(t, containerEvent(events.ActionHealthStatusHealthy, idRedis, nil))
		time.Sleep(w.quiet())
		u := take(t, w)
		assert.Equal(t, "healthy", u.Snapshot.Containers[0].Health)
		assert.Empty(t, u.Gone)
	})
}

func TestDebounceQuietAndMaxDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		// One event after a quiet spell: a re-list at once, and a
		// trailing one after the quiet period, which another event 4ms
		// later puts off.
		ms := time.Millisecond
		time.Sleep(w.quiet()) // the first listing counts as a re-list
		t0 := time.Now()
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(4 * ms)
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(time.Second)
		lists := f.callTimes("list")
		require.Len(t, lists, 3)
		assert.Equal(t, []time.Duration{0, 14 * ms}, []time.Duration{lists[1].Sub(t0), lists[2].Sub(t0)})

		// One event alone: at once, and after the quiet period.
		time.Sleep(w.quiet())
		t0 = time.Now()
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(time.Second)
		lists = f.callTimes("list")
		require.Len(t, lists, 5)
		assert.Equal(t, []time.Duration{0, 10 * ms}, []time.Duration{lists[3].Sub(t0), lists[4].Sub(t0)})

		// An endless burst, an event every 4ms: a re-list at once, then
		// at most 50ms after the first event the previous re-list did not
		// cover.
		t0 = time.Now()
		for range 50 {
			f.send(t, containerEvent(events.ActionStart, idRedis, nil))
			time.Sleep(4 * ms)
		}
		time.Sleep(time.Second)
		var got []time.Duration
		for _, at := range f.callTimes("list")[5:] {
			got = append(got, at.Sub(t0))
		}
		// Events at 0, 4, ..., 196ms: the burst's first at once, then
		// a re-list at most 50ms after the first event the previous one
		// did not cover. The last re-list is at 196+10ms.
		assert.Equal(t, []time.Duration{0, 50 * ms, 102 * ms, 154 * ms, 206 * ms}, got)
	})
}

func TestStreamErrorReconnectsAndResyncs(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"EOF", io.EOF},
		{"engine error", io.ErrUnexpectedEOF},
		{"proxy error", syscall.EPIPE},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web"))
				w := &Watcher{Client: f}
				start(t, w)
				take(t, w)

				// The stream dies, and the change is not delivered as an
				// event: only the resync after the reconnect sees it.
				f.set(ctr(idWeb, "web"))
				f.stream(t).errs <- tt.err
				t0 := time.Now()
				none(t, w) // a stream that ends is no outage

				time.Sleep(minBackoff)
				u := take(t, w)
				assert.Equal(t, []string{"web"}, names(u.Snapshot))
				assert.Equal(t, []string{idRedis}, u.Gone)
				assert.True(t, u.Connected)
				assert.Equal(t, uint64(1), u.Stats.Reconnects)

				evs := f.callTimes("events")
				require.Len(t, evs, 2)
				assert.GreaterOrEqual(t, evs[1].Sub(t0), minBackoff/2)
				assert.LessOrEqual(t, evs[1].Sub(t0), minBackoff)

				// The new stream works.
				f.set()
				f.send(t, containerEvent(events.ActionDie, idWeb, nil))
				assert.Equal(t, []string{idWeb}, take(t, w).Gone)
			})
		})
	}
}

func TestEventsBeforeTheStreamEndGetTheirFastPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		w := &Watcher{Client: f, Quiet: time.Hour, MaxDelay: time.Hour}
		start(t, w)
		take(t, w)

		f.setPing(dialErr(syscall.ECONNREFUSED), false)
		s := f.stream(t)
		s.msgs <- containerEvent(events.ActionDie, idRedis, nil)
		s.errs <- io.EOF
		// Whichever the loop saw first, the die is applied at once, and
		// the engine that no longer answers is an outage at once: the
		// die's Gone survives in the mailbox's latest update.
		u := take(t, w)
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
		assert.Equal(t, []string{idRedis}, u.Gone)
		assert.False(t, u.Connected)
		assert.ErrorIs(t, u.Err, syscall.ECONNREFUSED)
	})
}

// TestStreamEndOfAnEngineThatStopsIsAnOutageAtOnce: an engine that stops
// ends the stream first. Whether it still answers is asked at once, not at
// the next attempt: after a short session (one that does not reset the
// back-off, as an engine back for a moment), that attempt is up to
// maxBackoff away, and a remote engine's grace would start that late.
func TestStreamEndOfAnEngineThatStopsIsAnOutageAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		f.setPing(dialErr(syscall.ECONNREFUSED), false)
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)
		time.Sleep(time.Minute) // the back-off at its cap

		// Back for a moment: a session shorter than maxBackoff.
		f.setPing(nil, false)
		time.Sleep(maxBackoff)
		require.True(t, take(t, w).Connected)
		time.Sleep(time.Second)

		f.setPing(dialErr(syscall.ECONNREFUSED), false)
		f.stream(t).errs <- io.EOF
		t0 := time.Now()
		synctest.Wait()
		u := take(t, w)
		assert.Zero(t, time.Since(t0), "published when the stream ended")
		assert.False(t, u.Connected)
		assert.ErrorIs(t, u.Err, syscall.ECONNREFUSED)
		assert.Equal(t, []string{"redis"}, names(u.Snapshot), "the last snapshot is kept")
	})
}

func TestStalledStreamReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f}
		start(t, w)
		first := take(t, w)
		t0 := time.Now()

		// The engine stops answering, and the stream goes silent
		// without ending: only the watchdog notices.
		f.setPing(nil, true)
		time.Sleep(w.pingInterval() + w.pingTimeout())
		u := take(t, w)
		assert.Equal(t, w.pingInterval()+w.pingTimeout(), time.Since(t0))
		assert.False(t, u.Connected)
		assert.ErrorIs(t, u.Err, context.DeadlineExceeded)
		assert.ErrorContains(t, u.Err, "ping docker engine")
		assert.Same(t, first.Snapshot, u.Snapshot, "the last snapshot is kept")
		f.mu.Lock()
		assert.Error(t, f.streams[0].ctx.Err(), "the stalled stream is cancelled")
		f.mu.Unlock()

		// Still unreachable: retries are not published.
		time.Sleep(time.Minute)
		none(t, w)

		f.setPing(nil, false)
		time.Sleep(maxBackoff + w.pingTimeout())
		u = take(t, w)
		assert.True(t, u.Connected)
		assert.NoError(t, u.Err)
		assert.Equal(t, first.Snapshot, u.Snapshot)
		assert.Equal(t, uint64(1), u.Stats.Reconnects)
		assert.Equal(t, 2, f.count("events"))
	})
}

func TestUnreachableAtStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis"))
		f.setPing(dialErr(syscall.EACCES), false)
		w := &Watcher{Client: f, Logger: zap.New(core)}
		start(t, w)

		u := take(t, w)
		assert.Equal(t, source.Update{Source: "docker", Err: u.Err}, u)
		assert.EqualError(t, u.Err,
			"permission denied on /var/run/docker.sock: run the container with --group-add $(stat -c %g /var/run/docker.sock), or as root")

		time.Sleep(20 * time.Second)
		none(t, w)
		assert.Greater(t, f.count("ping"), 5)
		assert.Equal(t, 1, logs.FilterMessage("docker engine unreachable; serving last known routes").Len())
		assert.Equal(t, 1, logs.FilterLevelExact(zapcore.WarnLevel).Len(), "retries are logged at debug")
		assert.Equal(t, f.count("ping")-1, logs.FilterMessage("docker engine still unreachable").Len())

		// The socket appears.
		f.setPing(nil, false)
		time.Sleep(maxBackoff)
		u = take(t, w)
		assert.True(t, u.Connected)
		assert.NoError(t, u.Err)
		assert.Equal(t, []string{"redis"}, names(u.Snapshot))
		assert.Equal(t, uint64(0), u.Stats.Reconnects, "the first connection is no reconnect")
		assert.Equal(t, 1, logs.FilterMessage("docker engine reachable again").Len())
	})
}

// TestAnotherReasonIsPublished: an engine unreachable for one reason, then
// for another (down, then back with a certificate we refuse), publishes the
// new reason once; the same reason again publishes nothing.
func TestAnotherReasonIsPublished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f, Logger: zap.New(core)}
		start(t, w)
		first := take(t, w)

		f.setPing(dialErr(syscall.ECONNREFUSED), false)
		f.stream(t).errs <- io.EOF
		synctest.Wait()
		u := take(t, w)
		assert.ErrorIs(t, u.Err, syscall.ECONNREFUSED)

		f.setPing(dialErr(syscall.EACCES), false)
		time.Sleep(maxBackoff)
		u = take(t, w)
		assert.False(t, u.Connected)
		assert.ErrorIs(t, u.Err, syscall.EACCES)
		assert.Same(t, first.Snapshot, u.Snapshot, "the last snapshot is kept")
		assert.Equal(t, 1, logs.FilterMessage("docker engine still unreachable, for another reason").Len())

		time.Sleep(time.Minute)
		none(t, w)
	})
}

func TestListFailureIsAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f}
		start(t, w)
		first := take(t, w)

		f.setPing(dialErr(syscall.ENOENT), false)
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(w.quiet())
		u := take(t, w)
		assert.False(t, u.Connected)
		// The advice depends on where the test runs (TestExplain covers
		// both): the error is the engine's, explained.
		assert.EqualError(t, u.Err, Explain(dialErr(syscall.ENOENT), f.DaemonHost()).Error())
		assert.ErrorIs(t, u.Err, syscall.ENOENT)
		assert.Same(t, first.Snapshot, u.Snapshot)
	})
}

func TestBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.setPing(dialErr(syscall.ECONNREFUSED), false)
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)
		time.Sleep(time.Minute)

		pings := f.callTimes("ping")
		require.Greater(t, len(pings), 12)
		for i := 1; i < len(pings); i++ {
			d := min(minBackoff<<(i-1), maxBackoff)
			gap := pings[i].Sub(pings[i-1])
			assert.GreaterOrEqual(t, gap, d/2, "attempt %d", i)
			assert.LessOrEqual(t, gap, d, "attempt %d", i)
		}
	})
	for n := range 40 {
		d := backoff(n)
		assert.GreaterOrEqual(t, d, minBackoff/2)
		assert.LessOrEqual(t, d, maxBackoff)
	}
}

func TestMailboxIsLatestWinsAndTheReaderNeverBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		// Hold the loop in a listing, then flood the stream: every send
		// completes, because the reader never waits for the loop.
		gate := make(chan struct{})
		f.mu.Lock()
		f.listGate = gate
		f.mu.Unlock()
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(w.quiet())
		synctest.Wait()
		require.Equal(t, 2, f.count("list"), "the loop is listing")
		const flood = 1000
		for range flood {
			f.send(t, containerEvent(events.ActionStart, idWeb, nil))
		}
		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		close(gate)
		time.Sleep(time.Second)

		// Several changes, and a slow consumer.
		for _, cs := range [][]container.Summary{
			{ctr(idWeb, "web")},
			{ctr(idWeb, "web"), ctr(idAmb, "amb")},
		} {
			f.set(cs...)
			f.send(t, containerEvent(events.ActionStart, cs[len(cs)-1].ID, nil))
			time.Sleep(time.Second)
		}
		u := take(t, w)
		assert.Equal(t, []string{"amb", "web"}, names(u.Snapshot), "only the newest")
		assert.Equal(t, []string{idRedis}, u.Gone, "with the Gone of the updates it replaced")
		assert.Equal(t, uint64(1+flood+2), u.Stats.Events, "dropped events are counted too")
		none(t, w)
	})
}

func TestPeriodicResyncCountsDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f}
		start(t, w)
		take(t, w)

		// A change no event reports.
		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		time.Sleep(w.resync() - time.Millisecond)
		none(t, w)
		time.Sleep(time.Millisecond)
		u := take(t, w)
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
		assert.Equal(t, source.Stats{Resyncs: 1, Drift: 1}, u.Stats)

		// A resync that finds nothing publishes nothing.
		time.Sleep(w.resync())
		none(t, w)

		// The stream said nothing of the change: it was replaced
		// (TestSilentStreamIsReplaced), and the new one delivers.
		f.set(ctr(idWeb, "web"))
		f.send(t, containerEvent(events.ActionDie, idRedis, nil))
		u = take(t, w)
		assert.Equal(t, source.Stats{Events: 1, Reconnects: 1, Resyncs: 2, Drift: 1}, u.Stats)
	})
}

// TestStatsCountWhatPublishesNothing: events and resyncs that leave the
// view as it was publish no update, and Stats counts them all the same;
// the next update carries them.
func TestStatsCountWhatPublishesNothing(t *testing.T) {
	for _, tt := range []struct {
		name string
		do   func(t *testing.T, f *fakeClient, w *Watcher)
		want source.Stats
	}{
		{
			name: "resync that finds nothing new",
			do:   func(t *testing.T, f *fakeClient, w *Watcher) { time.Sleep(w.resync()) },
			want: source.Stats{Resyncs: 1},
		},
		{
			name: "relevant event that changes nothing",
			do: func(t *testing.T, f *fakeClient, w *Watcher) {
				f.send(t, containerEvent(events.ActionStart, idRedis, nil))
				time.Sleep(w.quiet())
			},
			want: source.Stats{Events: 1},
		},
		{
			name: "irrelevant event",
			do: func(t *testing.T, f *fakeClient, w *Watcher) {
				f.send(t, containerEvent(events.ActionExecStart+": sh", idRedis, nil))
			},
			want: source.Stats{Events: 1},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web"))
				w := &Watcher{Client: f}
				assert.Equal(t, source.Stats{}, w.Stats(), "before Run")
				start(t, w)
				take(t, w)

				tt.do(t, f, w)
				none(t, w)
				assert.Equal(t, tt.want, w.Stats())

				// A change the events report publishes an update,
				// with the counters as they are then.
				f.set(ctr(idRedis, "redis"))
				f.send(t, containerEvent(events.ActionDie, idWeb, nil))
				u := take(t, w)
				assert.Equal(t, []string{"redis"}, names(u.Snapshot))
				want := tt.want
				want.Events++
				assert.Equal(t, want, u.Stats)
				assert.Equal(t, want, w.Stats())
			})
		})
	}
}

func TestSelfNotFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.InfoLevel)
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f, SelfIDs: []string{"0123456789ab"}, Logger: zap.New(core)}
		start(t, w)
		assert.Nil(t, take(t, w).Snapshot.Self)

		for range 3 {
			f.send(t, containerEvent(events.ActionStart, idRedis, nil))
			time.Sleep(time.Second)
		}
		entries := logs.FilterMessageSnippet("own container").AllUntimed()
		require.Len(t, entries, 1, "logged once")
		assert.Equal(t, []any{"0123456789ab"}, entries[0].ContextMap()["candidates"])
		assert.Zero(t, f.count("inspect"))
	})
}

func TestRunMisuse(t *testing.T) {
	// Without a Client, Run makes one from Host, and reports a bad one.
	assert.ErrorContains(t, (&Watcher{Host: "://"}).Run(context.Background()), "create docker client")

	synctest.Test(t, func(t *testing.T) {
		w := &Watcher{Client: newFake()}
		start(t, w)
		take(t, w)
		assert.ErrorContains(t, w.Run(t.Context()), "twice")
	})
}

func TestEventTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		w := &Watcher{Client: f}
		start(t, w)
		assert.True(t, take(t, w).EventTime.IsZero(), "the first listing is no event's")

		// A re-list after a burst carries the time of the burst's first
		// event, not of the listing.
		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"), ctr(idAmb, "amb"))
		t0 := time.Now()
		f.send(t, containerEvent(events.ActionStart, idAmb, nil))
		time.Sleep(w.quiet() / 2)
		f.send(t, containerEvent(events.ActionStart, idAmb, nil))
		time.Sleep(w.quiet())
		u := take(t, w)
		assert.Equal(t, []string{"amb", "redis", "web"}, names(u.Snapshot))
		assert.Equal(t, t0, u.EventTime)

		// The fast path publishes at once, with the event's time; the
		// mailbox keeps the oldest time when it replaces an update.
		t1 := time.Now()
		f.set(ctr(idRedis, "redis"))
		f.send(t, containerEvent(events.ActionDie, idAmb, nil))
		synctest.Wait()
		time.Sleep(time.Second)
		f.send(t, containerEvent(events.ActionDie, idWeb, nil))
		u = take(t, w)
		assert.Equal(t, []string{"redis"}, names(u.Snapshot))
		assert.Equal(t, t1, u.EventTime)

		// Events that change nothing are not blamed for a later change
		// that no event reported.
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(w.quiet())
		none(t, w)
		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		time.Sleep(w.resync())
		u = take(t, w)
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
		assert.Equal(t, uint64(1), u.Stats.Drift)
		assert.True(t, u.EventTime.IsZero(), "a resync is no event's")

		// Irrelevant events set no time either.
		f.send(t, containerEvent(events.ActionExecStart+": sh", idWeb, nil))
		f.set(ctr(idWeb, "web"))
		time.Sleep(w.resync())
		assert.True(t, take(t, w).EventTime.IsZero())
	})
}
