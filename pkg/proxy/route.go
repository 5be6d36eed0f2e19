package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

const (
	defaultDialTimeout = 5 * time.Second

	// Accept errors such as EMFILE are retried with a delay that doubles from
	// minAcceptBackoff up to maxAcceptBackoff, as net/http does.
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// Route forwards every connection accepted on its listener to one backend of
// its current set.
//
// The zero value is ready to use once it has backends; optional settings are
// plain fields, read when a connection starts, and must not be changed after
// [Route.Serve] has been called.
type Route struct {
	// Name identifies the route in logs.
	Name string

	// DialTimeout bounds each connect to a backend. Zero means 5s.
	DialTimeout time.Duration

	// IdleTimeout closes a connection on which no byte has moved in either
	// direction for this long. Zero (the default) means never. With an idle
	// timeout the bytes are copied through a user-space buffer, because
	// splice cannot report progress without risking the bytes in its pipe.
	IdleTimeout time.Duration

	// BackendWait is how long a new connection waits for a backend to
	// accept it when none does (no backend in the set, or every one
	// refuses): it retries as soon as the set changes, and with a short
	// backoff meanwhile, which the connections waiting for the same set
	// share: one probes for all (probe.go). Zero means fail at once. A connection that finds
	// no backend is reset, not closed cleanly (reset.go).
	BackendWait time.Duration

	// ReplayBytes is how much of what a client sends first is kept, until
	// the backend answers, to replay the connection on another backend
	// if this one resets it before answering and leaves the set: the
	// connections a stopped backend had not accepted yet (replay_linux.go).
	// Zero means no replay: the reset reaches the client. Connections
	// with an idle timeout, or other than TCP, are never replayed, nor
	// any on systems other than Linux (doc.go).
	ReplayBytes int

	// ProxyProtocol is the PROXY protocol version (ProxyV1, ProxyV2) whose
	// header every connection sends its backend before the client's first
	// byte, unless the backend says otherwise (Backend.ProxyProtocol).
	// Zero means none (proxyproto.go).
	ProxyProtocol int

	// AcceptProxy lists the client addresses trusted to send a PROXY
	// header (an upstream load balancer, another ambassador). When it is
	// not empty, every client must send one first, and a client outside it
	// is reset before anything is read; nil means the route reads no
	// header (proxyproto.go).
	AcceptProxy []netip.Prefix

	// ProxyHeaderTimeout bounds the wait for a client's PROXY header
	// (AcceptProxy). Zero means 5s.
	ProxyHeaderTimeout time.Duration

	// MaxConns caps the number of connections served at once. A connection
	// accepted beyond it is reset at once, before any backend is dialled.
	// Zero means no limit.
	MaxConns int

	// EjectAfter ejects a backend after this many failures in a row (a
	// connect that failed, or a connection the backend reset before
	// answering) for EjectTime: new connections try it only after every
	// other backend, until the ejection ends. Each ejection before the
	// backend answers again doubles the time, up to MaxEjectTime. Zero
	// (the default) never ejects.
	EjectAfter int

	// EjectTime is the first ejection's length. Zero means 5s.
	EjectTime time.Duration

	// MaxEjectTime caps an ejection's length. Zero means 2m.
	MaxEjectTime time.Duration

	// Logger receives the route's logs. Nil means no logs.
	Logger *zap.Logger

	// Observer receives the route's connection events, for metrics. Nil
	// means none.
	Observer Observer

	// HandshakeTimeout bounds a client's TLS handshake. Zero means 10s.
	HandshakeTimeout time.Duration

	// BackendTLS returns the client config for a TLS backend (Backend.TLS)
	// at addr, host:port, which verifies its certificate (ServerName, or a
	// VerifyConnection of its own). It is called for every such connect
	// and must be cheap (a config per address, cached). Nil refuses TLS
	// backends.
	BackendTLS func(addr string) *tls.Config

	// DialContext connects to a backend. Nil means a net.Dialer with
	// DialTimeout. It is a hook for tests.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// onEstablished, if set, is called by conn.established for every
	// connection that reaches a backend: a hook for tests.
	onEstablished func(c *conn, b Backend)

	backends  atomic.Pointer[backendSet] // replaced whole under mu, read without it
	listenTLS atomic.Pointer[tls.Config] // SetTLS
	active    atomic.Int64               // connections being served
	balance   atomic.Int32               // a Balance: SetBalance
	tally     tally                      // per backend: active connections, failures

	mu sync.Mutex
	// The fields below are guarded by mu, as is every store to backends.
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	dials     map[*dialing]struct{} // connects in flight, for Forget
	shutdown  bool
	ctx       context.Context // cancelled by closeLocked; bounds dials
	cancel    context.CancelFunc
	loops     *poller // held from the first connection handed to it until Close
	noLoops   bool    // the poller could not start: serve with goroutines

	wg sync.WaitGroup // one count per connection, from accept until it is closed
}

// SetBackends replaces the route's backend set; the slice is copied.
// Established connections are not affected; new connections use the new set
// from the next accept on. Backends of the previous set that the new one
// drops become a fallback, tried only when no new backend accepts and only
// until one has: a rewire to a container that is not listening yet does not
// fail new connections while the old backend still works. Connects in
// flight to a backend that the new set drops altogether are cancelled, and
// the connection tries the new set. Use [Route.Forget] for backends that
// are gone.
func (r *Route) SetBackends(backends []Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	backends = slices.Clone(backends)
	old := r.backends.Load()
	if old != nil && slices.Equal(old.backends, backends) {
		return
	}
	var fallback []Backend
	if old != nil {
		fallback = old.backends
		if !old.confirmed.Load() {
			fallback = append(slices.Clone(old.backends), old.fallback...)
		}
		fallback = without(fallback, backends)
	}
	r.replaceLocked(old, newBackendSet(backends, fallback))
}

// replaceLocked publishes set in place of old, and cancels the connects in
// flight to backends that set no longer has, even as a fallback: the
// backend may be gone, and an unanswered SYN is retransmitted, to be
// answered by whichever container Docker gives the address next. r.mu must
// be held.
func (r *Route) replaceLocked(old, set *backendSet) {
	r.backends.Store(set)
	if old != nil {
		close(old.replaced)
	}
	r.pruneTallyLocked(old, set)
	for d := range r.dials {
		if !set.has(d.backend) {
			d.dropped = true
			d.cancel()
		}
	}
}

// Forget removes the backends with any of the given IDs from the set and
// from its fallback, and ends every established connection to them. It is
// for backends that are gone (a container stopped, died, was removed or was
// disconnected): a new connection must never reach their address, which
// Docker may already have given to another container, and established
// connections to a host that vanished without a FIN would otherwise hang.
// A connection the backend has not answered is replayed on the set as it
// is then, when the route replays (ReplayBytes) and an event loop serves
// it: a fresh connection passed to a container in the moments before its
// stop, which the app accepted and left unanswered as it exited, is one a
// reset or a FIN would have had replayed had it come before the death
// (replay_linux.go). The others are closed. It returns the number of
// connections ended or replayed.
func (r *Route) Forget(ids ...string) int {
	gone := func(b Backend) bool { return b.ID != "" && slices.Contains(ids, b.ID) }
	r.mu.Lock()
	if old := r.backends.Load(); old != nil {
		keep := func(bs []Backend) []Backend {
			return slices.DeleteFunc(slices.Clone(bs), gone)
		}
		set := newBackendSet(keep(old.backends), keep(old.fallback))
		set.confirmed.Store(old.confirmed.Load())
		r.replaceLocked(old, set)
	}
	r.mu.Unlock()
	return r.endConns(gone, r.ReplayBytes > 0)
}

// PruneFallback drops from the fallback tier the backends that keep
// rejects, leaving established connections alone. A fallback is meant for a
// backend that still works while its replacement starts; one that was
// paused or is going away should not take new connections.
func (r *Route) PruneFallback(keep func(Backend) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.backends.Load()
	if old == nil || !slices.ContainsFunc(old.fallback, func(b Backend) bool { return !keep(b) }) {
		return
	}
	set := newBackendSet(old.backends, slices.DeleteFunc(slices.Clone(old.fallback), func(b Backend) bool { return !keep(b) }))
	set.confirmed.Store(old.confirmed.Load())
	r.replaceLocked(old, set)
}

// CloseConns closes the established connections whose backend matches, and
// returns how many it closed. A drain after a rewire uses it for the
// connections to backends no longer in the set.
func (r *Route) CloseConns(match func(Backend) bool) int {
	return r.endConns(match, false)
}

// endConns is CloseConns; with replay, the connections an event loop
// serves are left to it to replay or close (leaveGone), as for a backend
// that is gone.
func (r *Route) endConns(match func(Backend) bool, replay bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for c := range r.conns {
		if b, ok := c.backendInfo(); ok && match(b) {
			if !replay || !c.leaveGone() {
				c.abort()
			}
			n++
		}
	}
	return n
}

// Backends returns a copy of the current backend set.
func (r *Route) Backends() []Backend {
	s := r.backends.Load()
	if s == nil {
		return nil
	}
	return slices.Clone(s.backends)
}

// Active returns the number of connections being served.
func (r *Route) Active() int { return int(r.active.Load()) }

func (r *Route) dialTimeout() time.Duration {
	if r.DialTimeout > 0 {
		return r.DialTimeout
	}
	return defaultDialTimeout
}

func (r *Route) observer() Observer {
	if r.Observer != nil {
		return r.Observer
	}
	return nopObserver{}
}

func (r *Route) logger() *zap.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return zap.NewNop()
}

