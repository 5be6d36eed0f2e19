package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/ambassadord/ambassadord/internal/nettest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startBackend serves every connection on a loopback listener with handle,
// and returns the listener's address. All goroutines end with the test.
func startBackend(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serveListener(t, ln, handle)
	return ln.Addr().String()
}

// serveListener serves every connection on ln with handle until the test
// ends.
func serveListener(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	nettest.ServeListener(t, ln, handle)
}

// echo copies everything back, then half-closes.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// startRoute serves r on a loopback listener and returns its address.
func startRoute(t *testing.T, r *Route) string {
	t.Helper()
	if r.Logger == nil {
		r.Logger = zaptest.NewLogger(t)
	}
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, r.Close())
		require.NoError(t, <-done)
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip sends msg, half-closes, and returns everything read until EOF.
func roundTrip(t *testing.T, addr, msg string) string {
	t.Helper()
	c := dial(t, addr)
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	return string(got)
}

// whoami answers every connection with name, after reading to EOF.
func whoami(name string) func(net.Conn) {
	return func(c net.Conn) {
		io.Copy(io.Discard, c)
		c.Write([]byte(name))
	}
}

// assertRejected connects to addr, sends a byte, and checks that the
// connection is closed (FIN or RST) without a byte in return. The reset of
// a rejected connection can come before the connect returns.
func assertRejected(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
		return
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte("x"))
	got, _ := requireClosed(t, c)
	assert.Empty(t, got)
}

// requireClosed reads c to its end, within 5 s, and fails the test unless
// the peer closed it, with a FIN (EOF) or a reset: a read still waiting at
// its deadline is a connection that hung, which a bare assert.Error on the
// read would take for a close. It returns what was read, and the reset
// (nil for EOF).
func requireClosed(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	got, err := readAll(t, c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want the connection closed (EOF or a reset), got %v", err)
	}
	return got, err
}

// readAll reads c to EOF, within 5 seconds.
func readAll(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	return string(got), err
}

// exchange writes msg on c and reads as many bytes back.
func exchange(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	return string(buf)
}

// deadAddr returns a loopback address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	addr, _ := reserveAddr(t)
	return addr
}

// reserveAddr returns a loopback address that refuses connections, and
// the socket bound to it: bound, so that no listener of the test (a
// route's own, say) can be given the port, but not listening. The socket
// is closed at the end of the test.
func reserveAddr(t *testing.T) (string, int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port), fd
}

func TestForward(t *testing.T) {
	r := &Route{Name: "echo"}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r)
	assert.Equal(t, "hello", roundTrip(t, addr, "hello"))
}

// TestUnixListener: a listener other than TCP is served by goroutines
// copying through a buffer (copyBuffer), half-close included.
func TestUnixListener(t *testing.T) {
	r := &Route{Logger: zaptest.NewLogger(t)}
	r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Write(append([]byte("got "), b...))
	})}})
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "route.sock"))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, r.Close())
		require.NoError(t, <-done)
	})
	nc, err := net.Dial("unix", ln.Addr().String())
	require.NoError(t, err)
	defer nc.Close()
	c := nc.(*net.UnixConn)
	msg := randomBytes(1<<20, 5)
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := readAll(t, c)
	require.NoError(t, err)
	assert.Equal(t, "got "+string(msg), got)
}

func TestDNSBackendResolvedAtConnect(t *testing.T) {
	_, port, err := net.SplitHostPort(startBackend(t, echo))
	require.NoError(t, err)
	r := &Route{}
	r.SetBackends([]Backend{{Addr: net.JoinHostPort("localhost", port)}})
	assert.Equal(t, "by name", roundTrip(t, startRoute(t, r), "by name"))
}

// dataPaths are the ways a Route moves an established connection's bytes:
// the event loop (the default), goroutines with splice (when the loop
// cannot have the sockets), and goroutines copying through a buffer (with
// an idle timeout).
var dataPaths = map[string]func() *Route{
	"loop":       func() *Route { return &Route{} },
	"goroutines": func() *Route { return &Route{noLoops: true} },
	"idle":       func() *Route { return &Route{IdleTimeout: time.Minute} },
}

