package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// conn is one proxied connection, from accept to close: the accepted
// client and, once dialled, the backend. It holds what every path shares
// (the route's tracking, abort, the lifecycle steps established and
// report); what moves its bytes holds the rest: an event loop's loopConn
// (loop_linux.go) or the goroutines' copyConn (copy.go).
type conn struct {
	route *Route
	// client is the accepted connection as a net.Conn: for the goroutine
	// path, or when the listener was not a TCP listener. Nil while the
	// raw socket of connLoop holds it (Linux).
	client net.Conn
	remote net.Addr // the client's address

	mu sync.Mutex
	// The fields below are guarded by mu: abort and CloseConns may run
	// while serve is dialling.
	backend     net.Conn
	backendAddr Backend // what backend is connected to
	connected   bool    // backendAddr is set: the connect succeeded
	aborted     bool
	// connLoop is the event loops' part: the raw client socket and the
	// loop serving the connection (conn_linux.go); empty elsewhere.
	connLoop

	// abortRequested is aborted, for the event loop to read without mu.
	abortRequested atomic.Bool
	// backendGone is set by Forget for an event loop (leaveGone): the
	// backend is gone, the connection is replayed if it did not answer.
	backendGone atomic.Bool

	// start is when the connection was established with its backend
	// (established), written before its bytes start moving.
	start time.Time

	// loopTried is the connect an event loop tried and failed before it
	// gave the connection to serve (failDial); the first dial goes on from
	// there. Only serve's goroutine reads it.
	loopTried *loopFailure

	// proxySrc and proxyDst are the addresses of the PROXY headers c sends
	// (proxyproto.go): those of the client's own header, or else the
	// client's address and the one it connected to, set on first use.
	// pending is what the client sent after its header, to go to the
	// backend first. Written by serve's goroutine before the connection is
	// handed on, then read by whichever path serves it, one at a time.
	proxySrc, proxyDst net.Addr
	pending            []byte
	// header is the PROXY header established made for the backend it
	// reports, for the path that carries the connection to write first
	// and clear.
	header []byte
	// backendReset: the backend's socket was reset, as whatever carried
	// the bytes found it; set before report, which reads it.
	backendReset bool
}

// serve dials a backend, and once the connection is established hands it
// to an event loop or, with an idle timeout or when no loop can take it,
// to two goroutines of its own (copyConn), and returns: the goroutine that
// dialled, with the deep stack that dialling grew, does not stay around
// for the life of the connection.
func (c *conn) serve(ctx context.Context) {
	log := c.route.logger()
	obs := c.route.observer()
	if err := c.wrapClient(); err != nil {
		log.Warn("cannot serve the connection; closing", zap.Stringer("remote", c.remote), zap.Error(err))
		obs.Rejected(RejectNoBackend)
		c.route.untrack(c)
		return
	}
	cfg := c.route.TLS()
	if c.route.acceptsProxy() {
		if reason, err := c.readProxyHeader(); reason != "" {
			c.resetClient()
			if ctx.Err() != nil {
				obs.Rejected(RejectShutdown) // the route closed it
			} else {
				log.Debug("no PROXY header taken from the client; closing", zap.Stringer("remote", c.remote),
					zap.String("reason", reason), zap.Error(err))
				obs.ProxyHeaderRejected(reason)
				obs.Rejected(RejectProxyHeader)
			}
			c.route.untrack(c)
			return
		}
		if cfg != nil {
			c.pendingToClient() // the start of the TLS handshake
		}
	}
	if cfg != nil {
		if err := c.handshakeClient(ctx, cfg); err != nil {
			log.Debug("client refused", zap.Stringer("remote", c.remote), zap.Error(err))
			obs.Rejected(RejectHandshake)
			c.route.untrack(c)
			return
		}
	}
	bc, b, err := c.route.connect(ctx, c)
	if err != nil {
		c.resetClient()
		// Untracked last: Close waits for it, and the rejection must be
		// reported by then.
		defer c.route.untrack(c)
		switch {
		case ctx.Err() != nil:
			obs.Rejected(RejectShutdown)
		case errors.Is(err, errNoBackend):
			log.Debug("no backend; closing connection", zap.Stringer("remote", c.remote))
			obs.Rejected(RejectNoBackend)
		default:
			log.Warn("no backend accepted the connection", zap.Stringer("remote", c.remote), zap.Error(err))
			obs.Rejected(RejectNoBackend)
		}
		return
	}
	c.established(b)
	if err := c.writePrelude(bc, b); err != nil {
		// The backend is gone already: the client is reset, as a copy
		// that fails would.
		log.Debug("connection ended with error", zap.Stringer("remote", c.remote), zap.Stringer("backend", b), zap.Error(err))
		c.route.observer().Reset(DirectionDown)
		closeReset(c.client)
		bc.Close()
		c.report(0, 0, nil, err)
		return
	}
	if c.route.IdleTimeout == 0 && cfg == nil && !b.TLS && c.toLoop(bc) {
		return
	}
	startCopying(c, bc)
}

