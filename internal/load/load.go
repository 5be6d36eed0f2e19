// Package load is the load generator of the e2e tests and of the
// benchmark's rewires: it opens a fresh connection to one address at a
// steady pace, each asking the dataserver fixture that answers who it is
// (dataproto.ModeWhoami), and records every attempt: when it started and
// ended, which server answered and when that server accepted it, or why it
// failed. A test then asks the record which server served what, and when
// new connections moved from one backend to another. A Session is the
// other kind of connection the tests hold: one whoami connection kept open
// for echoes, to see what a change does to established connections.
//
// Concurrency contract: Start runs the load in goroutines the Load owns;
// Stop ends them and waits for them. Every method of a Load is safe for
// concurrent use. A Result is a copy, owned by its caller.
package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
)

// Defaults of Config's zero fields.
const (
	defaultInterval    = 5 * time.Millisecond
	defaultConcurrency = 64
	defaultTimeout     = 12 * time.Second
	defaultWaitTimeout = 30 * time.Second
)

// Config is the shape of a load. The zero value is the e2e tests' load: a
// connection every 5 ms, at most 64 in flight, each given 12 s, without
// end.
type Config struct {
	// Interval is the pace of fresh connections, and so the resolution of
	// the times a test reads from them (default 5 ms).
	Interval time.Duration
	// Concurrency bounds the connections in flight (default 64): a tick
	// that finds them all busy, every one waiting for a backend, is
	// skipped and counted rather than queued.
	Concurrency int
	// Timeout bounds one attempt, dial and exchange (default 12 s): longer
	// than the longest wait for a backend the ambassador under test is
	// given, so that an attempt that reaches it hangs.
	Timeout time.Duration
	// MaxAttempts, if not 0, ends a load that nobody stops after that
	// many ticks.
	MaxAttempts int
	// WaitTimeout bounds WaitLanded (default 30 s), besides its context.
	WaitTimeout time.Duration
}

func (c Config) interval() time.Duration    { return orDefault(c.Interval, defaultInterval) }
func (c Config) timeout() time.Duration     { return orDefault(c.Timeout, defaultTimeout) }
func (c Config) waitTimeout() time.Duration { return orDefault(c.WaitTimeout, defaultWaitTimeout) }

func (c Config) concurrency() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	return defaultConcurrency
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Attempt is one connection of a load.
type Attempt struct {
	Start, End time.Time          // around the whole exchange, by the host's clock
	ID         dataproto.Identity // who answered; zero Name when it failed
	Err        error              // why it failed; nil when it completed
}

// OK reports whether the attempt completed: an identity, then EOF.
func (a Attempt) OK() bool { return a.Err == nil }

// Took is how long the attempt lasted.
func (a Attempt) Took() time.Duration { return a.End.Sub(a.Start) }

// Load is a load running against one address.
type Load struct {
	addr   string
	cfg    Config
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned and every attempt ended

	mu       sync.Mutex
	attempts []Attempt // guarded by mu, in order of completion
	skipped  int       // guarded by mu: ticks with every slot busy
}

// Start starts a load against addr. The caller must Stop it.
func Start(addr string, cfg Config) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{addr: addr, cfg: cfg, cancel: cancel, done: make(chan struct{})}
	go l.run(ctx)
	return l
}

// run starts an attempt every interval until ctx ends, then waits for the
// attempts in flight: they are not cut short, since a cut attempt would
// count as a failure of the ambassador.
func (l *Load) run(ctx context.Context) {
	defer close(l.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, l.cfg.concurrency())
	tick := time.NewTicker(l.cfg.interval())
	defer tick.Stop()
	for n := 0; l.cfg.MaxAttempts == 0 || n < l.cfg.MaxAttempts; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if ctx.Err() != nil {
			return // both were ready: the stop wins
		}
		select {
		case slots <- struct{}{}:
		default:
			l.mu.Lock()
			l.skipped++
			l.mu.Unlock()
			continue
		}
		wg.Go(func() {
			a := l.try()
			<-slots
			l.mu.Lock()
			l.attempts = append(l.attempts, a)
			l.mu.Unlock()
		})
	}
}

// try makes one whoami exchange with a fresh connection.
func (l *Load) try() Attempt {
	a := Attempt{Start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.timeout())
	defer cancel()
	a.ID, a.Err = Whoami(ctx, l.addr)
	a.End = time.Now()
	return a
}

// Stop stops starting attempts, waits for those in flight and returns
// them all, in order of start. It may be called more than once.
func (l *Load) Stop() Result {
	l.cancel()
	<-l.done
	return l.Result()
}

// Result returns the attempts finished so far, in order of start.
func (l *Load) Result() Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	as := slices.Clone(l.attempts)
	slices.SortFunc(as, func(a, b Attempt) int { return a.Start.Compare(b.Start) })
	return Result{Attempts: as, Skipped: l.skipped}
}

// WaitLanded waits, for up to Config.WaitTimeout, until at least n
// attempts that started at or after after have been answered by the
// server named name, and returns the result so far.
func (l *Load) WaitLanded(ctx context.Context, name string, after time.Time, n int) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.waitTimeout())
	defer cancel()
	var res Result
	err := harness.Poll(ctx, func(context.Context) error {
		res = l.Result()
		got := len(res.Filter(func(a Attempt) bool { return a.ID.Name == name && !a.Start.Before(after) }))
		if got >= n {
			return nil
		}
		return fmt.Errorf("%d of %d attempts landed on %s so far (%s)", got, n, name, res)
	})
	return res, err
}

