package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// # UDP
//
// A [UDPRoute] is a UDP socket plus a backend set. It forwards datagrams
// per flow: each client address (IP and port, IPv4 or IPv6) gets its own
// flow, an upstream UDP socket connected to the backend chosen for it,
// round-robin among the current set, when the flow starts. The flow's
// datagrams go to that backend from the flow's own port, and what the
// backend sends back to that port goes to the client from the route's
// socket, so replies reach the right client from the address and port it
// sent to.
//
// Datagrams are forwarded whole, up to 65,507 bytes (65,527 between IPv6
// peers), never truncated: a datagram larger than the receive buffer
// (udpSlotSize, which no UDP datagram reaches without IPv6 jumbograms), or
// one the other side's socket cannot send (an IPv6 client's 65,527 bytes to
// an IPv4 backend), is dropped and counted (DropTooLarge).
//
// Rewires: the set is replaced whole ([UDPRoute.SetBackends]) and read
// once per new flow, so new flows use a new set at once, while an existing
// flow stays on its backend until it idles out. A flow whose backend is
// gone ([UDPRoute.Forget]), or whose backend answered with an ICMP port
// unreachable (nothing listens: [UDPObserver.Unreachable]), moves to a
// backend of the current set at its next datagram, and is counted
// (FlowMoved). A drain ([UDPRoute.CloseFlows]) ends flows at once: their
// next datagram starts a new flow on the current set. Unlike a TCP route
// there is no fallback tier: nothing tells a UDP proxy that a backend took a
// datagram, only an ICMP error that it did not. With no backend at all, a
// datagram that would start a flow is dropped and counted (DropNoBackend).
//
// Flows expire after IdleTimeout without a datagram either way. At
// MaxFlows, a new client's flow evicts the flow idle the longest
// (FlowEvicted). A flow holds a socket, and so a descriptor and a port of
// the ephemeral range (net.ipv4.ip_local_port_range, 28,232 ports by
// default): holding more flows than that, 50,000 say, takes a wider range
// (docker run --sysctl net.ipv4.ip_local_port_range="1024 65535") and as
// many descriptors. A flow that cannot get its socket is a drop
// (DropFlowCap). A flow's socket that received a datagram keeps a page of
// the kernel's UDP memory accounted (net.ipv4.udp_mem, 3/16 of the memory
// by default) while it lives: past that limit, datagrams are dropped on
// arrival.
//
// Drops are counted where the route sees them. Datagrams the kernel drops
// before the route reads them, its socket's receive buffer full, are not:
// they are the system's UDP RcvbufErrors (/proc/net/snmp).
//
// One owner serves a route's socket and all its flows, and owns the flow
// table: no mutex on the data path. On Linux it is an event loop of the
// route's own (udp_linux.go): a goroutine waiting in epoll_wait for the
// route's socket and every flow's socket, reading with recvmmsg and
// sending to clients with sendmmsg, with no goroutine per flow or per
// datagram. Elsewhere, or if the loop cannot start, it is a goroutine fed
// by one reader goroutine for the route's socket and one per flow
// (udp_goroutine.go). Forget and CloseFlows are requests to the owner,
// answered once it has acted (ask); SetBackends is an atomic store the
// owner reads at each new flow. An [UDPObserver] is called from the owner
// only, with datagram counts batched per backend.
//
// Backends named by host name rather than IP are resolved off the data
// path (udpNames): when the set is replaced, and again when a new flow
// picks the name and the last lookup is older than udpNameTTL; new flows
// use the last address found meanwhile. A datagram that would start a flow
// to a name not resolved yet goes to another backend of the set, or is
// dropped (DropNoBackend) if there is none. Backend.TLS has no meaning for
// UDP and is ignored.

