//go:build e2e

package e2e

// The fault suite (issue 6), the Docker API failing: the ambassador reaches
// the engine through a fault-injecting proxy written here (a unix socket in
// a temporary directory, mounted into the ambassador's container), that the
// test switches between passing bytes through, cutting every connection
// (the event stream gets EOF), stalling the connections open at that moment
// (no EOF, no byte), silencing the event streams open at that moment while
// new ones pass, black-holing the event stream alone (events lost, and new
// subscriptions never answered, while everything else answers), and
// refusing new connections (the engine is unreachable). Each test says what "converges to the truth" means for its
// fault, checks it within a bound, and logs the numbers. Every helper's
// name starts with dockerFault so that it cannot clash with the other e2e
// files.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// Bounds of the watcher that the tests' limits are built from (see
// pkg/watcher and the README's engine connection section).
const (
	dockerFaultResync     = 2 * time.Second  // --resync of every ambassador here
	dockerFaultMaxBackoff = 5 * time.Second  // the reconnect delay's cap
	dockerFaultRequest    = 10 * time.Second // a listing's timeout (a stalled connection), and a subscription's
	// dockerFaultSilenceGrace is how long a stream has, after a resync
	// found changes it did not deliver, to deliver anything before it is
	// replaced.
	dockerFaultSilenceGrace = time.Second
	// dockerFaultSlack absorbs a busy two-core machine.
	dockerFaultSlack = 5 * time.Second
)

// dockerFaultMount is where the proxy's directory appears in the ambassador.
const dockerFaultMount = "/var/run/dockerproxy"

// dockerFaultProxy is a unix-socket proxy in front of the engine's socket
// that injects faults. Its methods are safe for concurrent use.
type dockerFaultProxy struct {
	dir, path, engine string
	ln                net.Listener
	wg                sync.WaitGroup // the accept loop and every copier

	refuse     atomic.Bool // close new connections at once
	dropEvents atomic.Bool // hold the bytes of event streams, the requests of new ones included
	accepted   atomic.Int64
	refused    atomic.Int64
	cuts       atomic.Int64 // connections closed by cut
	subscribed atomic.Int64 // connections that asked for /events

	mu    sync.Mutex
	conns map[*dockerFaultConn]struct{} // guarded by mu: the open ones
}

// dockerFaultConn is one proxied connection. Once held (stalled, or an
// event stream while events are dropped) it never forwards another byte:
// its copiers wait for done, closed when it is cut or the proxy closes.
type dockerFaultConn struct {
	client, engine net.Conn
	stalled        atomic.Bool
	held           atomic.Bool // a copier holds it: it forwards nothing more
	events         atomic.Bool // the client asked it for /events
	done           chan struct{}
	once           sync.Once
}

func (c *dockerFaultConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.client.Close()
		c.engine.Close()
	})
}

// dockerFaultStartProxy listens on a world-accessible socket in a fresh
// directory (the ambassador's root may not be the test's) and forwards to
// the engine's socket. It closes when the test ends. The directory is not
// t.TempDir(): a path named after the test could exceed the 108 bytes a
// unix socket's path may have.
func dockerFaultStartProxy(t *testing.T) *dockerFaultProxy {
	t.Helper()
	engine := dockerSocket(t)
	dir, err := os.MkdirTemp("", "dockerfault")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	p := &dockerFaultProxy{dir: dir, path: filepath.Join(dir, "docker.sock"), engine: engine, conns: map[*dockerFaultConn]struct{}{}}
	p.ln, err = net.Listen("unix", p.path)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(p.path, 0o666))
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

// bind is the -v that mounts the proxy's directory (not its socket file)
// into an ambassador.
func (p *dockerFaultProxy) bind() string { return p.dir + ":" + dockerFaultMount }

// flags point an ambassador at the proxy, following the engine, with the
// short resync the tests' bounds are built from.
func (p *dockerFaultProxy) flags() []string {
	return []string{"--docker", "on", "--docker-host", "unix://" + dockerFaultMount + "/docker.sock",
		"--resync", dockerFaultResync.String()}
}

func (p *dockerFaultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			p.refused.Add(1)
			cc.Close()
			continue
		}
		ec, err := net.Dial("unix", p.engine)
		if err != nil {
			cc.Close()
			continue
		}
		p.accepted.Add(1)
		c := &dockerFaultConn{client: cc, engine: ec, done: make(chan struct{})}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.copyRequests(c)
		go p.copyResponses(c)
	}
}

// copyRequests forwards the client's bytes to the engine, marking a
// connection that asks for the event stream before the request leaves, so
// that every byte of the response is known to be the stream.
func (p *dockerFaultProxy) copyRequests(c *dockerFaultConn) {
	defer p.wg.Done()
	p.copy(c, c.engine, c.client, func(b []byte) {
		if bytes.Contains(b, []byte("/events")) && !c.events.Swap(true) {
			p.subscribed.Add(1)
		}
	})
}

