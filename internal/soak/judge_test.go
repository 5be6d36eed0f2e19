package soak

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
)

var (
	t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// The errors a session ends with.
	reset    = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	deadline = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	notConn  = &net.OpError{Op: "shutdown", Net: "tcp", Err: os.NewSyscallError("shutdown", syscall.ENOTCONN)}
)

// at is t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// history is a hand-made record: routes 9000 (t0) and 9001 (t1); the
// backend t0-b1-g0 killed from 10.000 s to 10.200 s; t1-b0-g0
// disconnected from 20.000 s to 20.100 s; t0-b0-g0 paused at 30 s and
// unpaused at 36 s; route 9000 rewired to t1 from 40 s to 45 s (the
// command returned at 40.050 s and 45.050 s).
func history() *History {
	h := NewHistory("9000", "9001")
	h.Cut("t0-b1-g0", Kill, at(10000), at(10200))
	h.Cut("t1-b0-g0", Disconnect, at(20000), at(20100))
	h.Pause("t0-b0-g0", at(30000))
	h.Unpause("t0-b0-g0", at(36000))
	h.Rewire(0, 1, at(40000), at(40050))
	h.Rewire(0, 0, at(45000), at(45050))
	return h
}

// session is a session on route from ms to ms+took milliseconds, served
// by name (accepted at its start) or by nobody, ended by err.
func session(route int, name string, ms, took int, err error) Session {
	s := Session{Route: route, Addr: fmt.Sprintf("amb:%d", 9000+route), Start: at(ms), End: at(ms + took), Err: err, Sent: 10, Echoed: 10}
	if name != "" {
		s.ID = dataproto.Identity{Name: name, Accepted: at(ms + 1)}
	}
	if err != nil {
		s.Echoed = 3
	}
	return s
}

// outcome is where a session lands: ok, excused, or the rule it breaks.
const (
	ok      = "ok"
	excused = "excused"
)

func TestJudge(t *testing.T) {
	corrupt := func(s Session) Session { s.Corrupt = "echo byte 3 of 10 differs"; return s }
	accepted := func(s Session, ms int) Session { s.ID.Accepted = at(ms); return s }
	tests := []struct {
		name string
		s    Session
		want string
	}{
		{"completed on its route's backend", session(0, "t0-b0-g0", 1000, 5, nil), ok},

		// Bytes: never excused.
		{"a wrong byte", corrupt(session(0, "t0-b0-g0", 1000, 5, nil)), RuleCorrupt},
		{"a wrong byte on a backend cut while it ran", corrupt(session(0, "t0-b1-g0", 9900, 200, io.ErrUnexpectedEOF)), RuleCorrupt},

		// Where a session may land.
		{"a decoy", session(0, "decoy-near", 1000, 5, nil), RuleDecoy},
		{"a backend of a target no route has", session(0, "t7-b0-g0", 1000, 5, nil), RuleDecoy},
		{"a backend of another route's target", session(0, "t1-b0-g0", 1000, 5, nil), RuleWrongTarget},
		{"the rewired target while rewired", session(0, "t1-b0-g0", 42000, 5, nil), ok},
		{"the rewired target, connected as the rewire returned", session(0, "t1-b0-g0", 40040, 5, nil), ok},
		{"the own target, connected as the rewire was called", session(0, "t0-b0-g0", 40010, 5, nil), ok},
		{"the own target, well into the rewire", session(0, "t0-b0-g0", 42000, 5, nil), RuleWrongTarget},
		{"the rewired target after the reset", session(0, "t1-b0-g0", 46000, 5, nil), RuleWrongTarget},
		{"the rewired target, accepted after the reset, started before", accepted(session(0, "t1-b0-g0", 44000, 2000, nil), 45500), ok},
		{"a backend paused a moment ago", session(0, "t0-b0-g0", 31000, 5, nil), ok},
		{"a backend paused for longer than PauseKnown", session(0, "t0-b0-g0", 33001, 5, nil), RulePaused},
		{"a backend unpaused", session(0, "t0-b0-g0", 36000, 5, nil), ok},

		// A session that identified its backend.
		{"cut with its backend, reset", session(0, "t0-b1-g0", 9000, 1100, reset), excused},
		{"cut with its backend, EOF", session(0, "t0-b1-g0", 9000, 1100, io.ErrUnexpectedEOF), excused},
		{"began during the cut of its backend", session(0, "t0-b1-g0", 10100, 50, reset), excused},
		{"failed though its backend stayed", session(0, "t0-b0-g0", 9000, 1100, reset), RuleFailed},
		{"failed after its backend's cut had ended", session(0, "t0-b1-g0", 10300, 100, reset), RuleFailed},
		{"cut with its backend but left hanging", session(0, "t0-b1-g0", 9000, 5000, deadline), RuleNotClosed},
		{"cut with its backend, closed too late", session(0, "t0-b1-g0", 9000, 1200+int(CutClose/time.Millisecond)+1, reset), RuleNotClosed},

		// A session that got no identity: excused only by a cut of a
		// backend its route could pick, overlapping it.
		{"no identity, during a cut of its target's backend", session(0, "", 10050, 20, reset), excused},
		{"no identity, half-close refused by a reset during a cut", session(0, "", 10050, 20, notConn), excused},
		{"no identity, began before the cut and ended in it", session(0, "", 9990, 20, reset), excused},
		{"no identity, the cut over 100 ms before it began", session(0, "", 10300, 20, reset), RuleNoIdentity},
		{"no identity, the cut over 2 s before it began", session(0, "", 12200, 20, reset), RuleNoIdentity},
		{"no identity, ended before the cut began", session(0, "", 9900, 50, reset), RuleNoIdentity},
		{"no identity, during a cut of another target's backend", session(0, "", 20050, 20, reset), RuleNoIdentity},
		{"no identity, on the other route during that cut", session(1, "", 20050, 20, reset), excused},
		{"no identity, nothing cut", session(0, "", 5000, 20, io.EOF), RuleNoIdentity},
		{"no identity, during a cut, left hanging", session(0, "", 10050, 20000, deadline), RuleNotClosed},
		{"no identity, during a cut, closed too late", session(0, "", 10050, int(CutClose/time.Millisecond)+1000, reset), RuleNotClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(history(), []Session{tt.s})
			require.Len(t, v.Routes, 2)
			got := ok
			switch {
			case len(v.Violations) > 0:
				require.Len(t, v.Rules(), 1, "one rule broken: %v", v.Rules())
				got = v.Rules()[0]
			case len(v.Excused) > 0:
				got = excused
			}
			assert.Equal(t, tt.want, got)
			n := v.Routes[tt.s.Route]
			assert.Equal(t, 1, n.Total)
			assert.Equal(t, 1, n.OK+n.Excused+n.Failed, "counted once: %+v", n)
			assert.Equal(t, got == excused, n.Excused == 1, "tally %+v", n)
		})
	}
}

