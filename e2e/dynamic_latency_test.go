//go:build e2e

package e2e

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// latencyCycles is how many times TestRewireLatency stops and starts the
// preferred claimer: two rewires each.
const latencyCycles = 10

// TestRewireLatency measures how fast new connections follow a rewire.
// Two claimers, a (priority 0) and b (priority 10); b is stopped (docker
// stop: the fixture stops accepting at SIGTERM and exits) and started
// again, again and again, under a load of fresh connections. For every
// rewire it takes the time from the engine's event (b's kill, the stop
// signal that takes it out of new connections, or its start) to
// the first connection the new backend accepted, by the fixture's clock,
// which is the host's. Once the new backend has served, no connection may
// land on the old one, and no connection may fail, except those b's stop
// itself cuts (see cutBy).
//
// Not parallel: Go runs it before the parallel tests, so that the numbers
// are not theirs.
func TestRewireLatency(t *testing.T) {
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	claimer := func(name string, priority int) harness.Spec {
		return harness.Spec{Name: name, Networks: []string{n.Name}, Labels: map[string]string{labelTarget: svc, labelPriority: strconv.Itoa(priority)}}
	}
	startServer(t, ctx, claimer("a", 0), "a")
	b := startServer(t, ctx, claimer("b", 10), "b")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: strconv.Itoa(dataPort)},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "b")

	evs := eng.Events(ctx)
	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "b", time.Now(), 20)
	require.NoError(t, err)

	type change struct {
		from, to string
		action   string // b's event that makes the change
		at       time.Time
	}
	var changes []change
	var deaths []time.Time
	for range latencyCycles {
		// The stop signal (the kill event) takes b out of new
		// connections while it drains; its death follows.
		before := time.Now()
		require.NoError(t, eng.Stop(ctx, b.ID, 5*time.Second))
		killed := waitEvent(t, ctx, evs, b.ID, "kill", before)
		deaths = append(deaths, waitEvent(t, ctx, evs, b.ID, "die", before))
		changes = append(changes, change{"b", "a", "kill", killed})
		_, err = l.WaitLanded(ctx, "a", time.Now(), 10)
		require.NoError(t, err)

		before = time.Now()
		require.NoError(t, eng.Restart(ctx, b.ID))
		started := waitEvent(t, ctx, evs, b.ID, "start", before)
		changes = append(changes, change{"a", "b", "start", started})
		_, err = l.WaitLanded(ctx, "b", time.Now(), 10)
		require.NoError(t, err)
	}
	res := l.Stop()
	t.Logf("load: %s", res)

	// Each change is checked up to the next one, which brings the old
	// backend back.
	var latencies []time.Duration
	for i, c := range changes {
		var until time.Time
		if i+1 < len(changes) {
			until = changes[i+1].at
		}
		rw := checkRewire(t, res, c.from, c.to, c.at, until)
		latencies = append(latencies, rw.latency())
		t.Logf("rewire %2d: b %-5s → %s first accepted %s later", i+1, c.action, c.to, rw.latency().Round(100*time.Microsecond))
	}
	cut, failed := checkFailures(t, res, deaths...)
	slices.Sort(latencies)
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
	}
	t.Logf("rewires=%d median=%sms p99=%sms failed=%d (of %d connections; cut by b's own stop, not counted: %d)",
		len(latencies), ms(percentile(latencies, 50)), ms(percentile(latencies, 99)), failed, len(res.Attempts), cut)
}

// percentile returns the nearest-rank percentile p of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100·n)
	return sorted[max(rank, 1)-1]
}