func (p *dockerFaultProxy) copyResponses(c *dockerFaultConn) {
	defer p.wg.Done()
	p.copy(c, c.client, c.engine, func([]byte) {})
}

// copy forwards src to dst until either ends; a held connection stops
// forwarding, without closing, until it is cut.
func (p *dockerFaultProxy) copy(c *dockerFaultConn, dst, src net.Conn, saw func([]byte)) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			saw(buf[:n])
			if c.stalled.Load() || (p.dropEvents.Load() && c.events.Load()) {
				c.held.Store(true)
				<-c.done
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// open returns the connections open now.
func (p *dockerFaultProxy) open() []*dockerFaultConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*dockerFaultConn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

// cut closes every open connection: the event stream ends with EOF.
func (p *dockerFaultProxy) cut() int {
	cs := p.open()
	for _, c := range cs {
		c.close()
	}
	p.cuts.Add(int64(len(cs)))
	return len(cs)
}

// stall holds every open connection (the event stream, idle pooled ones):
// they stay open and silent. New connections are not affected.
func (p *dockerFaultProxy) stall() int {
	cs := p.open()
	for _, c := range cs {
		c.stalled.Store(true)
	}
	return len(cs)
}

// eventStreams returns how many open connections carry an event stream.
func (p *dockerFaultProxy) eventStreams() int {
	n := 0
	for _, c := range p.open() {
		if c.events.Load() {
			n++
		}
	}
	return n
}

// silenceEvents holds the event streams open now (a proxy that stalls
// /events): they stay open and silent, while everything else, and new
// event streams, pass.
func (p *dockerFaultProxy) silenceEvents() int {
	n := 0
	for _, c := range p.open() {
		if c.events.Load() {
			c.stalled.Store(true)
			n++
		}
	}
	return n
}

// liveEventStreams returns how many open connections carry an event stream
// that passes: neither held, nor to be held at its next byte.
func (p *dockerFaultProxy) liveEventStreams() int {
	n := 0
	for _, c := range p.open() {
		if c.events.Load() && !c.held.Load() && !c.stalled.Load() && !p.dropEvents.Load() {
			n++
		}
	}
	return n
}

func (p *dockerFaultProxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// dockerFaultAmbassador starts an ambassador on network n that reaches the
// engine through p only, serves the label route target on dataPort, and
// publishes its admin endpoint. extra are more flags.
func dockerFaultAmbassador(t *testing.T, ctx context.Context, p *dockerFaultProxy, n *harness.Network, target string, extra ...string) *harness.Container {
	t.Helper()
	cmd := append(slices.Clone(publicAdmin), p.flags()...)
	return startAmbassador(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Binds:    []string{p.bind()},
		Labels:   map[string]string{labelTarget: target, labelPorts: strconv.Itoa(dataPort)},
		Cmd:      append(cmd, extra...),
	})
}

// dockerFaultDoc is the part of GET /routes these tests read.
type dockerFaultDoc struct {
	Ready    bool     `json:"ready"`
	NotReady []string `json:"not_ready"`
	Docker   struct {
		Connected  bool   `json:"connected"`
		Synced     bool   `json:"synced"`
		Error      string `json:"error"`
		Events     uint64 `json:"events"`
		Reconnects uint64 `json:"reconnects"`
		Resyncs    uint64 `json:"resyncs"`
		Drift      uint64 `json:"drift"`
	} `json:"docker"`
	Routes []struct {
		Name     string `json:"name"`
		Listen   string `json:"listen"`
		Backends []struct {
			ContainerID string `json:"container_id"`
			Container   string `json:"container"`
		} `json:"backends"`
	} `json:"routes"`
}

// backends returns the container IDs the route listening on port serves,
// and whether it listens.
func (d dockerFaultDoc) backends(port int) ([]string, bool) {
	for _, r := range d.Routes {
		if r.Listen != "" && strings.HasSuffix(r.Listen, ":"+strconv.Itoa(port)) {
			var ids []string
			for _, b := range r.Backends {
				ids = append(ids, b.ContainerID)
			}
			return ids, true
		}
	}
	return nil, false
}

// dockerFaultStatus fetches the ambassador's GET /routes.
func dockerFaultStatus(ctx context.Context, amb *harness.Container) (dockerFaultDoc, error) {
	return routesAt(ctx, "http://"+addr(amb, ambAdminPort))
}

// routesAt returns GET /routes of the admin endpoint at admin, a base URL.
func routesAt(ctx context.Context, admin string) (dockerFaultDoc, error) {
	var d dockerFaultDoc
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return d, fetchJSON(ctx, admin+"/routes", &d)
}

// dockerFaultReadyz returns the status code of GET /readyz and its body.
func dockerFaultReadyz(ctx context.Context, amb *harness.Container) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr(amb, ambAdminPort)+"/readyz", nil)
	if err != nil {
		return 0, "", err
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, strings.TrimSpace(string(b)), nil
}

