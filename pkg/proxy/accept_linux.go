package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// A TCP listener's connections are accepted with accept4(2) on its socket,
// rather than with Accept, whether by the event loops (loopaccept_linux.go)
// or, when they cannot run, here by Serve's goroutine: a connection that an
// event loop connects and serves (loopdial_linux.go) then never enters Go's
// poller, where Accept would register it, and the loop would take it back
// out (a duplicate, an unregistering and a close). Measured under
// redis-benchmark -k 0 -c 50: Go's accept and that hand-over were 6-7% of
// the proxy's CPU; with accept4, two interleaved pairs of churn runs gave
// 1.23-1.27× HAProxy's CPU per connection instead of 1.35-1.41×. The
// goroutine path wraps the socket in a net.Conn when it needs one
// (conn.wrapClient).
//
// A listener's RawConn cannot wait (its Read fails), so the accepting side
// is a duplicate of the listening socket as an *os.File, whose RawConn
// waits for readability, that is for a connection, through Go's poller.
// Closing the listener closes both (rawListener.Close). Accepted sockets
// are non-blocking and close-on-exec, as Go's, and inherit keep-alive and
// no-delay from the listening socket (Listen).

// accepted is one accepted connection: a raw socket (fd ≥ 0), or a
// net.Conn from a listener that is not TCP.
type accepted struct {
	fd     int
	nc     net.Conn
	remote net.Addr
}

// reject closes a connection turned away before it was served (MaxConns,
// the route shutting down), with a reset: the client must not take the
// close for an empty answer.
func (a accepted) reject() {
	if a.fd >= 0 {
		lingerZero(a.fd)
		unix.Close(a.fd)
	} else {
		closeReset(a.nc)
	}
}

// rawListener is a TCP listener accepted from with accept4.
type rawListener struct {
	net.Listener
	f      *os.File        // the duplicate of the listening socket
	rc     syscall.RawConn // f's
	closed atomic.Bool
}

// Close closes both descriptors of the listening socket, which wakes an
// accept waiting on it.
func (l *rawListener) Close() error {
	l.closed.Store(true)
	l.f.Close()
	return l.Listener.Close()
}

// rawAccepting returns ln as a rawListener, or ln itself if it is not a
// TCP listener or its socket cannot be duplicated.
func rawAccepting(ln net.Listener) net.Listener {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return ln
	}
	dup, ok := dupFD(tl)
	if !ok {
		return ln
	}
	f := os.NewFile(uintptr(dup), "listener") // non-blocking, as the original: in Go's poller
	frc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return ln
	}
	return &rawListener{Listener: ln, f: f, rc: frc}
}

// accept accepts one connection on ln, raw if ln is a rawListener.
func accept(ln net.Listener) (accepted, error) {
	if rl, ok := ln.(*rawListener); ok {
		return rl.accept4()
	}
	nc, err := ln.Accept()
	if err != nil {
		return accepted{}, err
	}
	return accepted{fd: -1, nc: nc, remote: nc.RemoteAddr()}, nil
}

// accept4 accepts one connection, waiting for one through Go's poller.
// Like Go's Accept it retries a connection that was aborted before it was
// accepted; a closed listener fails with an error that wraps
// net.ErrClosed, as Accept's does.
func (l *rawListener) accept4() (accepted, error) {
	a := accepted{fd: -1}
	var err error
	rerr := l.rc.Read(func(lfd uintptr) bool {
		for {
			// syscall's, not x/sys/unix's: for an IPv4 or IPv6 peer,
			// the latter asks the socket's protocol (getsockopt
			// SO_PROTOCOL), a system call more per connection.
			var sa syscall.Sockaddr
			var fd int
			fd, sa, err = syscall.Accept4(int(lfd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			switch err {
			case syscall.EINTR, syscall.ECONNABORTED:
				continue
			case syscall.EAGAIN:
				return false // wait for the next connection
			case nil:
				a.fd, a.remote = fd, tcpAddr(sa)
			}
			return true
		}
	})
	if rerr != nil {
		if l.closed.Load() {
			return accepted{}, fmt.Errorf("accept: %w", net.ErrClosed)
		}
		return accepted{}, rerr
	}
	if err != nil {
		return accepted{}, os.NewSyscallError("accept4", err)
	}
	return a, nil
}

// tcpAddr converts an accepted socket's peer address.
func tcpAddr(sa syscall.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)))
	case *syscall.SockaddrInet6:
		ip := netip.AddrFrom16(sa.Addr)
		if sa.ZoneId != 0 {
			ip = ip.WithZone(strconv.Itoa(int(sa.ZoneId)))
		}
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(sa.Port)))
	}
	return &net.TCPAddr{}
}
