package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A new connection is, when nothing calls for more, connected to its
// backend by an event loop rather than by a goroutine of its own: the
// accept goroutine starts a non-blocking connect and registers the socket
// with a loop, which finishes it when the socket becomes writable, and
// then takes the client too. A goroutine per connection and Go's dial
// (the new goroutine handed to another thread, the connect parking it,
// Go's poller waking it, the sockets moved from Go's poller to the loop)
// made a new connection cost about twice HAProxy's CPU. Measured under
// redis-benchmark -k 0 -c 50, three pairs of runs against the goroutine
// dial: 1.07-1.34× the connections per second at 0.67-0.86× the CPU per
// connection, and 1.1 context switches per connection instead of 1.3-1.5.
//
// Anything else takes the goroutine path (conn.serve) as before: a route
// with an idle timeout or a custom dialer, a backend set with a fallback
// tier (make-before-break), a backend named by host name, and every
// connect that does not succeed at once: a refusal, a timeout, a backend
// dropped from the set while connecting, or an abort. The goroutine path
// then starts over, trying every backend of the set, waiting for one
// (BackendWait) and falling back, so the loop only ever takes the first
// try of the simple case.

// dialCheckInterval is how often a loop with connects in flight looks for
// ones past their deadline or cancelled.
const dialCheckInterval = 50 * time.Millisecond

// loopDial is a connect in flight from an event loop.
type loopDial struct {
	ctx      context.Context
	d        *dialing
	set      *backendSet
	rest     []Backend // the set's order after d.backend, for the goroutine path
	deadline time.Time
	// cancelled: the backend left the set (dialing.cancel), or the
	// connection was aborted; the loop fails the connect at its next check.
	cancelled atomic.Bool
}

// connectInLoop starts connecting c to the first backend of the set from
// an event loop. It reports false, with nothing started, when c must take
// the goroutine path.
func (r *Route) connectInLoop(ctx context.Context, c *conn) bool {
	if r.IdleTimeout > 0 || r.DialContext != nil {
		return false
	}
	if _, ok := c.client.(*net.TCPConn); !ok && c.fd < 0 {
		return false
	}
	set := r.backends.Load()
	if set == nil || len(set.fallbackOrder()) > 0 || r.usesTLS(set) {
		return false
	}
	bs := r.order(set)
	if len(bs) == 0 {
		return false
	}
	b := bs[0]
	ap, err := netip.ParseAddrPort(b.Addr)
	if err != nil {
		return false // a host name: Go's dialer resolves it
	}
	p := r.poller()
	if p == nil {
		return false
	}
	l := p.loops[p.next.Add(1)%uint32(len(p.loops))]
	lc := &loopConn{c: c, fds: [2]int{-1, -1}}
	ld := &loopDial{ctx: ctx, set: set, rest: bs[1:], deadline: time.Now().Add(r.dialTimeout())}
	ld.d, err = r.startDial(b, func() {
		ld.cancelled.Store(true)
		l.wake()
	})
	if err != nil {
		return false // dropped already
	}
	fd, err := connectNonblock(ap)
	if err != nil {
		// Out of descriptors, or a connect that failed at once: the
		// goroutine path retries it and reports what it finds.
		r.endDial(ld.d, c, nil, err)
		return false
	}
	lc.fds[1] = fd
	lc.dial = ld
	if !c.handOver(lc) {
		unix.Close(fd)
		r.endDial(ld.d, c, nil, net.ErrClosed)
		return false
	}
	l.mu.Lock()
	l.fds[int32(fd)] = lc
	l.connecting[lc] = struct{}{}
	l.mu.Unlock()
	if l.dials.Add(1) == 1 {
		l.wake() // so that it waits with a timeout from now on
	}
	// Writable once connected; an error or a reset raises EPOLLERR/HUP.
	ev := unix.EpollEvent{Events: socketEvents | unix.EPOLLOUT, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		ld.cancelled.Store(true)
		l.wake()
	}
	return true
}

// connectNonblock opens a non-blocking TCP socket to ap, with the options
// Go's dialer would set (no delay, keep-alive as Listen's), and starts
// connecting it.
func connectNonblock(ap netip.AddrPort) (int, error) {
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if a := ap.Addr().Unmap(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
		if z := a.Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				sa6.ZoneId = uint32(ifi.Index)
			}
		}
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := setsockopts(fd, connOptions); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

