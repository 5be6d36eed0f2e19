package proxy

import (
	"flag"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// udpFlows is how many flows TestUDPManyFlows holds: 50,000 takes a wider
// ephemeral port range than the default (udp.go), in a network namespace
// of its own for instance:
//
//	go test -c ./pkg/proxy && unshare -n sh -c 'ip link set lo up &&
//	  echo "10000 65535" >/proc/sys/net/ipv4/ip_local_port_range &&
//	  ./proxy.test -test.run TestUDPManyFlows -udp.flows 50000 -test.v'
var udpFlows = flag.Int("udp.flows", 2000, "flows TestUDPManyFlows holds")

// TestUDPBatchTruncated: a datagram larger than its slot is reported cut
// (MSG_TRUNC), never passed on as if whole.
func TestUDPBatchTruncated(t *testing.T) {
	const slot = 16
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer pc.Close()
	fd, ok := dupFD(pc)
	require.True(t, ok)
	defer unix.Close(fd)
	c := udpDial(t, pc.LocalAddr().String())
	udpSend(t, c, "fits")
	udpSend(t, c, "does not fit in sixteen bytes")
	udpSend(t, c, strings.Repeat("x", slot))

	b := newUDPBatch(make([]byte, 4*slot), slot, true, false)
	got := 0
	waitFor(t, func() bool {
		n, err := b.receive(fd, got, len(b.recv))
		if err == nil {
			got += n
		}
		return got == 3
	})
	for i, want := range []struct {
		d     string
		whole bool
	}{{"fits", true}, {"does not fit in", false}, {strings.Repeat("x", slot), true}} {
		d, whole := b.datagram(i)
		assert.Equal(t, want.whole, whole, "datagram %d", i)
		if want.whole {
			assert.Equal(t, want.d, string(d), "datagram %d", i)
		}
		assert.Equal(t, c.LocalAddr().(*net.UDPAddr).AddrPort(), func() udpKey {
			l := &udpLoop{up: b}
			return l.clientOf(i)
		}().addrPort(), "sender of datagram %d", i)
	}
}

// TestListenUDPReadBuffer: a route's socket asks for udpReadBuffer, which
// the kernel grants up to net.core.rmem_max (and reports doubled, its
// bookkeeping included).
func TestListenUDPReadBuffer(t *testing.T) {
	data, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	require.NoError(t, err)
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	uc, err := ListenUDP(t.Context(), "127.0.0.1:0")
	require.NoError(t, err)
	defer uc.Close()
	fd, ok := dupFD(uc)
	require.True(t, ok)
	defer unix.Close(fd)
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	require.NoError(t, err)
	assert.Equal(t, 2*min(udpReadBuffer, rmemMax), got)
}

// TestUDPClientAddresses: a client's address read from a sockaddr is
// written back as the route's socket's family has it.
func TestUDPClientAddresses(t *testing.T) {
	for _, tt := range []struct {
		family int
		addr   string
	}{
		{unix.AF_INET, "192.0.2.1:53"},
		{unix.AF_INET6, "[2001:db8::1]:65535"},
		{unix.AF_INET6, "[::ffff:192.0.2.1]:1"},
		{unix.AF_INET6, "[fe80::1%7]:5353"},
	} {
		k := keyOf(netipMustParseAddrPort(t, tt.addr))
		l := &udpLoop{family: tt.family, up: newUDPBatch(make([]byte, 16), 16, true, false)}
		n := l.putClient(&l.up.names[0], k)
		assert.Equal(t, map[int]uint32{unix.AF_INET: unix.SizeofSockaddrInet4, unix.AF_INET6: unix.SizeofSockaddrInet6}[tt.family], n)
		assert.Equal(t, k, l.clientOf(0), tt.addr)
	}
}

// TestUDPGroup: a batch's datagrams are ordered by client, each client's
// in the order it sent them, the clients in the order of their first;
// each slot moves whole, its buffer with its header.
func TestUDPGroup(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"a", "a"},
		{"abc", "abc"},
		{"aaab", "aaab"},
		{"abab", "aabb"},
		{"axaxyaxy", "aaaxxxyy"},
		{"abcdeedcba", "aabbccddee"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			b := newUDPBatch(make([]byte, 64*8), 8, true, false)
			keys := make([]udpKey, len(tt.in))
			seen := map[byte]int{}
			for i := range tt.in {
				keys[i].port = uint16(tt.in[i])
				// The datagram: its client and its rank among the
				// client's, in its slot's buffer and length.
				b.bufs[i][0], b.bufs[i][1] = tt.in[i], byte('0'+seen[tt.in[i]])
				b.recv[i].n = 2
				seen[tt.in[i]]++
			}
			b.group(keys)
			var got, order []byte
			for i := range keys {
				d, _ := b.datagram(i)
				require.Equal(t, d[0], byte(keys[i].port), "slot %d's key moved with it", i)
				require.Equal(t, unsafe.Pointer(&b.bufs[i][0]), unsafe.Pointer(b.recv[i].hdr.Iov.Base), "slot %d's header points at its buffer", i)
				got = append(got, d[0])
				order = append(order, d...)
			}
			assert.Equal(t, tt.want, string(got))
			// Each client's datagrams in the order it sent them.
			for c, n := range seen {
				var ranks []byte
				for i := 0; i < len(order); i += 2 {
					if order[i] == c {
						ranks = append(ranks, order[i+1])
					}
				}
				assert.Equal(t, "0123456789"[:n], string(ranks), "client %c", c)
			}
		})
	}
}

