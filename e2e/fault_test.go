//go:build e2e

package e2e

// The fault suite (issue 6), first part: real faults injected into real
// containers behind an ambassador that follows the engine. Each test says
// what "nothing lost" means for its fault and checks it, logging the
// numbers. This file holds the backend faults (killed mid-stream, paused,
// disconnected from the network) and the helpers the fault_*_test.go files
// share; every helper's name starts with fault so that it cannot clash with
// the other e2e files.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// faultRoute is the route every fault ambassador serves: its listen port.
var faultRoute = strconv.Itoa(dataPort)

// faultFollower starts an ambassador on network n that follows the engine
// and serves target on dataPort, with its admin endpoint published
// (read-only) so that the test can read its connection count and metrics
// from the host. extra are more flags.
func faultFollower(t *testing.T, ctx context.Context, n *harness.Network, target string, extra ...string) *harness.Container {
	t.Helper()
	return startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: target, labelPorts: faultRoute},
		Cmd:      append(slices.Clone(publicAdmin), extra...),
	})
}

// faultActive returns the number of connections the ambassador's route is
// forwarding now, as its admin endpoint reports them (GET /routes/9000,
// the count `ambassadord status` shows).
func faultActive(ctx context.Context, amb *harness.Container) (int, error) {
	var r struct {
		Active int `json:"active_connections"`
	}
	err := fetchJSON(ctx, "http://"+addr(amb, ambAdminPort)+"/routes/"+faultRoute, &r)
	return r.Active, err
}

// faultWaitActive waits until the route forwards exactly want connections,
// both by its own count and by the sum of its
// ambassadord_connections_active series (a backend's series may be gone:
// that counts as 0), and returns how long that took.
func faultWaitActive(t *testing.T, ctx context.Context, amb *harness.Container, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	url := "http://" + addr(amb, ambAdminPort) + "/metrics"
	err := harness.Poll(ctx, func(ctx context.Context) error {
		n, err := faultActive(ctx, amb)
		if err != nil {
			return err
		}
		f, err := scrape(ctx, url)
		if err != nil {
			return err
		}
		var sum float64
		for _, m := range f.series("ambassadord_connections_active", map[string]string{"route": faultRoute}) {
			sum += m.GetGauge().GetValue()
		}
		if n != want || sum != float64(want) {
			return fmt.Errorf("active connections %d, metric sum %v, want %d", n, sum, want)
		}
		return nil
	})
	require.NoError(t, err, "wait for %s to forward %d connections", amb.Name, want)
	return time.Since(start)
}

// faultMetric returns the value of one ambassador metric with exactly the
// labels given (0 when the series does not exist).
func faultMetric(t *testing.T, ctx context.Context, amb *harness.Container, name string, labels map[string]string) float64 {
	t.Helper()
	f, err := scrape(ctx, "http://"+addr(amb, ambAdminPort)+"/metrics")
	require.NoError(t, err)
	v, _ := f.value(name, labels)
	return v
}

// faultKill kills a container like `docker kill` (SIGKILL) and returns
// when the engine has done so.
func faultKill(t *testing.T, ctx context.Context, c *harness.Container) {
	t.Helper()
	t.Logf("$ docker kill %s", c.Name)
	_, err := eng.Client.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "SIGKILL"})
	require.NoError(t, err)
}

// faultPause freezes every process of a container like `docker pause`:
// its kernel still completes handshakes and buffers bytes, but nothing
// reads or answers them.
func faultPause(t *testing.T, ctx context.Context, c *harness.Container) {
	t.Helper()
	t.Logf("$ docker pause %s", c.Name)
	_, err := eng.Client.ContainerPause(ctx, c.ID, client.ContainerPauseOptions{})
	require.NoError(t, err)
}

// faultUnpause is `docker unpause`.
func faultUnpause(t *testing.T, ctx context.Context, c *harness.Container) {
	t.Helper()
	t.Logf("$ docker unpause %s", c.Name)
	_, err := eng.Client.ContainerUnpause(ctx, c.ID, client.ContainerUnpauseOptions{})
	require.NoError(t, err)
}

// faultDelivered subscribes to the engine's events about c and returns a
// function that waits (within readyTimeout) for the first event with the
// given action and returns when this process received it: the earliest
// moment any follower of the engine, the ambassador included, could know
// of it.
func faultDelivered(t *testing.T, ctx context.Context, c *harness.Container, action string) func() time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	res := eng.Client.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("container", c.ID)})
	at := make(chan time.Time, 1)
	go func() {
		for {
			select {
			case m := <-res.Messages:
				if string(m.Action) == action {
					at <- time.Now()
					return
				}
			case <-res.Err:
				return
			}
		}
	}()
	return func() time.Time {
		t.Helper()
		select {
		case got := <-at:
			return got
		case <-time.After(readyTimeout):
			require.FailNow(t, "no "+action+" event delivered for "+c.Name)
			return time.Time{}
		}
	}
}

