//go:build e2e

package e2e

// The UDP tests of the binary under test on the host (issue 17), with
// static routes on 127.0.0.1 to UDP servers of the test's own (an echo, a
// counting sink), no engine: the flow cap and idle expiry with exact
// counts from the metrics, an ICMP port unreachable moving a flow, a
// fire-and-forget sender with every datagram counted end to end, and the
// largest datagram forwarded intact both ways. Nothing but the test's own
// datagrams reaches the ambassador, so its counters are exact.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// udpMaxDatagram is the largest UDP payload over IPv4: 65,535 less the IP
// and UDP headers.
const udpMaxDatagram = 65507

// udpHost is the ambassador on the host, serving one UDP route.
type udpHost struct {
	*engineRestartAmb
	route  string // the route's name, PORT/udp
	listen string // where clients send: 127.0.0.1:PORT
}

// udpHostAmbassador starts the binary under test on the host with the
// route PORT/udp:backends (and args), no engine, and waits until the route
// listens. It is stopped (SIGTERM, which must make it exit 0) when the
// test ends.
func udpHostAmbassador(t *testing.T, ctx context.Context, backends string, args ...string) *udpHost {
	t.Helper()
	port, adminPort := udpFreePort(t), engineRestartFreePort(t)
	a := &udpHost{
		engineRestartAmb: &engineRestartAmb{
			admin:  "http://" + enginesListen(adminPort),
			out:    &engineRestartOutput{},
			exited: make(chan struct{}),
		},
		route:  strconv.Itoa(port) + "/udp",
		listen: enginesListen(port),
	}
	args = append([]string{"--route", a.route + ":" + backends}, args...)
	args = append(args,
		"--docker=off",
		"--listen-address", "127.0.0.1",
		"--admin-address", enginesListen(adminPort),
		"--admin-socket", "",
		"--log-format", "json",
		"--log-level", "debug", // a line per flow opened and closed, for a failure
	)
	a.start(t, ctx, args)
	return a
}

// waitMetrics waits until the ambassador's metrics pass check.
func (a *udpHost) waitMetrics(t *testing.T, ctx context.Context, check func(families) error) families {
	t.Helper()
	return waitMetrics(t, ctx, a.admin+"/metrics", check)
}

// labels returns the route's label with the others, key, value, ...
func (a *udpHost) labels(kv ...string) map[string]string {
	m := map[string]string{"route": a.route}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// ended checks the flows ended for each reason, those not given at 0.
func (a *udpHost) ended(want map[string]float64) func(families) error {
	var checks []func(families) error
	for _, reason := range []string{"expired", "evicted", "moved", "closed"} {
		checks = append(checks, wantCount("ambassadord_udp_flows_ended_total", a.labels("reason", reason), want[reason]))
	}
	return all(checks...)
}

// dropped checks that no datagram was dropped, for any reason.
func (a *udpHost) dropped() func(families) error {
	var checks []func(families) error
	for _, reason := range []string{"no_backend", "flow_cap", "too_large", "buffer", "unreachable"} {
		checks = append(checks, wantCount("ambassadord_udp_dropped_total", a.labels("reason", reason), 0))
	}
	return all(checks...)
}

// wantCount is want, a series that is not there counting as 0.
func wantCount(name string, labels map[string]string, v float64) func(families) error {
	return func(f families) error {
		got, _ := f.value(name, labels)
		if got != v {
			return fmt.Errorf("%s%v = %v, want %v", name, labels, got, v)
		}
		return nil
	}
}

// udpFreePort returns a UDP port free on 127.0.0.1 now.
func udpFreePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// udpServer is a UDP server of the test on 127.0.0.1: an echo answering
// each datagram with tag and the datagram, or, with sink, a counter that
// answers nothing. Its goroutine is its own; close stops it.
type udpServer struct {
	conn *net.UDPConn
	tag  []byte
	sink bool
	done chan struct{}

	mu   sync.Mutex
	seen map[netip.AddrPort]map[uint64]int // sink: datagrams by source and sequence number; guarded by mu
	n    int                               // datagrams received; guarded by mu
}

// udpStartServer starts a server on a free port; it is closed when the
// test ends.
func udpStartServer(t *testing.T, tag string, sink bool) *udpServer {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	require.NoError(t, err)
	// Bursts of the fire-and-forget test must not overflow the sink.
	require.NoError(t, c.SetReadBuffer(4<<20))
	s := &udpServer{conn: c, tag: []byte(tag), sink: sink, done: make(chan struct{}), seen: map[netip.AddrPort]map[uint64]int{}}
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *udpServer) addr() string { return s.conn.LocalAddr().String() }

// serve answers or counts datagrams until the socket is closed.
func (s *udpServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1<<16)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.n++
		if s.sink && n >= 8 {
			m := s.seen[from]
			if m == nil {
				m = map[uint64]int{}
				s.seen[from] = m
			}
			m[binary.BigEndian.Uint64(buf)]++
		}
		s.mu.Unlock()
		if !s.sink {
			s.conn.WriteToUDPAddrPort(append(append([]byte(nil), s.tag...), buf[:n]...), from)
		}
	}
}