// initLocked sets up the maps and the context on first use. r.mu must be held.
func (r *Route) initLocked() {
	if r.conns == nil {
		r.listeners = make(map[net.Listener]struct{})
		r.conns = make(map[*conn]struct{})
		r.dials = make(map[*dialing]struct{})
		r.ctx, r.cancel = context.WithCancel(context.Background())
	}
}

// Serve accepts connections on ln until [Route.Shutdown] or [Route.Close]
// is called, and then returns nil. Transient accept errors (EMFILE, ENFILE,
// ECONNABORTED, ...) never end the loop: it backs off and keeps accepting.
// Serve takes ownership of ln and closes it. Stop it with Shutdown or
// Close, not by closing ln: Serve accepts a TCP listener's connections on a
// duplicate of its socket, from the event loops (loopaccept_linux.go) or,
// when they cannot run, from Serve's goroutine (accept_linux.go), and
// closing ln leaves the duplicate open.
func (r *Route) Serve(ln net.Listener) error {
	ln = r.acceptOn(ln)
	r.mu.Lock()
	r.initLocked()
	if r.shutdown {
		r.mu.Unlock()
		ln.Close()
		return nil
	}
	r.listeners[ln] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.listeners, ln)
		r.mu.Unlock()
		ln.Close()
	}()

	if la, ok := ln.(loopAccepting); ok {
		return la.serve()
	}
	var backoff acceptBackoff
	for {
		a, err := accept(ln)
		if err != nil {
			if r.isShutdown() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			if !r.sleep(backoff.failed(r.logger(), ln.Addr(), err)) {
				return nil
			}
			continue
		}
		backoff.accepted()
		r.track(a)
	}
}

