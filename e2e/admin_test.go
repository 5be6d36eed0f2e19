//go:build e2e

package e2e

// The admin tests: the image's admin endpoint (/healthz, /readyz, /routes,
// /metrics) and its CLI (status, rewire, healthcheck) through `docker exec`,
// against an ambassador that follows the engine. Metrics are scraped from
// the host over the ambassador's bridge address, with --admin-address
// 0.0.0.0:9191, and parsed as Prometheus parses them.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// ambAdminPort is the port of the ambassador's admin endpoint
// (--admin-address, 127.0.0.1:9191 by default).
const ambAdminPort = 9191

// publicAdmin is the flag that makes the admin endpoint reachable from the
// host, read-only.
var publicAdmin = []string{"--admin-address", "0.0.0.0:" + strconv.Itoa(ambAdminPort)}

// dockerExec runs cmd in the container like `docker exec`, and returns its
// stdout, its stderr and its exit code.
func dockerExec(t *testing.T, ctx context.Context, c *harness.Container, cmd ...string) (stdout, stderr string, code int) {
	t.Helper()
	return dockerExecAs(t, ctx, c, "", cmd...)
}

// dockerExecAs is dockerExec as user (docker exec -u USER); "" is the
// container's user.
func dockerExecAs(t *testing.T, ctx context.Context, c *harness.Container, user string, cmd ...string) (stdout, stderr string, code int) {
	t.Helper()
	as := ""
	if user != "" {
		as = "-u " + user + " "
	}
	t.Logf("$ docker exec %s%s %s", as, c.Name, strings.Join(cmd, " "))
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ex, err := eng.Client.ExecCreate(ctx, c.ID, client.ExecCreateOptions{User: user, AttachStdout: true, AttachStderr: true, Cmd: cmd})
	require.NoError(t, err)
	att, err := eng.Client.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	require.NoError(t, err)
	defer att.Close()
	var o, e bytes.Buffer
	_, err = stdcopy.StdCopy(&o, &e, att.Reader)
	require.NoError(t, err)
	// The engine records the exit code a moment after the output ends.
	err = harness.Poll(ctx, func(ctx context.Context) error {
		ins, err := eng.Client.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
		if err != nil {
			return harness.Permanent(err)
		}
		if ins.Running {
			return errors.New("still running")
		}
		code = ins.ExitCode
		return nil
	})
	require.NoError(t, err)
	return o.String(), e.String(), code
}

// ambStatus is the part of `ambassadord status --json` (and of /routes)
// that the tests read.
type ambStatus struct {
	Ready  bool `json:"ready"`
	Docker struct {
		Following bool   `json:"following"`
		Connected bool   `json:"connected"`
		Events    uint64 `json:"events"`
	} `json:"docker"`
	Routes    []ambRoute `json:"routes"`
	Overrides []struct {
		Key    string `json:"key"`
		Target string `json:"target"`
	} `json:"overrides"`
}

type ambRoute struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Target   string `json:"target"`
	Override string `json:"override"`
	Backends []struct {
		Addr      string `json:"addr"`
		Container string `json:"container"`
	} `json:"backends"`
}

// route returns the route named name.
func (s ambStatus) route(t *testing.T, name string) ambRoute {
	t.Helper()
	for _, r := range s.Routes {
		if r.Name == name {
			return r
		}
	}
	require.FailNow(t, "no route "+name, "%+v", s.Routes)
	return ambRoute{}
}

// statusOf runs `ambassadord status --json` in the ambassador.
func statusOf(t *testing.T, ctx context.Context, amb *harness.Container) ambStatus {
	t.Helper()
	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "status", "--json")
	require.Equal(t, 0, code, "status: %s%s", stdout, stderr)
	var s ambStatus
	require.NoError(t, json.Unmarshal([]byte(stdout), &s), stdout)
	return s
}

// getJSON fetches url and decodes its JSON body into v.
func getJSON(t *testing.T, ctx context.Context, url string, v any) {
	t.Helper()
	require.NoError(t, fetchJSON(ctx, url, v))
}

