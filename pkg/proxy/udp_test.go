package proxy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// udpPaths are the ways a UDP route is served (udp.go), for tests to run
// on each: its event loop, and the goroutine path (noLoop). Elsewhere than
// on Linux both are the goroutine path.
var udpPaths = []struct {
	name   string
	noLoop bool
}{{"loop", false}, {"goroutines", true}}

// forUDPPaths runs test on each of udpPaths.
func forUDPPaths(t *testing.T, test func(t *testing.T, r *UDPRoute)) {
	t.Helper()
	for _, p := range udpPaths {
		t.Run(p.name, func(t *testing.T) {
			rec := &udpRecorder{}
			test(t, &UDPRoute{noLoop: p.noLoop, Observer: rec})
		})
	}
}

// udpServer answers every datagram on a UDP socket on addr with reply's
// answer to it (none if nil), until the test ends, and returns the
// socket's address.
func udpServer(t testing.TB, addr string, reply func([]byte) []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, udpSlotSize)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // an ICMP error of an earlier reply
			}
			if a := reply(buf[:n]); a != nil {
				pc.WriteTo(a, from)
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

// udpEcho sends every datagram back.
func udpEcho(d []byte) []byte { return d }

// udpNamed answers with name, a colon, and the datagram.
func udpNamed(name string) func([]byte) []byte {
	return func(d []byte) []byte { return append([]byte(name+":"), d...) }
}

// startUDPRoute serves r on a UDP socket on addr and returns the socket's
// address; Close at the end of the test must make Serve return nil.
func startUDPRoute(t testing.TB, r *UDPRoute, addr string) string {
	t.Helper()
	if r.Logger == nil {
		r.Logger = zaptest.NewLogger(t)
	}
	pc, err := ListenUDP(context.Background(), addr)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Serve(pc) }()
	t.Cleanup(func() {
		require.NoError(t, r.Close())
		require.NoError(t, <-done)
	})
	return pc.LocalAddr().String()
}

// udpDial returns a client socket sending to addr, closed at the end of
// the test.
func udpDial(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// udpExchange sends msg on c and returns the datagram that comes back,
// within 5 s.
func udpExchange(t testing.TB, c *net.UDPConn, msg string) string {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	return udpRead(t, c)
}

func udpRead(t testing.TB, c *net.UDPConn) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, udpSlotSize)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

// udpSend sends msg on c, expecting no answer.
func udpSend(t testing.TB, c *net.UDPConn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
}

// udpRecorder is a UDPObserver that counts every event.
type udpRecorder struct {
	mu sync.Mutex
	// The fields below are guarded by mu.
	c udpCounts
}

// udpCounts are a udpRecorder's counts: flows opened and unreachable
// errors by backend address, flows closed and drops by reason, and
// datagrams and bytes each way.
type udpCounts struct {
	opened, unreachable map[string]int
	closed, dropped     map[string]int
	up, down            int
	upBytes, downBytes  int
}

func (r *udpRecorder) add(m *map[string]int, key string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if *m == nil {
		*m = make(map[string]int)
	}
	(*m)[key] += n
}

func (r *udpRecorder) FlowOpened(b Backend)                { r.add(&r.c.opened, b.Addr, 1) }
func (r *udpRecorder) FlowClosed(b Backend, reason string) { r.add(&r.c.closed, reason, 1) }
func (r *udpRecorder) Dropped(reason string, n int)        { r.add(&r.c.dropped, reason, n) }
func (r *udpRecorder) Unreachable(b Backend)               { r.add(&r.c.unreachable, b.Addr, 1) }

func (r *udpRecorder) Datagrams(b Backend, direction string, n, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if direction == DirectionUp {
		r.c.up += n
		r.c.upBytes += bytes
	} else {
		r.c.down += n
		r.c.downBytes += bytes
	}
}

// counts returns a copy of the counts.
func (r *udpRecorder) counts() udpCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.c
	c.opened, c.unreachable = maps.Clone(c.opened), maps.Clone(c.unreachable)
	c.closed, c.dropped = maps.Clone(c.closed), maps.Clone(c.dropped)
	return c
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func recorderOf(r *UDPRoute) *udpRecorder { return r.Observer.(*udpRecorder) }

// waitCounts waits until cond holds of r's counts.
func waitCounts(t *testing.T, r *UDPRoute, cond func(c udpCounts) bool) {
	t.Helper()
	waitFor(t, func() bool { return cond(recorderOf(r).counts()) })
}