func TestHalfClose(t *testing.T) {
	for name, newRoute := range dataPaths {
		t.Run(name, func(t *testing.T) {
			t.Run("client first", func(t *testing.T) {
				// The backend answers only after the client's FIN reaches it,
				// so the answer must still flow after the client half-closed.
				r := newRoute()
				r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
					b, _ := io.ReadAll(c)
					c.Write(append([]byte("got "), b...))
				})}})
				assert.Equal(t, "got request", roundTrip(t, startRoute(t, r), "request"))
			})
			t.Run("backend first", func(t *testing.T) {
				// The backend greets and half-closes; the client must see EOF
				// and still be able to send, and the backend must receive it.
				received := make(chan string, 1)
				r := newRoute()
				r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
					c.Write([]byte("greeting"))
					c.(*net.TCPConn).CloseWrite()
					b, _ := io.ReadAll(c)
					received <- string(b)
				})}})
				c := dial(t, startRoute(t, r))
				require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
				got, err := io.ReadAll(c)
				require.NoError(t, err)
				assert.Equal(t, "greeting", string(got))
				_, err = c.Write([]byte("late data"))
				require.NoError(t, err)
				require.NoError(t, c.CloseWrite())
				assert.Equal(t, "late data", <-received)
			})
		})
	}
}

func TestRoundRobin(t *testing.T) {
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, whoami("a"))}, {Addr: startBackend(t, whoami("b"))}})
	addr := startRoute(t, r)
	var got []string
	for range 4 {
		got = append(got, roundTrip(t, addr, ""))
	}
	assert.Equal(t, []string{"a", "b", "a", "b"}, got)
}

func TestFailoverToNextBackend(t *testing.T) {
	r := &Route{DialTimeout: time.Second}
	r.SetBackends([]Backend{{Addr: deadAddr(t)}, {Addr: startBackend(t, whoami("live"))}})
	addr := startRoute(t, r)
	for range 3 {
		assert.Equal(t, "live", roundTrip(t, addr, ""))
	}
}

func TestNoBackendClosesPromptly(t *testing.T) {
	for name, backends := range map[string][]Backend{
		"empty set": nil,
		"all dead":  {{Addr: deadAddr(t)}, {Addr: deadAddr(t)}},
	} {
		t.Run(name, func(t *testing.T) {
			r := &Route{}
			r.SetBackends(backends)
			start := time.Now()
			assertRejected(t, startRoute(t, r))
			assert.Less(t, time.Since(start), time.Second)
		})
	}
}

func TestSwapKeepsEstablishedConnections(t *testing.T) {
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r)

	old := dial(t, addr)
	_, err := old.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(old, buf)
	require.NoError(t, err)

	r.SetBackends([]Backend{{Addr: startBackend(t, whoami("new"))}})
	assert.Equal(t, "new", roundTrip(t, addr, ""))

	// The established connection still talks to the old echo backend.
	_, err = old.Write([]byte("pong"))
	require.NoError(t, err)
	require.NoError(t, old.CloseWrite())
	got, err := io.ReadAll(old)
	require.NoError(t, err)
	assert.Equal(t, "pong", string(got))
}

func TestMaxConns(t *testing.T) {
	r := &Route{MaxConns: 1}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r)

	first := dial(t, addr)
	_, err := first.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(first, make([]byte, 1))
	require.NoError(t, err)
	require.Equal(t, 1, r.Active())

	// The second connection is accepted by the kernel, then closed by the
	// route without reaching a backend.
	assertRejected(t, addr)

	first.Close()
	waitFor(t, func() bool { return r.Active() == 0 })
	assert.Equal(t, "z", roundTrip(t, addr, "z"))
}

func TestIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	r := &Route{IdleTimeout: idle}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r)

	t.Run("idle connection is closed", func(t *testing.T) {
		c := dial(t, addr)
		start := time.Now()
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF)
		// The proxy's clock started a little before ours.
		assert.GreaterOrEqual(t, time.Since(start), idle/2)
	})
	t.Run("trickling connection is kept", func(t *testing.T) {
		c := dial(t, addr)
		tick := time.NewTicker(idle / 4)
		defer tick.Stop()
		buf := make([]byte, 1)
		// Twelve bytes at a quarter of the timeout apart: three timeouts
		// long in all, never idle for one.
		for i := range 12 {
			<-tick.C
			_, err := c.Write([]byte{byte(i)})
			require.NoError(t, err)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			assert.Equal(t, byte(i), buf[0])
		}
	})
	t.Run("one-way stream is kept", func(t *testing.T) {
		// Only the client sends; the backend never answers. Traffic in one
		// direction is activity for the whole connection.
		got := make(chan int64, 1)
		sink := &Route{IdleTimeout: idle}
		sink.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			got <- n
		})}})
		c := dial(t, startRoute(t, sink))
		tick := time.NewTicker(idle / 4)
		defer tick.Stop()
		for range 12 {
			<-tick.C
			_, err := c.Write([]byte("z"))
			require.NoError(t, err)
		}
		require.NoError(t, c.CloseWrite())
		assert.Equal(t, int64(12), <-got)
	})
}

func TestIntegrity(t *testing.T) {
	const size = 32 << 20
	for name, newRoute := range dataPaths {
		t.Run(name, func(t *testing.T) {
			// The backend hashes what it reads, then streams its own data.
			backendHash := make(chan [32]byte, 1)
			payload := randomBytes(size, 2)
			r := newRoute()
			r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
				h := sha256.New()
				io.Copy(h, c)
				backendHash <- [32]byte(h.Sum(nil))
				c.Write(payload)
			})}})
			c := dial(t, startRoute(t, r))
			sent := randomBytes(size, 1)
			go func() {
				c.Write(sent)
				c.CloseWrite()
			}()
			h := sha256.New()
			n, err := io.Copy(h, c)
			require.NoError(t, err)
			assert.Equal(t, int64(size), n)
			assert.Equal(t, sha256.Sum256(payload), [32]byte(h.Sum(nil)))
			assert.Equal(t, sha256.Sum256(sent), <-backendHash)
		})
	}
}

func TestShutdownIsGraceful(t *testing.T) {
	release := make(chan struct{})
	r := &Route{Logger: zaptest.NewLogger(t)}
	r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
		<-release
		c.Write([]byte("finished"))
	})}})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln) }()

	c := dial(t, ln.Addr().String())
	waitFor(t, func() bool { return r.Active() == 1 })

	shut := make(chan error, 1)
	go func() { shut <- r.Shutdown(context.Background()) }()
	require.NoError(t, <-served, "Serve returns nil once shutting down")
	_, err = net.Dial("tcp", ln.Addr().String())
	require.Error(t, err, "no longer accepting")

	// The established connection finishes on its own: the backend answers
	// and closes, then the client closes its side.
	close(release)
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "finished", string(got))
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while the client side was still open", err)
	default:
	}
	require.NoError(t, c.Close())
	assert.NoError(t, <-shut)
}

func TestShutdownGraceExpires(t *testing.T) {
	r := &Route{}
	block := make(chan struct{})
	defer close(block)
	r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) { <-block })}})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	waitFor(t, func() bool { return r.Active() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, r.Shutdown(ctx), context.DeadlineExceeded)
	assert.Equal(t, 0, r.Active())
	require.NoError(t, <-served)
	requireClosed(t, c) // the straggler
}

func TestBackendSetOrder(t *testing.T) {
	s := &backendSet{backends: []Backend{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}}}
	addrs := func(bs []Backend) (out []string) {
		for _, b := range bs {
			out = append(out, b.Addr)
		}
		return out
	}
	assert.Equal(t, []string{"a", "b", "c"}, addrs(s.order()))
	assert.Equal(t, []string{"b", "c", "a"}, addrs(s.order()))
	assert.Equal(t, []string{"c", "a", "b"}, addrs(s.order()))
	assert.Equal(t, []string{"a", "b", "c"}, addrs(s.order()))
	assert.Empty(t, (&backendSet{}).order())
}

func TestIsTeardown(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{io.EOF, true},
		{net.ErrClosed, true},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{errIdle, true},
		{errors.New("boom"), false},
	} {
		assert.Equal(t, tt.want, isTeardown(tt.err), "%v", tt.err)
	}
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, 5*time.Millisecond)
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}
