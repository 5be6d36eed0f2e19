package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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
// (DropFlowCap).
//
// Drops are counted where the route sees them. Datagrams the kernel drops
// before the route reads them, its socket's receive buffer full, are not:
// they are the system's UDP RcvbufErrors (/proc/net/snmp).
//
// One owner serves a route's socket and all its flows, and owns the flow
// table: no mutex on the data path. On Linux it is an event loop of the
// route's own (udp_linux.go): a thread waiting in epoll_wait for the
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
// included where the system allows).
func ListenUDP(ctx context.Context, addr string) (*net.UDPConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on udp %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
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

// udpKey identifies a client: its address as 16 bytes (IPv4 as
// IPv4-mapped IPv6), its port and its IPv6 scope. It holds no pointer, so the flow index is a map the
// garbage collector does not scan.
type udpKey struct {
	addr  [16]byte
	port  uint16
	scope uint32
}

func keyOf(ap netip.AddrPort) udpKey {
	return udpKey{addr: ap.Addr().As16(), port: ap.Port(), scope: zoneIndex(ap.Addr().Zone())}
}

// zoneIndex returns the index of an IPv6 zone, a number or an interface
// name; 0 for none.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if i, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(i)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// addrPort returns the client's address, IPv4 as such.
func (k udpKey) addrPort() netip.AddrPort {
	a := netip.AddrFrom16(k.addr).Unmap()
	if k.scope != 0 && a.Is6() {
		a = a.WithZone(strconv.Itoa(int(k.scope)))
	}
	return netip.AddrPortFrom(a, k.port)
}

// udpSock is a flow's socket: a descriptor the event loop holds, or a
// connection the goroutine path reads.
type udpSock struct {
	fd   int32
	conn *net.UDPConn
}

// flowSockets opens and closes flows' sockets for the owner.
type flowSockets interface {
	// open returns a socket connected to addr, whose events (the event
	// loop's) carry slot and gen.
	open(addr netip.AddrPort, slot int32, gen uint32) (udpSock, error)
	close(udpSock)
}

// udpBackend is a backend as flows hold it: one per backend and
// generation (a forgotten backend added back is a new one), with the
// counts not yet reported.
type udpBackend struct {
	b     Backend
	flows int  // flows on it
	gone  bool // forgotten: its flows move at their next datagram

	dirty                        bool // in flowTable.dirty
	up, upBytes, down, downBytes int
}

// udpFlow is one client's flow: an entry of the flow table's slab.
type udpFlow struct {
	sock udpSock
	be   *udpBackend // nil while the entry is free
	key  udpKey
	last int64 // the owner's clock at the flow's last datagram, either way
	// prev and next link the flows from the one idle the longest (head) to
	// the one most recently active (tail); next links the free entries.
	prev, next int32
	// gen counts the entry's reuses, so that an event of a socket closed
	// earlier is not taken for the entry's current one.
	gen  uint32
	move bool // the backend was unreachable: move at the next datagram
}

// flowTable is a route's flows, owned by its owner alone: a slab of
// entries indexed by client, linked in the order they were last active,
// which makes touching a flow O(1) and expiring one a look at the head.
type flowTable struct {
	r     *UDPRoute
	obs   UDPObserver
	log   *zap.Logger
	socks flowSockets
	epoch time.Time
	idle  int64 // IdleTimeout in ns
	max   int

	flows      []udpFlow
	free       int32 // first free entry, or -1
	index      map[udpKey]int32
	head, tail int32 // idle the longest, most recently active; -1 when empty
	n          int

	backends map[Backend]*udpBackend // the current udpBackend of each
	dirty    []*udpBackend           // with counts to report
	drops    [len(dropReasons)]int   // to report

	rrSet  *udpSet // the set the rotation is of
	rrNext int
}

func newFlowTable(r *UDPRoute) *flowTable {
	return &flowTable{r: r, obs: r.observer(), log: r.logger(), epoch: time.Now(),
		idle: int64(r.idleTimeout()), max: r.maxFlows(), free: -1, head: -1, tail: -1,
		index: make(map[udpKey]int32), backends: make(map[Backend]*udpBackend)}
}

// now is the owner's clock, in ns, monotonic.
func (t *flowTable) now() int64 { return int64(time.Since(t.epoch)) }

// flowFor returns the flow of a datagram from k: k's own, moved first if
// it must, or a new one. It returns -1 if there is none, the datagram
// dropped and counted.
func (t *flowTable) flowFor(k udpKey, now int64) int32 {
	if s, ok := t.index[k]; ok {
		if f := &t.flows[s]; (f.move || f.be.gone) && !t.move(s) {
			t.touch(s, now)
			return -1
		}
		t.touch(s, now)
		return s
	}
	return t.open(k, now)
}

// open starts a flow for client k, on the next backend of the current set,
// evicting the flow idle the longest at MaxFlows.
func (t *flowTable) open(k udpKey, now int64) int32 {
	b, addr, ok := t.pick(t.r.backends.Load(), nil)
	if !ok {
		t.drop(dropNoBackend)
		return -1
	}
	if t.n >= t.max {
		t.closeFlow(t.head, FlowEvicted)
	}
	s := t.alloc()
	f := &t.flows[s]
	sock, err := t.socks.open(addr, s, f.gen)
	if err != nil {
		t.openFailed(k, b, err)
		f.next, t.free = t.free, s
		return -1
	}
	f.sock, f.be, f.key, f.last, f.move = sock, t.intern(b), k, now, false
	t.link(s)
	t.index[k] = s
	t.n++
	t.r.flows.Add(1)
	t.obs.FlowOpened(b)
	if ce := t.log.Check(zap.DebugLevel, "flow opened"); ce != nil {
		ce.Write(zap.Stringer("remote", k.addrPort()), zap.Stringer("backend", b))
	}
	return s
}

// move moves flow s to another backend of the current set: its backend is
// gone, or was unreachable. An unreachable backend that is the only one
// keeps the flow. It reports false if the flow has nowhere to go, and the
// datagram is dropped and counted.
func (t *flowTable) move(s int32) bool {
	f := &t.flows[s]
	old := f.be
	b, addr, ok := t.pick(t.r.backends.Load(), old)
	if !ok {
		if !old.gone {
			f.move = false
			return true
		}
		t.drop(dropNoBackend)
		return false
	}
	sock, err := t.socks.open(addr, s, f.gen+1)
	if err != nil {
		t.openFailed(f.key, b, err)
		return false
	}
	t.socks.close(f.sock)
	t.release(old)
	t.obs.FlowClosed(old.b, FlowMoved)
	f.gen++
	f.sock, f.be, f.move = sock, t.intern(b), false
	t.obs.FlowOpened(b)
	if ce := t.log.Check(zap.DebugLevel, "flow moved"); ce != nil {
		ce.Write(zap.Stringer("remote", f.key.addrPort()), zap.Stringer("from", old.b), zap.Stringer("backend", b),
			zap.Bool("gone", old.gone))
	}
	return true
}

// openFailed counts and logs a flow that got no socket: out of
// descriptors or ports (a cap of the system's, DropFlowCap), or no route
// to the backend.
func (t *flowTable) openFailed(k udpKey, b Backend, err error) {
	reason := dropUnreachable
	if isFDExhaustion(err) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAGAIN) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
		reason = dropFlowCap
	}
	t.drop(reason)
	if ce := t.log.Check(zap.DebugLevel, "cannot open flow"); ce != nil {
		ce.Write(zap.Stringer("remote", k.addrPort()), zap.Stringer("backend", b), zap.Error(err))
	}
}