func TestUDPForward(t *testing.T) {
	const clients, each = 40, 10
	for _, tt := range []struct {
		name, listen, client string // client: the host clients send to
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "::1"},
		{"dual-stack, ipv4 client", "[::]:0", "127.0.0.1"},
		{"dual-stack, ipv6 client", "[::]:0", "::1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
				backend := udpServer(t, "127.0.0.1:0", udpEcho)
				r.SetBackends([]Backend{{Addr: backend}})
				_, port, err := net.SplitHostPort(startUDPRoute(t, r, tt.listen))
				require.NoError(t, err)
				addr := net.JoinHostPort(tt.client, port)

				var wg sync.WaitGroup
				for i := range clients {
					c := udpDial(t, addr)
					wg.Go(func() {
						for j := range each {
							msg := fmt.Sprintf("client %d datagram %d", i, j)
							// Each client gets its own answers, never another's.
							if got := udpExchange(t, c, msg); got != msg {
								t.Errorf("client %d: got %q, want %q", i, got, msg)
								return
							}
						}
					})
				}
				wg.Wait()
				assert.Equal(t, clients, r.Flows())
				waitCounts(t, r, func(c udpCounts) bool { return c.down == clients*each })
				c := recorderOf(r).counts()
				assert.Equal(t, map[string]int{backend: clients}, c.opened)
				assert.Equal(t, clients*each, c.up)
				assert.Equal(t, c.upBytes, c.downBytes)
				assert.Empty(t, c.dropped)
			})
		})
	}
}

// TestUDPLargeDatagrams: the largest datagrams pass intact both ways, and
// one too large for the other side is dropped and counted, either way.
func TestUDPLargeDatagrams(t *testing.T) {
	const max4, max6 = 65507, 65527 // the largest UDP payloads over IPv4, IPv6
	for _, tt := range []struct {
		name            string
		listen, backend string
		size            int
		reply           int // the size of the backend's reply; 0: an echo
		dropped         map[string]int
	}{
		{name: "ipv4", listen: "127.0.0.1:0", backend: "127.0.0.1:0", size: max4},
		{name: "ipv6", listen: "[::1]:0", backend: "[::1]:0", size: max6},
		{name: "ipv6 client, ipv4 backend", listen: "[::1]:0", backend: "127.0.0.1:0", size: max6,
			dropped: map[string]int{DropTooLarge: 1}},
		{name: "ipv4 client, ipv6 backend", listen: "127.0.0.1:0", backend: "[::1]:0", size: 10, reply: max6,
			dropped: map[string]int{DropTooLarge: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
				reply := udpEcho
				if tt.reply > 0 {
					reply = func([]byte) []byte { return randomBytes(tt.reply, 2) }
				}
				r.SetBackends([]Backend{{Addr: udpServer(t, tt.backend, reply)}})
				c := udpDial(t, startUDPRoute(t, r, tt.listen))
				msg := string(randomBytes(tt.size, 1))
				if tt.dropped == nil {
					assert.True(t, udpExchange(t, c, msg) == msg, "the datagram came back altered")
					return
				}
				udpSend(t, c, msg)
				waitCounts(t, r, func(c udpCounts) bool { return sum(c.dropped) > 0 })
				assert.Equal(t, tt.dropped, recorderOf(r).counts().dropped)
			})
		})
	}
}

// TestUDPBurst: fire-and-forget datagrams (syslog, statsd) from several
// clients at once reach the backend every one, each client's in order.
func TestUDPBurst(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		const clients, each = 4, 50
		var mu sync.Mutex
		got := make(map[string][]string) // by client
		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", func(d []byte) []byte {
			client, msg, _ := strings.Cut(string(d), " ")
			mu.Lock()
			defer mu.Unlock()
			got[client] = append(got[client], msg)
			return nil
		})}})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		var cs []*net.UDPConn
		for range clients {
			cs = append(cs, udpDial(t, addr))
		}
		// Each client's burst in a row, for the loop to send together
		// (sendRun), then the clients interleaved.
		want := make(map[string][]string)
		for j := range 2 * each {
			for i, c := range cs {
				if j < each && i > 0 || j >= each && i == 0 {
					continue
				}
				msg := fmt.Sprintf("%d %d", i, j)
				udpSend(t, c, msg)
				want[strconv.Itoa(i)] = append(want[strconv.Itoa(i)], strconv.Itoa(j))
			}
		}
		waitCounts(t, r, func(c udpCounts) bool { return c.up == clients*each })
		waitFor(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, msgs := range got {
				n += len(msgs)
			}
			return n == clients*each
		})
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, want, got)
		assert.Empty(t, recorderOf(r).counts().dropped)
	})
}

