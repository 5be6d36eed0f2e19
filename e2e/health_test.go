//go:build e2e

package e2e

// The health and balancing tests: active health checks (ambassador.check)
// against real redis servers, one wedged by DEBUG SLEEP and one that runs
// without listening; least connections and weights with long and short
// connections mixed, against dataservers.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

const (
	labelCheck   = "ambassador.check"
	labelWeight  = "ambassador.weight"
	labelBalance = "ambassador.balance"
	labelPort    = "ambassador.port"
	// redisCheck is the redis check of these tests: PING, +PONG expected,
	// fast so that the tests are.
	redisCheck = `send=PING\r\n,expect=+PONG,interval=250ms,timeout=200ms,rise=2,fall=2`
)

// healthStatus is the part of `ambassadord status --json` the health
// tests read.
type healthStatus struct {
	Routes []struct {
		Name      string `json:"name"`
		Balance   string `json:"balance"`
		NoBackend string `json:"no_backend"`
		Backends  []struct {
			Addr         string    `json:"addr"`
			Container    string    `json:"container"`
			Weight       int       `json:"weight"`
			Check        string    `json:"check"`
			CheckState   string    `json:"check_state"`
			CheckDetail  string    `json:"check_detail"`
			EjectedUntil time.Time `json:"ejected_until"`
		} `json:"backends"`
	} `json:"routes"`
}

// checkStates returns the check state of every backend of the route
// named route, by container name.
func checkStates(t *testing.T, ctx context.Context, amb *harness.Container, route string) map[string]string {
	t.Helper()
	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "status", "--json")
	require.Equal(t, 0, code, "status: %s%s", stdout, stderr)
	var s healthStatus
	require.NoError(t, json.Unmarshal([]byte(stdout), &s), stdout)
	out := map[string]string{}
	for _, r := range s.Routes {
		if r.Name == route {
			for _, b := range r.Backends {
				out[b.Container] = b.CheckState
			}
		}
	}
	return out
}

// waitCheckStates polls the status until the check states of route are
// want.
func waitCheckStates(t *testing.T, ctx context.Context, amb *harness.Container, route string, want map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var got map[string]string
	err := harness.Poll(ctx, func(ctx context.Context) error {
		got = checkStates(t, ctx, amb, route)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("check states %v, want %v", got, want)
		}
		return nil
	})
	require.NoError(t, err)
}

// pingWithin PINGs redis through addr on a fresh connection, within d.
func pingWithin(ctx context.Context, addr string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return pingRESP(ctx, addr)
}

// TestActiveCheckWedgedRedis: two redis servers claim a target, each with
// a PING/+PONG check. One is wedged (DEBUG SLEEP: it still accepts
// connections, in the kernel's backlog, and answers none), which a connect
// cannot see: after fall failed checks it leaves the route, and every
// client is answered at once by the other; once it answers again it
// comes back.
func TestActiveCheckWedgedRedis(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	claimer := func(name string) *harness.Container {
		c := start(t, ctx, harness.Spec{Name: name, Image: redisImage, Networks: []string{n.Name},
			Labels: map[string]string{labelTarget: svc, labelCheck: redisCheck},
			Cmd:    []string{"--enable-debug-command", "yes"}})
		wctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		require.NoError(t, harness.WaitTCP(wctx, addr(c, 6379)))
		return c
	}
	a, b := claimer("a"), claimer("b")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: "6379"},
		Cmd:      publicAdmin,
	})
	target := addr(amb, 6379)
	waitCheckStates(t, ctx, amb, "6379", map[string]string{a.Name: "up", b.Name: "up"})
	for range 10 {
		require.NoError(t, pingWithin(ctx, target, 2*time.Second))
	}

	// Wedge b for 8 s: a connection to it is accepted, never answered.
	wedge, err := net.DialTimeout("tcp", addr(b, 6379), 5*time.Second)
	require.NoError(t, err)
	defer wedge.Close()
	_, err = wedge.Write([]byte("DEBUG SLEEP 8\r\n"))
	require.NoError(t, err)
	wedged := time.Now()
	require.Error(t, pingWithin(ctx, addr(b, 6379), 500*time.Millisecond), "b is wedged")
	waitCheckStates(t, ctx, amb, "6379", map[string]string{a.Name: "up", b.Name: "down"})
	t.Logf("b left the route %s after it was wedged", time.Since(wedged).Round(time.Millisecond))

	// Every client is answered, at once, while b sleeps.
	for i := range 20 {
		require.NoError(t, pingWithin(ctx, target, time.Second), "PING %d through the ambassador while b is wedged", i)
	}
	require.Less(t, time.Since(wedged), 7*time.Second, "the PINGs ran while b was still wedged")

	// b wakes up, passes rise checks, and comes back.
	waitCheckStates(t, ctx, amb, "6379", map[string]string{a.Name: "up", b.Name: "up"})
	f := waitMetrics(t, ctx, "http://"+addr(amb, ambAdminPort)+"/metrics", want("ambassadord_health_backends", map[string]string{"state": "up"}, 2))
	fails, _ := f.value("ambassadord_health_checks_total", map[string]string{"result": "fail"})
	passes, _ := f.value("ambassadord_health_checks_total", map[string]string{"result": "pass"})
	assert.GreaterOrEqual(t, fails, 2.0, "failed checks of b")
	assert.Greater(t, passes, fails)

	// explain shows the check.
	stdout, _, code := dockerExec(t, ctx, amb, "/ambassadord", "explain", "6379")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, `health check send=PING\r\n,expect=+PONG,interval=250ms,timeout=200ms,rise=2,fall=2: UP`)
}