// faultDownload is one integrity download through the ambassador: the
// client sends an empty upload and reads the fixture's stream, checking
// every byte against dataproto.Stream(seed) as it arrives.
type faultDownload struct {
	seed     uint64
	received int64 // stream bytes received (the digest excluded)
	mismatch int64 // offset of the first byte that differs from the stream; -1 if none
	err      error // how it ended: io.EOF, a reset, a deadline, ...
	end      time.Time
}

// faultDownloadReadBuffer caps the client's receive buffer so that a
// client that stops reading holds the stream back after a few hundred KB,
// rather than letting the kernel buffer most of it.
const faultDownloadReadBuffer = 128 << 10

// faultStartDownload dials addr and asks for size bytes of Stream(seed).
// It reads until it has received pauseAt bytes, sends on ready, and waits
// for resume to be closed before reading on, to the end of the
// connection. The connection's deadline is hangAfter past resume: a
// client still reading then has hung. The result is sent on done.
func faultStartDownload(ctx context.Context, addr string, seed uint64, size, pauseAt int64, hangAfter time.Duration,
	ready chan<- struct{}, resume <-chan struct{}, done chan<- faultDownload) {
	d := faultDownload{seed: seed, mismatch: -1}
	defer func() {
		d.end = time.Now()
		done <- d
	}()
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		d.err = fmt.Errorf("dial: %w", err)
		ready <- struct{}{}
		return
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	tc.SetReadBuffer(faultDownloadReadBuffer)
	tc.SetDeadline(time.Now().Add(readyTimeout))
	if _, err := tc.Write(dataproto.Header{Mode: dataproto.ModeIntegrity, Seed: seed, Reply: uint64(size)}.Encode()); err != nil {
		d.err = fmt.Errorf("send header: %w", err)
		ready <- struct{}{}
		return
	}
	tc.CloseWrite()
	var sum [32]byte
	if _, err := io.ReadFull(tc, sum[:]); err != nil {
		d.err = fmt.Errorf("read digest: %w", err)
		ready <- struct{}{}
		return
	}
	if sum != sha256.Sum256(nil) {
		d.err = errors.New("digest of the empty upload is wrong")
		ready <- struct{}{}
		return
	}
	want := dataproto.Stream(seed)
	buf, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	signalled := false
	for {
		if !signalled && d.received >= pauseAt {
			signalled = true
			ready <- struct{}{}
			select {
			case <-resume:
			case <-ctx.Done():
				d.err = ctx.Err()
				return
			}
			tc.SetDeadline(time.Now().Add(hangAfter))
		}
		n, err := tc.Read(buf)
		if n > 0 {
			io.ReadFull(want, exp[:n])
			if d.mismatch < 0 {
				for i := range n {
					if buf[i] != exp[i] {
						d.mismatch = d.received + int64(i)
						break
					}
				}
			}
			d.received += int64(n)
		}
		if err != nil {
			d.err = err
			if !signalled {
				ready <- struct{}{}
			}
			return
		}
	}
}

// faultDownloads runs n downloads of size bytes against addr, all paused
// after pauseAt bytes. It returns once every one has paused (or failed),
// with resume, which lets them read on, and wait, which returns their
// results once all have ended.
func faultDownloads(t *testing.T, ctx context.Context, addr string, n int, size, pauseAt int64, hangAfter time.Duration) (resume func(), wait func() []faultDownload) {
	t.Helper()
	ready := make(chan struct{}, n)
	done := make(chan faultDownload, n)
	resumeCh := make(chan struct{})
	var once sync.Once
	resume = func() { once.Do(func() { close(resumeCh) }) }
	t.Cleanup(resume)
	for i := range n {
		go faultStartDownload(ctx, addr, uint64(1000+i), size, pauseAt, hangAfter, ready, resumeCh, done)
	}
	wait = func() []faultDownload {
		resume()
		var out []faultDownload
		for range n {
			out = append(out, <-done)
		}
		slices.SortFunc(out, func(a, b faultDownload) int { return int(a.seed) - int(b.seed) })
		return out
	}
	timeout := time.NewTimer(readyTimeout)
	defer timeout.Stop()
	for i := range n {
		select {
		case <-ready:
		case <-timeout.C:
			resume()
			require.FailNowf(t, "downloads did not start", "%d of %d downloads reached %d bytes within %s", i, n, pauseAt, readyTimeout)
		}
	}
	return resume, wait
}

