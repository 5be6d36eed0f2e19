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
// session is judged against that record. The model, the record, the
// clients and the judge are internal/soak, tested there on their own; this
// file runs them against the engine. Every helper's name starts with soak
// so that it cannot clash with the other e2e files.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
	"github.com/ambassadord/ambassadord/internal/soak"
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
// soakPaceMax (internal/soak's model picks it, and how long a pause, a
// disconnection or a rewire lasts).
const (
	soakPaceMin, soakPaceMax = 500 * time.Millisecond, 1500 * time.Millisecond
	soakProgressEvery        = 30 * time.Second
	soakWarmup               = 3 * time.Second
	soakSettle               = 3 * time.Second
	// soakBackendWait is the ambassador's --backend-wait: long enough that
	// a connection opened while a route briefly has no backend the
	// ambassador knows of waits for one, rather than failing. The clients'
	// deadlines (internal/soak) allow for it.
	soakBackendWait = "8s"
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
// Nothing lost means (soak.Judge has the rules in full):
//   - no session gets a byte wrong: every echo is a correct prefix of what
//     was sent, whatever happened to its backend;
//   - every session completes, except those whose backend was killed,
//     removed or disconnected while they ran, and those (without an
//     identity) that ran while a backend their route could pick was taken
//     away; and those are closed (EOF or reset), never left hanging;
//   - no session reaches a backend its route could not select: the
//     backends of the route's target, or of the target it was rewired to
//     while the session connected; never a decoy, never a paused backend
//     once the pause is known (soak.PauseKnown), and the decoys receive no
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
	m := ch.m
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
	warmed := warm.Halt()
	if failed := slices.DeleteFunc(slices.Clone(warmed), soak.Session.OK); len(failed) > 0 {
		t.Errorf("%d warm-up sessions failed, nothing having changed:\n%s", len(failed), soak.List(failed))
	}
	base := soakQuiet(t, ctx, ch.amb, metrics)
	t.Logf("warm-up: %d sessions; baseline: %s", len(warmed), base)

	clients := soakStartClients(t, addrs, seed)
	peak := ch.run(dur, metrics, clients, base)
	ch.heal()
	soakPace(ctx, soakSettle)
	sessions := clients.Halt()

	for _, kind := range soak.Kinds {
		assert.Positivef(t, m.Done(kind), "%s actions: the soak was too short to take every kind", kind)
	}
	v := soak.Judge(m.History, sessions)
	soakReport(t, v)

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
		seed, dur, len(sessions), v, m.Counts())
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

// soakRouteName is route r's name: its listen port.
func soakRouteName(r int) string { return strconv.Itoa(int(soakPorts[r])) }

// soakStartClients starts the clients of every route (soak.StartClients);
// they stop when halted or when the test ends.
func soakStartClients(t *testing.T, addrs []string, seed uint64) *soak.Clients {
	t.Helper()
	c := soak.StartClients(addrs, seed)
	t.Cleanup(func() { c.Halt() })
	return c
}

// soakReport logs the excused sessions and fails the test for every rule
// broken, listing up to ten sessions each.
func soakReport(t *testing.T, v soak.Verdict) {
	t.Helper()
	t.Logf("%d sessions failed, closed, with their backend taken away (excused):\n%s", len(v.Excused), soak.List(v.Excused))
	for _, rule := range v.Rules() {
		ss := v.Violations[rule]
		t.Errorf("%d sessions %s:\n%s", len(ss), rule, soak.List(ss))
	}
}

// soakChaos runs the chaos against the engine: internal/soak's model
// chooses each action, and soakChaos takes it and tells the model. It is
// used by the test's goroutine only.
type soakChaos struct {
	t     *testing.T
	ctx   context.Context
	m     *soak.Model
	start time.Time

	n      *harness.Network     // the network the ambassador shares with its backends
	amb    *harness.Container   // the ambassador
	cs     []*harness.Container // the current container of every slot, as m.Backends
	names  []string             // their names now: docker rename changes them
	decoys []*harness.Container // the far one (claims t0, unreachable) and the near one (a look-alike, on n)
	near   *harness.Container

	renames int
}

