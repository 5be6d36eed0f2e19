package metrics

import (
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// scrape fetches m's handler and parses the exposition text.
func scrape(t *testing.T, m *Metrics) metricstest.Families {
	t.Helper()
	return metricstest.Scrape(t, m.Handler())
}

// seriesLabels is a series' label set.
type seriesLabels = metricstest.Labels

func TestMetricsConnections(t *testing.T) {
	m := New("1.2.3", "abc")
	a, b := proxy.Backend{Addr: "10.0.0.2:5432", ID: "c1"}, proxy.Backend{Addr: "10.0.0.3:5432"}
	m.BackendSet("5432", []proxy.Backend{a, b})
	o := m.Observer("5432")
	o.ConnOpened(a)
	o.ConnOpened(a)
	o.ConnOpened(b)
	o.ConnClosed(a, 100, 2000, 1500*time.Millisecond)
	o.DialFailed(b, proxy.DialRefused)
	o.DialFailed(b, proxy.DialRefused)
	o.DialFailed(a, proxy.DialTimedOut)
	o.Rejected(proxy.RejectLimit)
	o.Rejected(proxy.RejectNoBackend)
	o.Rejected(proxy.RejectNoBackend)

	f := scrape(t, m)
	for _, tt := range []struct {
		name   string
		labels seriesLabels
		want   float64
	}{
		{"ambassadord_connections_active", seriesLabels{"route": "5432", "backend": a.Addr}, 1},
		{"ambassadord_connections_active", seriesLabels{"route": "5432", "backend": b.Addr}, 1},
		{"ambassadord_connections_total", seriesLabels{"route": "5432", "backend": a.Addr}, 2},
		{"ambassadord_connections_total", seriesLabels{"route": "5432", "backend": b.Addr}, 1},
		{"ambassadord_bytes_total", seriesLabels{"route": "5432", "backend": a.Addr, "direction": "up"}, 100},
		{"ambassadord_bytes_total", seriesLabels{"route": "5432", "backend": a.Addr, "direction": "down"}, 2000},
		{"ambassadord_bytes_total", seriesLabels{"route": "5432", "backend": b.Addr, "direction": "up"}, 0},
		{"ambassadord_bytes_total", seriesLabels{"route": "5432", "backend": b.Addr, "direction": "down"}, 0},
		{"ambassadord_connect_errors_total", seriesLabels{"route": "5432", "backend": b.Addr, "reason": "refused"}, 2},
		{"ambassadord_connect_errors_total", seriesLabels{"route": "5432", "backend": a.Addr, "reason": "timeout"}, 1},
		{"ambassadord_connections_rejected_total", seriesLabels{"route": "5432", "reason": "limit"}, 1},
		{"ambassadord_connections_rejected_total", seriesLabels{"route": "5432", "reason": "no_backend"}, 2},
		{"ambassadord_connections_rejected_total", seriesLabels{"route": "5432", "reason": "shutdown"}, 0},
		{"ambassadord_backends", seriesLabels{"route": "5432"}, 2},
		{"ambassadord_rewires_total", seriesLabels{"route": "5432"}, 0},
	} {
		assert.Equal(t, tt.want, metricstest.Value(t, f, tt.name, tt.labels), "%s%v", tt.name, tt.labels)
	}
	_, ok := metricstest.Find(f, "ambassadord_connect_errors_total", seriesLabels{"route": "5432", "backend": a.Addr, "reason": "refused"})
	assert.False(t, ok, "error series appear with their first error")

	h, ok := metricstest.Find(f, "ambassadord_connection_duration_seconds", seriesLabels{"route": "5432"})
	require.True(t, ok)
	assert.Equal(t, uint64(1), h.GetHistogram().GetSampleCount())
	assert.Equal(t, 1.5, h.GetHistogram().GetSampleSum())
	for _, bk := range h.GetHistogram().GetBucket() {
		want := uint64(0)
		if bk.GetUpperBound() >= 1.5 {
			want = 1
		}
		assert.Equal(t, want, bk.GetCumulativeCount(), "le=%v", bk.GetUpperBound())
	}
}

func TestMetricsFromProxy(t *testing.T) {
	// A real route on loopback sockets reports through the observer.
	const up, down = 100_000, 250_000
	for _, idle := range []time.Duration{0, time.Minute} {
		t.Run("idle="+idle.String(), func(t *testing.T) {
			m := New("dev", "")
			backend := proxy.Backend{Addr: serveOnce(t, down)}
			r := &proxy.Route{Name: "7000", IdleTimeout: idle, Observer: m.Observer("7000")}
			r.SetBackends([]proxy.Backend{backend})
			m.BackendSet("7000", r.Backends())
			ln, err := proxy.Listen(t.Context(), "127.0.0.1:0")
			require.NoError(t, err)
			served := make(chan error, 1)
			go func() { served <- r.Serve(ln) }()
			t.Cleanup(func() {
				r.Close()
				require.NoError(t, <-served)
			})

			c, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write(make([]byte, up))
			require.NoError(t, err)
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
			n, err := io.Copy(io.Discard, c)
			require.NoError(t, err)
			require.Equal(t, int64(down), n)

			bytesDown := seriesLabels{"route": "7000", "backend": backend.Addr, "direction": "down"}
			// The proxy reports a connection once both directions are done,
			// which can be just after the client saw EOF.
			require.Eventually(t, func() bool {
				v, _ := metricstest.Sample(metricstest.Gather(m.Handler()), "ambassadord_bytes_total", bytesDown)
				return v == down
			}, 5*time.Second, 5*time.Millisecond)
			f := scrape(t, m)
			assert.Equal(t, float64(up), metricstest.Value(t, f, "ambassadord_bytes_total", seriesLabels{"route": "7000", "backend": backend.Addr, "direction": "up"}))
			assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_total", seriesLabels{"route": "7000", "backend": backend.Addr}))
			assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_connections_active", seriesLabels{"route": "7000", "backend": backend.Addr}))
		})
	}
}

// serveOnce serves each connection on loopback by reading to EOF, then
// writing n bytes; it returns the address.
func serveOnce(t *testing.T, n int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, c)
			c.Write(make([]byte, n))
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestMetricsBackendSeriesAreBounded(t *testing.T) {
	m := New("dev", "")
	a, b, c := proxy.Backend{Addr: "10.0.0.2:80"}, proxy.Backend{Addr: "10.0.0.3:80"}, proxy.Backend{Addr: "10.0.0.4:80"}
	fallback := proxy.Backend{Addr: "10.0.0.9:80"}
	o := m.Observer("80")
	m.BackendSet("80", []proxy.Backend{a, b})
	o.ConnOpened(a)
	o.DialFailed(fallback, proxy.DialRefused) // a backend only the proxy named

	backends := func() []string {
		var out []string
		for _, s := range scrape(t, m)["ambassadord_connections_total"].GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "backend" {
					out = append(out, l.GetValue())
				}
			}
		}
		slices.Sort(out)
		return out
	}
	assert.Equal(t, []string{a.Addr, b.Addr}, backends())

	// b leaves the set idle: its series go at once. a still has a
	// connection: its series stay. The fallback's error series goes.
	m.Rewired("80")
	m.BackendSet("80", []proxy.Backend{c})
	assert.Equal(t, []string{a.Addr, c.Addr}, backends())
	f := scrape(t, m)
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_active", seriesLabels{"route": "80", "backend": a.Addr}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_backends", seriesLabels{"route": "80"}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_rewires_total", seriesLabels{"route": "80"}))
	assert.Empty(t, f["ambassadord_connect_errors_total"].GetMetric())

	// The last connection to a ends: its bytes stay visible until the
	// next rewire, which deletes them.
	o.ConnClosed(a, 3, 4, time.Second)
	f = scrape(t, m)
	assert.Equal(t, 4.0, metricstest.Value(t, f, "ambassadord_bytes_total", seriesLabels{"route": "80", "backend": a.Addr, "direction": "down"}))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_connections_active", seriesLabels{"route": "80", "backend": a.Addr}))
	m.BackendSet("80", []proxy.Backend{c})
	assert.Equal(t, []string{c.Addr}, backends())

	// A backend that comes back keeps counting from where it is.
	m.BackendSet("80", []proxy.Backend{c, a})
	o.ConnOpened(c)
	m.BackendSet("80", []proxy.Backend{c})
	assert.Equal(t, []string{c.Addr}, backends())
	assert.Equal(t, 1.0, metricstest.Value(t, scrape(t, m), "ambassadord_connections_total", seriesLabels{"route": "80", "backend": c.Addr}))
}