// dockerFaultCounters is the engine connection's metrics.
type dockerFaultCounters struct {
	connected, reconnects, resyncs, drift, events float64
}

func (c dockerFaultCounters) String() string {
	return fmt.Sprintf("connected=%v reconnects=%v resyncs=%v drift=%v events=%v", c.connected, c.reconnects, c.resyncs, c.drift, c.events)
}

// dockerFaultMetrics scrapes the ambassador's engine connection metrics.
func dockerFaultMetrics(t *testing.T, ctx context.Context, amb *harness.Container) dockerFaultCounters {
	t.Helper()
	var c dockerFaultCounters
	err := harness.Poll(ctx, func(ctx context.Context) error {
		f, err := scrape(ctx, "http://"+addr(amb, ambAdminPort)+"/metrics")
		if err != nil {
			return err
		}
		var ok [5]bool
		c.connected, ok[0] = f.value("ambassadord_docker_connected", localEngine)
		c.reconnects, ok[1] = f.value("ambassadord_docker_reconnects_total", localEngine)
		c.resyncs, ok[2] = f.value("ambassadord_docker_resyncs_total", localEngine)
		c.drift, ok[3] = f.value("ambassadord_docker_resync_drift_total", localEngine)
		c.events, ok[4] = f.value("ambassadord_docker_events_total", localEngine)
		if slices.Contains(ok[:], false) {
			return fmt.Errorf("missing engine metrics: %v", ok)
		}
		return nil
	})
	require.NoError(t, err)
	return c
}

// dockerFaultWaitRoute waits, for up to within, until the route on port
// serves exactly the containers want (by ID), and returns how long it took.
func dockerFaultWaitRoute(t *testing.T, ctx context.Context, amb *harness.Container, port int, within time.Duration, want ...*harness.Container) time.Duration {
	t.Helper()
	return waitRouteServes(t, ctx, "http://"+addr(amb, ambAdminPort), amb.Name, port, within, want...)
}

// waitRouteServes waits, for up to within, until the route on port of the
// ambassador whose admin endpoint is admin (a base URL) serves exactly the
// containers want (by ID), and returns how long it took. name names the
// ambassador in the failure, with the last status seen.
func waitRouteServes(t *testing.T, ctx context.Context, admin, name string, port int, within time.Duration, want ...*harness.Container) time.Duration {
	t.Helper()
	start := time.Now()
	var ids []string
	for _, c := range want {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last dockerFaultDoc
	err := harness.Poll(ctx, func(ctx context.Context) error {
		d, err := routesAt(ctx, admin)
		if err != nil {
			return err
		}
		last = d
		got, ok := d.backends(port)
		if !ok {
			return fmt.Errorf("route %d not listening", port)
		}
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			return fmt.Errorf("route %d serves %v, want %v", port, got, ids)
		}
		return nil
	})
	require.NoError(t, err, "route %d of %s did not converge within %s; last status: %+v", port, name, within, last)
	return time.Since(start)
}

// dockerFaultWait polls cond for up to within.
func dockerFaultWait(t *testing.T, ctx context.Context, within time.Duration, what string, cond func(ctx context.Context) error) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	require.NoError(t, harness.Poll(ctx, cond), "wait for %s", what)
	return time.Since(start)
}

// dockerFaultScene is what three of the tests start from: the fault proxy
// p, a network n, a claimer a of the target svc, and an ambassador amb that
// reaches the engine through p and serves a on target.
type dockerFaultScene struct {
	p      *dockerFaultProxy
	n      *harness.Network
	svc    string
	a, amb *harness.Container
	target string
}

// dockerFaultStartScene starts the scene and waits until the ambassador
// serves a.
func dockerFaultStartScene(t *testing.T, ctx context.Context) dockerFaultScene {
	t.Helper()
	sc := dockerFaultScene{p: dockerFaultStartProxy(t), n: newNetwork(t, ctx, "net", false), svc: fullName(t, "svc")}
	sc.a = dockerFaultClaimer(t, ctx, sc.n, "a", sc.svc)
	sc.amb = dockerFaultAmbassador(t, ctx, sc.p, sc.n, sc.svc)
	sc.target = addr(sc.amb, dataPort)
	waitServedBy(t, ctx, sc.target, "a")
	dockerFaultWaitRoute(t, ctx, sc.amb, dataPort, readyTimeout, sc.a)
	return sc
}