// soakScene starts the networks, the backends, the decoys and the
// ambassador, and returns the chaos loop that drives them.
func soakScene(t *testing.T, ctx context.Context, seed uint64) *soakChaos {
	t.Helper()
	names := make([]string, len(soakPorts))
	for r := range soakPorts {
		names[r] = soakRouteName(r)
	}
	begin := time.Now()
	n := newNetwork(t, ctx, "net", true)
	var pool []netip.Addr
	for h := range soakPoolSize {
		pool = append(pool, n.Addr(byte(soakPoolFirst+h)))
	}
	ch := &soakChaos{t: t, ctx: ctx, n: n, m: soak.NewModel(rand.New(rand.NewPCG(seed, 0x50a4)), pool, names, soakBackends)}
	far := newNetwork(t, ctx, "far", false)
	ch.cs = make([]*harness.Container, len(ch.m.Backends))
	ch.names = make([]string, len(ch.m.Backends))
	for i := range ch.m.Backends {
		ch.create(i)
	}
	all := slices.Clone(ch.cs)
	// A claimer of t0 on no network the ambassador shares: never used,
	// whatever its labels.
	ch.decoys = append(ch.decoys, createServer(t, ctx, harness.Spec{
		Name: "t0-far", Networks: []string{far.Name}, Labels: map[string]string{labelTarget: soakTarget(t, 0)},
	}, "decoy-far"))
	// A look-alike on the shared network: named and claiming a target no
	// route serves, and moved during the chaos to addresses backends gave up.
	ip, err := ch.m.Alloc()
	require.NoError(t, err)
	ch.near = createServer(t, ctx, harness.Spec{
		Name: "t1-decoy", Networks: []string{n.Name}, IPs: map[string]netip.Addr{n.Name: ip},
		Labels: map[string]string{labelTarget: soakTarget(t, 1) + "-decoy"},
	}, "decoy-near")
	ch.decoys = append(ch.decoys, ch.near)
	soakStartAll(t, ctx, append(all, ch.decoys...))

	route := func(r int) string { return fmt.Sprintf("%d:%s:%d", soakPorts[r], soakTarget(t, r), dataPort) }
	ch.amb = startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: soakTarget(t, 2), labelPorts: fmt.Sprintf("%d:%d", soakPorts[2], dataPort)},
		// Claims are invited on the two --route routes: the soak's
		// targets are claimed, and the decoys check where claims count.
		Cmd: append([]string{"--route", route(0), "--route", route(1), "--claims", "label,routes", "--backend-wait", soakBackendWait}, publicAdmin...),
	})
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
func soakBase(b *soak.Backend) string { return fmt.Sprintf("t%d-b%d", b.Target, b.Slot) }

// create creates slot i's container (generation Gen) at a pool address;
// the caller starts it.
func (ch *soakChaos) create(i int) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ip, err := ch.m.Alloc()
	require.NoError(ch.t, err)
	ch.cs[i] = createServer(ch.t, ch.ctx, harness.Spec{
		Name: soakBase(b), Networks: []string{ch.n.Name}, IPs: map[string]netip.Addr{ch.n.Name: ip},
		Labels: map[string]string{labelTarget: soakTarget(ch.t, b.Target)},
	}, b.Ident())
	ch.names[i] = ch.cs[i].Name
	ch.m.Created(b, ip)
}

// record logs and counts one action.
func (ch *soakChaos) record(kind, format string, args ...any) {
	ch.t.Helper()
	ch.m.Record(kind)
	ch.t.Logf("chaos +%6.2fs %-10s %s", time.Since(ch.start).Seconds(), kind, fmt.Sprintf(format, args...))
}

// waitListening waits until slot i's dataserver accepts at its address:
// its admin port listens after its data port, and connecting to it is not
// counted as a connection.
func (ch *soakChaos) waitListening(i int) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ctx, cancel := context.WithTimeout(ch.ctx, readyTimeout)
	defer cancel()
	require.NoError(ch.t, harness.WaitTCP(ctx, netip.AddrPortFrom(b.IP, dataproto.AdminPort).String()))
	ch.m.Listens(b)
}

