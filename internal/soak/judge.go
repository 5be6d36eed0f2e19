package soak

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/load"
)

// How the sessions are judged: generous on time, strict on bytes.
const (
	// PauseKnown: a session started this long after a docker pause
	// returned must not be routed to the paused backend.
	PauseKnown = 3 * time.Second
	// CutClose: a session on a backend that was killed, removed or
	// disconnected must be closed (EOF or reset, not left hanging) within
	// this long of the engine call's return.
	CutClose = 10 * time.Second
)

// The rules a session can break; Verdict.Violations is keyed by them.
var (
	RuleCorrupt     = "corrupted bytes"
	RuleDecoy       = "reached a server that is no backend (a decoy)"
	RuleWrongTarget = "reached a backend of a target its route did not point at"
	RulePaused      = fmt.Sprintf("routed to a backend paused more than %s before", PauseKnown)
	RuleFailed      = "failed although its backend was not taken away"
	RuleNotClosed   = fmt.Sprintf("not closed (EOF or reset) within %s of the cut of its backend", CutClose)
	RuleNoIdentity  = "failed without an identity while no backend its route could pick was taken away"
)

// Session is one client session through the ambassador, as the client saw
// it.
type Session struct {
	Route        int    // the route's index in the History
	Addr         string // the address the client dialled
	Long         bool
	Start, End   time.Time
	ID           dataproto.Identity // who answered; zero Name when no identity came back
	Sent, Echoed int64
	Corrupt      string // what was wrong with the bytes received; empty when every one was right
	Err          error  // why it did not complete; nil when it did
}

// OK reports whether the session completed with every byte right.
func (s Session) OK() bool { return s.Err == nil && s.Corrupt == "" }

func (s Session) String() string {
	kind := "short"
	if s.Long {
		kind = "long"
	}
	who := "no identity"
	if s.ID.Name != "" {
		who = fmt.Sprintf("%s (at %s, accepted %s)", s.ID.Name, s.ID.Local, s.ID.Accepted.Format("15:04:05.000"))
	}
	out := fmt.Sprintf("%s %s session %s +%s on %s, %d of %d bytes echoed",
		s.Addr, kind, s.Start.Format("15:04:05.000"), s.End.Sub(s.Start).Round(time.Millisecond), who, s.Echoed, s.Sent)
	if s.Corrupt != "" {
		out += ", CORRUPT: " + s.Corrupt
	}
	if s.Err != nil {
		out += fmt.Sprintf(", %v (%s)", s.Err, load.How(s.Err))
	}
	return out
}

// Closed reports whether err is a connection ending, cleanly or not, as
// opposed to a hang (a deadline) or an error of the client's own: EOF, a
// reset, a broken pipe, and a half-close refused because a reset has
// already ended the connection.
func Closed(err error) bool { return load.Closed(err) || errors.Is(err, syscall.ENOTCONN) }

// Verdict is the judgement of every session of a soak.
type Verdict struct {
	names  []string
	Routes []Tally // by route
	// Violations are the sessions that break a rule, by rule.
	Violations map[string][]Session
	// Excused are the sessions that failed, closed, with their backend
	// taken away.
	Excused []Session
	// InCut counts the sessions, failed or not, that overlapped the cut of
	// a backend their route could pick: those the excuse for a session
	// without an identity would cover, had they failed. It says how much
	// that excuse can hide.
	InCut int
}

// Tally counts one route's sessions by outcome.
type Tally struct {
	Total, Long int
	OK          int // completed, every byte right
	Excused     int // failed, closed, with their backend taken away
	Failed      int // failed otherwise, or got a byte wrong
}