// dockerFaultWaitStream waits until an event stream runs through p.
func dockerFaultWaitStream(t *testing.T, ctx context.Context, p *dockerFaultProxy) {
	t.Helper()
	dockerFaultWait(t, ctx, readyTimeout, "an event stream through the proxy", func(context.Context) error {
		if p.eventStreams() == 0 {
			return errors.New("no event stream open")
		}
		return nil
	})
}

// dockerFaultClaimer starts a dataserver named name (answering whoami with
// name) that claims target.
func dockerFaultClaimer(t *testing.T, ctx context.Context, n *harness.Network, name, target string) *harness.Container {
	t.Helper()
	return startServer(t, ctx, harness.Spec{Name: name, Networks: []string{n.Name}, Labels: map[string]string{labelTarget: target}}, name)
}

// dockerFaultRemove removes c (docker rm -f) and returns when.
func dockerFaultRemove(t *testing.T, ctx context.Context, c *harness.Container) time.Time {
	t.Helper()
	require.NoError(t, eng.Remove(ctx, c.ID))
	return time.Now()
}

// TestFaultDockerStreamCut: the event stream is cut (EOF) every 300ms for
// 4s, and during the cuts the target moves: a new container claims it and
// the old one is removed. Converging to the truth means the route serves
// exactly the new container (by ID, per GET /routes) within the cutting
// time plus the reconnect backoff's cap plus one resync, new connections
// land on it, ambassadord_docker_reconnects_total grew, and the load of
// fresh connections never failed except those cut when the old backend
// was removed under them.
func TestFaultDockerStreamCut(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	sc := dockerFaultStartScene(t, ctx)
	p, n, svc, a, amb, target := sc.p, sc.n, sc.svc, sc.a, sc.amb, sc.target
	before := dockerFaultMetrics(t, ctx, amb)

	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "a", time.Now(), 20)
	require.NoError(t, err)

	const cutFor, cutEvery = 4 * time.Second, 300 * time.Millisecond
	cutting := make(chan struct{})
	cutDone := make(chan int)
	go func() {
		cuts := 0
		tick := time.NewTicker(cutEvery)
		defer tick.Stop()
		for {
			select {
			case <-cutting:
				cutDone <- cuts
				return
			case <-tick.C:
				if p.cut() > 0 {
					cuts++
				}
			}
		}
	}()
	moving := time.Now()
	b := dockerFaultClaimer(t, ctx, n, "b", svc)
	gone := dockerFaultRemove(t, ctx, a)
	moved := time.Since(moving)
	// Cut until cutFor has passed since the move began, however long
	// the move took: a deadline, not a synchronisation.
	require.NoError(t, harness.Poll(ctx, func(context.Context) error {
		if time.Since(moving) < cutFor {
			return errors.New("still cutting")
		}
		return nil
	}))
	close(cutting)
	cuts := <-cutDone

	bound := time.Since(moving) + dockerFaultMaxBackoff + dockerFaultResync + dockerFaultSlack
	took := dockerFaultWaitRoute(t, ctx, amb, dataPort, bound-time.Since(moving), b)
	converged := time.Now()
	res, err := l.WaitLanded(ctx, "b", converged, 50)
	require.NoError(t, err)
	res = l.Stop()
	after := dockerFaultMetrics(t, ctx, amb)

	t.Logf("move (start b, rm -f a) took %s; %d cuts (%d connections) over %s; route converged on b %s after the move (%s after the cuts stopped; bound %s)",
		moved.Round(time.Millisecond), cuts, p.cuts.Load(), cutFor, converged.Sub(moving).Round(time.Millisecond),
		took.Round(time.Millisecond), bound.Round(time.Millisecond))
	if first, ok := res.First("b", moving); ok {
		t.Logf("b accepted its first connection through the ambassador %s after the move began, while the stream was being cut",
			first.ID.Accepted.Sub(moving).Round(time.Millisecond))
	}
	t.Logf("engine metrics before: %s; after: %s", before, after)
	t.Logf("load: %s", res)
	assert.Greater(t, after.reconnects, before.reconnects, "ambassadord_docker_reconnects_total did not grow over %d cuts", cuts)
	assert.Equal(t, 1.0, after.connected, "ambassadord_docker_connected after the cuts")
	none(t, res.StartedAfter(converged).Filter(func(x load.Attempt) bool { return x.OK() && x.ID.Name != "b" }),
		"connections started after the convergence served by another than b")
	checkFailures(t, res, gone)
}

