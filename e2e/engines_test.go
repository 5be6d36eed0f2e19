//go:build e2e

package e2e

// The several-engines tests (issue 15): an ambassador on this machine
// follows targets across engines of other "hosts". Each host is a private,
// throw-away dockerd (harness.Dockerd) with a loopback address of its own
// (127.x.y.z), serving its API there on TCP with --tlsverify, with
// certificates a PKI of the test issues (harness.PKI: one CA for the
// engines and the ambassador's client certificate, a wrong CA and an
// expired client certificate for the refusals), and publishing its
// containers' ports on that address by default (--ip): a remote container
// is reached at its engine's address and the host port it publishes. A
// local engine, when a test has one, is another private dockerd given to
// the ambassador by its unix socket (--docker-host): its containers are
// reached on its bridge, from --network bridge.
//
// The ambassador is the binary the run built, on the host, as the engine
// restart test runs it (engineRestartAmb). Everything runs under a load of
// fresh connections (each asking the dataserver who answers), with
// failures counted; the ambassador replays the connections a stopped or
// killed backend cut (--replay all: whoami is safe to run twice), so that
// zero failed is the bar while a working backend exists. Every helper's
// name starts with engines so that it cannot clash with the other files.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// enginesGrace is the --engine-grace of TestEnginesLoss: shorter than the
// default (5s) to keep the test short; the bound is the same, grace + 1 s.
const enginesGrace = 2 * time.Second

// enginesTakeover bounds, in the e2e tests, the time from a claimer's
// start event to the first new connection it accepts. The goal (p99 ≤
// 100 ms) is measured by `make bench` over 20 rewires; here, on a machine
// the whole suite shares, one sample is checked against a bound that only
// a broken rewire misses, and logged.
const enginesTakeover = time.Second

