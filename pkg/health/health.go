// Package health runs the active health checks of backends: one checker
// per address and check (a Target), shared by every route that uses it.
//
// The controller tells a Monitor the whole set of targets it wants
// checked (Set) after every resolution; the monitor starts a checker for
// each new target and stops those no longer named. A checker is one
// goroutine that connects to its address every Check.Interval (with a
// tenth of jitter either way, its first check at a random point of its
// first interval, at most a second in, so that 500 backends appearing at
// once do not check at once), and at most MaxConcurrent checks of the
// monitor are in flight at a time. A target is Up once Rise checks in a
// row passed, and down again after Fall failures in a row; it starts
// down. Every change of a target's Up is signalled on Changed, which the
// controller's run loop selects on to re-apply its routes.
//
// The monitor owns its checkers' goroutines: Close stops them and waits.
// Its methods are safe for concurrent use.
package health

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/source"
)

const (
	// defaultMaxConcurrent bounds the checks in flight at once.
	defaultMaxConcurrent = 16
	// maxFirstDelay bounds the random delay of a new checker's first
	// check: it spreads the checks of targets that appear together over
	// their interval, but a backend waiting for its first pass should not
	// wait long.
	maxFirstDelay = time.Second
	// maxAnswer is how much of an answer a send/expect check reads.
	maxAnswer = 512
)

// Target is one thing to check: an address ("host:port") and the check.
// Targets are compared whole: two routes with the same address and check
// share a checker.
type Target struct {
	Addr  string
	Check source.Check
}

// The results a Monitor's OnCheck reports.
const (
	ResultPass = "pass"
	ResultFail = "fail"
)

// State is what a target's checker knows.
type State struct {
	// Up: Rise checks in a row passed, and fewer than Fall failed since.
	Up bool
	// Checks counts the checks done; zero before the first.
	Checks int
	// Passes and Fails are the passes and failures in a row now: one of
	// them is zero.
	Passes, Fails int
	// LastError is the last failure's reason; empty when the last check
	// passed.
	LastError string
	// Since is when Up last changed, or when the checker started.
	Since time.Time
}

// Monitor runs the checkers. The zero value is ready to use; set the
// fields before the first Set.
type Monitor struct {
	// MaxConcurrent bounds the checks in flight at once. Zero means 16.
	MaxConcurrent int

	// Logger receives a line when a target goes up or down. Nil means
	// none.
	Logger *zap.Logger

	// OnCheck, if set, is called after every check with ResultPass or
	// ResultFail: for metrics. It must be fast and safe for concurrent
	// use.
	OnCheck func(result string)

	// DialContext connects to a target. Nil means a net.Dialer. A hook
	// for tests.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	once    sync.Once
	changed chan struct{} // capacity 1: a change not yet taken
	sem     chan struct{} // one token per check in flight

	mu sync.Mutex
	// The fields below are guarded by mu.
	checkers map[Target]*checker
	closed   bool

	wg sync.WaitGroup // one per checker goroutine
}

// checker is one target's goroutine and state.
type checker struct {
	target Target
	cancel context.CancelFunc
	re     *regexp.Regexp // Check.ExpectRegexp compiled; nil without one
	state  State          // guarded by Monitor.mu
}

func (m *Monitor) init() {
	m.once.Do(func() {
		n := m.MaxConcurrent
		if n <= 0 {
			n = defaultMaxConcurrent
		}
		m.sem = make(chan struct{}, n)
		m.changed = make(chan struct{}, 1)
		m.checkers = make(map[Target]*checker)
	})
}

// Changed receives a value after any target's Up changed, or a target was
// added or removed (its state then reads as not up). Changes coalesce: one
// value may stand for several.
func (m *Monitor) Changed() <-chan struct{} {
	m.init()
	return m.changed
}