// httpClient is the tests' HTTP client: a fresh connection for every
// request, which gets 10 s. Containers' addresses are given again from
// test to test, and a kept-alive connection to one that went without a
// FIN reaching this host (its network removed under it) would take the
// next request to that address, a new container's, into a hang that
// outlasts any poll; a hung request is given up and the poll asks again.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// fetchJSON GETs url, which must answer 200, and decodes its JSON body
// into v.
func fetchJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// localEngine labels the series of the local engine (--docker,
// --docker-host): the ambassadord_docker_* series are per engine.
var localEngine = map[string]string{"engine": "local"}

// families is a parsed scrape, by metric name.
type families map[string]*dto.MetricFamily

// scrape fetches and parses a /metrics endpoint.
func scrape(ctx context.Context, url string) (families, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return f, nil
}

// series returns the series of family name whose labels include want.
func (f families) series(name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range f[name].GetMetric() {
		n := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				n++
			}
		}
		if n == len(want) {
			out = append(out, m)
		}
	}
	return out
}

// value returns the value of the one counter or gauge series of name with
// exactly the labels want, and whether there is one.
func (f families) value(name string, want map[string]string) (float64, bool) {
	for _, m := range f.series(name, want) {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// waitMetrics polls url until check accepts a scrape, and returns that
// scrape; check says what is still missing.
func waitMetrics(t *testing.T, ctx context.Context, url string, check func(families) error) families {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var f families
	err := harness.Poll(ctx, func(ctx context.Context) error {
		var err error
		if f, err = scrape(ctx, url); err != nil {
			return err
		}
		return check(f)
	})
	require.NoError(t, err, "wait for the metrics of %s", url)
	return f
}

// want returns a check that the counter or gauge series has value v.
func want(name string, labels map[string]string, v float64) func(families) error {
	return func(f families) error {
		got, ok := f.value(name, labels)
		if !ok || got != v {
			return fmt.Errorf("%s%v = %v (present: %v), want %v", name, labels, got, ok, v)
		}
		return nil
	}
}

// all returns a check that passes when every check does.
func all(checks ...func(families) error) func(families) error {
	return func(f families) error {
		for _, c := range checks {
			if err := c(f); err != nil {
				return err
			}
		}
		return nil
	}
}

// transfer makes one integrity exchange through addr: it sends the header
// and up zero bytes, half-closes, and requires the digest of what it sent
// and reply bytes back. It returns the bytes sent and received on the wire.
func transfer(t *testing.T, ctx context.Context, addr string, up, reply int) (sent, received int) {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(readyTimeout)))
	tc := c.(*net.TCPConn)
	payload := make([]byte, up)
	_, err = tc.Write(append(dataproto.Header{Mode: dataproto.ModeIntegrity, Reply: uint64(reply)}.Encode(), payload...))
	require.NoError(t, err)
	require.NoError(t, tc.CloseWrite())
	var sum [32]byte
	_, err = io.ReadFull(tc, sum[:])
	require.NoError(t, err, "read the digest through %s", addr)
	require.Equal(t, sha256.Sum256(payload), sum, "what the backend received through %s", addr)
	n, err := io.Copy(io.Discard, tc)
	require.NoError(t, err)
	require.Equal(t, int64(reply), n, "reply bytes through %s", addr)
	return dataproto.HeaderSize + up, len(sum) + reply
}