// faultCheckCut checks downloads cut by a backend going away at gone: each
// ended (EOF or reset, never a deadline) within limit of gone, short of
// the full stream, and every byte it received was the stream's. It returns
// the latest end relative to gone.
func faultCheckCut(t *testing.T, ds []faultDownload, size int64, gone time.Time, since string, limit time.Duration) time.Duration {
	t.Helper()
	var latest time.Duration
	var total, least, most int64
	least = size
	for _, d := range ds {
		after := d.end.Sub(gone)
		latest = max(latest, after)
		total += d.received
		least, most = min(least, d.received), max(most, d.received)
		assert.Truef(t, load.Closed(d.err), "download %d: ended by %v (%s), want EOF or reset", d.seed, d.err, load.How(d.err))
		assert.LessOrEqualf(t, after, limit, "download %d ended %s after %s", d.seed, after.Round(time.Millisecond), since)
		assert.Equalf(t, int64(-1), d.mismatch, "download %d: byte %d differs from the stream", d.seed, d.mismatch)
		assert.Lessf(t, d.received, size, "download %d was not cut midway", d.seed)
	}
	hows := map[string]int{}
	for _, d := range ds {
		hows[load.How(d.err)]++
	}
	t.Logf("%d downloads of %d MiB cut: ended %v, the last %s after %s; received %.1f MiB in all (%.2f to %.2f MiB each), every byte a correct prefix",
		len(ds), size>>20, hows, latest.Round(time.Millisecond), since, float64(total)/(1<<20), float64(least)/(1<<20), float64(most)/(1<<20))
	return latest
}

// TestFaultBackendKilledMidStream: 20 clients each download 32 MiB from
// one backend through the ambassador and stop reading after 2 MiB, so that
// every transfer is in flight with bytes queued at every hop; then the
// backend is killed (docker kill, SIGKILL: it sends nothing more, and its
// network namespace goes away with bytes unsent).
//
// Nothing lost means: every client learns that its stream ended (EOF or
// reset, not a hang) within 1 s of the engine's die event, every byte it
// received is the stream's byte at that offset (a correct prefix: nothing
// dropped, duplicated or reordered before the cut), and the ambassador
// forgets every connection (its active count and metric return to 0).
func TestFaultBackendKilledMidStream(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	src := startServer(t, ctx, harness.Spec{Name: "src", Networks: []string{n.Name}}, "src")
	amb := faultFollower(t, ctx, n, fullName(t, "src"))
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "src")

	const streams, size, pauseAt = 20, 32 << 20, 2 << 20
	resume, wait := faultDownloads(t, ctx, target, streams, size, pauseAt, 10*time.Second)
	faultWaitActive(t, ctx, amb, streams, readyTimeout)

	evs := eng.Events(ctx)
	seen := faultDelivered(t, ctx, src, "die")
	killing := time.Now()
	faultKill(t, ctx, src)
	t.Logf("docker kill took %s", time.Since(killing).Round(time.Millisecond))
	resume()
	ds := wait()
	died := waitEvent(t, ctx, evs, src.ID, "die", killing)
	delivered := seen()
	t.Logf("the die event is stamped %s after the kill call and was delivered to a subscriber on the host %s after its stamp",
		died.Sub(killing).Round(time.Millisecond), delivered.Sub(died).Round(time.Millisecond))
	// No follower of the engine can act before the engine delivers the
	// event: on a loaded engine that alone can take a second. The 1 s
	// runs from the delivery; the engine's stamp gets a bound that only a
	// hang exceeds.
	faultCheckCut(t, ds, size, delivered, "the die event was delivered", time.Second)
	faultCheckCut(t, ds, size, died, "the die event's stamp", 5*time.Second)

	took := faultWaitActive(t, ctx, amb, 0, 10*time.Second)
	t.Logf("the ambassador forwarded 0 connections %s after the last client ended", took.Round(time.Millisecond))
}

