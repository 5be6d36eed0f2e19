package proxy

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPollerSharedAndReleased: routes share one set of event loops, which
// run while any route holds them and stop once the last route closed.
func TestPollerSharedAndReleased(t *testing.T) {
	backend := startBackend(t, echo)
	newRoute := func() (*Route, string) {
		r := &Route{}
		r.SetBackends([]Backend{{Addr: backend}})
		ln, err := Listen(t.Context(), "127.0.0.1:0")
		require.NoError(t, err)
		go r.Serve(ln)
		t.Cleanup(func() { r.Close() })
		return r, ln.Addr().String()
	}
	r1, addr1 := newRoute()
	r2, addr2 := newRoute()
	c1, c2 := dial(t, addr1), dial(t, addr2)
	for _, c := range []net.Conn{c1, c2} {
		require.Equal(t, "ping", exchange(t, c, "ping"))
	}
	procs := runtime.GOMAXPROCS(0)
	pollerMu.Lock()
	shared, holders := sharedPoller, pollerHolders
	pollerMu.Unlock()
	require.NotNil(t, shared)
	assert.Equal(t, 2, holders)
	assert.Equal(t, shared.procs+len(shared.loops), procs, "one P more per loop while the loops run")
	for _, r := range []*Route{r1, r2} {
		r.mu.Lock()
		assert.Same(t, shared, r.loops)
		r.mu.Unlock()
	}

	require.NoError(t, r1.Close())
	assert.Equal(t, "still", exchange(t, c2, "still"), "the other route's connection is served on")
	require.NoError(t, r2.Close())
	pollerMu.Lock()
	defer pollerMu.Unlock()
	assert.Nil(t, sharedPoller, "the loops stop with the last route")
	assert.Zero(t, pollerHolders)
	assert.Equal(t, shared.procs, runtime.GOMAXPROCS(0), "the loops' Ps are given back")
}

// TestLoopManyExchanges: many connections exchanging small messages at
// once, each answer matching its request, as a redis client's would.
func TestLoopManyExchanges(t *testing.T) {
	const conns, rounds = 50, 200
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		c := dial(t, addr)
		wg.Go(func() {
			buf := make([]byte, 64)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			for j := range rounds {
				msg := fmt.Sprintf("conn %d message %d", i, j)
				if _, err := c.Write([]byte(msg)); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
					errs <- err
					return
				}
				if string(buf[:len(msg)]) != msg {
					errs <- fmt.Errorf("sent %q, got %q", msg, buf[:len(msg)])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestLoopSlowReader: a backend that reads slowly gets every byte, in
// order; the loop keeps what the backend does not take and reads nothing
// more from the client meanwhile.
func TestLoopSlowReader(t *testing.T) {
	const size = 8 << 20
	got := make(chan [32]byte, 1)
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
		h := sha256.New()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			h.Write(buf[:n])
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		got <- [32]byte(h.Sum(nil))
	})}})
	c := dial(t, startRoute(t, r))
	sent := randomBytes(size, 3)
	_, err := c.Write(sent)
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	select {
	case h := <-got:
		assert.Equal(t, sha256.Sum256(sent), h)
	case <-time.After(time.Minute):
		t.Fatal("the backend did not get everything")
	}
}

// TestLoopStuckBackend: a backend that never reads stops the client's
// writes once the kernel's buffers are full: the loop buffers nothing
// without bound.
func TestLoopStuckBackend(t *testing.T) {
	stop := make(chan struct{})
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, func(net.Conn) { <-stop })}})
	t.Cleanup(func() { close(stop) }) // before startBackend's, which waits for the handler
	c := dial(t, startRoute(t, r))
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(2*time.Second)))
	n, err := c.Write(make([]byte, 256<<20))
	require.Error(t, err, "a write of 256 MiB to a backend that never reads must block")
	// Socket buffers on loopback: the client's send buffer, the proxy's
	// two and the backend's receive buffer, a few MiB each at most.
	assert.Less(t, n, 64<<20, "bytes taken before the writes blocked")
	t.Logf("%d MiB taken before the writes blocked", n>>20)
}

// TestLoopBulkWithoutPipes: with no pipe to be had, bulk transfers copy
// through user space instead of splicing, intact.
func TestLoopBulkWithoutPipes(t *testing.T) {
	releasePipes()
	saved := pipeBudget
	pipeBudget = pipesOpen.Load() // nothing more may be opened
	t.Cleanup(func() { pipeBudget = saved })

	const size = 4 << 20
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	c := dial(t, startRoute(t, r))
	sent := randomBytes(size, 4)
	go func() {
		c.Write(sent)
		c.CloseWrite()
	}()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	back, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(sent), sha256.Sum256(back))
}
