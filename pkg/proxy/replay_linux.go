package proxy

import (
	"context"
	"errors"
	"net"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// A backend that is stopped closes its listening socket, and the kernel
// resets every connection still waiting in its accept queue. Some of them
// are the proxy's: connections made in the moments between the stop
// signal and the watcher hearing of it (Docker signals the container
// before it reports the kill), already holding the client's first bytes.
// The app never read those bytes. Rather than pass the reset on to the
// client, an event loop replays such a connection: a goroutine waits for
// the backend to leave the set, connects to the set as it is then (as a
// new connection would, waiting for a backend up to BackendWait), and
// hands the new backend's socket back to the loop, which sends it the
// client's bytes again and goes on. Measured with the rewire benchmark,
// these resets were every failed connection of ambassadord's rewires:
// one to three per stopped backend.
//
// A connection is replayed only when all of this holds:
//   - the backend reset it (ECONNRESET, or EPIPE on a write after the
//     reset), or closed it (FIN) without a byte: what a published port
//     does when nothing listens behind it any more (docker-proxy accepts,
//     fails to connect to the stopped app, and closes), and what an app
//     that read the client's bytes, acted on them and closed without a
//     word does too: replay is only for first messages safe to run twice;
//     or the backend was forgotten (Route.Forget: it died, was removed or
//     disconnected) before either reached the loop: an app that accepted
//     the connection as it got its stop signal and exited with it
//     unanswered, its FIN or reset read after the engine's word;
//   - the backend had sent nothing;
//   - the client had sent at most ReplayBytes, which the loop keeps until
//     the backend answers;
//   - a backend that reset it leaves the set within replayWait, as a
//     stopped, dead or removed container does, or is ejected meanwhile
//     (EjectAfter: its other connections failed too, as when its host
//     died and its engine's grace keeps it in the set) while the set
//     has another backend to go to. A backend that
//     resets connections and stays in the set, not ejected, is not tried
//     again: the client sees the reset, as without replay, replayWait
//     later. A backend that
//     closed it is waited for closedWait only: a published port also
//     closes the connections that come between the start of a container
//     and its app's listening, and the container then stays in the set.
//     The connection goes to the set as it is then, that backend
//     included; closed again, the client gets the FIN.
//
// What is left is an app that read part of the client's bytes, acted on
// them without answering, and died with the rest unread: its kernel
// resets the connection too, and a replay repeats what the app did. The
// default ReplayBytes of the daemon (4 KiB, the read buffer of Go's bufio
// and smaller than most apps') keeps this to first messages an app reads
// whole or not at all.

// errClosedUnanswered is a backend's FIN before any byte, on a connection
// that may be replayed.
var errClosedUnanswered = errors.New("backend closed the connection before answering")

// errBackendGone is a backend forgotten (Route.Forget) before it answered:
// replayed as after a FIN, without waiting, since it has left the set.
var errBackendGone = errors.New("backend gone before answering")

// closedWait bounds how long a connection its backend closed before a
// byte waits for the backend to leave the set before it is replayed on
// the set as it is: a stopped container's kill event comes within
// milliseconds, and a started one's app listens within as few.
const closedWait = 100 * time.Millisecond

// replayWait bounds how long a connection its backend reset waits for the
// backend to leave the set. Docker reports a stop signal (kill) within
// milliseconds of sending it, and the death of a process soon after.
const replayWait = time.Second

// resumption is the outcome of a replay's search for a backend, for the
// loop to go on with.
type resumption struct {
	lc   *loopConn
	fd   int // the new backend's socket, when err is nil
	b    Backend
	sent []byte // what the client had sent, to send again
	fin  bool   // the client had sent its FIN too
	err  error
	// closed: the backend closed (FIN), not reset: the set is tried
	// after closedWait whether the backend left it or not.
	closed bool
}

// replay starts replaying lc after err, if the backend reset it before
// answering; it reports whether it did. The backend's socket is closed at
// once, and the connection reported closed with it; the client's stays
// registered, its events ignored until resume.
func (l *eventLoop) replay(lc *loopConn, err error) bool {
	c := lc.c
	// pump checked the rest for a FIN, the loop for a backend gone
	closed := errors.Is(err, errClosedUnanswered) || errors.Is(err, errBackendGone)
	if lc.up.replayCap == 0 || !closed && (lc.down.answered() || !lc.backendReset(err)) || c.abortRequested.Load() {
		return false
	}
	old, _ := c.backendInfo()
	bfd := lc.fds[1]
	l.mu.Lock()
	delete(l.fds, int32(bfd))
	l.mu.Unlock()
	c.mu.Lock()
	unix.Close(bfd)
	lc.fds[1] = -1
	c.connected = false // Forget and CloseConns leave it alone meanwhile
	c.backendGone.Store(false)
	c.mu.Unlock()
	lc.releasePipes()
	res := resumption{lc: lc, sent: lc.up.sent, fin: lc.up.eof, closed: closed}
	r := c.route
	elapsed := time.Since(c.start)
	r.closed(old, 0, !closed)
	r.observer().ConnClosed(old, lc.up.written, 0, elapsed)
	if log := r.logger(); log.Core().Enabled(zap.DebugLevel) {
		log.Debug("backend ended the connection before answering; replaying it", zap.Stringer("remote", c.remote),
			zap.Stringer("backend", old), zap.Int("bytes", len(res.sent)), zap.Bool("fin", res.fin), zap.Error(err))
	}
	lc.replaying = true
	go l.findReplay(res, old, err)
	return true
}

// backendReset reports whether err is the backend's socket reset by its
// peer.
func (lc *loopConn) backendReset(err error) bool {
	var se *sockError
	return errors.As(err, &se) && se.fd == lc.fds[1] &&
		(errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE))
}

