package proxy

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestListenOptions: a socket accepted with accept4, as Serve does, has
// keep-alive on, with Go's default timings, and no delay, though they are
// set only on the listening socket; and its address is the client's.
func TestListenOptions(t *testing.T) {
	ln, err := Listen(t.Context(), "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c := dial(t, ln.Addr().String())
	defer c.Close()
	a, err := accept(rawAccepting(ln))
	require.NoError(t, err)
	defer a.reject()
	require.GreaterOrEqual(t, a.fd, 0, "accepted raw")
	assert.Equal(t, c.LocalAddr().String(), a.remote.String())

	want := map[string]int{"TCP_NODELAY": 1, "SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 15, "TCP_KEEPCNT": 9}
	rc, err := ln.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	require.NoError(t, rc.Control(func(fd uintptr) {
		assert.Equal(t, want, connOptionsOf(t, int(fd)), "listening socket")
	}))
	assert.Equal(t, want, connOptionsOf(t, a.fd), "accepted socket")
}

// TestAcceptClosed: accepting on a closed listener fails with
// net.ErrClosed, which ends Serve.
func TestAcceptClosed(t *testing.T) {
	ln, err := Listen(t.Context(), "127.0.0.1:0")
	require.NoError(t, err)
	ln = rawAccepting(ln)
	require.IsType(t, &rawListener{}, ln)
	done := make(chan error, 1)
	go func() {
		_, err := accept(ln)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // waiting in Go's poller
	ln.Close()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("accept did not return after the listener closed")
	}
}

// connOptionsOf reads the options connOptions sets from socket fd.
func connOptionsOf(t *testing.T, fd int) map[string]int {
	got := map[string]int{}
	for name, o := range map[string][2]int{
		"TCP_NODELAY":   {unix.IPPROTO_TCP, unix.TCP_NODELAY},
		"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
		"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
		"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
	} {
		v, err := unix.GetsockoptInt(fd, o[0], o[1])
		require.NoError(t, err, name)
		got[name] = v
	}
	return got
}