// TestMetrics: an ambassador following the engine forwards traffic and is
// rewired by a label claim; its /metrics, scraped from the host, counts the
// connections and bytes exactly, the rewire, and the engine's events.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	redis := startServer(t, ctx, harness.Spec{Name: "redis", Networks: []string{n.Name}}, "redis")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: fullName(t, "redis"), labelPorts: strconv.Itoa(dataPort)},
		Cmd:      publicAdmin,
	})
	target, url := addr(amb, dataPort), "http://"+addr(amb, ambAdminPort)+"/metrics"
	route := strconv.Itoa(dataPort)
	onRedis := map[string]string{"route": route, "backend": addr(redis, dataPort)}
	with := func(l map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for lk, lv := range l {
			out[lk] = lv
		}
		return out
	}

	f := waitMetrics(t, ctx, url, all(
		want("ambassadord_docker_connected", localEngine, 1),
		want("ambassadord_backends", map[string]string{"route": route}, 1),
		want("ambassadord_connections_total", onRedis, 0),
	))
	info := f.series("ambassadord_build_info", map[string]string{"version": version})
	require.Len(t, info, 1, "build info of version %s: %v", version, f["ambassadord_build_info"])
	assert.Equal(t, 1.0, info[0].GetGauge().GetValue())

	// Only these connections reach the data port: the counters must match
	// what went over the wire, header and digest included.
	const conns, up, reply = 3, 100_000, 250_000
	var sent, received int
	for range conns {
		s, r := transfer(t, ctx, target, up, reply)
		sent, received = sent+s, received+r
	}
	f = waitMetrics(t, ctx, url, all(
		want("ambassadord_bytes_total", with(onRedis, "direction", "up"), float64(sent)),
		want("ambassadord_bytes_total", with(onRedis, "direction", "down"), float64(received)),
		want("ambassadord_connections_active", onRedis, 0),
	))
	got, _ := f.value("ambassadord_connections_total", onRedis)
	assert.Equal(t, float64(conns), got, "connections_total")

	// redis2 claims the target: a rewire by a Docker event.
	redis2 := startServer(t, ctx, harness.Spec{
		Name: "redis2", Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: fullName(t, "redis")},
	}, "redis2")
	waitServedBy(t, ctx, target, "redis2")
	onRedis2 := map[string]string{"route": route, "backend": addr(redis2, dataPort)}
	// waitServedBy's whoami connections count too: measure from here.
	f = waitMetrics(t, ctx, url, want("ambassadord_connections_active", onRedis2, 0))
	before, _ := f.value("ambassadord_bytes_total", with(onRedis2, "direction", "down"))
	beforeConns, _ := f.value("ambassadord_connections_total", onRedis2)
	_, r := transfer(t, ctx, target, up, reply)
	f = waitMetrics(t, ctx, url, want("ambassadord_bytes_total", with(onRedis2, "direction", "down"), before+float64(r)))

	got, _ = f.value("ambassadord_connections_total", onRedis2)
	assert.Equal(t, beforeConns+1, got, "connections_total on redis2")
	rewires, _ := f.value("ambassadord_rewires_total", map[string]string{"route": route})
	assert.GreaterOrEqual(t, rewires, 1.0, "rewires_total")
	backends, _ := f.value("ambassadord_backends", map[string]string{"route": route})
	assert.Equal(t, 1.0, backends, "backends")
	connected, _ := f.value("ambassadord_docker_connected", localEngine)
	assert.Equal(t, 1.0, connected, "docker_connected")
	events, _ := f.value("ambassadord_docker_events_total", localEngine)
	assert.Greater(t, events, 0.0, "docker_events_total")
	h := f.series("ambassadord_event_to_applied_seconds", nil)
	require.Len(t, h, 1)
	assert.GreaterOrEqual(t, h[0].GetHistogram().GetSampleCount(), uint64(1), "event_to_applied_seconds observations")
	t.Logf("docker events %v, rewires %v, event-to-applied: %d observations, %.1f ms on average",
		events, rewires, h[0].GetHistogram().GetSampleCount(),
		1000*h[0].GetHistogram().GetSampleSum()/float64(h[0].GetHistogram().GetSampleCount()))

	// The CLI reads the same counters.
	st := statusOf(t, ctx, amb)
	assert.True(t, st.Docker.Connected)
	assert.Positive(t, st.Docker.Events)
}