// TestEnginesFollow: three engines, A local (by its unix socket), B and C
// remote (TLS), one route to the target svc, claims invited on it.
//
//  1. b0 on B claims svc and publishes 9000: the route serves it at B's
//     address and the host port B gave it. x on C claims svc with the
//     highest priority but publishes nothing: it is never a candidate,
//     and `explain` says why. a0 on A claims svc at b0's priority: the
//     local claimer takes every new connection (locality); its stop and
//     removal give them back to b0.
//  2. c10 on C claims svc with priority 10: it takes over from b0 within
//     enginesTakeover of its start event; its stop falls back to b0.
//  3. The server moves from B to C: c0 starts on C at b0's priority, then
//     b0 stops. No new connection fails, those docker-proxy closes at a
//     remote backend's start or stop (see atRemoteChange) included, which
//     are replayed; a connection established on b0 echoes after c0 served
//     and ends only when b0 stops. A second route
//     follows the container named c0 on engine c (--route
//     PORT:c/NAME:9000), and not its namesake on B.
func TestEnginesFollow(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	pki := enginesPKI(t)
	a := enginesLocal(t, ctx)
	b := enginesRemote(t, ctx, pki, "b", false)
	c := enginesRemote(t, ctx, pki, "c", false)
	svc := fullName(t, "svc")

	x := enginesServer(t, ctx, c, "x", svc, 20, false)
	b0 := enginesServer(t, ctx, b, "b0", svc, 0, true)
	byName := fullName(t, "c0") // the name of c0, on C; a namesake on B
	port, namePort := engineRestartFreePort(t), engineRestartFreePort(t)
	amb := enginesAmbassador(t, ctx,
		"--docker-host", a.d.Host, "--network", "bridge",
		"--engine", b.flag(pki.Client), "--engine", c.flag(pki.Client),
		"--route", fmt.Sprintf("%d:%s:%d", port, svc, dataPort),
		"--route", fmt.Sprintf("%d:c/%s:%d", namePort, byName, dataPort),
		"--claims", "label,routes",
	)
	route := enginesListen(port)
	amb.waitRouteOn(t, ctx, port, readyTimeout, b0)
	published, err := b.priv.HostPort(ctx, b0.ID, dataPort)
	require.NoError(t, err)
	require.Equal(t, b.d.Address, published.Addr(), "b0 publishes on its engine's address")
	doc := amb.doc(t, ctx)
	assert.Equal(t, []string{published.String()}, doc.addrs(port), "b0 is reached at its engine's address and the port it publishes")
	t.Logf("b0 on B is served at %s (published by B for %d/tcp)", published, dataPort)

	l := startLoad(t, route)
	_, err = l.WaitLanded(ctx, "b0", time.Now(), 20)
	require.NoError(t, err)
	explain := amb.explain(t, ctx, strconv.Itoa(port))
	t.Logf("$ ambassadord explain %d\n%s", port, explain)
	assert.Contains(t, explain, x.Name, "explain names the remote claimer that publishes nothing")
	assert.Regexp(t, `(?i)skipped\s+\S*`+regexp.QuoteMeta(x.Name)+`.*publish`, explain, "explain says x publishes nothing for the port")

	// 1. Locality: a0 on the local engine, at b0's priority.
	changing := time.Now()
	a0 := enginesServer(t, ctx, a, "a0", svc, 0, false)
	aStart := waitEvent(t, ctx, a.evs, a0.ID, "start", changing)
	_, err = l.WaitLanded(ctx, "a0", aStart, 50)
	require.NoError(t, err)
	beside := amb.doc(t, ctx).addrs(port)
	stopping := time.Now()
	stopA := stopping
	require.NoError(t, a.priv.Stop(ctx, a0.ID, 5*time.Second))
	require.NoError(t, a.priv.Remove(ctx, a0.ID))
	_, err = l.WaitLanded(ctx, "b0", time.Now(), 20)
	require.NoError(t, err)
	res := l.Result()
	local := checkRewire(t, res, "b0", "a0", aStart, stopping)
	whileLocal := res.Filter(func(x load.Attempt) bool { return x.Start.After(local.first.End) && x.End.Before(stopping) })
	none(t, load.Result{Attempts: whileLocal}.Filter(func(x load.Attempt) bool { return x.ID.Name != "a0" }),
		"connections not served by the local a0 while it ran beside the remote b0 at the same priority")
	t.Logf("locality: a0 (local) took every new connection %s after its start event; %d connections while it ran, all on a0; the route's backends meanwhile: %v",
		local.latency().Round(time.Millisecond), len(whileLocal), beside)

	// 2. Priority across engines: c10 on C over b0 on B, and back.
	changing = time.Now()
	c10 := enginesServer(t, ctx, c, "c10", svc, 10, true)
	cStart := waitEvent(t, ctx, c.evs, c10.ID, "start", changing)
	_, err = l.WaitLanded(ctx, "c10", cStart, 50)
	require.NoError(t, err)
	stopping = time.Now()
	require.NoError(t, c.priv.Stop(ctx, c10.ID, 5*time.Second))
	cKill := waitEvent(t, ctx, c.evs, c10.ID, "kill", stopping)
	_, err = l.WaitLanded(ctx, "b0", cKill, 50)
	require.NoError(t, err)
	res = l.Result()
	takeover := checkRewire(t, res, "b0", "c10", cStart, stopping)
	back := checkRewire(t, res, "c10", "b0", cKill, time.Time{})
	assert.LessOrEqual(t, takeover.latency(), enginesTakeover, "c10's takeover from its start event")
	t.Logf("priority: c10 (priority 10, on C) accepted its first connection %s after its start event on C (goal: p99 ≤ 100 ms, measured by make bench; bound here %s); after its stop signal b0 (B) accepted one %s after the kill event",
		takeover.latency().Round(100*time.Microsecond), enginesTakeover, back.latency().Round(100*time.Microsecond))
	require.NoError(t, c.priv.Remove(ctx, c10.ID))

	// 3. The move from B to C, make-before-break, with the route by name.
	held := openSession(t, ctx, route)
	require.Equal(t, "b0", held.ID.Name, "the established connection")
	echo(t, held, "before the move")
	namesake := enginesServer(t, ctx, b, "c0", "", 0, true)
	require.Equal(t, byName, namesake.Name)
	changing = time.Now()
	c0 := enginesServer(t, ctx, c, "c0", svc, 0, true)
	c0Start := waitEvent(t, ctx, c.evs, c0.ID, "start", changing)
	c0Listening := time.Now() // enginesServer returned: c0 accepts
	_, err = l.WaitLanded(ctx, "c0", c0Start, 50)
	require.NoError(t, err)
	amb.waitRouteOn(t, ctx, port, dockerFaultSlack, b0, c0)
	echo(t, held, "with c0 serving too")
	amb.waitRouteOn(t, ctx, namePort, dockerFaultSlack, c0)
	for i := range 10 {
		id, err := enginesWhoami(ctx, enginesListen(namePort))
		require.NoError(t, err)
		require.Equal(t, "c0", id.Name, "connection %d to the route to c/%s", i, byName)
	}
	ends := drainWatch([]*load.Session{held}, time.Now().Add(30*time.Second))
	stopping = time.Now()
	require.NoError(t, b.priv.Stop(ctx, b0.ID, 5*time.Second))
	bKill := waitEvent(t, ctx, b.evs, b0.ID, "kill", stopping)
	bDie := waitEvent(t, ctx, b.evs, b0.ID, "die", stopping)
	end := <-ends
	_, err = l.WaitLanded(ctx, "c0", time.Now(), 50)
	require.NoError(t, err)
	res = l.Stop()
	moved := checkRewire(t, res, "b0", "c0", bKill, time.Time{})
	assert.True(t, load.Closed(end.err), "the connection established on b0 ended by %s, not closed", load.How(end.err))
	assert.False(t, end.at.Before(bKill), "the connection established on b0 ended at %s, before b0's stop signal at %s",
		end.at.Format("15:04:05.000"), bKill.Format("15:04:05.000"))
	t.Logf("move: c0 (C) accepted its first connection %s after its start event; after b0's stop signal (B) new connections went to c0 alone, the last one on b0 accepted %s before c0's first after it; the connection established on b0 echoed after c0 served and ended (%s) %s after b0's stop signal, as b0 exited (its die event came %s later)",
		enginesFirst(res, "c0", c0Start).Round(100*time.Microsecond), moved.first.ID.Accepted.Sub(enginesLast(res, "b0")).Round(100*time.Microsecond),
		load.How(end.err), end.at.Sub(bKill).Round(time.Millisecond), bDie.Sub(end.at).Round(time.Millisecond))

	t.Logf("stop signals (kill events): a0 (local) after %s, c10 (C) %s, b0 (B) %s", stopA.Format("15:04:05.000"), cKill.Format("15:04:05.000"), bKill.Format("15:04:05.000"))
	t.Logf("load: %s; longest attempt %s", res, res.Longest().Round(time.Millisecond))
	// A remote backend is reached through the port its engine publishes,
	// here by docker-proxy (the private engines run without iptables),
	// which accepts a connection and closes it when nothing listens
	// behind: between a remote container's stop signal, when the app
	// closes its listener, and the ambassador's hearing of it; and
	// between its start event and its app's listening. The ambassador
	// sees an EOF before any byte, which --replay replays as it does a
	// reset (2 such failures in 5 runs before it did). (On a host with
	// iptables, the default, a published port is a DNAT and a closed port
	// refuses: the connect fails and moves on.) They are logged apart, and
	// fail the test like any other.
	type span struct{ from, to time.Time }
	var spans []span
	for _, k := range []time.Time{cKill, bKill} {
		spans = append(spans, span{k.Add(-100 * time.Millisecond), k.Add(100 * time.Millisecond)})
	}
	for _, c := range []struct {
		name string
		at   time.Time
	}{{"c10", cStart}, {"c0", c0Start}} {
		if first, ok := res.First(c.name, c.at); ok {
			spans = append(spans, span{c.at.Add(-50 * time.Millisecond), first.ID.Accepted})
		}
	}
	atRemoteChange := func(x load.Attempt) bool {
		return !x.OK() && load.Closed(x.Err) && slices.ContainsFunc(spans, func(s span) bool {
			return x.Start.After(s.from) && x.Start.Before(s.to)
		})
	}
	proxied := res.Filter(atRemoteChange)
	t.Logf("fresh connections closed (EOF) by docker-proxy at a remote backend's start or stop: %d\n%s", len(proxied), load.Describe(proxied))
	none(t, proxied, "fresh connections closed by docker-proxy at a remote start or stop, not replayed")
	afterC0 := res.Filter(func(x load.Attempt) bool { return !x.Start.Before(c0Listening) && !x.OK() })
	none(t, afterC0, "failed connections once c0 listened")
	none(t, res.Filter(func(x load.Attempt) bool { return !x.OK() }), "failed connections (%s)", res)
	none(t, res.Filter(func(x load.Attempt) bool {
		return x.OK() && !slices.Contains([]string{"a0", "b0", "c10", "c0"}, x.ID.Name)
	}),
		"connections served by neither a0, b0, c10 nor c0 (x publishes nothing, the namesake claims nothing)")
	st, err := stats(ctx, x)
	require.NoError(t, err)
	assert.Zero(t, st.Conns, "connections x accepted")
}

