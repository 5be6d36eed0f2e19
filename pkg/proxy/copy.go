package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The goroutine path: an established connection that no event loop
// serves (it has an idle timeout, it is not TCP, or the loops cannot
// run) has its bytes moved by one goroutine per direction, each copying
// with splice(2) between TCP sockets (splice_linux.go), through a buffer
// otherwise or with an idle timeout. copyConn holds what only this path
// needs, as loopConn does for the event loops.

// copyBufferSize is the user-space buffer per direction when an idle timeout
// forces copying without splice.
const copyBufferSize = 32 << 10

// errIdle ends a connection on which nothing moved for the idle timeout.
var errIdle = errors.New("idle timeout")

// closeWriter and closeReader are the half-close operations of *net.TCPConn
// (and *net.UnixConn), declared here where they are used.
type closeWriter interface{ CloseWrite() error }
type closeReader interface{ CloseRead() error }

// copyConn is an established connection served by two goroutines: c's
// client and its backend, as net.Conns.
type copyConn struct {
	c               *conn
	client, backend net.Conn

	// lastActive is the unix-nano time of the last byte moved in either
	// direction; only maintained with an idle timeout.
	lastActive atomic.Int64

	// Each written by its direction's goroutine before it decrements
	// halves; read by finish, after both have.
	up, down       int64
	upErr, downErr error
	halves         atomic.Int32
}

// startCopying starts moving the bytes of c, established with backend bc,
// in two goroutines of their own. The direction that finishes last closes
// both connections and reports c (finish).
func startCopying(c *conn, bc net.Conn) {
	cc := &copyConn{c: c, client: c.client, backend: bc}
	if c.route.IdleTimeout > 0 {
		cc.lastActive.Store(c.start.UnixNano())
	}
	cc.halves.Store(2)
	go cc.copyClientToBackend()
	go cc.copyBackendToClient()
}

// copyClientToBackend and copyBackendToClient are named functions so that
// stack dumps show which direction a goroutine is moving. A direction that
// ends cleanly (its source sent FIN) half-closes: FIN goes on to the
// destination while the other direction keeps flowing. A direction that
// fails closes both connections (fail), since the other direction may
// otherwise wait forever on a peer that is gone.
func (cc *copyConn) copyClientToBackend() {
	cc.up, cc.upErr = cc.copyHalf(cc.backend, cc.client)
	if cc.upErr != nil {
		cc.fail(cc.backend, cc.client, cc.upErr)
	}
	cc.halfDone()
}

func (cc *copyConn) copyBackendToClient() {
	cc.down, cc.downErr = cc.copyHalf(cc.client, cc.backend)
	if cc.downErr != nil {
		cc.fail(cc.client, cc.backend, cc.downErr)
	}
	cc.halfDone()
}

// fail ends the connection after the direction from src to dst failed
// with err. The side that failed (a reset, or another socket error) is
// passed on as a reset: the other side is closed with SO_LINGER 0
// (reset.go), and the reset reported, once, whichever direction saw it
// first. An idle timeout, and a failure that an abort caused (the route
// closed the sockets under the copy), close both sides as abort does.
func (cc *copyConn) fail(dst, src net.Conn, err error) {
	c := cc.c
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
	if failed == cc.client {
		direction = DirectionUp
	}
	c.route.observer().Reset(direction)
}

// copyError is a failed copy of one direction, on the side that failed:
// its source (a read, or a splice from it) or its destination (a write, a
// splice to it, or passing the FIN on). The other side is reset in turn
// (copyConn.fail).
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
func (cc *copyConn) halfDone() {
	if cc.halves.Add(-1) == 0 {
		cc.finish()
	}
}

// finish closes both connections once both directions are done and
// reports the connection.
func (cc *copyConn) finish() {
	cc.backend.Close()
	cc.client.Close()
	var up, down *copyError
	cc.c.backendReset = errors.As(cc.upErr, &up) && up.dst && isReset(up) ||
		errors.As(cc.downErr, &down) && !down.dst && isReset(down)
	cc.c.report(cc.up, cc.down, cc.upErr, cc.downErr)
}

