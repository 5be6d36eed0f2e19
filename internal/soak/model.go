package soak

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// The kinds of action the chaos loop takes. A refused rewire (the
// ambassador knew of no usable backend of the new target) is Refused, and
// not one of Kinds.
const (
	Kill       = "kill"
	Start      = "start"
	Pause      = "pause"
	Unpause    = "unpause"
	Rename     = "rename"
	Disconnect = "disconnect"
	Reconnect  = "reconnect"
	Recreate   = "recreate"
	Rewire     = "rewire"
	Reset      = "reset"
	Steal      = "steal"
	Refused    = "refused"
)

// Kinds are the kinds of action a soak takes, every one of which even a
// short soak must have taken.
var Kinds = []string{Kill, Start, Pause, Unpause, Rename, Disconnect, Reconnect, Recreate, Rewire, Reset, Steal}

// How long an undone action lasts: a paused backend is unpaused, a
// disconnected one reconnected and a rewired route reset after a random
// hold in these bounds.
const (
	pauseMin, pauseMax           = 2 * time.Second, 6 * time.Second
	disconnectMin, disconnectMax = 500 * time.Millisecond, 2 * time.Second
	rewireMin, rewireMax         = 2 * time.Second, 6 * time.Second
)

// weights are the odds of each kind of action, once every kind has been
// taken.
var weights = map[string]int{Kill: 3, Pause: 2, Disconnect: 2, Start: 4, Recreate: 2, Rename: 2, Rewire: 1}

// Backend is one backend container as the model knows it. Its state
// changes through the Model's methods only.
type Backend struct {
	Target, Slot, Gen int
	IP                netip.Addr // its address on the shared network; zero while disconnected
	Running, Paused   bool
	// Listening: its dataserver has accepted since it last started or was
	// reconnected.
	Listening bool
	until     time.Time // when a paused backend is unpaused, or a disconnected one reconnected
}

// Ident is the name the backend's current generation answers whoami with.
func (b *Backend) Ident() string { return Ident(b.Target, b.Slot, b.Gen) }

// Usable reports whether the ambassador can route new connections to b.
func (b *Backend) Usable() bool { return b.Running && !b.Paused && b.IP.IsValid() && b.Listening }

// Move is an action the chaos loop is to take.
type Move struct {
	Kind    string
	Backend int           // index in Model.Backends, for an action on a backend
	Route   int           // for Rewire and Reset
	To      int           // the target of a Rewire
	Hold    time.Duration // how long a Pause, Disconnect or Rewire lasts
}

// Model is the chaos loop's model of the scene: every backend, the address
// pool they take addresses from, the rewired routes, and the History of
// what was done. Its random choices come from one seeded source, so that a
// seed replays the same chaos against the same outcomes.
type Model struct {
	Backends []*Backend // the current instance of every slot, target by target
	History  *History

	rng     *rand.Rand
	pool    []netip.Addr
	held    map[netip.Addr]bool // pool addresses a container has (or gets back when started)
	freed   []netip.Addr        // pool addresses given up, the latest last
	resetAt []time.Time         // by route: when its rewire is reset; zero when it has none
	done    map[string]int      // actions taken, by kind
}

// ErrPoolExhausted is returned by Alloc when every address is held.
var ErrPoolExhausted = errors.New("the address pool is used up")

// NewModel returns the model of routes named names, route r first
// pointing at target r, which backends[r] containers claim; they take
// their addresses from pool. The backends start neither created nor
// running: the caller creates each (Created) with an address from Alloc.
func NewModel(rng *rand.Rand, pool []netip.Addr, names []string, backends []int) *Model {
	m := &Model{
		History: NewHistory(names...),
		rng:     rng, pool: pool, held: map[netip.Addr]bool{},
		resetAt: make([]time.Time, len(names)), done: map[string]int{},
	}
	for target, n := range backends {
		for slot := range n {
			m.Backends = append(m.Backends, &Backend{Target: target, Slot: slot})
		}
	}
	return m
}

// Alloc takes a free pool address: half the time the one given up last,
// so that addresses pass from one container to another at once.
func (m *Model) Alloc() (netip.Addr, error) {
	if i := len(m.freed) - 1; i >= 0 && !m.held[m.freed[i]] && m.rng.IntN(2) == 0 {
		ip := m.freed[i]
		m.held[ip] = true
		return ip, nil
	}
	var free []netip.Addr
	for _, ip := range m.pool {
		if !m.held[ip] {
			free = append(free, ip)
		}
	}
	if len(free) == 0 {
		return netip.Addr{}, ErrPoolExhausted
	}
	ip := free[m.rng.IntN(len(free))]
	m.held[ip] = true
	return ip, nil
}

