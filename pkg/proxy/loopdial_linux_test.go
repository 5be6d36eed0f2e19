package proxy

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// blackholeAddr returns a loopback address whose connects hang: a
// listener whose accept queue is full drops further SYNs, and the
// connecting side waits for its retransmits (a second and more).
func blackholeAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.Listen(fd, 0))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s kept accepting connections into its queue", addr)
	return ""
}

// loopDials returns how many connects the shared event loops have in
// flight.
func loopDials(r *Route) int {
	r.mu.Lock()
	p := r.loops
	r.mu.Unlock()
	if p == nil {
		return 0
	}
	n := 0
	for _, l := range p.loops {
		n += int(l.dials.Load())
	}
	return n
}

// TestLoopDialServes: a plain route's connection is connected by an event
// loop, and served.
func TestLoopDialServes(t *testing.T) {
	obs := &recorder{}
	b := Backend{Addr: startBackend(t, echo)}
	r := &Route{Observer: obs}
	r.SetBackends([]Backend{b})
	c := dial(t, startRoute(t, r))
	assert.Equal(t, "ping", exchange(t, c, "ping"))
	assert.Equal(t, []Backend{b}, obs.events().opened)
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		assert.NotNil(t, c.loop, "served by a loop")
		assert.Nil(t, c.backend, "connected without Go's dialer")
	}
}

// TestLoopDialTimeout: a connect from the loop that gets no answer fails
// at DialTimeout, is reported once as a timeout, and the goroutine path,
// with no other backend to try, rejects the connection with a reset.
func TestLoopDialTimeout(t *testing.T) {
	obs := &recorder{}
	b := Backend{Addr: blackholeAddr(t)}
	r := &Route{Observer: obs, DialTimeout: 150 * time.Millisecond}
	r.SetBackends([]Backend{b})
	addr := startRoute(t, r)
	start := time.Now()
	c := dial(t, addr)
	waitFor(t, func() bool { return loopDials(r) == 1 })
	assert.Empty(t, requireReset(t, c), "rejected")
	elapsed := time.Since(start)
	assert.GreaterOrEqual(t, elapsed, 150*time.Millisecond)
	assert.Less(t, elapsed, 150*time.Millisecond+2*dialCheckInterval+500*time.Millisecond)
	waitFor(t, func() bool { return len(obs.events().rejected) == 1 })
	ev := obs.events()
	assert.Equal(t, []failedDial{{b, DialTimedOut}}, ev.failed)
	assert.Equal(t, []string{RejectNoBackend}, ev.rejected)
}

// TestLoopDialFallsThrough: when the loop's connect is refused, the
// goroutine path goes on with the next backend, without trying the
// refused one twice.
func TestLoopDialFallsThrough(t *testing.T) {
	obs := &recorder{}
	dead, live := Backend{Addr: deadAddr(t)}, Backend{Addr: startBackend(t, echo)}
	r := &Route{Observer: obs}
	r.SetBackends([]Backend{dead, live})
	addr := startRoute(t, r)
	for range 4 { // the rotation starts on each backend in turn
		c := dial(t, addr)
		assert.Equal(t, "ping", exchange(t, c, "ping"))
		c.Close()
	}
	ev := obs.events()
	assert.Equal(t, []Backend{live, live, live, live}, ev.opened)
	assert.Equal(t, []failedDial{{dead, DialRefused}, {dead, DialRefused}}, ev.failed,
		"two of the four connections started on the dead backend, each tried it once")
}

// TestLoopDialDropped: a backend removed from the set (Forget) while the
// loop connects to it cancels the connect; the connection goes to the
// set's other backend at once, not after the dial timeout.
func TestLoopDialDropped(t *testing.T) {
	obs := &recorder{}
	hole := Backend{Addr: blackholeAddr(t), ID: "hole"}
	live := Backend{Addr: startBackend(t, echo)}
	r := &Route{Observer: obs, DialTimeout: time.Minute}
	r.SetBackends([]Backend{hole})
	c := dial(t, startRoute(t, r))
	waitFor(t, func() bool { return loopDials(r) == 1 })
	start := time.Now()
	r.SetBackends([]Backend{live}) // hole stays as a fallback: make-before-break
	r.Forget("hole")
	assert.Equal(t, "ping", exchange(t, c, "ping"))
	assert.Less(t, time.Since(start), time.Second)
	ev := obs.events()
	assert.Equal(t, []Backend{live}, ev.opened)
	assert.Empty(t, ev.failed, "a dropped backend is not at fault")
}

// TestLoopDialClose: closing the route cuts a connect in flight short; the
// client is reset, and no dial failure is reported.
func TestLoopDialClose(t *testing.T) {
	obs := &recorder{}
	r := &Route{Observer: obs, DialTimeout: time.Minute}
	r.SetBackends([]Backend{{Addr: blackholeAddr(t)}})
	c := dial(t, startRoute(t, r))
	waitFor(t, func() bool { return loopDials(r) == 1 })
	start := time.Now()
	require.NoError(t, r.Close())
	assert.Less(t, time.Since(start), time.Second)
	assert.Empty(t, requireReset(t, c), "rejected")
	ev := obs.events()
	assert.Equal(t, []string{RejectShutdown}, ev.rejected)
	assert.Empty(t, ev.failed)
}
