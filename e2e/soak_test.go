//go:build e2e

package e2e

// The churn soak: one ambassador following the engine serves three
// targets of two or three backends each, to short-lived and long-lived
// clients, while a seeded chaos loop kills, starts, pauses, renames,
// disconnects, recreates and rewires for a bounded time (soakDefault in
// the suite; `make soak SOAK=10m` for a long one). The loop keeps a model
// of every container (running, paused, connected, its address, its
// target) and of every route's target, and records what it did to which
// backend and when; the clients record every session. Afterwards each
// session is judged against that record. Every helper's name starts with
// soak so that it cannot clash with the other e2e files.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// The soak's length and seed come from the environment: AMBASSADORD_SOAK is
// the duration of the chaos (soakDefault, the suite's short soak, when
// unset; `make soak` sets 10m), AMBASSADORD_SOAK_SEED replays the chaos of
// a logged seed (random when unset).
const (
	soakEnv     = "AMBASSADORD_SOAK"
	soakSeedEnv = "AMBASSADORD_SOAK_SEED"
	soakDefault = 40 * time.Second
	// soakOverhead bounds what a soak takes besides its chaos: set-up,
	// warm-up, healing, settling, checks and clean-up, on a loaded machine.
	soakOverhead = 5 * time.Minute
)

// The scene: target i is served by soakBackends[i] claimers and listened
// for on soakPorts[i]; t0 and t1 are --route targets, t2 the ambassador's
// own label target. Backends take addresses from soakPool hosts of the
// shared network, so that the engine hands a removed backend's address to
// another container (of another target, or the decoy) within seconds.
var (
	soakBackends = []int{3, 2, 3}
	soakPorts    = []uint16{9000, 9001, 9002}
)

const (
	soakPoolFirst = 100 // first host number of the address pool
	soakPoolSize  = 24
)

// The chaos loop's pacing: one random action every soakPaceMin to
// soakPaceMax; a paused backend is unpaused, a disconnected one
// reconnected and a rewired route reset after a random hold.
const (
	soakPaceMin, soakPaceMax             = 500 * time.Millisecond, 1500 * time.Millisecond
	soakPauseMin, soakPauseMax           = 2 * time.Second, 6 * time.Second
	soakDisconnectMin, soakDisconnectMax = 500 * time.Millisecond, 2 * time.Second
	soakRewireMin, soakRewireMax         = 2 * time.Second, 6 * time.Second
	soakProgressEvery                    = 30 * time.Second
	soakWarmup                           = 3 * time.Second
	soakSettle                           = 3 * time.Second
	// soakBackendWait is the ambassador's --backend-wait: long enough that
	// a connection opened while a route briefly has no backend the
	// ambassador knows of waits for one, rather than failing.
	soakBackendWait = "8s"
)

// The clients: per route, soakShortWorkers open a fresh session every
// soakShortInterval (whoami and a small echo), and soakLongWorkers keep a
// session open for soakLongMin to soakLongMax each, streaming an echo of
// soakLongChunk bytes every soakLongInterval. About 200 sessions a second
// and 10 MB/s in all: a steady load, light enough to run beside the other
// parallel tests on a 2-core machine.
const (
	soakShortWorkers  = 3
	soakShortInterval = 40 * time.Millisecond
	soakShortMax      = 8 << 10 // largest short payload
	soakLongWorkers   = 2
	soakLongMin       = 2 * time.Second
	soakLongMax       = 8 * time.Second
	soakLongChunk     = 16 << 10
	soakLongInterval  = 10 * time.Millisecond
	// A session's deadline: the longest pause (soakPauseMax) and wait for
	// a backend (soakBackendWait) plus generous slack for a loaded
	// machine. A session that reaches it hangs, which is a failure.
	soakShortTimeout = 20 * time.Second
	soakLongSlack    = 30 * time.Second
)

// How the sessions are judged, generous on time and strict on bytes.
const (
	// soakPauseKnown: a session started this long after a docker pause
	// returned must not be routed to the paused backend.
	soakPauseKnown = 3 * time.Second
	// soakCutClose: a session on a backend that was killed, removed or
	// disconnected must be closed (EOF or reset, not left hanging) within
	// this long of the engine call's return.
	soakCutClose = 10 * time.Second
	// soakCutSlack: a session that got no identity at all is excused by a
	// backend of its target going away at most this long before it began
	// (the ambassador may not have heard of it yet).
	soakCutSlack = 3 * time.Second
)

// The ambassador's resources once the clients are gone, against the
// baseline taken after the warm-up. The pipe pool of pkg/proxy keeps up to
// 64 idle pipes (maxPooledPipes) of two descriptors each for reuse, so
// descriptors may grow by that much without a leak; /proc tells pipes from
// the rest when it can be read, and then the rest gets soakFDSlack only.
const (
	soakGoroutineSlack = 20
	soakFDSlack        = 10
	soakPipeFDs        = 2 * 64
	soakRSSSlack       = 8 << 20
	soakResourceWait   = time.Minute // for goroutines to exit and memory to be returned
)

