package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// udpPump is a UDP route's owner where its event loop cannot serve
// (udp.go): on systems other than Linux, or when the loop cannot start.
// One goroutine (run) owns the flow table and makes every send; one reads
// the route's socket and one each flow's, and each hands what it reads to
// run as a copy. It is the simple path: a goroutine and a receive buffer
// (udpSlotSize) per flow, a channel send per datagram, and a system call
// per datagram each way; ambassadord runs on Linux, and this is so that
// UDP routes work, and their tests run, on a developer's machine.
type udpPump struct {
	r  *UDPRoute
	t  *flowTable
	pc *net.UDPConn

	in       chan udpPacket
	wakes    chan struct{} // a request is waiting; buffered
	stopping chan struct{} // closed by stop
	stopOnce sync.Once
	finished chan struct{}
	readers  sync.WaitGroup // readClients and every flow's readFlow
}

// udpPacket is what a reader hands to run: a datagram, or a flow's
// socket's error. A datagram that fills the reader's buffer was cut: no
// whole one is as large as udpSlotSize.
type udpPacket struct {
	slot  int32 // the flow's; -1 for a client's datagram
	gen   uint32
	from  netip.AddrPort // the client, for a client's datagram
	data  []byte
	trunc bool // did not fit in the reader's buffer
	err   error
}

func newUDPPump(r *UDPRoute, pc *net.UDPConn, t *flowTable) *udpPump {
	p := &udpPump{r: r, t: t, pc: pc, in: make(chan udpPacket, udpPumpQueue), wakes: make(chan struct{}, 1),
		stopping: make(chan struct{}), finished: make(chan struct{})}
	t.socks = p
	return p
}

// udpPumpQueue is how many datagrams the readers may have handed to run
// before they wait for it.
const udpPumpQueue = 256

func (p *udpPump) wake() {
	select {
	case p.wakes <- struct{}{}:
	default:
	}
}

func (p *udpPump) stop() { p.stopOnce.Do(func() { close(p.stopping) }) }

func (p *udpPump) done() <-chan struct{} { return p.finished }

// run serves the route until stop.
func (p *udpPump) run() {
	t := p.t
	p.readers.Go(p.readClients)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for running := true; running; {
		select {
		case pkt := <-p.in:
			p.handle(pkt, t.now())
		case <-p.wakes:
			t.handle(p.r.takeRequests(p, false))
		case <-timer.C:
		case <-p.stopping:
			running = false
		}
		now := t.now()
		t.flush()
		if next := t.expire(now); next >= 0 {
			timer.Reset(time.Duration(next - now))
		} else {
			timer.Stop()
		}
	}
	timer.Stop()
	p.pc.Close()
	t.closeAll() // closes every flow's socket, which ends its reader
	p.readers.Wait()
	t.handle(p.r.takeRequests(p, true))
	close(p.finished)
}

// handle forwards what a reader read.
func (p *udpPump) handle(pkt udpPacket, now int64) {
	t := p.t
	if pkt.slot < 0 {
		if pkt.trunc {
			t.drop(dropTooLarge)
			return
		}
		k := keyOf(pkt.from)
		for redo := false; ; redo = true {
			s := t.flowFor(k, now)
			if s < 0 {
				return
			}
			_, err := t.flows[s].sock.conn.Write(pkt.data)
			if err == nil {
				t.count(t.flows[s].be, true, 1, len(pkt.data))
				return
			}
			if isUnreachable(err) && !redo {
				// An earlier datagram's ICMP error: this one was not
				// sent. The flow moves, or stays with the error cleared.
				t.unreachable(s)
				continue
			}
			t.dropFor(err)
			return
		}
	}
	if !t.live(pkt.slot, pkt.gen) {
		return // a flow closed meanwhile
	}
	if pkt.err != nil {
		if isUnreachable(pkt.err) {
			t.unreachable(pkt.slot)
		}
		return
	}
	t.touch(pkt.slot, now)
	if pkt.trunc {
		t.drop(dropTooLarge)
		return
	}
	f := &t.flows[pkt.slot]
	if _, err := p.pc.WriteToUDPAddrPort(pkt.data, f.key.addrPort()); err != nil {
		t.dropFor(err)
		return
	}
	t.count(f.be, false, 1, len(pkt.data))
}

// readClients reads the route's socket until it is closed.
func (p *udpPump) readClients() {
	buf := make([]byte, udpSlotSize)
	for {
		n, from, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !p.hand(udpPacket{slot: -1, from: from, data: bytes.Clone(buf[:n]), trunc: n == len(buf)}) {
			return
		}
	}
}

// readFlow reads a flow's socket until it is closed.
func (p *udpPump) readFlow(c *net.UDPConn, slot int32, gen uint32) {
	buf := make([]byte, udpSlotSize)
	for {
		n, err := c.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		pkt := udpPacket{slot: slot, gen: gen, err: err}
		if err == nil {
			pkt.data, pkt.trunc = bytes.Clone(buf[:n]), n == len(buf)
		}
		if !p.hand(pkt) {
			return
		}
	}
}

// hand gives pkt to run, unless the pump is stopping.
func (p *udpPump) hand(pkt udpPacket) bool {
	select {
	case p.in <- pkt:
		return true
	case <-p.stopping:
		return false
	}
}

// open dials a flow's socket and starts its reader.
func (p *udpPump) open(addr netip.AddrPort, slot int32, gen uint32) (udpSock, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return udpSock{fd: -1}, err
	}
	p.readers.Go(func() { p.readFlow(c, slot, gen) })
	return udpSock{fd: -1, conn: c}, nil
}

func (p *udpPump) close(s udpSock) {
	if s.conn != nil {
		s.conn.Close()
	}
}
