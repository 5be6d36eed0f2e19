package proxy

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// connLoop is the part of a conn that only the event loops and accept4
// give it. Its fields are guarded by conn.mu, with the others.
type connLoop struct {
	// fd is the accepted client's socket as accept4 gave it
	// (accept_linux.go), until an event loop takes it or the goroutine
	// path wraps it (wrapClient); -1 then, and when client was accepted
	// as a net.Conn.
	fd         int
	loop       *loopConn // set once an event loop serves the connection
	loopClosed bool      // the loop has closed loop's descriptors
}

// newConn returns the connection of a, to be served by r.
func newConn(r *Route, a accepted) *conn {
	return &conn{route: r, client: a.nc, remote: a.remote, connLoop: connLoop{fd: a.fd}}
}

// toLoop hands c, established with backend bc, over to an event loop, and
// reports whether one took it: not if the loops cannot run or the sockets
// cannot be taken from Go's poller (poller.add).
func (c *conn) toLoop(bc net.Conn) bool {
	p := c.route.poller()
	return p != nil && p.add(c, c.client, bc)
}

// abortLoopLocked is abort's part for the sockets that are not net.Conns:
// the raw client socket, and those of the loop that serves c. It reports
// whether a loop serves c, which then closes its sockets itself. c.mu
// must be held.
func (c *conn) abortLoopLocked(reject bool) bool {
	if c.fd >= 0 {
		// Its owner, the accept or a dial goroutine, closes it.
		if reject {
			lingerZero(c.fd)
		} else {
			unix.Shutdown(c.fd, unix.SHUT_RDWR)
		}
	}
	if c.loop == nil {
		return false
	}
	if !c.loopClosed {
		for i, fd := range c.loop.fds {
			switch {
			case fd < 0: // the client is not the loop's while it connects
			case i == 0 && reject:
				lingerZero(fd) // replaying: the loop rejects it
			default:
				unix.Shutdown(fd, unix.SHUT_RDWR)
			}
		}
	}
	return true
}

// leaveGone asks the event loop serving c to leave its backend, which is
// gone (Forget): the loop replays the connection if the backend has not
// answered it, and closes it as abort does otherwise. Only the backend's
// socket is shut down, which wakes the loop. It reports false when no
// loop serves c with a backend's socket, for the caller to abort.
func (c *conn) leaveGone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loop == nil || c.loopClosed || c.aborted || !c.connected || c.loop.fds[1] < 0 {
		return false
	}
	c.backendGone.Store(true)
	unix.Shutdown(c.loop.fds[1], unix.SHUT_RDWR)
	return true
}

// wrapClient makes the raw client socket a net.Conn, for the goroutine
// path. The socket is closed if that fails (out of descriptors).
func (c *conn) wrapClient() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	f := os.NewFile(uintptr(c.fd), "client")
	nc, err := net.FileConn(f) // a duplicate, in Go's poller
	if err != nil {
		lingerZero(c.fd) // not served: reset (reset.go)
	}
	f.Close()
	c.fd = -1
	if err != nil {
		return err
	}
	c.client = nc
	return nil
}

// resetRawLocked closes the raw client socket, if c has one, with a reset
// (reset.go). c.mu must be held.
func (c *conn) resetRawLocked() {
	if c.fd >= 0 {
		lingerZero(c.fd)
		unix.Close(c.fd)
		c.fd = -1
	}
}

// handOver records that lc serves the connection from now on, unless the
// connection was aborted already.
func (c *conn) handOver(lc *loopConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return false
	}
	c.loop = lc
	return true
}

// closeHandedOver closes the descriptors of a connection an event loop
// served, under mu, so that abort never shuts down a descriptor number
// that has been closed and given to another socket.
func (c *conn) closeHandedOver(fds [2]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loopClosed = true
	for _, fd := range fds {
		if fd >= 0 { // a replay may have closed the backend's
			unix.Close(fd)
		}
	}
}

// lingerZero makes the close of socket fd reset its connection (reset.go).
// It can only fail for a descriptor that is not a connected socket, which
// the close then ends as it can.
func lingerZero(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

// localAddr is the address the client connected to: its net.Conn's, or
// its raw socket's once a loop serves it.
func (c *conn) localAddr() net.Addr {
	if c.client != nil {
		return c.client.LocalAddr()
	}
	if c.loop != nil && c.loop.fds[0] >= 0 {
		return sockLocalAddr(c.loop.fds[0])
	}
	return nil
}

// sockLocalAddr is the local address of socket fd: for a client's, the
// address it connected to (a PROXY header's destination). Nil if the
// socket has none.
func sockLocalAddr(fd int) net.Addr {
	// syscall's, not x/sys/unix's: see rawListener.accept4.
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return nil
	}
	return tcpAddr(sa)
}
