// Package health runs the active health checks of backends: one checker
// per address and check (a Target), shared by every route that uses it.
//
// The controller tells a Monitor the whole set of targets it wants
// checked (Set) after every resolution; the monitor starts checking each
// new target and stops checking those no longer named. A target is
// checked every Check.Interval (with a tenth of jitter either way, its
// first check at a random point of its first interval, at most a second
// in, so that 500 backends appearing at once do not check at once), and
// at most MaxConcurrent checks of the monitor are in flight at a time. A target is Up once Rise checks in a
// row passed, and down again after Fall failures in a row; it starts
// down. Every change of a target's Up is signalled on Changed, which the
// controller's run loop selects on to re-apply its routes.
//
// The monitor owns one goroutine, started by the first Set, which runs
// the checks when they are due: those due within 100ms of each other
// together, so that the process wakes a few times a second rather than
// once per check. Close stops it and waits. Its methods are safe for
// concurrent use.
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

	// DialContext connects to a target. Nil means the monitor's own
	// connects (probe_linux.go), or a net.Dialer where those do not
	// apply. A hook for tests.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	once    sync.Once
	changed chan struct{} // capacity 1: a change not yet taken
	kick    chan struct{} // capacity 1: Set added a target; the loop looks again
	ctx     context.Context
	cancel  context.CancelFunc

	mu sync.Mutex
	// The fields below are guarded by mu.
	checkers map[Target]*checker
	closed   bool
	running  bool // the loop was started

	wg sync.WaitGroup // the loop
}

// checker is one target and its state.
type checker struct {
	target Target
	re     *regexp.Regexp // Check.ExpectRegexp compiled; nil without one
	// The fields below are guarded by Monitor.mu.
	state State
	next  time.Time // when the next check is due
}

func (m *Monitor) init() {
	m.once.Do(func() {
		m.changed = make(chan struct{}, 1)
		m.kick = make(chan struct{}, 1)
		m.checkers = make(map[Target]*checker)
		m.ctx, m.cancel = context.WithCancel(context.Background())
	})
}

func (m *Monitor) maxConcurrent() int {
	if m.MaxConcurrent > 0 {
		return m.MaxConcurrent
	}
	return defaultMaxConcurrent
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

// Set makes the checked targets exactly targets: new ones are checked
// from now on (the first check at a random point of the next second at
// most), those not named are no longer checked. Targets without an
// enabled check are ignored. Set after Close does nothing.
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
	for t := range m.checkers {
		if !want[t] {
			delete(m.checkers, t)
		}
	}
	added := false
	now := time.Now()
	for t := range want {
		if _, ok := m.checkers[t]; ok {
			continue
		}
		c := &checker{target: t, state: State{Since: now}}
		if t.Check.ExpectRegexp != "" {
			re, err := regexp.Compile(t.Check.ExpectRegexp)
			if err != nil {
				// The parser compiled it already; never fails here.
				m.logger().Error("health check regexp does not compile", zap.String("backend", t.Addr), zap.Error(err))
				continue
			}
			c.re = re
		}
		c.next = now.Add(time.Duration(rand.Int64N(int64(min(t.Check.Interval, maxFirstDelay)) + 1)))
		m.checkers[t] = c
		added = true
	}
	if !added {
		return
	}
	if !m.running {
		m.running = true
		m.wg.Add(1)
		go m.loop()
	}
	select {
	case m.kick <- struct{}{}:
	default:
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

// Close stops checking, and waits for the checks in flight.
func (m *Monitor) Close() {
	m.init()
	m.mu.Lock()
	m.closed = true
	clear(m.checkers)
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

func (m *Monitor) logger() *zap.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return zap.NewNop()
}

// coalesce is how early a check may run to share a wake-up with others
// due: the loop runs every check due within it at once, so that the
// process wakes a few times a second rather than once per check (a
// wake-up costs about as much as a check).
const coalesce = 100 * time.Millisecond

// loop is the monitor's one goroutine: it sleeps until checks are due,
// runs those due within coalesce together, at most MaxConcurrent at a
// time, records their results and schedules each one's next check an
// interval later, with a tenth of jitter either way.
func (m *Monitor) loop() {
	defer m.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, wait := m.due(time.Now())
		if len(due) == 0 {
			timer.Reset(wait)
			select {
			case <-m.ctx.Done():
				return
			case <-m.kick:
			case <-timer.C:
			}
			continue
		}
		for len(due) > 0 {
			n := min(len(due), m.maxConcurrent())
			batch := due[:n]
			due = due[n:]
			errs := m.probe(m.ctx, batch)
			if m.ctx.Err() != nil {
				return
			}
			for i, c := range batch {
				m.record(c, errs[i])
			}
		}
	}
}

// due returns the checkers whose check is due within coalesce of now,
// each with its next check scheduled, or, with none, how long until the
// first is.
func (m *Monitor) due(now time.Time) ([]*checker, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var due []*checker
	wait := time.Hour
	for _, c := range m.checkers {
		if until := c.next.Sub(now); until > coalesce {
			wait = min(wait, until-coalesce/2)
			continue
		}
		due = append(due, c)
		c.next = c.next.Add(jitter(c.target.Check.Interval))
		if c.next.Before(now) {
			// Late (a slow batch, a sleeping machine): from now on.
			c.next = now.Add(jitter(c.target.Check.Interval))
		}
	}
	return due, wait
}

// probe runs the checks of batch at once and returns their errors, in
// order: by the monitor's own connects where they apply
// (probe_linux.go), else each by check in a goroutine of its own.
func (m *Monitor) probe(ctx context.Context, batch []*checker) []error {
	errs := make([]error, len(batch))
	var rest []int
	if m.DialContext == nil {
		rest = probeRaw(ctx, batch, errs)
	} else {
		for i := range batch {
			rest = append(rest, i)
		}
	}
	var wg sync.WaitGroup
	for _, i := range rest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.check(ctx, batch[i])
		}()
	}
	wg.Wait()
	return errs
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
// Up. A checker removed meanwhile is left alone.
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
	if m.checkers[c.target] != c {
		m.mu.Unlock()
		return
	}
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
	up := s.Up
	if changed {
		s.Since = time.Now()
	}
	m.mu.Unlock()
	if !changed {
		return
	}
	if up {
		m.logger().Info("backend passes its health check", zap.String("backend", c.target.Addr), zap.Int("passes", chk.Rise))
	} else {
		m.logger().Warn("backend fails its health check", zap.String("backend", c.target.Addr), zap.Int("failures", chk.Fall), zap.Error(err))
	}
	m.signal()
}

// checkDialer connects the checks of the goroutine path: without
// keep-alive, whose socket options are system calls a connection that
// lasts a moment never uses.
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
