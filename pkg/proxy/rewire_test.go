package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// listenLater reserves a loopback address that refuses connections until
// the returned start function serves it with handle.
func listenLater(t *testing.T, handle func(net.Conn)) (addr string, start func()) {
	t.Helper()
	addr, fd := reserveAddr(t)
	return addr, func() {
		require.NoError(t, unix.Listen(fd, 128))
		// The listener gets a duplicate of its own: reserveAddr closes fd.
		dup, err := unix.Dup(fd)
		require.NoError(t, err)
		f := os.NewFile(uintptr(dup), addr)
		ln, err := net.FileListener(f)
		f.Close()
		require.NoError(t, err)
		serveListener(t, ln, handle)
	}
}

func TestMakeBeforeBreak(t *testing.T) {
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, whoami("old")), ID: "old"}})
	addr := startRoute(t, r)
	assert.Equal(t, "old", roundTrip(t, addr, ""))

	// Rewire to a backend whose process does not listen yet: new
	// connections keep reaching the old one instead of failing.
	newAddr, startNew := listenLater(t, whoami("new"))
	r.SetBackends([]Backend{{Addr: newAddr, ID: "new"}})
	for range 3 {
		assert.Equal(t, "old", roundTrip(t, addr, ""))
	}

	// As soon as it listens, new connections move to it.
	startNew()
	assert.Equal(t, "new", roundTrip(t, addr, ""))

	// Once the new backend has accepted, the old one is no longer a
	// fallback: the rewire is complete.
	set := r.backends.Load()
	assert.True(t, set.confirmed.Load())
	assert.Empty(t, set.fallbackOrder())
}

func TestFallbackSurvivesRapidRewires(t *testing.T) {
	// Two rewires in a row to backends that are not ready: the last backend
	// known to work stays the fallback.
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, whoami("a")), ID: "a"}})
	addr := startRoute(t, r)
	assert.Equal(t, "a", roundTrip(t, addr, ""))
	r.SetBackends([]Backend{{Addr: deadAddr(t), ID: "b"}})
	r.SetBackends([]Backend{{Addr: deadAddr(t), ID: "c"}})
	assert.Equal(t, "a", roundTrip(t, addr, ""))
}

func TestSetBackendsIdenticalIsNoop(t *testing.T) {
	r := &Route{}
	bs := []Backend{{Addr: "10.0.0.1:1", ID: "x"}}
	r.SetBackends(bs)
	before := r.backends.Load()
	r.SetBackends(bs)
	assert.Same(t, before, r.backends.Load())
}

func TestForget(t *testing.T) {
	r := &Route{}
	goneAddr := startBackend(t, echo)
	r.SetBackends([]Backend{{Addr: goneAddr, ID: "gone"}})
	addr := startRoute(t, r)

	// An established connection to the backend that goes away.
	c := dial(t, addr)
	_, err := c.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)

	// Rewire to another backend (gone becomes a fallback), then forget it.
	r.SetBackends([]Backend{{Addr: deadAddr(t), ID: "next"}})
	assert.Equal(t, 1, r.Forget("gone"))

	// The established connection is closed promptly...
	requireClosed(t, c)
	// ...and no new connection reaches the forgotten address, not even as
	// a fallback.
	assertRejected(t, addr)
	for _, b := range append(r.backends.Load().backends, r.backends.Load().fallback...) {
		assert.NotEqual(t, "gone", b.ID)
	}
}

func TestCloseConns(t *testing.T) {
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo), ID: "a"}})
	addr := startRoute(t, r)
	c := dial(t, addr)
	_, err := c.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)

	assert.Equal(t, 0, r.CloseConns(func(b Backend) bool { return b.ID == "b" }))
	assert.Equal(t, 1, r.CloseConns(func(b Backend) bool { return b.ID == "a" }))
	waitFor(t, func() bool { return r.Active() == 0 })
}

// readAllAsync connects to addr and sends everything it reads until EOF
// (or the error) on the channel it returns.
func readAllAsync(addr string) <-chan string {
	got := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	return got
}

func TestBackendWait(t *testing.T) {
	t.Run("a backend appears", func(t *testing.T) {
		r := &Route{BackendWait: 5 * time.Second}
		addr := startRoute(t, r)
		got := readAllAsync(addr)
		waitFor(t, func() bool { return r.Active() == 1 })
		r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) { c.Write([]byte("arrived")) })}})
		assert.Equal(t, "arrived", <-got)
	})
	t.Run("a backend starts listening", func(t *testing.T) {
		// The recreate case: the new container is known but its process
		// refuses connections for a while.
		later, start := listenLater(t, func(c net.Conn) { c.Write([]byte("listening")) })
		r := &Route{BackendWait: 5 * time.Second}
		r.SetBackends([]Backend{{Addr: later}})
		addr := startRoute(t, r)
		got := readAllAsync(addr)
		waitFor(t, func() bool { return r.Active() == 1 })
		start()
		assert.Equal(t, "listening", <-got)
	})
	t.Run("the wait expires", func(t *testing.T) {
		const wait = 150 * time.Millisecond
		r := &Route{BackendWait: wait}
		start := time.Now()
		assertRejected(t, startRoute(t, r))
		elapsed := time.Since(start)
		assert.GreaterOrEqual(t, elapsed, wait)
		assert.Less(t, elapsed, 5*time.Second)
	})
}