// TestFaultDockerSilentStall: every connection to the engine open at one
// moment (the event stream and the client's idle pooled ones) goes silent,
// without EOF, while new ones still pass; during the stall the target
// moves. Converging to the truth means the route serves exactly the new
// container within the time a listing on a stalled connection takes to
// time out plus the reconnect backoff's cap plus two resyncs (whichever
// catches it first: the periodic resync on a fresh connection, counted as
// drift, or the watchdog ending the session, counted as a reconnect; one
// of the two counters must grow), and fresh connections land on it.
func TestFaultDockerSilentStall(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	sc := dockerFaultStartScene(t, ctx)
	p, n, svc, a, amb, target := sc.p, sc.n, sc.svc, sc.a, sc.amb, sc.target
	dockerFaultWaitStream(t, ctx, p)
	before := dockerFaultMetrics(t, ctx, amb)

	stalled := p.stall()
	stalling := time.Now()
	b := dockerFaultClaimer(t, ctx, n, "b", svc)
	dockerFaultRemove(t, ctx, a)
	moved := time.Since(stalling)

	bound := dockerFaultRequest + dockerFaultMaxBackoff + 2*dockerFaultResync + dockerFaultSlack
	dockerFaultWaitRoute(t, ctx, amb, dataPort, bound-time.Since(stalling), b)
	took := time.Since(stalling)
	waitServedBy(t, ctx, target, "b")
	after := dockerFaultMetrics(t, ctx, amb)

	path := "the periodic resync (drift)"
	if after.reconnects > before.reconnects {
		path = "a reconnect after the watchdog or a timed-out request"
		if after.drift > before.drift {
			path = "both a resync (drift) and a reconnect"
		}
	}
	t.Logf("stalled %d connections; the move took %s; the route converged on b %s after the stall began (bound %s), caught by %s",
		stalled, moved.Round(time.Millisecond), took.Round(time.Millisecond), bound, path)
	t.Logf("engine metrics before: %s; after: %s", before, after)
	assert.True(t, after.drift > before.drift || after.reconnects > before.reconnects,
		"neither ambassadord_docker_resync_drift_total nor _reconnects_total grew: %s -> %s", before, after)
}

