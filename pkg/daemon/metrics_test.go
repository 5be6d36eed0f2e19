package daemon

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// seriesLabels is a series' whole label set.
type seriesLabels = metricstest.Labels

// TestDynamicMetrics drives the run loop with a source's updates, as the
// Docker engine would, and checks what reaches the metrics: the engine's
// state and counters, the event-to-applied latency, rewires by events, the
// immediate effect of a gone container, and the removal of a route.
func TestDynamicMetrics(t *testing.T) {
	a, b := nettest.Greeter(t, "a"), nettest.Greeter(t, "b")
	listen := nettest.FreePort(t)
	route := strconv.Itoa(listen)
	addr := "127.0.0.1:" + route
	opts := testOptions(t)
	src := opts.Sources[0].(*fakeSource)
	d, m := newTestDaemon(t, opts)
	ctx := context.Background()
	// The source's counters, which each scrape reads; its series carry
	// its name.
	var live source.Stats
	engine := seriesLabels{"engine": "docker"}

	// The ambassador's own labels ask for the route; claimers serve it.
	self := loopbackContainer("amb", 1, map[string]string{
		resolver.LabelTarget: "redis", resolver.LabelPorts: route,
	})
	delete(self.Labels, resolver.LabelPort)
	claim := map[string]string{resolver.LabelTarget: "redis"}
	prio := map[string]string{resolver.LabelTarget: "redis", resolver.LabelPriority: "10"}
	ca, cb := loopbackContainer("a", nettest.Port(t, a), claim), loopbackContainer("b", nettest.Port(t, b), prio)
	snap := func(self source.Container, cs ...source.Container) *source.Snapshot {
		return &source.Snapshot{Self: &self, Containers: append([]source.Container{self}, cs...)}
	}
	value := func(name string, labels seriesLabels) float64 {
		t.Helper()
		return metricstest.Value(t, metricstest.Scrape(t, m.Handler()), name, labels)
	}
	applied := func() uint64 {
		t.Helper()
		h, ok := metricstest.Find(metricstest.Scrape(t, m.Handler()), "ambassadord_event_to_applied_seconds", seriesLabels{})
		require.True(t, ok)
		return h.GetHistogram().GetSampleCount()
	}

	// The first listing: no event to time.
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap(self, ca)})
	assert.Equal(t, "a", nettest.Read(t, addr))
	assert.Equal(t, 1.0, value("ambassadord_docker_connected", engine))
	assert.Equal(t, 1.0, value("ambassadord_backends", seriesLabels{"route": route}))
	assert.Equal(t, 1.0, value("ambassadord_connections_total", seriesLabels{"route": route, "backend": ca.Networks[0].IP + ":" + strconv.Itoa(nettest.Port(t, a))}))
	assert.Equal(t, uint64(0), applied())

	// A claimer of higher priority starts: a rewire by an event, timed.
	live = source.Stats{Events: 3}
	src.setStats(live)
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap(self, ca, cb),
		Stats: live, EventTime: time.Now().Add(-20 * time.Millisecond)})
	assert.Equal(t, "b", nettest.Read(t, addr))
	assert.Equal(t, 1.0, value("ambassadord_rewires_total", seriesLabels{"route": route}))
	assert.Equal(t, 3.0, value("ambassadord_docker_events_total", engine))
	assert.Equal(t, uint64(1), applied())
	h, _ := metricstest.Find(metricstest.Scrape(t, m.Handler()), "ambassadord_event_to_applied_seconds", seriesLabels{})
	assert.GreaterOrEqual(t, h.GetHistogram().GetSampleSum(), 0.02)

	// It dies: the gone container leaves the set at once, and the
	// re-resolved route is one more rewire.
	live = source.Stats{Events: 4}
	src.setStats(live)
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap(self, ca), Gone: []string{cb.ID},
		Stats: live, EventTime: time.Now()})
	assert.Equal(t, "a", nettest.Read(t, addr))
	assert.Equal(t, 2.0, value("ambassadord_rewires_total", seriesLabels{"route": route}))
	assert.Equal(t, 1.0, value("ambassadord_backends", seriesLabels{"route": route}))
	assert.Equal(t, uint64(2), applied())

	// The engine goes away, and comes back with the counters moved on.
	d.update(ctx, 0, source.Update{Connected: false, Snapshot: snap(self, ca), Err: os.ErrDeadlineExceeded,
		Stats: live})
	assert.Equal(t, 0.0, value("ambassadord_docker_connected", engine))
	live = source.Stats{Events: 6, Reconnects: 1, Resyncs: 2, Drift: 1}
	src.setStats(live)
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap(self, ca), Stats: live})
	for name, want := range map[string]float64{
		"ambassadord_docker_connected":          1,
		"ambassadord_docker_events_total":       6,
		"ambassadord_docker_reconnects_total":   1,
		"ambassadord_docker_resyncs_total":      2,
		"ambassadord_docker_resync_drift_total": 1,
	} {
		assert.Equal(t, want, value(name, engine), name)
	}

	// The ambassador's label goes: so do the route and its series.
	bare := self
	bare.Labels = map[string]string{}
	d.update(ctx, 0, source.Update{Connected: true, Snapshot: snap(bare, ca), EventTime: time.Now()})
	assert.Empty(t, metricstest.RouteSeries(metricstest.Scrape(t, m.Handler()), route))
}