// TestUDPIdleExpiry: flows expire after IdleTimeout without a datagram,
// not before; a client's next datagram starts a new one.
func TestUDPIdleExpiry(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		r.IdleTimeout = 500 * time.Millisecond
		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", udpEcho)}})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		cs := []*net.UDPConn{udpDial(t, addr), udpDial(t, addr), udpDial(t, addr)}
		for _, c := range cs {
			require.Equal(t, "a", udpExchange(t, c, "a"))
		}

		// One client keeps its flow active, a datagram every fifth of
		// the timeout, while the two others expire.
		tick := time.NewTicker(r.IdleTimeout / 5)
		defer tick.Stop()
		for r.Flows() > 1 {
			<-tick.C
			require.Equal(t, "b", udpExchange(t, cs[0], "b"))
		}
		c := recorderOf(r).counts()
		assert.Equal(t, map[string]int{FlowExpired: 2}, c.closed)

		waitFor(t, func() bool { return r.Flows() == 0 })
		require.Equal(t, "c", udpExchange(t, cs[1], "c"))
		c = recorderOf(r).counts()
		assert.Equal(t, map[string]int{FlowExpired: 3}, c.closed)
		assert.Equal(t, 4, sum(c.opened))
		assert.Equal(t, 1, r.Flows())
	})
}

// TestUDPFlowCap: at MaxFlows a new client evicts the flow idle the
// longest.
func TestUDPFlowCap(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		r.MaxFlows = 3
		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", udpEcho)}})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		a, b, c, d := udpDial(t, addr), udpDial(t, addr), udpDial(t, addr), udpDial(t, addr)
		for i, step := range []struct {
			client          *net.UDPConn
			opened, evicted int
		}{
			{a, 1, 0}, {b, 2, 0}, {c, 3, 0}, // idle the longest first: a, b, c
			{a, 3, 0}, // b, c, a
			{d, 4, 1}, // b evicted: c, a, d
			{a, 4, 1}, // c, d, a
			{b, 5, 2}, // c evicted: d, a, b
			{c, 6, 3}, // d evicted: a, b, c
			{a, 6, 3}, // b, c, a
		} {
			msg := strconv.Itoa(i)
			require.Equal(t, msg, udpExchange(t, step.client, msg), "step %d", i)
			counts := recorderOf(r).counts()
			assert.Equal(t, step.opened, sum(counts.opened), "flows opened after step %d", i)
			assert.Equal(t, step.evicted, counts.closed[FlowEvicted], "flows evicted after step %d", i)
			assert.Equal(t, min(step.opened, 3), r.Flows(), "flows after step %d", i)
		}
		assert.Empty(t, recorderOf(r).counts().dropped)
	})
}

// TestUDPSetBackends: new flows go to the new set at once, round-robin
// from its first backend; existing flows stay on their backend.
func TestUDPSetBackends(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		x := Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("x"))}
		y := Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("y"))}
		z := Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("z"))}
		r.SetBackends([]Backend{x})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		c1 := udpDial(t, addr)
		require.Equal(t, "x:1", udpExchange(t, c1, "1"))

		r.SetBackends([]Backend{y, z})
		assert.Equal(t, []Backend{y, z}, r.Backends())
		assert.Equal(t, "x:2", udpExchange(t, c1, "2"), "an existing flow stays")
		for _, want := range []string{"y", "z", "y"} {
			assert.Equal(t, want+":3", udpExchange(t, udpDial(t, addr), "3"), "a new flow")
		}
		r.SetBackends([]Backend{y, z}) // the same set: the rotation goes on
		assert.Equal(t, "z:4", udpExchange(t, udpDial(t, addr), "4"))
		assert.Equal(t, "x:5", udpExchange(t, c1, "5"))
		assert.Equal(t, 5, r.Flows())
		assert.Empty(t, recorderOf(r).counts().closed)
	})
}