// Whoami asks the server behind addr, through a fresh connection, who it
// is: it sends the header, half-closes, and requires an identity followed
// by EOF, nothing else. ctx bounds the whole exchange.
func Whoami(ctx context.Context, addr string) (dataproto.Identity, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return dataproto.Identity{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	tc := c.(*net.TCPConn)
	if _, err := tc.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
		return dataproto.Identity{}, fmt.Errorf("send header: %w", err)
	}
	if err := tc.CloseWrite(); err != nil {
		return dataproto.Identity{}, fmt.Errorf("half-close: %w", err)
	}
	r := bufio.NewReader(tc)
	id, err := dataproto.ReadIdentity(r)
	if err != nil {
		return dataproto.Identity{}, err
	}
	if n, err := io.Copy(io.Discard, r); err != nil || n != 0 {
		return dataproto.Identity{}, fmt.Errorf("after the identity of %s: %d more bytes, %v", id.Name, n, err)
	}
	return id, nil
}

// Result is the record of a load.
type Result struct {
	Attempts []Attempt // in order of start
	Skipped  int       // ticks skipped with every slot busy
}

// String summarises the result: attempts per server, and failures.
func (r Result) String() string {
	by := map[string]int{}
	for _, a := range r.Attempts {
		if a.OK() {
			by[a.ID.Name]++
		}
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s=%d", name, by[name]))
	}
	return fmt.Sprintf("%d attempts: %s, failed=%d, skipped ticks=%d",
		len(r.Attempts), strings.Join(parts, " "), len(r.Failed()), r.Skipped)
}

// Filter returns the attempts keep keeps, in order.
func (r Result) Filter(keep func(Attempt) bool) []Attempt {
	var out []Attempt
	for _, a := range r.Attempts {
		if keep(a) {
			out = append(out, a)
		}
	}
	return out
}

// Failed returns the attempts that got no answer.
func (r Result) Failed() []Attempt { return r.Filter(func(a Attempt) bool { return !a.OK() }) }

// On returns the attempts answered by the server named name.
func (r Result) On(name string) []Attempt {
	return r.Filter(func(a Attempt) bool { return a.ID.Name == name })
}

// First returns the attempt answered by name that its server accepted
// first, among those it accepted at or after after.
func (r Result) First(name string, after time.Time) (Attempt, bool) {
	var best Attempt
	found := false
	for _, a := range r.On(name) {
		if !a.ID.Accepted.Before(after) && (!found || a.ID.Accepted.Before(best.ID.Accepted)) {
			best, found = a, true
		}
	}
	return best, found
}

// StartedAfter returns the attempts that started after t.
func (r Result) StartedAfter(t time.Time) Result {
	return Result{Attempts: r.Filter(func(a Attempt) bool { return a.Start.After(t) })}
}

// Longest returns the longest attempt's duration.
func (r Result) Longest() time.Duration {
	var d time.Duration
	for _, a := range r.Attempts {
		d = max(d, a.Took())
	}
	return d
}

// Describe lists attempts for a failure message, at most ten.
func Describe(as []Attempt) string {
	var b strings.Builder
	for i, a := range as {
		if i == 10 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(as)-i)
			break
		}
		took := a.Took().Round(time.Millisecond)
		switch {
		case a.OK():
			fmt.Fprintf(&b, "  %s +%s: %s (accepted %s)\n", a.Start.Format("15:04:05.000"), took, a.ID.Name, a.ID.Accepted.Format("15:04:05.000"))
		default:
			fmt.Fprintf(&b, "  %s +%s: %v\n", a.Start.Format("15:04:05.000"), took, a.Err)
		}
	}
	return b.String()
}

// IsNoBackend reports whether a failure looks like the ambassador closing
// a connection it found no backend for: accepted, then closed before any
// byte came back.
func IsNoBackend(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// Closed reports whether err is a connection ending, cleanly (EOF) or not
// (reset, broken pipe), as opposed to a deadline: a client that hangs.
func Closed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// How names how a connection ended, for the logs.
func How(err error) string {
	switch {
	case err == nil:
		return "open"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "hung (deadline)"
	}
	return err.Error()
}

// Session is an established whoami connection, kept open: the server that
// answered it, and the connection to go on exchanging echoes with that
// same server (dataproto.ModeWhoami echoes after the identity).
type Session struct {
	Conn *net.TCPConn
	R    *bufio.Reader // reads Conn; it may hold bytes already received
	ID   dataproto.Identity
}

// Open connects to addr, sends a whoami header and reads which server
// answered. ctx bounds the dial and the identity's arrival; the caller
// closes the session.
func Open(ctx context.Context, addr string) (*Session, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Session{Conn: c.(*net.TCPConn), R: bufio.NewReader(c)}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
		c.Close()
		return nil, fmt.Errorf("send header: %w", err)
	}
	if s.ID, err = dataproto.ReadIdentity(s.R); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return s, nil
}

// Echo sends msg and requires it back within timeout.
func (s *Session) Echo(msg []byte, timeout time.Duration) error {
	s.Conn.SetDeadline(time.Now().Add(timeout))
	if _, err := s.Conn.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s.R, got); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q of %q", got, msg)
	}
	return nil
}

// Close closes the session's connection.
func (s *Session) Close() error { return s.Conn.Close() }