// TestSoak: churn against one ambassador for AMBASSADORD_SOAK (40 s by
// default). Three targets (t0 and t1 by --route, t2 by the ambassador's own
// label) are claimed by 3, 2 and 3 dataservers on one network with fixed
// addresses; a decoy claims t0 from a network the ambassador does not
// share, another claims a look-alike target on the shared network and,
// during the chaos, takes addresses that backends have just given up.
// Short sessions (whoami, then an echo of up to 8 KiB) and long ones (an
// echo streamed for 2–8 s) run on every route throughout. The chaos loop
// (seeded; AMBASSADORD_SOAK_SEED replays it) takes one action every
// 0.5–1.5 s: docker kill, start, pause (unpaused 2–6 s later), rename,
// network disconnect (reconnected 0.5–2 s later), recreate (rm -f and
// run), or `ambassadord rewire` of a route to another target through the
// admin socket (reset 2–6 s later); every kind once first, so that even
// the short soak has them all. Containers take their addresses from a
// small pool, half the time the one given up last, and when a backend
// gives one up the near decoy takes it at once (the first time, then a
// third of the time). The loop never takes the last usable backend of a
// target away, so every target always has one to serve.
//
// Nothing lost means:
//   - no session gets a byte wrong: every echo is a correct prefix of what
//     was sent, whatever happened to its backend;
//   - every session completes, except those whose backend was killed,
//     removed or disconnected while they ran, and those (without an
//     identity) that began while a backend of their target went away; and
//     those are closed (EOF or reset), never left hanging;
//   - no session reaches a backend its route could not select: the
//     backends of the route's target, or of the target it was rewired to
//     while the session connected; never a decoy, never a paused backend
//     once the pause is known (soakPauseKnown), and the decoys receive no
//     connection at all;
//   - after the chaos, healed backends and a settle period, fresh
//     connections to every target succeed and reach each of its backends,
//     and the ambassador's goroutines, descriptors and resident memory are
//     back near their baseline after the warm-up.
//
// It does not run in parallel: its load (about 220 sessions/s) would
// disturb the timing bounds of the other tests on a small machine.
func TestSoak(t *testing.T) {
	setup(t) // skips without an engine; its context is too short for a long soak
	dur := soakDuration(t)
	seed := soakSeed(t)
	ctx, cancel := context.WithTimeout(t.Context(), dur+soakOverhead)
	defer cancel()
	t.Logf("soak: %s of chaos, seed %d (replay with %s=%d)", dur, seed, soakSeedEnv, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("soak failed with seed %d: replay with %s=%d %s=%s", seed, soakSeedEnv, seed, soakEnv, dur)
		}
	})

	ch := soakScene(t, ctx, seed)
	addrs := make([]string, len(soakPorts))
	for r, p := range soakPorts {
		addrs[r] = addr(ch.amb, p)
	}
	metrics := "http://" + addr(ch.amb, ambAdminPort) + "/metrics"
	for r := range soakPorts {
		soakReachAll(t, ctx, ch, r)
	}

	// The warm-up fills the ambassador's pools and metric series before
	// the baseline; its sessions must all complete, nothing being changed.
	warm := soakStartClients(t, addrs, seed^1)
	soakPace(ctx, soakWarmup)
	warmed := warm.halt()
	if failed := slices.DeleteFunc(slices.Clone(warmed), soakSession.ok); len(failed) > 0 {
		t.Errorf("%d warm-up sessions failed, nothing having changed:\n%s", len(failed), soakList(failed))
	}
	base := soakQuiet(t, ctx, ch.amb, metrics)
	t.Logf("warm-up: %d sessions; baseline: %s", len(warmed), base)

	clients := soakStartClients(t, addrs, seed)
	peak := ch.run(dur, metrics, clients, base)
	ch.heal()
	soakPace(ctx, soakSettle)
	sessions := clients.halt()

	for _, kind := range soakKinds {
		assert.Positivef(t, ch.done[kind], "%s actions: the soak was too short to take every kind", kind)
	}
	v := ch.judge(sessions)
	v.report(t)

	// After the chaos: every route serves its own target's backends again,
	// every one of them, and never a decoy.
	for r := range soakPorts {
		waitMetrics(t, ctx, metrics, want("ambassadord_backends", map[string]string{"route": soakRouteName(r)}, float64(soakBackends[r])))
		soakReachAll(t, ctx, ch, r)
	}
	for _, d := range ch.decoys {
		st, err := stats(ctx, d)
		require.NoError(t, err)
		assert.Zerof(t, st.Conns, "connections the decoy %s accepted", d.Name)
		assert.Zerof(t, st.Bytes, "bytes the decoy %s received", d.Name)
	}

	end := soakSettled(t, ctx, ch.amb, metrics, base)
	t.Logf("soak summary (seed %d, %s of chaos): %d sessions, %s; actions %s",
		seed, dur, len(sessions), v, ch.counts())
	t.Logf("resources: baseline %s; peak during the chaos %s; end %s", base, peak, end)
}

// soakDuration reads AMBASSADORD_SOAK. A run older than staleAfter is swept
// by any other e2e run on the engine, so a soak must end well before.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(soakEnv)
	if v == "" {
		return soakDefault
	}
	d, err := time.ParseDuration(v)
	require.NoErrorf(t, err, "%s=%q", soakEnv, v)
	require.Positivef(t, d, "%s=%q", soakEnv, v)
	require.Lessf(t, d+soakOverhead, staleAfter,
		"%s=%s: with %s of set-up and checks the run would outlive staleAfter (%s), after which any other e2e run on this engine sweeps its containers",
		soakEnv, d, soakOverhead, staleAfter)
	return d
}

// soakSeed reads AMBASSADORD_SOAK_SEED, or picks a seed.
func soakSeed(t *testing.T) uint64 {
	t.Helper()
	v := os.Getenv(soakSeedEnv)
	if v == "" {
		return rand.Uint64()
	}
	s, err := strconv.ParseUint(v, 10, 64)
	require.NoErrorf(t, err, "%s=%q", soakSeedEnv, v)
	return s
}