// TestActiveCheckMakeBeforeBreak: a claimer of higher priority that runs
// but does not listen yet (redis without a TCP port) takes no connection,
// and the container it would replace goes on serving, without a failure;
// once it listens (CONFIG SET port) and passes its tcp check it takes
// over.
func TestActiveCheckMakeBeforeBreak(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	old := start(t, ctx, harness.Spec{Name: "old", Image: redisImage, Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: svc}})
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: "6379"},
	})
	target := addr(amb, 6379)
	who := func(ctx context.Context) (string, error) {
		rc, err := dialRESP(ctx, target)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		return rc.do("GET", "who")
	}
	// Each redis says who it is.
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(wctx, addr(old, 6379)))
	rc, err := dialRESP(ctx, addr(old, 6379))
	require.NoError(t, err)
	_, err = rc.do("SET", "who", "old")
	require.NoError(t, err)
	rc.Close()
	require.NoError(t, harness.Poll(wctx, func(ctx context.Context) error {
		got, err := who(ctx)
		if err == nil && got != "old" {
			err = fmt.Errorf("served by %q", got)
		}
		return err
	}))

	// The new one runs without a TCP port: nothing listens on 6379.
	fresh := start(t, ctx, harness.Spec{Name: "new", Image: redisImage, Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: svc, labelPriority: "10", labelCheck: "tcp,interval=250ms,timeout=200ms,rise=2,fall=2"},
		Cmd:    []string{"--port", "0", "--unixsocket", "/redis.sock"}})
	cli := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := dockerExec(t, ctx, fresh, append([]string{harness.RedisCLI, "-s", "/redis.sock"}, args...)...)
		require.Equal(t, 0, code, "redis-cli %v: %s%s", args, stdout, stderr)
		return stdout
	}
	require.NoError(t, harness.Poll(wctx, func(ctx context.Context) error {
		_, _, code := dockerExec(t, ctx, fresh, harness.RedisCLI, "-s", "/redis.sock", "PING")
		if code != 0 {
			return fmt.Errorf("redis-cli exit %d", code)
		}
		return nil
	}))
	cli("SET", "who", "new")
	waitCheckStates(t, ctx, amb, "6379", map[string]string{fresh.Name: "down"})

	// For two seconds every client is served by old, none fails.
	deadline := time.Now().Add(2 * time.Second)
	served := 0
	for time.Now().Before(deadline) {
		got, err := who(ctx)
		require.NoError(t, err, "a client while the new claimer does not listen")
		require.Equal(t, "old", got)
		served++
	}
	t.Logf("%d clients served by old while new did not listen", served)

	// It listens: once it passes, it takes over.
	listening := time.Now()
	cli("CONFIG", "SET", "port", "6379")
	require.NoError(t, harness.Poll(wctx, func(ctx context.Context) error {
		got, err := who(ctx)
		if err == nil && got != "new" {
			err = fmt.Errorf("served by %q", got)
		}
		return err
	}))
	t.Logf("new took over %s after it listened", time.Since(listening).Round(time.Millisecond))
	waitCheckStates(t, ctx, amb, "6379", map[string]string{fresh.Name: "up"})
}