// pick returns the next backend of set in the rotation, other than avoid,
// with its address: the first after the last picked whose address is
// known (udpNames).
func (t *flowTable) pick(set *udpSet, avoid *udpBackend) (Backend, netip.AddrPort, bool) {
	if set == nil {
		return Backend{}, netip.AddrPort{}, false
	}
	if set != t.rrSet {
		t.rrSet, t.rrNext = set, 0 // a new set starts its rotation afresh
	}
	n := len(set.backends)
	for i := range n {
		j := (t.rrNext + i) % n
		b := set.backends[j]
		if avoid != nil && b == avoid.b {
			continue
		}
		addr := set.addrs[j]
		if !addr.IsValid() {
			var ok bool
			if addr, ok = t.r.lookup(b.Addr); !ok {
				continue
			}
		}
		t.rrNext = j + 1
		return b, addr, true
	}
	return Backend{}, netip.AddrPort{}, false
}

// intern returns the udpBackend of b for one more flow.
func (t *flowTable) intern(b Backend) *udpBackend {
	be := t.backends[b]
	if be == nil {
		be = &udpBackend{b: b}
		t.backends[b] = be
	}
	be.flows++
	return be
}

// release gives back what intern gave a flow.
func (t *flowTable) release(be *udpBackend) {
	if be.flows--; be.flows == 0 && t.backends[be.b] == be {
		delete(t.backends, be.b)
	}
}

// alloc returns a free entry of the slab, growing it if there is none.
func (t *flowTable) alloc() int32 {
	if s := t.free; s >= 0 {
		t.free = t.flows[s].next
		return s
	}
	t.flows = append(t.flows, udpFlow{})
	return int32(len(t.flows) - 1)
}

// link adds flow s as the most recently active.
func (t *flowTable) link(s int32) {
	f := &t.flows[s]
	f.prev, f.next = t.tail, -1
	if t.tail >= 0 {
		t.flows[t.tail].next = s
	} else {
		t.head = s
	}
	t.tail = s
}