// soakPace lets d pass, or less if ctx ends: the pacing of the chaos loop
// and of the phases around it, never a wait for something to happen.
func soakPace(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// soakKinds are the kinds of action a soak takes, besides a refused
// rewire.
var soakKinds = []string{"kill", "start", "pause", "unpause", "rename", "disconnect", "reconnect", "recreate", "rewire", "reset", "steal"}

// soakRouteName is route r's name: its listen port.
func soakRouteName(r int) string { return strconv.Itoa(int(soakPorts[r])) }

// soakIdent is the name a backend answers whoami with: its target, its
// slot in the target and its generation (recreating it makes a new one),
// so that every session says which container instance served it.
func soakIdent(target, slot, gen int) string { return fmt.Sprintf("t%d-b%d-g%d", target, slot, gen) }

// soakParseIdent is the inverse of soakIdent; ok is false for any other
// server (a decoy).
func soakParseIdent(name string) (target int, ok bool) {
	var slot, gen int
	if n, err := fmt.Sscanf(name, "t%d-b%d-g%d", &target, &slot, &gen); err != nil || n != 3 || soakIdent(target, slot, gen) != name {
		return 0, false
	}
	return target, target >= 0 && target < len(soakBackends)
}

// soakBackend is one backend container as the chaos loop's model knows it.
type soakBackend struct {
	target, slot, gen int
	c                 *harness.Container
	name              string     // its name now: docker rename changes it
	ip                netip.Addr // its address on the shared network; zero while disconnected
	running, paused   bool
	// listening: its dataserver has accepted since it last started or
	// was reconnected.
	listening bool
	until     time.Time // when a paused backend is unpaused, or a disconnected one reconnected
}

func (b *soakBackend) ident() string { return soakIdent(b.target, b.slot, b.gen) }

// usable reports whether the ambassador can route new connections to b.
func (b *soakBackend) usable() bool { return b.running && !b.paused && b.ip.IsValid() && b.listening }

// soakSpan is a stretch of time on the host's clock: a cut (a backend
// killed, removed or disconnected: from the engine call to its return) or
// a pause (from the pause's return to the unpause's call).
type soakSpan struct {
	kind       string
	begin, end time.Time
}

// soakEpoch is a stretch of time during which a route was pointed at a
// target: from the rewire command's call to the return of the next one
// that changed it (zero until: to the end), so that a session that
// connected in between may reach either.
type soakEpoch struct {
	target      int
	from, until time.Time
}

// soakChaos is the chaos loop and its model of the scene. It is used by
// the test's goroutine only.
type soakChaos struct {
	t     *testing.T
	ctx   context.Context
	rng   *rand.Rand
	start time.Time

	n        *harness.Network // the network the ambassador shares with its backends
	amb      *harness.Container
	backends []*soakBackend       // the current instance of every slot, target by target
	decoys   []*harness.Container // the far one (claims t0, unreachable) and the near one (a look-alike, on n)
	near     *harness.Container

	held  map[netip.Addr]bool // pool addresses a container has (or gets back when started)
	freed []netip.Addr        // pool addresses given up, the latest last

	cuts    map[string][]soakSpan // by backend identity
	pauses  map[string][]soakSpan // by backend identity
	epochs  [][]soakEpoch         // by route
	resetAt []time.Time           // by route: when its rewire is reset; zero when it has none
	renames int
	done    map[string]int // actions taken, by kind
}

// soakScene starts the networks, the backends, the decoys and the
// ambassador, and returns the chaos loop's model of them.
func soakScene(t *testing.T, ctx context.Context, seed uint64) *soakChaos {
	t.Helper()
	ch := &soakChaos{
		t: t, ctx: ctx, rng: rand.New(rand.NewPCG(seed, 0x50a4)),
		held: map[netip.Addr]bool{}, done: map[string]int{}, cuts: map[string][]soakSpan{}, pauses: map[string][]soakSpan{},
		epochs: make([][]soakEpoch, len(soakPorts)), resetAt: make([]time.Time, len(soakPorts)),
	}
	begin := time.Now()
	ch.n = newNetwork(t, ctx, "net", true)
	far := newNetwork(t, ctx, "far", false)
	var all []*harness.Container
	for target, n := range soakBackends {
		for slot := range n {
			b := &soakBackend{target: target, slot: slot}
			ch.create(b)
			ch.backends = append(ch.backends, b)
			all = append(all, b.c)
		}
	}
	// A claimer of t0 on no network the ambassador shares: never used,
	// whatever its labels.
	ch.decoys = append(ch.decoys, createServer(t, ctx, harness.Spec{
		Name: "t0-far", Networks: []string{far.Name}, Labels: map[string]string{labelTarget: soakTarget(t, 0)},
	}, "decoy-far"))
	// A look-alike on the shared network: named and claiming a target no
	// route serves, and moved during the chaos to addresses backends gave up.
	ip := ch.alloc()
	ch.near = createServer(t, ctx, harness.Spec{
		Name: "t1-decoy", Networks: []string{ch.n.Name}, IPs: map[string]netip.Addr{ch.n.Name: ip},
		Labels: map[string]string{labelTarget: soakTarget(t, 1) + "-decoy"},
	}, "decoy-near")
	ch.decoys = append(ch.decoys, ch.near)
	soakStartAll(t, ctx, append(all, ch.decoys...))

	route := func(r int) string { return fmt.Sprintf("%d:%s:%d", soakPorts[r], soakTarget(t, r), dataPort) }
	ch.amb = startFollower(t, ctx, harness.Spec{
		Networks: []string{ch.n.Name},
		Labels:   map[string]string{labelTarget: soakTarget(t, 2), labelPorts: fmt.Sprintf("%d:%d", soakPorts[2], dataPort)},
		// Claims are invited on the two --route routes: the soak's
		// targets are claimed, and the decoys check where claims count.
		Cmd: append([]string{"--route", route(0), "--route", route(1), "--claims", "label,routes", "--backend-wait", soakBackendWait}, publicAdmin...),
	})
	for r := range soakPorts {
		ch.epochs[r] = []soakEpoch{{target: r}}
	}
	t.Logf("scene up in %s", time.Since(begin).Round(time.Millisecond))
	return ch
}

// soakStartAll starts dataservers made by createServer all at once (a
// loaded engine takes seconds to start each) and waits until each accepts.
func soakStartAll(t *testing.T, ctx context.Context, cs []*harness.Container) {
	t.Helper()
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			if errs[i] = eng.StartCreated(ctx, c); errs[i] != nil {
				return
			}
			// The admin port listens after the data port: waiting for it
			// does not count as a connection to the data port.
			wctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			errs[i] = harness.WaitTCP(wctx, addr(c, dataproto.AdminPort))
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
}

// soakTarget is the engine-wide name of target i, which its backends claim.
func soakTarget(t *testing.T, i int) string { return fullName(t, fmt.Sprintf("t%d", i)) }

// soakBase is the name a slot's backends get when created.
func soakBase(b *soakBackend) string { return fmt.Sprintf("t%d-b%d", b.target, b.slot) }

// create creates b's container (generation b.gen) at a pool address; the
// caller starts it, and then b is running and listening.
func (ch *soakChaos) create(b *soakBackend) {
	ch.t.Helper()
	ip := ch.alloc()
	b.c = createServer(ch.t, ch.ctx, harness.Spec{
		Name: soakBase(b), Networks: []string{ch.n.Name}, IPs: map[string]netip.Addr{ch.n.Name: ip},
		Labels: map[string]string{labelTarget: soakTarget(ch.t, b.target)},
	}, b.ident())
	b.name, b.ip, b.running, b.paused, b.listening = b.c.Name, ip, true, false, true
}

// alloc takes a free pool address: half the time the one given up last,
// so that addresses pass from one container to another at once.
func (ch *soakChaos) alloc() netip.Addr {
	if i := len(ch.freed) - 1; i >= 0 && !ch.held[ch.freed[i]] && ch.rng.IntN(2) == 0 {
		ip := ch.freed[i]
		ch.held[ip] = true
		return ip
	}
	var free []netip.Addr
	for h := range soakPoolSize {
		if ip := ch.n.Addr(byte(soakPoolFirst + h)); !ch.held[ip] {
			free = append(free, ip)
		}
	}
	require.NotEmpty(ch.t, free, "the address pool is used up")
	ip := free[ch.rng.IntN(len(free))]
	ch.held[ip] = true
	return ip
}

// release gives a pool address up.
func (ch *soakChaos) release(ip netip.Addr) {
	delete(ch.held, ip)
	ch.freed = append(ch.freed, ip)
}

// record logs and counts one action.
func (ch *soakChaos) record(kind, format string, args ...any) {
	ch.t.Helper()
	ch.done[kind]++
	ch.t.Logf("chaos +%6.2fs %-10s %s", time.Since(ch.start).Seconds(), kind, fmt.Sprintf(format, args...))
}

// taken returns how many actions the chaos loop took.
func (ch *soakChaos) taken() int {
	n := 0
	for _, c := range ch.done {
		n += c
	}
	return n
}

// counts summarises the actions by kind.
func (ch *soakChaos) counts() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(ch.done)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, ch.done[k]))
	}
	return fmt.Sprintf("%d: %s", ch.taken(), strings.Join(parts, " "))
}

