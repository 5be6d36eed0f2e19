package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// TestUDPPack: the datagrams to one destination become messages of one
// segment size, ended by a shorter one, within the kernel's limits; never
// an empty segment, nor one larger than allowed.
func TestUDPPack(t *testing.T) {
	type msg struct{ first, count, bytes, seg int } // seg 0: not segmented
	singles := func(sizes ...int) []msg {
		var out []msg
		for i, n := range sizes {
			out = append(out, msg{i, 1, n, 0})
		}
		return out
	}
	for _, tt := range []struct {
		name  string
		sizes []int
		max   int
		want  []msg
	}{
		{"no segmentation", []int{64, 64, 64}, 0, singles(64, 64, 64)},
		{"one size", []int{64, 64, 64}, udpGSOMaxSize, []msg{{0, 3, 192, 64}}},
		{"a shorter one ends them", []int{64, 64, 10, 64}, udpGSOMaxSize, []msg{{0, 3, 138, 64}, {3, 1, 64, 0}}},
		{"a longer one starts anew", []int{10, 64, 64}, udpGSOMaxSize, []msg{{0, 1, 10, 0}, {1, 2, 128, 64}}},
		{"empty datagrams alone", []int{0, 0, 64, 0, 64}, udpGSOMaxSize, singles(0, 0, 64, 0, 64)},
		{"larger than allowed alone", []int{1500, 1500, 1452, 1452}, udpGSOMaxSize, []msg{{0, 1, 1500, 0}, {1, 1, 1500, 0}, {2, 2, 2904, 1452}}},
		{"a lowered cap", []int{100, 100, 99, 99}, 99, []msg{{0, 1, 100, 0}, {1, 1, 100, 0}, {2, 2, 198, 99}}},
		{"segments at most", slices.Repeat([]int{8}, udpGSOMaxSegments+3), udpGSOMaxSize, []msg{
			{0, udpGSOMaxSegments, 8 * udpGSOMaxSegments, 8}, {udpGSOMaxSegments, 3, 24, 8}}},
		{"bytes at most", slices.Repeat([]int{1400}, 48), udpGSOMaxSize, []msg{
			{0, udpGSOMaxBytes / 1400, udpGSOMaxBytes / 1400 * 1400, 1400},
			{udpGSOMaxBytes / 1400, 48 - udpGSOMaxBytes/1400, (48 - udpGSOMaxBytes/1400) * 1400, 1400}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newUDPBatch(make([]byte, 128*2048), 2048, true, false)
			for i, n := range tt.sizes {
				b.recv[i].n = uint32(n)
			}
			msgs := b.pack(0, 0, len(tt.sizes), tt.max)
			var got []msg
			for h := range msgs {
				m := &b.send[h].hdr
				require.Equal(t, uint64(b.count[h]), uint64(m.Iovlen), "message %d's vectors", h)
				require.Equal(t, unsafe.Pointer(&b.out[b.first[h]]), unsafe.Pointer(m.Iov), "message %d's first vector", h)
				seg := 0
				if m.Control != nil {
					c := unsafe.Slice(m.Control, m.Controllen)
					cm := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
					require.Equal(t, [2]int32{unix.SOL_UDP, unix.UDP_SEGMENT}, [2]int32{cm.Level, cm.Type})
					seg = int(*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])))
				}
				got = append(got, msg{b.first[h], b.count[h], b.size[h], seg})
				for k := b.first[h]; k < b.first[h]+b.count[h]; k++ {
					assert.Equal(t, uint64(tt.sizes[k]), uint64(b.out[k].Len), "slot %d's vector", k)
				}
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestGSOAfter: a refusal for the MTU lowers the size segmented below the
// refused one; EIO ends segmenting.
func TestGSOAfter(t *testing.T) {
	assert.Equal(t, 1299, gsoAfter(syscall.EINVAL, 1300, udpGSOMaxSize))
	assert.Equal(t, 1299, gsoAfter(syscall.EMSGSIZE, 1300, udpGSOMaxSize))
	assert.Equal(t, 999, gsoAfter(syscall.EINVAL, 1300, 999), "never higher")
	assert.Equal(t, 0, gsoAfter(syscall.EIO, 64, udpGSOMaxSize))
}

// TestUDPSegmentsKeepDatagrams: bursts of datagrams of one size, with
// shorter, empty and larger ones among them, reach the backend and come
// back one by one, whole and in order, on both paths; and the replies of a
// backend answering one datagram with many too.
func TestUDPSegmentsKeepDatagrams(t *testing.T) {
	burst := udpTestBurst()
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		var mu sync.Mutex
		got := make(map[string][][]byte) // by the client's tag
		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", func(d []byte) []byte {
			mu.Lock()
			got[string(d[:min(len(d), 1)])] = append(got[string(d[:min(len(d), 1)])], bytes.Clone(d))
			mu.Unlock()
			return d
		})}})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		// One client's burst at a time, read as it comes back: the
		// bursts of several at once would overflow the sockets' default
		// buffers of a slowed-down (-race) run.
		const clients = 3
		for i := range clients {
			c := udpDial(t, addr)
			tag := byte('a' + i)
			want := udpTagged(burst, tag)
			var wg sync.WaitGroup
			wg.Go(func() {
				// The empty datagram has no tag: it comes back as
				// sent, from the backend's empty answer.
				assert.Equal(t, want, udpReadN(t, c, len(want)), "client %c's replies", tag)
			})
			for _, d := range want {
				_, err := c.Write(d)
				require.NoError(t, err)
			}
			wg.Wait()
		}
		mu.Lock()
		defer mu.Unlock()
		for i := range clients {
			tag := byte('a' + i)
			var want [][]byte
			for _, d := range udpTagged(burst, tag) {
				if len(d) > 0 {
					want = append(want, d)
				}
			}
			assert.Equal(t, want, got[string(tag)], "client %c's datagrams at the backend", tag)
		}
		assert.Empty(t, recorderOf(r).counts().dropped)
	})
}