// findReplay waits for the backend that reset the connection to leave the
// set, connects to the set, and passes the outcome to the loop.
func (l *eventLoop) findReplay(res resumption, old Backend, reset error) {
	c := res.lc.c
	r := c.route
	ctx := r.context()
	wait := replayWait
	if res.closed {
		wait = closedWait
	}
	if !r.waitGone(ctx, old, wait) && !res.closed {
		res.err = reset
	} else if bc, b, err := r.connect(ctx, c); err != nil {
		res.err = err
	} else {
		fd, ok := dupSocket(bc)
		bc.Close()
		if ok {
			res.fd, res.b = fd, b
		} else {
			res.err = errNoBackendFD
		}
	}
	l.mu.Lock()
	l.resumed = append(l.resumed, res)
	l.mu.Unlock()
	l.wake()
}

// errNoBackendFD fails a replay whose new backend's socket could not be
// duplicated (out of descriptors).
var errNoBackendFD = errors.New("no descriptor for the backend's socket")

// waitGone waits up to d for b to leave the route's backends, or to be
// ejected (--eject-after: its other connections failed too, as when its
// host died and the engine's grace keeps it in the set) while the set has
// another backend not ejected, and reports whether it did. An ejected
// backend alone in its set is waited for to leave it: the connection
// would go back to it. (A stopped container's other connections, made
// between its stop signal and the engine's word, can eject it a
// millisecond before its kill event replaces the set: CI saw one so
// reset.) The fallback tier does not count: a backend is left there by a
// rewire, and pruned from it once it stops.
func (r *Route) waitGone(ctx context.Context, b Backend, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	// An ejection changes no set: it is looked for at this pace.
	tick := time.NewTicker(ejectPoll)
	defer tick.Stop()
	for {
		set := r.backends.Load()
		if set == nil || !slices.Contains(set.backends, b) || r.ejectedNow(b) && r.anotherBackend(set, b) {
			return true
		}
		select {
		case <-set.replaced:
		case <-tick.C:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// anotherBackend reports whether set has a backend other than b that is
// not ejected now.
func (r *Route) anotherBackend(set *backendSet, b Backend) bool {
	return slices.ContainsFunc(set.backends, func(o Backend) bool { return o != b && !r.ejectedNow(o) })
}

// ejectPoll is how often a replay waiting for its backend to leave the
// set looks whether it was ejected.
const ejectPoll = 10 * time.Millisecond

// resumeReplays goes on with the replays whose goroutine is done.
func (l *eventLoop) resumeReplays() {
	l.mu.Lock()
	rs := l.resumed
	l.resumed = nil
	l.mu.Unlock()
	for _, res := range rs {
		l.resume(res)
	}
}

// resume attaches a replayed connection to its new backend, sends it what
// the client had sent, and serves the connection again; or resets the
// client if no backend was found.
func (l *eventLoop) resume(res resumption) {
	lc, c := res.lc, res.lc.c
	r := c.route
	lc.replaying = false
	if res.err == nil && c.abortRequested.Load() {
		unix.Close(res.fd)
		res.err = net.ErrClosed
	}
	if res.err != nil {
		lc.reject(l, res.err)
		return
	}
	c.mu.Lock()
	lc.fds[1] = res.fd
	c.mu.Unlock()
	l.mu.Lock()
	l.fds[int32(res.fd)] = lc
	l.mu.Unlock()
	lc.setHalves(lc.fds[0], res.fd)
	// A connection is replayed once: a fallback tier can lead back to
	// the backend that reset it.
	lc.up.dropReplay()
	lc.up.eof = res.fin
	c.established(res.b)
	// The new backend gets its own PROXY header first, if it takes one.
	lc.up.held = append(c.header, res.sent...)
	c.header = nil
	r.observer().Replayed(res.b)
	if err := l.register(res.fd); err != nil {
		lc.end(l, err)
		return
	}
	// The client's events while the replay looked for a backend were
	// ignored: read what it sent meanwhile, its FIN included (a short
	// read does not say there is no FIN).
	lc.up.finPending = true
	if err := l.pump(&lc.up); err != nil {
		l.fail(lc, err)
	}
}

// reject closes the client of a replay that found no backend, with a
// reset (reset.go), and reports the connection rejected: its first
// backend's end was reported when the replay began.
func (lc *loopConn) reject(l *eventLoop, err error) {
	c := lc.c
	r := c.route
	lingerZero(lc.fds[0])
	lc.close(l) // the backend's is closed already
	reason := RejectNoBackend
	if r.context().Err() != nil {
		reason = RejectShutdown
	}
	r.logger().Debug("no backend to replay the connection on; closing", zap.Stringer("remote", c.remote), zap.Error(err))
	r.observer().Rejected(reason)
	r.untrack(c)
}