// waitListening waits until b's dataserver accepts at its address: its
// admin port listens after its data port, and connecting to it is not
// counted as a connection.
func (ch *soakChaos) waitListening(b *soakBackend) {
	ch.t.Helper()
	ctx, cancel := context.WithTimeout(ch.ctx, readyTimeout)
	defer cancel()
	require.NoError(ch.t, harness.WaitTCP(ctx, netip.AddrPortFrom(b.ip, dataproto.AdminPort).String()))
	b.listening = true
}

// cut runs f, an engine call that takes b away, and records it as a cut.
func (ch *soakChaos) cut(b *soakBackend, kind string, f func() error) {
	ch.t.Helper()
	begin := time.Now()
	require.NoError(ch.t, f())
	ch.cuts[b.ident()] = append(ch.cuts[b.ident()], soakSpan{kind: kind, begin: begin, end: time.Now()})
	b.listening = false
}

func (ch *soakChaos) kill(b *soakBackend) {
	ch.t.Helper()
	ch.record("kill", "%s (%s at %s)", b.ident(), b.name, b.ip)
	ch.cut(b, "kill", func() error {
		faultKill(ch.t, ch.ctx, b.c)
		// The kill returns once signalled; the backend is gone when the
		// engine says it stopped.
		_, err := eng.Wait(ch.ctx, b.c.ID)
		return err
	})
	b.running = false
}

func (ch *soakChaos) startStopped(b *soakBackend) {
	ch.t.Helper()
	ch.record("start", "%s (%s at %s)", b.ident(), b.name, b.ip)
	require.NoError(ch.t, eng.Restart(ch.ctx, b.c.ID))
	b.running = true
	ch.waitListening(b)
}

func (ch *soakChaos) pause(b *soakBackend) {
	ch.t.Helper()
	hold := soakBetween(ch.rng, soakPauseMin, soakPauseMax)
	ch.record("pause", "%s for %s", b.ident(), hold.Round(time.Millisecond))
	faultPause(ch.t, ch.ctx, b.c)
	ch.pauses[b.ident()] = append(ch.pauses[b.ident()], soakSpan{kind: "pause", begin: time.Now()})
	b.paused, b.until = true, time.Now().Add(hold)
}

func (ch *soakChaos) unpause(b *soakBackend) {
	ch.t.Helper()
	ch.record("unpause", "%s", b.ident())
	ps := ch.pauses[b.ident()]
	ps[len(ps)-1].end = time.Now()
	faultUnpause(ch.t, ch.ctx, b.c)
	b.paused = false
}

func (ch *soakChaos) rename(b *soakBackend) {
	ch.t.Helper()
	ch.renames++
	name := fullName(ch.t, fmt.Sprintf("%s-r%d", soakBase(b), ch.renames))
	ch.record("rename", "%s: %s → %s", b.ident(), b.name, name)
	require.NoError(ch.t, eng.Rename(ch.ctx, b.c.ID, name))
	b.name = name
}

func (ch *soakChaos) disconnect(b *soakBackend) {
	ch.t.Helper()
	hold := soakBetween(ch.rng, soakDisconnectMin, soakDisconnectMax)
	ch.record("disconnect", "%s from %s for %s", b.ident(), b.ip, hold.Round(time.Millisecond))
	ch.cut(b, "disconnect", func() error { return eng.Disconnect(ch.ctx, ch.n.ID, b.c.ID) })
	ch.release(b.ip)
	ch.maybeSteal(b.ip)
	b.ip, b.until = netip.Addr{}, time.Now().Add(hold)
}

func (ch *soakChaos) reconnect(b *soakBackend) {
	ch.t.Helper()
	ip := ch.alloc()
	ch.record("reconnect", "%s at %s", b.ident(), ip)
	require.NoError(ch.t, eng.Connect(ch.ctx, ch.n.ID, b.c.ID, ip))
	b.ip = ip
	ch.waitListening(b)
}

// recreate removes b's container (docker rm -f) and runs its next
// generation under the slot's first name, at another address.
func (ch *soakChaos) recreate(b *soakBackend) {
	ch.t.Helper()
	old := b.ident()
	if b.running {
		ch.record("recreate", "%s (%s at %s, running)", old, b.name, b.ip)
		ch.cut(b, "remove", func() error { return eng.Remove(ch.ctx, b.c.ID) })
	} else {
		ch.record("recreate", "%s (%s at %s, stopped)", old, b.name, b.ip)
		require.NoError(ch.t, eng.Remove(ch.ctx, b.c.ID))
	}
	ch.release(b.ip)
	ch.maybeSteal(b.ip)
	b.gen++
	ch.create(b)
	startCreated(ch.t, ch.ctx, b.c)
	ch.t.Logf("chaos          %-10s %s → %s at %s", "", old, b.ident(), b.ip)
}

// rewire points route r at target to with `ambassadord rewire` through the
// admin socket. The ambassador refuses a target with no usable backend
// that it knows of (the one the model counts on may have just started):
// then nothing changed.
func (ch *soakChaos) rewire(r, to int) {
	ch.t.Helper()
	hold := soakBetween(ch.rng, soakRewireMin, soakRewireMax)
	from := time.Now()
	stdout, stderr, code := dockerExec(ch.t, ch.ctx, ch.amb, "/ambassadord", "rewire", soakRouteName(r), soakTarget(ch.t, to))
	if code != 0 && strings.Contains(stdout+stderr, "no usable backend") {
		ch.record("refused", "rewire of route %s to t%d: %s", soakRouteName(r), to, strings.TrimSpace(stdout+stderr))
		return
	}
	require.Equal(ch.t, 0, code, "rewire: %s%s", stdout, stderr)
	ch.record("rewire", "route %s: t%d → t%d for %s", soakRouteName(r), ch.current(r), to, hold.Round(time.Millisecond))
	ch.switchEpoch(r, to, from)
	ch.resetAt[r] = time.Now().Add(hold)
}

// reset returns route r to its own target with `ambassadord rewire
// --reset`.
func (ch *soakChaos) reset(r int) {
	ch.t.Helper()
	ch.record("reset", "route %s: t%d → t%d", soakRouteName(r), ch.current(r), r)
	from := time.Now()
	stdout, stderr, code := dockerExec(ch.t, ch.ctx, ch.amb, "/ambassadord", "rewire", "--reset", soakRouteName(r))
	require.Equal(ch.t, 0, code, "rewire --reset: %s%s", stdout, stderr)
	ch.switchEpoch(r, r, from)
	ch.resetAt[r] = time.Time{}
}

// switchEpoch records that route r points at target from the time from
// on; the previous target ends now, when the command has returned (the
// ambassador applies a rewire before it answers).
func (ch *soakChaos) switchEpoch(r, target int, from time.Time) {
	es := ch.epochs[r]
	es[len(es)-1].until = time.Now()
	ch.epochs[r] = append(es, soakEpoch{target: target, from: from})
}