// established is the one step where a connection becomes established
// with its backend b, whatever connected it and whatever then carries its
// bytes: a goroutine's connect (serve, before it hands the connection to
// an event loop or to goroutines of its own), an event loop's connect
// (startConn), and a replay resumed on a new backend (resume). It runs
// once per backend the connection reaches, after the connect and before
// any byte of the client's goes to b: nothing is forwarded yet on any
// path. It starts the connection's clock, logs, and reports ConnOpened.
//
// A per-connection step goes here and nowhere else: a PROXY protocol
// header to send to b ahead of the client's bytes, a TLS wrap, a metric.
// Like tcpproxy's sendProxyHeader, it is one call between the connect and
// the copy.
func (c *conn) established(b Backend) {
	r := c.route
	c.start = time.Now()
	if log := r.logger(); log.Core().Enabled(zap.DebugLevel) {
		log.Debug("connection opened", zap.Stringer("remote", c.remote), zap.Stringer("backend", b))
	}
	r.opened(b)
	r.observer().ConnOpened(b)
	// A TLS backend had its header before its handshake (dial).
	c.header = nil
	if !b.TLS {
		c.header = c.proxyHeader(b)
	}
	if r.onEstablished != nil {
		r.onEstablished(c, b)
	}
}

// report reports a closed connection and stops tracking it: up and down
// are the bytes written to the backend and to the client, upErr and
// downErr how each direction ended, by whichever path carried them.
func (c *conn) report(up, down int64, upErr, downErr error) {
	defer c.route.untrack(c)
	b, _ := c.backendInfo()
	elapsed := time.Since(c.start)
	c.route.closed(b, down, c.backendReset)
	c.route.observer().ConnClosed(b, up, down, elapsed)
	log := c.route.logger()
	if !log.Core().Enabled(zap.DebugLevel) {
		return
	}
	fields := []zap.Field{zap.Stringer("remote", c.remote), zap.Stringer("backend", b),
		zap.Int64("bytes_up", up), zap.Int64("bytes_down", down), zap.Duration("duration", elapsed)}
	if err := errors.Join(upErr, downErr); err != nil && !isTeardown(err) {
		log.Debug("connection ended with error", append(fields, zap.Error(err))...)
		return
	}
	log.Debug("connection closed", fields...)
}

// setBackend records the dialled backend so that abort can close it; it
// reports false (and closes bc) if the connection was aborted meanwhile.
// bc is nil when an event loop made the connect.
func (c *conn) setBackend(bc net.Conn, b Backend) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		if bc != nil {
			bc.Close()
		}
		return false
	}
	c.backend = bc
	c.backendAddr, c.connected = b, true
	return true
}

// backendInfo returns the backend the connection is forwarded to, if it is
// connected yet.
func (c *conn) backendInfo() (Backend, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.backendAddr, c.connected
}

// abort closes both sides at once; the copy loops then return. A
// connection that an event loop serves is shut down both ways instead,
// which wakes the loop to close it: its descriptors are the loop's.
//
// A connection that has no backend (it is connecting, waiting for a
// backend, or replaying) is aborted only by Close, which also cancels the
// dial or the replay that holds it: it is rejected, and its client reset
// (reset.go). Its client's socket then gets SO_LINGER 0, and is left for
// its owner to close rather than shut down, which would send a FIN first.
func (c *conn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	c.abortRequested.Store(true)
	reject := !c.connected
	if c.abortLoopLocked(reject) {
		return
	}
	if c.client != nil {
		if reject {
			closeReset(c.client)
		} else {
			c.client.Close()
		}
	}
	if c.backend != nil {
		c.backend.Close()
	}
}

// resetClient closes the client's socket, raw or wrapped, of a
// connection that reached no backend: with a reset (reset.go).
func (c *conn) resetClient() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetRawLocked()
	if c.client != nil {
		closeReset(c.client) // closed already if an abort came first
	}
}

// isTeardown reports whether err is an ordinary way for a connection to end
// (the peer reset or closed it, or we closed it), which is logged at Debug
// without alarm.
func isTeardown(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ENOTCONN) || errors.Is(err, errIdle)
}
