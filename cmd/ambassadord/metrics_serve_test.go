package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// seriesLabels is a series' whole label set.
type seriesLabels = metricstest.Labels

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

// waitScrape polls url until a scrape satisfies cond, and returns it.
func waitScrape(t *testing.T, url string, cond func(metricstest.Families) bool, msg string, args ...any) metricstest.Families {
	t.Helper()
	var f metricstest.Families
	require.Eventually(t, func() bool {
		f = metricstest.ScrapeURL(url)
		return f != nil && cond(f)
	}, 5*time.Second, 10*time.Millisecond, append([]any{msg}, args...)...)
	return f
}

// waitMetric polls url until the counter or gauge series has the value
// want, and returns the last scrape.
func waitMetric(t *testing.T, url, name string, labels seriesLabels, want float64) metricstest.Families {
	t.Helper()
	return waitScrape(t, url, func(f metricstest.Families) bool {
		got, ok := metricstest.Sample(f, name, labels)
		return ok && got == want
	}, "%s%v never was %v", name, labels, want)
}

// TestServeMetrics runs the daemon's serve path with its admin endpoint,
// forwards traffic through a route, rewires it by hand and back, and reads
// the result the way Prometheus would: over HTTP, in the text format.
func TestServeMetrics(t *testing.T) {
	const up, downA, downB = 70_000, 130_000, 9_000
	a, b := serveOnce(t, downA), serveOnce(t, downB)
	listen := strconv.Itoa(nettest.FreePort(t))
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

	f := metricstest.ScrapeURL(url)
	require.NotNil(t, f, "the admin endpoint serves metrics")
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_build_info", seriesLabels{"version": version, "commit": buildCommit(), "goversion": runtime.Version()}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_backends", seriesLabels{"route": listen}))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_connections_total", onA))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_rewires_total", seriesLabels{"route": listen}))
	assert.Empty(t, f["ambassadord_docker_connected"].GetMetric(), "--docker=off: no engine followed, no engine series")
	assert.NotContains(t, f, "ambassadord_route_override", "no rewire yet")

	// Two connections through the route: the byte counters are what the
	// client sent and what the backend answered.
	for range 2 {
		require.Equal(t, int64(downA), exchange(t, addr, up))
	}
	waitMetric(t, url, "ambassadord_bytes_total", with(onA, "direction", "down"), 2*downA)
	// A scrape reads each family at its own moment, so the gauge may lag
	// the bytes in the same scrape.
	f = waitScrape(t, url, func(f metricstest.Families) bool {
		active, _ := metricstest.Sample(f, "ambassadord_connections_active", onA)
		h, ok := metricstest.Find(f, "ambassadord_connection_duration_seconds", seriesLabels{"route": listen})
		return active == 0 && ok && h.GetHistogram().GetSampleCount() == 2
	}, "both connections done")
	assert.Equal(t, float64(2*up), metricstest.Value(t, f, "ambassadord_bytes_total", with(onA, "direction", "up")))
	assert.Equal(t, float64(2*downA), metricstest.Value(t, f, "ambassadord_bytes_total", with(onA, "direction", "down")))
	assert.Equal(t, 2.0, metricstest.Value(t, f, "ambassadord_connections_total", onA))

	// A rewire by hand shows as a rewire and as an override; the idle
	// previous backend's series go.
	out, code := cli(t, socket, "rewire", listen, b)
	require.Equal(t, 0, code, out)
	require.Equal(t, int64(downB), exchange(t, addr, up))
	f = waitMetric(t, url, "ambassadord_bytes_total", with(onB, "direction", "down"), downB)
	assert.Equal(t, float64(up), metricstest.Value(t, f, "ambassadord_bytes_total", with(onB, "direction", "up")))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_total", onB))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_rewires_total", seriesLabels{"route": listen}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_backends", seriesLabels{"route": listen}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_route_override", seriesLabels{"route": listen, "target": b}))
	_, ok := metricstest.Find(f, "ambassadord_connections_total", onA)
	assert.False(t, ok, "the previous backend's series are deleted")

	// The reset is a rewire too, and ends the override.
	out, code = cli(t, socket, "rewire", "--reset", listen)
	require.Equal(t, 0, code, out)
	f = waitMetric(t, url, "ambassadord_rewires_total", seriesLabels{"route": listen}, 2)
	assert.Empty(t, f["ambassadord_route_override"].GetMetric())
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_connections_total", onA), "a backend back in the set starts afresh")
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

	waitScrape(t, "http://"+adminAddr+"/metrics", func(f metricstest.Families) bool {
		v, ok := metricstest.Sample(f, "ambassadord_docker_resyncs_total", seriesLabels{"engine": "local"})
		return ok && v >= 2
	}, "resyncs that changed nothing are not counted in /metrics")

	var doc *api.Status
	require.Eventually(t, func() bool {
		var err error
		doc, err = client(socket).Status(context.Background())
		return err == nil && doc.Docker.Resyncs >= 3
	}, 5*time.Second, 10*time.Millisecond, "resyncs that changed nothing are not counted in /routes")
	assert.True(t, doc.Docker.Connected)
	assert.Zero(t, doc.Docker.Drift, "the listing never changed")
	assert.GreaterOrEqual(t, uint64(lists.Load()), doc.Docker.Resyncs+1, "the first listing, then one per resync")

	out, code := cli(t, socket, "status")
	require.Equal(t, 0, code, out)
	assert.Regexp(t, `resyncs [1-9]\d*, drift 0`, out)
}

// liveSource is a source whose counters move on without an update, as a
// watcher's do when an event or a resync changes nothing.
type liveSource struct {
	updates chan source.Update
	stats   atomic.Pointer[source.Stats]
}

func (s *liveSource) Name() string                  { return "docker" }
func (s *liveSource) Updates() <-chan source.Update { return s.updates }
func (s *liveSource) Stats() source.Stats           { return *s.stats.Load() }

// Run publishes one update, as the first listing would, then waits.
func (s *liveSource) Run(ctx context.Context) error {
	select {
	case s.updates <- source.Update{Source: "docker", Connected: true, Snapshot: &source.Snapshot{}, Stats: s.Stats()}:
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}

// TestStatusAndMetricsReadLiveCounters: the counters the admin endpoint
// serves are the source's at the time of the request, not those of the
// last update it published.
func TestStatusAndMetricsReadLiveCounters(t *testing.T) {
	src := &liveSource{updates: make(chan source.Update, 1)}
	src.stats.Store(&source.Stats{Events: 2, Resyncs: 1})
	adminAddr := "127.0.0.1:" + strconv.Itoa(nettest.FreePort(t))
	cfg, err := parseConfig([]string{"--docker=off", "--listen-address=127.0.0.1", "--admin-socket=", "--admin-address", adminAddr}, env())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveSources(ctx, cfg, nil, []source.Source{src}, map[string]string{"docker": "unix:///x.sock"}, zaptest.NewLogger(t))
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	routes := func() api.Source {
		t.Helper()
		resp, err := http.Get("http://" + adminAddr + "/routes")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var doc api.Status
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
		return doc.Docker
	}
	metric := func(name string) float64 {
		t.Helper()
		f := metricstest.ScrapeURL("http://" + adminAddr + "/metrics")
		require.NotNil(t, f)
		return metricstest.Value(t, f, name, seriesLabels{"engine": "docker"})
	}
	// The update is applied.
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, uint64(1), routes().Resyncs)
	assert.Equal(t, 1.0, metric("ambassadord_docker_resyncs_total"))

	// A resync and an event that changed nothing: no update.
	src.stats.Store(&source.Stats{Events: 3, Resyncs: 2})
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
