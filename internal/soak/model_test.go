package soak

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pool returns n addresses of 10.0.0.0/24 from .100 on.
func pool(n int) []netip.Addr {
	var out []netip.Addr
	for h := range n {
		out = append(out, netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + h)}))
	}
	return out
}

// scene is the soak's scene: three routes of 3, 2 and 3 backends, all
// created and running, from a pool of 24 addresses.
func scene(t *testing.T, seed uint64) *Model {
	t.Helper()
	m := NewModel(rand.New(rand.NewPCG(seed, 1)), pool(24), []string{"9000", "9001", "9002"}, []int{3, 2, 3})
	require.Len(t, m.Backends, 8)
	for _, b := range m.Backends {
		ip, err := m.Alloc()
		require.NoError(t, err)
		m.Created(b, ip)
	}
	return m
}

// engine plays the engine for the model: it takes move at now as the
// e2e test does, through the model's state changes, with the engine's
// calls taking a millisecond.
func engine(t *testing.T, m *Model, mv Move, now time.Time) {
	t.Helper()
	end := now.Add(time.Millisecond)
	var b *Backend
	if mv.Kind != Rewire && mv.Kind != Reset {
		b = m.Backends[mv.Backend]
	}
	switch mv.Kind {
	case Kill:
		m.Killed(b, now, end)
	case Start:
		m.Started(b)
		m.Listens(b)
	case Pause:
		m.Paused(b, end, mv.Hold)
	case Unpause:
		m.Unpaused(b, now)
	case Rename:
	case Disconnect:
		m.Disconnected(b, now, end, mv.Hold)
	case Reconnect:
		ip, err := m.Alloc()
		require.NoError(t, err)
		m.Reconnected(b, ip)
		m.Listens(b)
	case Recreate:
		m.Removed(b, now, end)
		ip, err := m.Alloc()
		require.NoError(t, err)
		m.Created(b, ip)
	case Rewire:
		m.Rewired(mv.Route, mv.To, now, end, mv.Hold)
	case Reset:
		m.WasReset(mv.Route, now, end)
	default:
		t.Fatalf("unknown move %+v", mv)
	}
	m.Record(mv.Kind)
}

// TestModelKeepsATarget: whatever the seed, the chaos never leaves a
// target without a usable backend, takes every kind of action within its
// first moves, never gives two containers one address, and heals.
func TestModelKeepsATarget(t *testing.T) {
	for seed := range uint64(20) {
		m := scene(t, seed)
		now := t0
		for step := range 500 {
			now = now.Add(m.Between(500*time.Millisecond, 1500*time.Millisecond))
			for _, mv := range m.Due(now) {
				engine(t, m, mv, now)
			}
			mv := m.Next()
			engine(t, m, mv, now)
			usable := map[int]int{}
			addrs := map[netip.Addr]bool{}
			for _, b := range m.Backends {
				if b.Usable() {
					usable[b.Target]++
				}
				if b.IP.IsValid() {
					require.Falsef(t, addrs[b.IP], "seed %d step %d: two backends at %s", seed, step, b.IP)
					addrs[b.IP] = true
				}
			}
			for target := range 3 {
				require.Positivef(t, usable[target], "seed %d step %d (%+v): t%d has no usable backend", seed, step, mv, target)
			}
			if step == 40 {
				for _, k := range []string{Kill, Start, Pause, Unpause, Rename, Disconnect, Reconnect, Recreate, Rewire, Reset} {
					assert.Positivef(t, m.Done(k), "seed %d: no %s in the first 40 steps (%s)", seed, k, m.Counts())
				}
			}
		}
		for _, mv := range m.Heal() {
			engine(t, m, mv, now)
		}
		for _, b := range m.Backends {
			assert.Truef(t, b.Usable(), "seed %d: %s not healed", seed, b.Ident())
		}
		for r := range 3 {
			assert.Equal(t, r, m.History.Current(r))
		}
		assert.Empty(t, m.Heal(), "nothing left to heal")
	}
}

// TestModelNext: the choices the model allows in a few states.
func TestModelNext(t *testing.T) {
	m := scene(t, 1)
	// Take every kind once, but for the kinds that undo another.
	for _, k := range Kinds {
		m.Record(k)
	}
	// t1's two backends: one killed, the other the last usable one.
	t1a, t1b := m.Backends[3], m.Backends[4]
	m.Killed(t1a, t0, t0)
	for range 200 {
		mv := m.Next()
		if mv.Kind == Kill || mv.Kind == Pause || mv.Kind == Disconnect {
			assert.NotEqual(t, t1b, m.Backends[mv.Backend], "%s of the last usable backend of t1", mv.Kind)
		}
		if mv.Kind == Recreate {
			assert.NotEqual(t, t1b, m.Backends[mv.Backend], "recreate of the last usable backend of t1")
		}
		if mv.Kind == Start {
			assert.Equal(t, t1a, m.Backends[mv.Backend], "start of a running backend")
		}
		if mv.Kind == Rewire {
			assert.NotEqual(t, mv.Route, mv.To, "a rewire to the route's own target")
			assert.True(t, mv.Hold >= rewireMin && mv.Hold < rewireMax)
		}
	}
	// Every route rewired: no rewire is offered.
	for r := range 3 {
		m.Rewired(r, (r+1)%3, t0, t0, time.Hour)
	}
	for range 200 {
		assert.NotEqual(t, Rewire, m.Next().Kind)
	}
}

