package proxy

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Once a connection is established, its bytes are moved by an event loop
// rather than by a goroutine per direction. With goroutines, every small
// message wakes one (netpoller → scheduler → goroutine → splice in, splice
// out, splice again to find the socket empty → park): measured against
// HAProxy's event loop, about 1.5× its context switches and 1.3× its CPU
// per request, and 0.8× its requests per second. An event loop is what
// HAProxy does: one thread per core waits in epoll_wait for the sockets of
// many connections and moves each message with one read and one write.
//
// The loops accept a TCP listener's connections too (loopaccept_linux.go).
// A connection's first connect is made from a loop when nothing calls for
// more (loopdial_linux.go); retries, waits for a backend and fallbacks are
// a goroutine's (conn.serve), which hands the established connection's two
// sockets over. A socket Go's poller holds (the backend's when a goroutine
// dialled it, the client's when the goroutine needed a net.Conn of it, or
// its listener was not TCP) is taken from it by duplicating the descriptor
// and closing the net.Conn (which unregisters it there). Every socket is
// registered edge-triggered for input (and for output only while a write is
// pending: socketEvents) in the epoll set of one loop, round-robin.
//
// A direction (half) moves small messages through the loop's shared
// buffer: read once, write once; a short read means the socket was empty
// at that moment, and any byte that arrives later is a new edge, so no
// read is spent to learn that it is empty. Bytes that dst does not take at
// once are kept in a buffer of the half's own until dst is writable again,
// and nothing more is read meanwhile (no unbounded buffering). A read that
// fills the whole shared buffer means a bulk transfer: the half switches to
// splice through a pooled pipe, as the goroutine path does, and gives the
// pipe back whenever the source runs dry; it goes back to read and write
// when a splice moves less than minBulkSplice. An idle connection holds
// its two sockets and a few hundred bytes of state, and no goroutine.
//
// Connections with an idle timeout, and sockets other than TCP, keep the
// goroutine path (copy.go).
//
// Two things keep Go's scheduler from fighting the loops. sysmon, the
// runtime's monitor thread, takes the P of a thread waiting in a system
// call when no other P is idle, and the thread must then find another P
// when epoll_wait returns; so the poller adds one P per loop while it runs
// (GOMAXPROCS + loops), leaving the accept and dial goroutines and the rest
// of the daemon the Ps they had. And sysmon counts a goroutine that has not
// been through the scheduler for 10 ms (forcePreemptNS) as running too
// long: from then on it takes the goroutine's P whenever it finds it in a
// system call, and keeps waking every 20 µs to do so. A loop waits in
// epoll_wait rather than parking, so it never goes through the scheduler
// unless it yields: it yields (runtime.Gosched) every yieldInterval. (The
// explicit GOMAXPROCS also ends the runtime's own tracking of the CPU
// limit, as any runtime.GOMAXPROCS call does.) Measured with redis-benchmark
// -c 50 GET on 2 cores: without the two, a third of the proxy's context
// switches were sysmon's: 1.8× the context switches of the loops with
// them, and 0.6-0.9× their requests per second at 1.15-1.85× their CPU.

// loopBufferSize is the shared read buffer of one loop: a read that fills
// it switches the half to splice.
const loopBufferSize = 64 << 10

// minBulkSplice: a splice that moves less than this ends splice mode, for
// small messages move with fewer system calls by read and write.
const minBulkSplice = 16 << 10

// maxLoopEvents is how many events one epoll_wait returns at most.
const maxLoopEvents = 256

// yieldInterval is how often a busy loop passes through Go's scheduler:
// under forcePreemptNS (10 ms), and rare enough that the context switches
// of a yield on a locked thread (about three: the P goes to another thread
// and back) do not count; at 2 ms they were a quarter of the loops'.
const yieldInterval = 5 * time.Millisecond

// poller is the set of event loops, shared by every route of the process
// and running while any route holds it (acquirePoller).
type poller struct {
	loops []*eventLoop
	next  atomic.Uint32 // round-robin over loops
	wg    sync.WaitGroup
	procs int // GOMAXPROCS before the poller added one P per loop
}

// The shared poller and its holders, guarded by pollerMu.
var (
	pollerMu      sync.Mutex
	sharedPoller  *poller
	pollerHolders int
)