func TestMetricsRouteRemoved(t *testing.T) {
	m := New("dev", "")
	a := proxy.Backend{Addr: "10.0.0.2:80"}
	old := m.Observer("80")
	m.BackendSet("80", []proxy.Backend{a})
	m.Rewired("80")
	old.ConnOpened(a)
	old.DialFailed(a, proxy.DialOther)
	other := m.Observer("81")
	other.Rejected(proxy.RejectShutdown)
	require.Len(t, metricstest.RouteSeries(scrape(t, m), "80"), 14, "every per-route family has a series")

	m.RouteRemoved("80")
	f := scrape(t, m)
	assert.Empty(t, metricstest.RouteSeries(f, "80"))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_rejected_total", seriesLabels{"route": "81", "reason": "shutdown"}))

	// A connection the removed route was draining ends later: it is not
	// counted, and cannot drive a gauge below zero.
	old.ConnClosed(a, 10, 10, time.Second)
	old.Rejected(proxy.RejectShutdown)
	assert.Empty(t, metricstest.RouteSeries(scrape(t, m), "80"))

	// A route of the same name starts afresh.
	m.Observer("80").ConnOpened(a)
	f = scrape(t, m)
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_active", seriesLabels{"route": "80", "backend": a.Addr}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_total", seriesLabels{"route": "80", "backend": a.Addr}))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_rewires_total", seriesLabels{"route": "80"}))
}