func (t *flowTable) unlink(s int32) {
	f := &t.flows[s]
	if f.prev >= 0 {
		t.flows[f.prev].next = f.next
	} else {
		t.head = f.next
	}
	if f.next >= 0 {
		t.flows[f.next].prev = f.prev
	} else {
		t.tail = f.prev
	}
}

// touch records a datagram of flow s, either way.
func (t *flowTable) touch(s int32, now int64) {
	t.flows[s].last = now
	if t.tail != s {
		t.unlink(s)
		t.link(s)
	}
}

// live reports whether an event for slot and gen is of a flow's current
// socket.
func (t *flowTable) live(slot int32, gen uint32) bool {
	return slot >= 0 && int(slot) < len(t.flows) && t.flows[slot].be != nil && t.flows[slot].gen == gen
}

// closeFlow ends flow s and closes its socket.
func (t *flowTable) closeFlow(s int32, reason string) {
	f := &t.flows[s]
	t.socks.close(f.sock)
	t.unlink(s)
	delete(t.index, f.key)
	t.n--
	t.r.flows.Add(-1)
	be := f.be
	t.release(be)
	t.obs.FlowClosed(be.b, reason)
	if ce := t.log.Check(zap.DebugLevel, "flow closed"); ce != nil {
		ce.Write(zap.Stringer("remote", f.key.addrPort()), zap.Stringer("backend", be.b), zap.String("reason", reason))
	}
	*f = udpFlow{gen: f.gen + 1, next: t.free, sock: udpSock{fd: -1}}
	t.free = s
}

// expire ends the flows idle for IdleTimeout at now, and returns when the
// next one will be, or -1 if there are no flows.
func (t *flowTable) expire(now int64) int64 {
	for t.head >= 0 {
		if at := t.flows[t.head].last + t.idle; at > now {
			return at
		}
		t.closeFlow(t.head, FlowExpired)
	}
	return -1
}

// closeAll ends every flow, the route closing.
func (t *flowTable) closeAll() {
	for t.head >= 0 {
		t.closeFlow(t.head, FlowClosed)
	}
	t.flush()
}

// unreachable records an ICMP error on flow s's socket: it moves at its
// next datagram, if there is another backend.
func (t *flowTable) unreachable(s int32) {
	f := &t.flows[s]
	f.move = true
	t.obs.Unreachable(f.be.b)
	if ce := t.log.Check(zap.DebugLevel, "backend unreachable"); ce != nil {
		ce.Write(zap.Stringer("remote", f.key.addrPort()), zap.Stringer("backend", f.be.b))
	}
}

// handle acts on Forget's and CloseFlows's requests.
func (t *flowTable) handle(reqs []*udpRequest) {
	for _, req := range reqs {
		n := 0
		if req.forget {
			for b, be := range t.backends {
				if req.match(b) {
					be.gone = true
					n += be.flows
					delete(t.backends, b) // added back, it is a new one
				}
			}
		} else {
			for s := range t.flows {
				if be := t.flows[s].be; be != nil && req.match(be.b) {
					t.closeFlow(int32(s), FlowClosed)
					n++
				}
			}
		}
		req.done <- n
	}
}

// count adds datagrams forwarded to be's counts, reported by flush.
func (t *flowTable) count(be *udpBackend, up bool, n, bytes int) {
	if up {
		be.up += n
		be.upBytes += bytes
	} else {
		be.down += n
		be.downBytes += bytes
	}
	if !be.dirty {
		be.dirty = true
		t.dirty = append(t.dirty, be)
	}
}

func (t *flowTable) drop(reason int) { t.drops[reason]++ }

// dropFor counts a datagram a send failed with err: EAGAIN or ENOBUFS
// (the socket's buffer is full), EMSGSIZE (too large for the other side),
// anything else (an ICMP error, no route, a firewall).
func (t *flowTable) dropFor(err error) {
	switch {
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.ENOBUFS):
		t.drop(dropBuffer)
	case errors.Is(err, syscall.EMSGSIZE):
		t.drop(dropTooLarge)
	default:
		t.drop(dropUnreachable)
	}
}

// flush reports the counts since the last flush.
func (t *flowTable) flush() {
	for _, be := range t.dirty {
		if be.up > 0 {
			t.obs.Datagrams(be.b, DirectionUp, be.up, be.upBytes)
		}
		if be.down > 0 {
			t.obs.Datagrams(be.b, DirectionDown, be.down, be.downBytes)
		}
		be.up, be.upBytes, be.down, be.downBytes, be.dirty = 0, 0, 0, 0, false
	}
	clear(t.dirty)
	t.dirty = t.dirty[:0]
	for i, n := range t.drops {
		if n > 0 {
			t.obs.Dropped(dropReasons[i], n)
			t.drops[i] = 0
		}
	}
}

// isUnreachable reports whether err, of a flow's socket, is an ICMP error
// from its backend (or its path): the flow moves.
func isUnreachable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTDOWN)
}