// do takes the action mv.
func (ch *soakChaos) do(mv soak.Move) {
	ch.t.Helper()
	switch mv.Kind {
	case soak.Kill:
		ch.kill(mv.Backend)
	case soak.Start:
		ch.startStopped(mv.Backend)
	case soak.Pause:
		ch.pause(mv.Backend, mv.Hold)
	case soak.Unpause:
		ch.unpause(mv.Backend)
	case soak.Rename:
		ch.rename(mv.Backend)
	case soak.Disconnect:
		ch.disconnect(mv.Backend, mv.Hold)
	case soak.Reconnect:
		ch.reconnect(mv.Backend)
	case soak.Recreate:
		ch.recreate(mv.Backend)
	case soak.Rewire:
		ch.rewire(mv.Route, mv.To, mv.Hold)
	case soak.Reset:
		ch.reset(mv.Route)
	default:
		ch.t.Fatalf("unknown chaos move %+v", mv)
	}
}

func (ch *soakChaos) kill(i int) {
	ch.t.Helper()
	b, c := ch.m.Backends[i], ch.cs[i]
	ch.record(soak.Kill, "%s (%s at %s)", b.Ident(), ch.names[i], b.IP)
	begin := time.Now()
	faultKill(ch.t, ch.ctx, c)
	// The kill returns once signalled; the backend is gone when the
	// engine says it stopped.
	_, err := eng.Wait(ch.ctx, c.ID)
	require.NoError(ch.t, err)
	ch.m.Killed(b, begin, time.Now())
}

func (ch *soakChaos) startStopped(i int) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ch.record(soak.Start, "%s (%s at %s)", b.Ident(), ch.names[i], b.IP)
	require.NoError(ch.t, eng.Restart(ch.ctx, ch.cs[i].ID))
	ch.m.Started(b)
	ch.waitListening(i)
}

func (ch *soakChaos) pause(i int, hold time.Duration) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ch.record(soak.Pause, "%s for %s", b.Ident(), hold.Round(time.Millisecond))
	faultPause(ch.t, ch.ctx, ch.cs[i])
	ch.m.Paused(b, time.Now(), hold)
}

func (ch *soakChaos) unpause(i int) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ch.record(soak.Unpause, "%s", b.Ident())
	ch.m.Unpaused(b, time.Now())
	faultUnpause(ch.t, ch.ctx, ch.cs[i])
}

func (ch *soakChaos) rename(i int) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ch.renames++
	name := fullName(ch.t, fmt.Sprintf("%s-r%d", soakBase(b), ch.renames))
	ch.record(soak.Rename, "%s: %s → %s", b.Ident(), ch.names[i], name)
	require.NoError(ch.t, eng.Rename(ch.ctx, ch.cs[i].ID, name))
	ch.names[i] = name
}

func (ch *soakChaos) disconnect(i int, hold time.Duration) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ip := b.IP
	ch.record(soak.Disconnect, "%s from %s for %s", b.Ident(), ip, hold.Round(time.Millisecond))
	begin := time.Now()
	require.NoError(ch.t, eng.Disconnect(ch.ctx, ch.n.ID, ch.cs[i].ID))
	ch.m.Disconnected(b, begin, time.Now(), hold)
	ch.maybeSteal(ip)
}

func (ch *soakChaos) reconnect(i int) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	ip, err := ch.m.Alloc()
	require.NoError(ch.t, err)
	ch.record(soak.Reconnect, "%s at %s", b.Ident(), ip)
	require.NoError(ch.t, eng.Connect(ch.ctx, ch.n.ID, ch.cs[i].ID, ip))
	ch.m.Reconnected(b, ip)
	ch.waitListening(i)
}

// recreate removes slot i's container (docker rm -f) and runs its next
// generation under the slot's first name, at another address.
func (ch *soakChaos) recreate(i int) {
	ch.t.Helper()
	b := ch.m.Backends[i]
	old, ip, state := b.Ident(), b.IP, "stopped"
	if b.Running {
		state = "running"
	}
	ch.record(soak.Recreate, "%s (%s at %s, %s)", old, ch.names[i], ip, state)
	begin := time.Now()
	require.NoError(ch.t, eng.Remove(ch.ctx, ch.cs[i].ID))
	ch.m.Removed(b, begin, time.Now())
	ch.maybeSteal(ip)
	ch.create(i)
	startCreated(ch.t, ch.ctx, ch.cs[i])
	ch.t.Logf("chaos          %-10s %s → %s at %s", "", old, b.Ident(), b.IP)
}