// TestEnginesLoss: two remote engines, B (with live restore, so that its
// claimer outlives its daemon) and C, each with a claimer of svc at the
// same priority; the route balances them.
//
//  1. B's daemon is killed (SIGKILL, its containerd with it): its
//     published ports die with it, so connections to b0 are refused and
//     move to c0; b0 stays a candidate for --engine-grace, and is dropped
//     within grace + 1 s of the kill; traffic goes on on C.
//  2. B is started again: its claimer is back (live restore), the
//     ambassador reconnects, resyncs, and b0 serves again.
//  3. B, a moment later, is stopped (SIGTERM) and started with a server
//     certificate of another CA: the ambassador refuses it (the status
//     says why), drops b0 within grace + 1 s of B's daemon exiting, and C
//     serves on.
//
// No connection fails but those b0 was answering, through B's
// docker-proxy, when B went down (enginesCut).
func TestEnginesLoss(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	pki := enginesPKI(t)
	b := enginesRemote(t, ctx, pki, "b", true)
	c := enginesRemote(t, ctx, pki, "c", false)
	svc := fullName(t, "svc")
	b0 := enginesServer(t, ctx, b, "b0", svc, 0, true)
	c0 := enginesServer(t, ctx, c, "c0", svc, 0, true)
	port := engineRestartFreePort(t)
	amb := enginesAmbassador(t, ctx,
		"--docker=off",
		"--engine", b.flag(pki.Client), "--engine", c.flag(pki.Client),
		"--engine-grace", enginesGrace.String(),
		"--route", fmt.Sprintf("%d:%s:%d", port, svc, dataPort),
		"--claims", "label,routes",
	)
	amb.waitRouteOn(t, ctx, port, readyTimeout, b0, c0)
	l := startLoad(t, enginesListen(port))
	_, err := l.WaitLanded(ctx, "b0", time.Now(), 20)
	require.NoError(t, err)
	_, err = l.WaitLanded(ctx, "c0", time.Now(), 20)
	require.NoError(t, err)
	amb.waitMetrics(t, ctx, "B connected", want("ambassadord_docker_connected", map[string]string{"engine": "b"}, 1))

	// 1. B's daemon killed.
	killed := time.Now()
	require.NoError(t, b.d.Kill(ctx))
	loss := amb.waitDropped(t, ctx, port, "b", killed, b0, c0)
	_, err = l.WaitLanded(ctx, "c0", time.Now(), 50)
	require.NoError(t, err)
	down := amb.doc(t, ctx)
	src, _ := down.source("b")
	amb.waitMetrics(t, ctx, "B dropped", all(
		want("ambassadord_docker_connected", map[string]string{"engine": "b"}, 0),
		want("ambassadord_docker_dropped", map[string]string{"engine": "b"}, 1),
		want("ambassadord_docker_connected", map[string]string{"engine": "c"}, 1),
	))
	t.Logf("B killed at %s: b0 listed until %s after the kill, dropped %s after it (grace %s, bound grace + 1 s), B unreachable since %s after it; /routes for b: connected=%v error=%q",
		killed.Format("15:04:05.000"), loss.lastSeen.Round(time.Millisecond), loss.dropped.Round(time.Millisecond), enginesGrace,
		loss.unreachable.Round(time.Millisecond), src.Connected, src.Error)
	assert.GreaterOrEqual(t, loss.dropped, enginesGrace-harnessPoll, "b0 dropped before the grace ran out")
	assert.LessOrEqual(t, loss.dropped, enginesGrace+time.Second, "b0 dropped later than grace + 1 s after the kill")
	assert.False(t, src.Connected, "/routes says B is connected")

	// 2. B back: resync, b0 a candidate again.
	restarting := time.Now()
	require.NoError(t, b.d.Start(ctx))
	answered := time.Now()
	took := amb.waitRouteOn(t, ctx, port, dockerFaultMaxBackoff+dockerFaultSlack, b0, c0)
	_, err = l.WaitLanded(ctx, "b0", time.Now(), 20)
	require.NoError(t, err)
	amb.waitMetrics(t, ctx, "B back", all(
		want("ambassadord_docker_connected", map[string]string{"engine": "b"}, 1),
		want("ambassadord_docker_dropped", map[string]string{"engine": "b"}, 0),
	))
	t.Logf("B restarted: answered %s after its start; b0 (kept by live restore) listed again %s after that (reconnect back-off capped at %s)",
		answered.Sub(restarting).Round(time.Millisecond), took.Round(time.Millisecond), dockerFaultMaxBackoff)

	// 3. B misconfigured at run time: its certificate from another CA.
	require.NoError(t, b.d.ReissueTLS(pki.WrongCA))
	stopping := time.Now()
	require.NoError(t, b.d.Stop(ctx))
	stopped := time.Since(stopping)
	require.NoError(t, b.d.Start(ctx))
	started := time.Since(stopping)
	require.Error(t, b.d.PingTLS(ctx, pki.Client), "B answers the ambassador's certificates after its reissue")
	wrong := amb.waitDropped(t, ctx, port, "b", stopping, b0, c0)
	var bad enginesSource
	// Unreachable while it restarts, then refused: the status follows the
	// reason at the next attempt, within the back-off cap.
	tlsErr := regexp.MustCompile(`(?i)certificate|x509|tls`)
	dockerFaultWait(t, ctx, dockerFaultMaxBackoff+dockerFaultSlack, "B's TLS error in /routes", func(ctx context.Context) error {
		var s enginesStatus
		if err := fetchJSON(ctx, amb.admin+"/routes", &s); err != nil {
			return err
		}
		bad, _ = s.source("b")
		if bad.Connected || !tlsErr.MatchString(bad.Error) {
			return fmt.Errorf("b: %+v", bad)
		}
		return nil
	})
	good, _ := amb.doc(t, ctx).source("c")
	assert.True(t, good.Connected, "/routes says C is not connected: %+v", good)
	after := time.Now()
	_, err = l.WaitLanded(ctx, "c0", after, 50)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("B restarted with another CA's certificate at %s: stopped %s after the SIGTERM, answered %s after it; b0 dropped %s after the SIGTERM, B unreachable since %s after it (grace %s); /routes for b: error=%q; c: connected=%v",
		stopping.Format("15:04:05.000"), stopped.Round(time.Millisecond), started.Round(time.Millisecond), wrong.dropped.Round(time.Millisecond),
		wrong.unreachable.Round(time.Millisecond), enginesGrace, bad.Error, good.Connected)
	// B stopped answering when its daemon exited, as Stop returned: the
	// loss, from which the goal runs.
	assert.LessOrEqual(t, wrong.dropped-stopped, enginesGrace+time.Second,
		"b0 dropped %s after B's daemon exited (%s after the SIGTERM; the ambassador took B for unreachable %s after the exit): over grace + 1 s",
		(wrong.dropped - stopped).Round(time.Millisecond), wrong.dropped.Round(time.Millisecond), (wrong.unreachable - stopped).Round(time.Millisecond))

	t.Logf("load: %s; longest attempt %s", res, res.Longest().Round(time.Millisecond))
	// A connection b0 was answering through B's docker-proxy when B went
	// down is cut with it (the kill, the stop before the reissue): its
	// bytes were forwarded, and it is not replayed (b0 stays in the set
	// for the grace, and the proxy's end is an EOF, not a reset). Every
	// other one must be served.
	cut := enginesCut(killed, stopping.Add(stopped))
	t.Logf("connections cut in flight when B went down: %d\n%s", len(res.Filter(cut)), load.Describe(res.Filter(cut)))
	none(t, res.Filter(func(x load.Attempt) bool { return !x.OK() && !cut(x) }), "failed connections (%s)", res)
	afterDrop := func(at time.Time) func(load.Attempt) bool {
		return func(x load.Attempt) bool { return x.Start.After(at) && x.ID.Name == "b0" }
	}
	none(t, res.Filter(func(x load.Attempt) bool {
		return afterDrop(killed.Add(loss.dropped))(x) && x.Start.Before(restarting)
	}), "connections on b0 after it was dropped, before B came back")
	none(t, res.Filter(afterDrop(stopping.Add(wrong.dropped))), "connections on b0 after B's certificate changed and it was dropped")
}

