package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// copyBufferSize is the user-space buffer per direction when an idle timeout
// forces copying without splice.
const copyBufferSize = 32 << 10

// errIdle ends a connection on which nothing moved for the idle timeout.
var errIdle = errors.New("idle timeout")

// conn is one proxied connection: the accepted client and, once dialled, the
// backend.
type conn struct {
	route *Route
	// client is the accepted connection as a net.Conn: for the goroutine
	// path, or when the listener was not a TCP listener. Nil while fd
	// holds it.
	client net.Conn
	remote net.Addr // the client's address

	mu sync.Mutex
	// The fields below are guarded by mu: abort and CloseConns may run
	// while serve is dialling.
	backend net.Conn
	// fd is the accepted client's socket as accept4 gave it (accept.go),
	// until an event loop takes it or the goroutine path wraps it
	// (wrapClient); -1 then, and when client was accepted as a net.Conn.
	fd          int
	backendAddr Backend // what backend is connected to
	connected   bool    // backendAddr is set: the connect succeeded
	aborted     bool
	loop        *loopConn // set once an event loop serves the connection
	loopClosed  bool      // the loop has closed loop's descriptors

	// abortRequested is aborted, for the event loop to read without mu.
	abortRequested atomic.Bool

	// lastActive is the unix-nano time of the last byte moved in either
	// direction; only maintained with an idle timeout.
	lastActive atomic.Int64

	// Set by serve before the copy goroutines start.
	start time.Time

	// loopTried is the connect an event loop tried and failed before it
	// gave the connection to serve (failDial); the first dial goes on from
	// there. Only serve's goroutine reads it.
	loopTried *loopFailure

	// Each written by its direction's goroutine before it decrements
	// halves; read by finish, after both have.
	up, down       int64
	upErr, downErr error
	halves         atomic.Int32
}

// closeWriter and closeReader are the half-close operations of *net.TCPConn
// (and *net.UnixConn), declared here where they are used.
type closeWriter interface{ CloseWrite() error }
type closeReader interface{ CloseRead() error }