// loopAccepting is a listener whose connections the event loops accept
// (loopaccept_linux.go): Serve waits in its serve, which backs off from
// the loops' accept failures, rather than accepting.
type loopAccepting interface{ serve() error }

// acceptBackoff paces the accepts on a listener after failures: the
// delay doubles from minAcceptBackoff to maxAcceptBackoff, and starts
// over once a connection is accepted. Out of descriptors, a connection
// can be accepted whenever another closes, and failures then come every
// few milliseconds: at most one warning per acceptWarnInterval says so,
// with the count of failures since the last.
type acceptBackoff struct {
	delay    time.Duration
	logged   time.Time // the last warning
	failures int       // since the last warning
}

// acceptWarnInterval is how often accept failures are logged at most.
const acceptWarnInterval = time.Second

// accepted records an accepted connection.
func (b *acceptBackoff) accepted() { b.delay = 0 }

// failed records err, an accept on listen that failed, and returns how
// long to wait before accepting again.
func (b *acceptBackoff) failed(log *zap.Logger, listen net.Addr, err error) time.Duration {
	if b.delay == 0 {
		b.delay = minAcceptBackoff
	} else {
		b.delay = min(2*b.delay, maxAcceptBackoff)
	}
	exhausted := isFDExhaustion(err)
	if exhausted {
		releasePipes() // pooled pipes hold descriptors a connection needs
	}
	b.failures++
	if now := time.Now(); now.Sub(b.logged) >= acceptWarnInterval {
		log.Warn("accept failed; backing off", zap.String("listen", listen.String()),
			zap.Duration("delay", b.delay), zap.Error(err), zap.Bool("fd_exhaustion", exhausted),
			zap.Int("failures", b.failures))
		b.failures, b.logged = 0, now
	}
	return b.delay
}