// TestLeastConnWithLongConnections opens long-lived connections, each
// followed by three short ones, through two ambassadors following the
// same three dataservers, one of weight 2: round-robin puts every long
// connection on the same backend (the rotation comes back to it every
// fourth connection), least connections spreads them by weight, 2:1:1.
func TestLeastConnWithLongConnections(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	for _, s := range []struct{ name, weight string }{{"a", "2"}, {"b", "1"}, {"c", "1"}} {
		startServer(t, ctx, harness.Spec{Name: s.name, Networks: []string{n.Name},
			Labels: map[string]string{labelTarget: svc, labelWeight: s.weight}}, s.name)
	}
	follower := func(name string, args ...string) *harness.Container {
		return startFollower(t, ctx, harness.Spec{
			Name:     name,
			Networks: []string{n.Name},
			Labels:   map[string]string{labelTarget: svc, labelPorts: strconv.Itoa(dataPort)},
			Cmd:      append(append([]string{}, publicAdmin...), args...),
		})
	}
	lc := follower("least-conn", "--least-conn", "all")
	rr := follower("round-robin")
	const longs = 12
	for _, tt := range []struct {
		amb  *harness.Container
		want func(t *testing.T, got map[string]int)
	}{
		{lc, func(t *testing.T, got map[string]int) {
			assert.Equal(t, map[string]int{"a": 6, "b": 3, "c": 3}, got, "least-conn: long connections by weight")
		}},
		{rr, func(t *testing.T, got map[string]int) {
			most := 0
			for _, n := range got {
				most = max(most, n)
			}
			assert.Equal(t, longs, most, "round-robin piles the long connections up: %v", got)
		}},
	} {
		target := addr(tt.amb, dataPort)
		metrics := "http://" + addr(tt.amb, ambAdminPort) + "/metrics"
		for _, name := range []string{"a", "b", "c"} {
			waitServedBy(t, ctx, target, name)
		}
		active := func(want int) {
			t.Helper()
			waitMetrics(t, ctx, metrics, func(f families) error {
				sum := 0.0
				for _, m := range f.series("ambassadord_connections_active", map[string]string{"route": strconv.Itoa(dataPort)}) {
					sum += m.GetGauge().GetValue()
				}
				if int(sum) != want {
					return fmt.Errorf("%v connections active, want %d", sum, want)
				}
				return nil
			})
		}
		active(0)
		got := map[string]int{}
		for i := range longs {
			s := openSession(t, ctx, target)
			got[s.ID.Name]++
			for range 3 {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := load.Whoami(wctx, target)
				cancel()
				require.NoError(t, err)
			}
			active(i + 1) // the short ones ended, in the ambassador too
		}
		t.Logf("%s: long connections %v", tt.amb.Name, got)
		tt.want(t, got)
		stdout, _, code := dockerExec(t, ctx, tt.amb, "/ambassadord", "explain", strconv.Itoa(dataPort))
		require.Equal(t, 0, code)
		assert.Contains(t, stdout, "weight 2")
	}
	stdout, _, _ := dockerExec(t, ctx, lc, "/ambassadord", "explain", strconv.Itoa(dataPort))
	assert.Contains(t, stdout, "balance: least-conn")
}

// TestPassiveEjection: of two claimers without a check, one runs without
// listening (redis without a TCP port): every connect to it is refused,
// and the client served by the other; after --eject-after refusals in a
// row it is ejected, tried only after the other, which status shows and
// the metrics count.
func TestPassiveEjection(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	good := start(t, ctx, harness.Spec{Name: "good", Image: redisImage, Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: svc}})
	deaf := start(t, ctx, harness.Spec{Name: "deaf", Image: redisImage, Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: svc}, Cmd: []string{"--port", "0", "--unixsocket", "/redis.sock"}})
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: "6379"},
		Cmd:      append(append([]string{}, publicAdmin...), "--eject-after", "3", "--eject-time", "1m"),
	})
	target := addr(amb, 6379)
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(wctx, addr(good, 6379)))
	require.NoError(t, harness.Poll(wctx, func(ctx context.Context) error { return pingWithin(ctx, target, 2*time.Second) }))
	// Both are backends: deaf runs, listening on a unix socket only.
	require.NoError(t, harness.Poll(wctx, func(ctx context.Context) error {
		if got := checkStates(t, ctx, amb, "6379"); len(got) != 2 {
			return fmt.Errorf("backends %v", got)
		}
		return nil
	}))
	for i := range 10 {
		require.NoError(t, pingWithin(ctx, target, 2*time.Second), "PING %d", i)
	}
	metrics := "http://" + addr(amb, ambAdminPort) + "/metrics"
	f := waitMetrics(t, ctx, metrics, want("ambassadord_backend_ejections_total", map[string]string{"route": "6379"}, 1))
	refused, _ := f.value("ambassadord_connect_errors_total", map[string]string{"route": "6379", "backend": addr(deaf, 6379), "reason": "refused"})
	assert.Equal(t, 3.0, refused, "refusals before the ejection, none after")

	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "status", "--json")
	require.Equal(t, 0, code, stderr)
	var s healthStatus
	require.NoError(t, json.Unmarshal([]byte(stdout), &s))
	ejected := map[string]bool{}
	for _, r := range s.Routes {
		for _, b := range r.Backends {
			ejected[b.Container] = !b.EjectedUntil.IsZero()
		}
	}
	assert.Equal(t, map[string]bool{good.Name: false, deaf.Name: true}, ejected)
	stdout, _, _ = dockerExec(t, ctx, amb, "/ambassadord", "explain", "6379")
	assert.Contains(t, stdout, "EJECTED until")
}
