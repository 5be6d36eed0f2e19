package proxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// A UDP route's owner on Linux is an event loop of its own (udp.go says
// what it does): one goroutine, waiting in epoll_wait for the route's
// socket, every flow's socket and an eventfd that wakes it for requests
// (Forget, CloseFlows) and Close. Every socket is registered
// level-triggered for input only: a UDP send never waits (a datagram a
// full socket buffer refuses is dropped and counted), and a socket with
// more than one read's worth is simply reported again at the next
// epoll_wait, after the other sockets had their turn.
//
// The route's socket is read with recvmmsg, up to udpBatchSize datagrams
// a call. The datagrams of one client that follow one another in a batch
// go to its flow's socket with one sendmmsg, a lone datagram with one
// write. A flow's socket is read with recvmmsg too, into the reply batch,
// and the replies of every flow read in one pass of the loop go to their
// clients from the route's socket with one sendmmsg. Under load, then, a
// datagram costs about one system call up (the send to its flow's socket;
// the route socket's read is shared by the batch) and one down (the read
// of its flow's socket; the send is shared), plus epoll_wait shared by
// everything ready at once. A new flow costs three more (socket, connect,
// epoll_ctl), its end one (close).
//
// Datagrams of one size going to one destination together, a client's
// run to its flow or a flow's replies read at once, leave as one message
// the stack carries as one packet and cuts into the datagrams at the end
// (UDP segmentation offload: udp_gso_linux.go). That saves the stack's
// work per datagram, which is most of what the loop's system calls cost;
// the calls themselves are as above.
//
// The buffers of both batches (udpBatchSize slots of udpSlotSize each
// way: 8 MiB) are mapped anonymously, outside Go's heap: only the pages
// that datagrams fill become resident, the first of each slot for small
// datagrams (512 KiB at most), and the garbage collector neither counts
// nor scans them. A flow holds its socket, an entry of the slab (72
// bytes) and of the index, and no goroutine and no buffer: about 150
// bytes of Go's heap in all, measured with 9,400 flows
// (TestUDPManyFlows), besides the kernel's 3.4 KiB or so for the socket
// and its epoll entry.
//
// As the TCP event loops do (loop_linux.go), the loop passes through Go's
// scheduler every yieldInterval while busy, so that sysmon does not count
// it as running too long. Unlike them it is not locked to its thread: a
// yield puts the loop on the run queue, where its own thread (or the one
// the yield woke) takes it at once; a locked thread hands its P to
// another and waits to get it back (three context switches; at 2,000
// requests/s, 8% of the proxy's). It does not add a P for itself: a
// route's loop waiting in epoll_wait for long lets its P go, and takes
// one back when a datagram comes, as any goroutine in a system call does.

const (
	// udpBatchSize is how many datagrams one recvmmsg on the route's
	// socket takes at most, and how many replies one sendmmsg sends.
	udpBatchSize = 64

	// udpFlowBatch is how many datagrams one recvmmsg on a flow's socket
	// takes at most: a backend rarely has more waiting.
	udpFlowBatch = 16

	// udpMaxEvents is how many events one epoll_wait returns at most.
	udpMaxEvents = 256

	// The epoll data of the route's socket and of the eventfd; a flow's
	// socket's is its slot (Fd) and generation (Pad).
	udpListenerEvent = -1
	udpWakeEvent     = -2
)

// mmsghdr is struct mmsghdr: a message header and the length recvmmsg or
// sendmmsg reports for it. Go lays it out as C does on every Linux
// architecture (the header's alignment pads it on 64-bit ones).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// recvmmsg receives up to len(msgs) datagrams from fd, without waiting.
// An error after the first datagram is the kernel's to report at the next
// call.
func recvmmsg(fd int, msgs []mmsghdr) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sendmmsg sends msgs on fd, without waiting, and returns how many were
// sent: fewer than len(msgs) when one failed after the first, whose error
// the next call returns.
func sendmmsg(fd int, msgs []mmsghdr) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sendmsg sends the message m on fd, without waiting.
func sendmsg(fd int, m *unix.Msghdr) error {
	_, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(m)), unix.MSG_DONTWAIT)
	if e != 0 {
		return e
	}
	return nil
}