// Release gives a pool address up.
func (m *Model) Release(ip netip.Addr) {
	delete(m.held, ip)
	m.freed = append(m.freed, ip)
}

// Hold marks ip, given up by a backend, as taken by another container
// (the decoy that steals it).
func (m *Model) Hold(ip netip.Addr) { m.held[ip] = true }

// Record counts one action of kind.
func (m *Model) Record(kind string) { m.done[kind]++ }

// Done returns how many actions of kind were taken.
func (m *Model) Done(kind string) int { return m.done[kind] }

// Taken returns how many actions were taken in all.
func (m *Model) Taken() int {
	n := 0
	for _, c := range m.done {
		n += c
	}
	return n
}

// Counts summarises the actions by kind.
func (m *Model) Counts() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m.done)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m.done[k]))
	}
	return fmt.Sprintf("%d: %s", m.Taken(), strings.Join(parts, " "))
}

// spare returns the usable backends whose target keeps another usable
// one: those the chaos may take away.
func (m *Model) spare() []int {
	usable := map[int]int{}
	for _, b := range m.Backends {
		if b.Usable() {
			usable[b.Target]++
		}
	}
	var out []int
	for i, b := range m.Backends {
		if b.Usable() && usable[b.Target] > 1 {
			out = append(out, i)
		}
	}
	return out
}

// Next chooses one random action among those the model allows now: every
// kind once first, so that even a short soak has them all, then by
// weight. It never takes away (kill, pause, disconnect, recreate while
// running) the last usable backend of a target, and rewires only a route
// that is not rewired already, to another route's target.
func (m *Model) Next() Move {
	pick := func(is []int) int { return is[m.rng.IntN(len(is))] }
	spare := m.spare()
	var stopped []int
	for i, b := range m.Backends {
		if !b.Running {
			stopped = append(stopped, i)
		}
	}
	var moves []func() Move
	var kinds []string
	add := func(kind string, f func() Move) {
		kinds = append(kinds, kind)
		moves = append(moves, f)
	}
	if len(spare) > 0 {
		add(Kill, func() Move { return Move{Kind: Kill, Backend: pick(spare)} })
		add(Pause, func() Move {
			return Move{Kind: Pause, Backend: pick(spare), Hold: between(m.rng, pauseMin, pauseMax)}
		})
		add(Disconnect, func() Move {
			return Move{Kind: Disconnect, Backend: pick(spare), Hold: between(m.rng, disconnectMin, disconnectMax)}
		})
	}
	if len(stopped) > 0 {
		add(Start, func() Move { return Move{Kind: Start, Backend: pick(stopped)} })
	}
	if movable := append(slices.Clone(spare), stopped...); len(movable) > 0 {
		add(Recreate, func() Move { return Move{Kind: Recreate, Backend: pick(movable)} })
	}
	add(Rename, func() Move { return Move{Kind: Rename, Backend: m.rng.IntN(len(m.Backends))} })
	var routes []int
	for r, at := range m.resetAt {
		if at.IsZero() {
			routes = append(routes, r)
		}
	}
	if len(routes) > 0 {
		add(Rewire, func() Move {
			r := pick(routes)
			n := m.History.Routes()
			return Move{Kind: Rewire, Route: r, To: (r + 1 + m.rng.IntN(n-1)) % n, Hold: between(m.rng, rewireMin, rewireMax)}
		})
	}
	var fresh []int
	for i, k := range kinds {
		if m.done[k] == 0 {
			fresh = append(fresh, i)
		}
	}
	if len(fresh) > 0 {
		return moves[pick(fresh)]()
	}
	total := 0
	for _, k := range kinds {
		total += weights[k]
	}
	n := m.rng.IntN(total)
	for i, k := range kinds {
		if n -= weights[k]; n < 0 {
			return moves[i]()
		}
	}
	panic("unreachable")
}

