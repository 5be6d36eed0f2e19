package proxy

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeFDs counts this process's open pipe descriptors.
func pipeFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}

// TestIdleConnectionsHoldNoPipe: a connection that has moved bytes both
// ways and then idles holds its two sockets and nothing else: no pipe
// (io.Copy's splice would hold one, two descriptors, per direction for
// the connection's whole life), no goroutine, no stack.
func TestIdleConnectionsHoldNoPipe(t *testing.T) {
	const conns = 200
	backend := holdingBackend(t)
	r := &Route{}
	r.SetBackends([]Backend{{Addr: backend}})
	addr := startRoute(t, r)

	open := func(n int) {
		for range n {
			c := dial(t, addr)
			_, err := c.Write([]byte("ping"))
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, err = io.ReadFull(c, make([]byte, 4))
			require.NoError(t, err)
		}
	}
	// Pipes of Go's own pools, from earlier tests, come and go; what
	// matters is that idle connections add none.
	// Go's own splice pipes (io.Copy in other tests' servers) wait in a
	// sync.Pool, which the race detector makes drop some on purpose, and
	// are closed by finalizers after a collection.
	settled := func() int {
		runtime.GC()
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // finalizers run in their own goroutine
		return pipeFDs(t)
	}
	open(conns)
	before, stacks, goroutines := settled(), stackInuse(), runtime.NumGoroutine()
	open(conns)
	require.Equal(t, 2*conns, r.Active())
	assert.LessOrEqual(t, settled()-before, 8, "pipe descriptors added by %d more idle connections", conns)
	// The event loop serves idle connections without a goroutine of
	// their own, and the backend holds its side without one either.
	added := runtime.NumGoroutine() - goroutines
	assert.LessOrEqual(t, added, 4, "goroutines added by %d more idle connections", conns)
	// So the stacks measured are the proxy's alone, and the bound holds
	// with the race detector as without it, which makes stacks larger:
	// less than the smallest goroutine stack (2 KiB) per connection, so
	// a goroutine per connection, or a stack that grows with each, fails
	// it in either mode. GC shrinks stacks: the difference can be < 0.
	perConn := float64(int64(stackInuse())-int64(stacks)) / conns / 1024
	t.Logf("per idle connection: %.2f goroutines, %.2f KiB of goroutine stacks", float64(added)/conns, perConn)
	assert.LessOrEqual(t, perConn, 1.0, "KiB of goroutine stacks per idle connection")
}

// holdingBackend returns the address of a backend that answers the first
// 4 bytes of each connection with the same 4 bytes, from its accept
// goroutine, and then holds the connection, idle, without a goroutine of
// its own, until the test ends. It copies through a buffer: io.Copy would
// splice, and hold pipes of its own in this process.
func holdingBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var held []net.Conn // the accept goroutine's until done is closed
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, buf); err == nil {
				c.Write(buf)
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func stackInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}

// TestSpliceCopyChunkFallback: out of file descriptors for a pipe, the
// bytes still get through, by a user-space copy.
func TestSpliceCopyChunkFallback(t *testing.T) {
	a, b := tcpPipe(t)
	c, d := tcpPipe(t)
	go func() {
		a.Write([]byte("hello"))
		a.CloseWrite()
	}()
	n, err := copyChunk(c, b, make([]byte, copyBufferSize))
	require.NoError(t, err)
	assert.Equal(t, int64(5), n)
	got := make([]byte, 5)
	_, err = io.ReadFull(d, got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	n, err = copyChunk(c, b, make([]byte, copyBufferSize))
	assert.NoError(t, err, "EOF is the end, not an error")
	assert.Zero(t, n)
}

// tcpPipe returns the two ends of a loopback TCP connection.
func tcpPipe(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s := <-accepted
	require.NotNil(t, s)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestPipePoolBounded: the pool keeps at most maxPooledPipes pipes, and
// releasePipes closes them all.
func TestPipePoolBounded(t *testing.T) {
	releasePipes()
	before := pipeFDs(t)
	var ps []*pipe
	for range maxPooledPipes + 10 {
		p, err := getPipe()
		require.NoError(t, err)
		ps = append(ps, p)
	}
	for _, p := range ps {
		putPipe(p)
	}
	assert.Equal(t, maxPooledPipes, len(pipePool))
	assert.Equal(t, 2*maxPooledPipes, pipeFDs(t)-before, "pipes beyond the bound are closed")
	releasePipes()
	assert.Zero(t, len(pipePool))
	assert.Equal(t, before, pipeFDs(t))
}

// TestPipeBudget: past the budget no pipe is made, and a transfer still
// gets through, by user space.
func TestPipeBudget(t *testing.T) {
	releasePipes()
	saved := pipeBudget
	pipeBudget = pipesOpen.Load() // nothing more may be opened
	t.Cleanup(func() { pipeBudget = saved })
	_, err := getPipe()
	require.ErrorIs(t, err, errPipeBudget)

	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, whoami("still"))}})
	assert.Equal(t, "still", roundTrip(t, startRoute(t, r), "without pipes"))
}
