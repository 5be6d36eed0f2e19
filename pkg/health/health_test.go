package health

import (
	"bufio"
	"context"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve answers every connection on a loopback listener with handle until
// the test ends, and returns its address.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	return nettest.Serve(t, handle)
}

// pong answers a line PING with +PONG, as redis does.
func pong(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == nil && line == "PING\r\n" {
		c.Write([]byte("+PONG\r\n"))
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func fast(kind string) source.Check {
	return source.Check{Kind: kind, Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2}
}

func newMonitor(t *testing.T) *Monitor {
	m := &Monitor{Logger: zaptest.NewLogger(t)}
	t.Cleanup(m.Close)
	return m
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, 5*time.Millisecond)
}

func TestChecks(t *testing.T) {
	send := fast(source.CheckSend)
	send.Send, send.Expect = "PING\r\n", "+PONG"
	re := fast(source.CheckSend)
	re.Send, re.ExpectRegexp = "PING\r\n", `^\+PO[N]G\r\n`
	wrong := send
	wrong.Expect = "+PANG"
	silent := send // connects, never answers
	for _, tt := range []struct {
		name    string
		target  func(t *testing.T) Target
		up      bool
		errText string
	}{
		{"tcp up", func(t *testing.T) Target { return Target{serve(t, func(net.Conn) {}), fast(source.CheckTCP)} }, true, ""},
		{"tcp down", func(t *testing.T) Target { return Target{deadAddr(t), fast(source.CheckTCP)} }, false, "connect"},
		{"send/expect up", func(t *testing.T) Target { return Target{serve(t, pong), send} }, true, ""},
		{"regexp up", func(t *testing.T) Target { return Target{serve(t, pong), re} }, true, ""},
		{"wrong answer", func(t *testing.T) Target { return Target{serve(t, pong), wrong} }, false, `does not start with "+PANG"`},
		{"no answer", func(t *testing.T) Target {
			return Target{serve(t, func(c net.Conn) { time.Sleep(time.Second) }), silent}
		}, false, "timeout"},
		{"closed without answer", func(t *testing.T) Target { return Target{serve(t, func(net.Conn) {}), send} }, false, `answer "" is not "+PONG"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newMonitor(t)
			var passes, fails atomic.Int32
			m.OnCheck = func(r string) {
				if r == ResultPass {
					passes.Add(1)
				} else {
					fails.Add(1)
				}
			}
			target := tt.target(t)
			m.Set([]Target{target})
			waitFor(t, func() bool { s, _ := m.State(target); return s.Checks >= 3 })
			s, ok := m.State(target)
			require.True(t, ok)
			assert.Equal(t, tt.up, s.Up)
			assert.Equal(t, tt.up, m.Up(target))
			if tt.errText != "" {
				assert.Contains(t, s.LastError, tt.errText)
				assert.Positive(t, fails.Load())
			} else {
				assert.Empty(t, s.LastError)
				assert.Positive(t, passes.Load())
			}
		})
	}
}

// TestRiseAndFall: a backend is up only after Rise passes, and down after
// Fall failures, each change signalled.
func TestRiseAndFall(t *testing.T) {
	var listening atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	// A backend that comes and goes: listen, then stop.
	var mu sync.Mutex
	var cur net.Listener
	start := func() {
		mu.Lock()
		defer mu.Unlock()
		l, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		cur = l
		listening.Store(true)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	stop := func() {
		mu.Lock()
		defer mu.Unlock()
		cur.Close()
		listening.Store(false)
	}
	chk := fast(source.CheckTCP)
	chk.Rise, chk.Fall = 3, 2
	target := Target{addr, chk}
	m := newMonitor(t)
	m.Set([]Target{target})
	waitFor(t, func() bool { s, _ := m.State(target); return s.Fails >= 2 })
	assert.False(t, m.Up(target))
	drain(m)

	start()
	t.Cleanup(stop)
	<-m.Changed()
	s, _ := m.State(target)
	assert.True(t, s.Up)
	assert.GreaterOrEqual(t, s.Passes, 3, "up only after rise passes")

	stop()
	<-m.Changed()
	s, _ = m.State(target)
	assert.False(t, s.Up)
	assert.GreaterOrEqual(t, s.Fails, 2)
	start()
}

func drain(m *Monitor) {
	select {
	case <-m.Changed():
	default:
	}
}

// TestSetSharesAndStops: one checker per target however many times it is
// named; targets no longer named stop being checked.
func TestSetSharesAndStops(t *testing.T) {
	var conns atomic.Int32
	addr := serve(t, func(net.Conn) { conns.Add(1) })
	chk := fast(source.CheckTCP)
	chk.Interval = 100 * time.Millisecond
	m := newMonitor(t)
	target := Target{addr, chk}
	m.Set([]Target{target, target, {Addr: addr}}) // the last has no check: ignored
	m.Set([]Target{target, target})
	time.Sleep(time.Second) // counting checks over a known period
	n := conns.Load()
	assert.InDelta(t, 10, n, 4, "one checker, every 100ms ± 10%%")
	up, down := m.Counts()
	assert.Equal(t, 1, up+down)

	m.Set(nil)
	_, ok := m.State(target)
	assert.False(t, ok)
	waitFor(t, func() bool { up, down := m.Counts(); return up+down == 0 })
	before := conns.Load()
	time.Sleep(300 * time.Millisecond)
	assert.LessOrEqual(t, conns.Load()-before, int32(1), "a stopped checker checks no more")
}

// TestNoBurst: many targets added at once start their checks spread over
// the first second, and never more than MaxConcurrent at a time.
func TestNoBurst(t *testing.T) {
	var inFlight, most atomic.Int32
	var firstMu sync.Mutex
	var first []time.Time
	seen := map[string]bool{}
	addr := serve(t, func(c net.Conn) {
		firstMu.Lock()
		if !seen[c.LocalAddr().String()+c.RemoteAddr().String()] {
			first = append(first, time.Now())
		}
		firstMu.Unlock()
		// Answer after a while, so that checks overlap.
		c.SetDeadline(time.Now().Add(time.Second))
		bufio.NewReader(c).ReadString('\n')
		time.Sleep(20 * time.Millisecond)
		c.Write([]byte("+PONG\r\n"))
	})
	chk := fast(source.CheckSend)
	chk.Send, chk.Expect = "PING\r\n", "+PONG"
	chk.Interval, chk.Timeout = 10*time.Second, time.Second
	m := &Monitor{MaxConcurrent: 4}
	m.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		n := inFlight.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		return &countedConn{Conn: c, n: &inFlight}, nil
	}
	t.Cleanup(m.Close)
	var targets []Target
	for i := range 100 {
		c := chk
		c.Rise = 1
		c.Timeout += time.Duration(i) * time.Millisecond // 100 distinct targets on one listener
		targets = append(targets, Target{addr, c})
	}
	start := time.Now()
	m.Set(targets)
	waitFor(t, func() bool { up, _ := m.Counts(); return up == 100 })
	assert.LessOrEqual(t, most.Load(), int32(4), "MaxConcurrent")
	firstMu.Lock()
	defer firstMu.Unlock()
	inFirst100ms := 0
	for _, at := range first {
		if at.Sub(start) < 100*time.Millisecond {
			inFirst100ms++
		}
	}
	assert.Less(t, inFirst100ms, 40, "first checks spread over a second, not all at once")
}

func TestExpectErrors(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		b.Write([]byte(strings.Repeat("x", 600)))
		b.Close()
	}()
	a.SetDeadline(time.Now().Add(time.Second))
	err := expect(a, "", mustRegexp(t, "^y"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no match in 512 bytes")
}

// countedConn decrements n when closed.
type countedConn struct {
	net.Conn
	n *atomic.Int32
}

func (c *countedConn) Close() error {
	c.n.Add(-1)
	return c.Conn.Close()
}

func mustRegexp(t *testing.T, s string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(s)
	require.NoError(t, err)
	return re
}

// TestCloseDoesNotWaitForALongCheck: a check with a long timeout in
// flight does not hold Close back.
func TestCloseDoesNotWaitForALongCheck(t *testing.T) {
	addr := serve(t, func(c net.Conn) { time.Sleep(2 * time.Second) }) // never answers in time
	chk := source.Check{Kind: source.CheckSend, Send: "PING\r\n", Expect: "+PONG", Interval: time.Minute, Timeout: time.Minute, Rise: 1, Fall: 1}
	m := &Monitor{}
	m.Set([]Target{{addr, chk}})
	time.Sleep(1200 * time.Millisecond) // the first check, within a second, is in flight
	start := time.Now()
	m.Close()
	assert.Less(t, time.Since(start), time.Second)
}
