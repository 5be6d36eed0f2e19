//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
)

// The load a dynamic test runs while it changes the engine: a fresh
// connection every loadInterval, each asking which server answers it.
const (
	loadInterval = 5 * time.Millisecond
	// loadConcurrency bounds the connections in flight; a tick that finds
	// them all busy (every one waiting for a backend) is skipped and
	// counted.
	loadConcurrency = 64
	// loadMaxAttempts bounds a load that nobody stops.
	loadMaxAttempts = 20000
	// attemptTimeout bounds one connection: the longest --backend-wait of
	// the tests (recreateWait, 8s) plus slack for a busy machine.
	attemptTimeout = 12 * time.Second
)

// attempt is one connection of a load.
type attempt struct {
	start, end time.Time          // around the whole exchange, host clock
	id         dataproto.Identity // who answered; zero Name when it failed
	err        error
}

func (a attempt) ok() bool { return a.err == nil }

// load opens fresh connections to an address in the background and records
// every attempt. Its methods are safe for concurrent use.
type load struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned and every attempt ended

	mu       sync.Mutex
	attempts []attempt // guarded by mu, in order of completion
	skipped  int       // guarded by mu: ticks with every slot busy
}

// startLoad starts a load against addr; it stops when the test ends, if
// the test has not stopped it before.
func startLoad(t *testing.T, addr string) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{addr: addr, cancel: cancel, done: make(chan struct{})}
	go l.run(ctx)
	t.Cleanup(func() { l.stop() })
	return l
}

// run starts an attempt every loadInterval until ctx ends, then waits for
// the attempts in flight: they are not cut short, since a cut attempt
// would count as a failure of the ambassador.
func (l *load) run(ctx context.Context) {
	defer close(l.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, loadConcurrency)
	tick := time.NewTicker(loadInterval)
	defer tick.Stop()
	for n := 0; n < loadMaxAttempts; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			l.mu.Lock()
			l.skipped++
			l.mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := tryWhoami(l.addr)
			<-slots
			l.mu.Lock()
			l.attempts = append(l.attempts, a)
			l.mu.Unlock()
		}()
	}
}

// tryWhoami makes one whoami exchange with a fresh connection: header,
// half-close, then the server's identity line and its EOF.
func tryWhoami(addr string) attempt {
	a := attempt{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	a.id, a.err = whoami(ctx, addr)
	a.end = time.Now()
	return a
}

// whoami asks the server behind addr, through a fresh connection, who it
// is. The exchange must end cleanly: an identity followed by EOF.
func whoami(ctx context.Context, addr string) (dataproto.Identity, error) {
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

// stop stops starting attempts, waits for those in flight and returns them
// all, in order of start.
func (l *load) stop() loadResult {
	l.cancel()
	<-l.done
	res := l.result()
	return res
}

// result returns the attempts finished so far, in order of start.
func (l *load) result() loadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	as := slices.Clone(l.attempts)
	slices.SortFunc(as, func(a, b attempt) int { return a.start.Compare(b.start) })
	return loadResult{attempts: as, skipped: l.skipped}
}

// waitLanded waits, for up to readyTimeout, until at least n attempts that
// started at or after after have been answered by the server named name,
// and returns the result so far.
func (l *load) waitLanded(ctx context.Context, name string, after time.Time, n int) (loadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var res loadResult
	err := harness.Poll(ctx, func(context.Context) error {
		res = l.result()
		got := len(res.filter(func(a attempt) bool { return a.id.Name == name && !a.start.Before(after) }))
		if got >= n {
			return nil
		}
		return fmt.Errorf("%d of %d attempts landed on %s so far (%s)", got, n, name, res)
	})
	return res, err
}

// loadResult is the record of a load.
type loadResult struct {
	attempts []attempt // in order of start
	skipped  int
}

// String summarises the result: attempts per server, and failures.
func (r loadResult) String() string {
	by := map[string]int{}
	for _, a := range r.attempts {
		if a.ok() {
			by[a.id.Name]++
		}
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s=%d", name, by[name]))
	}
	return fmt.Sprintf("%d attempts: %s, failed=%d, skipped ticks=%d",
		len(r.attempts), strings.Join(parts, " "), len(r.failed()), r.skipped)
}

func (r loadResult) filter(keep func(attempt) bool) []attempt {
	var out []attempt
	for _, a := range r.attempts {
		if keep(a) {
			out = append(out, a)
		}
	}
	return out
}

// failed returns the attempts that got no answer.
func (r loadResult) failed() []attempt { return r.filter(func(a attempt) bool { return !a.ok() }) }

// on returns the attempts answered by the server named name.
func (r loadResult) on(name string) []attempt {
	return r.filter(func(a attempt) bool { return a.id.Name == name })
}

// first returns the attempt answered by name that its server accepted
// first, among those it accepted at or after after.
func (r loadResult) first(name string, after time.Time) (attempt, bool) {
	var best attempt
	found := false
	for _, a := range r.on(name) {
		if !a.id.Accepted.Before(after) && (!found || a.id.Accepted.Before(best.id.Accepted)) {
			best, found = a, true
		}
	}
	return best, found
}

// startedAfter returns the attempts that started after t.
func (r loadResult) startedAfter(t time.Time) loadResult {
	return loadResult{attempts: r.filter(func(a attempt) bool { return a.start.After(t) })}
}

// describe lists attempts for a failure message, at most ten.
func describe(as []attempt) string {
	var b strings.Builder
	for i, a := range as {
		if i == 10 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(as)-i)
			break
		}
		switch {
		case a.ok():
			fmt.Fprintf(&b, "  %s +%s: %s (accepted %s)\n", a.start.Format("15:04:05.000"), a.end.Sub(a.start).Round(time.Millisecond),
				a.id.Name, a.id.Accepted.Format("15:04:05.000"))
		default:
			fmt.Fprintf(&b, "  %s +%s: %v\n", a.start.Format("15:04:05.000"), a.end.Sub(a.start).Round(time.Millisecond), a.err)
		}
	}
	return b.String()
}

// longest returns the longest attempt's duration.
func (r loadResult) longest() time.Duration {
	var d time.Duration
	for _, a := range r.attempts {
		d = max(d, a.end.Sub(a.start))
	}
	return d
}

// isNoBackend reports whether a failure looks like the ambassador closing
// a connection it found no backend for: accepted, then closed before any
// byte came back.
func isNoBackend(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "connection reset")
}