// TestModelNextFresh: each kind is taken once before any is taken twice.
func TestModelNextFresh(t *testing.T) {
	m := scene(t, 7)
	seen := map[string]bool{}
	for range 7 { // kill, pause, disconnect, recreate, rename, rewire, and start once one is stopped
		mv := m.Next()
		assert.Falsef(t, seen[mv.Kind], "%s twice before every kind once", mv.Kind)
		seen[mv.Kind] = true
		engine(t, m, mv, t0)
	}
}

func TestModelDue(t *testing.T) {
	m := scene(t, 1)
	p, d := m.Backends[0], m.Backends[1]
	m.Paused(p, at(0), 2*time.Second)
	m.Disconnected(d, at(0), at(100), time.Second)
	m.Rewired(2, 0, at(0), at(50), 3*time.Second)
	assert.Empty(t, m.Due(at(1000)))
	assert.Equal(t, []Move{{Kind: Reconnect, Backend: 1}}, m.Due(at(1100)))
	assert.Equal(t, []Move{{Kind: Unpause, Backend: 0}, {Kind: Reconnect, Backend: 1}}, m.Due(at(2000)))
	assert.Equal(t, []Move{{Kind: Unpause, Backend: 0}, {Kind: Reconnect, Backend: 1}, {Kind: Reset, Route: 2}}, m.Due(at(3050)))
}

// TestModelAlloc: the pool never hands out an address that is held, often
// hands out the one given up last at once, and says when it is used up.
func TestModelAlloc(t *testing.T) {
	m := NewModel(rand.New(rand.NewPCG(3, 1)), pool(4), []string{"9000"}, []int{1})
	var got []netip.Addr
	for range 4 {
		ip, err := m.Alloc()
		require.NoError(t, err)
		assert.NotContains(t, got, ip)
		got = append(got, ip)
	}
	_, err := m.Alloc()
	require.ErrorIs(t, err, ErrPoolExhausted)

	reused := 0
	for range 100 {
		m.Release(got[0])
		m.Release(got[1])
		ip, err := m.Alloc()
		require.NoError(t, err)
		require.Contains(t, got[:2], ip)
		if ip == got[1] {
			reused++
		}
		other := got[0]
		if ip == got[0] {
			other = got[1]
		}
		m.Hold(other)
	}
	assert.Greater(t, reused, 50, "the address given up last comes back at once more than half the time")
}

// TestModelHistory: the state changes record the cuts, pauses and
// rewires the judge reads.
func TestModelHistory(t *testing.T) {
	m := scene(t, 1)
	b := m.Backends[2]
	m.Killed(b, at(0), at(200))
	m.Started(b)
	m.Listens(b)
	ip := b.IP
	m.Removed(b, at(1000), at(1300))
	assert.Equal(t, 1, b.Gen)
	assert.False(t, b.IP.IsValid())
	assert.False(t, b.Usable())
	_, cut := m.History.CutDuring(Ident(0, 2, 0), at(100), at(100))
	assert.True(t, cut, "the kill")
	c, cut := m.History.CutDuring(Ident(0, 2, 0), at(1100), at(1100))
	assert.True(t, cut, "the removal of the running generation")
	assert.Equal(t, "remove", c.Kind)
	_, cut = m.History.CutDuring(Ident(0, 2, 1), at(0), at(2000))
	assert.False(t, cut, "the new generation was never cut")
	assert.True(t, slices.Contains(m.freed, ip), "its address went back to the pool")

	stopped := m.Backends[3]
	m.Killed(stopped, at(0), at(1))
	m.Removed(stopped, at(10), at(20))
	_, cut = m.History.CutDuring(Ident(1, 0, 0), at(5), at(30))
	assert.False(t, cut, "removing a stopped container cuts nothing")

	p := m.Backends[0]
	m.Paused(p, at(0), time.Second)
	assert.True(t, m.History.PausedAt(p.Ident(), at(int(PauseKnown.Milliseconds())+1), PauseKnown))
	m.Unpaused(p, at(4000))
	assert.False(t, m.History.PausedAt(p.Ident(), at(4000), PauseKnown))
}
