//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

const (
	// stoppingBackendWait is the --backend-wait of TestStopping's
	// ambassador: shorter than stoppingDrain, so that a connection sent
	// to the stopping backend, which refuses it, would fail before that
	// backend's die event rewires the route.
	stoppingBackendWait = time.Second
	// stoppingDrain is how long the stopping backend drains: an
	// established connection through the ambassador keeps it from exiting
	// until the test ends that connection's exchange.
	stoppingDrain = 3 * time.Second
)

// TestStopping: a claimer of the target with a higher priority is stopped
// gracefully (docker stop: the fixture closes its listener at SIGTERM and
// exits once its connections are done) while a lower-priority claimer is
// there to take over, under a load of fresh connections. From the stop
// signal on, new connections go to the other claimer: none fails, although
// the stopping one drains for longer than --backend-wait, and the ones its
// listener reset are replayed on the other (--replay: the dataserver's
// whoami is safe to run twice). A connection
// established before the signal is not cut by the ambassador: it completes
// its exchange, and the app exits after it.
func TestStopping(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc") // claimed only: no container has this name
	claimer := func(name string, priority int, args ...string) harness.Spec {
		return harness.Spec{
			Name: name, Networks: []string{n.Name}, Cmd: args,
			Labels: map[string]string{labelTarget: svc, labelPriority: strconv.Itoa(priority)},
		}
	}
	startServer(t, ctx, claimer("a", 0), "a")
	// The grace outlasts the test's drain: b exits when its last
	// connection ends, not when the grace runs out.
	b := startServer(t, ctx, claimer("b", 10, "-grace", "60s"), "b")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Env:      []string{"AMBASSADORD_BACKEND_WAIT=" + stoppingBackendWait.String(), "AMBASSADORD_REPLAY=all"},
		Labels:   map[string]string{labelTarget: svc, labelPorts: strconv.Itoa(dataPort)},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "b")

	established := openSession(t, ctx, target)
	require.Equal(t, "b", established.ID.Name)
	echo(t, established, "before the stop")

	evs := eng.Events(ctx)
	l := startLoad(t, target)
	landed := func(name string, after time.Time) {
		t.Helper()
		res, err := l.WaitLanded(ctx, name, after, 20)
		require.NoError(t, err, "failed:\n%s", load.Describe(res.Failed()))
	}
	landed("b", time.Now())

	stopping := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- eng.Stop(ctx, b.ID, 2*time.Minute) }()
	killed := waitEvent(t, ctx, evs, b.ID, "kill", stopping)

	// b drains: it is still running, and the ambassador says why it gets
	// no new connection. The load goes on meanwhile: it is checked at the
	// end.
	insp, err := eng.Inspect(ctx, b.ID)
	require.NoError(t, err)
	require.True(t, insp.State.Running, "b is draining")
	// The test may see the kill event before the ambassador has applied
	// it: ask again for a while.
	const stoppingReason = "not running (stopping)"
	reason := ""
	for deadline := time.Now().Add(5 * time.Second); reason != stoppingReason && time.Now().Before(deadline); {
		reason = candidateReason(t, ctx, amb, strconv.Itoa(dataPort), b.ID)
	}
	assert.Equal(t, stoppingReason, reason)
	select {
	case <-time.After(stoppingDrain - time.Since(killed)):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	insp, err = eng.Inspect(ctx, b.ID)
	require.NoError(t, err)
	require.True(t, insp.State.Running, "b is still draining after %s", stoppingDrain)

	// The established connection still works, and ends as its exchange
	// does: the client half-closes, b answers with EOF and exits.
	echo(t, established, "during the drain")
	require.NoError(t, established.Conn.CloseWrite())
	rest, err := io.ReadAll(established.R)
	require.NoError(t, err, "the established connection ends cleanly")
	assert.Empty(t, rest)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	died := waitEvent(t, ctx, evs, b.ID, "die", stopping)
	landed("a", time.Now())
	res := l.Stop()
	t.Logf("load: %s", res)

	rw := checkRewire(t, res, "b", "a", killed, time.Time{})
	onB := len(res.StartedAfter(killed).On("b"))
	t.Logf("b drained %s (kill to die); a accepted its first connection %s after the kill event; %d connections started after the kill landed on b",
		died.Sub(killed).Round(time.Millisecond), rw.latency().Round(time.Millisecond), onB)
	// The signal closes b's listener before the engine reports it: the
	// connections already in b's accept queue then are reset. b never
	// read them, and the ambassador replays them on a (--replay-bytes;
	// TestStoppingReplaysQueued): none fails, not even those.
	none(t, res.Failed(), "failed connections (%s)", res)
}