// TestEnginesRefused: a configuration that cannot work is refused at
// start, with an error naming the engine and what to do: a CA that did
// not sign the engine's certificate, an expired client certificate, and a
// tcp:// engine without tls= or insecure. The engine answers the right
// certificates all along.
func TestEnginesRefused(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	pki := enginesPKI(t)
	d := enginesRemote(t, ctx, pki, "d", false)
	require.NoError(t, d.d.PingTLS(ctx, pki.Client), "the engine answers the ambassador's certificates")
	for _, tt := range []struct {
		name   string
		engine string
		fix    string // a regexp the error must match, besides the engine's name
	}{
		{"wrong CA", d.flag(pki.WrongCAClient), `(?i)ca\.pem|authority|CA`},
		{"expired client certificate", d.flag(pki.Expired), `(?i)expired|cert\.pem`},
		{"plain tcp without insecure", "d=" + d.d.TCPHost, `tls=.*insecure`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := enginesRefusedRun(t, ctx, "--docker=off", "--engine", tt.engine,
				"--route", fmt.Sprintf("%d:svc:%d", engineRestartFreePort(t), dataPort))
			t.Logf("$ ambassadord --engine %s ...\n%s", tt.engine, out)
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "ambassadord started with --engine %s", tt.engine)
			msg := enginesError(out)
			assert.Regexp(t, `engine "d[="]`, msg, "the error names the engine")
			assert.Regexp(t, tt.fix, msg, "the error says what to fix")
			assert.NotContains(t, out, "route listening", "a route listened before the refusal")
		})
	}
}