// acquirePoller returns the shared poller, starting it (one loop per
// GOMAXPROCS) if no route holds it. Every call must be paired with
// releasePoller once the holder's connections have all ended.
func acquirePoller() (*poller, error) {
	pollerMu.Lock()
	defer pollerMu.Unlock()
	if sharedPoller == nil {
		p, err := startPoller(runtime.GOMAXPROCS(0))
		if err != nil {
			return nil, err
		}
		sharedPoller = p
	}
	pollerHolders++
	return sharedPoller, nil
}

// releasePoller gives back what acquirePoller returned; the last holder
// stops the loops and waits for them.
func releasePoller() {
	pollerMu.Lock()
	defer pollerMu.Unlock()
	if pollerHolders--; pollerHolders > 0 {
		return
	}
	sharedPoller.stop()
	sharedPoller = nil
}

// poller returns the event loops to hand an established connection to,
// acquiring them on first use, or nil if the route is closing or they
// cannot run (the connection is then served with goroutines).
func (r *Route) poller() *poller {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.loops == nil && !r.shutdown && !r.noLoops {
		p, err := acquirePoller()
		if err != nil {
			r.noLoops = true
			r.logger().Warn("event loops unavailable; serving connections with goroutines", zap.Error(err))
			return nil
		}
		r.loops = p
	}
	return r.loops
}

// releaseLoopsLocked gives back the event loops r holds, once every
// connection of r has ended: they stop if no other route holds them.
// r.mu must be held.
func (r *Route) releaseLoopsLocked() {
	if r.loops != nil {
		releasePoller()
		r.loops = nil
	}
}

func startPoller(n int) (*poller, error) {
	p := &poller{procs: runtime.GOMAXPROCS(0)}
	for range n {
		l, err := newEventLoop()
		if err != nil {
			p.stop()
			return nil, err
		}
		p.loops = append(p.loops, l)
		p.wg.Go(l.run)
	}
	runtime.GOMAXPROCS(p.procs + n)
	return p, nil
}

// stop ends every loop and waits for them, and gives back the Ps the loops
// had, unless GOMAXPROCS was set since. No connection may be left.
func (p *poller) stop() {
	for _, l := range p.loops {
		l.stopping.Store(true)
		l.wake()
	}
	p.wg.Wait()
	if n := len(p.loops); n > 0 && runtime.GOMAXPROCS(0) == p.procs+n {
		runtime.GOMAXPROCS(p.procs)
	}
}

// eventLoop is one thread waiting in epoll_wait for the sockets of the
// connections registered with it, and moving their bytes.
type eventLoop struct {
	epfd int
	// wakefd is an eventfd, to wake the loop for stop and for connects
	// (loopdial_linux.go).
	wakefd   int
	stopping atomic.Bool

	// buf is the shared read buffer; only the loop's thread uses it.
	buf []byte

	mu sync.Mutex
	// fds maps each registered socket to its connection; guarded by mu,
	// since registration happens on the dialling goroutine.
	fds map[int32]*loopConn
	// connecting holds the connections whose connect the loop finishes
	// (connectInLoop); guarded by mu.
	connecting map[*loopConn]struct{}
	// dials counts them, for the loop to wait with a timeout while any is
	// in flight, and check their deadlines.
	dials atomic.Int32
	// resumed holds the replays whose goroutine is done (replay_linux.go);
	// guarded by mu.
	resumed []resumption
	// listeners maps the listening sockets in the set to their
	// listeners (loopaccept_linux.go); guarded by mu.
	listeners map[int32]*loopListener
}

func newEventLoop() (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &eventLoop{epfd: epfd, wakefd: wakefd, buf: make([]byte, loopBufferSize), fds: make(map[int32]*loopConn),
		connecting: make(map[*loopConn]struct{}), listeners: make(map[int32]*loopListener)}, nil
}

