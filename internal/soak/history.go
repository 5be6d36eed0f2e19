package soak

import (
	"fmt"
	"slices"
	"time"
)

// Ident is the name a backend answers whoami with: its target, its slot in
// the target and its generation (recreating it makes a new one), so that
// every session says which container instance served it.
func Ident(target, slot, gen int) string { return fmt.Sprintf("t%d-b%d-g%d", target, slot, gen) }

// ParseIdent is the inverse of Ident; ok is false for any other name (a
// decoy's).
func ParseIdent(name string) (target int, ok bool) {
	var slot, gen int
	if n, err := fmt.Sscanf(name, "t%d-b%d-g%d", &target, &slot, &gen); err != nil || n != 3 || Ident(target, slot, gen) != name {
		return 0, false
	}
	return target, true
}

// Span is a stretch of time on the host's clock: a cut (a backend killed,
// removed or disconnected: from the engine call to its return) or a pause
// (from the pause's return to the unpause's call; zero End while it
// lasts).
type Span struct {
	Kind       string // kill, remove, disconnect or pause
	Begin, End time.Time
}

// Epoch is a stretch of time during which a route pointed at a target:
// from the rewire command's call to the return of the next one that
// changed it (zero Until: to the end), so that a session that connected in
// between may reach either.
type Epoch struct {
	Target      int
	From, Until time.Time
}

// History is the record of what the chaos loop did: the cuts and pauses of
// every backend, by identity, and the targets of every route. Route r is
// named names[r] and first points at target r; targets are numbered as
// routes are.
type History struct {
	names  []string
	cuts   map[string][]Span // by backend identity, in order
	pauses map[string][]Span // by backend identity, in order
	epochs [][]Epoch         // by route, in order
}

// NewHistory returns the history of routes named names, each on its own
// target, before any change.
func NewHistory(names ...string) *History {
	h := &History{names: names, cuts: map[string][]Span{}, pauses: map[string][]Span{}, epochs: make([][]Epoch, len(names))}
	for r := range names {
		h.epochs[r] = []Epoch{{Target: r}}
	}
	return h
}

// Routes returns how many routes (and targets) there are.
func (h *History) Routes() int { return len(h.names) }

// Name returns route r's name.
func (h *History) Name(r int) string { return h.names[r] }

// Cut records that the backend ident was taken away (kind: kill, remove or
// disconnect) by an engine call made at begin that returned at end.
func (h *History) Cut(ident, kind string, begin, end time.Time) {
	h.cuts[ident] = append(h.cuts[ident], Span{Kind: kind, Begin: begin, End: end})
}

// Pause records that a docker pause of ident returned at t.
func (h *History) Pause(ident string, t time.Time) {
	h.pauses[ident] = append(h.pauses[ident], Span{Kind: "pause", Begin: t})
}

// Unpause records that the unpause of ident was called at t.
func (h *History) Unpause(ident string, t time.Time) {
	if ps := h.pauses[ident]; len(ps) > 0 {
		ps[len(ps)-1].End = t
	}
}

// Rewire records that route r points at target from from on; the
// previous target ends at until, when the command returned (the
// ambassador applies a rewire before it answers).
func (h *History) Rewire(r, target int, from, until time.Time) {
	es := h.epochs[r]
	es[len(es)-1].Until = until
	h.epochs[r] = append(es, Epoch{Target: target, From: from})
}

// Current returns the target route r points at now.
func (h *History) Current(r int) int { return h.epochs[r][len(h.epochs[r])-1].Target }

// Targets returns the targets route r pointed at, at some time between
// from and to.
func (h *History) Targets(r int, from, to time.Time) []int {
	var out []int
	for _, e := range h.epochs[r] {
		if !e.From.After(to) && (e.Until.IsZero() || !e.Until.Before(from)) && !slices.Contains(out, e.Target) {
			out = append(out, e.Target)
		}
	}
	return out
}

// PausedAt reports whether the backend ident had been paused for at least
// known, and not yet unpaused, at t.
func (h *History) PausedAt(ident string, t time.Time, known time.Duration) bool {
	for _, p := range h.pauses[ident] {
		if !t.Before(p.Begin.Add(known)) && (p.End.IsZero() || t.Before(p.End)) {
			return true
		}
	}
	return false
}

// CutDuring returns the first cut of the backend ident that overlaps from
// to to.
func (h *History) CutDuring(ident string, from, to time.Time) (Span, bool) {
	for _, c := range h.cuts[ident] {
		if !c.Begin.After(to) && !c.End.Before(from) {
			return c, true
		}
	}
	return Span{}, false
}

// TargetCuts returns the cuts of backends of target that overlap from to
// to.
func (h *History) TargetCuts(target int, from, to time.Time) []Span {
	var out []Span
	for ident, cs := range h.cuts {
		if t, ok := ParseIdent(ident); !ok || t != target {
			continue
		}
		for _, c := range cs {
			if !c.Begin.After(to) && !c.End.Before(from) {
				out = append(out, c)
			}
		}
	}
	return out
}