// enginesHost is a private engine of a test: as another host (remote,
// with TLS) or as the ambassador's own (local, by its socket).
type enginesHost struct {
	name string // the engine's name for the ambassador: NAME of --engine, or local
	d    *harness.Dockerd
	priv *harness.Engine
	evs  *harness.EventLog
}

// flag is the --engine value of a remote engine, with the certificate
// directory certDir.
func (h *enginesHost) flag(certDir string) string {
	return fmt.Sprintf("%s=%s,tls=%s", h.name, h.d.TCPHost, certDir)
}

// enginesPKI creates the test's certificates.
func enginesPKI(t *testing.T) *harness.PKI {
	t.Helper()
	p, err := harness.NewPKI(t.TempDir())
	require.NoError(t, err)
	return p
}

// enginesRemote starts a private engine as a remote host named name: its
// own loopback address, TLS with a server certificate of pki's CA. It is
// torn down when the test ends.
func enginesRemote(t *testing.T, ctx context.Context, pki *harness.PKI, name string, liveRestore bool) *enginesHost {
	t.Helper()
	h := enginesStart(t, ctx, name, harness.DockerdOptions{LiveRestore: liveRestore, TLS: pki.CA})
	t.Logf("engine %s: %s, at %s (containers publish on %s by default)", name, h.d.Host, h.d.TCPHost, h.d.Address)
	return h
}

