package proxy

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// A TCP listener's connections are accepted by the event loops themselves,
// as HAProxy's threads do: the listening socket is in every loop's epoll
// set (level-triggered, EPOLLEXCLUSIVE so that a connection wakes one
// waiting loop, not all), and the loop that sees it readable accepts a
// batch of connections and starts each (Route.track), most often with a
// connect from a loop (loopdial_linux.go). An accept goroutine instead was
// woken through Go's poller and scheduler for every connection arriving at
// an idle moment: a thread woken with a futex, and the scheduler's spinning
// (nanosleep) on the other core, for each. Measured under redis-benchmark
// -k 0 -c 50 -n 60000 on 2 cores, three interleaved pairs of runs against
// the accept goroutine (accept_linux.go): 1.11-1.20× the connections per
// second at 0.84-0.86× the CPU per connection, and 1.3-1.4 context switches
// per connection instead of 2.8-2.9.
//
// The socket is a duplicate of the listener's, which is then closed, so
// that Go's poller, which waited for the original, no longer wakes for
// every connection too. A failed accept (out of descriptors, above all)
// takes the loop off the socket, as a level-triggered socket would wake it
// again at once; the route's Serve goroutine logs the failure, backs off as
// the accept goroutine does, and puts the loops back.

// maxAcceptBatch bounds the connections one loop accepts for one event, so
// that a burst of them does not hold up the bytes of the connections
// established already; the socket, level-triggered, is reported again.
const maxAcceptBatch = 32

// loopListener is a TCP listener whose socket the event loops accept on.
type loopListener struct {
	route *Route
	addr  net.Addr
	fd    int
	loops []*eventLoop

	failures chan error // an accept failure that took a loop off the socket
	// accepted: a connection was accepted since the last failure, which
	// starts the backoff over (acceptBackoff).
	accepted atomic.Bool
	closing  chan struct{} // closed by Close, after fd is closed
	once     sync.Once
	// busy counts the loops accepting on fd at the moment; a loop adds
	// to it only while fd is in its set (eventLoop.listeners), under its
	// mu.
	busy sync.WaitGroup

	mu     sync.Mutex
	closed bool // guarded by mu, with the loops' registrations
}

// acceptOn returns what Serve accepts ln's connections on: ln as a
// loopListener, whose connections the event loops accept, when it can be
// one, or else as a rawListener (accept_linux.go), or else ln itself.
func (r *Route) acceptOn(ln net.Listener) net.Listener {
	if la := r.loopListen(ln); la != nil {
		return la
	}
	return rawAccepting(ln)
}

// loopListen returns ln as a loopListener for r, or nil, with ln left as
// it was, if ln is not a TCP listener, its socket cannot be duplicated,
// or the event loops are not available.
func (r *Route) loopListen(ln net.Listener) *loopListener {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	p := r.poller()
	if p == nil {
		return nil
	}
	dup, ok := dupFD(tl)
	if !ok {
		return nil
	}
	// Closing the original takes the socket out of Go's poller.
	addr := ln.Addr()
	ln.Close()
	return &loopListener{
		route:    r,
		addr:     addr,
		fd:       dup,
		loops:    p.loops,
		failures: make(chan error, 1),
		closing:  make(chan struct{}),
	}
}

// Accept is not for callers: the event loops accept.
func (la *loopListener) Accept() (net.Conn, error) {
	return nil, fmt.Errorf("accept on %s: connections are accepted by event loops", la.addr)
}

func (la *loopListener) Addr() net.Addr { return la.addr }

// Close takes the socket out of every loop, waits for the loops accepting
// on it at the moment, and closes it. It must not be called with the
// route's mu held: an accepting loop takes it (Route.track).
func (la *loopListener) Close() error {
	la.once.Do(func() {
		la.mu.Lock()
		la.closed = true
		for _, l := range la.loops {
			l.unlisten(la.fd)
		}
		la.mu.Unlock()
		la.busy.Wait()
		unix.Close(la.fd)
		close(la.closing)
	})
	return nil
}

// resume puts the socket (back) into every loop's set, unless the listener
// is closed.
func (la *loopListener) resume() error {
	la.mu.Lock()
	defer la.mu.Unlock()
	if la.closed {
		return nil
	}
	for _, l := range la.loops {
		if err := l.listen(la); err != nil {
			return err
		}
	}
	return nil
}

// serve waits until la is closed, and meanwhile backs off from accept
// failures: after each, it waits as the accept goroutine does
// (acceptBackoff) before it puts the loops back on the socket.
func (la *loopListener) serve() error {
	r := la.route
	if err := la.resume(); err != nil {
		return fmt.Errorf("accept on %s: %w", la.addr, err)
	}
	var backoff acceptBackoff
	for {
		select {
		case <-la.closing:
			if r.isShutdown() {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", la.addr, net.ErrClosed)
		case err := <-la.failures:
			if la.accepted.Swap(false) {
				backoff.accepted()
			}
			if !r.sleep(backoff.failed(r.logger(), la.addr, err)) {
				return nil
			}
			if err := la.resume(); err != nil {
				return fmt.Errorf("accept on %s: %w", la.addr, err)
			}
		}
	}
}

// listen adds la's socket to l's set, unless it is there already.
func (l *eventLoop) listen(la *loopListener) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listeners[int32(la.fd)] != nil {
		return nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(la.fd)}
	err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, la.fd, &ev)
	if err == unix.EINVAL {
		// Before Linux 4.5: every waiting loop wakes, one accepts.
		ev.Events = unix.EPOLLIN
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, la.fd, &ev)
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.listeners[int32(la.fd)] = la
	return nil
}

// unlisten takes the listening socket fd out of l's set, if it is there.
func (l *eventLoop) unlisten(fd int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listeners[int32(fd)] == nil {
		return
	}
	delete(l.listeners, int32(fd))
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// accept accepts up to maxAcceptBatch connections on la and starts them.
// la.busy holds a count for it.
func (l *eventLoop) accept(la *loopListener) {
	defer la.busy.Done()
	for range maxAcceptBatch {
		// syscall's, not x/sys/unix's: see rawListener.accept4.
		fd, sa, err := syscall.Accept4(la.fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch err {
		case nil:
			if !la.accepted.Load() {
				la.accepted.Store(true)
			}
			la.route.track(accepted{fd: fd, remote: tcpAddr(sa)})
		case syscall.EAGAIN:
			return
		case syscall.EINTR, syscall.ECONNABORTED:
		default:
			// Level-triggered, the socket would wake the loop again
			// at once: the loop leaves it until the backoff is over.
			l.unlisten(la.fd)
			select {
			case la.failures <- os.NewSyscallError("accept4", err):
			default: // another loop's failure is reported already
			}
			return
		}
	}
}