const (
	// DefaultUDPIdleTimeout is how long a flow lives with no datagram
	// either way when UDPRoute.IdleTimeout is zero.
	DefaultUDPIdleTimeout = 30 * time.Second

	// DefaultUDPMaxFlows is a UDP route's cap on flows when
	// UDPRoute.MaxFlows is zero.
	DefaultUDPMaxFlows = 10000

	// udpSlotSize is the size of a receive buffer: larger than any UDP
	// datagram (65,535 bytes less the UDP header's 8) short of IPv6
	// jumbograms, which arrive cut (MSG_TRUNC) and are dropped.
	udpSlotSize = 65536

	// udpReadBuffer is the receive buffer a route's socket asks for, so
	// that a burst of its clients' datagrams waits there while the owner
	// is busy, rather than being dropped by the kernel (the default,
	// net.core.rmem_default, is 208 KiB: about 270 small datagrams, a few
	// milliseconds of a busy route). The kernel caps it at
	// net.core.rmem_max, and takes memory for it only as datagrams wait.
	udpReadBuffer = 4 << 20

	// udpNameTTL is how long a backend's host name is used as resolved
	// before it is looked up again; the old address serves new flows
	// meanwhile. A name that did not resolve is tried again after
	// udpNameRetry.
	udpNameTTL     = 10 * time.Second
	udpNameRetry   = time.Second
	udpNameTimeout = 5 * time.Second
)

// UDPRoute forwards the datagrams received on its socket to one backend of
// its current set, per flow (client address).
//
// The zero value is ready to use once it has backends; optional settings
// are plain fields, read when Serve starts, and must not be changed after.
// Its methods are safe for concurrent use, but not from an Observer's
// calls, which come from the route's owner (they would wait for it).
type UDPRoute struct {
	// Name identifies the route in the errors Serve returns.
	Name string

	// IdleTimeout ends a flow with no datagram either way for this long,
	// closing its socket. Zero means DefaultUDPIdleTimeout (30s).
	IdleTimeout time.Duration

	// MaxFlows caps the flows served at once. At the cap, a new client's
	// flow evicts the flow idle the longest. Zero means
	// DefaultUDPMaxFlows.
	MaxFlows int

	// Logger receives the route's logs, at debug one line per flow opened
	// and closed, never per datagram. Nil means no logs.
	Logger *zap.Logger

	// Observer receives the route's flow and datagram events, for
	// metrics. Nil means none.
	Observer UDPObserver

	backends atomic.Pointer[udpSet] // replaced whole under mu, read by the owner per new flow
	flows    atomic.Int64           // active flows, kept by the owner
	names    udpNames

	mu sync.Mutex
	// The fields below are guarded by mu.
	owner    udpOwner      // what serves the socket, nil while nothing does
	requests []*udpRequest // for the owner, which takes them when woken
	closed   bool
	ctx      context.Context // cancelled by Close: ends name lookups
	cancel   context.CancelFunc

	lookups sync.WaitGroup // name lookups in flight; Add under mu, while not closed

	// noLoop serves with the goroutine path even on Linux: a hook for
	// tests, which run on both.
	noLoop bool
}

// UDPObserver receives a UDP route's events, for metrics. Every call comes
// from the route's owner, one at a time, on the data path: implementations
// must be fast, and must not call the route's methods.
type UDPObserver interface {
	// FlowOpened reports a new flow to backend b, or a flow moved to b.
	FlowOpened(b Backend)

	// FlowClosed reports the end of a flow to b, or its move away from b;
	// reason is one of the Flow* constants.
	FlowClosed(b Backend, reason string)

	// Datagrams reports n datagrams of bytes in all forwarded between a
	// flow and backend b: DirectionUp from the client to b, DirectionDown
	// from b to the client. Counts are batched: one call may cover many
	// datagrams, of many flows.
	Datagrams(b Backend, direction string, n, bytes int)

	// Dropped reports n datagrams dropped; reason is one of the Drop*
	// constants.
	Dropped(reason string, n int)

	// Unreachable reports an ICMP error from b on a flow's socket (port
	// unreachable: nothing listens there). The flow moves to another
	// backend of the set, if there is one, at its next datagram.
	Unreachable(b Backend)
}