// enginesLocal starts a private engine to be the ambassador's local one.
func enginesLocal(t *testing.T, ctx context.Context) *enginesHost {
	t.Helper()
	h := enginesStart(t, ctx, "local", harness.DockerdOptions{})
	t.Logf("engine local: %s, bridge %s", h.d.Host, h.d.Subnet)
	return h
}

func enginesStart(t *testing.T, ctx context.Context, name string, opts harness.DockerdOptions) *enginesHost {
	t.Helper()
	id := privateDockerdID()
	started := time.Now()
	d, err := harness.StartDockerdWith(ctx, id, opts)
	skipWithoutDockerd(t, err)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of private dockerd %s (engine %s, tail):\n%s", d.ID, name, d.LogTail())
		}
		assert.NoError(t, d.Close(), "tear down private dockerd %s", d.ID)
	})
	t.Logf("$ %s  # answered in %s", d.Command(), time.Since(started).Round(time.Millisecond))
	priv, err := d.Engine(ctx, eng.Label, eng.Run)
	require.NoError(t, err)
	t.Cleanup(func() { priv.Close() })
	require.NoError(t, eng.CopyImage(ctx, priv, dataImage))
	return &enginesHost{name: name, d: d, priv: priv, evs: priv.Events(ctx)}
}

// enginesServer starts on h a data server named short(t, name), answering
// whoami with name, that claims target with priority (no claim if target
// is empty) and publishes its port 9000 on the engine's address if
// publish, and waits until it accepts. It is removed when the test ends.
func enginesServer(t *testing.T, ctx context.Context, h *enginesHost, name, target string, priority int, publish bool) *harness.Container {
	t.Helper()
	s := harness.Spec{Name: short(t, name), Image: dataImage, Env: []string{"NAME=" + name}}
	if target != "" {
		s.Labels = map[string]string{labelTarget: target, labelPriority: strconv.Itoa(priority)}
	}
	if publish {
		s.Publish = map[uint16]netip.Addr{dataPort: {}}
	}
	t.Logf("$ DOCKER_HOST=%s %s  # engine %s", h.d.Host, h.priv.Command(s), h.name)
	c, err := h.priv.Start(ctx, s)
	if c != nil {
		t.Cleanup(func() {
			if !h.d.Running() {
				return // the engine's teardown removes it
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			assert.NoError(t, h.priv.Remove(ctx, c.ID))
		})
	}
	require.NoError(t, err)
	engineRestartWaitServer(t, ctx, c)
	return c
}

// enginesAmb is an ambassador on the host following several engines.
type enginesAmb struct {
	*engineRestartAmb
	socket string // its admin socket, for the CLI
}

// enginesAmbassador starts the binary under test on the host with args
// and the settings every test here shares, and waits until a route
// listens. It is stopped (SIGTERM, which must make it exit 0) when the
// test ends.
func enginesAmbassador(t *testing.T, ctx context.Context, args ...string) *enginesAmb {
	t.Helper()
	adminPort := engineRestartFreePort(t)
	a := &enginesAmb{
		engineRestartAmb: &engineRestartAmb{
			admin:  "http://" + enginesListen(adminPort),
			out:    &engineRestartOutput{},
			exited: make(chan struct{}),
		},
		socket: filepath.Join(t.TempDir(), "admin.sock"),
	}
	args = append(args,
		"--listen-address", "127.0.0.1",
		"--admin-address", enginesListen(adminPort),
		"--admin-socket", a.socket,
		"--resync", dockerFaultResync.String(),
		"--backend-wait", engineRestartBackendWait.String(),
		"--replay", "all",
		"--shutdown-grace", "1s",
		"--log-format", "json",
	)
	a.start(t, ctx, args)
	return a
}

// enginesRefusedRun runs the binary under test on the host with args, and
// returns its output and how it exited, within readyTimeout: a refused
// configuration makes it exit at once; one it accepts is stopped at the
// deadline, and its error is then nil.
func enginesRefusedRun(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	args = append(args, "--listen-address", "127.0.0.1", "--admin-address", "", "--admin-socket", "", "--log-format", "json")
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ambassadorBin, args...)
	cmd.Env = []string{}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), nil
	}
	return string(out), err
}

