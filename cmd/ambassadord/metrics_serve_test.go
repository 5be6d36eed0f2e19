package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// scrapeURL fetches a /metrics endpoint over HTTP and parses it as
// Prometheus does. It returns nil on any failure, so that it can be polled.
func scrapeURL(url string) map[string]*dto.MetricFamily {
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	return families
}

// exchange opens a connection to addr, sends up bytes, half-closes, and
// returns how many bytes came back before EOF.
func exchange(t *testing.T, addr string, up int) int64 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Write(make([]byte, up))
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	n, err := io.Copy(io.Discard, c)
	require.NoError(t, err)
	return n
}

// waitScrape polls url until a scrape satisfies cond, and returns it.
func waitScrape(t *testing.T, url string, cond func(map[string]*dto.MetricFamily) bool, msg string, args ...any) map[string]*dto.MetricFamily {
	t.Helper()
	var f map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		f = scrapeURL(url)
		return f != nil && cond(f)
	}, 5*time.Second, 10*time.Millisecond, append([]any{msg}, args...)...)
	return f
}

// waitMetric polls url until the counter or gauge series has the value
// want, and returns the last scrape.
func waitMetric(t *testing.T, url, name string, labels seriesLabels, want float64) map[string]*dto.MetricFamily {
	t.Helper()
	return waitScrape(t, url, func(f map[string]*dto.MetricFamily) bool {
		got, ok := sampleValue(f, name, labels)
		return ok && got == want
	}, "%s%v never was %v", name, labels, want)
}

// TestServeMetrics runs the daemon's serve path with its admin endpoint,
// forwards traffic through a route, rewires it by hand and back, and reads
// the result the way Prometheus would: over HTTP, in the text format.
func TestServeMetrics(t *testing.T) {
	const up, downA, downB = 70_000, 130_000, 9_000
	a, b := serveOnce(t, downA), serveOnce(t, downB)
	listen := strconv.Itoa(freePort(t))
	socket, adminAddr := runDaemon(t, "--route", listen+":"+a)
	addr, url := "127.0.0.1:"+listen, "http://"+adminAddr+"/metrics"
	onA := seriesLabels{"route": listen, "backend": a}
	onB := seriesLabels{"route": listen, "backend": b}
	with := func(l seriesLabels, k, v string) seriesLabels {
		out := seriesLabels{k: v}
		for lk, lv := range l {
			out[lk] = lv
		}
		return out
	}

	f := scrapeURL(url)
	require.NotNil(t, f, "the admin endpoint serves metrics")
	assert.Equal(t, 1.0, metricValue(t, f, "ambassadord_build_info", seriesLabels{"version": version, "commit": buildCommit(), "goversion": runtime.Version()}))
	assert.Equal(t, 1.0, metricValue(t, f, "ambassadord_backends", seriesLabels{"route": listen}))
	assert.Equal(t, 0.0, metricValue(t, f, "ambassadord_connections_total", onA))
	assert.Equal(t, 0.0, metricValue(t, f, "ambassadord_rewires_total", seriesLabels{"route": listen}))
	assert.Equal(t, 0.0, metricValue(t, f, "ambassadord_docker_connected", seriesLabels{}), "--docker=off")
	assert.NotContains(t, f, "ambassadord_route_override", "no rewire yet")

	// Two connections through the route: the byte counters are what the
	// client sent and what the backend answered.
	for range 2 {
		require.Equal(t, int64(downA), exchange(t, addr, up))
	}
	waitMetric(t, url, "ambassadord_bytes_total", with(onA, "direction", "down"), 2*downA)
	// A scrape reads each family at its own moment, so the gauge may lag
	// the bytes in the same scrape.
	f = waitScrape(t, url, func(f map[string]*dto.MetricFamily) bool {
		active, _ := sampleValue(f, "ambassadord_connections_active", onA)
		h, ok := findSeries(f, "ambassadord_connection_duration_seconds", seriesLabels{"route": listen})
		return active == 0 && ok && h.GetHistogram().GetSampleCount() == 2
	}, "both connections done")
	assert.Equal(t, float64(2*up), metricValue(t, f, "ambassadord_bytes_total", with(onA, "direction", "up")))
	assert.Equal(t, float64(2*downA), metricValue(t, f, "ambassadord_bytes_total", with(onA, "direction", "down")))
	assert.Equal(t, 2.0, metricValue(t, f, "ambassadord_connections_total", onA))

	// A rewire by hand shows as a rewire and as an override; the idle
	// previous backend's series go.
	out, code := cli(t, socket, "rewire", listen, b)
	require.Equal(t, 0, code, out)
	require.Equal(t, int64(downB), exchange(t, addr, up))
	f = waitMetric(t, url, "ambassadord_bytes_total", with(onB, "direction", "down"), downB)
	assert.Equal(t, float64(up), metricValue(t, f, "ambassadord_bytes_total", with(onB, "direction", "up")))
	assert.Equal(t, 1.0, metricValue(t, f, "ambassadord_connections_total", onB))
	assert.Equal(t, 1.0, metricValue(t, f, "ambassadord_rewires_total", seriesLabels{"route": listen}))
	assert.Equal(t, 1.0, metricValue(t, f, "ambassadord_backends", seriesLabels{"route": listen}))
	assert.Equal(t, 1.0, metricValue(t, f, "ambassadord_route_override", seriesLabels{"route": listen, "target": b}))
	_, ok := findSeries(f, "ambassadord_connections_total", onA)
	assert.False(t, ok, "the previous backend's series are deleted")

	// The reset is a rewire too, and ends the override.
	out, code = cli(t, socket, "rewire", "--reset", listen)
	require.Equal(t, 0, code, out)
	f = waitMetric(t, url, "ambassadord_rewires_total", seriesLabels{"route": listen}, 2)
	assert.Empty(t, f["ambassadord_route_override"].GetMetric())
	assert.Equal(t, 0.0, metricValue(t, f, "ambassadord_connections_total", onA), "a backend back in the set starts afresh")
}