// udpTestBurst is the sizes of TestUDPSegmentsKeepDatagrams' bursts.
func udpTestBurst() []int {
	return slices.Concat(slices.Repeat([]int{100}, 10), []int{40}, []int{0}, slices.Repeat([]int{700}, 3),
		[]int{1500, 1500}, slices.Repeat([]int{1452}, 3), []int{1}, slices.Repeat([]int{9}, 70))
}

// udpTagged returns datagrams of sizes, each starting with tag and
// filled with its index, so that any two differ.
func udpTagged(sizes []int, tag byte) [][]byte {
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		d := bytes.Repeat([]byte{byte(i)}, n)
		if n > 0 {
			d[0] = tag
		}
		out[i] = d
	}
	return out
}

// udpReadN reads n datagrams from c, within 5 s.
func udpReadN(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	var out [][]byte
	buf := make([]byte, udpSlotSize)
	for len(out) < n {
		k, err := c.Read(buf)
		if !assert.NoError(t, err, "after %d of %d datagrams", len(out), n) {
			break
		}
		out = append(out, bytes.Clone(buf[:k]))
	}
	return out
}

// groSocket is a UDP socket on 127.0.0.1 that asked for UDP_GRO: it gets
// the datagrams of a segmented message together, with their size.
type groSocket struct{ fd int }

func newGROSocket(t *testing.T) (*groSocket, netip.AddrPort) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1))
	require.NoError(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}))
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	return &groSocket{fd}, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
}

// read returns what one read got, its segment size (0: one datagram), and
// the sender.
func (g *groSocket) read(t *testing.T) (d []byte, seg int, from unix.Sockaddr) {
	t.Helper()
	buf := make([]byte, udpSlotSize)
	oob := make([]byte, 64)
	n, oobn, _, from, err := unix.Recvmsg(g.fd, buf, oob, 0)
	require.NoError(t, err)
	cms, err := unix.ParseSocketControlMessage(oob[:oobn])
	require.NoError(t, err)
	for _, cm := range cms {
		if cm.Header.Level == unix.SOL_UDP && cm.Header.Type == unix.UDP_GRO {
			seg = int(*(*int32)(unsafe.Pointer(&cm.Data[0])))
		}
	}
	return buf[:n], seg, from
}

// TestUDPSegmentsSent drives an event loop by hand, so that a client's
// burst and its backend's are each read in one batch: each leaves as one
// segmented message, which sockets that asked for UDP_GRO get whole, with
// the segment size. Sockets that did not get the datagrams one by one
// (TestUDPSegmentsKeepDatagrams).
func TestUDPSegmentsSent(t *testing.T) {
	if !gsoSupported(udpTestSocket(t)) {
		t.Skip("this kernel has no UDP segmentation offload (Linux 4.18)")
	}
	backend, baddr := newGROSocket(t)
	rec := &udpRecorder{}
	r := &UDPRoute{Observer: rec, Logger: zap.NewNop()}
	r.SetBackends([]Backend{{Addr: baddr.String()}})
	l, tbl := startUDPLoopByHand(t, r)
	client, _ := newGROSocket(t)
	to := &unix.SockaddrInet4{Port: l.port(t), Addr: [4]byte{127, 0, 0, 1}}

	burst := udpTagged(append(slices.Repeat([]int{100}, 5), 30), 'c')
	for _, d := range burst {
		require.NoError(t, unix.Sendto(client.fd, d, 0, to))
	}
	waitPoll(t, l.lfd, unix.POLLIN)
	l.readClients(tbl.now())
	tbl.flush()
	require.Equal(t, len(burst), rec.counts().up, "datagrams sent up")
	d, seg, from := backend.read(t)
	assert.Equal(t, 100, seg, "segment size at the backend")
	assert.Equal(t, bytes.Join(burst, nil), d, "the burst, together")

	// The backend answers with a burst of its own, to the flow's port.
	replies := udpTagged(slices.Repeat([]int{64}, 8), 'r')
	for _, d := range replies {
		require.NoError(t, unix.Sendto(backend.fd, d, 0, from))
	}
	require.Equal(t, 1, tbl.n)
	fd := int(tbl.flows[0].sock.fd)
	waitPoll(t, fd, unix.POLLIN)
	l.readFlow(0, tbl.now())
	l.sendReplies()
	tbl.flush()
	require.Equal(t, len(replies), rec.counts().down, "datagrams sent down")
	d, seg, _ = client.read(t)
	assert.Equal(t, 64, seg, "segment size at the client")
	assert.Equal(t, bytes.Join(replies, nil), d, "the replies, together")
	assert.Empty(t, rec.counts().dropped)
}