// current returns the target route r points at now.
func (ch *soakChaos) current(r int) int { return ch.epochs[r][len(ch.epochs[r])-1].target }

// maybeSteal moves the near decoy to ip, an address a backend has just
// given up, the first time and then a third of the time: as a busy engine
// gives an address to the next container at once. The ambassador must
// never send the decoy a connection meant for the backend that had it.
func (ch *soakChaos) maybeSteal(ip netip.Addr) {
	ch.t.Helper()
	if ch.done["steal"] > 0 && ch.rng.IntN(3) > 0 {
		return
	}
	ch.record("steal", "decoy-near %s → %s", ch.near.IP, ip)
	require.NoError(ch.t, eng.Disconnect(ch.ctx, ch.n.ID, ch.near.ID))
	ch.release(ch.near.IP)
	ch.held[ip] = true
	require.NoError(ch.t, eng.Connect(ch.ctx, ch.n.ID, ch.near.ID, ip))
	ch.near.IP = ip
}

// soakBetween returns a random duration in [lo, hi).
func soakBetween(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// spare returns the usable backends whose target keeps another usable
// one: those the chaos may take away.
func (ch *soakChaos) spare() []*soakBackend {
	usable := map[int]int{}
	for _, b := range ch.backends {
		if b.usable() {
			usable[b.target]++
		}
	}
	var out []*soakBackend
	for _, b := range ch.backends {
		if b.usable() && usable[b.target] > 1 {
			out = append(out, b)
		}
	}
	return out
}

// soakMove is an action the chaos loop may take now, with its weight.
type soakMove struct {
	kind   string
	weight int
	do     func()
}

// step takes one random action among those the model allows.
func (ch *soakChaos) step() {
	ch.t.Helper()
	pick := func(bs []*soakBackend) *soakBackend { return bs[ch.rng.IntN(len(bs))] }
	spare := ch.spare()
	var stopped []*soakBackend
	for _, b := range ch.backends {
		if !b.running {
			stopped = append(stopped, b)
		}
	}
	var moves []soakMove
	if len(spare) > 0 {
		moves = append(moves,
			soakMove{"kill", 3, func() { ch.kill(pick(spare)) }},
			soakMove{"pause", 2, func() { ch.pause(pick(spare)) }},
			soakMove{"disconnect", 2, func() { ch.disconnect(pick(spare)) }},
		)
	}
	if len(stopped) > 0 {
		moves = append(moves, soakMove{"start", 4, func() { ch.startStopped(pick(stopped)) }})
	}
	if movable := append(slices.Clone(spare), stopped...); len(movable) > 0 {
		moves = append(moves, soakMove{"recreate", 2, func() { ch.recreate(pick(movable)) }})
	}
	moves = append(moves, soakMove{"rename", 2, func() { ch.rename(pick(ch.backends)) }})
	var routes []int
	for r := range soakPorts {
		if ch.resetAt[r].IsZero() {
			routes = append(routes, r)
		}
	}
	if len(routes) > 0 {
		moves = append(moves, soakMove{"rewire", 1, func() {
			r := routes[ch.rng.IntN(len(routes))]
			ch.rewire(r, (r+1+ch.rng.IntN(len(soakPorts)-1))%len(soakPorts))
		}})
	}
	// Every kind of action once first, so that even a short soak has
	// them all; then at random, by weight.
	if fresh := slices.DeleteFunc(slices.Clone(moves), func(m soakMove) bool { return ch.done[m.kind] > 0 }); len(fresh) > 0 {
		fresh[ch.rng.IntN(len(fresh))].do()
		return
	}
	total := 0
	for _, m := range moves {
		total += m.weight
	}
	n := ch.rng.IntN(total)
	for _, m := range moves {
		if n -= m.weight; n < 0 {
			m.do()
			return
		}
	}
}

// due takes the actions whose time has come: unpause, reconnect, reset.
func (ch *soakChaos) due(now time.Time) {
	ch.t.Helper()
	for _, b := range ch.backends {
		switch {
		case b.paused && !now.Before(b.until):
			ch.unpause(b)
		case b.running && !b.ip.IsValid() && !now.Before(b.until):
			ch.reconnect(b)
		}
	}
	for r, at := range ch.resetAt {
		if !at.IsZero() && !now.Before(at) {
			ch.reset(r)
		}
	}
}

// heal undoes what the chaos left: every backend running, connected,
// unpaused and listening; every route on its own target.
func (ch *soakChaos) heal() {
	ch.t.Helper()
	ch.t.Logf("healing")
	for _, b := range ch.backends {
		switch {
		case b.paused:
			ch.unpause(b)
		case !b.running:
			ch.startStopped(b)
		case !b.ip.IsValid():
			ch.reconnect(b)
		}
	}
	for r, at := range ch.resetAt {
		if !at.IsZero() {
			ch.reset(r)
		}
	}
	for _, b := range ch.backends {
		require.Truef(ch.t, b.usable(), "%s not healed", b.ident())
	}
}

// run is the chaos loop: for dur, one action at a random pace and those
// that are due, with the ambassador's resources sampled at every step and
// a progress line now and then. It returns the peak resources.
func (ch *soakChaos) run(dur time.Duration, metrics string, clients *soakClients, base soakUsage) soakUsage {
	ch.t.Helper()
	ch.start = time.Now()
	end := ch.start.Add(dur)
	peak := base
	progress := ch.start.Add(soakProgressEvery)
	for time.Now().Before(end) && ch.ctx.Err() == nil {
		soakPace(ch.ctx, min(soakBetween(ch.rng, soakPaceMin, soakPaceMax), time.Until(end)))
		if !time.Now().Before(end) {
			break
		}
		ch.due(time.Now())
		ch.step()
		if u, err := soakMeasure(ch.ctx, metrics, ch.amb); err == nil {
			peak = peak.max(u)
			if time.Now().After(progress) {
				ch.t.Logf("soak +%s: %d sessions so far, %d actions; now %s", time.Since(ch.start).Round(time.Second), clients.count(), ch.taken(), u)
				progress = progress.Add(soakProgressEvery)
			}
		}
	}
	require.NoError(ch.t, ch.ctx.Err(), "the soak ran out of time")
	return peak
}

// soakReachAll requires fresh sessions to route r to reach every backend
// of its target (all of them running, connected and unpaused), and no
// other server, without a failure.
func soakReachAll(t *testing.T, ctx context.Context, ch *soakChaos, r int) {
	t.Helper()
	want := map[string]bool{}
	for _, b := range ch.backends {
		if b.target == r {
			want[b.ident()] = false
		}
	}
	target := addr(ch.amb, soakPorts[r])
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := harness.Poll(wctx, func(ctx context.Context) error {
		for range 2 * len(want) {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			id, err := load.Whoami(actx, target)
			cancel()
			if err != nil {
				return harness.Permanent(fmt.Errorf("a fresh connection to %s failed: %w", target, err))
			}
			if _, ok := want[id.Name]; !ok {
				return harness.Permanent(fmt.Errorf("a fresh connection to %s reached %s, not a backend of t%d", target, id.Name, r))
			}
			want[id.Name] = true
		}
		var missing []string
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if !want[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not reached yet: %v", missing)
		}
		return nil
	})
	require.NoErrorf(t, err, "route %s reaching every backend of t%d", soakRouteName(r), r)
}

// soakUsage is what the ambassador uses, from its metrics and, when the
// test can see its process, /proc.
type soakUsage struct {
	goroutines, fds, rss float64
	pipes                int // -1 when /proc could not be read
}

func (u soakUsage) String() string {
	pipes := "?"
	if u.pipes >= 0 {
		pipes = strconv.Itoa(u.pipes)
	}
	return fmt.Sprintf("goroutines %.0f, open fds %.0f (pipes %s), RSS %.1f MiB", u.goroutines, u.fds, pipes, u.rss/(1<<20))
}

func (u soakUsage) max(o soakUsage) soakUsage {
	return soakUsage{goroutines: max(u.goroutines, o.goroutines), fds: max(u.fds, o.fds), rss: max(u.rss, o.rss), pipes: max(u.pipes, o.pipes)}
}

// soakMeasure reads the ambassador's goroutines, descriptors and resident
// memory from its metrics, and counts its pipes in /proc.
func soakMeasure(ctx context.Context, metrics string, amb *harness.Container) (soakUsage, error) {
	f, err := scrape(ctx, metrics)
	if err != nil {
		return soakUsage{}, err
	}
	var u soakUsage
	for name, v := range map[string]*float64{"go_goroutines": &u.goroutines, "process_open_fds": &u.fds, "process_resident_memory_bytes": &u.rss} {
		var ok bool
		if *v, ok = f.value(name, nil); !ok {
			return soakUsage{}, fmt.Errorf("no %s in %s", name, metrics)
		}
	}
	u.pipes = soakPipes(ctx, amb)
	return u, nil
}

// soakPipes counts the pipes among the ambassador's descriptors, or
// returns -1 when /proc does not show its process.
func soakPipes(ctx context.Context, amb *harness.Container) int {
	insp, err := eng.Inspect(ctx, amb.ID)
	if err != nil || insp.State == nil || insp.State.Pid == 0 {
		return -1
	}
	dir := fmt.Sprintf("/proc/%d/fd", insp.State.Pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range entries {
		if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(link, "pipe:") {
			n++
		}
	}
	return n
}

// soakActive returns the connections the ambassador forwards now, over
// every route and backend.
func soakActive(ctx context.Context, metrics string) (float64, error) {
	f, err := scrape(ctx, metrics)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, m := range f.series("ambassadord_connections_active", nil) {
		sum += m.GetGauge().GetValue()
	}
	return sum, nil
}

// soakQuiet waits until the ambassador forwards no connection and returns
// what it uses then.
func soakQuiet(t *testing.T, ctx context.Context, amb *harness.Container, metrics string) soakUsage {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var u soakUsage
	err := harness.Poll(wctx, func(ctx context.Context) error {
		n, err := soakActive(ctx, metrics)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%v connections active", n)
		}
		u, err = soakMeasure(ctx, metrics, amb)
		return err
	})
	require.NoError(t, err, "wait for the ambassador to forward no connection")
	return u
}

// soakSettled waits, up to soakResourceWait, until the ambassador forwards
// no connection and its resources are back within their bounds of base,
// then requires it, and returns what it uses.
func soakSettled(t *testing.T, ctx context.Context, amb *harness.Container, metrics string, base soakUsage) soakUsage {
	t.Helper()
	within := func(u soakUsage) error {
		var errs []error
		if u.goroutines > base.goroutines+soakGoroutineSlack {
			errs = append(errs, fmt.Errorf("goroutines %.0f > %.0f+%d", u.goroutines, base.goroutines, soakGoroutineSlack))
		}
		if u.fds > base.fds+soakFDSlack+soakPipeFDs {
			errs = append(errs, fmt.Errorf("open fds %.0f > %.0f+%d+%d (pipe pool)", u.fds, base.fds, soakFDSlack, soakPipeFDs))
		}
		if u.pipes >= 0 && base.pipes >= 0 && u.fds-float64(u.pipes) > base.fds-float64(base.pipes)+soakFDSlack {
			errs = append(errs, fmt.Errorf("open fds other than pipes %.0f > %.0f+%d", u.fds-float64(u.pipes), base.fds-float64(base.pipes), soakFDSlack))
		}
		if u.rss > base.rss+soakRSSSlack {
			errs = append(errs, fmt.Errorf("RSS %.1f MiB > %.1f+%d MiB", u.rss/(1<<20), base.rss/(1<<20), soakRSSSlack>>20))
		}
		return errors.Join(errs...)
	}
	wctx, cancel := context.WithTimeout(ctx, soakResourceWait)
	defer cancel()
	var u soakUsage
	started := time.Now()
	err := harness.Poll(wctx, func(ctx context.Context) error {
		n, err := soakActive(ctx, metrics)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%v connections active", n)
		}
		if u, err = soakMeasure(ctx, metrics, amb); err != nil {
			return err
		}
		return within(u)
	})
	assert.NoErrorf(t, err, "the ambassador's resources after the soak, against the baseline %s", base)
	t.Logf("resources back within bounds %s after the clients stopped: %s", time.Since(started).Round(time.Millisecond), u)
	return u
}