// The reasons [UDPObserver.FlowClosed] reports.
const (
	FlowExpired = "expired" // no datagram either way for IdleTimeout
	FlowEvicted = "evicted" // the route was at MaxFlows, and a new client came
	FlowMoved   = "moved"   // the backend was forgotten or unreachable: the flow moved to another
	FlowClosed  = "closed"  // CloseFlows (a drain), or the route closed
)

// The reasons [UDPObserver.Dropped] reports.
const (
	DropNoBackend   = "no_backend"  // no backend to start or move a flow to
	DropFlowCap     = "flow_cap"    // no flow could be made: no socket for it (out of descriptors or ports)
	DropTooLarge    = "too_large"   // larger than the receive buffer, or than the other side can send
	DropBuffer      = "buffer"      // a socket's send buffer was full (EAGAIN, ENOBUFS)
	DropUnreachable = "unreachable" // the send failed otherwise: an ICMP error again, no route, a firewall
)

// dropReasons indexes the Drop* constants, for counting.
var dropReasons = [...]string{DropNoBackend, DropFlowCap, DropTooLarge, DropBuffer, DropUnreachable}

const (
	dropNoBackend = iota
	dropFlowCap
	dropTooLarge
	dropBuffer
	dropUnreachable
)

// nopUDPObserver is the observer of a route without one.
type nopUDPObserver struct{}

func (nopUDPObserver) FlowOpened(Backend)                  {}
func (nopUDPObserver) FlowClosed(Backend, string)          {}
func (nopUDPObserver) Datagrams(Backend, string, int, int) {}
func (nopUDPObserver) Dropped(string, int)                 {}
func (nopUDPObserver) Unreachable(Backend)                 {}

func (r *UDPRoute) observer() UDPObserver {
	if r.Observer != nil {
		return r.Observer
	}
	return nopUDPObserver{}
}

// ListenUDP opens a UDP socket on addr for a UDP route: "host:port", with
// an IPv4 or IPv6 host, or none for every address ([::], IPv4 clients
// included where the system allows), with a receive buffer of 4 MiB where
// the system allows (udpReadBuffer).
func ListenUDP(ctx context.Context, addr string) (*net.UDPConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on udp %s: %w", addr, err)
	}
	uc := pc.(*net.UDPConn)
	// Best effort: the system's cap (net.core.rmem_max) is the admin's.
	uc.SetReadBuffer(udpReadBuffer)
	return uc, nil
}

// SetBackends replaces the route's backend set; the slice is copied. New
// flows use the new set from the next one on; existing flows stay on their
// backend until they expire, unless it is forgotten (Forget) or
// unreachable. Host names in the set are looked up now, off the data path.
func (r *UDPRoute) SetBackends(bs []Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.backends.Load(); old != nil && slices.Equal(old.backends, bs) {
		return
	}
	set := newUDPSet(bs)
	r.backends.Store(set)
	for i, b := range set.backends {
		if !set.addrs[i].IsValid() {
			r.resolveLocked(b.Addr)
		}
	}
}

// Forget removes the backends with any of the given IDs from the set, and
// marks the flows on them: each moves to a backend of the current set at
// its next datagram (FlowMoved), since the backend is gone and its address
// may already be another container's. It returns the number of flows
// marked.
func (r *UDPRoute) Forget(ids ...string) int {
	gone := func(b Backend) bool { return b.ID != "" && slices.Contains(ids, b.ID) }
	r.mu.Lock()
	if old := r.backends.Load(); old != nil && slices.ContainsFunc(old.backends, gone) {
		r.backends.Store(newUDPSet(slices.DeleteFunc(slices.Clone(old.backends), gone)))
	}
	r.mu.Unlock()
	return r.ask(&udpRequest{match: gone, forget: true})
}