func TestMetricsOverride(t *testing.T) {
	m := New("dev", "")
	overrides := func() map[string]string {
		out := map[string]string{}
		for _, s := range scrape(t, m)["ambassadord_route_override"].GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			assert.Equal(t, 1.0, s.GetGauge().GetValue())
			out[l["route"]] = l["target"]
		}
		return out
	}
	m.Overridden("80", "")
	m.Overridden("81", "")
	assert.Empty(t, overrides(), "no series without a rewire")

	m.Overridden("80", "web2")
	m.Overridden("81", "10.0.0.9:81")
	assert.Equal(t, map[string]string{"80": "web2", "81": "10.0.0.9:81"}, overrides())

	// Another rewire replaces the series; a reset or the route's removal
	// deletes it.
	m.Overridden("80", "web3")
	assert.Equal(t, map[string]string{"80": "web3", "81": "10.0.0.9:81"}, overrides())
	m.Overridden("80", "")
	m.RouteRemoved("81")
	assert.Empty(t, overrides())
}

func TestMetricsDocker(t *testing.T) {
	m := New("dev", "")
	docker := seriesLabels{"engine": "docker"}
	f := scrape(t, m)
	_, ok := metricstest.Find(f, "ambassadord_docker_connected", docker)
	assert.False(t, ok, "no engine series before the engine is followed")

	// The counters are read from the watcher at each scrape; the engine's
	// series are there, at 0, from the moment it is followed.
	var stats source.Stats
	m.FollowSource("docker", func() source.Stats { return stats })
	f = scrape(t, m)
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_docker_connected", docker))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_docker_events_total", docker))
	m.SourceState("docker", true, true)
	stats = source.Stats{Events: 5, Reconnects: 1, Resyncs: 2, Drift: 1}
	scrape(t, m)
	stats = source.Stats{Events: 8, Reconnects: 1, Resyncs: 3, Drift: 1}
	scrape(t, m)
	m.SourceState("docker", false, true)
	m.SourceState("docker", true, true)
	// A new watcher counts from zero again: all of it is new.
	m.FollowSource("docker", func() source.Stats { return source.Stats{Events: 2} })
	m.Applied(3 * time.Millisecond)
	m.Applied(2 * time.Second)

	f = scrape(t, m)
	for _, tt := range []struct {
		name string
		want float64
	}{
		{"ambassadord_docker_connected", 1},
		{"ambassadord_docker_events_followed", 1},
		{"ambassadord_docker_events_total", 10},
		{"ambassadord_docker_reconnects_total", 1},
		{"ambassadord_docker_resyncs_total", 3},
		{"ambassadord_docker_resync_drift_total", 1},
		{"ambassadord_docker_dropped", 0},
		{"ambassadord_docker_drops_total", 0},
	} {
		assert.Equal(t, tt.want, metricstest.Value(t, f, tt.name, docker), tt.name)
	}
	h, ok := metricstest.Find(f, "ambassadord_event_to_applied_seconds", seriesLabels{})
	require.True(t, ok)
	assert.Equal(t, uint64(2), h.GetHistogram().GetSampleCount())
	assert.InDelta(t, 2.003, h.GetHistogram().GetSampleSum(), 1e-9)
	bounds := map[float64]uint64{}
	for _, bk := range h.GetHistogram().GetBucket() {
		bounds[bk.GetUpperBound()] = bk.GetCumulativeCount()
	}
	assert.Equal(t, map[float64]uint64{.001: 0, .0025: 0, .005: 1, .01: 1, .025: 1, .05: 1, .1: 1, .25: 1, .5: 1, 1: 1, 2.5: 2, 5: 2, math.Inf(1): 2}, bounds)

	// Reachable, but its /events unanswered: connected, events not followed.
	m.SourceState("docker", true, false)
	f = scrape(t, m)
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_docker_connected", docker))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_docker_events_followed", docker))
	m.SourceState("docker", false, true)
	assert.Equal(t, 0.0, metricstest.Value(t, scrape(t, m), "ambassadord_docker_events_followed", docker), "unreachable: not followed")
}