// soakSession is one client session through the ambassador, as the client
// saw it.
type soakSession struct {
	route        int
	long         bool
	start, end   time.Time
	id           dataproto.Identity // who answered; zero Name when no identity came back
	sent, echoed int64
	corrupt      string // what was wrong with the bytes received; empty when every one was right
	err          error  // why it did not complete; nil when it did
}

func (s soakSession) ok() bool { return s.err == nil && s.corrupt == "" }

func (s soakSession) String() string {
	kind := "short"
	if s.long {
		kind = "long"
	}
	who := "no identity"
	if s.id.Name != "" {
		who = fmt.Sprintf("%s (at %s, accepted %s)", s.id.Name, s.id.Local, s.id.Accepted.Format("15:04:05.000"))
	}
	out := fmt.Sprintf("%s %s session %s +%s on %s, %d of %d bytes echoed",
		soakRouteName(s.route), kind, s.start.Format("15:04:05.000"), s.end.Sub(s.start).Round(time.Millisecond), who, s.echoed, s.sent)
	if s.corrupt != "" {
		out += ", CORRUPT: " + s.corrupt
	}
	if s.err != nil {
		out += fmt.Sprintf(", %v (%s)", s.err, load.How(s.err))
	}
	return out
}

// soakClients runs the sessions of every route in the background and
// records them. Its methods are safe for concurrent use.
type soakClients struct {
	stop chan struct{} // closed by halt: no new session, long ones end
	once sync.Once
	wg   sync.WaitGroup

	mu       sync.Mutex
	sessions []soakSession // guarded by mu, in order of completion
}

