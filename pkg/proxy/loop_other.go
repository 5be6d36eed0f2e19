//go:build !linux

package proxy

import (
	"context"
	"net"
)

// Elsewhere than on Linux there are no event loops, no accept4 and no
// splice (doc.go): Serve accepts with Accept, every connection is dialled
// by a goroutine with Go's dialer and its bytes are copied through a
// buffer by one goroutine per direction (copy.go), as on Linux when the
// loops cannot start. What the Linux files give the rest of the package
// is here, as it is without them.

// poller is never made: there are no event loops to hold.
type poller struct{}

// connLoop is empty: a connection has no raw socket and no loop.
type connLoop struct{}

// accepted is one accepted connection.
type accepted struct {
	nc     net.Conn
	remote net.Addr
}

// reject closes a connection turned away before it was served (MaxConns,
// the route shutting down), with a reset.
func (a accepted) reject() { closeReset(a.nc) }

// newConn returns the connection of a, to be served by r.
func newConn(r *Route, a accepted) *conn {
	return &conn{route: r, client: a.nc, remote: a.remote}
}

// acceptOn returns ln: Serve accepts its connections with Accept.
func (r *Route) acceptOn(ln net.Listener) net.Listener { return ln }

// accept accepts one connection on ln.
func accept(ln net.Listener) (accepted, error) {
	nc, err := ln.Accept()
	if err != nil {
		return accepted{}, err
	}
	return accepted{nc: nc, remote: nc.RemoteAddr()}, nil
}

// connectInLoop reports false: a goroutine connects every connection.
func (r *Route) connectInLoop(context.Context, *conn) bool { return false }

// toLoop reports false: goroutines carry every connection's bytes.
func (c *conn) toLoop(net.Conn) bool { return false }

// abortLoopLocked reports false: no loop serves c, and its client is a
// net.Conn.
func (c *conn) abortLoopLocked(reject bool) bool { return false }

// leaveGone reports false: Forget closes every connection.
func (c *conn) leaveGone() bool { return false }

// localAddr is the address the client connected to.
func (c *conn) localAddr() net.Addr { return c.client.LocalAddr() }

// wrapClient has nothing to do: the client is a net.Conn from Accept.
func (c *conn) wrapClient() error { return nil }

// resetRawLocked has nothing to do: there is no raw client socket.
func (c *conn) resetRawLocked() {}

// releaseLoopsLocked has nothing to do: r holds no loops.
func (r *Route) releaseLoopsLocked() {}

// releasePipes has nothing to do: there is no pool of pipes.
func releasePipes() {}

// copyStream copies from src to dst until src's EOF, through a buffer.
func copyStream(dst, src net.Conn) (int64, error) { return copyBuffer(dst, src) }

// listenConfig is Go's: it sets keep-alive and no delay on each accepted
// connection, with the timings Linux's listeners set once (Listen).
func listenConfig() net.ListenConfig { return net.ListenConfig{} }