func (m *Monitor) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Set makes the checked targets exactly targets: checkers start for the
// new ones, and stop (without waiting) for those not named. Targets
// without an enabled check are ignored. Set after Close does nothing.
func (m *Monitor) Set(targets []Target) {
	m.init()
	want := make(map[Target]bool, len(targets))
	for _, t := range targets {
		if t.Check.Enabled() {
			want[t] = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for t, c := range m.checkers {
		if !want[t] {
			c.cancel()
			delete(m.checkers, t)
		}
	}
	for t := range want {
		if _, ok := m.checkers[t]; ok {
			continue
		}
		c := &checker{target: t, state: State{Since: time.Now()}}
		if t.Check.ExpectRegexp != "" {
			re, err := regexp.Compile(t.Check.ExpectRegexp)
			if err != nil {
				// The parser compiled it already; never fails here.
				m.logger().Error("health check regexp does not compile", zap.String("backend", t.Addr), zap.Error(err))
				continue
			}
			c.re = re
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.cancel = cancel
		m.checkers[t] = c
		m.wg.Add(1)
		go m.run(ctx, c)
	}
}

// State returns what the checker of t knows, and whether t is checked.
func (m *Monitor) State(t Target) (State, bool) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkers[t]
	if !ok {
		return State{}, false
	}
	return c.state, true
}

// Up reports whether t is checked and up.
func (m *Monitor) Up(t Target) bool {
	s, ok := m.State(t)
	return ok && s.Up
}

// Counts returns the number of targets up and down now.
func (m *Monitor) Counts() (up, down int) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.checkers {
		if c.state.Up {
			up++
		} else {
			down++
		}
	}
	return up, down
}

// Close stops every checker and waits for them.
func (m *Monitor) Close() {
	m.init()
	m.mu.Lock()
	m.closed = true
	for t, c := range m.checkers {
		c.cancel()
		delete(m.checkers, t)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *Monitor) logger() *zap.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return zap.NewNop()
}

// run is a checker's goroutine: it checks its target every interval until
// ctx is cancelled.
func (m *Monitor) run(ctx context.Context, c *checker) {
	defer m.wg.Done()
	interval := c.target.Check.Interval
	wait := time.Duration(rand.Int64N(int64(min(interval, maxFirstDelay)) + 1))
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case m.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		err := m.check(ctx, c)
		<-m.sem
		if ctx.Err() != nil {
			return
		}
		m.record(c, err)
		t.Reset(jitter(interval))
	}
}

// jitter returns d plus or minus a tenth at random.
func jitter(d time.Duration) time.Duration {
	tenth := int64(d / 10)
	if tenth <= 0 {
		return d
	}
	return d - time.Duration(tenth) + time.Duration(rand.Int64N(2*tenth+1))
}

// record applies a check's result to c's state, and signals a change of
// Up.
func (m *Monitor) record(c *checker, err error) {
	if m.OnCheck != nil {
		result := ResultPass
		if err != nil {
			result = ResultFail
		}
		m.OnCheck(result)
	}
	chk := c.target.Check
	m.mu.Lock()
	s := &c.state
	s.Checks++
	was := s.Up
	if err == nil {
		s.Passes++
		s.Fails = 0
		s.LastError = ""
		if s.Passes >= chk.Rise {
			s.Up = true
		}
	} else {
		s.Fails++
		s.Passes = 0
		s.LastError = err.Error()
		if s.Fails >= chk.Fall {
			s.Up = false
		}
	}
	changed := s.Up != was
	if changed {
		s.Since = time.Now()
	}
	m.mu.Unlock()
	if !changed {
		return
	}
	if s := c.state; s.Up {
		m.logger().Info("backend passes its health check", zap.String("backend", c.target.Addr), zap.Int("passes", chk.Rise))
	} else {
		m.logger().Warn("backend fails its health check", zap.String("backend", c.target.Addr), zap.Int("failures", chk.Fall), zap.Error(err))
	}
	m.signal()
}

// checkDialer connects the checks: without keep-alive, whose socket
// options are three system calls a connection that lasts a moment never
// uses. The checks' cost is mostly system calls (a loopback or veth
// handshake runs in the caller's context).
var checkDialer = &net.Dialer{KeepAlive: -1}

// check runs one check of c's target: a connect, and for a send/expect
// check the exchange, all within the check's timeout.
func (m *Monitor) check(ctx context.Context, c *checker) error {
	chk := c.target.Check
	ctx, cancel := context.WithTimeout(ctx, chk.Timeout)
	defer cancel()
	dial := m.DialContext
	if dial == nil {
		dial = checkDialer.DialContext
	}
	conn, err := dial(ctx, "tcp", c.target.Addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer closeAbortive(conn)
	if chk.Kind != source.CheckSend {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if chk.Send != "" {
		if _, err := conn.Write([]byte(chk.Send)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return expect(conn, chk.Expect, c.re)
}

// expect reads conn's answer until it starts with prefix and, with re,
// matches re; it fails when the answer cannot any more (a byte differs,
// or maxAnswer bytes do not match), or at EOF or the deadline.
func expect(conn net.Conn, prefix string, re *regexp.Regexp) error {
	buf := make([]byte, 0, maxAnswer)
	for {
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if !bytes.HasPrefix(buf, []byte(prefix[:min(len(prefix), len(buf))])) {
			return fmt.Errorf("answer %q does not start with %q", clip(buf), prefix)
		}
		if len(buf) >= len(prefix) && (re == nil || re.Match(buf)) {
			return nil
		}
		if err != nil || len(buf) == cap(buf) {
			want := fmt.Sprintf("%q", prefix)
			if re != nil {
				want = fmt.Sprintf("a match of %q", re)
			}
			if err == nil {
				err = fmt.Errorf("no match in %d bytes", maxAnswer)
			}
			return fmt.Errorf("answer %q is not %s: %w", clip(buf), want, err)
		}
	}
}

// clip shortens an answer for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// closeAbortive closes a check's connection with a reset: the checker
// does not keep a TIME_WAIT socket per check, as HAProxy's checks do not.
func closeAbortive(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