// BenchmarkUDPGroup: a batch of 64 datagrams from 64 clients (nothing to
// move), and from 16 clients sending 4 each, interleaved (all moved).
func BenchmarkUDPGroup(b *testing.B) {
	for _, clients := range []int{udpBatchSize, 16} {
		b.Run(strconv.Itoa(clients)+" clients", func(b *testing.B) {
			batch := newUDPBatch(make([]byte, udpBatchSize*8), 8, true, false)
			sent := make([]udpKey, udpBatchSize)
			for i := range sent {
				sent[i] = keyOf(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i%clients+1)))
			}
			keys := make([]udpKey, udpBatchSize)
			for b.Loop() {
				copy(keys, sent)
				batch.group(keys)
			}
		})
	}
}

// TestUDPCloseReleasesSockets: Close closes the route's socket and every
// flow's.
func TestUDPCloseReleasesSockets(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		const clients = 50
		r.Logger = zap.NewNop()
		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", udpEcho)}})
		var cs []*net.UDPConn
		for range clients {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			cs = append(cs, c)
		}
		before := openSockets(t)
		pc, err := ListenUDP(t.Context(), "127.0.0.1:0")
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- r.Serve(pc) }()
		for i, c := range cs {
			msg := strconv.Itoa(i)
			_, err := c.WriteTo([]byte(msg), pc.LocalAddr())
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			buf := make([]byte, 16)
			n, _, err := c.ReadFrom(buf)
			require.NoError(t, err)
			require.Equal(t, msg, string(buf[:n]))
		}
		assert.Equal(t, clients, r.Flows())
		// The sockets opened since: the route's and its flows'. Counting
		// descriptors instead would miss a leak when a socket of an
		// earlier test of the package closes meanwhile.
		opened := openSockets(t)
		for s := range before {
			delete(opened, s)
		}
		assert.GreaterOrEqual(t, len(opened), clients+1)
		require.NoError(t, r.Close())
		require.NoError(t, <-done)
		assert.Equal(t, 0, r.Flows())
		after := openSockets(t)
		for s := range opened {
			assert.NotContains(t, after, s, "a socket of the route still open")
		}
		assert.Equal(t, map[string]int{FlowClosed: clients}, recorderOf(r).counts().closed)
	})
}