// TestFaultDockerUnreachableAtStart: the engine refuses every connection
// when the ambassador starts. Its static route (--route to a dataserver's
// IP) listens and serves at once; the label route, which needs the engine,
// does not exist yet; /readyz answers 503 (first sync not done),
// ambassadord_docker_connected is 0. Once the proxy passes connections
// through, converging to the truth means: the label route listens and is
// served by its target within the reconnect backoff's cap, connected is 1,
// /readyz answers 200, and `ambassadord status` says ready.
func TestFaultDockerUnreachableAtStart(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	p := dockerFaultStartProxy(t)
	p.refuse.Store(true)
	n := newNetwork(t, ctx, "net", false)
	static := startServer(t, ctx, harness.Spec{Name: "static", Networks: []string{n.Name}}, "static")
	dyn := startServer(t, ctx, harness.Spec{Name: "dyn", Networks: []string{n.Name}}, "dyn")
	const staticPort = dataPort + 1
	route := fmt.Sprintf("%d:%s:%d", staticPort, static.IP, dataPort)
	started := time.Now()
	amb := dockerFaultAmbassador(t, ctx, p, n, fullName(t, "dyn"), "--route", route)
	staticAddr := addr(amb, staticPort)
	id, err := load.Whoami(ctx, staticAddr)
	require.NoError(t, err, "the static route %s with the engine unreachable", route)
	require.Equal(t, "static", id.Name)
	t.Logf("static route served by %s %s after the ambassador was started, with the engine refusing", id.Name, time.Since(started).Round(time.Millisecond))

	// The ambassador has tried the engine at least twice: it knows it is
	// unreachable, not merely slow.
	dockerFaultWait(t, ctx, readyTimeout, "the ambassador to be refused twice", func(context.Context) error {
		if p.refused.Load() < 2 {
			return fmt.Errorf("%d connections refused", p.refused.Load())
		}
		return nil
	})
	code, body, err := dockerFaultReadyz(ctx, amb)
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, code, "/readyz with the engine unreachable: %s", body)
	t.Logf("/readyz with the engine unreachable: %d %q", code, body)
	d, err := dockerFaultStatus(ctx, amb)
	require.NoError(t, err)
	assert.False(t, d.Ready, "status ready with the engine unreachable")
	assert.False(t, d.Docker.Connected, "status connected with the engine unreachable")
	_, listening := d.backends(dataPort)
	assert.False(t, listening, "the label route listens before the engine answered")
	t.Logf("status with the engine unreachable: ready=%v not_ready=%q connected=%v error=%q", d.Ready, d.NotReady, d.Docker.Connected, d.Docker.Error)
	st := statusOf(t, ctx, amb)
	assert.False(t, st.Ready, "ambassadord status: ready with the engine unreachable")
	m := dockerFaultMetrics(t, ctx, amb)
	assert.Equal(t, 0.0, m.connected, "ambassadord_docker_connected with the engine unreachable")

	p.refuse.Store(false)
	opened := time.Now()
	bound := dockerFaultMaxBackoff + dockerFaultSlack
	dockerFaultWaitRoute(t, ctx, amb, dataPort, bound, dyn)
	took := time.Since(opened)
	waitServedBy(t, ctx, addr(amb, dataPort), "dyn")
	dockerFaultWait(t, ctx, bound, "/readyz 200", func(ctx context.Context) error {
		code, body, err := dockerFaultReadyz(ctx, amb)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	m2 := dockerFaultMetrics(t, ctx, amb)
	assert.Equal(t, 1.0, m2.connected, "ambassadord_docker_connected once the engine answers")
	st = statusOf(t, ctx, amb)
	assert.True(t, st.Ready, "ambassadord status: not ready once the engine answers")
	assert.True(t, st.Docker.Connected, "ambassadord status: not connected once the engine answers")
	id, err = load.Whoami(ctx, staticAddr)
	require.NoError(t, err)
	assert.Equal(t, "static", id.Name)
	t.Logf("%d connections refused; the label route served by dyn %s after the engine became reachable (bound %s); metrics before: %s; after: %s",
		p.refused.Load(), took.Round(time.Millisecond), bound, m, m2)
}

// TestFaultDockerLostEvents: the event stream stays open but its bytes go
// nowhere (everything else the watcher asks still answers), during a burst:
// unrelated containers start and are removed, and the target moves.
// Converging to the truth means the route serves exactly the new
// container within two resyncs (plus, should the stream end after all, the
// reconnect's cap), and fresh connections land on it. A change that only a
// resync could see must be counted: if no reconnect happened,
// ambassadord_docker_resync_drift_total must have grown. Which path caught
// it is logged.
func TestFaultDockerLostEvents(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	sc := dockerFaultStartScene(t, ctx)
	p, n, svc, a, amb, target := sc.p, sc.n, sc.svc, sc.a, sc.amb, sc.target
	dockerFaultWaitStream(t, ctx, p)
	before := dockerFaultMetrics(t, ctx, amb)

	p.dropEvents.Store(true)
	dropping := time.Now()
	const unrelated = 3
	for i := range unrelated {
		c := startServer(t, ctx, harness.Spec{Name: "noise" + strconv.Itoa(i), Networks: []string{n.Name}}, "noise")
		dockerFaultRemove(t, ctx, c)
	}
	b := dockerFaultClaimer(t, ctx, n, "b", svc)
	dockerFaultRemove(t, ctx, a)
	burst := time.Since(dropping)

	bound := 2*dockerFaultResync + dockerFaultMaxBackoff + dockerFaultSlack
	moved := time.Now()
	dockerFaultWaitRoute(t, ctx, amb, dataPort, bound, b)
	took := time.Since(moved)
	waitServedBy(t, ctx, target, "b")
	after := dockerFaultMetrics(t, ctx, amb)

	path := "the periodic resync (drift)"
	switch {
	case after.reconnects > before.reconnects && after.drift > before.drift:
		path = "both a resync (drift) and a reconnect"
	case after.reconnects > before.reconnects:
		path = "the reconnect's full listing"
	}
	t.Logf("burst of %d unrelated start+rm and the move took %s with the event stream black-holed; route converged on b %s after the burst (bound %s), caught by %s",
		unrelated, burst.Round(time.Millisecond), took.Round(time.Millisecond), bound, path)
	t.Logf("engine metrics before: %s; after: %s", before, after)
	if after.reconnects == before.reconnects {
		assert.Greater(t, after.drift, before.drift, "the change reached the ambassador only through a resync, but ambassadord_docker_resync_drift_total did not grow")
	}
}

// dockerFaultConnectedWatch polls an ambassador's status in the background,
// counting the polls that did not say connected: an outage published for a
// moment would escape a check made now and then.
type dockerFaultConnectedWatch struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	// Written by run until done is closed.
	polls, down int
	lastDown    string // the error of the last poll that did not say connected
}

// dockerFaultWatchConnected starts watching amb's status every 100ms, until
// end is called or the test ends.
func dockerFaultWatchConnected(t *testing.T, ctx context.Context, amb *harness.Container) *dockerFaultConnectedWatch {
	t.Helper()
	w := &dockerFaultConnectedWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(ctx, amb)
	t.Cleanup(func() { w.end() })
	return w
}