// TestFaultBackendPaused: two backends claim one target; one of them is
// paused (docker pause) while a load of fresh connections runs, and while
// an established connection to it is echoing 4 MiB. A paused container's
// kernel still completes handshakes, so a proxy that kept it would hold
// new connections until the unpause.
//
// Nothing lost means: every connection of the load is answered (none
// fails); those started once the pause is known (1 s after its event was
// delivered, a generous bound on a busy machine) all land on the other
// backend, none waits on the paused one; connections already on the
// paused backend are kept, and after the unpause the established one
// echoes every byte sent while it was frozen, SHA-256 equal, and then
// goes on working.
func TestFaultBackendPaused(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc") // claimed only: no container has this name
	claimer := func(name string) harness.Spec {
		return harness.Spec{Name: name, Networks: []string{n.Name}, Labels: map[string]string{labelTarget: svc}}
	}
	a := startServer(t, ctx, claimer("a"), "a")
	startServer(t, ctx, claimer("b"), "b")
	amb := faultFollower(t, ctx, n, svc)
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "a")
	waitServedBy(t, ctx, target, "b")

	// Round robin: one of the next two connections lands on a.
	var onA *load.Session
	for range 4 {
		if s := openSession(t, ctx, target); s.ID.Name == "a" {
			onA = s
			break
		}
	}
	require.NotNil(t, onA, "no session landed on a")
	echo(t, onA, "before the pause")

	evs := eng.Events(ctx)
	seen := faultDelivered(t, ctx, a, "pause")
	// The connections that reach a before the ambassador knows of the
	// pause are held for as long as it lasts, which is as long as the
	// steps below take on a busy machine: their bound is the test's, not
	// the usual attempt's.
	cfg := testLoad
	cfg.Timeout = 3 * readyTimeout
	l := load.Start(target, cfg)
	t.Cleanup(func() { l.Stop() })
	_, err := l.WaitLanded(ctx, "a", time.Now(), 10)
	require.NoError(t, err)
	_, err = l.WaitLanded(ctx, "b", time.Now(), 10)
	require.NoError(t, err)

	pausing := time.Now()
	faultPause(t, ctx, a)
	paused := waitEvent(t, ctx, evs, a.ID, "pause", pausing)
	delivered := seen()

	// 4 MiB echoed on the established connection while a is frozen: the
	// writes fill the buffers and block, the echo waits for the unpause.
	const echoSize = 4 << 20
	echoed := make(chan error, 1)
	go func() { echoed <- faultEcho(onA, 7, echoSize) }()

	// No follower of the engine can act before the engine delivers the
	// event, which on a loaded engine can lag its stamp by a second.
	settled := delivered.Add(time.Second)
	_, err = l.WaitLanded(ctx, "b", settled, 100)
	require.NoError(t, err)
	select {
	case err := <-echoed:
		require.Failf(t, "the echo completed while a was paused", "err %v", err)
	default:
	}

	unpausing := time.Now()
	faultUnpause(t, ctx, a)
	unpaused := waitEvent(t, ctx, evs, a.ID, "unpause", unpausing)
	_, err = l.WaitLanded(ctx, "a", unpaused, 10)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("load: %s; a paused %s (event delivered %s after its stamp), unpaused %s later", res, paused.Format("15:04:05.000"),
		delivered.Sub(paused).Round(time.Millisecond), unpaused.Sub(paused).Round(time.Millisecond))

	select {
	case err := <-echoed:
		require.NoError(t, err, "the echo on the connection established to a before its pause")
	case <-time.After(readyTimeout):
		require.FailNow(t, "the echo on a did not complete after the unpause")
	}
	echo(t, onA, "after the unpause")
	t.Logf("the established connection to a echoed %d MiB sent while a was paused, SHA-256 equal", echoSize>>20)

	requireNoFailures(t, res)
	during := res.Filter(func(x load.Attempt) bool { return x.Start.After(settled) && x.End.Before(unpaused) })
	none(t, load.Result{Attempts: during}.On("a"), "connections started 1 s after the pause event landed on the paused a")
	t.Logf("%d connections started between 1 s after the pause and the unpause: all on b", len(during))

	// Connections that reached a before the ambassador knew of the pause
	// waited for the unpause: the only ones that could.
	var held []load.Attempt
	var lastStart time.Time
	for _, x := range res.On("a") {
		if x.End.After(paused) && x.Start.Before(unpaused) {
			held = append(held, x)
			if x.Start.After(lastStart) {
				lastStart = x.Start
			}
		}
	}
	if len(held) > 0 {
		t.Logf("%d connections reached a around its pause and were answered after the unpause; the last started %s after the pause event",
			len(held), lastStart.Sub(paused).Round(time.Millisecond))
	}
}