// TestUDPManyFlows holds -udp.flows flows (2,000 by default), and measures
// the memory of an idle flow: at most 2 KiB besides its socket on the
// event loop, which holds no goroutine and no buffer per flow.
func TestUDPManyFlows(t *testing.T) {
	n := *udpFlows
	raiseFDLimit(t, 2*n+1000)
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		r.Logger = zap.NewNop()
		r.MaxFlows = n
		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", udpEcho)}})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		clients := udpClients(t, n)

		heap, rss, slab, goroutines := heapInUse(), procKB(t, "/proc/self/status", "VmRSS"), procKB(t, "/proc/meminfo", "Slab"),
			runtime.NumGoroutine()
		var wg sync.WaitGroup
		const workers = 8
		for w := range workers {
			wg.Go(func() {
				buf := make([]byte, 64)
				to := sockaddrOf(t, addr) // a Sockaddr is not for concurrent use
				for i := w; i < n; i += workers {
					msg := []byte(strconv.Itoa(i))
					if err := unix.Sendto(clients[i], msg, 0, to); err != nil {
						t.Errorf("client %d: %v", i, err)
						return
					}
					m, _, err := unix.Recvfrom(clients[i], buf, 0)
					if err != nil || string(buf[:m]) != string(msg) {
						t.Errorf("client %d: got %q, %v", i, buf[:max(m, 0)], err)
						return
					}
				}
			})
		}
		wg.Wait()
		require.Equal(t, n, r.Flows())
		perFlow := float64(heapInUse()-heap) / float64(n)
		perFlowOf := func(before int64, file, field string) float64 {
			return float64(procKB(t, file, field)-before) / float64(n)
		}
		t.Logf("%d flows: Go heap %.0f B a flow, RSS %.0f B a flow, %d goroutines more; "+
			"the kernel's slab (sockets, epoll, the system's other users) %.0f B a flow", n, perFlow,
			perFlowOf(rss, "/proc/self/status", "VmRSS"), runtime.NumGoroutine()-goroutines,
			perFlowOf(slab, "/proc/meminfo", "Slab"))
		if !r.noLoop {
			assert.LessOrEqual(t, perFlow, 2048.0, "Go heap a flow")
			assert.LessOrEqual(t, runtime.NumGoroutine()-goroutines, 0, "goroutines for the flows")
		}
	})
}

// udpClients opens n client sockets on loopback, blocking, with a 5 s
// receive timeout, closed at the end of the test. They are bound to ports
// below the ephemeral range, on 127.0.0.2 and up, so that the route's
// flows have the whole range.
func udpClients(t *testing.T, n int) []int {
	t.Helper()
	fds := make([]int, 0, n)
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	for ip, port := 2, 1024; len(fds) < n; port++ {
		if port == 10000 {
			ip, port = ip+1, 1024
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, byte(ip)}}); err != nil {
			unix.Close(fd)
			require.ErrorIs(t, err, unix.EADDRINUSE)
			continue
		}
		require.NoError(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
		fds = append(fds, fd)
	}
	return fds
}

// raiseFDLimit raises the process's soft limit on descriptors to n if it
// is lower, and the hard one if it may; it skips the test if it cannot.
func raiseFDLimit(t *testing.T, n int) {
	t.Helper()
	var lim unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &lim))
	if lim.Cur >= uint64(n) {
		return
	}
	old := lim
	lim.Cur = uint64(n)
	lim.Max = max(lim.Max, lim.Cur)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("%d descriptors needed, %d allowed: %v", n, old.Cur, err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
}

func sockaddrOf(t *testing.T, addr string) unix.Sockaddr {
	t.Helper()
	ap := netipMustParseAddrPort(t, addr)
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// heapInUse returns the bytes of Go's heap in use, after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// procKB returns field of a /proc file that counts kB (VmRSS of
// /proc/self/status, Slab of /proc/meminfo), in bytes.
func procKB(t *testing.T, file, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatalf("no %s in %s", field, file)
	return 0
}

func TestMmsghdrLayout(t *testing.T) {
	// struct mmsghdr: the header, then a 32-bit length, padded to the
	// header's alignment.
	want := unix.SizeofMsghdr + 4
	if a := int(unsafe.Alignof(unix.Msghdr{})); want%a != 0 {
		want += a - want%a
	}
	assert.Equal(t, want, int(unsafe.Sizeof(mmsghdr{})))
	assert.Equal(t, unix.SizeofMsghdr, int(unsafe.Offsetof(mmsghdr{}.n)))
}

func netipMustParseAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	require.NoError(t, err)
	return ap
}

