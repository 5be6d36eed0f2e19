//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// The drain test's graces: the daemon's --drain, and the one `rewire
// --drain` asks for instead. They are far apart, so that a close tells
// which one ended.
const (
	drainFlag     = 300 * time.Millisecond
	drainOverride = 5 * time.Second
	// drainLate bounds how long after a grace a connection it ends may
	// take to be closed, counted from the return of the command (or the
	// engine's event) that started the grace.
	drainLate = 2 * time.Second
	// drainSessions is how many connections each backend holds when the
	// route leaves it.
	drainSessions = 2
	// drainHang is how long past its grace a watched connection may stay
	// open before it counts as left hanging.
	drainHang = 10 * time.Second
)

// TestRewireDrain: --drain end to end. An ambassador run with --drain
// 300ms is rewired four times while each backend holds two established
// connections:
//
//  1. by hand (`ambassadord rewire ROUTE b`): the connections on a are
//     closed no earlier than 300 ms after the command was called and
//     within 2 s of the grace's end, by EOF or a reset (never left to a
//     deadline), and the log counts them; those on b stay and echo;
//  2. by hand with `--drain 5s`: the request's grace replaces the flag's
//     for this rewire, so the connections on b stay for 5 s, then close;
//  3. `rewire --reset`: the flag's 300 ms again, the override having been
//     for one rewire only;
//  4. by a label claim (a container claiming the route's target with a
//     higher priority starts): the engine's rewire drains after the flag's
//     grace too.
func TestRewireDrain(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	for _, name := range []string{"a", "b", "c"} {
		startServer(t, ctx, harness.Spec{Name: name, Networks: []string{n.Name}}, name)
	}
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: fullName(t, "a"), labelPorts: strconv.Itoa(dataPort)},
		Cmd:      []string{"--drain", drainFlag.String()},
	})
	target, route := addr(amb, dataPort), strconv.Itoa(dataPort)
	waitServedBy(t, ctx, target, "a")

	// rewire runs `ambassadord rewire ARGS...` in the ambassador, requires
	// that new connections go to want once it returns, and returns when it
	// was called and when it returned.
	rewire := func(want string, args ...string) (called, returned time.Time) {
		t.Helper()
		called = time.Now()
		stdout, stderr, code := dockerExec(t, ctx, amb, append([]string{"/ambassadord", "rewire"}, args...)...)
		returned = time.Now()
		require.Equal(t, 0, code, "rewire: %s%s", stdout, stderr)
		// The rewire is applied before the command returns.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		id, err := load.Whoami(wctx, target)
		require.NoError(t, err)
		require.Equal(t, want, id.Name, "the first connection after the rewire")
		return called, returned
	}

	// 1. The flag's grace, for a rewire by hand.
	onA := drainOpen(t, ctx, target, "a")
	ends := drainWatch(onA, time.Now().Add(drainFlag+drainHang))
	called, returned := rewire("b", route, fullName(t, "b"))
	onB := drainOpen(t, ctx, target, "b")
	took := drainCheck(t, "the flag's grace", ends, called, returned, drainFlag)
	drainCounted(t, ctx, amb, route, 1)
	for _, s := range onB {
		echo(t, s, "still on b after a's drain")
	}
	t.Logf("--drain %s, rewire by hand: a's connections closed %v after the command was called", drainFlag, took)

	// 2. `rewire --drain` replaces the flag's grace for its rewire.
	ends = drainWatch(onB, time.Now().Add(drainOverride+drainHang))
	called, returned = rewire("c", route, fullName(t, "c"), "--drain", drainOverride.String())
	onC := drainOpen(t, ctx, target, "c")
	took = drainCheck(t, "the request's grace", ends, called, returned, drainOverride)
	drainCounted(t, ctx, amb, route, 2)
	for _, s := range onC {
		echo(t, s, "still on c after b's drain")
	}
	t.Logf("--drain %s, rewire --drain %s: b's connections closed %v after the command was called", drainFlag, drainOverride, took)

	// 3. For that one rewire only: a reset drains after the flag's grace.
	ends = drainWatch(onC, time.Now().Add(drainFlag+drainHang))
	called, returned = rewire("a", "--reset", route)
	onA = drainOpen(t, ctx, target, "a")
	took = drainCheck(t, "the flag's grace after an override", ends, called, returned, drainFlag)
	drainCounted(t, ctx, amb, route, 3)
	for _, s := range onA {
		echo(t, s, "still on a after c's drain")
	}
	t.Logf("--drain %s, rewire --reset after an override: c's connections closed %v after the command was called", drainFlag, took)

	// 4. A label claim: the engine's rewire drains after the flag's grace.
	ends = drainWatch(onA, time.Now().Add(drainFlag+drainHang))
	starting := time.Now()
	startServer(t, ctx, harness.Spec{
		Name: "d", Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: fullName(t, "a"), labelPriority: "10"},
	}, "d")
	waitServedBy(t, ctx, target, "d")
	moved := time.Now()
	onD := drainOpen(t, ctx, target, "d")
	took = drainCheck(t, "the flag's grace after a claim", ends, starting, moved, drainFlag)
	drainCounted(t, ctx, amb, route, 4)
	for _, s := range onD {
		echo(t, s, "still on d after a's drain")
	}
	t.Logf("--drain %s, label claim: a's connections closed %v after the claimer's start was called (served by it %v after)",
		drainFlag, took, moved.Sub(starting).Round(time.Millisecond))
}