// TestDynamicMetrics drives the run loop with watcher updates, as the
// Docker engine would, and checks what reaches the metrics: the engine's
// state and counters, the event-to-applied latency, rewires by events, the
// immediate effect of a gone container, and the removal of a route.
func TestDynamicMetrics(t *testing.T) {
	a, b := greeter(t, "a"), greeter(t, "b")
	listen := freePort(t)
	route := strconv.Itoa(listen)
	addr := "127.0.0.1:" + route
	d, _, m := newTestDynamic(t, "--admin-address=", "--admin-socket=")
	ctx := context.Background()
	// The watcher's counters, which each scrape reads.
	var live source.Stats
	d.followStats(func() source.Stats { return live })

	// The ambassador's own labels ask for the route; claimers serve it.
	self := loopbackContainer("amb", 1, map[string]string{
		resolver.LabelTarget: "redis", resolver.LabelPorts: route,
	})
	delete(self.Labels, resolver.LabelPort)
	claim := map[string]string{resolver.LabelTarget: "redis"}
	prio := map[string]string{resolver.LabelTarget: "redis", resolver.LabelPriority: "10"}
	ca, cb := loopbackContainer("a", portOf2(t, a), claim), loopbackContainer("b", portOf2(t, b), prio)
	snap := func(self source.Container, cs ...source.Container) *source.Snapshot {
		return &source.Snapshot{Self: &self, Containers: append([]source.Container{self}, cs...)}
	}
	value := func(name string, labels seriesLabels) float64 {
		t.Helper()
		return metricValue(t, scrapeMetrics(t, m), name, labels)
	}
	applied := func() uint64 {
		t.Helper()
		h, ok := findSeries(scrapeMetrics(t, m), "ambassadord_event_to_applied_seconds", seriesLabels{})
		require.True(t, ok)
		return h.GetHistogram().GetSampleCount()
	}

	// The first listing: no event to time.
	d.update(ctx, source.Update{Connected: true, Snapshot: snap(self, ca)})
	assert.Equal(t, "a", read(t, addr))
	assert.Equal(t, 1.0, value("ambassadord_docker_connected", seriesLabels{}))
	assert.Equal(t, 1.0, value("ambassadord_backends", seriesLabels{"route": route}))
	assert.Equal(t, 1.0, value("ambassadord_connections_total", seriesLabels{"route": route, "backend": ca.Networks[0].IP + ":" + portOf(t, a)}))
	assert.Equal(t, uint64(0), applied())

	// A claimer of higher priority starts: a rewire by an event, timed.
	live = source.Stats{Events: 3}
	d.update(ctx, source.Update{Connected: true, Snapshot: snap(self, ca, cb),
		Stats: live, EventTime: time.Now().Add(-20 * time.Millisecond)})
	assert.Equal(t, "b", read(t, addr))
	assert.Equal(t, 1.0, value("ambassadord_rewires_total", seriesLabels{"route": route}))
	assert.Equal(t, 3.0, value("ambassadord_docker_events_total", seriesLabels{}))
	assert.Equal(t, uint64(1), applied())
	h, _ := findSeries(scrapeMetrics(t, m), "ambassadord_event_to_applied_seconds", seriesLabels{})
	assert.GreaterOrEqual(t, h.GetHistogram().GetSampleSum(), 0.02)

	// It dies: the gone container leaves the set at once, and the
	// re-resolved route is one more rewire.
	live = source.Stats{Events: 4}
	d.update(ctx, source.Update{Connected: true, Snapshot: snap(self, ca), Gone: []string{cb.ID},
		Stats: live, EventTime: time.Now()})
	assert.Equal(t, "a", read(t, addr))
	assert.Equal(t, 2.0, value("ambassadord_rewires_total", seriesLabels{"route": route}))
	assert.Equal(t, 1.0, value("ambassadord_backends", seriesLabels{"route": route}))
	assert.Equal(t, uint64(2), applied())

	// The engine goes away, and comes back with the counters moved on.
	d.update(ctx, source.Update{Connected: false, Snapshot: snap(self, ca), Err: os.ErrDeadlineExceeded,
		Stats: live})
	assert.Equal(t, 0.0, value("ambassadord_docker_connected", seriesLabels{}))
	live = source.Stats{Events: 6, Reconnects: 1, Resyncs: 2, Drift: 1}
	d.update(ctx, source.Update{Connected: true, Snapshot: snap(self, ca), Stats: live})
	for name, want := range map[string]float64{
		"ambassadord_docker_connected":          1,
		"ambassadord_docker_events_total":       6,
		"ambassadord_docker_reconnects_total":   1,
		"ambassadord_docker_resyncs_total":      2,
		"ambassadord_docker_resync_drift_total": 1,
	} {
		assert.Equal(t, want, value(name, seriesLabels{}), name)
	}

	// The ambassador's label goes: so do the route and its series.
	bare := self
	bare.Labels = map[string]string{}
	d.update(ctx, source.Update{Connected: true, Snapshot: snap(bare, ca), EventTime: time.Now()})
	assert.Empty(t, routeSeries(scrapeMetrics(t, m), route))
}