// enginesError returns the error the ambassador exited with: the error
// field of its JSON log line, or its output as it is (a flag's refusal is
// printed before the logger exists).
func enginesError(out string) string {
	for line := range strings.Lines(out) {
		var l struct {
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Error != "" {
			return l.Error
		}
	}
	return out
}

// enginesListen is 127.0.0.1:port, where the ambassador listens.
func enginesListen(port int) string {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)).String()
}

// waitRouteOn waits, for up to within, until the route on port serves
// exactly want, and returns how long it took.
func (a *enginesAmb) waitRouteOn(t *testing.T, ctx context.Context, port int, within time.Duration, want ...*harness.Container) time.Duration {
	t.Helper()
	return waitRouteServes(t, ctx, a.admin, "the ambassador", port, within, want...)
}

// enginesLoss is how a remote engine's loss showed in /routes.
type enginesLoss struct {
	lastSeen time.Duration // from the loss, the last poll that listed the lost backend
	dropped  time.Duration // from the loss, the first poll that did not
	// unreachable is, from the loss, when the ambassador says the engine
	// stopped answering (its unreachable_since), as of the drop.
	unreachable time.Duration
}

// waitDropped polls /routes from since, the moment an engine was lost,
// until the route on port no longer lists lost (within grace + the
// reconnect back-off + slack), the others staying listed; it returns when
// lost was last seen and first missed.
func (a *enginesAmb) waitDropped(t *testing.T, ctx context.Context, port int, engine string, since time.Time, lost *harness.Container, others ...*harness.Container) enginesLoss {
	t.Helper()
	var l enginesLoss
	var last []string
	ctx, cancel := context.WithTimeout(ctx, enginesGrace+dockerFaultMaxBackoff+dockerFaultSlack)
	defer cancel()
	err := harness.Poll(ctx, func(ctx context.Context) error {
		d, err := a.status(ctx)
		if err != nil {
			return err
		}
		ids, _ := d.backends(port)
		last = ids
		if slices.Contains(ids, lost.ID) {
			l.lastSeen = time.Since(since)
			return errors.New("still listed")
		}
		for _, o := range others {
			if !slices.Contains(ids, o.ID) {
				return harness.Permanent(fmt.Errorf("%s is no longer listed either: %v", o.Name, ids))
			}
		}
		l.dropped = time.Since(since)
		return nil
	})
	require.NoError(t, err, "wait for %s to be dropped from route %d; last backends %v", lost.Name, port, last)
	src, ok := a.doc(t, ctx).source(engine)
	require.True(t, ok, "no source %s in /routes", engine)
	l.unreachable = src.UnreachableSince.Sub(since)
	return l
}