// soakStartClients starts the short and long workers of every route; they
// stop when halted or when the test ends.
func soakStartClients(t *testing.T, addrs []string, seed uint64) *soakClients {
	t.Helper()
	c := &soakClients{stop: make(chan struct{})}
	for r, a := range addrs {
		for w := range soakShortWorkers {
			c.wg.Add(1)
			go c.short(r, a, rand.New(rand.NewPCG(seed, uint64(100*r+w))))
		}
		for w := range soakLongWorkers {
			c.wg.Add(1)
			go c.long(r, a, rand.New(rand.NewPCG(seed, uint64(100*r+50+w))))
		}
	}
	t.Cleanup(func() { c.halt() })
	return c
}

// short opens a short session every soakShortInterval, one at a time.
func (c *soakClients) short(route int, addr string, rng *rand.Rand) {
	defer c.wg.Done()
	tick := time.NewTicker(soakShortInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		c.add(soakShort(route, addr, rng.Uint64(), 1+rng.IntN(soakShortMax)))
	}
}

// long keeps one long session open at a time.
func (c *soakClients) long(route int, addr string, rng *rand.Rand) {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		c.add(soakLong(route, addr, rng.Uint64(), soakBetween(rng, soakLongMin, soakLongMax), c.stop))
	}
}

func (c *soakClients) add(s soakSession) {
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.mu.Unlock()
}

// count returns how many sessions have ended so far.
func (c *soakClients) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

// halt stops the workers, lets the sessions in progress end (long ones
// end their stream early, cleanly) and returns every session.
func (c *soakClients) halt() []soakSession {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sessions)
}

// soakShort is one short session: a fresh connection asks who answers,
// sends size bytes of Stream(seed), half-closes and requires them back,
// then EOF.
func soakShort(route int, addr string, seed uint64, size int) (s soakSession) {
	s = soakSession{route: route, start: time.Now()}
	defer func() { s.end = time.Now() }()
	c, err := net.DialTimeout("tcp", addr, soakShortTimeout)
	if err != nil {
		s.err = fmt.Errorf("dial: %w", err)
		return s
	}
	defer c.Close()
	c.SetDeadline(s.start.Add(soakShortTimeout))
	tc := c.(*net.TCPConn)
	payload := make([]byte, size)
	io.ReadFull(dataproto.Stream(seed), payload)
	if _, err := tc.Write(append(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode(), payload...)); err != nil {
		s.err = fmt.Errorf("send: %w", err)
		return s
	}
	s.sent = int64(size)
	if err := tc.CloseWrite(); err != nil {
		s.err = fmt.Errorf("half-close: %w", err)
		return s
	}
	r := bufio.NewReader(tc)
	if s.id, s.err = soakIdentity(r, &s); s.err != nil || s.corrupt != "" {
		return s
	}
	got, err := io.ReadAll(r)
	s.echoed = int64(len(got))
	for i := range min(len(got), size) {
		if got[i] != payload[i] {
			s.corrupt = fmt.Sprintf("echo byte %d of %d differs", i, size)
			break
		}
	}
	switch {
	case len(got) > size && s.corrupt == "":
		s.corrupt = fmt.Sprintf("%d bytes echoed beyond the %d sent", len(got)-size, size)
	case err != nil:
		s.err = fmt.Errorf("read the echo after %d of %d bytes: %w", len(got), size, err)
	case len(got) < size:
		s.err = fmt.Errorf("echo ended after %d of %d bytes: %w", len(got), size, io.ErrUnexpectedEOF)
	}
	return s
}

// soakIdentity reads the server's identity line. A connection that ends
// first is a failure; a line that is not an identity is corruption.
func soakIdentity(r *bufio.Reader, s *soakSession) (dataproto.Identity, error) {
	id, err := dataproto.ReadIdentity(r)
	switch {
	case err == nil:
		return id, nil
	case soakClosed(err), errors.Is(err, os.ErrDeadlineExceeded):
		return id, err
	}
	s.corrupt = err.Error()
	return id, nil
}

// soakLong is one long session: it asks who answers, then streams
// Stream(seed) for planned (or until stop), checking every echoed byte as
// it arrives, half-closes and requires every byte back, then EOF.
func soakLong(route int, addr string, seed uint64, planned time.Duration, stop <-chan struct{}) (s soakSession) {
	s = soakSession{route: route, long: true, start: time.Now()}
	defer func() {
		if s.end.IsZero() {
			s.end = time.Now()
		}
	}()
	c, err := net.DialTimeout("tcp", addr, soakShortTimeout)
	if err != nil {
		s.err = fmt.Errorf("dial: %w", err)
		return s
	}
	defer c.Close()
	c.SetDeadline(s.start.Add(planned + soakLongSlack))
	tc := c.(*net.TCPConn)
	if _, err := tc.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
		s.err = fmt.Errorf("send header: %w", err)
		return s
	}
	r := bufio.NewReader(tc)
	if s.id, s.err = soakIdentity(r, &s); s.err != nil || s.corrupt != "" {
		return s
	}

	var sent int64          // written by soakSend until it reports on done
	var closing atomic.Bool // set by soakSend before it half-closes
	done := make(chan error, 1)
	go soakSend(tc, seed, planned, stop, &sent, &closing, done)
	want := dataproto.Stream(seed)
	buf, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	var rerr error
	for rerr == nil {
		var n int
		n, rerr = r.Read(buf)
		if n > 0 {
			io.ReadFull(want, exp[:n])
			if i := soakDiffer(buf[:n], exp[:n]); i >= 0 && s.corrupt == "" {
				s.corrupt = fmt.Sprintf("echo byte %d differs", s.echoed+int64(i))
			}
			s.echoed += int64(n)
		}
	}
	s.end = time.Now()
	// The server ends the echo only after the half-close: an end before it
	// was not the server's doing. Close, so that the sender stops.
	if !errors.Is(rerr, io.EOF) || !closing.Load() {
		tc.Close()
		if errors.Is(rerr, io.EOF) {
			rerr = fmt.Errorf("echo ended while sending: %w", io.ErrUnexpectedEOF)
		}
	}
	werr := <-done
	s.sent = sent
	switch {
	case !errors.Is(rerr, io.EOF):
		s.err = fmt.Errorf("read the echo after %d bytes: %w", s.echoed, rerr)
	case werr != nil:
		s.err = fmt.Errorf("send after %d bytes: %w", s.sent, werr)
	case s.echoed < s.sent:
		s.err = fmt.Errorf("echo ended after %d of %d bytes: %w", s.echoed, s.sent, io.ErrUnexpectedEOF)
	case s.echoed > s.sent && s.corrupt == "":
		s.corrupt = fmt.Sprintf("%d bytes echoed beyond the %d sent", s.echoed-s.sent, s.sent)
	}
	return s
}