// serve dials a backend and starts forwarding bytes both ways, in two
// goroutines of their own, and returns: the goroutine that dialled, with
// the deep stack that dialling grew, does not stay around for the life of
// the connection. The direction that finishes last closes both connections
// (finish).
func (c *conn) serve(ctx context.Context) {
	log := c.route.logger()
	obs := c.route.observer()
	if err := c.wrapClient(); err != nil {
		log.Warn("cannot serve the connection; closing", zap.Stringer("remote", c.remote), zap.Error(err))
		obs.Rejected(RejectNoBackend)
		c.route.untrack(c)
		return
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
	if c.route.IdleTimeout > 0 {
		c.lastActive.Store(c.start.UnixNano())
	}
	if c.route.IdleTimeout == 0 {
		if p := c.route.poller(); p != nil && p.add(c, c.client, bc) {
			return
		}
	}
	c.halves.Store(2)
	go c.copyClientToBackend(bc)
	go c.copyBackendToClient(bc)
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
	r.observer().ConnOpened(b)
	if r.onEstablished != nil {
		r.onEstablished(c, b)
	}
}

// copyClientToBackend and copyBackendToClient are named functions so that
// stack dumps show which direction a goroutine is moving. A direction that
// ends cleanly (its source sent FIN) half-closes: FIN goes on to the
// destination while the other direction keeps flowing. A direction that
// fails closes both connections (fail), since the other direction may
// otherwise wait forever on a peer that is gone.
func (c *conn) copyClientToBackend(bc net.Conn) {
	c.up, c.upErr = c.copyHalf(bc, c.client)
	if c.upErr != nil {
		c.fail(bc, c.client, c.upErr)
	}
	c.halfDone(bc)
}

func (c *conn) copyBackendToClient(bc net.Conn) {
	c.down, c.downErr = c.copyHalf(c.client, bc)
	if c.downErr != nil {
		c.fail(c.client, bc, c.downErr)
	}
	c.halfDone(bc)
}

// fail ends the connection after the direction from src to dst failed
// with err. The side that failed (a reset, or another socket error) is
// passed on as a reset: the other side is closed with SO_LINGER 0
// (reset.go), and the reset reported, once, whichever direction saw it
// first. An idle timeout, and a failure that an abort caused (the route
// closed the sockets under the copy), close both sides as abort does.
func (c *conn) fail(dst, src net.Conn, err error) {
	var ce *copyError
	if errors.Is(err, errIdle) || !errors.As(err, &ce) {
		c.abort()
		return
	}
	failed, other := src, dst
	if ce.dst {
		failed, other = dst, src
	}
	c.mu.Lock()
	if c.aborted {
		c.mu.Unlock()
		return // the route aborted it, or the other direction failed first
	}
	c.aborted = true
	c.abortRequested.Store(true)
	c.mu.Unlock()
	closeReset(other)
	failed.Close()
	direction := DirectionDown
	if failed == c.client {
		direction = DirectionUp
	}
	c.route.observer().Reset(direction)
}

// copyError is a failed copy of one direction, on the side that failed:
// its source (a read, or a splice from it) or its destination (a write, a
// splice to it, or passing the FIN on). The other side is reset in turn
// (conn.fail).
type copyError struct {
	dst bool // the destination failed; otherwise the source
	err error
}

func (e *copyError) Error() string { return e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

// srcErr and dstErr tag err, unless nil, with the side of the copy that
// failed.
func srcErr(err error) error {
	if err == nil {
		return nil
	}
	return &copyError{err: err}
}

func dstErr(err error) error {
	if err == nil {
		return nil
	}
	return &copyError{dst: true, err: err}
}

// halfDone records that one direction finished; the second to finish
// closes the connection. The atomic counter orders each direction's
// results before finish reads them.
func (c *conn) halfDone(bc net.Conn) {
	if c.halves.Add(-1) == 0 {
		c.finish(bc)
	}
}

// finish closes both connections once both directions are done and
// reports the connection.
func (c *conn) finish(bc net.Conn) {
	bc.Close()
	c.client.Close()
	c.report()
}

// report reports the totals of a closed connection and stops tracking it.
func (c *conn) report() {
	defer c.route.untrack(c)
	b, _ := c.backendInfo()
	elapsed := time.Since(c.start)
	c.route.observer().ConnClosed(b, c.up, c.down, elapsed)
	log := c.route.logger()
	if !log.Core().Enabled(zap.DebugLevel) {
		return
	}
	fields := []zap.Field{zap.Stringer("remote", c.remote), zap.Stringer("backend", b),
		zap.Int64("bytes_up", c.up), zap.Int64("bytes_down", c.down), zap.Duration("duration", elapsed)}
	if err := errors.Join(c.upErr, c.downErr); err != nil && !isTeardown(err) {
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
	if c.fd >= 0 {
		// Its owner, the accept or a dial goroutine, closes it.
		if reject {
			lingerZero(c.fd)
		} else {
			unix.Shutdown(c.fd, unix.SHUT_RDWR)
		}
	}
	if c.loop != nil {
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

// resetClient closes the client's socket, raw or wrapped, of a
// connection that reached no backend: with a reset (reset.go).
func (c *conn) resetClient() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd >= 0 {
		lingerZero(c.fd)
		unix.Close(c.fd)
		c.fd = -1
	}
	if c.client != nil {
		closeReset(c.client) // closed already if an abort came first
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

// copyHalf moves bytes from src to dst until src's EOF, then passes the FIN
// on with CloseWrite and stops reading src with CloseRead. A failure is a
// copyError, which says which side failed, or errIdle; the caller ends
// the connection (fail).
func (c *conn) copyHalf(dst, src net.Conn) (int64, error) {
	var n int64
	var err error
	if c.route.IdleTimeout > 0 {
		n, err = c.copyIdle(dst, src)
	} else if d, s, ok := tcpPair(dst, src); ok {
		// splice(2): the bytes never enter user space, and an idle
		// connection holds no pipe.
		n, err = spliceCopy(d, s)
	} else {
		n, err = copyBuffer(dst, src)
	}
	if err != nil {
		return n, err
	}
	if cw, ok := dst.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil && !isTeardown(err) {
			return n, dstErr(err)
		}
	} else {
		dst.Close()
	}
	if cr, ok := src.(closeReader); ok {
		cr.CloseRead()
	}
	return n, nil
}

// copyBuffer copies from src to dst until src's EOF, as io.Copy does, but
// says which side failed (copyError): for connections other than TCP.
func copyBuffer(dst, src net.Conn) (int64, error) {
	buf := make([]byte, copyBufferSize)
	var written int64
	for {
		n, err := copyChunk(dst, src, buf)
		written += n
		if err != nil || n == 0 {
			return written, err
		}
	}
}

// tcpPair returns dst and src as TCP connections, if both are.
func tcpPair(dst, src net.Conn) (*net.TCPConn, *net.TCPConn, bool) {
	d, ok1 := dst.(*net.TCPConn)
	s, ok2 := src.(*net.TCPConn)
	return d, s, ok1 && ok2
}

// copyIdle copies through a buffer, arming deadlines before every read and
// write so that a connection with no traffic either way for IdleTimeout is
// ended. A slow peer that still takes bytes, however few, is progress and is
// never cut. Unlike splice, a timed-out write here keeps its unwritten bytes
// in the buffer and retries them, so a deadline never loses data.
func (c *conn) copyIdle(dst, src net.Conn) (int64, error) {
	timeout := c.route.IdleTimeout
	buf := make([]byte, copyBufferSize)
	var written int64
	for {
		src.SetReadDeadline(c.idleDeadline(timeout))
		nr, rerr := src.Read(buf)
		if nr > 0 {
			c.touch()
			for off := 0; off < nr; {
				dst.SetWriteDeadline(c.idleDeadline(timeout))
				nw, werr := dst.Write(buf[off:nr])
				off += nw
				written += int64(nw)
				if nw > 0 {
					c.touch()
				}
				if werr != nil {
					if !isTimeout(werr) || !c.stillActive(timeout) {
						return written, idleErr(werr, dstErr)
					}
				}
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			if isTimeout(rerr) && c.stillActive(timeout) {
				continue
			}
			return written, idleErr(rerr, srcErr)
		}
	}
}

func (c *conn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

func (c *conn) idleDeadline(timeout time.Duration) time.Time {
	return time.Unix(0, c.lastActive.Load()).Add(timeout)
}

// stillActive reports whether the other direction moved bytes recently
// enough that a timed-out read or write here is not yet idleness.
func (c *conn) stillActive(timeout time.Duration) bool {
	return time.Since(time.Unix(0, c.lastActive.Load())) < timeout
}

// idleErr is errIdle for a timed-out read or write of copyIdle, and
// otherwise err tagged with its side.
func idleErr(err error, side func(error) error) error {
	if isTimeout(err) {
		return errIdle
	}
	return side(err)
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// isTeardown reports whether err is an ordinary way for a connection to end
// (the peer reset or closed it, or we closed it), which is logged at Debug
// without alarm.
func isTeardown(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ENOTCONN) || errors.Is(err, errIdle)
}
