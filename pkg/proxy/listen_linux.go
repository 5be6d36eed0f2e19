package proxy

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenConfig sets connOptions on the listening socket, for its accepted
// sockets to inherit, instead of Go's setting its own on each (Listen).
func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: setConnOptions}
}

// The keep-alive of accepted connections: Go's defaults (net.Dialer and
// net.ListenConfig with KeepAlive 0).
const (
	keepAliveIdle     = 15 // seconds
	keepAliveInterval = 15 // seconds
	keepAliveCount    = 9
)

// sockopt is an integer socket option and its value.
type sockopt struct{ level, opt, v int }

// connOptions are the options of every socket a route proxies: no delay,
// and keep-alive with the timings above.
var connOptions = []sockopt{
	{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, keepAliveIdle},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, keepAliveInterval},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
}

// setsockopts sets opts on socket fd, stopping at the first that fails.
func setsockopts(fd int, opts []sockopt) error {
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	return nil
}

// setConnOptions sets connOptions on a listening socket, for its accepted
// sockets to inherit.
func setConnOptions(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = setsockopts(int(fd), connOptions) }); cerr != nil {
		return cerr
	}
	return err
}