// TestMetricsEngines: each engine has its own series, by its source's
// name: its state, its counters read live, and whether its containers are
// dropped after the engine grace, each drop counted once.
func TestMetricsEngines(t *testing.T) {
	m := New("dev", "")
	local, big := seriesLabels{"engine": "local"}, seriesLabels{"engine": "big"}
	m.FollowSource("local", func() source.Stats { return source.Stats{Events: 4, Resyncs: 1} })
	m.FollowSource("big", func() source.Stats { return source.Stats{Events: 7, Reconnects: 2, Drift: 1} })
	m.SourceState("local", true, true)
	m.SourceState("big", true, false)

	f := scrape(t, m)
	for _, tt := range []struct {
		name   string
		labels seriesLabels
		want   float64
	}{
		{"ambassadord_docker_connected", local, 1},
		{"ambassadord_docker_connected", big, 1},
		{"ambassadord_docker_events_followed", local, 1},
		{"ambassadord_docker_events_followed", big, 0},
		{"ambassadord_docker_events_total", local, 4},
		{"ambassadord_docker_events_total", big, 7},
		{"ambassadord_docker_reconnects_total", local, 0},
		{"ambassadord_docker_reconnects_total", big, 2},
		{"ambassadord_docker_resyncs_total", local, 1},
		{"ambassadord_docker_resync_drift_total", big, 1},
		{"ambassadord_docker_dropped", big, 0},
	} {
		assert.Equal(t, tt.want, metricstest.Value(t, f, tt.name, tt.labels), "%s%v", tt.name, tt.labels)
	}

	// big is lost: unreachable, then dropped once its grace is over; a
	// second report of the same drop counts nothing more.
	m.SourceState("big", false, false)
	m.SourceDropped("big", true)
	m.SourceDropped("big", true)
	f = scrape(t, m)
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_docker_connected", big))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_docker_connected", local), "the other engine's state is its own")
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_docker_dropped", big))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_docker_drops_total", big))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_docker_dropped", local))

	// It answers again; lost again later, a second drop.
	m.SourceState("big", true, true)
	m.SourceDropped("big", false)
	f = scrape(t, m)
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_docker_dropped", big))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_docker_connected", big))
	m.SourceDropped("big", true)
	assert.Equal(t, 2.0, metricstest.Value(t, scrape(t, m), "ambassadord_docker_drops_total", big))
}

func TestMetricsBuildInfoAndRuntime(t *testing.T) {
	f := scrape(t, New("1.2.3", "0123abc"))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_build_info", seriesLabels{"version": "1.2.3", "commit": "0123abc", "goversion": runtime.Version()}))
	assert.Contains(t, f, "go_goroutines")
	assert.Contains(t, f, "process_start_time_seconds")
}

// TestMetricsReference checks that the documented table and the registry
// agree: every ambassadord_* family a scrape shows is in metricDefs with
// its type and labels, and every definition shows up once driven.
func TestMetricsReference(t *testing.T) {
	m := New("dev", "")
	b := proxy.Backend{Addr: "10.0.0.2:80"}
	m.BackendSet("80", []proxy.Backend{b})
	m.Rewired("80")
	m.Overridden("80", "10.0.0.9:80")
	o := m.Observer("80")
	o.ConnOpened(b)
	o.ConnClosed(b, 1, 1, time.Millisecond)
	o.DialFailed(b, proxy.DialRefused)
	o.Rejected(proxy.RejectLimit)
	m.SourceState("docker", true, true)
	m.SourceDropped("docker", true)
	m.FollowSource("docker", func() source.Stats { return source.Stats{Events: 1, Reconnects: 1, Resyncs: 1, Drift: 1} })
	m.Applied(time.Millisecond)
	o.Handshake(proxy.SideListen, false, nil)
	m.TLS(testStore(t))
	u := m.UDPObserver("53/udp")
	m.BackendSet("53/udp", []proxy.Backend{b})
	u.FlowOpened(b)
	u.Datagrams(b, proxy.DirectionUp, 1, 64)
	u.Unreachable(b)
	m.TaskBackends("53/udp", map[string]*source.Task{b.Addr: {Service: "dns", Slot: 1, Node: "node-1"}})

	kinds := map[dto.MetricType]string{dto.MetricType_COUNTER: "counter", dto.MetricType_GAUGE: "gauge", dto.MetricType_HISTOGRAM: "histogram"}
	defs := map[string]metricDef{}
	for _, d := range metricDefs {
		require.NotContains(t, defs, d.name, "defined twice")
		defs[d.name] = d
	}
	seen := map[string]bool{}
	for name, f := range scrape(t, m) {
		if !strings.HasPrefix(name, "ambassadord_") {
			continue
		}
		seen[name] = true
		d, ok := defs[name]
		if !assert.True(t, ok, "%s is not in metricDefs", name) {
			continue
		}
		assert.Equal(t, d.kind, kinds[f.GetType()], name)
		assert.Equal(t, d.help, f.GetHelp(), name)
		for _, s := range f.GetMetric() {
			var got []string
			for _, l := range s.GetLabel() {
				got = append(got, l.GetName())
			}
			assert.ElementsMatch(t, d.labels, got, name)
		}
	}
	ref := Reference()
	for _, d := range metricDefs {
		assert.True(t, seen[d.name], "%s is defined but not registered", d.name)
		assert.NotContains(t, d.help, "|", "%s: a | would break the markdown table", d.name)
		assert.Contains(t, ref, "| `"+d.name+"` | "+d.kind+" | ")
	}
	assert.Len(t, strings.Split(strings.TrimSpace(ref), "\n"), len(metricDefs)+2)
}