// TestJudgeRewiredTargetCut: a session without an identity on a rewired
// route is excused by a cut of the rewired target's backend, and a session
// on that target's own route too.
func TestJudgeRewiredTargetCut(t *testing.T) {
	h := NewHistory("9000", "9001")
	h.Rewire(0, 1, at(1000), at(1050))
	h.Cut("t1-b1-g2", "remove", at(2000), at(2300))
	v := Judge(h, []Session{
		session(0, "", 2100, 10, reset),
		session(1, "", 2100, 10, reset),
	})
	assert.Empty(t, v.Violations)
	assert.Len(t, v.Excused, 2)
}

// TestJudgeInCut counts the sessions the no-identity excuse would cover,
// failed or not.
func TestJudgeInCut(t *testing.T) {
	v := Judge(history(), []Session{
		session(0, "t0-b0-g0", 10050, 5, nil), // during t0-b1-g0's cut: covered
		session(0, "t0-b0-g0", 10300, 5, nil), // after it: not
		session(1, "t1-b1-g0", 20050, 5, nil), // during t1-b0-g0's cut: covered
		session(0, "t0-b0-g0", 20050, 5, nil), // t1's cut, route 9000 on t0: not
	})
	assert.Empty(t, v.Violations)
	assert.Equal(t, 2, v.InCut)
	assert.Contains(t, v.String(), "2 of 4 sessions overlapped a cut")
	assert.Contains(t, v.String(), "route 9000 (t0): 3 (0 long), 3 ok")
}

// TestJudgeOrder: sessions are judged in order of start, whatever order
// they ended in, and the caller's slice is left alone.
func TestJudgeOrder(t *testing.T) {
	ss := []Session{session(0, "", 5000, 10, io.EOF), session(0, "", 1000, 10, io.EOF)}
	v := Judge(history(), ss)
	require.Len(t, v.Violations[RuleNoIdentity], 2)
	assert.Equal(t, at(1000), v.Violations[RuleNoIdentity][0].Start)
	assert.Equal(t, at(5000), ss[0].Start)
}

func TestClosed(t *testing.T) {
	for _, err := range []error{io.EOF, io.ErrUnexpectedEOF, reset, notConn, fmt.Errorf("read the echo: %w", reset)} {
		assert.True(t, Closed(err), "%v", err)
	}
	for _, err := range []error{deadline, fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})} {
		assert.False(t, Closed(err), "%v", err)
	}
}

func TestSessionString(t *testing.T) {
	s := session(0, "t0-b0-g0", 1000, 5, reset)
	s.Corrupt = "echo byte 3 differs"
	assert.Equal(t, "amb:9000 short session 12:00:01.000 +5ms on t0-b0-g0 (at invalid AddrPort, accepted 12:00:01.001), 3 of 10 bytes echoed, CORRUPT: echo byte 3 differs, read tcp: read: connection reset by peer (reset)", s.String())
	assert.Contains(t, List(make([]Session, 12)), "  ... and 2 more\n")
}

func TestParseIdent(t *testing.T) {
	tests := []struct {
		name   string
		target int
		ok     bool
	}{
		{Ident(2, 1, 7), 2, true},
		{"t0-b0-g0", 0, true},
		{"t0-b0-g0x", 0, false},
		{"t00-b0-g0", 0, false},
		{"decoy-near", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		target, ok := ParseIdent(tt.name)
		assert.Equal(t, tt.ok, ok, tt.name)
		if ok {
			assert.Equal(t, tt.target, target, tt.name)
		}
	}
}

func TestHistoryTargets(t *testing.T) {
	h := history()
	assert.Equal(t, []int{0}, h.Targets(0, at(1000), at(2000)))
	assert.Equal(t, []int{0, 1}, h.Targets(0, at(39000), at(40000)), "the rewire's call")
	assert.Equal(t, []int{0, 1}, h.Targets(0, at(40050), at(40060)), "until it returned")
	assert.Equal(t, []int{1}, h.Targets(0, at(40051), at(44000)))
	assert.Equal(t, []int{1, 0}, h.Targets(0, at(44000), at(46000)))
	assert.Equal(t, []int{1}, h.Targets(1, at(40000), at(46000)))
	assert.Equal(t, 0, h.Current(0))
}