// Due returns the actions whose time has come at now: unpause, reconnect,
// reset.
func (m *Model) Due(now time.Time) []Move {
	var out []Move
	for i, b := range m.Backends {
		switch {
		case b.Paused && !now.Before(b.until):
			out = append(out, Move{Kind: Unpause, Backend: i})
		case b.Running && !b.IP.IsValid() && !now.Before(b.until):
			out = append(out, Move{Kind: Reconnect, Backend: i})
		}
	}
	for r, at := range m.resetAt {
		if !at.IsZero() && !now.Before(at) {
			out = append(out, Move{Kind: Reset, Route: r})
		}
	}
	return out
}

// Heal returns the actions that undo what the chaos left: every backend
// running, connected and unpaused, every route on its own target.
func (m *Model) Heal() []Move {
	var out []Move
	for i, b := range m.Backends {
		switch {
		case b.Paused:
			out = append(out, Move{Kind: Unpause, Backend: i})
		case !b.Running:
			out = append(out, Move{Kind: Start, Backend: i})
		case !b.IP.IsValid():
			out = append(out, Move{Kind: Reconnect, Backend: i})
		}
	}
	for r, at := range m.resetAt {
		if !at.IsZero() {
			out = append(out, Move{Kind: Reset, Route: r})
		}
	}
	return out
}

// between returns a random duration in [lo, hi).
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// Between returns a random duration in [lo, hi) from the model's source.
func (m *Model) Between(lo, hi time.Duration) time.Duration { return between(m.rng, lo, hi) }

// StealNext decides whether the near decoy takes the address a backend
// has just given up: the first time, then a third of the time.
func (m *Model) StealNext() bool { return m.done[Steal] == 0 || m.rng.IntN(3) == 0 }

// The state changes, each made once the engine has done the action.

// Created records that b's container (generation b.Gen) was created at ip,
// and is about to start.
func (m *Model) Created(b *Backend, ip netip.Addr) {
	b.IP, b.Running, b.Paused, b.Listening = ip, true, false, true
}

// Killed records that b was killed by a call made at begin, returning at
// end once the engine said it had stopped.
func (m *Model) Killed(b *Backend, begin, end time.Time) {
	m.History.Cut(b.Ident(), Kill, begin, end)
	b.Running, b.Listening = false, false
}

// Started records that the stopped b was started again; it is Listening
// once its dataserver accepts.
func (m *Model) Started(b *Backend) { b.Running = true }

// Listens records that b's dataserver accepts at its address.
func (m *Model) Listens(b *Backend) { b.Listening = true }

// Paused records that the pause of b returned at at, to be undone after
// hold.
func (m *Model) Paused(b *Backend, at time.Time, hold time.Duration) {
	m.History.Pause(b.Ident(), at)
	b.Paused, b.until = true, at.Add(hold)
}

// Unpaused records that b's unpause was called at at.
func (m *Model) Unpaused(b *Backend, at time.Time) {
	m.History.Unpause(b.Ident(), at)
	b.Paused = false
}

// Disconnected records that b was disconnected from the network by a call
// made at begin that returned at end, to be reconnected after hold; its
// address goes back to the pool.
func (m *Model) Disconnected(b *Backend, begin, end time.Time, hold time.Duration) {
	m.History.Cut(b.Ident(), Disconnect, begin, end)
	m.Release(b.IP)
	b.IP, b.Listening, b.until = netip.Addr{}, false, end.Add(hold)
}

// Reconnected records that b was connected again at ip; it is Listening
// once its dataserver accepts there.
func (m *Model) Reconnected(b *Backend, ip netip.Addr) { b.IP = ip }

// Removed records that b's container was removed (docker rm -f) by a call
// made at begin that returned at end (a cut if it was running), and that
// its next generation is to be created; its address goes back to the
// pool.
func (m *Model) Removed(b *Backend, begin, end time.Time) {
	if b.Running {
		m.History.Cut(b.Ident(), "remove", begin, end)
	}
	m.Release(b.IP)
	b.Gen++
	b.IP, b.Running, b.Paused, b.Listening = netip.Addr{}, false, false, false
}

// Rewired records that route r was rewired to target to by a command
// called at from that returned at until, to be reset after hold.
func (m *Model) Rewired(r, to int, from, until time.Time, hold time.Duration) {
	m.History.Rewire(r, to, from, until)
	m.resetAt[r] = until.Add(hold)
}

// WasReset records that route r was reset to its own target by a command
// called at from that returned at until.
func (m *Model) WasReset(r int, from, until time.Time) {
	m.History.Rewire(r, r, from, until)
	m.resetAt[r] = time.Time{}
}
