// Package nettest holds the loopback helpers that the unit tests of
// several packages share: free ports, servers that greet and close, reads
// that wait for a route to serve, and a check that a connection was
// closed rather than left hanging. Every helper takes t first, fails the
// test on an unexpected error, and cleans up what it started when the test
// ends. Safe for parallel tests: nothing here is shared between calls.
package nettest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FreePort returns a loopback TCP port that was free a moment ago, for a
// listener the test makes later. It is picked below the ephemeral range,
// where there is room: the kernel gives the ports of that range to the
// local ends of connections, and a connection of a test running in
// parallel (of this package or another) could otherwise take the port in
// between. Only a listener that picks the same port by chance can.
func FreePort(t *testing.T) int {
	t.Helper()
	return freePort(t, func(addr string) (net.Addr, io.Closer, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		return ln.Addr(), ln, nil
	})
}

// FreeUDPPort is FreePort for a UDP socket.
func FreeUDPPort(t *testing.T) int {
	t.Helper()
	return freePort(t, func(addr string) (net.Addr, io.Closer, error) {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		return pc.LocalAddr(), pc, nil
	})
}

// freePort is FreePort for what listen opens on a loopback address.
func freePort(t *testing.T, listen func(addr string) (net.Addr, io.Closer, error)) int {
	t.Helper()
	if top := min(ephemeralLow(), freePortTop); top > freePortBottom {
		for range 100 {
			port := freePortBottom + rand.IntN(top-freePortBottom)
			if _, l, err := listen("127.0.0.1:" + strconv.Itoa(port)); err == nil {
				l.Close()
				return port
			}
		}
	}
	addr, l, err := listen("127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return Port(t, addr.String())
}

// FreePort's ports: [freePortBottom, freePortTop), and below the
// ephemeral range. The bench takes ports from 20000 on.
const freePortBottom, freePortTop = 10000, 20000

// ephemeralLow returns the first port of the ephemeral range
// (net.ipv4.ip_local_port_range), or Linux's default if it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	low, err := strconv.Atoi(strings.Fields(string(b) + " x")[0])
	if err != nil {
		return 32768
	}
	return low
}

// Greeter serves msg to every connection on a loopback port, then closes
// it, until the test ends; it returns the address.
func Greeter(t *testing.T, msg string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(greet(ln, msg))
	return ln.Addr().String()
}

// GreeterOn is Greeter on addr, a port that must be free, until stop is
// called or the test ends: a backend that comes and goes at one address.
func GreeterOn(t *testing.T, addr, msg string) (stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	stop = sync.OnceFunc(greet(ln, msg))
	t.Cleanup(stop)
	return stop
}

// greet serves msg on ln, to every connection, until the function it
// returns closes ln and waits for the last connection to be served.
func greet(ln net.Listener, msg string) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(msg))
			c.Close()
		}
	}()
	return func() {
		ln.Close()
		<-done
	}
}

// Read connects to addr until a connection reads to EOF, within 5 s, and
// returns what it read: a route that is still starting is waited for.
func Read(t *testing.T, addr string) string {
	t.Helper()
	var got []byte
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		got, err = io.ReadAll(c)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	return string(got)
}

// Port returns the port of a "host:port" address.
func Port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

// CloseWithin bounds how long RequireClosed waits: the closes the tests
// check are made at once, or by a timer of their own, so a connection
// still open after this long is not going to close.
const CloseWithin = 2 * time.Second

// RequireClosed reads c until its peer ends it, and fails unless it ends
// with EOF or a reset within CloseWithin. A Read that fails on its
// deadline is a connection still open, not one that was closed: asserting
// only that Read fails would let a hung connection pass. Bytes read before
// the end are dropped.
func RequireClosed(t *testing.T, c net.Conn, msgAndArgs ...any) {
	t.Helper()
	start := time.Now()
	require.NoError(t, c.SetReadDeadline(start.Add(CloseWithin)))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			require.FailNow(t, "the connection is still open after "+time.Since(start).Round(time.Millisecond).String(), msgAndArgs...)
		default:
			require.FailNow(t, "the connection failed, but was not closed: "+err.Error(), msgAndArgs...)
		}
	}
}

// RequireRoot skips the test, saying why it needs root, unless it runs as
// root.
func RequireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}

// AbstractName returns an abstract unix socket name (@...) of the test's
// own: the process and the test's name make it unique on the machine.
func AbstractName(t *testing.T, name string) string {
	return fmt.Sprintf("@ambassadord-test-%d-%s-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"), name)
}

// Serve serves every connection on a loopback port with handle, each in a
// goroutine of its own that closes it after, until the test ends, when it
// waits for them; it returns the address.
func Serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ServeListener(t, ln, handle)
	return ln.Addr().String()
}

// ServeListener is Serve on ln.
func ServeListener(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}