// TestRewireCommand: `docker exec AMB /ambassadord rewire ROUTE TARGET`
// moves new connections at once, and the override shows in `status`, in
// /routes and in /metrics; `rewire --reset` returns to the label's target;
// a rewire to a target with nothing to serve it is refused.
func TestRewireCommand(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	startServer(t, ctx, harness.Spec{Name: "a", Networks: []string{n.Name}}, "a")
	b := startServer(t, ctx, harness.Spec{Name: "b", Networks: []string{n.Name}}, "b")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: fullName(t, "a"), labelPorts: strconv.Itoa(dataPort)},
		Cmd:      publicAdmin,
	})
	target, admin := addr(amb, dataPort), "http://"+addr(amb, ambAdminPort)
	route, bName := strconv.Itoa(dataPort), fullName(t, "b")
	waitServedBy(t, ctx, target, "a")

	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "rewire", route, bName)
	require.Equal(t, 0, code, "rewire: %s%s", stdout, stderr)
	assert.Contains(t, stdout+stderr, "route "+route+" → "+addr(b, dataPort))
	// The rewire is applied before the command returns.
	id, err := load.Whoami(ctx, target)
	require.NoError(t, err)
	assert.Equal(t, "b", id.Name, "the first connection after the rewire")

	st := statusOf(t, ctx, amb)
	require.Len(t, st.Overrides, 1)
	assert.Equal(t, route, st.Overrides[0].Key)
	assert.Equal(t, bName, st.Overrides[0].Target)
	rt := st.route(t, route)
	assert.Equal(t, bName, rt.Override)
	require.Len(t, rt.Backends, 1)
	assert.Equal(t, bName, rt.Backends[0].Container)
	assert.Equal(t, addr(b, dataPort), rt.Backends[0].Addr)

	// /routes over TCP says the same.
	var routes ambStatus
	getJSON(t, ctx, admin+"/routes", &routes)
	assert.Equal(t, bName, routes.route(t, route).Override)
	require.Len(t, routes.Overrides, 1)
	var one ambRoute
	getJSON(t, ctx, admin+"/routes/"+route, &one)
	assert.Equal(t, bName, one.Override)
	assert.Equal(t, bName, one.Target)

	f := waitMetrics(t, ctx, admin+"/metrics", want("ambassadord_route_override", map[string]string{"route": route, "target": bName}, 1))
	rewires, _ := f.value("ambassadord_rewires_total", map[string]string{"route": route})
	assert.GreaterOrEqual(t, rewires, 1.0)

	// The TCP endpoint is read-only.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, admin+"/rewire", strings.NewReader(`{"key":"`+route+`","reset":true}`))
	require.NoError(t, err)
	res, err := httpClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusForbidden, res.StatusCode, "POST /rewire over TCP")

	// A target with nothing to serve it is refused, and nothing changes.
	stdout, stderr, code = dockerExec(t, ctx, amb, "/ambassadord", "rewire", route, fullName(t, "nosuch"))
	assert.NotEqual(t, 0, code)
	assert.Contains(t, stdout+stderr, "no usable backend")
	id, err = load.Whoami(ctx, target)
	require.NoError(t, err)
	assert.Equal(t, "b", id.Name)

	// Reset: back to the label's target at once.
	stdout, stderr, code = dockerExec(t, ctx, amb, "/ambassadord", "rewire", "--reset", route)
	require.Equal(t, 0, code, "rewire --reset: %s%s", stdout, stderr)
	id, err = load.Whoami(ctx, target)
	require.NoError(t, err)
	assert.Equal(t, "a", id.Name, "the first connection after the reset")
	st = statusOf(t, ctx, amb)
	assert.Empty(t, st.Overrides)
	assert.Empty(t, st.route(t, route).Override)
	f, err = scrape(ctx, admin+"/metrics")
	require.NoError(t, err)
	assert.Empty(t, f.series("ambassadord_route_override", nil), "no override series after the reset")
	stdout, stderr, code = dockerExec(t, ctx, amb, "/ambassadord", "rewire", "--reset", route)
	assert.NotEqual(t, 0, code, "a second reset has nothing to reset")
	assert.Contains(t, stdout+stderr, "no rewire of")
}