// copyHalf moves bytes from src to dst until src's EOF, then passes the FIN
// on with CloseWrite and stops reading src with CloseRead. A failure is a
// copyError, which says which side failed, or errIdle; the caller ends
// the connection (fail).
func (cc *copyConn) copyHalf(dst, src net.Conn) (int64, error) {
	var n int64
	var err error
	if cc.c.route.IdleTimeout > 0 {
		n, err = cc.copyIdle(dst, src)
	} else {
		n, err = copyStream(dst, src)
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
// says which side failed (copyError): between sockets that cannot splice
// (a TLS side, systems other than Linux).
//
// A direction spends most of its life waiting in a read, and what it
// holds then is what an idle connection costs: it waits with a small
// buffer of its own, and takes a large one from a pool only for a burst
// (a read that fills the small one), giving it back once a read comes
// short of the small one again. A TLS source returns at most one record
// (16 KiB) per read, which the large buffer holds whole.
func copyBuffer(dst, src net.Conn) (int64, error) {
	small := make([]byte, smallBufferSize)
	buf := small
	var large *[]byte
	defer func() {
		if large != nil {
			copyBuffers.Put(large)
		}
	}()
	var written int64
	for {
		n, err := copyChunk(dst, src, buf)
		written += n
		if err != nil || n == 0 {
			return written, err
		}
		switch {
		case large == nil && n == int64(len(small)):
			large = copyBuffers.Get().(*[]byte)
			buf = *large
		case large != nil && n < int64(len(small)):
			copyBuffers.Put(large)
			large, buf = nil, small
		}
	}
}

// smallBufferSize is the buffer a direction of copyBuffer waits with.
const smallBufferSize = 2 << 10

// copyBuffers are the large buffers of copyBuffer's bursts.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// copyChunk moves one read's worth of bytes from src to dst through buf.
// It returns 0 and no error at EOF. A failure is a copyError, which says
// which side failed.
func copyChunk(dst, src net.Conn, buf []byte) (int64, error) {
	n, err := src.Read(buf)
	if n > 0 {
		w, werr := dst.Write(buf[:n])
		if werr != nil {
			return int64(w), dstErr(werr)
		}
	}
	if err == io.EOF {
		err = nil
	}
	return int64(n), srcErr(err)
}

// copyIdle copies through a buffer, arming deadlines before every read and
// write so that a connection with no traffic either way for IdleTimeout is
// ended. A slow peer that still takes bytes, however few, is progress and is
// never cut. Unlike splice, a timed-out write here keeps its unwritten bytes
// in the buffer and retries them, so a deadline never loses data.
func (cc *copyConn) copyIdle(dst, src net.Conn) (int64, error) {
	timeout := cc.c.route.IdleTimeout
	buf := make([]byte, copyBufferSize)
	var written int64
	for {
		src.SetReadDeadline(cc.idleDeadline(timeout))
		nr, rerr := src.Read(buf)
		if nr > 0 {
			cc.touch()
			for off := 0; off < nr; {
				dst.SetWriteDeadline(cc.idleDeadline(timeout))
				nw, werr := dst.Write(buf[off:nr])
				off += nw
				written += int64(nw)
				if nw > 0 {
					cc.touch()
				}
				if werr != nil {
					if !isTimeout(werr) || !cc.stillActive(timeout) {
						return written, idleErr(werr, dstErr)
					}
				}
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			if isTimeout(rerr) && cc.stillActive(timeout) {
				continue
			}
			return written, idleErr(rerr, srcErr)
		}
	}
}

func (cc *copyConn) touch() { cc.lastActive.Store(time.Now().UnixNano()) }

func (cc *copyConn) idleDeadline(timeout time.Duration) time.Time {
	return time.Unix(0, cc.lastActive.Load()).Add(timeout)
}

// stillActive reports whether the other direction moved bytes recently
// enough that a timed-out read or write here is not yet idleness.
func (cc *copyConn) stillActive(timeout time.Duration) bool {
	return time.Since(time.Unix(0, cc.lastActive.Load())) < timeout
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