// soakSend writes a chunk of Stream(seed) every soakLongInterval for
// planned or until stop, then sets closing and half-closes, and reports on
// done; *n is the number of bytes written.
func soakSend(c *net.TCPConn, seed uint64, planned time.Duration, stop <-chan struct{}, n *int64, closing *atomic.Bool, done chan<- error) {
	src := dataproto.Stream(seed)
	chunk := make([]byte, soakLongChunk)
	tick := time.NewTicker(soakLongInterval)
	defer tick.Stop()
	end := time.NewTimer(planned)
	defer end.Stop()
	for {
		select {
		case <-stop:
		case <-end.C:
		case <-tick.C:
			io.ReadFull(src, chunk)
			m, err := c.Write(chunk)
			*n += int64(m)
			if err != nil {
				done <- err
				return
			}
			continue
		}
		closing.Store(true)
		done <- c.CloseWrite()
		return
	}
}

// soakDiffer returns the index of the first byte where a and b differ, or
// -1.
func soakDiffer(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// soakVerdict is the judgement of every session of a soak.
type soakVerdict struct {
	routes []soakTally // by route
	// The sessions that break a rule, by rule.
	violations map[string][]soakSession
	excused    []soakSession // failed with their backend taken away
}

// soakTally counts one route's sessions by outcome.
type soakTally struct {
	total, long int
	ok          int // completed, every byte right
	excused     int // failed, closed, with their backend taken away
	failed      int // failed otherwise
}

// judge checks every session against the chaos loop's record.
func (ch *soakChaos) judge(sessions []soakSession) soakVerdict {
	v := soakVerdict{routes: make([]soakTally, len(soakPorts)), violations: map[string][]soakSession{}}
	bad := func(rule string, s soakSession) { v.violations[rule] = append(v.violations[rule], s) }
	slices.SortFunc(sessions, func(a, b soakSession) int { return a.start.Compare(b.start) })
	for _, s := range sessions {
		tally := &v.routes[s.route]
		tally.total++
		if s.long {
			tally.long++
		}
		if s.corrupt != "" {
			bad("corrupted bytes", s)
		}
		if s.id.Name != "" {
			target, known := soakParseIdent(s.id.Name)
			switch {
			case !known:
				bad("reached a server that is no backend (a decoy)", s)
			case !slices.Contains(ch.targets(s.route, s.start, soakLater(s.start, s.id.Accepted)), target):
				bad("reached a backend of a target its route did not point at", s)
			case ch.pausedAt(s.id.Name, s.start):
				bad(fmt.Sprintf("routed to a backend paused more than %s before", soakPauseKnown), s)
			}
		}
		switch {
		case s.ok():
			tally.ok++
		case s.err == nil:
			// Corrupted: already a violation.
		case s.id.Name != "":
			cut, ok := ch.cutDuring(s.id.Name, s.start, s.end, 0)
			switch {
			case !ok:
				tally.failed++
				bad("failed although its backend was not taken away", s)
			case !soakClosed(s.err) || s.end.After(cut.end.Add(soakCutClose)):
				tally.failed++
				bad(fmt.Sprintf("not closed (EOF or reset) within %s of its backend's %s", soakCutClose, cut.kind), s)
			default:
				tally.excused++
				v.excused = append(v.excused, s)
			}
		default:
			excused := false
			if soakClosed(s.err) {
				for _, target := range ch.targets(s.route, s.start, s.end) {
					if ch.targetCut(target, s.start, s.end) {
						excused = true
						break
					}
				}
			}
			if excused {
				tally.excused++
				v.excused = append(v.excused, s)
			} else {
				tally.failed++
				bad("failed without an identity while no backend of its target was taken away", s)
			}
		}
	}
	return v
}

// soakClosed reports whether err is a connection ending, cleanly or not,
// as opposed to a hang (a deadline) or an error of the client's own: the
// faults fault_test.go knows, and a half-close refused because a reset
// has already ended the connection.
func soakClosed(err error) bool { return load.Closed(err) || errors.Is(err, syscall.ENOTCONN) }

// soakLater returns the later of two times.
func soakLater(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// targets returns the targets route r pointed at, at some time between
// from and to.
func (ch *soakChaos) targets(r int, from, to time.Time) []int {
	var out []int
	for _, e := range ch.epochs[r] {
		if !e.from.After(to) && (e.until.IsZero() || !e.until.Before(from)) && !slices.Contains(out, e.target) {
			out = append(out, e.target)
		}
	}
	return out
}

// pausedAt reports whether the backend ident had been paused for
// soakPauseKnown, and not yet unpaused, at t.
func (ch *soakChaos) pausedAt(ident string, t time.Time) bool {
	for _, p := range ch.pauses[ident] {
		if !t.Before(p.begin.Add(soakPauseKnown)) && (p.end.IsZero() || t.Before(p.end)) {
			return true
		}
	}
	return false
}

// cutDuring returns a cut of the backend ident that overlaps from..to,
// where the cut counts as lasting slack longer.
func (ch *soakChaos) cutDuring(ident string, from, to time.Time, slack time.Duration) (soakSpan, bool) {
	for _, c := range ch.cuts[ident] {
		if !c.begin.After(to) && !c.end.Add(slack).Before(from) {
			return c, true
		}
	}
	return soakSpan{}, false
}

// targetCut reports whether a backend of target was taken away between
// from and to, or up to soakCutSlack before from.
func (ch *soakChaos) targetCut(target int, from, to time.Time) bool {
	for ident := range ch.cuts {
		if t, _ := soakParseIdent(ident); t == target {
			if _, ok := ch.cutDuring(ident, from, to, soakCutSlack); ok {
				return true
			}
		}
	}
	return false
}

// String summarises the verdict route by route.
func (v soakVerdict) String() string {
	var parts []string
	for r, n := range v.routes {
		parts = append(parts, fmt.Sprintf("route %s (t%d): %d (%d long), %d ok, %d failed with their backend taken away (excused), %d failed otherwise",
			soakRouteName(r), r, n.total, n.long, n.ok, n.excused, n.failed))
	}
	return strings.Join(parts, "; ")
}

// report logs the excused sessions and fails the test for every rule
// broken, listing up to ten sessions each.
func (v soakVerdict) report(t *testing.T) {
	t.Helper()
	t.Logf("%d sessions failed, closed, with their backend taken away (excused):\n%s", len(v.excused), soakList(v.excused))
	for _, rule := range slices.Sorted(maps.Keys(v.violations)) {
		ss := v.violations[rule]
		t.Errorf("%d sessions %s:\n%s", len(ss), rule, soakList(ss))
	}
}

// soakList lists up to ten sessions, one per line.
func soakList(ss []soakSession) string {
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
