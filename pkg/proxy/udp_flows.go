package proxy

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// A UDP route's flows (udp.go), as its owner keeps them: the table is
// the owner's alone, so nothing here takes a lock.

// udpKey identifies a client: its address as 16 bytes (IPv4 as
// IPv4-mapped IPv6), its port and its IPv6 scope. It holds no pointer, so
// the flow index is a map the garbage collector does not scan.
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