// TestUDPForget: the flows on a forgotten backend move to a current one at
// their next datagram; the others stay.
func TestUDPForget(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		x := Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("x")), ID: "x"}
		y := Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("y")), ID: "y"}
		assert.Equal(t, 0, r.Forget("x"), "nothing served yet")
		r.SetBackends([]Backend{x, y})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		c1, c2, c3 := udpDial(t, addr), udpDial(t, addr), udpDial(t, addr)
		require.Equal(t, "x:1", udpExchange(t, c1, "1"))
		require.Equal(t, "y:1", udpExchange(t, c2, "1"))
		require.Equal(t, "x:1", udpExchange(t, c3, "1"))

		assert.Equal(t, 2, r.Forget("x"))
		assert.Equal(t, []Backend{y}, r.Backends())
		assert.Equal(t, 0, r.Forget("x"), "already forgotten")
		assert.Equal(t, map[string]int(nil), recorderOf(r).counts().closed, "marked, not moved yet")
		assert.Equal(t, "y:2", udpExchange(t, c1, "2"))
		assert.Equal(t, "y:2", udpExchange(t, c2, "2"))
		assert.Equal(t, "y:3", udpExchange(t, c1, "3"))
		c := recorderOf(r).counts()
		assert.Equal(t, map[string]int{FlowMoved: 1}, c.closed)
		assert.Equal(t, map[string]int{x.Addr: 2, y.Addr: 2}, c.opened)
		assert.Equal(t, 3, r.Flows())

		// The backend back in the set (a container restarted): c3 still
		// moves, and new flows may use it again.
		r.SetBackends([]Backend{x, y})
		assert.Equal(t, "y:4", udpExchange(t, c3, "4"))
		assert.Equal(t, "x:5", udpExchange(t, udpDial(t, addr), "5"))
	})
}

// TestUDPUnreachable: a backend with nothing listening answers with an
// ICMP port unreachable; the flow moves to another backend at its next
// datagram, or stays if there is none.
func TestUDPUnreachable(t *testing.T) {
	for _, tt := range []struct {
		name  string
		live  bool // a live backend after the dead one
		moved int
	}{
		{"moves", true, 1},
		{"nowhere to go", false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
				dead := Backend{Addr: udpDeadAddr(t)}
				set := []Backend{dead}
				if tt.live {
					set = append(set, Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("live"))})
				}
				r.SetBackends(set)
				c := udpDial(t, startUDPRoute(t, r, "127.0.0.1:0"))
				udpSend(t, c, "1") // to dead, first in the rotation
				waitCounts(t, r, func(c udpCounts) bool { return c.unreachable[dead.Addr] == 1 })
				if tt.live {
					assert.Equal(t, "live:2", udpExchange(t, c, "2"))
				} else {
					udpSend(t, c, "2")
					waitCounts(t, r, func(c udpCounts) bool { return c.unreachable[dead.Addr] == 2 })
				}
				counts := recorderOf(r).counts()
				assert.Equal(t, tt.moved, counts.closed[FlowMoved])
				assert.Equal(t, 1, r.Flows())
				assert.Empty(t, counts.dropped)
			})
		})
	}
}

// udpDeadAddr returns a loopback UDP address nothing listens on: ICMP port
// unreachable.
func udpDeadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// TestUDPNoBackend: with no backend a datagram that would start a flow is
// dropped and counted.
func TestUDPNoBackend(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		c := udpDial(t, startUDPRoute(t, r, "127.0.0.1:0"))
		udpSend(t, c, "1")
		udpSend(t, c, "2")
		r.SetBackends(nil)
		udpSend(t, c, "3")
		waitCounts(t, r, func(c udpCounts) bool { return c.dropped[DropNoBackend] == 3 })

		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", udpEcho)}})
		assert.Equal(t, "4", udpExchange(t, c, "4"))
		counts := recorderOf(r).counts()
		assert.Equal(t, map[string]int{DropNoBackend: 3}, counts.dropped)
		assert.Equal(t, 1, sum(counts.opened))
	})
}

// TestUDPCloseFlows: the drain ends the flows on matching backends; their
// next datagram starts a new flow on the current set.
func TestUDPCloseFlows(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		x := Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("x"))}
		y := Backend{Addr: udpServer(t, "127.0.0.1:0", udpNamed("y"))}
		assert.Equal(t, 0, r.CloseFlows(func(Backend) bool { return true }), "nothing served yet")
		r.SetBackends([]Backend{x, y})
		addr := startUDPRoute(t, r, "127.0.0.1:0")
		c1, c2, c3 := udpDial(t, addr), udpDial(t, addr), udpDial(t, addr)
		require.Equal(t, "x:1", udpExchange(t, c1, "1"))
		require.Equal(t, "y:1", udpExchange(t, c2, "1"))
		require.Equal(t, "x:1", udpExchange(t, c3, "1"))

		r.SetBackends([]Backend{y})
		assert.Equal(t, 2, r.CloseFlows(func(b Backend) bool { return b == x }))
		assert.Equal(t, 1, r.Flows())
		assert.Equal(t, map[string]int{FlowClosed: 2}, recorderOf(r).counts().closed)
		assert.Equal(t, "y:2", udpExchange(t, c1, "2"))
		assert.Equal(t, "y:2", udpExchange(t, c2, "2"))
		assert.Equal(t, 2, r.Flows())
		assert.Equal(t, 4, sum(recorderOf(r).counts().opened))
	})
}