// faultEcho sends size bytes of Stream(seed) on an echo session and reads
// them back, concurrently, comparing their SHA-256.
func faultEcho(s *load.Session, seed uint64, size int64) error {
	s.Conn.SetDeadline(time.Now().Add(2 * readyTimeout))
	sent := make(chan error, 1)
	go func() {
		_, err := io.CopyN(s.Conn, dataproto.Stream(seed), size)
		sent <- err
	}()
	h := sha256.New()
	n, err := io.CopyN(h, s.R, size)
	if err != nil {
		return fmt.Errorf("read the echo after %d of %d bytes: %w", n, size, err)
	}
	if err := <-sent; err != nil {
		return fmt.Errorf("send: %w", err)
	}
	w := sha256.New()
	io.CopyN(w, dataproto.Stream(seed), size)
	if string(h.Sum(nil)) != string(w.Sum(nil)) {
		return errors.New("the echoed bytes differ from those sent")
	}
	return nil
}

// TestFaultBackendDisconnected: the backend is disconnected from the only
// network it shares with the ambassador (docker network disconnect). Its
// interface vanishes: it sends no FIN and no reset, so nothing on the wire
// ever tells the ambassador or its clients; only the engine's event does.
// Three clients have idle sessions, three have sessions that send a
// message after the disconnect (bytes the backend can never receive), and
// four are downloading.
//
// Nothing lost (and nobody left hanging) means: every one of those
// connections is closed (EOF or reset, not a deadline) within 2 s of the
// disconnect event, the downloads' bytes are a correct prefix of their
// stream, a new connection (no backend now) is closed after --backend-wait
// instead of hanging, and the ambassador's active count returns to 0.
func TestFaultBackendDisconnected(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	db := startServer(t, ctx, harness.Spec{Name: "db", Networks: []string{n.Name}}, "db")
	amb := faultFollower(t, ctx, n, fullName(t, "db"), "--backend-wait", "2s")
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "db")

	const idle, talking, streams, size = 3, 3, 4, 32 << 20
	var sessions []*load.Session
	for range idle + talking {
		s := openSession(t, ctx, target)
		echo(t, s, "before the disconnect")
		sessions = append(sessions, s)
	}
	resume, wait := faultDownloads(t, ctx, target, streams, size, 2<<20, 10*time.Second)
	faultWaitActive(t, ctx, amb, idle+talking+streams, readyTimeout)

	evs := eng.Events(ctx)
	disconnecting := time.Now()
	t.Logf("$ docker network disconnect %s %s", n.Name, db.Name)
	require.NoError(t, eng.Disconnect(ctx, n.ID, db.ID))
	resume()

	type ended struct {
		i   int
		err error
		at  time.Time
	}
	results := make(chan ended, len(sessions))
	for i, s := range sessions {
		go func() {
			s.Conn.SetDeadline(time.Now().Add(10 * time.Second))
			if i >= idle {
				if _, err := s.Conn.Write([]byte("after the disconnect")); err != nil {
					results <- ended{i, err, time.Now()}
					return
				}
			}
			// Nothing can come back: read until the connection ends.
			_, err := io.Copy(io.Discard, s.R)
			if err == nil {
				err = io.EOF
			}
			results <- ended{i, err, time.Now()}
		}()
	}
	ds := wait()
	var es []ended
	for range sessions {
		es = append(es, <-results)
	}
	gone := waitEvent(t, ctx, evs, db.ID, "disconnect", disconnecting)
	t.Logf("the disconnect event came %s after the call", gone.Sub(disconnecting).Round(time.Millisecond))

	faultCheckCut(t, ds, size, gone, "the disconnect event", 2*time.Second)
	var latest time.Duration
	for _, e := range es {
		after := e.at.Sub(gone)
		latest = max(latest, after)
		kind := map[bool]string{true: "idle", false: "talking"}[e.i < idle]
		assert.Truef(t, load.Closed(e.err), "%s session %d: ended by %v (%s), want EOF or reset", kind, e.i, e.err, load.How(e.err))
		assert.LessOrEqualf(t, after, 2*time.Second, "%s session %d ended %s after the disconnect", kind, e.i, after.Round(time.Millisecond))
		t.Logf("%s session %d: %s %s after the disconnect event", kind, e.i, load.How(e.err), after.Round(time.Millisecond))
	}

	// No backend now: a new connection waits --backend-wait (2s) for one,
	// then is closed.
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := load.Whoami(wctx, target)
	cancel()
	took := time.Since(start)
	assert.Truef(t, err != nil && load.Closed(err), "a new connection with no backend: %v, want it closed", err)
	assert.Less(t, took, 5*time.Second, "a new connection with no backend was held too long")
	t.Logf("a new connection with no backend was closed (%s) after %s", load.How(err), took.Round(time.Millisecond))

	faultWaitActive(t, ctx, amb, 0, 10*time.Second)
}