func TestNextRetryDelay(t *testing.T) {
	tests := []struct {
		name   string
		delay  time.Duration
		newSet bool
		want   time.Duration
	}{
		{"doubles", minRetryDelay, false, 2 * minRetryDelay},
		{"capped", maxRetryDelay, false, maxRetryDelay},
		{"a new set starts over", maxRetryDelay, true, minRetryDelay},
		{"a new set is polled", minRetryDelay, true, minRetryDelay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, nextRetryDelay(tt.delay, tt.newSet))
		})
	}
}

func TestPruneFallback(t *testing.T) {
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, whoami("paused")), ID: "paused"}})
	addr := startRoute(t, r)
	r.SetBackends([]Backend{{Addr: deadAddr(t), ID: "new"}})
	assert.Equal(t, "paused", roundTrip(t, addr, ""), "still the fallback")

	before := r.backends.Load()
	r.PruneFallback(func(b Backend) bool { return true })
	assert.Same(t, before, r.backends.Load(), "nothing to prune: no new set")

	r.PruneFallback(func(b Backend) bool { return b.ID != "paused" })
	assertRejected(t, addr)
	assert.Equal(t, []Backend{{Addr: r.Backends()[0].Addr, ID: "new"}}, r.Backends())
}

// TestDroppedBackendInFlightDial: Docker hands a removed container's
// address to the next container at once, and a connect to it that is still
// in flight (its SYN unanswered, retransmitted) would complete against the
// newcomer. A set replacement that drops the backend, even as a fallback,
// cancels such connects, and a connect that completes anyway (the dialer
// ignored the cancellation) is closed, never used.
func TestDroppedBackendInFlightDial(t *testing.T) {
	gone := Backend{Addr: "gone.invalid:1", ID: "gone"}
	for _, tt := range []struct {
		name          string
		honoursCancel bool
		drop          func(r *Route)
	}{
		{"forget/cancelled", true, func(r *Route) { r.Forget("gone") }},
		{"forget/completed-anyway", false, func(r *Route) { r.Forget("gone") }},
		{"rewire-then-prune/cancelled", true, func(r *Route) {
			r.SetBackends([]Backend{{Addr: deadAddr(t), ID: "next"}})
			require.True(t, r.backends.Load().has(gone), "still a fallback")
			r.PruneFallback(func(b Backend) bool { return b.ID != "gone" })
		}},
		{"rewire-then-prune/completed-anyway", false, func(r *Route) {
			r.SetBackends([]Backend{{Addr: deadAddr(t), ID: "next"}})
			r.PruneFallback(func(b Backend) bool { return b.ID != "gone" })
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stranger := startBackend(t, whoami("stranger"))
			dialling := make(chan struct{})
			dropped := make(chan struct{})
			var d net.Dialer
			r := &Route{BackendWait: 100 * time.Millisecond}
			r.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr != gone.Addr {
					return d.DialContext(ctx, network, addr)
				}
				close(dialling)
				if tt.honoursCancel {
					<-ctx.Done()
					return nil, ctx.Err()
				}
				<-dropped
				// The address now answers, from another container.
				return d.DialContext(context.Background(), network, stranger)
			}
			r.SetBackends([]Backend{gone})
			addr := startRoute(t, r)

			c := dial(t, addr)
			<-dialling
			tt.drop(r)
			close(dropped)
			// Not a byte from the stranger: the client is reset once
			// BackendWait finds no other backend.
			assert.Empty(t, requireReset(t, c))
			waitFor(t, func() bool { return r.Active() == 0 })
		})
	}
}

// TestDialAfterDropRefused: a connection may read the backend set just
// before a replacement drops a backend; its connect to that backend, which
// starts after the replacement, is refused rather than sent.
func TestDialAfterDropRefused(t *testing.T) {
	r := &Route{}
	r.SetBackends([]Backend{{Addr: "10.0.0.1:1", ID: "a"}})
	stale := r.backends.Load()
	r.Forget("a")
	_, _, err := r.dial(context.Background(), stale, &conn{route: r})
	assert.ErrorIs(t, err, errDropped)
}

// refusals is an Observer that counts the failed connects to each backend.
type refusals struct {
	nopObserver
	mu sync.Mutex
	n  map[string]int // by address; guarded by mu
}

func (o *refusals) DialFailed(b Backend, _ string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[b.Addr]++
}

func (o *refusals) of(addr string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[addr]
}