// enginesCut returns whether an attempt failed in flight when its
// backend's engine went down at one of gone: started before (or within
// 100 ms after, the time the kill takes), failed within a second after.
func enginesCut(gone ...time.Time) func(load.Attempt) bool {
	return func(a load.Attempt) bool {
		return !a.OK() && slices.ContainsFunc(gone, func(g time.Time) bool {
			return a.Start.Before(g.Add(100*time.Millisecond)) && !a.End.Before(g) && a.End.Before(g.Add(time.Second))
		})
	}
}

// harnessPoll is how often waitDropped polls: the resolution of the drop
// times it measures.
const harnessPoll = 50 * time.Millisecond

// waitMetrics waits for the ambassador's metrics to pass check.
func (a *enginesAmb) waitMetrics(t *testing.T, ctx context.Context, what string, check func(families) error) {
	t.Helper()
	dockerFaultWait(t, ctx, dockerFaultSlack, what, func(ctx context.Context) error {
		f, err := scrape(ctx, a.admin+"/metrics")
		if err != nil {
			return err
		}
		return check(f)
	})
}

// explain runs `ambassadord explain ROUTE` against the ambassador's admin
// socket and returns its output.
func (a *enginesAmb) explain(t *testing.T, ctx context.Context, route string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ambassadorBin, "explain", "--admin-socket", a.socket, route)
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "ambassadord explain %s:\n%s", route, out)
	return string(out)
}

// enginesSource is the part of a source's status these tests read.
type enginesSource struct {
	Name      string `json:"name"`
	Following bool   `json:"following"`
	Host      string `json:"host"`
	Connected bool   `json:"connected"`
	Synced    bool   `json:"synced"`
	Error     string `json:"error"`
	// UnreachableSince is when a remote engine stopped answering.
	UnreachableSince time.Time `json:"unreachable_since"`
	Dropped          bool      `json:"dropped"`
}

// enginesStatus is the part of GET /routes these tests read, beyond
// dockerFaultDoc's.
type enginesStatus struct {
	Sources []enginesSource `json:"sources"`
	Routes  []struct {
		Listen   string `json:"listen"`
		Backends []struct {
			Addr string `json:"addr"`
		} `json:"backends"`
	} `json:"routes"`
}

// doc fetches GET /routes as enginesStatus.
func (a *enginesAmb) doc(t *testing.T, ctx context.Context) enginesStatus {
	t.Helper()
	var s enginesStatus
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, fetchJSON(ctx, a.admin+"/routes", &s))
	return s
}

// source returns the source named name.
func (s enginesStatus) source(name string) (enginesSource, bool) {
	for _, src := range s.Sources {
		if src.Name == name {
			return src, true
		}
	}
	return enginesSource{}, false
}

// addrs returns the backend addresses of the route listening on port.
func (s enginesStatus) addrs(port int) []string {
	var out []string
	for _, r := range s.Routes {
		if strings.HasSuffix(r.Listen, ":"+strconv.Itoa(port)) {
			for _, b := range r.Backends {
				out = append(out, b.Addr)
			}
		}
	}
	return out
}

// enginesWhoami asks, through a fresh connection to addr, who serves it.
func enginesWhoami(ctx context.Context, addr string) (dataproto.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return load.Whoami(ctx, addr)
}

// enginesFirst is the time from change to the first connection name
// accepted at or after it.
func enginesFirst(res load.Result, name string, change time.Time) time.Duration {
	first, ok := res.First(name, change)
	if !ok {
		return -1
	}
	return first.ID.Accepted.Sub(change)
}

// enginesLast is when name accepted its last connection of res.
func enginesLast(res load.Result, name string) time.Time {
	var last time.Time
	for _, x := range res.On(name) {
		if x.ID.Accepted.After(last) {
			last = x.ID.Accepted
		}
	}
	return last
}