// received returns the datagrams received so far.
func (s *udpServer) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *udpServer) close() {
	s.conn.Close()
	<-s.done
}

// udpExchange sends msg on c and returns the answer, within timeout.
func udpExchange(c *net.UDPConn, msg []byte, timeout time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<16)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// udpClients opens n client sockets to addr, closed when the test ends.
func udpClients(t *testing.T, addr string, n int) []*net.UDPConn {
	t.Helper()
	cs := make([]*net.UDPConn, n)
	for i := range cs {
		c, err := net.Dial("udp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		cs[i] = c.(*net.UDPConn)
	}
	return cs
}

// udpEcho requires c's message back through the echo, with its tag.
func udpEcho(t *testing.T, c *net.UDPConn, tag, msg string) {
	t.Helper()
	got, err := udpExchange(c, []byte(msg), 2*time.Second)
	require.NoError(t, err, "echo of %q from %s", msg, c.LocalAddr())
	require.Equal(t, tag+msg, string(got))
}

// TestUDPFlowCap: --udp-max-flows 5 and 8 clients, one after another:
// the first three, idle the longest, are evicted (3 evictions, 5 flows
// active, 8 started); the first client again is a new flow that evicts the
// fourth; the last is still on its flow. Each client's datagram is
// answered throughout.
func TestUDPFlowCap(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	echo := udpStartServer(t, "", false)
	amb := udpHostAmbassador(t, ctx, echo.addr(), "--udp-max-flows", "5")
	on := amb.labels("backend", echo.addr())
	cs := udpClients(t, amb.listen, 8)
	for i, c := range cs {
		udpEcho(t, c, "", fmt.Sprintf("client %d", i))
	}
	amb.waitMetrics(t, ctx, all(
		want("ambassadord_udp_flows_total", on, 8),
		want("ambassadord_udp_flows_active", on, 5),
		amb.ended(map[string]float64{"evicted": 3}),
		want("ambassadord_udp_datagrams_total", amb.labels("backend", echo.addr(), "direction", "up"), 8),
		want("ambassadord_udp_datagrams_total", amb.labels("backend", echo.addr(), "direction", "down"), 8),
		amb.dropped(),
	))

	udpEcho(t, cs[0], "", "client 0 again")
	udpEcho(t, cs[7], "", "client 7 again")
	amb.waitMetrics(t, ctx, all(
		want("ambassadord_udp_flows_total", on, 9),
		want("ambassadord_udp_flows_active", on, 5),
		amb.ended(map[string]float64{"evicted": 4}),
		amb.dropped(),
	))
	// The log is copied on its own: it may lag the metrics.
	evicted := 0
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	harness.Poll(waitCtx, func(context.Context) error {
		if evicted = strings.Count(amb.out.String(), `"reason":"evicted"`); evicted < 4 {
			return errors.New("not logged yet")
		}
		return nil
	})
	assert.Equal(t, 4, evicted, "flows logged as evicted")
}

// TestUDPIdleExpiry: --udp-idle-timeout 1s. Four clients send a datagram
// each and fall silent: their flows expire, no sooner than a second after
// their last datagram, while a fifth that sends every 200 ms keeps its
// flow; a silent client that sends again gets a new flow; once the fifth
// falls silent too, every flow has expired, each counted once.
func TestUDPIdleExpiry(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	echo := udpStartServer(t, "", false)
	amb := udpHostAmbassador(t, ctx, echo.addr(), "--udp-idle-timeout", "1s")
	on := amb.labels("backend", echo.addr())
	cs := udpClients(t, amb.listen, 5)
	keeper := cs[4]
	udpEcho(t, keeper, "", "keeper")
	var silent time.Time // the last datagram of the four flows passes after it
	for i, c := range cs[:4] {
		silent = time.Now()
		udpEcho(t, c, "", fmt.Sprintf("client %d", i))
	}

	kctx, stopKeeper := context.WithCancel(ctx)
	keeping := make(chan error, 1)
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-kctx.Done():
				keeping <- nil
				return
			case <-t.C:
			}
			if got, err := udpExchange(keeper, []byte("keep"), time.Second); err != nil || string(got) != "keep" {
				keeping <- fmt.Errorf("keeper's echo: %q, %v", got, err)
				return
			}
		}
	}()
	amb.waitMetrics(t, ctx, all(amb.ended(map[string]float64{"expired": 4}), want("ambassadord_udp_flows_active", on, 1)))
	expired := time.Since(silent)
	assert.GreaterOrEqual(t, expired, time.Second, "the silent flows expired before the idle timeout")
	t.Logf("the 4 silent flows had expired %s after their last datagram (--udp-idle-timeout 1s; metrics polled every 50 ms)", expired.Round(time.Millisecond))

	// For another timeout and a half, the keeper's flow stays.
	until := time.Now().Add(1500 * time.Millisecond)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(until) {
		f, err := scrape(ctx, amb.admin+"/metrics")
		require.NoError(t, err)
		require.NoError(t, all(amb.ended(map[string]float64{"expired": 4}), want("ambassadord_udp_flows_total", on, 5),
			want("ambassadord_udp_flows_active", on, 1))(f), "while the keeper sends")
		<-tick.C
	}

	udpEcho(t, cs[0], "", "client 0 again")
	amb.waitMetrics(t, ctx, all(want("ambassadord_udp_flows_total", on, 6), want("ambassadord_udp_flows_active", on, 2)))
	stopKeeper()
	require.NoError(t, <-keeping)
	amb.waitMetrics(t, ctx, all(
		amb.ended(map[string]float64{"expired": 6}),
		want("ambassadord_udp_flows_active", on, 0),
		want("ambassadord_udp_flows_total", on, 6),
		amb.dropped(),
	))
}