// candidateReason returns what `ambassadord status` says of the container
// id as a candidate for the route.
func candidateReason(t *testing.T, ctx context.Context, amb *harness.Container, route, id string) string {
	t.Helper()
	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "status", "--json")
	require.Equal(t, 0, code, "status: %s%s", stdout, stderr)
	var doc struct {
		Routes []struct {
			Name       string `json:"name"`
			Candidates []struct {
				ID     string
				Reason string
			} `json:"candidates"`
		} `json:"routes"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &doc), stdout)
	for _, r := range doc.Routes {
		if r.Name != route {
			continue
		}
		for _, c := range r.Candidates {
			if c.ID == id {
				return c.Reason
			}
		}
	}
	require.FailNow(t, "no candidate "+id+" for route "+route, stdout)
	return ""
}

// TestStoppingReplaysQueued: connections the ambassador made to a claimer
// that had stopped accepting wait in its listener's queue, the client's
// request with them. When the claimer is stopped gracefully (docker stop),
// its listener's close resets them, before the engine reports the kill:
// the app never read them. The ambassador replays each on the other
// claimer (--replay all: the dataserver's whoami is safe to run twice),
// and every client gets its answer from it. By default (no --replay)
// every one of them fails with a reset, which is the test's premise.
func TestStoppingReplaysQueued(t *testing.T) {
	t.Parallel()
	setup(t) // skips without an engine; each subtest has its own context
	for _, tt := range []struct {
		name   string
		replay bool
	}{
		{"replay", true},
		{"off by default", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := setup(t)
			n := newNetwork(t, ctx, "net", false)
			svc := fullName(t, "svc")
			claimer := func(name string, priority int) harness.Spec {
				return harness.Spec{
					Name: name, Networks: []string{n.Name},
					Labels: map[string]string{labelTarget: svc, labelPriority: strconv.Itoa(priority)},
				}
			}
			startServer(t, ctx, claimer("a", 0), "a")
			b := startServer(t, ctx, claimer("b", 10), "b")
			amb := startFollower(t, ctx, harness.Spec{
				Networks: []string{n.Name},
				Cmd:      publicAdmin,
				Env:      map[bool][]string{true: {"AMBASSADORD_REPLAY=all"}}[tt.replay],
				Labels:   map[string]string{labelTarget: svc, labelPorts: strconv.Itoa(dataPort)},
			})
			target := addr(amb, dataPort)
			waitServedBy(t, ctx, target, "b")

			setSwitch(t, ctx, b, dataproto.AcceptPath, false) // b stops accepting
			const queued = 8
			type answer struct {
				id  dataproto.Identity
				err error
			}
			answers := make(chan answer, queued)
			for range queued {
				go func() {
					actx, cancel := context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
					id, err := load.Whoami(actx, target)
					answers <- answer{id, err}
				}()
			}
			// Every one is connected to b, and waits in its queue.
			waitMetrics(t, ctx, "http://"+addr(amb, ambAdminPort)+"/metrics", want("ambassadord_connections_active",
				map[string]string{"route": strconv.Itoa(dataPort), "backend": addr(b, dataPort)}, queued))
			require.NoError(t, eng.Stop(ctx, b.ID, time.Minute))

			var onA, failed int
			for range queued {
				a := <-answers
				switch {
				case a.err != nil:
					failed++
					t.Logf("failed: %v", a.err)
				case a.id.Name == "a":
					onA++
				default:
					t.Errorf("answered by %s", a.id.Name)
				}
			}
			metrics := "http://" + addr(amb, ambAdminPort) + "/metrics"
			route := map[string]string{"route": strconv.Itoa(dataPort)}
			if !tt.replay {
				assert.Equal(t, queued, failed, "without replay, the reset reaches every client")
				waitMetrics(t, ctx, metrics, all(want("ambassadord_replays_total", route, 0),
					want("ambassadord_resets_total", map[string]string{"route": strconv.Itoa(dataPort), "direction": "down"}, queued)))
				return
			}
			assert.Equal(t, queued, onA, "every queued connection replayed on a")
			assert.Zero(t, failed)
			waitMetrics(t, ctx, metrics, want("ambassadord_replays_total", route, queued))
		})
	}
}