func (w *dockerFaultConnectedWatch) run(ctx context.Context, amb *harness.Container) {
	defer close(w.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if d, err := dockerFaultStatus(ctx, amb); err == nil {
			w.polls++
			if !d.Docker.Connected {
				w.down++
				w.lastDown = d.Docker.Error
			}
		}
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// end stops the watch and returns how many polls answered, how many of them
// did not say connected, and the error of the last of those.
func (w *dockerFaultConnectedWatch) end() (polls, down int, lastDown string) {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
	return w.polls, w.down, w.lastDown
}

// dockerFaultWaitLiveStream waits, for up to within, until an event stream
// asked for after the proxy had seen subscribed of them passes through it,
// and returns how long it took.
func dockerFaultWaitLiveStream(t *testing.T, ctx context.Context, p *dockerFaultProxy, subscribed int64, within time.Duration) time.Duration {
	t.Helper()
	return dockerFaultWait(t, ctx, within, "a new event stream through the proxy", func(context.Context) error {
		if n, live := p.subscribed.Load()-subscribed, p.liveEventStreams(); n == 0 || live == 0 {
			return fmt.Errorf("%d subscriptions since, %d event streams passing", n, live)
		}
		return nil
	})
}

// dockerFaultMoveByEvent moves the target from the claimer from to a new
// claimer named name, and checks that the ambassador follows by the events:
// the route serves the new claimer within half a resync of the removal of
// from, and no resync counted drift meanwhile. It returns the new claimer
// and how long after the removal the route converged.
func dockerFaultMoveByEvent(t *testing.T, ctx context.Context, sc dockerFaultScene, from *harness.Container, name string) (*harness.Container, time.Duration) {
	t.Helper()
	before := dockerFaultMetrics(t, ctx, sc.amb)
	to := dockerFaultClaimer(t, ctx, sc.n, name, sc.svc)
	removed := dockerFaultRemove(t, ctx, from)
	dockerFaultWaitRoute(t, ctx, sc.amb, dataPort, dockerFaultResync+dockerFaultSlack, to)
	took := time.Since(removed)
	waitServedBy(t, ctx, sc.target, name)
	after := dockerFaultMetrics(t, ctx, sc.amb)
	assert.Equal(t, before.drift, after.drift, "a resync found the move to %s: its events did not deliver it (%s -> %s)", name, before, after)
	assert.Less(t, took, dockerFaultResync/2, "the route took %s after the removal to serve %s: not its events' pace (a resync every %s)",
		took, name, dockerFaultResync)
	return to, took
}

// TestFaultDockerSilentStreamReplaced: the event stream goes silent,
// without EOF, while the engine answers everything else and new event
// streams pass (a proxy that stalls /events), and the target moves.
// Converging to the truth means: the route serves the new container within
// a resync of the move (the resync that finds it counts drift), the
// ambassador replaces the silent stream (a new /events request passes
// through the proxy within a resync and the watcher's one-second grace),
// and a second move is then followed by its events: the route serves the
// third container within half a resync of the removal, with no drift
// counted, and a reconnect counted for the replacement.
func TestFaultDockerSilentStreamReplaced(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	sc := dockerFaultStartScene(t, ctx)
	p, n, svc, a, amb, target := sc.p, sc.n, sc.svc, sc.a, sc.amb, sc.target
	dockerFaultWaitStream(t, ctx, p)
	before := dockerFaultMetrics(t, ctx, amb)
	subscribed := p.subscribed.Load()

	silenced := p.silenceEvents()
	require.Positive(t, silenced, "no event stream to silence")
	silencing := time.Now()
	b := dockerFaultClaimer(t, ctx, n, "b", svc)
	removed := dockerFaultRemove(t, ctx, a)

	bound := dockerFaultResync + dockerFaultSlack
	dockerFaultWaitRoute(t, ctx, amb, dataPort, bound, b)
	first := time.Since(removed)
	waitServedBy(t, ctx, target, "b")
	mid := dockerFaultMetrics(t, ctx, amb)
	assert.Greater(t, mid.drift, before.drift, "the stream is silent, yet no resync counted drift (%s -> %s)", before, mid)

	dockerFaultWaitLiveStream(t, ctx, p, subscribed, dockerFaultResync+dockerFaultSilenceGrace+dockerFaultSlack)
	replaced := time.Since(silencing)

	_, second := dockerFaultMoveByEvent(t, ctx, sc, b, "c")
	after := dockerFaultMetrics(t, ctx, amb)
	assert.Greater(t, after.reconnects, before.reconnects, "the replaced stream counts as a reconnect")
	assert.Equal(t, 1.0, after.connected, "ambassadord_docker_connected")
	d, err := dockerFaultStatus(ctx, amb)
	require.NoError(t, err)
	assert.True(t, d.Docker.Connected, "status: connected")

	t.Logf("silenced %d event stream(s); the first move (start b, rm -f a) converged %s after the removal (bound %s, a resync every %s)",
		silenced, first.Round(time.Millisecond), bound, dockerFaultResync)
	t.Logf("a new event stream passed %s after the silence began (%d /events requests since); the second move (start c, rm -f b) converged %s after the removal",
		replaced.Round(time.Millisecond), p.subscribed.Load()-subscribed, second.Round(time.Millisecond))
	t.Logf("engine metrics before: %s; after the first move: %s; after the second: %s", before, mid, after)
}

// TestFaultDockerEventsBlackHoled: the event stream goes silent, and every
// new /events request is black-holed (the engine's answer never comes),
// while listings and pings pass. Converging to the truth means: each move
// of the target is followed within a resync; the ambassador's status says
// connected throughout, polled every 100ms (it never flaps to unreachable),
// while /events requests keep coming to the proxy (the subscription is
// retried in the background); and once /events passes again, a
// subscription answers within a subscription's timeout plus the backoff's
// cap, and a move is followed by its events again.
func TestFaultDockerEventsBlackHoled(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	sc := dockerFaultStartScene(t, ctx)
	p, n, svc, a, amb, target := sc.p, sc.n, sc.svc, sc.a, sc.amb, sc.target
	dockerFaultWaitStream(t, ctx, p)
	before := dockerFaultMetrics(t, ctx, amb)
	subscribed := p.subscribed.Load()

	p.dropEvents.Store(true)
	dropping := time.Now()
	watch := dockerFaultWatchConnected(t, ctx, amb)
	b := dockerFaultClaimer(t, ctx, n, "b", svc)
	removed := dockerFaultRemove(t, ctx, a)
	bound := dockerFaultResync + dockerFaultSlack
	dockerFaultWaitRoute(t, ctx, amb, dataPort, bound, b)
	first := time.Since(removed)
	waitServedBy(t, ctx, target, "b")

	// The silent stream is replaced, the replacement gets no answer, and
	// the subscription is tried again: two /events requests after the
	// silence, the second one after the first one's timeout.
	retryBound := dockerFaultResync + dockerFaultSilenceGrace + dockerFaultRequest + dockerFaultMaxBackoff + dockerFaultSlack
	dockerFaultWait(t, ctx, retryBound, "the subscription tried twice", func(context.Context) error {
		if n := p.subscribed.Load() - subscribed; n < 2 {
			return fmt.Errorf("%d /events requests since the black hole", n)
		}
		return nil
	})
	retried := time.Since(dropping)

	// Without a stream, a move is followed at the next resync.
	c := dockerFaultClaimer(t, ctx, n, "c", svc)
	removed = dockerFaultRemove(t, ctx, b)
	dockerFaultWaitRoute(t, ctx, amb, dataPort, bound, c)
	second := time.Since(removed)
	waitServedBy(t, ctx, target, "c")
	polling := dockerFaultMetrics(t, ctx, amb)
	polls, down, lastDown := watch.end()
	assert.Zero(t, down, "%d of %d status polls said not connected while the engine answered (last error %q)", down, polls, lastDown)
	assert.Equal(t, 1.0, polling.connected, "ambassadord_docker_connected")
	requests, blackHoled := p.subscribed.Load()-subscribed, time.Since(dropping)

	// /events passes again.
	p.dropEvents.Store(false)
	// A stream passing is enough: its since is before the move, which it
	// replays if the watcher has not read its answer yet.
	restored := dockerFaultWaitLiveStream(t, ctx, p, p.subscribed.Load(), dockerFaultRequest+dockerFaultMaxBackoff+dockerFaultSlack)
	_, third := dockerFaultMoveByEvent(t, ctx, sc, c, "d")
	after := dockerFaultMetrics(t, ctx, amb)
	assert.Equal(t, 1.0, after.connected, "ambassadord_docker_connected")

	t.Logf("black hole on /events: the first move (start b, rm -f a) converged %s after the removal (bound %s, a resync every %s)",
		first.Round(time.Millisecond), bound, dockerFaultResync)
	t.Logf("the subscription was tried twice within %s of the black hole; the second move (start c, rm -f b), with no stream, converged %s after the removal",
		retried.Round(time.Millisecond), second.Round(time.Millisecond))
	t.Logf("status polled %d times meanwhile, %d not connected; %d /events requests reached the proxy in %s",
		polls, down, requests, blackHoled.Round(time.Millisecond))
	t.Logf("/events passing again: a stream passed %s later; the third move (start d, rm -f c) converged %s after the removal",
		restored.Round(time.Millisecond), third.Round(time.Millisecond))
	t.Logf("engine metrics before: %s; while black-holed: %s; after: %s", before, polling, after)
}