func (l *eventLoop) wake() {
	var one = [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

// run waits for events and serves them until stop. It holds its OS thread:
// the loop is a thread, as in HAProxy, and its waits are system calls.
func (l *eventLoop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer unix.Close(l.wakefd)
	defer unix.Close(l.epfd)
	events := make([]unix.EpollEvent, maxLoopEvents)
	yielded := time.Now()
	var checkDials time.Time // when to look for expired or cancelled connects
	for !l.stopping.Load() {
		now := time.Now()
		if now.Sub(yielded) >= yieldInterval {
			runtime.Gosched() // see the top of this file
			yielded = now
		}
		timeout := -1
		if l.dials.Load() > 0 {
			if !now.Before(checkDials) {
				l.checkDials(now)
				checkDials = now.Add(dialCheckInterval)
			}
			timeout = int(dialCheckInterval / time.Millisecond)
		}
		n, err := unix.EpollWait(l.epfd, events, timeout)
		if err != nil {
			// EINTR; nothing else can happen to a valid epoll set.
			continue
		}
		for i := range n {
			if events[i].Fd == int32(l.wakefd) {
				var buf [8]byte
				unix.Read(l.wakefd, buf[:])
				checkDials = time.Time{} // a connect was cancelled, or is the first
				l.resumeReplays()
				continue
			}
			l.handle(events[i].Fd, events[i].Events)
		}
	}
}

// handle serves one event on socket fd.
func (l *eventLoop) handle(fd int32, events uint32) {
	l.mu.Lock()
	lc := l.fds[fd]
	var la *loopListener
	if lc == nil {
		if la = l.listeners[fd]; la != nil {
			la.busy.Add(1) // under mu: Close has not taken fd out yet
		}
	}
	l.mu.Unlock()
	if la != nil {
		l.accept(la)
		return
	}
	if lc == nil {
		return // a connection closed earlier in this batch
	}
	if lc.dial != nil {
		l.connected(lc, events)
		return
	}
	if lc.replaying {
		return // resume pumps what the client sent meanwhile
	}
	if lc.c.backendGone.Load() && !lc.c.abortRequested.Load() {
		// Forgotten (leaveGone): replayed if the backend did not answer.
		if lc.down.answered() || !l.replay(lc, errBackendGone) {
			lc.end(l, net.ErrClosed)
		}
		return
	}
	if lc.c.abortRequested.Load() {
		lc.end(l, net.ErrClosed)
		return
	}
	in, out := &lc.up, &lc.down // fd is the client
	if int(fd) == lc.fds[1] {
		in, out = &lc.down, &lc.up
	}
	const readable = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	const writable = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR
	if events&readable != 0 {
		// A short read empties the socket of data but says nothing of a
		// FIN that came with it: only the event's RDHUP does.
		in.finPending = events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		if err := l.pump(in); err != nil {
			l.fail(lc, err)
			return
		}
	}
	// fd is watched for output only while out holds bytes it did not take
	// (watchOut); output readiness also comes with its errors.
	if events&writable != 0 && out.outWatched {
		var err error
		if out.holds() {
			err = l.pump(out)
		}
		if err == nil && !out.holds() {
			err = l.watchOut(out, false)
		}
		if err != nil {
			l.fail(lc, err)
			return
		}
	}
	if lc.up.done && lc.down.done {
		lc.end(l, nil)
		return
	}
	if lc.up.replayCap > 0 && lc.down.answered() {
		lc.up.dropReplay()
	}
}

// fail ends lc after err, unless the backend reset it before answering
// and the connection is replayed on another backend (replay_linux.go).
func (l *eventLoop) fail(lc *loopConn, err error) {
	if !l.replay(lc, err) {
		lc.end(l, err)
	}
}

// sockError is a failed system call on one socket of a loopConn, which
// tells a backend's reset from a client's (replay_linux.go).
type sockError struct {
	fd  int
	err error
}

func sockErr(op string, fd int, err error) error {
	return &sockError{fd: fd, err: os.NewSyscallError(op, err)}
}

func (e *sockError) Error() string { return e.err.Error() }
func (e *sockError) Unwrap() error { return e.err }

// loopConn is a connection served by an event loop: c's client and backend
// sockets, as descriptors of the loop's own.
type loopConn struct {
	c   *conn
	fds [2]int // client, backend; the client is -1 while dial is set

	// dial is the connect in flight, while the loop finishes it
	// (connectInLoop); only the loop's thread touches it afterwards.
	dial *loopDial

	// replaying: the backend reset the connection and a goroutine looks
	// for another (replay_linux.go); the loop leaves the connection alone until
	// it resumes. Only the loop's thread touches it.
	replaying bool

	// Only the loop's thread touches the halves.
	up   half // client → backend
	down half // backend → client
}

// half is one direction of a loopConn.
type half struct {
	src, dst int
	held     []byte // read but not yet taken by dst
	pipe     *pipe  // splice mode: the pipe, holding inPipe bytes
	inPipe   int
	bulk     bool // splice mode
	eof      bool // src sent FIN
	// finPending: src's last event said its FIN (or an error) has come, so
	// a short read does not mean there is nothing left to read.
	finPending bool
	done       bool // FIN passed on to dst
	written    int64
	// outWatched: dst is registered for output readiness, because it did
	// not take everything (watchOut).
	outWatched bool
	// replayCap > 0: what is read from src is kept in sent, up to
	// replayCap bytes, for a replay (replay_linux.go). Only the client →
	// backend half keeps, and only until the backend answers.
	replayCap int
	sent      []byte
	// prefix is what goes to dst ahead of src's first bytes, in one write
	// with them (writev): the PROXY header of a connection an event loop
	// connected (startConn), so that it does not cost a segment and a
	// wake-up of the backend of its own. Written alone if src has nothing
	// yet: a backend that speaks first waits for it.
	prefix []byte
	// replays is, on the backend → client half, the other half: while it
	// keeps bytes for a replay, a FIN from the backend before any byte is
	// not passed on but replayed, as a reset is (replay_linux.go).
	replays *half
}

// holds reports whether h has bytes dst has not taken yet.
func (h *half) holds() bool { return len(h.held) > 0 || h.inPipe > 0 }

// answered reports whether src has sent anything, a byte or a FIN.
func (h *half) answered() bool { return h.written > 0 || h.holds() || h.eof }

// keep adds b to what a replay would send, or gives up keeping once that
// would pass replayCap.
func (h *half) keep(b []byte) {
	if len(h.sent)+len(b) > h.replayCap {
		h.dropReplay()
		return
	}
	h.sent = append(h.sent, b...)
}

// dropReplay stops keeping src's bytes: the connection can no longer be
// replayed.
func (h *half) dropReplay() { h.replayCap, h.sent = 0, nil }

// releasePipes gives back the halves' pipes, closing one that still holds
// bytes.
func (lc *loopConn) releasePipes() {
	for _, h := range []*half{&lc.up, &lc.down} {
		if h.pipe != nil {
			if h.inPipe > 0 {
				h.pipe.close()
			} else {
				putPipe(h.pipe)
			}
			h.pipe, h.inPipe = nil, 0
		}
	}
}

// setHalves points the halves at the client's and the backend's
// sockets, afresh.
func (lc *loopConn) setHalves(cfd, bfd int) {
	lc.up = half{src: cfd, dst: bfd, replayCap: lc.c.route.ReplayBytes}
	lc.down = half{src: bfd, dst: cfd, replays: &lc.up}
}

// pump moves what src has to dst until src is empty or dst is full, and
// passes src's FIN on once everything before it is written. An error ends
// the whole connection.
func (l *eventLoop) pump(h *half) error {
	for !h.done {
		// What dst did not take earlier goes first.
		if len(h.held) > 0 {
			n, err := unix.Write(h.dst, h.held)
			if err == unix.EAGAIN {
				return l.watchOut(h, true)
			}
			if err != nil {
				return sockErr("write", h.dst, err)
			}
			h.written += int64(n)
			h.held = h.held[n:]
			if len(h.held) > 0 {
				continue
			}
			h.held = nil // free it: an idle connection holds no buffer
		}
		if h.inPipe > 0 {
			n, err := unix.Splice(h.pipe.r, nil, h.dst, nil, h.inPipe, spliceFlags)
			if err == unix.EAGAIN {
				return l.watchOut(h, true)
			}
			if err != nil {
				// Bytes may be left in the pipe: it cannot go back.
				h.pipe.close()
				h.pipe, h.inPipe = nil, 0
				return sockErr("splice", h.dst, err)
			}
			h.written += int64(n) // an int on 32-bit systems
			if h.inPipe -= int(n); h.inPipe > 0 {
				continue
			}
		}
		if h.eof {
			if h.written == 0 && h.replays != nil && h.replays.replayCap > 0 {
				return sockErr("read", h.src, errClosedUnanswered)
			}
			h.done = true
			if err := unix.Shutdown(h.dst, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
				return sockErr("shutdown", h.dst, err)
			}
			return nil
		}
		if h.bulk {
			more, err := h.spliceIn()
			if err != nil || !more {
				return err
			}
			continue
		}
		more, err := l.copyIn(h)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// copyIn reads once from src into the loop's buffer and writes it to dst,
// keeping what dst does not take. It reports whether pump should go on:
// not after a short read, which emptied src.
func (l *eventLoop) copyIn(h *half) (bool, error) {
	n, err := unix.Read(h.src, l.buf)
	switch {
	case err == unix.EAGAIN && h.prefix != nil:
		// Nothing to go with it: the prefix goes alone (pump).
		h.held, h.prefix = h.prefix, nil
		return true, nil
	case err == unix.EAGAIN:
		return false, nil
	case err != nil:
		return false, sockErr("read", h.src, err)
	case n == 0:
		h.eof = true
		if h.prefix != nil {
			h.held, h.prefix = h.prefix, nil
		}
		return true, nil
	}
	if h.replayCap > 0 {
		h.keep(l.buf[:n])
	}
	var w int
	if h.prefix != nil {
		w, err = unix.Writev(h.dst, [][]byte{h.prefix, l.buf[:n]})
	} else {
		w, err = unix.Write(h.dst, l.buf[:n])
	}
	if err == unix.EAGAIN {
		w, err = 0, nil
	}
	if err != nil {
		return false, sockErr("write", h.dst, err)
	}
	h.written += int64(w)
	if p := h.prefix; p != nil {
		h.prefix = nil
		if w < len(p)+n {
			h.held = append(append([]byte(nil), p...), l.buf[:n]...)[w:]
			return true, nil
		}
		w -= len(p)
	}
	if w < n {
		h.held = append([]byte(nil), l.buf[w:n]...)
		return true, nil
	}
	if n == len(l.buf) {
		h.bulk = true // more is likely waiting: splice it
		return true, nil
	}
	return h.finPending, nil
}

// spliceIn splices what src has into the half's pipe, taking one from the
// pool if needed. It reports whether pump should go on; when src is empty
// it gives the pipe back and leaves splice mode.
func (h *half) spliceIn() (bool, error) {
	if h.pipe == nil {
		p, err := getPipe()
		if err != nil {
			h.bulk = false // no pipe to be had: copy through user space
			return true, nil
		}
		h.pipe = p
	}
	n, err := unix.Splice(h.src, nil, h.pipe.w, nil, maxSpliceSize, spliceFlags)
	switch {
	case err == unix.EAGAIN:
		// Drained: the pipe goes back (an idle connection holds none),
		// but the half stays in splice mode, since a bulk sender's
		// socket runs dry between its bursts.
		putPipe(h.pipe)
		h.pipe = nil
		return false, nil
	case err != nil:
		return false, sockErr("splice", h.src, err)
	case n == 0:
		putPipe(h.pipe)
		h.pipe, h.bulk = nil, false
		h.eof = true
		return true, nil
	}
	h.inPipe = int(n)
	h.dropReplay() // spliced bytes are not kept
	if n < minBulkSplice {
		h.bulk = false // small messages again: one read and one write each
	}
	return true, nil
}

// add hands c's connected client and backend over to the loop. It reports
// false, with both net.Conns untouched, if the sockets cannot be taken
// from Go's poller (out of descriptors, or not TCP): the caller then
// serves c with goroutines.
func (p *poller) add(c *conn, client, backend net.Conn) bool {
	cfd, ok := dupSocket(client)
	if !ok {
		return false
	}
	bfd, ok := dupSocket(backend)
	if !ok {
		unix.Close(cfd)
		return false
	}
	l := p.loops[p.next.Add(1)%uint32(len(p.loops))]
	lc := &loopConn{c: c, fds: [2]int{cfd, bfd}}
	lc.setHalves(cfd, bfd)
	if lc.up.replayCap > 0 && len(c.pending) > 0 {
		// What the client sent after its PROXY header went to the backend
		// already (writePrelude): a replay sends it again.
		lc.up.keep(c.pending)
	}
	if !c.handOver(lc) {
		unix.Close(cfd)
		unix.Close(bfd)
		return false
	}
	// Closing the net.Conns unregisters them from Go's poller; the
	// duplicates keep the sockets open.
	client.Close()
	backend.Close()
	l.mu.Lock()
	l.fds[int32(cfd)] = lc
	l.fds[int32(bfd)] = lc
	l.mu.Unlock()
	// Neither fails for a valid socket short of kernel memory. If the
	// first fails, the loop never sees the connection and it ends here;
	// if the second does, abort's shutdown raises an event on the first,
	// and the loop ends it.
	if err := l.register(cfd); err != nil {
		lc.end(l, err)
	} else if err := l.register(bfd); err != nil {
		c.abort()
	}
	return true
}

// socketEvents is what a socket is registered for: input, edge-triggered.
// Output readiness is added only while the socket has not taken all that
// was written to it (watchOut): a socket watched for output raises an
// event whenever its peer's acknowledgements free send buffer, which for
// small messages woke the loop about once more per message, and once more
// per connection for the readiness every new socket has.
const socketEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// register adds a socket to the loop's epoll set: a socket that has input
// already raises its first event at once. The loop itself may have added
// it first (watchOut), since its connection's other socket is registered
// earlier and can be served at once.
func (l *eventLoop) register(fd int) error {
	ev := unix.EpollEvent{Events: socketEvents, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil && err != unix.EEXIST {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// watchOut registers h.dst for output readiness too, or no longer, as h
// holds bytes dst did not take or not. Registering re-arms the edge: a
// socket that is writable already raises an event at once, so no wake-up
// is lost between the failed write and the registration.
func (l *eventLoop) watchOut(h *half, on bool) error {
	if h.outWatched == on {
		return nil
	}
	ev := unix.EpollEvent{Events: socketEvents, Fd: int32(h.dst)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, h.dst, &ev)
	if err == unix.ENOENT {
		// add has not registered dst yet; its register finds it here.
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, h.dst, &ev)
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	h.outWatched = on
	return nil
}

// dupSocket duplicates a TCP connection's descriptor (close-on-exec).
func dupSocket(nc net.Conn) (int, bool) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	return dupFD(tc)
}

// dupFD duplicates the descriptor of a socket Go holds (close-on-exec):
// the duplicate shares the socket, its options and its non-blocking mode.
func dupFD(sc syscall.Conn) (int, bool) {
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if cerr := raw.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return 0, false
	}
	return fd, err == nil && fd >= 0
}

// close takes lc's sockets out of the loop and closes them, and gives its
// pipes back.
func (lc *loopConn) close(l *eventLoop) {
	l.mu.Lock()
	delete(l.fds, int32(lc.fds[0]))
	delete(l.fds, int32(lc.fds[1]))
	l.mu.Unlock()
	lc.releasePipes()
	// Under c.mu, so that abort never shuts down a descriptor number that
	// has been closed and reused.
	lc.c.closeHandedOver(lc.fds)
}

// end closes the connection and reports it finished. Only the loop's
// thread calls it, or add before the loop can see the connection. A
// socket that failed (err is its sockError) is passed on as a reset: the
// other socket is closed with SO_LINGER 0 (reset.go), unless the route
// aborted the connection, which shuts its sockets down itself.
func (lc *loopConn) end(l *eventLoop, err error) {
	var se *sockError
	if err != nil && errors.As(err, &se) && !lc.c.abortRequested.Load() {
		other, direction := lc.fds[0], DirectionDown // the backend failed
		if se.fd == lc.fds[0] {
			other, direction = lc.fds[1], DirectionUp
		}
		if other >= 0 {
			lingerZero(other)
		}
		lc.c.route.observer().Reset(direction)
		lc.c.backendReset = se.fd == lc.fds[1] && isReset(err)
	}
	lc.close(l)
	lc.c.report(lc.up.written, lc.down.written, err, nil)
}