// TestUDPUnreachableAtSend drives an event loop by hand, so that a flow's
// socket holds its backend's ICMP error when the client's next datagram is
// sent to it: the send fails, and the datagram goes again, after the flow
// moved, or on the same socket if it has nowhere to go.
func TestUDPUnreachableAtSend(t *testing.T) {
	for _, tt := range []struct {
		name  string
		live  bool
		moved int
	}{
		{"moves", true, 1},
		{"nowhere to go", false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &udpRecorder{}
			r := &UDPRoute{Observer: rec, Logger: zap.NewNop()}
			dead := Backend{Addr: udpDeadAddr(t)}
			received := make(chan string, 10)
			live := Backend{Addr: udpServer(t, "127.0.0.1:0", func(d []byte) []byte {
				received <- string(d)
				return nil
			})}
			set := []Backend{dead}
			if tt.live {
				set = append(set, live)
			}
			r.SetBackends(set)
			l, tbl := startUDPLoopByHand(t, r)
			c := udpDial(t, "127.0.0.1:"+strconv.Itoa(l.port(t)))
			send := func(msg string) {
				t.Helper()
				udpSend(t, c, msg)
				waitPoll(t, l.lfd, unix.POLLIN)
				l.readClients(tbl.now())
				tbl.flush()
			}

			send("1") // to dead, first in the rotation
			require.Equal(t, 1, tbl.n)
			waitPoll(t, int(tbl.flows[0].sock.fd), unix.POLLERR) // its ICMP error, not read
			send("2")
			counts := rec.counts()
			assert.Equal(t, map[string]int{dead.Addr: 1}, counts.unreachable)
			assert.Equal(t, tt.moved, counts.closed[FlowMoved])
			assert.Equal(t, 2, counts.up)
			assert.Empty(t, counts.dropped)
			if tt.live {
				assert.Equal(t, "2", <-received)
			} else {
				// Sent to dead again: a new ICMP error.
				waitPoll(t, int(tbl.flows[0].sock.fd), unix.POLLERR)
			}
		})
	}
}

// startUDPLoopByHand makes r's event loop on a socket on 127.0.0.1 without
// running it, for a test to drive, and releases it at the end of the test.
func startUDPLoopByHand(t *testing.T, r *UDPRoute) (*udpLoop, *flowTable) {
	t.Helper()
	pc, err := ListenUDP(t.Context(), "127.0.0.1:0")
	require.NoError(t, err)
	tbl := newFlowTable(r)
	o, err := r.startLoop(pc, tbl)
	require.NoError(t, err)
	l := o.(*udpLoop)
	t.Cleanup(func() {
		tbl.closeAll()
		l.release()
	})
	return l, tbl
}

// port returns the loop's socket's port.
func (l *udpLoop) port(t *testing.T) int {
	t.Helper()
	sa, err := unix.Getsockname(l.lfd)
	require.NoError(t, err)
	return sa.(*unix.SockaddrInet4).Port
}

// waitPoll waits until fd has one of events.
func waitPoll(t *testing.T, fd int, events int16) {
	t.Helper()
	waitFor(t, func() bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n == 1 && fds[0].Revents&events != 0
	})
}

// openSockets returns the sockets the process has open, by inode
// ("socket:[12345]", as /proc/self/fd links say).
func openSockets(t *testing.T) map[string]bool {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	out := make(map[string]bool, len(es))
	for _, e := range es {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			out[target] = true
		}
	}
	return out
}