// Judge checks every session against the history h. Nothing lost means:
//
//   - no session gets a byte wrong (RuleCorrupt): every echo is a correct
//     prefix of what was sent, whatever happened to its backend; no excuse
//     covers a wrong byte;
//   - a session that identified its backend reached one its route could
//     select: a backend (RuleDecoy) of a target the route pointed at while
//     the session connected (RuleWrongTarget), not paused for PauseKnown
//     when the session began (RulePaused);
//   - a session that identified its backend completes, unless that backend
//     was cut while it ran (RuleFailed); then it must be closed, EOF or
//     reset, within CutClose of the cut (RuleNotClosed);
//   - a session that got no identity completes, unless a backend of a
//     target its route pointed at was cut while it ran (RuleNoIdentity),
//     and then it is held to the cut as above (RuleNotClosed).
//
// The last excuse is as narrow as the evidence allows. Without an identity
// nothing says which backend the ambassador picked, so any backend of the
// route's targets whose cut overlapped the session may be the one. But
// only a cut that overlapped the session itself can explain its failure:
// the ambassador dials a backend after the session began, and a backend
// whose cut had already ended by then (killed and stopped, removed, or
// disconnected) refuses or never answers that dial, so the ambassador
// tries another and the session is slow, not failed. A cut that ended
// before the session began, even one the ambassador had not heard of yet,
// excuses nothing.
func Judge(h *History, sessions []Session) Verdict {
	v := Verdict{names: h.names, Routes: make([]Tally, h.Routes()), Violations: map[string][]Session{}}
	bad := func(rule string, s Session) { v.Violations[rule] = append(v.Violations[rule], s) }
	excuse := func(t *Tally, s Session) {
		t.Excused++
		v.Excused = append(v.Excused, s)
	}
	sessions = slices.Clone(sessions)
	slices.SortFunc(sessions, func(a, b Session) int { return a.Start.Compare(b.Start) })
	for _, s := range sessions {
		tally := &v.Routes[s.Route]
		tally.Total++
		if s.Long {
			tally.Long++
		}
		cuts := h.routeCuts(s)
		if len(cuts) > 0 {
			v.InCut++
		}
		if s.Corrupt != "" {
			bad(RuleCorrupt, s)
		}
		if s.ID.Name != "" {
			target, ok := ParseIdent(s.ID.Name)
			switch {
			case !ok || target >= h.Routes():
				bad(RuleDecoy, s)
			case !slices.Contains(h.Targets(s.Route, s.Start, later(s.Start, s.ID.Accepted)), target):
				bad(RuleWrongTarget, s)
			case h.PausedAt(s.ID.Name, s.Start, PauseKnown):
				bad(RulePaused, s)
			}
		}
		switch {
		case s.OK():
			tally.OK++
		case s.Corrupt != "":
			// Already a violation, and never excused, whatever happened
			// to its backend.
			tally.Failed++
		case s.ID.Name != "":
			cut, ok := h.CutDuring(s.ID.Name, s.Start, s.End)
			switch {
			case !ok:
				tally.Failed++
				bad(RuleFailed, s)
			case !Closed(s.Err) || s.End.After(cut.End.Add(CutClose)):
				tally.Failed++
				bad(RuleNotClosed, s)
			default:
				excuse(tally, s)
			}
		case len(cuts) == 0:
			tally.Failed++
			bad(RuleNoIdentity, s)
		case !Closed(s.Err) || s.End.After(lastEnd(cuts).Add(CutClose)):
			tally.Failed++
			bad(RuleNotClosed, s)
		default:
			excuse(tally, s)
		}
	}
	return v
}

// routeCuts returns the cuts that overlapped s of backends of the targets
// its route pointed at while it ran.
func (h *History) routeCuts(s Session) []Span {
	var out []Span
	for _, target := range h.Targets(s.Route, s.Start, s.End) {
		out = append(out, h.TargetCuts(target, s.Start, s.End)...)
	}
	return out
}

// lastEnd returns the latest end of cuts.
func lastEnd(cuts []Span) time.Time {
	var t time.Time
	for _, c := range cuts {
		t = later(t, c.End)
	}
	return t
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// String summarises the verdict route by route.
func (v Verdict) String() string {
	var parts []string
	for r, n := range v.Routes {
		parts = append(parts, fmt.Sprintf("route %s (t%d): %d (%d long), %d ok, %d failed with their backend taken away (excused), %d failed otherwise",
			v.names[r], r, n.Total, n.Long, n.OK, n.Excused, n.Failed))
	}
	total := 0
	for _, n := range v.Routes {
		total += n.Total
	}
	parts = append(parts, fmt.Sprintf("%d of %d sessions overlapped a cut of a backend their route could pick", v.InCut, total))
	return strings.Join(parts, "; ")
}

// Rules returns the rules broken, sorted.
func (v Verdict) Rules() []string { return slices.Sorted(maps.Keys(v.Violations)) }

// List lists up to ten sessions, one per line.
func List(ss []Session) string {
	var b strings.Builder
	for i, s := range ss {
		if i == 10 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(ss)-i)
			break
		}
		fmt.Fprintf(&b, "  %s\n", s)
	}
	return b.String()
}