// connected serves an event on the socket of a connect in flight.
func (l *eventLoop) connected(lc *loopConn, events uint32) {
	if lc.c.abortRequested.Load() {
		l.failDial(lc, net.ErrClosed)
		return
	}
	errno, err := unix.GetsockoptInt(lc.fds[1], unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		l.failDial(lc, os.NewSyscallError("getsockopt", err))
	case errno != 0:
		l.failDial(lc, os.NewSyscallError("connect", unix.Errno(errno)))
	case events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) == 0:
		// Not yet: input before the connect completed cannot happen,
		// but nothing is lost by waiting for the next edge.
	default:
		l.startConn(lc)
	}
}

// startConn finishes a connect that succeeded: the connection takes its
// backend, and the client is taken from Go's poller into the loop.
func (l *eventLoop) startConn(lc *loopConn) {
	c, ld := lc.c, lc.dial
	r := c.route
	if err := r.endDial(ld.d, c, nil, nil); err != nil {
		l.failDial(lc, err)
		return
	}
	// Under c.mu: abort reads the descriptors.
	c.mu.Lock()
	cfd := c.fd
	c.fd, lc.fds[0] = -1, cfd
	c.mu.Unlock()
	if cfd < 0 {
		// Accepted as a net.Conn: taken from Go's poller.
		var ok bool
		if cfd, ok = dupSocket(c.client); !ok {
			// Out of descriptors: the goroutine path serves it,
			// dialling again, with its back-off.
			l.failDial(lc, errNoClientFD)
			return
		}
		c.client.Close() // the duplicate keeps the socket open
		c.mu.Lock()
		lc.fds[0] = cfd
		c.mu.Unlock()
	}
	l.mu.Lock()
	delete(l.connecting, lc)
	l.fds[int32(cfd)] = lc
	l.mu.Unlock()
	l.dials.Add(-1)
	lc.dial = nil
	lc.setHalves(cfd, lc.fds[1])
	lc.up.outWatched = true // registered for output to connect
	ld.set.confirmed.Store(true)
	c.established(ld.d.backend)
	if err := l.watchOut(&lc.up, false); err != nil {
		lc.end(l, err)
		return
	}
	if err := l.register(cfd); err != nil {
		lc.end(l, err)
		return
	}
	// The PROXY header goes first, now: with what the client has sent
	// already, in one write, or alone, since a backend that speaks first
	// waits for it (half.prefix). The client's input edge may have come
	// before the register: pump reads what there is either way.
	if lc.up.prefix, c.header = c.header, nil; lc.up.prefix != nil {
		if err := l.pump(&lc.up); err != nil {
			l.fail(lc, err)
		}
	}
}

// errNoClientFD fails a connect that succeeded when the client's socket
// could not be duplicated (out of descriptors): the backend is not at
// fault.
var errNoClientFD = errors.New("no descriptor for the client's socket")

// failDial ends a connect from the loop that did not succeed and gives the
// connection to the goroutine path, which starts over.
func (l *eventLoop) failDial(lc *loopConn, err error) {
	c, ld := lc.c, lc.dial
	l.mu.Lock()
	delete(l.fds, int32(lc.fds[1]))
	delete(l.connecting, lc)
	l.mu.Unlock()
	l.dials.Add(-1)
	lc.dial = nil
	c.mu.Lock()
	unix.Close(lc.fds[1])
	c.loop, c.connected = nil, false
	aborted := c.aborted
	c.mu.Unlock()
	if aborted {
		c.resetClient() // abort left it to the loop
	}
	err = c.route.endDial(ld.d, c, nil, err)
	if !aborted && ld.ctx.Err() == nil && !errors.Is(err, errDropped) && err != errNoClientFD {
		c.route.observer().DialFailed(ld.d.backend, dialFailure(err))
		c.route.failed(ld.d.backend)
	}
	c.loopTried = &loopFailure{backend: ld.d.backend, err: err, set: ld.set, rest: ld.rest}
	go c.serve(ld.ctx)
}

// checkDials fails the connects in flight that are past their deadline or
// cancelled.
func (l *eventLoop) checkDials(now time.Time) {
	var failed []*loopConn
	l.mu.Lock()
	for lc := range l.connecting {
		if lc.dial.cancelled.Load() || lc.c.abortRequested.Load() || !now.Before(lc.dial.deadline) {
			failed = append(failed, lc)
		}
	}
	l.mu.Unlock()
	for _, lc := range failed {
		err := error(os.ErrDeadlineExceeded)
		if lc.dial.cancelled.Load() {
			err = errDropped
		}
		if lc.c.abortRequested.Load() {
			err = net.ErrClosed
		}
		l.failDial(lc, err)
	}
}
