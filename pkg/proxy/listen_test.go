package proxy

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestListenKeepAlive: an accepted connection has keep-alive on, with Go's
// default timings, though set only on the listening socket.
func TestListenKeepAlive(t *testing.T) {
	ln, err := Listen(t.Context(), "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c := dial(t, ln.Addr().String())
	defer c.Close()
	ac, err := ln.Accept()
	require.NoError(t, err)
	defer ac.Close()

	want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 15, "TCP_KEEPCNT": 9}
	assert.Equal(t, want, keepAliveOptions(t, ln.(syscall.Conn)), "listening socket")
	assert.Equal(t, want, keepAliveOptions(t, ac.(syscall.Conn)), "accepted socket")
}

// keepAliveOptions reads a socket's keep-alive options.
func keepAliveOptions(t *testing.T, sc syscall.Conn) map[string]int {
	rc, err := sc.SyscallConn()
	require.NoError(t, err)
	got := map[string]int{}
	require.NoError(t, rc.Control(func(fd uintptr) {
		for name, o := range map[string][2]int{
			"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
			"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
			"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
			"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
		} {
			v, err := unix.GetsockoptInt(int(fd), o[0], o[1])
			require.NoError(t, err, name)
			got[name] = v
		}
	}))
	return got
}