// CloseFlows ends the flows whose backend matches, and returns how many it
// ended: a client's next datagram starts a new flow on the current set. A
// drain after a rewire uses it for the flows to backends no longer in the
// set.
func (r *UDPRoute) CloseFlows(match func(Backend) bool) int {
	return r.ask(&udpRequest{match: match})
}

// Backends returns a copy of the current backend set.
func (r *UDPRoute) Backends() []Backend {
	s := r.backends.Load()
	if s == nil {
		return nil
	}
	return slices.Clone(s.backends)
}

// Flows returns the number of active flows.
func (r *UDPRoute) Flows() int { return int(r.flows.Load()) }

// Serve forwards the datagrams received on pc, which must be a
// *net.UDPConn, until Close, and then returns nil. It takes ownership of
// pc and closes it. On Linux the route's event loop serves it from a
// duplicate of its socket (udp_linux.go), so stop Serve with Close, not by
// closing pc.
func (r *UDPRoute) Serve(pc net.PacketConn) error {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return fmt.Errorf("serve udp route %s: %T is not a UDP socket", r.Name, pc)
	}
	r.mu.Lock()
	r.initLocked()
	if r.closed {
		r.mu.Unlock()
		uc.Close()
		return nil
	}
	if r.owner != nil {
		r.mu.Unlock()
		uc.Close()
		return fmt.Errorf("serve udp route %s on %s: already serving", r.Name, uc.LocalAddr())
	}
	t := newFlowTable(r)
	var o udpOwner
	if !r.noLoop {
		var err error
		if o, err = r.startLoop(uc, t); err != nil {
			r.logger().Warn("udp event loop unavailable; serving with goroutines",
				zap.Stringer("listen", uc.LocalAddr()), zap.Error(err))
		}
	}
	if o == nil {
		o = newUDPPump(r, uc, t)
	}
	r.owner = o
	r.mu.Unlock()
	o.run()
	return nil
}

// Close stops Serve, closes every flow's socket and the route's, and waits
// for them, and for the name lookups in flight.
func (r *UDPRoute) Close() error {
	r.mu.Lock()
	r.initLocked()
	r.closed = true
	r.cancel()
	o := r.owner
	if o != nil {
		o.stop() // under mu: see udpOwner
	}
	r.mu.Unlock()
	if o != nil {
		<-o.done()
	}
	r.lookups.Wait()
	return nil
}

// initLocked sets up the context on first use. r.mu must be held.
func (r *UDPRoute) initLocked() {
	if r.ctx == nil {
		r.ctx, r.cancel = context.WithCancel(context.Background())
	}
}

func (r *UDPRoute) idleTimeout() time.Duration {
	if r.IdleTimeout > 0 {
		return r.IdleTimeout
	}
	return DefaultUDPIdleTimeout
}

func (r *UDPRoute) maxFlows() int {
	if r.MaxFlows > 0 {
		return r.MaxFlows
	}
	return DefaultUDPMaxFlows
}

func (r *UDPRoute) logger() *zap.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return zap.NewNop()
}

// udpOwner is what serves a route's socket and owns its flow table: the
// event loop (udp_linux.go) or the goroutine path (udp_goroutine.go).
type udpOwner interface {
	// run serves until stop, then closes every socket, and answers the
	// requests left (udpRequest) before done is closed.
	run()
	// wake has the owner take the route's requests, and stop has it
	// return. Both are called with the route's mu held, and only while
	// the owner is the route's: the owner closes what wakes it once
	// takeRequests has made it no longer the route's.
	wake()
	stop()
	done() <-chan struct{}
}

// udpRequest is Forget's or CloseFlows's, for the owner: the flows on
// backends that match are marked to move (forget) or closed.
type udpRequest struct {
	match  func(Backend) bool
	forget bool
	done   chan int // the number of flows marked or closed
}