// TestAdminEndpoint: by default the admin endpoint listens on the
// container's loopback only, out of the host's reach, while the CLI works
// through `docker exec`; with --admin-address it serves /healthz, /readyz
// and /metrics to the host.
func TestAdminEndpoint(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	web := startServer(t, ctx, harness.Spec{Name: "web"}, "web")
	route := fmt.Sprintf("%d:%s", dataPort, addr(web, dataPort))
	closed := startAmbassador(t, ctx, harness.Spec{Name: "closed", Cmd: []string{"--docker=off", "--route", route}}, dataPort)
	open := startAmbassador(t, ctx, harness.Spec{Name: "open", Cmd: append([]string{"--docker=off", "--route", route}, publicAdmin...)}, dataPort)

	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr(closed, ambAdminPort))
	if err == nil {
		c.Close()
	}
	assert.Error(t, err, "the default admin endpoint is reachable from the host")
	stdout, stderr, code := dockerExec(t, ctx, closed, "/ambassadord", "healthcheck")
	assert.Equal(t, 0, code, "healthcheck: %s%s", stdout, stderr)
	st := statusOf(t, ctx, closed)
	assert.True(t, st.Ready)
	assert.False(t, st.Docker.Following)
	assert.Equal(t, addr(web, dataPort), st.route(t, strconv.Itoa(dataPort)).Backends[0].Addr)

	base := "http://" + addr(open, ambAdminPort)
	for path, body := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		require.NoError(t, err)
		res, err := httpClient.Do(req)
		require.NoError(t, err)
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, res.StatusCode, path)
		assert.Equal(t, body, string(b), path)
	}
	f, err := scrape(ctx, base+"/metrics")
	require.NoError(t, err)
	// --docker=off follows no engine: no engine has series.
	assert.Empty(t, f.series("ambassadord_docker_connected", nil), "--docker=off")
	assert.Len(t, f.series("ambassadord_build_info", map[string]string{"version": version}), 1)
	assert.Contains(t, f, "go_goroutines")
	assert.Contains(t, f, "process_start_time_seconds")
}

// adminIdleConns is how many idle connections TestAdminUnderIdleConnections
// opens to the admin port, against adminNoFile descriptors.
const (
	adminIdleConns = 1000
	adminNoFile    = 256
)

// ambFDs counts the ambassador's open descriptors, read from /proc on the
// host; the test is skipped when it cannot see the process.
func ambFDs(t *testing.T, ctx context.Context, amb *harness.Container) int {
	t.Helper()
	insp, err := eng.Inspect(ctx, amb.ID)
	require.NoError(t, err)
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", insp.State.Pid))
	if err != nil {
		t.Skipf("cannot count the ambassador's descriptors: %v", err)
	}
	return len(entries)
}