func TestMetricsConcurrentUse(t *testing.T) {
	// Observers, rewires and removals at once: run with -race. Every
	// connection opened is closed, so no gauge may end other than 0.
	m := New("dev", "")
	backends := []proxy.Backend{{Addr: "10.0.0.2:80"}, {Addr: "10.0.0.3:80"}, {Addr: "10.0.0.4:80"}}
	var wg sync.WaitGroup
	for i := range 8 {
		o := m.Observer("80")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				b := backends[(i+j)%len(backends)]
				o.ConnOpened(b)
				o.DialFailed(b, proxy.DialRefused)
				o.ConnClosed(b, 1, 2, time.Millisecond)
				o.Rejected(proxy.RejectNoBackend)
			}
		}()
	}
	for j := range 100 {
		m.BackendSet("80", backends[j%len(backends):])
		m.Rewired("80")
		scrape(t, m)
	}
	wg.Wait()
	for _, s := range scrape(t, m)["ambassadord_connections_active"].GetMetric() {
		assert.Equal(t, 0.0, s.GetGauge().GetValue())
	}
}

// TestDocsListEveryMetric keeps the metrics reference, docs/metrics.md, in
// step with the code: the table of its Metrics section is exactly what
// Reference renders (paste that output to update it).
func TestDocsListEveryMetric(t *testing.T) {
	b, err := os.ReadFile("../../docs/metrics.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), "\n## Metrics\n")
	require.True(t, ok, "docs/metrics.md has no \"## Metrics\" section")
	section, _, _ = strings.Cut(section, "\n## ")
	var table strings.Builder
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "|") {
			table.WriteString(line + "\n")
		}
	}
	assert.Equal(t, Reference(), table.String())
}

// TestMetricsProxyHeaders: the PROXY protocol counters, by version and
// by reason, start at 0 for every route and count what the proxy reports.
func TestMetricsProxyHeaders(t *testing.T) {
	m := New("dev", "")
	o := m.Observer("6379")
	f := scrape(t, m)
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_proxy_headers_sent_total", seriesLabels{"route": "6379", "version": "v2"}))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_proxy_headers_rejected_total", seriesLabels{"route": "6379", "reason": "untrusted"}))
	o.ProxyHeaderSent(proxy.ProxyV2)
	o.ProxyHeaderSent(proxy.ProxyV2)
	o.ProxyHeaderSent(proxy.ProxyV1)
	o.ProxyHeaderAccepted(proxy.ProxyV1)
	o.ProxyHeaderRejected(proxy.ProxyTimeout)
	o.Rejected(proxy.RejectProxyHeader)
	f = scrape(t, m)
	assert.Equal(t, 2.0, metricstest.Value(t, f, "ambassadord_proxy_headers_sent_total", seriesLabels{"route": "6379", "version": "v2"}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_proxy_headers_sent_total", seriesLabels{"route": "6379", "version": "v1"}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_proxy_headers_accepted_total", seriesLabels{"route": "6379", "version": "v1"}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_proxy_headers_rejected_total", seriesLabels{"route": "6379", "reason": "timeout"}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_rejected_total", seriesLabels{"route": "6379", "reason": "proxy_header"}))
}