// drainOpen opens drainSessions established connections to addr and
// requires them answered by want.
func drainOpen(t *testing.T, ctx context.Context, addr, want string) []*load.Session {
	t.Helper()
	var ss []*load.Session
	for range drainSessions {
		s := openSession(t, ctx, addr)
		require.Equal(t, want, s.ID.Name, "an established connection")
		ss = append(ss, s)
	}
	return ss
}

// drainEnd is how and when an established connection ended.
type drainEnd struct {
	at  time.Time
	err error
}

// drainWatch reads each session until it ends, or until deadline, and
// reports how on the returned channel, one value per session. A session
// that ends by its deadline was left hanging.
func drainWatch(ss []*load.Session, deadline time.Time) <-chan drainEnd {
	ends := make(chan drainEnd, len(ss))
	for _, s := range ss {
		s.Conn.SetDeadline(deadline)
		go drainRead(s, ends)
	}
	return ends
}

// drainRead reads s until an error ends it, and reports when and which.
func drainRead(s *load.Session, ends chan<- drainEnd) {
	for {
		if _, err := s.R.ReadByte(); err != nil {
			ends <- drainEnd{at: time.Now(), err: err}
			return
		}
	}
}

// drainCheck requires every watched connection to be closed, by EOF or a
// reset, no earlier than grace after called (the rewire cannot have been
// applied before it was asked for) and no later than drainLate past the
// grace after returned (by then it was applied). It returns how long after
// called the last one closed.
func drainCheck(t *testing.T, what string, ends <-chan drainEnd, called, returned time.Time, grace time.Duration) time.Duration {
	t.Helper()
	var last time.Duration
	for i := range drainSessions {
		e := <-ends
		took := e.at.Sub(called)
		last = max(last, took)
		require.Truef(t, load.Closed(e.err), "%s: connection %d ended by %v (%s) %v after the rewire: not closed", what, i, e.err, load.How(e.err), took)
		assert.GreaterOrEqualf(t, took, grace, "%s: connection %d closed %v after the rewire was asked for, before the grace (%s) was over", what, i, took, grace)
		assert.Falsef(t, e.at.After(returned.Add(grace+drainLate)),
			"%s: connection %d closed %v after the rewire returned, over %v past the grace (%s)", what, i, e.at.Sub(returned), drainLate, grace)
	}
	return last.Round(time.Millisecond)
}

// drainCounted waits until the ambassador has logged n drains of route,
// and requires the last one to count drainSessions connections closed.
func drainCounted(t *testing.T, ctx context.Context, amb *harness.Container, route string, n int) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var drains []map[string]any
	err := harness.Poll(wctx, func(ctx context.Context) error {
		stdout, stderr, err := eng.Logs(ctx, amb.ID)
		if err != nil {
			return err
		}
		drains = nil
		for line := range strings.Lines(stdout + stderr) {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == "drain over; closed connections to previous backends" {
				drains = append(drains, entry)
			}
		}
		if len(drains) < n {
			return fmt.Errorf("%d drains logged, want %d", len(drains), n)
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, drains, n, "drains logged")
	last := drains[n-1]
	assert.Equal(t, route, last["route"], "the drain's route")
	assert.EqualValues(t, drainSessions, last["closed"], "connections the drain closed, by the log: %v", last)
}