// TestAdminUnderIdleConnections: an ambassador limited to 256 descriptors,
// its admin endpoint published, and 1,000 idle connections opened to the
// admin port (130 took the data path's descriptors before the admin
// connections were capped). The admin port holds at most its cap of them
// (it closes the longest idle to make room), so the route keeps serving a
// crowd of fresh connections, /healthz answers at once, the ambassador's
// descriptors stay within the cap of what they were, and the held idle
// connections are closed after the read timeout.
func TestAdminUnderIdleConnections(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	backend := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
	route := fmt.Sprintf("%d:%s", dataPort, addr(backend, dataPort))
	amb := faultStartUlimited(t, ctx, "amb", adminNoFile, append([]string{"--route", route, "--docker", "off"}, publicAdmin...)...)
	target, admin := addr(amb, dataPort), addr(amb, ambAdminPort)
	waitServedBy(t, ctx, target, "data")
	before := ambFDs(t, ctx, amb)
	insp, err := eng.Inspect(ctx, amb.ID)
	require.NoError(t, err)
	_, kinds, err := fdKinds(insp.State.Pid)
	require.NoError(t, err)
	socketsBefore := kinds["socket"]

	start := time.Now()
	idle := make([]net.Conn, 0, adminIdleConns)
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	var d net.Dialer
	for range adminIdleConns {
		c, err := d.DialContext(ctx, "tcp", admin)
		require.NoError(t, err, "connection %d to the admin port", len(idle)+1)
		idle = append(idle, c)
	}
	opened := time.Since(start)
	during := ambFDs(t, ctx, amb)
	t.Logf("%d idle connections to the admin port opened in %s; the ambassador's descriptors: %d before, %d now (limit %d)",
		adminIdleConns, opened.Round(time.Millisecond), before, during, adminNoFile)

	// A fresh crowd through the route, while the idle connections are held.
	const crowd = 50
	cs, release := faultCrowd(ctx, target, crowd, 10*time.Second)
	served, others := faultCount(cs)
	release()
	assert.Equal(t, crowd, served, "fresh connections served through the route; the others %v", others)
	for i, c := range cs {
		assert.NoErrorf(t, c.echoErr, "client %d: echo", i)
	}

	// /healthz, from a fresh connection behind the idle crowd.
	asked := time.Now()
	res, err := httpClient.Get("http://" + admin + "/healthz")
	require.NoError(t, err, "/healthz behind %d idle connections", adminIdleConns)
	res.Body.Close()
	answered := time.Since(asked)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Less(t, answered, 2*time.Second, "/healthz behind the idle connections")

	// What the admin port did with the crowd: closed all but the newest.
	closed := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); load.Closed(err) {
			closed++
		}
	}
	peak := ambFDs(t, ctx, amb)
	t.Logf("%d of %d served through the route, /healthz answered in %s; the admin port closed %d idle connections; descriptors %d",
		served, crowd, answered.Round(time.Millisecond), closed, peak)
	assert.GreaterOrEqual(t, closed, adminIdleConns-16-1, "idle connections closed by the admin port's cap")
	assert.LessOrEqual(t, during, before+16+2, "descriptors with %d idle admin connections", adminIdleConns)
	assert.LessOrEqual(t, peak, before+16+2, "descriptors after the crowd")
	assert.Zero(t, faultLogCount(t, ctx, amb, "accept failed"), "accept failures: descriptors ran out")

	// The idle connections it still holds have sent nothing: each is
	// closed once its read timeout (5 s) runs out. Sockets are counted,
	// which is what the idle connections hold: all descriptors include
	// the runtime's own (the cgroup files it reads the CPU limit from,
	// the event loops'), and in one CI run they stayed above the count
	// before the crowd for the whole 15 s.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err = harness.Poll(wctx, func(context.Context) error {
		_, kinds, err := fdKinds(insp.State.Pid)
		if err != nil {
			return err
		}
		if n := kinds["socket"]; n > socketsBefore {
			return fmt.Errorf("%d sockets, %d before the crowd", n, socketsBefore)
		}
		return nil
	})
	require.NoError(t, err, "the held idle connections expire")
	t.Logf("descriptors back to %d, %s after the crowd was opened", ambFDs(t, ctx, amb), time.Since(start).Round(100*time.Millisecond))
	faultLogFDs(t, ctx, amb)
}