// udpBatch is a set of datagram slots, each a buffer of one size, with
// headers to receive into them (recv) and to send from them (send). The
// headers point into Go memory the batch holds for as long as the loop
// lives; the buffers are the loop's mapping.
type udpBatch struct {
	bufs  [][]byte
	recv  []mmsghdr
	iovs  []unix.Iovec // recv's: each slot whole
	send  []mmsghdr
	out   []unix.Iovec            // send's: each slot's datagram, set by pack
	names []unix.RawSockaddrInet6 // recv's or send's, as made; IPv4 addresses fit
	ctl   []byte                  // send's control messages: udpCmsgSpace bytes each

	// first, count and size are each send header's message, as pack
	// made it: its first slot, its datagrams and their bytes.
	first, count, size []int
}

// newUDPBatch makes a batch of the slots of size that fit in mem, whose
// receptions record the sender's address (recvNames) or whose sends take
// one (sendNames), not both.
func newUDPBatch(mem []byte, size int, recvNames, sendNames bool) *udpBatch {
	n := len(mem) / size
	b := &udpBatch{bufs: make([][]byte, n), recv: make([]mmsghdr, n), iovs: make([]unix.Iovec, n),
		send: make([]mmsghdr, n), out: make([]unix.Iovec, n), ctl: make([]byte, n*udpCmsgSpace),
		first: make([]int, n), count: make([]int, n), size: make([]int, n)}
	if recvNames || sendNames {
		b.names = make([]unix.RawSockaddrInet6, n)
	}
	for i := range n {
		b.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.recv[i].hdr.Iov = &b.iovs[i]
		b.recv[i].hdr.SetIovlen(1)
		switch {
		case recvNames:
			b.recv[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		case sendNames:
			b.send[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		}
	}
	return b
}

// receive reads up to to-from datagrams from fd into slots from to to.
func (b *udpBatch) receive(fd, from, to int) (int, error) {
	for i := from; i < to; i++ {
		if b.recv[i].hdr.Name != nil {
			b.recv[i].hdr.Namelen = unix.SizeofSockaddrInet6
		}
	}
	return recvmmsg(fd, b.recv[from:to])
}

// datagram returns slot i's datagram, as received, and whether it is
// whole: false if it did not fit in the slot (MSG_TRUNC).
func (b *udpBatch) datagram(i int) ([]byte, bool) {
	m := &b.recv[i]
	return b.bufs[i][:min(int(m.n), len(b.bufs[i]))], m.hdr.Flags&unix.MSG_TRUNC == 0
}

// udpLoop is the event loop serving one UDP route.
type udpLoop struct {
	r      *UDPRoute
	t      *flowTable
	epfd   int
	wakefd int
	lfd    int // the route's socket
	family int // lfd's: AF_INET or AF_INET6
	mem    []byte

	// up holds what clients sent: read from lfd, sent to the flows'
	// sockets. down holds what backends sent: read from the flows'
	// sockets into slots [0, downIn), and queued to be sent to clients
	// from lfd as the messages of send headers [0, downOut), whose
	// backends are downBe.
	up, down        *udpBatch
	downIn, downOut int
	downBe          []*udpBackend

	// gsoUp and gsoDown are the largest datagrams sent segmented
	// (udp_gso_linux.go) to backends and to clients; 0 if none is.
	gsoUp, gsoDown int

	// keys are the clients of up's datagrams, as readClients reads them.
	keys [udpBatchSize]udpKey

	// redo is the datagram of up sent again after its flow's backend was
	// unreachable, so that it is not sent a third time.
	redo int

	stopping atomic.Bool
	finished chan struct{}
}

// startLoop makes the event loop that will serve uc for r, with its flow
// table t. On success uc is closed: the loop holds a duplicate of its
// socket. On failure uc is left open, for the goroutine path.
func (r *UDPRoute) startLoop(uc *net.UDPConn, t *flowTable) (udpOwner, error) {
	lfd, ok := dupFD(uc)
	if !ok {
		return nil, errors.New("cannot duplicate the socket")
	}
	l := &udpLoop{r: r, t: t, lfd: lfd, epfd: -1, wakefd: -1, finished: make(chan struct{})}
	if err := l.init(); err != nil {
		l.release()
		return nil, err
	}
	uc.Close() // unregisters it from Go's poller; the duplicate stays open
	t.socks = l
	return l, nil
}

func (l *udpLoop) init() error {
	var err error
	if l.family, err = unix.GetsockoptInt(l.lfd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	if l.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	for fd, data := range map[int]int32{l.wakefd: udpWakeEvent, l.lfd: udpListenerEvent} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: data}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return os.NewSyscallError("epoll_ctl", err)
		}
	}
	if l.mem, err = unix.Mmap(-1, 0, 2*udpBatchSize*udpSlotSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		return os.NewSyscallError("mmap", err)
	}
	half := len(l.mem) / 2
	l.up = newUDPBatch(l.mem[:half], udpSlotSize, true, false)
	l.down = newUDPBatch(l.mem[half:], udpSlotSize, false, true)
	l.downBe = make([]*udpBackend, udpBatchSize)
	if gsoSupported(l.lfd) {
		l.gsoUp, l.gsoDown = udpGSOMaxSize, udpGSOMaxSize
	}
	return nil
}