// ask has the owner act on req, and returns its answer: 0 when nothing
// serves the route, since there are no flows then.
func (r *UDPRoute) ask(req *udpRequest) int {
	r.mu.Lock()
	o := r.owner
	if o == nil {
		r.mu.Unlock()
		return 0
	}
	req.done = make(chan int, 1)
	r.requests = append(r.requests, req)
	o.wake()
	r.mu.Unlock()
	return <-req.done
}

// takeRequests returns the requests for the owner o, and, once o is done
// (last), stops taking more: ask answers 0 from then on.
func (r *UDPRoute) takeRequests(o udpOwner, last bool) []*udpRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	reqs := r.requests
	r.requests = nil
	if last && r.owner == o {
		r.owner = nil
	}
	return reqs
}

// udpSet is an immutable backend set, with each backend's address parsed
// once.
type udpSet struct {
	backends []Backend
	// addrs holds each backend's address as an IP and port, or the zero
	// AddrPort for a host name (udpNames).
	addrs []netip.AddrPort
}

func newUDPSet(bs []Backend) *udpSet {
	s := &udpSet{backends: slices.Clone(bs), addrs: make([]netip.AddrPort, len(bs))}
	for i, b := range bs {
		if ap, err := netip.ParseAddrPort(b.Addr); err == nil {
			s.addrs[i] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return s
}

// udpNames holds the addresses that backends' host names resolved to,
// looked up by goroutines of the route (resolveLocked) so that a lookup
// never holds the owner up.
type udpNames struct {
	mu sync.Mutex
	m  map[string]*udpName // by host:port; guarded by mu
}

type udpName struct {
	addr netip.AddrPort // invalid if the lookup failed
	at   time.Time      // when the last lookup ended
	busy bool           // a lookup is in flight
}

// lookup returns the address hostport resolved to, if it did, and starts
// a lookup when there is none yet or it is older than udpNameTTL (or
// udpNameRetry for a failure), without waiting for it.
func (r *UDPRoute) lookup(hostport string) (netip.AddrPort, bool) {
	r.names.mu.Lock()
	var addr netip.AddrPort
	stale := true
	if n := r.names.m[hostport]; n != nil {
		addr = n.addr
		ttl := udpNameTTL
		if !addr.IsValid() {
			ttl = udpNameRetry
		}
		stale = !n.busy && time.Since(n.at) >= ttl
	}
	r.names.mu.Unlock()
	if stale {
		r.mu.Lock()
		r.resolveLocked(hostport)
		r.mu.Unlock()
	}
	return addr, addr.IsValid()
}

// resolveLocked starts a lookup of hostport's host, unless one is in
// flight or the route is closed. r.mu must be held.
func (r *UDPRoute) resolveLocked(hostport string) {
	r.initLocked()
	if r.closed {
		return
	}
	r.names.mu.Lock()
	if r.names.m == nil {
		r.names.m = make(map[string]*udpName)
	}
	n := r.names.m[hostport]
	if n == nil {
		n = &udpName{}
		r.names.m[hostport] = n
	}
	if n.busy {
		r.names.mu.Unlock()
		return
	}
	n.busy = true
	r.names.mu.Unlock()
	ctx := r.ctx
	r.lookups.Go(func() { r.resolve(ctx, hostport, n) })
}

// resolve looks hostport's host up, and records the first address found.
func (r *UDPRoute) resolve(ctx context.Context, hostport string, n *udpName) {
	ap, err := resolveUDP(ctx, hostport)
	if err != nil && ctx.Err() == nil {
		r.logger().Warn("cannot resolve udp backend", zap.String("backend", hostport), zap.Error(err))
	}
	r.names.mu.Lock()
	defer r.names.mu.Unlock()
	n.busy = false
	n.at = time.Now()
	if err == nil || !n.addr.IsValid() {
		n.addr = ap // a failure keeps the last address found
	}
}

func resolveUDP(ctx context.Context, hostport string) (netip.AddrPort, error) {
	host, sport, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, "udp", sport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, udpNameTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("lookup %s: no address", host)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), nil
}