// TestWaitPollsANewSet: a connection that waited long for a backend
// (BackendWait), its retry delay doubled to its cap, tries a new set
// every 5 ms while it is new, rather than at 5, 15, 35 ms... from the
// change: a container that listens a little after it started is found at
// once, not up to 20-40 ms later.
func TestWaitPollsANewSet(t *testing.T) {
	obs := &refusals{}
	r := &Route{BackendWait: 5 * time.Second, Observer: obs}
	gone, _ := listenLater(t, echo) // never listens
	r.SetBackends([]Backend{{Addr: gone}})
	c := dial(t, startRoute(t, r))
	_, err := c.Write([]byte("waited"))
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond) // the delay doubles to its cap

	next, start := listenLater(t, echo)
	r.SetBackends([]Backend{{Addr: next}})
	const listensAfter = 60 * time.Millisecond
	time.Sleep(listensAfter)
	start()
	require.NoError(t, c.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "waited", string(got))
	// Every 5 ms, about 12 tries; doubling from the change, 4.
	t.Logf("%d tries of the new set before it listened", obs.of(next))
	assert.GreaterOrEqual(t, obs.of(next), 7, "tries of the new set in the %v before it listened", listensAfter)
}

// TestWaitersShareProbing: connections waiting for a backend that refuses
// (a container booting) share the probing of it, so that the load on the
// backend does not grow with the number of waiting clients: beyond each
// connection's own first try, ten waiting clients make about the refused
// connects one does; and once the backend listens, all ten are served at
// once, not one retry interval after another.
func TestWaitersShareProbing(t *testing.T) {
	const booting = 400 * time.Millisecond
	// refused runs n clients against a route whose only backend refuses
	// for booting and then listens, and returns the connects it refused
	// and how long the clients took to be served once it listened.
	refused := func(t *testing.T, n int) (int, time.Duration) {
		obs := &refusals{}
		addr, listen := listenLater(t, echo)
		r := &Route{BackendWait: 5 * time.Second, Observer: obs}
		r.SetBackends([]Backend{{Addr: addr}})
		raddr := startRoute(t, r)
		cs := make([]*net.TCPConn, n)
		for i := range cs {
			cs[i] = dial(t, raddr)
		}
		waitFor(t, func() bool { return r.Active() == n })
		time.Sleep(booting) // the container boots: not waiting for anything
		listen()
		listened := time.Now()
		for i, c := range cs {
			msg := fmt.Sprintf("client %d", i)
			assert.Equal(t, msg, exchange(t, c, msg), "served")
		}
		served := time.Since(listened)
		for _, c := range cs {
			c.Close() // before the test's end, which waits for the echoes
		}
		return obs.of(addr), served
	}
	single, _ := refused(t, 1)
	many, served := refused(t, 10)
	t.Logf("refused connects: %d for one waiting client, %d for ten, served %v after the backend listened",
		single, many, served)
	// Each client's own first try, and a few probes more or fewer as the
	// timings fall.
	assert.LessOrEqual(t, many, single+10+5)
	// One retry interval (maxRetryDelay) and the connects.
	assert.Less(t, served, 4*maxRetryDelay)
}

// TestWaitersTakeOver: when the connection probing for the others leaves
// (its BackendWait ran out), one of those still waiting takes over, and is
// served once the backend listens.
func TestWaitersTakeOver(t *testing.T) {
	const wait = 600 * time.Millisecond
	addr, listen := listenLater(t, echo)
	r := &Route{BackendWait: wait}
	r.SetBackends([]Backend{{Addr: addr}})
	raddr := startRoute(t, r)
	first := dial(t, raddr) // waits first, and probes for both
	waitFor(t, func() bool { return r.Active() == 1 })
	time.Sleep(wait / 2)
	second := dial(t, raddr)
	time.Sleep(wait/2 + wait/6) // the first's wait runs out
	listen()
	assert.Empty(t, requireReset(t, first), "rejected")
	assert.Equal(t, "second", exchange(t, second, "second"))
	second.Close() // before the test's end, which waits for the echo
}

// TestWaitersNewSet: connections waiting together for a set that is
// replaced each try the new one at once.
func TestWaitersNewSet(t *testing.T) {
	r := &Route{BackendWait: 5 * time.Second}
	r.SetBackends([]Backend{{Addr: deadAddr(t)}})
	raddr := startRoute(t, r)
	cs := make([]*net.TCPConn, 5)
	for i := range cs {
		cs[i] = dial(t, raddr)
	}
	waitFor(t, func() bool { return r.Active() == len(cs) })
	time.Sleep(300 * time.Millisecond) // the probing slows to maxRetryDelay
	start := time.Now()
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	for i, c := range cs {
		msg := fmt.Sprintf("client %d", i)
		assert.Equal(t, msg, exchange(t, c, msg))
		c.Close()
	}
	assert.Less(t, time.Since(start), maxRetryDelay, "served before the next probe")
}