// udpTestSocket returns a UDP socket, closed at the end of the test.
func udpTestSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// udpNetnsEnv marks TestUDPSegmentsRefused's run in a network namespace
// of its own.
const udpNetnsEnv = "AMBASSADORD_TEST_UDP_NETNS"

// TestUDPSegmentsRefused: on a path whose MTU a segment does not fit (the
// loopback's, lowered to 1280 in a network namespace of the test's own),
// the kernel refuses the segmented message; its datagrams go one by one
// (fragmented, as any datagram larger than the MTU), none lost, both
// ways, and the loop sends no larger segments afterwards, while smaller
// ones still go together.
func TestUDPSegmentsRefused(t *testing.T) {
	if os.Getenv(udpNetnsEnv) == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root, for a network namespace of its own")
		}
		if _, err := exec.LookPath("ip"); err != nil {
			t.Skip("needs ip (iproute2), to lower the loopback's MTU")
		}
		cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run", "^TestUDPSegmentsRefused$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), udpNetnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "in a network namespace of its own:\n%s", out)
		require.Contains(t, string(out), "--- PASS: TestUDPSegmentsRefused", "in a network namespace of its own:\n%s", out)
		return
	}
	out, err := exec.Command("ip", "link", "set", "lo", "mtu", "1280", "up").CombinedOutput()
	require.NoError(t, err, "%s", out)
	if !gsoSupported(udpTestSocket(t)) {
		t.Skip("this kernel has no UDP segmentation offload (Linux 4.18)")
	}
	const size = 1300 // 28 bytes of headers more do not fit 1280
	rec := &udpRecorder{}
	r := &UDPRoute{Observer: rec, Logger: zap.NewNop()}
	backend, baddr := newGROSocket(t)
	r.SetBackends([]Backend{{Addr: baddr.String()}})
	l, tbl := startUDPLoopByHand(t, r)
	client, _ := newGROSocket(t)
	to := &unix.SockaddrInet4{Port: l.port(t), Addr: [4]byte{127, 0, 0, 1}}
	for _, tt := range []struct {
		size      int
		segmented bool
	}{{size, false}, {size, false}, {1000, true}} {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			burst := udpTagged(slices.Repeat([]int{tt.size}, 4), 'c')
			up, down := rec.counts().up, rec.counts().down
			for _, d := range burst {
				require.NoError(t, unix.Sendto(client.fd, d, 0, to))
			}
			waitPoll(t, l.lfd, unix.POLLIN)
			l.readClients(tbl.now())
			tbl.flush()
			require.Equal(t, up+len(burst), rec.counts().up, "datagrams sent up")
			from := udpReadBurst(t, backend, burst, tt.segmented)
			for _, d := range burst {
				require.NoError(t, unix.Sendto(backend.fd, d, 0, from))
			}
			waitFor(t, func() bool {
				l.readFlow(0, tbl.now())
				l.sendReplies()
				tbl.flush()
				return rec.counts().down == down+len(burst)
			})
			udpReadBurst(t, client, burst, tt.segmented)
			assert.Empty(t, rec.counts().dropped)
		})
	}
	assert.Less(t, l.gsoUp, size, "segment size allowed up")
	assert.Less(t, l.gsoDown, size, "segment size allowed down")
}

// udpReadBurst reads burst from g, together if segmented, else one by
// one, and returns its sender.
func udpReadBurst(t *testing.T, g *groSocket, burst [][]byte, segmented bool) unix.Sockaddr {
	t.Helper()
	var got []byte
	var from unix.Sockaddr
	for len(got) < len(bytes.Join(burst, nil)) {
		d, seg, sa := g.read(t)
		want := 0
		if segmented {
			want = len(burst[0])
		}
		assert.Equal(t, want, seg, "segment size, %d bytes read", len(d))
		got = append(got, d...)
		from = sa
	}
	assert.Equal(t, bytes.Join(burst, nil), got)
	return from
}