// release closes what the loop holds, but the flows' sockets.
func (l *udpLoop) release() {
	for _, fd := range []int{l.lfd, l.epfd, l.wakefd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	if l.mem != nil {
		unix.Munmap(l.mem)
		l.mem, l.up, l.down = nil, nil, nil
	}
}

func (l *udpLoop) wake() {
	one := [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

func (l *udpLoop) stop() {
	l.stopping.Store(true)
	l.wake()
}

func (l *udpLoop) done() <-chan struct{} { return l.finished }

// run serves the route until stop.
func (l *udpLoop) run() {
	t := l.t
	events := make([]unix.EpollEvent, udpMaxEvents)
	yielded := t.now()
	next := int64(-1) // when the next flow expires
	for !l.stopping.Load() {
		timeout := -1
		if next >= 0 {
			timeout = int(max(0, (next-t.now()+999_999)/1_000_000)) // rounded up: wake after it, not just before
		}
		n, err := unix.EpollWait(l.epfd, events, timeout)
		now := t.now()
		if err != nil {
			n = 0 // EINTR
		}
		for i := range n {
			switch ev := &events[i]; ev.Fd {
			case udpListenerEvent:
				l.readClients(now)
			case udpWakeEvent:
				var buf [8]byte
				unix.Read(l.wakefd, buf[:])
				t.handle(l.r.takeRequests(l, false))
			default:
				if t.live(ev.Fd, uint32(ev.Pad)) {
					l.readFlow(ev.Fd, now)
				}
			}
		}
		l.sendReplies()
		t.flush()
		next = t.expire(now)
		if now-yielded >= int64(yieldInterval) {
			// See the top of this file. After the datagrams read
			// were sent, not before, so that the datagram that
			// woke the loop does not wait for what runs meanwhile.
			runtime.Gosched()
			yielded = now
		}
	}
	t.closeAll()
	// No longer the route's owner: nothing wakes the loop from here on,
	// and its eventfd can be closed.
	t.handle(l.r.takeRequests(l, true))
	l.release()
	close(l.finished)
}

// readClients reads a batch of datagrams from the route's socket and sends
// each to its client's flow.
func (l *udpLoop) readClients(now int64) {
	b := l.up
	n, err := b.receive(l.lfd, 0, len(b.recv))
	if err != nil {
		// EAGAIN: nothing after all. Anything else (ENOMEM) is the
		// kernel's to report again at the next event.
		return
	}
	t := l.t
	l.redo = -1
	keys := l.keys[:n]
	for i := range keys {
		keys[i] = l.clientOf(i)
	}
	b.group(keys)
	for i := 0; i < n; {
		if _, whole := b.datagram(i); !whole {
			t.drop(dropTooLarge)
			i++
			continue
		}
		k := keys[i]
		s := t.flowFor(k, now)
		if s < 0 {
			i++
			continue
		}
		// The run of k's datagrams goes to its flow in one call.
		j := i + 1
		for j < n && keys[j] == k {
			if _, whole := b.datagram(j); !whole {
				break
			}
			j++
		}
		i = l.sendRun(s, i, j)
	}
}

// group orders slots [0, len(keys)), whose clients are keys, so that the
// datagrams of each client follow one another, in the order it sent them,
// and the clients in the order of their first: a client's datagrams go to
// its flow together (sendRun), segmented if they can be, even when other
// clients' came between them. A slot moves whole: its buffer and its
// header, which points at its buffer and its address; keys move with
// them. It takes one pass over a small hash table of the batch's
// clients, and moves nothing when each client's datagrams follow one
// another already, as when each client sent one.
func (b *udpBatch) group(keys []udpKey) {
	const size = 2 * udpBatchSize      // a power of two, half full at most
	var _ [127 - udpBatchSize]struct{} // slots, plus one, fit an int8
	var (
		head       [size]int8         // 1 + the first slot of the client hashed there; 0: none
		last, next [udpBatchSize]int8 // of a client's first slot: its last; of any slot: the client's next, or -1
		moved      bool
	)
	for j := range keys {
		h := keys[j].hash() & (size - 1)
		for head[h] != 0 && keys[head[h]-1] != keys[j] {
			h = (h + 1) & (size - 1)
		}
		next[j] = -1
		if head[h] == 0 {
			head[h], last[j] = int8(j+1), int8(j)
			continue
		}
		first := head[h] - 1
		moved = moved || int(last[first]) != j-1
		next[last[first]], last[first] = int8(j), int8(j)
	}
	if !moved {
		return
	}
	// The order: each client's chain, from its first slot on, the
	// clients by their first slot.
	var order [udpBatchSize]int8
	var taken [udpBatchSize]bool
	n := 0
	for i := range keys {
		if taken[i] {
			continue
		}
		for k := int8(i); k >= 0; k = next[k] {
			order[n], taken[k] = k, true
			n++
		}
	}
	var (
		ks   [udpBatchSize]udpKey
		ms   [udpBatchSize]mmsghdr
		bufs [udpBatchSize][]byte
	)
	for i, k := range order[:n] {
		ks[i], ms[i], bufs[i] = keys[k], b.recv[k], b.bufs[k]
	}
	copy(keys, ks[:n])
	copy(b.recv, ms[:n])
	copy(b.bufs, bufs[:n])
}

// hash is k's hash for group: its port and the end of its address, where
// a batch's clients differ.
func (k udpKey) hash() uint32 {
	x := uint32(k.port) ^ uint32(k.addr[12])<<8 ^ uint32(k.addr[13])<<16 ^ uint32(k.addr[14])<<24 ^ uint32(k.addr[15])
	x *= 0x9e3779b1
	return x >> 16
}

// clientOf returns the client that sent datagram i of up.
func (l *udpLoop) clientOf(i int) udpKey {
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(l.up.recv[i].hdr.Name))
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		k := udpKey{port: portOf(&sa4.Port)}
		k.addr[10], k.addr[11] = 0xff, 0xff
		copy(k.addr[12:], sa4.Addr[:])
		return k
	}
	return udpKey{addr: sa.Addr, port: portOf(&sa.Port), scope: sa.Scope_id}
}

// portOf reads a sockaddr's port, in network byte order.
func portOf(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// sendRun sends datagrams [i, j) of up, all from one client, to its flow
// s, and returns where readClients goes on: j, or the datagram a backend's
// ICMP error refused, to be sent again after the flow moved (or stayed
// with its error cleared, if it has nowhere to go). A lone datagram goes
// with one write, more with one sendmmsg of their messages (pack).
func (l *udpLoop) sendRun(s int32, i, j int) int {
	t := l.t
	fd := int(t.flows[s].sock.fd)
	be := t.flows[s].be
	b := l.up
	for i < j {
		// Headers from i on are free: their slots' datagrams are
		// these, or sent.
		h, msgs := i, b.pack(i, i, j, l.gsoUp)
		var err error
		if msgs == 1 && b.count[h] == 1 {
			d, _ := b.datagram(i)
			if _, err = unix.Write(fd, d); err == nil {
				t.count(be, true, 1, len(d))
				i++
			}
		} else {
			var sent int
			sent, err = sendmmsg(fd, b.send[h:h+msgs])
			for k := h; k < h+sent; k++ {
				t.count(be, true, b.count[k], b.size[k])
			}
			if sent > 0 {
				i = b.first[h+sent-1] + b.count[h+sent-1]
			}
			h += sent // the message that failed, if err
			if err != nil && b.count[h] > 1 && gsoRefused(err) {
				// The path refused the segments: this message's
				// datagrams go again, one by one from here on.
				l.gsoUp = gsoAfter(err, b.segment(h), l.gsoUp)
				continue
			}
		}
		if err != nil {
			if isUnreachable(err) && i != l.redo {
				// The error of an earlier datagram's ICMP: this one
				// was not sent.
				t.unreachable(s)
				l.redo = i
				return i
			}
			for range b.count[h] {
				t.dropFor(err)
			}
			i += b.count[h]
		}
	}
	return j
}

// readFlow reads what flow s's backend sent into the reply batch, queued
// for its client.
func (l *udpLoop) readFlow(s int32, now int64) {
	if l.downIn == len(l.down.recv) {
		l.sendReplies()
	}
	t := l.t
	f := &t.flows[s]
	b := l.down
	n, err := b.receive(int(f.sock.fd), l.downIn, min(l.downIn+udpFlowBatch, len(b.recv)))
	if err != nil {
		if isUnreachable(err) {
			t.unreachable(s)
		} else if err != unix.EAGAIN {
			if ce := t.log.Check(zap.DebugLevel, "flow read failed"); ce != nil {
				ce.Write(zap.Stringer("remote", f.key.addrPort()), zap.Stringer("backend", f.be.b), zap.Error(err))
			}
		}
		return
	}
	t.touch(s, now)
	end := l.downIn + n
	for i := l.downIn; i < end; {
		// The run of whole datagrams from i becomes messages to the
		// client; the headers before slot i are the messages queued.
		j := i
		for j < end {
			if _, whole := b.datagram(j); !whole {
				break
			}
			j++
		}
		h := l.downOut
		msgs := b.pack(h, i, j, l.gsoDown)
		for k := h; k < h+msgs; k++ {
			b.send[k].hdr.Namelen = l.putClient(&b.names[k], f.key)
			l.downBe[k] = f.be
		}
		l.downOut += msgs
		if j < end {
			t.drop(dropTooLarge)
			j++
		}
		i = j
	}
	l.downIn = end
}

// putClient writes client k's address to sa, as the route's socket's
// family has it, and returns its length.
func (l *udpLoop) putClient(sa *unix.RawSockaddrInet6, k udpKey) uint32 {
	if l.family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte(k.addr[12:])}
		putPort(&sa4.Port, k.port)
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: k.addr, Scope_id: k.scope}
	putPort(&sa.Port, k.port)
	return unix.SizeofSockaddrInet6
}