// quietEngine serves, on a unix socket, just enough of the Docker Engine API
// for the watcher: pings, an event stream that stays silent, and an empty
// container list, the same at every resync. It returns the socket's path
// and the number of listings so far.
func quietEngine(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	var lists atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		switch {
		case r.URL.Path == "/_ping":
			fmt.Fprint(w, "OK")
		case strings.HasSuffix(r.URL.Path, "/events"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case strings.HasSuffix(r.URL.Path, "/containers/json"):
			lists.Add(1)
			fmt.Fprint(w, "[]")
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return sock, &lists
}

// TestQuietEngineCounters: on an engine where nothing happens, periodic
// resyncs find nothing new, so the watcher publishes no update for them;
// /metrics, /routes and `ambassadord status` count them all the same.
func TestQuietEngineCounters(t *testing.T) {
	sock, lists := quietEngine(t)
	socket, adminAddr := runDaemon(t, "--docker=on", "--docker-host=unix://"+sock, "--resync=20ms")

	waitScrape(t, "http://"+adminAddr+"/metrics", func(f map[string]*dto.MetricFamily) bool {
		v, ok := sampleValue(f, "ambassadord_docker_resyncs_total", seriesLabels{})
		return ok && v >= 2
	}, "resyncs that changed nothing are not counted in /metrics")

	var doc statusDoc
	require.Eventually(t, func() bool {
		_, err := get(socket, "/routes", &doc)
		return err == nil && doc.Docker.Resyncs >= 3
	}, 5*time.Second, 10*time.Millisecond, "resyncs that changed nothing are not counted in /routes")
	assert.True(t, doc.Docker.Connected)
	assert.Zero(t, doc.Docker.Drift, "the listing never changed")
	assert.GreaterOrEqual(t, uint64(lists.Load()), doc.Docker.Resyncs+1, "the first listing, then one per resync")

	out, code := cli(t, socket, "status")
	require.Equal(t, 0, code, out)
	assert.Regexp(t, `resyncs [1-9]\d*, drift 0`, out)
}

// TestStatusAndMetricsReadLiveCounters: the counters the admin endpoint
// serves are the watcher's at the time of the request, not those of the
// last update it published.
func TestStatusAndMetricsReadLiveCounters(t *testing.T) {
	d, _, m := newTestDynamic(t)
	live := source.Stats{Events: 2, Resyncs: 1}
	d.followStats(func() source.Stats { return live })
	d.update(context.Background(), source.Update{Connected: true, Snapshot: &source.Snapshot{}, Stats: live})
	h := (&admin{log: zaptest.NewLogger(t), d: d, metrics: m.Handler()}).handler(false)
	routes := func() dockerStatus {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/routes", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		var doc statusDoc
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &doc))
		return doc.Docker
	}
	metric := func(name string) float64 {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		p := expfmt.NewTextParser(model.UTF8Validation)
		f, err := p.TextToMetricFamilies(rec.Body)
		require.NoError(t, err)
		return metricValue(t, f, name, seriesLabels{})
	}
	assert.Equal(t, uint64(1), routes().Resyncs)
	assert.Equal(t, 1.0, metric("ambassadord_docker_resyncs_total"))

	// A resync and an event that changed nothing: no update.
	live = source.Stats{Events: 3, Resyncs: 2}
	for _, tt := range []struct {
		name string
		got  float64
		want float64
	}{
		{"/routes resyncs", float64(routes().Resyncs), 2},
		{"/routes events", float64(routes().Events), 3},
		{"ambassadord_docker_resyncs_total", metric("ambassadord_docker_resyncs_total"), 2},
		{"ambassadord_docker_events_total", metric("ambassadord_docker_events_total"), 3},
	} {
		assert.Equal(t, tt.want, tt.got, tt.name)
	}
}
