package daemon

import (
	"bufio"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/pkg/metrics"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeSource is a source.Source the test drives: it publishes what the
// test sends with publish, and its counters are what the test sets.
type fakeSource struct {
	name    string
	updates chan source.Update
	stats   atomic.Pointer[source.Stats]

	mu    sync.Mutex
	ended bool // guarded by mu; end was called
}

func newFakeSource(name string) *fakeSource {
	return &fakeSource{name: name, updates: make(chan source.Update)}
}

func (f *fakeSource) Name() string                  { return f.name }
func (f *fakeSource) Updates() <-chan source.Update { return f.updates }

func (f *fakeSource) Stats() source.Stats {
	if s := f.stats.Load(); s != nil {
		return *s
	}
	return source.Stats{}
}

// Run waits for ctx: the test publishes. The mailbox closes with end.
func (f *fakeSource) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// publish hands u to the daemon's run loop, tagged with the source's
// name, and waits until the loop has taken it.
func (f *fakeSource) publish(t *testing.T, u source.Update) {
	t.Helper()
	u.Source = f.name
	select {
	case f.updates <- u:
	case <-time.After(5 * time.Second):
		require.FailNow(t, "the daemon does not take the update of "+f.name)
	}
}

// end stops the source as if its Run had returned: its mailbox closes.
func (f *fakeSource) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ended {
		f.ended = true
		close(f.updates)
	}
}

func (f *fakeSource) setStats(s source.Stats) { f.stats.Store(&s) }

// testOptions are the options of the tests' daemons: listening on
// loopback, no backend wait, one fake source named docker. Claims count on
// explicit routes too, from the loopback containers' network app: these
// tests are about what claims do to a route, not about where they count.
func testOptions(t *testing.T, routes ...string) Options {
	t.Helper()
	return Options{
		Specs:         specs(t, routes...),
		Sources:       []source.Source{newFakeSource("docker")},
		ListenAddress: "127.0.0.1",
		ShutdownGrace: 5 * time.Second,
		Claims:        resolver.Claims{Routes: true},
		Network:       "app",
		Logger:        zaptest.NewLogger(t),
	}
}

// specs parses routes as --route does.
func specs(t *testing.T, routes ...string) []resolver.Spec {
	t.Helper()
	var out []resolver.Spec
	for _, r := range routes {
		s, err := resolver.ParseRoute(r)
		require.NoError(t, err)
		out = append(out, s)
	}
	merged, err := resolver.Merge(out)
	require.NoError(t, err)
	return merged
}

// newTestDaemon returns a daemon built from opts, its run loop driven by
// the test (d.update) rather than by Run, with metrics; its routes are
// shut down when the test ends.
func newTestDaemon(t *testing.T, opts Options) (*Daemon, *metrics.Metrics) {
	t.Helper()
	m := metrics.New("dev", "")
	opts.Metrics = m
	d, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(d.table.shutdown)
	t.Cleanup(d.health.Close)
	return d, m
}

// runDaemon runs a daemon built from opts until the test ends, and waits
// until it serves.
func runDaemon(t *testing.T, opts Options) (*Daemon, *metrics.Metrics) {
	t.Helper()
	m := metrics.New("dev", "")
	opts.Metrics = m
	d, err := New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-d.Serving():
	case err := <-done:
		require.FailNow(t, "the daemon did not start", "%v", err)
	}
	return d, m
}

// loopbackContainer is a fake container whose "IP" is 127.0.0.1 and whose
// service is a loopback listener (its ambassador.port, which counts for
// claimers); the ambassador runs outside any container (Self nil), so every
// network counts as shared.
func loopbackContainer(name string, port int, labels map[string]string) source.Container {
	if labels == nil {
		labels = map[string]string{}
	}
	labels[resolver.LabelPort] = strconv.Itoa(port)
	return source.Container{
		ID: "id-" + name, Name: name, State: "running", Labels: labels,
		Networks: []source.Network{{Name: "app", ID: "n-app", IP: "127.0.0.1"}},
	}
}

// echoBackend serves on a loopback port: it greets every connection with
// its name and a newline, then echoes it, keeping it open until the client
// or the test ends it.
func echoBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.Write([]byte(name + "\n"))
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// dialBackend connects to the route at addr and returns the connection
// and the name of the echoBackend it reached.
func dialBackend(t *testing.T, addr string) (net.Conn, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	name, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, "no greeting from a backend")
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	return c, strings.TrimSuffix(name, "\n")
}

// requireEcho checks that c still works both ways.
func requireEcho(t *testing.T, c net.Conn, msgAndArgs ...any) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)), msgAndArgs...)
	_, err := c.Write([]byte("ping"))
	require.NoError(t, err, msgAndArgs...)
	got := make([]byte, 4)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err, msgAndArgs...)
	require.Equal(t, "ping", string(got), msgAndArgs...)
	require.NoError(t, c.SetDeadline(time.Time{}))
}