// TestUDPHostName: a backend named by host name is resolved off the data
// path; a name that does not resolve is passed over.
func TestUDPHostName(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		_, port, err := net.SplitHostPort(udpServer(t, "[::]:0", udpNamed("local"))) // whichever family localhost is
		require.NoError(t, err)
		// The logger first: SetBackends starts resolving the names, which
		// logs, before startUDPRoute would set it (a race -race caught).
		r.Logger = zaptest.NewLogger(t)
		r.SetBackends([]Backend{{Addr: "nowhere.invalid:" + port}, {Addr: "localhost:" + port}})
		c := udpDial(t, startUDPRoute(t, r, "127.0.0.1:0"))
		// Sent until the name has resolved: a datagram before is dropped.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(5 * time.Second)
		for recorderOf(r).counts().opened == nil {
			require.True(t, time.Now().Before(deadline), "no flow opened")
			udpSend(t, c, "1")
			<-tick.C
		}
		assert.Equal(t, map[string]int{"localhost:" + port: 1}, recorderOf(r).counts().opened)
		assert.Equal(t, "local:1", udpRead(t, c))
	})
}

func TestUDPServe(t *testing.T) {
	t.Run("twice", func(t *testing.T) {
		r := &UDPRoute{}
		startUDPRoute(t, r, "127.0.0.1:0")
		pc, err := ListenUDP(context.Background(), "127.0.0.1:0")
		require.NoError(t, err)
		waitFor(t, func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.owner != nil
		})
		assert.ErrorContains(t, r.Serve(pc), "already serving")
	})
	t.Run("after close", func(t *testing.T) {
		r := &UDPRoute{}
		require.NoError(t, r.Close())
		pc, err := ListenUDP(context.Background(), "127.0.0.1:0")
		require.NoError(t, err)
		assert.NoError(t, r.Serve(pc))
		assert.Equal(t, 0, r.Forget("x"))
	})
	t.Run("not udp", func(t *testing.T) {
		pc, err := net.ListenPacket("unixgram", filepath.Join(t.TempDir(), "s"))
		require.NoError(t, err)
		assert.ErrorContains(t, (&UDPRoute{}).Serve(pc), "not a UDP socket")
	})
}

// TestUDPLogs: one line per flow opened and closed, at debug, never per
// datagram.
func TestUDPLogs(t *testing.T) {
	forUDPPaths(t, func(t *testing.T, r *UDPRoute) {
		core, logs := observer.New(zap.DebugLevel)
		r.Logger = zap.New(core)
		r.SetBackends([]Backend{{Addr: udpServer(t, "127.0.0.1:0", udpEcho)}})
		c := udpDial(t, startUDPRoute(t, r, "127.0.0.1:0"))
		for i := range 5 {
			require.Equal(t, "x", udpExchange(t, c, "x"), "datagram %d", i)
		}
		assert.Equal(t, 1, r.CloseFlows(func(Backend) bool { return true }))
		var msgs []string
		for _, e := range logs.All() {
			msgs = append(msgs, e.Message)
			assert.Equal(t, c.LocalAddr().String(), e.ContextMap()["remote"])
		}
		assert.Equal(t, []string{"flow opened", "flow closed"}, msgs)
	})
}

// BenchmarkUDP measures 64-byte request/response exchanges over many
// flows at once, directly and through a UDP route by each of its paths:
// compare their datagrams/s (both ways counted).
func BenchmarkUDP(b *testing.B) {
	run := func(b *testing.B, addr string) {
		b.SetParallelism(16) // 16 clients per P
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			c, err := net.Dial("udp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			msg, got := make([]byte, 64), make([]byte, 128)
			for pb.Next() {
				c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Write(msg); err != nil {
					b.Error(err)
					return
				}
				if _, err := c.Read(got); err != nil {
					b.Error(err) // a datagram lost
					return
				}
			}
		})
		b.ReportMetric(float64(2*b.N)/time.Since(start).Seconds(), "datagrams/s")
	}
	backend := udpServer(b, "127.0.0.1:0", udpEcho)
	b.Run("direct", func(b *testing.B) { run(b, backend) })
	for _, p := range udpPaths {
		b.Run(p.name, func(b *testing.B) {
			r := &UDPRoute{noLoop: p.noLoop, Logger: zap.NewNop()}
			r.SetBackends([]Backend{{Addr: backend}})
			run(b, startUDPRoute(b, r, "127.0.0.1:0"))
		})
	}
}