// isFDExhaustion reports whether err is the process or system running out of
// file descriptors, the one accept error an operator most needs to see named.
func isFDExhaustion(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// sleep waits for d, or less if the route shuts down; it reports whether the
// route is still running.
func (r *Route) sleep(d time.Duration) bool {
	ctx := r.context()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// context returns the route's context, cancelled by Close. The route must
// have served (initLocked).
func (r *Route) context() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ctx
}

// closeAll closes the route's listeners, without the route's mu: closing
// a loopListener waits for the event loops accepting on it, which take mu
// to start the connections they accept.
func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

func (r *Route) isShutdown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shutdown
}

// track starts serving an accepted connection, unless the route is shutting
// down or at its connection limit, in which case the connection is reset.
func (r *Route) track(a accepted) {
	if r.rejectUntrusted(a) {
		return
	}
	r.mu.Lock()
	if r.shutdown {
		r.mu.Unlock()
		a.reject()
		r.observer().Rejected(RejectShutdown)
		return
	}
	if r.MaxConns > 0 && len(r.conns) >= r.MaxConns {
		r.mu.Unlock()
		r.logger().Debug("connection limit reached; closing", zap.Stringer("remote", a.remote),
			zap.Int("max_conns", r.MaxConns))
		a.reject()
		r.observer().Rejected(RejectLimit)
		return
	}
	c := newConn(r, a)
	r.conns[c] = struct{}{}
	r.active.Add(1)
	r.wg.Add(1)
	ctx := r.ctx
	r.mu.Unlock()

	// A client that sends a PROXY header is read from a goroutine first.
	if r.acceptsProxy() || !r.connectInLoop(ctx, c) {
		go c.serve(ctx)
	}
}

func (r *Route) untrack(c *conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	r.active.Add(-1)
	r.wg.Done()
}

// Shutdown stops accepting, then waits for established connections to finish
// on their own until ctx is done, and then closes the ones left. It returns
// once every connection goroutine has exited: nil if all finished in time,
// otherwise ctx's error.
func (r *Route) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.initLocked()
	r.shutdown = true
	lns := slices.Collect(maps.Keys(r.listeners))
	r.mu.Unlock()
	closeAll(lns)

	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		r.Close()
		return nil
	case <-ctx.Done():
		r.Close()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection at once, then waits for
// their goroutines to exit.
func (r *Route) Close() error {
	r.mu.Lock()
	r.initLocked()
	r.shutdown = true
	r.cancel()
	lns := slices.Collect(maps.Keys(r.listeners))
	for c := range r.conns {
		c.abort()
	}
	r.mu.Unlock()
	closeAll(lns)
	r.wg.Wait()

	// Every connection has ended: the event loops may stop if no other
	// route holds them.
	r.mu.Lock()
	r.releaseLoopsLocked()
	r.mu.Unlock()
	return nil
}