// TestAdminWritable: with --admin-writable, a rewire over TCP needs the
// token of --admin-token-file and Content-Type: application/json; a
// request naming the endpoint by a host name it does not know (as a web
// page rebinding its own name would) is refused, reads included.
func TestAdminWritable(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	a := startServer(t, ctx, harness.Spec{Name: "a"}, "a")
	b := startServer(t, ctx, harness.Spec{Name: "b"}, "b")
	secrets := t.TempDir()
	const token = "e2e-s3cret"
	require.NoError(t, os.WriteFile(filepath.Join(secrets, "admin-token"), []byte(token+"\n"), 0o600))
	amb := startAmbassador(t, ctx, harness.Spec{
		Binds: []string{secrets + ":/secrets:ro"},
		Cmd: append([]string{"--docker=off", "--route", fmt.Sprintf("%d:%s", dataPort, addr(a, dataPort)),
			"--admin-writable", "--admin-token-file", "/secrets/admin-token"}, publicAdmin...),
	}, dataPort)
	target, admin := addr(amb, dataPort), "http://"+addr(amb, ambAdminPort)
	waitServedBy(t, ctx, target, "a")

	do := func(method, path, host, auth, ctype, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, admin+path, strings.NewReader(body))
		require.NoError(t, err)
		if host != "" {
			req.Host = host
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := httpClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(b)
	}
	rewire := fmt.Sprintf(`{"key":"%d","target":"%s"}`, dataPort, addr(b, dataPort))
	for _, tt := range []struct {
		name                     string
		method, path, host, auth string
		ctype, body              string
		want                     int
		bodyHas                  string
	}{
		{"rewire without a token", "POST", "/rewire", "", "", "application/json", rewire, 401, "--admin-token-file"},
		{"rewire with another token", "POST", "/rewire", "", "Bearer nope", "application/json", rewire, 401, "--admin-token-file"},
		{"rewire as text/plain, as a web page's form would", "POST", "/rewire", "", "Bearer " + token, "text/plain", rewire, 415, "application/json"},
		{"rewire under another host name", "POST", "/rewire", "evil.example", "Bearer " + token, "application/json", rewire, 421, "--admin-hosts"},
		{"routes under another host name", "GET", "/routes", "evil.example:9191", "", "", "", 421, "--admin-hosts"},
		{"routes as localhost", "GET", "/routes", "localhost:9191", "", "", "", 200, `"routes"`},
	} {
		code, body := do(tt.method, tt.path, tt.host, tt.auth, tt.ctype, tt.body)
		assert.Equal(t, tt.want, code, "%s: %s", tt.name, body)
		assert.Contains(t, body, tt.bodyHas, tt.name)
	}
	id, err := load.Whoami(ctx, target)
	require.NoError(t, err)
	assert.Equal(t, "a", id.Name, "after the refused rewires")

	code, body := do("POST", "/rewire", "", "Bearer "+token, "application/json", rewire)
	require.Equal(t, http.StatusOK, code, body)
	id, err = load.Whoami(ctx, target)
	require.NoError(t, err)
	assert.Equal(t, "b", id.Name, "the first connection after the rewire with the token")
}

// TestAdminSocket: by default (--admin-socket auto) the ambassador's admin
// socket is a file in a directory only its user may enter, and `docker
// exec AMB /ambassadord status` finds it. A process of another user that
// takes the abstract name @ambassadord (here a second ambassadord, run as
// nobody) cannot pass for the daemon: the CLI pointed at it refuses,
// naming it, and the default still reaches the daemon.
func TestAdminSocket(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	web := startServer(t, ctx, harness.Spec{Name: "web"}, "web")
	amb := startAmbassador(t, ctx, harness.Spec{Cmd: []string{"--docker=off", "--route", fmt.Sprintf("%d:%s", dataPort, addr(web, dataPort))}}, dataPort)

	stdout, stderr, err := eng.Logs(ctx, amb.ID)
	require.NoError(t, err)
	assert.Contains(t, stdout+stderr, `"msg":"admin socket listening","listen":"/run/ambassadord/admin.sock"`)
	assert.NotContains(t, stdout+stderr, "using the abstract socket")
	st := statusOf(t, ctx, amb)
	assert.True(t, st.Ready)

	// The squatter: it cannot take the daemon's file socket, but the
	// abstract name is free for it.
	squat := []string{"/ambassadord", "--docker=off", "--admin-address=", "--admin-socket=@ambassadord",
		"--listen-address=127.0.0.1", "--route=7001:127.0.0.1:9"}
	t.Logf("$ docker exec -d -u 65534 %s %s", amb.Name, strings.Join(squat, " "))
	ex, err := eng.Client.ExecCreate(ctx, amb.ID, client.ExecCreateOptions{User: "65534", Cmd: squat})
	require.NoError(t, err)
	_, err = eng.Client.ExecStart(ctx, ex.ID, client.ExecStartOptions{Detach: true})
	require.NoError(t, err)

	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var out string
	err = harness.Poll(wctx, func(ctx context.Context) error {
		stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "healthcheck", "--admin-socket", "@ambassadord")
		out = stdout + stderr
		if code == 0 || !strings.Contains(out, "held by") {
			return fmt.Errorf("healthcheck on @ambassadord exited %d: %s", code, out)
		}
		return nil
	})
	require.NoError(t, err, "the CLI refuses the squatter")
	assert.Contains(t, out, "uid 65534, not by the daemon")
	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "healthcheck")
	assert.Equal(t, 0, code, "healthcheck with the default socket: %s%s", stdout, stderr)
	assert.Contains(t, stdout, "healthy")
}