// TestUDPUnreachable: a route to two echo servers; a flow on each. The
// first server's socket closes (nothing listens on its port any more):
// the next datagram of its flow is answered by an ICMP port unreachable,
// counted, and lost; the one after moves the flow to the other server
// (counted as moved) and is answered, as all that follow are.
func TestUDPUnreachable(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	one, two := udpStartServer(t, "one:", false), udpStartServer(t, "two:", false)
	amb := udpHostAmbassador(t, ctx, one.addr()+","+two.addr())
	cs := udpClients(t, amb.listen, 2)
	got, err := udpExchange(cs[0], []byte("hello"), 2*time.Second)
	require.NoError(t, err)
	on, other := one, two
	c, cOther := cs[0], cs[1]
	if string(got) == "two:hello" {
		on, other = two, one
	}
	tag, otherTag := string(on.tag), string(other.tag)
	udpEcho(t, cOther, otherTag, "hello") // round-robin: the second flow on the other server

	on.close()
	_, err = udpExchange(c, []byte("to a closed port"), 500*time.Millisecond)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "the datagram to the closed port")
	amb.waitMetrics(t, ctx, all(
		want("ambassadord_udp_unreachable_total", amb.labels("backend", on.addr()), 1),
		amb.ended(nil),
	))
	for i := range 20 {
		udpEcho(t, c, otherTag, fmt.Sprintf("moved %d", i))
	}
	udpEcho(t, cOther, otherTag, "still here")
	amb.waitMetrics(t, ctx, all(
		amb.ended(map[string]float64{"moved": 1}),
		want("ambassadord_udp_flows_active", amb.labels("backend", other.addr()), 2),
		want("ambassadord_udp_flows_active", amb.labels("backend", on.addr()), 0),
		want("ambassadord_udp_datagrams_total", amb.labels("backend", on.addr(), "direction", "up"), 2),
		want("ambassadord_udp_datagrams_total", amb.labels("backend", on.addr(), "direction", "down"), 1),
		want("ambassadord_udp_unreachable_total", amb.labels("backend", on.addr()), 1),
	))
	t.Logf("the flow on %s (%s) moved to %s", tag, on.addr(), otherTag)
}