// rewire points route r at target to with `ambassadord rewire` through the
// admin socket. The ambassador refuses a target with no usable backend
// that it knows of (the one the model counts on may have just started):
// then nothing changed.
func (ch *soakChaos) rewire(r, to int, hold time.Duration) {
	ch.t.Helper()
	from := time.Now()
	stdout, stderr, code := dockerExec(ch.t, ch.ctx, ch.amb, "/ambassadord", "rewire", soakRouteName(r), soakTarget(ch.t, to))
	if code != 0 && strings.Contains(stdout+stderr, "no usable backend") {
		ch.record(soak.Refused, "rewire of route %s to t%d: %s", soakRouteName(r), to, strings.TrimSpace(stdout+stderr))
		return
	}
	require.Equal(ch.t, 0, code, "rewire: %s%s", stdout, stderr)
	ch.record(soak.Rewire, "route %s: t%d → t%d for %s", soakRouteName(r), ch.m.History.Current(r), to, hold.Round(time.Millisecond))
	ch.m.Rewired(r, to, from, time.Now(), hold)
}

// reset returns route r to its own target with `ambassadord rewire
// --reset`.
func (ch *soakChaos) reset(r int) {
	ch.t.Helper()
	ch.record(soak.Reset, "route %s: t%d → t%d", soakRouteName(r), ch.m.History.Current(r), r)
	from := time.Now()
	stdout, stderr, code := dockerExec(ch.t, ch.ctx, ch.amb, "/ambassadord", "rewire", "--reset", soakRouteName(r))
	require.Equal(ch.t, 0, code, "rewire --reset: %s%s", stdout, stderr)
	ch.m.WasReset(r, from, time.Now())
}

// maybeSteal moves the near decoy to ip, an address a backend has just
// given up, when the model says so (the first time, then a third of the
// time): as a busy engine gives an address to the next container at once.
// The ambassador must never send the decoy a connection meant for the
// backend that had it.
func (ch *soakChaos) maybeSteal(ip netip.Addr) {
	ch.t.Helper()
	if !ch.m.StealNext() {
		return
	}
	ch.record(soak.Steal, "decoy-near %s → %s", ch.near.IP, ip)
	require.NoError(ch.t, eng.Disconnect(ch.ctx, ch.n.ID, ch.near.ID))
	ch.m.Release(ch.near.IP)
	ch.m.Hold(ip)
	require.NoError(ch.t, eng.Connect(ch.ctx, ch.n.ID, ch.near.ID, ip))
	ch.near.IP = ip
}

// heal undoes what the chaos left: every backend running, connected,
// unpaused and listening; every route on its own target.
func (ch *soakChaos) heal() {
	ch.t.Helper()
	ch.t.Logf("healing")
	for _, mv := range ch.m.Heal() {
		ch.do(mv)
	}
	for _, b := range ch.m.Backends {
		require.Truef(ch.t, b.Usable(), "%s not healed", b.Ident())
	}
}

// run is the chaos loop: for dur, one action at a random pace and those
// that are due, with the ambassador's resources sampled at every step and
// a progress line now and then. It returns the peak resources.
func (ch *soakChaos) run(dur time.Duration, metrics string, clients *soak.Clients, base soakUsage) soakUsage {
	ch.t.Helper()
	ch.start = time.Now()
	end := ch.start.Add(dur)
	peak := base
	progress := ch.start.Add(soakProgressEvery)
	for time.Now().Before(end) && ch.ctx.Err() == nil {
		soakPace(ch.ctx, min(ch.m.Between(soakPaceMin, soakPaceMax), time.Until(end)))
		if !time.Now().Before(end) {
			break
		}
		for _, mv := range ch.m.Due(time.Now()) {
			ch.do(mv)
		}
		ch.do(ch.m.Next())
		if u, err := soakMeasure(ch.ctx, metrics, ch.amb); err == nil {
			peak = peak.max(u)
			if time.Now().After(progress) {
				ch.t.Logf("soak +%s: %d sessions so far, %d actions; now %s", time.Since(ch.start).Round(time.Second), clients.Count(), ch.m.Taken(), u)
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
	for _, b := range ch.m.Backends {
		if b.Target == r {
			want[b.Ident()] = false
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