// errNoBackend is the error of a connection that found no backend at all.
var errNoBackend = errors.New("no backend")

const (
	// The connections waiting for a backend (BackendWait) retry the set
	// with a delay doubling from minRetryDelay to maxRetryDelay, each at
	// once when the backend set changes, and every minRetryDelay for
	// newSetPolling after that; one of them probes for all (probe.go).
	minRetryDelay = 5 * time.Millisecond
	maxRetryDelay = 100 * time.Millisecond
	newSetPolling = 100 * time.Millisecond

	// maxPrimaryDialTimeout caps a connect to a new backend while a fallback
	// exists: a container that is not listening yet answers a connect with a
	// reset at once, and one that does not answer at all should not hold the
	// connection back from the old backend for a whole DialTimeout.
	maxPrimaryDialTimeout = time.Second
)

// dialing is a connect in flight to backend. A set replacement that drops
// the backend marks it dropped and cancels it.
type dialing struct {
	backend Backend
	cancel  context.CancelFunc
	dropped bool // guarded by Route.mu
}

// errDropped is the error of a connect to a backend that left the set
// before the connect completed.
var errDropped = errors.New("backend left the set while connecting")

// connect finds a backend for the new connection c and attaches it to c,
// waiting up to BackendWait for one to accept: it tries each set it finds
// once, and then waits for a backend of it with the other connections
// waiting for it (probe.go).
func (r *Route) connect(ctx context.Context, c *conn) (net.Conn, Backend, error) {
	var deadline time.Time
	if r.BackendWait > 0 {
		deadline = time.Now().Add(r.BackendWait)
	}
	delay := minRetryDelay  // while the route has no set yet
	var changedAt time.Time // when the set c waited for was replaced
	for {
		set := r.backends.Load()
		err := errNoBackend
		if set != nil {
			bc, b, derr := r.dial(ctx, set, c)
			if derr == nil {
				return bc, b, nil
			}
			err = derr
		}
		if ctx.Err() != nil || r.BackendWait <= 0 || !time.Now().Before(deadline) || tlsRefused(err) {
			return nil, Backend{}, err
		}
		if set == nil {
			// No set to wait with, nor a replacement to wake for: poll.
			t := time.NewTimer(min(delay, time.Until(deadline)))
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			delay = nextRetryDelay(delay, false)
			continue
		}
		bc, b, err := r.await(ctx, set, c, deadline, changedAt, err)
		if !errors.Is(err, errReplaced) {
			return bc, b, err
		}
		changedAt = time.Now()
	}
}

// nextRetryDelay is the delay before the next probe of a set that
// connections wait for: doubling up to maxRetryDelay, but minRetryDelay
// while the backend set is new (it changed less than newSetPolling ago).
// A new set is most often a container that just started and listens a few
// milliseconds later: the connections that waited for it retry together
// when the set changes, are refused, and a doubled delay would then add
// up to its last step (20-40 ms) after the container listens.
func nextRetryDelay(delay time.Duration, newSet bool) time.Duration {
	if newSet {
		return minRetryDelay
	}
	return min(2*delay, maxRetryDelay)
}

// loopFailure is a connect from an event loop that failed
// (loopdial_linux.go), for the goroutine path to go on from: not to try
// the same backend first again (every connection would, while it is
// down), and to report its error.
type loopFailure struct {
	backend Backend
	err     error
	set     *backendSet
	rest    []Backend
}