// TestUDPFireAndForget: a syslog- or statsd-style load, datagrams with no
// answer, from 8 senders at about 40,000 datagrams a second in all, to a
// sink that counts each by its sender's flow and sequence number: every
// datagram arrives once, each sender on a flow of its own, and the
// ambassador's counters say the same.
func TestUDPFireAndForget(t *testing.T) {
	t.Parallel()
	const (
		senders = 8
		each    = 5000
		size    = 120
		burst   = 5 // datagrams per sender per millisecond
	)
	ctx := setup(t)
	sink := udpStartServer(t, "", true)
	amb := udpHostAmbassador(t, ctx, sink.addr())
	cs := udpClients(t, amb.listen, senders)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i, c := range cs {
		wg.Go(func() {
			msg := make([]byte, size)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for seq := range uint64(each) {
				if seq > 0 && seq%burst == 0 {
					<-tick.C
				}
				binary.BigEndian.PutUint64(msg, uint64(i)<<32|seq)
				if _, err := c.Write(msg); err != nil {
					errs <- fmt.Errorf("sender %d, datagram %d: %w", i, seq, err)
					return
				}
			}
		})
	}
	wg.Wait()
	sent := time.Since(start)
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	total := senders * each
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := harness.Poll(wctx, func(context.Context) error {
		if n := sink.received(); n < total {
			return fmt.Errorf("the sink has %d of %d", n, total)
		}
		return nil
	})
	cancel()
	assert.NoError(t, err)
	f := amb.waitMetrics(t, ctx, wantCount("ambassadord_udp_flows_active", amb.labels("backend", sink.addr()), senders))
	up, _ := f.value("ambassadord_udp_datagrams_total", amb.labels("backend", sink.addr(), "direction", "up"))
	upBytes, _ := f.value("ambassadord_udp_bytes_total", amb.labels("backend", sink.addr(), "direction", "up"))
	down, _ := f.value("ambassadord_udp_datagrams_total", amb.labels("backend", sink.addr(), "direction", "down"))
	t.Logf("%d datagrams of %d bytes sent in %s (%.0f/s); the sink received %d; the ambassador forwarded %v (%v bytes), none back",
		total, size, sent.Round(time.Millisecond), float64(total)/sent.Seconds(), sink.received(), up, upBytes)
	assert.Equal(t, float64(total), up, "datagrams the ambassador forwarded")
	assert.Equal(t, float64(total*size), upBytes, "bytes the ambassador forwarded")
	assert.Zero(t, down, "datagrams back")
	amb.waitMetrics(t, ctx, all(amb.dropped(), want("ambassadord_udp_flows_total", amb.labels("backend", sink.addr()), senders)))

	sink.mu.Lock()
	defer sink.mu.Unlock()
	assert.Equal(t, total, sink.n, "datagrams the sink received")
	require.Len(t, sink.seen, senders, "flows (source addresses) the sink saw")
	bySender := map[uint64]bool{}
	for from, m := range sink.seen {
		var sender uint64
		for k := range m {
			sender = k >> 32
			break
		}
		missing, twice := 0, 0
		for seq := range uint64(each) {
			switch m[sender<<32|seq] {
			case 0:
				missing++
			case 1:
			default:
				twice++
			}
		}
		assert.False(t, bySender[sender], "sender %d on two flows", sender)
		bySender[sender] = true
		assert.Len(t, m, each, "datagrams from %s (sender %d)", from, sender)
		assert.Zero(t, missing, "datagrams of sender %d missing", sender)
		assert.Zero(t, twice, "datagrams of sender %d received more than once", sender)
	}
}

// TestUDPLargeDatagram: a datagram of 65,507 bytes, the most IPv4 can
// carry, goes through to the echo and back intact, each way counted.
func TestUDPLargeDatagram(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	echo := udpStartServer(t, "", false)
	amb := udpHostAmbassador(t, ctx, echo.addr())
	c := udpClients(t, amb.listen, 1)[0]
	msg := make([]byte, udpMaxDatagram)
	rand.Read(msg)
	got, err := udpExchange(c, msg, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, len(msg), len(got), "bytes back")
	assert.True(t, bytes.Equal(msg, got), "the datagram came back altered")
	amb.waitMetrics(t, ctx, all(
		want("ambassadord_udp_datagrams_total", amb.labels("backend", echo.addr(), "direction", "up"), 1),
		want("ambassadord_udp_datagrams_total", amb.labels("backend", echo.addr(), "direction", "down"), 1),
		want("ambassadord_udp_bytes_total", amb.labels("backend", echo.addr(), "direction", "up"), udpMaxDatagram),
		want("ambassadord_udp_bytes_total", amb.labels("backend", echo.addr(), "direction", "down"), udpMaxDatagram),
		amb.dropped(),
	))
}