// sendReplies sends the queued replies to their clients, and empties the
// reply batch.
func (l *udpLoop) sendReplies() {
	b, t := l.down, l.t
	for i := 0; i < l.downOut; {
		n, err := sendmmsg(l.lfd, b.send[i:l.downOut])
		for k := i; k < i+n; k++ {
			t.count(l.downBe[k], false, b.count[k], b.size[k])
		}
		i += n
		if err != nil {
			if b.count[i] > 1 && gsoRefused(err) {
				l.gsoDown = gsoAfter(err, b.segment(i), l.gsoDown)
				l.sendApart(i)
			} else {
				for range b.count[i] {
					t.dropFor(err)
				}
			}
			i++
		}
	}
	clear(l.downBe[:l.downOut])
	l.downIn, l.downOut = 0, 0
}

// sendApart sends the datagrams of reply message h one by one, after the
// path to its client refused them segmented.
func (l *udpLoop) sendApart(h int) {
	b, t := l.down, l.t
	for k := b.first[h]; k < b.first[h]+b.count[h]; k++ {
		m := b.unsegmented(h, k)
		if err := sendmsg(l.lfd, &m); err != nil {
			t.dropFor(err)
			continue
		}
		t.count(l.downBe[h], false, 1, int(b.out[k].Len))
	}
}

// open makes a flow's socket, connected to addr, and registers it with
// the loop's epoll set under slot and gen.
func (l *udpLoop) open(addr netip.AddrPort, slot int32, gen uint32) (udpSock, error) {
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if a := addr.Addr(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Port: int(addr.Port()), Addr: a.As16()}
		sa6.ZoneId = zoneIndex(a.Zone())
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return udpSock{fd: -1}, os.NewSyscallError("socket", err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return udpSock{fd: -1}, os.NewSyscallError("connect", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot, Pad: int32(gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return udpSock{fd: -1}, os.NewSyscallError("epoll_ctl", err)
	}
	return udpSock{fd: int32(fd)}, nil
}

// close closes a flow's socket, which takes it out of the epoll set.
func (l *udpLoop) close(s udpSock) {
	if s.fd >= 0 {
		unix.Close(int(s.fd))
	}
}