// dial connects to the first backend that accepts, trying each backend of
// the set once in round-robin order, then the fallback tier, and attaches
// it to c. Nothing has been read from the client yet, so trying the next
// backend can never replay or lose bytes.
func (r *Route) dial(ctx context.Context, set *backendSet, c *conn) (net.Conn, Backend, error) {
	dial := r.DialContext
	if dial == nil {
		d := &net.Dialer{}
		dial = d.DialContext
	}
	fallback := set.fallbackOrder()
	timeout := r.dialTimeout()
	if len(fallback) > 0 {
		timeout = min(timeout, maxPrimaryDialTimeout)
	}
	obs := r.observer()
	var errs []error
	try := func(bs []Backend, timeout time.Duration) (net.Conn, Backend, bool) {
		for _, b := range bs {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			d, err := r.startDial(b, cancel)
			var bc net.Conn
			if err == nil {
				bc, err = dial(dctx, "tcp", b.Addr)
				if err == nil && b.TLS {
					// The PROXY header goes before TLS, as HAProxy's
					// send-proxy with ssl: the receiving end reads it
					// first (readProxyHeader).
					if hdr := c.proxyHeader(b); hdr != nil {
						if _, werr := bc.Write(hdr); werr != nil {
							bc.Close()
							bc, err = nil, werr
						}
					}
				}
				if err == nil && b.TLS {
					bc, err = r.handshakeBackend(dctx, bc, b)
				}
				err = r.endDial(d, c, bc, err)
			}
			cancel()
			if err == nil {
				return bc, b, true
			}
			errs = append(errs, fmt.Errorf("%s: %w", b, err))
			if isFDExhaustion(err) {
				releasePipes()
			}
			if ctx.Err() != nil {
				// The route is closing: the backend is not at fault.
				return nil, Backend{}, false
			}
			if !errors.Is(err, errDropped) {
				obs.DialFailed(b, dialFailure(err))
				if !tlsRefused(err) {
					r.failed(b)
				}
			}
		}
		return nil, Backend{}, false
	}
	var order []Backend
	if t := c.loopTried; t != nil {
		// An event loop tried a backend for the connection already
		// (connectInLoop): the first pass goes on with the rest of the
		// loop's order, or of the set's if it was replaced meanwhile.
		c.loopTried = nil
		if t.set == set {
			order = t.rest
		} else {
			order = without(r.order(set), []Backend{t.backend})
		}
		if !errors.Is(t.err, errDropped) {
			errs = append(errs, fmt.Errorf("%s: %w", t.backend, t.err))
		}
	} else {
		order = r.order(set)
	}
	if bc, b, ok := try(order, timeout); ok {
		set.confirmed.Store(true)
		return bc, b, nil
	}
	if bc, b, ok := try(fallback, r.dialTimeout()); ok {
		return bc, b, nil
	}
	if len(errs) == 0 {
		return nil, Backend{}, errNoBackend
	}
	return nil, Backend{}, errors.Join(errs...)
}

// startDial registers a connect to b, so that a set replacement that drops
// b cancels it. It fails with errDropped if b has already left the set: the
// connection may have read the set before the replacement.
func (r *Route) startDial(b Backend, cancel context.CancelFunc) (*dialing, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.initLocked()
	if !r.backends.Load().has(b) {
		return nil, errDropped
	}
	d := &dialing{backend: b, cancel: cancel}
	r.dials[d] = struct{}{}
	return d, nil
}

// endDial unregisters d. If the connect succeeded, it attaches bc to c
// under the lock that set replacements and CloseConns hold, so that a
// replacement that drops the backend either has marked the connect
// dropped, which endDial then fails with errDropped, or finds the
// connection established (and Forget closes it). It also fails, with
// net.ErrClosed, when c was aborted meanwhile. bc is closed on failure.
// bc is nil for a connect an event loop made (connectInLoop), whose
// socket is the loop's to close.
func (r *Route) endDial(d *dialing, c *conn, bc net.Conn, err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.dials, d)
	switch {
	case err != nil:
		if d.dropped {
			return fmt.Errorf("%w: %w", errDropped, err)
		}
		return err
	case d.dropped:
		if bc != nil {
			bc.Close()
		}
		return errDropped
	case !c.setBackend(bc, d.backend):
		return net.ErrClosed
	}
	return nil
}
