package main

// Rewiring with real containers: how fast new connections follow a change
// of backend. While a load of fresh connections (internal/load: each asks
// the dataserver fixture who it is) runs through an ambassador, the
// backend is changed -rewires times in each of three ways:
//
//   - claim: ambassadord following the engine; a new container claims the
//     target with a higher priority (ambassador.priority) and starts;
//   - recreate: ambassadord following the engine; the target's only
//     backend is stopped, removed and created again (a new container);
//   - classic: the way of the socat ambassador: the ambassador container
//     itself is recreated (the ambassadord image in classic mode, a
//     <ALIAS>_PORT_9000_TCP variable, no engine), with the same address,
//     pointing at the other backend.
//
// The first two run for ambassadord and, when the run has one, for the
// baseline, each in an image built from the repository's Dockerfile with
// its binary. For each rewire the time runs from the change (the engine's
// start event of the new backend; for classic, the moment the old
// ambassador is removed) to the first connection the new backend
// accepted, by the fixture's clock (the host's). Each kind also reports
// the fresh connections that failed, and what happened to a few
// connections established before the changes.
//
// Then, for ambassadord alone, rewiring across engines (engines.go): a
// claimer started on another engine, and an engine lost.
//
// Everything it creates is labelled ambassadord.bench=<run> and removed at
// the end; what killed runs left is swept.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

const (
	// staleAfter: resources of a bench run older than this are leftovers
	// of a killed run, swept at the start.
	staleAfter = 30 * time.Minute
	dataPort   = 9000
	// established is how many long-lived connections each kind holds
	// open through its changes.
	established = 4
	// rewireTimeout bounds the rewires of one candidate, and of classic.
	rewireTimeout = 5 * time.Minute
	// recreateWait is the ambassador's --backend-wait, for the connections
	// made while no backend runs: longer than a recreate's gap, which is
	// the old backend's drain (the fixture's grace, 2 s, while it holds
	// the established connections) plus its removal and the new one's
	// start. The default, 3 s, is shorter than the first such gap (about
	// 3.1 s measured); the e2e recreate tests set 8 s for the same reason.
	recreateWait = "10s"
)

// rewireLoad is the load during rewires: a fresh connection every 2 ms
// (the resolution of the latencies), at most 16 in flight.
var rewireLoad = load.Config{
	Interval:    2 * time.Millisecond,
	Concurrency: 16,
	Timeout:     15 * time.Second,
	WaitTimeout: 30 * time.Second,
}

// rewireResult is what the rewires measured, for the table.
type rewireResult struct {
	imageBytes map[int]int64 // the image's size, by candidate
	kinds      []rewireKind  // in order of measurement
	loss       *engineLoss   // an engine's loss (engines.go); nil when not measured
}

// rewireKind is one way of moving new connections to a new backend,
// measured for one candidate.
type rewireKind struct {
	name    string // row label; the same for every candidate
	cand    int    // the column: classic, ambassadord or baseline
	rewires int
	// latencies from the change to the first connection the new backend
	// accepted, in milliseconds.
	medianMS, p99MS, maxMS float64
	// ownMedianMS and ownP99MS run from when the new backend listened,
	// when that was after the change: the ambassador's own part.
	ownMedianMS, ownP99MS float64
	attempts, failed      int // fresh connections made during the rewires, and those that failed
	// failedInStop are the failures of attempts made while the old
	// backend was being stopped, included in failed.
	failedInStop int
	// failedInStart are the failures of attempts made while a new
	// backend started, from its start event to the first connection it
	// accepted, included in failed; only the remote claims count them.
	failedInStart int
	established   string // what happened to established connections
	// goalMS is the p99 the kind's goal allows, in milliseconds; 0 means
	// 50 (issue 5's goal; issue 15's for remote claims is 100).
	goalMS float64
}

// goal returns the p99 the kind's goal allows, in milliseconds.
func (k rewireKind) goal() float64 {
	if k.goalMS > 0 {
		return k.goalMS
	}
	return 50
}

// The row labels of the kinds.
const (
	claimRow    = "label claim → new connections on the new backend (following the engine, --replay all)"
	recreateRow = "backend recreated (stop, rm, run) → new connections on it (--backend-wait " + recreateWait + ", --replay all)"
	classicRow  = "classic: ambassador container recreated (rm -f, run) → new connections on the new backend"
)

// runRewire measures the rewires with the local engine and keeps the
// result for the table.
func (b *bench) runRewire(ctx context.Context) (err error) {
	eng, err := harness.Connect(ctx, harness.BenchLabel)
	if err != nil {
		return fmt.Errorf("no Docker engine: %w", err)
	}
	defer eng.Close()
	socket, ok := strings.CutPrefix(eng.Client.DaemonHost(), "unix://")
	if !ok {
		return fmt.Errorf("the engine is at %s, not on a unix socket an ambassador could mount", eng.Client.DaemonHost())
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = errors.Join(err, eng.Cleanup(cctx))
	}()
	if err := eng.Sweep(ctx, staleAfter); err != nil {
		return err
	}
	root, err := harness.RepoRoot(ctx)
	if err != nil {
		return err
	}
	r := &rig{eng: eng, socket: socket, images: map[int]string{}}
	if r.dataImage, err = eng.BuildDataServerImage(ctx, root, b.dir); err != nil {
		return err
	}
	if r.net, err = eng.CreateNetwork(ctx, "net", true); err != nil {
		return err
	}
	res := &rewireResult{imageBytes: map[int]int64{}}
	for ci := ambassadord; ci < len(b.cands); ci++ {
		kind := ""
		if ci == baseline {
			kind = "baseline"
		}
		if r.images[ci], err = eng.BuildAmbassadorImage(ctx, kind, root, b.cands[ci].bin, "bench"); err != nil {
			return err
		}
		img, err := eng.Client.ImageInspect(ctx, r.images[ci])
		if err != nil {
			return fmt.Errorf("inspect image %s: %w", r.images[ci], err)
		}
		res.imageBytes[ci] = img.Size
		if b.swarmOnly {
			if ci == ambassadord {
				if k, err := r.runSwarm(ctx, b.dir, r.images[ci], ci, b.cfg.rewires); err != nil {
					b.note("Swarm tasks not measured: %v", err)
				} else {
					res.kinds = append(res.kinds, k)
				}
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, rewireTimeout)
		kinds, err := r.dynamic(cctx, ci, b.cfg.rewires)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", b.cands[ci].name, err)
		}
		res.kinds = append(res.kinds, kinds...)
		if ci == ambassadord {
			// Across engines: ambassadord alone, as a baseline from
			// before issue 15 has no --engine.
			notes, err := r.runEngines(ctx, b.cands[ci].bin, b.dir, b.cfg.rewires, b.cfg.losses, res)
			for _, n := range notes {
				b.note("%s", n)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				b.note("rewire across engines not measured: %v", err)
			}
			k, err := r.runSwarm(ctx, b.dir, r.images[ci], ci, b.cfg.rewires)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				b.note("Swarm tasks not measured: %v", err)
			} else {
				res.kinds = append(res.kinds, k)
			}
		}
	}
	if b.swarmOnly {
		b.rewire = res
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, rewireTimeout)
	defer cancel()
	k, err := r.classic(cctx, b.cfg.rewires)
	if err != nil {
		return fmt.Errorf("classic: %w", err)
	}
	res.kinds = append(res.kinds, k)
	b.rewire = res
	return nil
}

// rig holds the images and network of a run.
type rig struct {
	eng       *harness.Engine
	socket    string         // the engine's socket, mounted into ambassadors
	images    map[int]string // the ambassadord images, by candidate
	dataImage string
	net       *harness.Network
}

// server starts a dataserver named short that answers whoami with ident,
// and waits until it accepts (its admin port listens after its data port,
// so waiting for it is not a connection to the data port).
func (r *rig) server(ctx context.Context, short, ident string, labels map[string]string) (*harness.Container, error) {
	c, err := r.eng.Start(ctx, harness.Spec{Name: short, Image: r.dataImage, Env: []string{"NAME=" + ident}, Networks: []string{r.net.Name}, Labels: labels})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c, harness.WaitTCP(wctx, fmt.Sprintf("%s:%d", c.IP, dataproto.AdminPort))
}

// change is one rewire: from at, new connections should land on to.
type change struct {
	to string
	at time.Time
}

// window is a span of time in which the old backend was being stopped:
// the connections still in its accept queue when it closes its listener
// are reset (ambassadord replays them: it runs with --replay), and the
// failures of that span are counted apart.
type window struct{ from, to time.Time }

// dynamic measures the claim and then the recreate rewires on one
// ambassador of candidate ci following the engine.
func (r *rig) dynamic(ctx context.Context, ci, rewires int) ([]rewireKind, error) {
	pfx := map[int]string{ambassadord: "amb", baseline: "base"}[ci]
	svc := r.eng.Name(pfx + "-svc")
	claim := func(priority string) map[string]string {
		return map[string]string{resolver.LabelTarget: svc, resolver.LabelPriority: priority}
	}
	server := func(ident, priority string) (*harness.Container, error) {
		return r.server(ctx, pfx+"-"+ident, ident, claim(priority))
	}
	base, err := server("a0", "0")
	if err != nil {
		return nil, err
	}
	amb, err := r.eng.Start(ctx, harness.Spec{
		Name:  pfx,
		Image: r.images[ci],
		// --replay: the dataserver's whoami is safe to run twice, so the
		// connections a stopped backend's listener resets are replayed
		// (off by default, for protocols where they are not).
		Env:      []string{"AMBASSADORD_BACKEND_WAIT=" + recreateWait, "AMBASSADORD_REPLAY=all"},
		Networks: []string{r.net.Name},
		Binds:    []string{r.socket + ":/var/run/docker.sock"},
		Labels:   map[string]string{resolver.LabelTarget: svc, resolver.LabelPorts: fmt.Sprint(dataPort)},
	})
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("%s:%d", amb.IP, dataPort)
	if err := waitServed(ctx, addr, "a0"); err != nil {
		return nil, err
	}
	evs := r.eng.Events(ctx)
	l := load.Start(addr, rewireLoad)
	defer l.Stop()
	held, err := openEstablished(ctx, addr)
	if err != nil {
		return nil, err
	}

	// Claims: b<i> claims the target with a higher priority and starts;
	// then it is stopped (gracefully) and removed, and a0 serves again.
	var changes []change
	var stops []window
	for i := range rewires {
		name := fmt.Sprintf("b%d", i)
		before := time.Now()
		c, err := server(name, "10")
		if err != nil {
			return nil, err
		}
		at, err := evs.Wait(ctx, c.ID, "start", before)
		if err != nil {
			return nil, err
		}
		changes = append(changes, change{to: name, at: at})
		if _, err := l.WaitLanded(ctx, name, at, 1); err != nil {
			return nil, fmt.Errorf("wait for connections on %s: %w", name, err)
		}
		stopping := time.Now()
		if err := r.eng.Stop(ctx, c.ID, 5*time.Second); err != nil {
			return nil, err
		}
		if err := r.eng.Remove(ctx, c.ID); err != nil {
			return nil, err
		}
		stops = append(stops, window{stopping, time.Now()})
		if _, err := l.WaitLanded(ctx, "a0", time.Now(), 1); err != nil {
			return nil, fmt.Errorf("wait for connections on a0: %w", err)
		}
	}
	claims := summarize(l.Stop(), claimRow, ci, changes, stops)
	claims.established = checkEstablished(held) + " (stay on the old backend, which stays up)"
	fmt.Fprintf(os.Stderr, "bench: rewire: %s: claims: %+v\n", pfx, claims)

	// Recreates: the only claimer is stopped, removed and created anew.
	held, err = openEstablished(ctx, addr)
	if err != nil {
		return nil, err
	}
	l = load.Start(addr, rewireLoad)
	defer l.Stop()
	changes, stops = nil, nil
	cur := base
	for i := range rewires {
		stopping := time.Now()
		if err := r.eng.Stop(ctx, cur.ID, 5*time.Second); err != nil {
			return nil, err
		}
		if err := r.eng.Remove(ctx, cur.ID); err != nil {
			return nil, err
		}
		stops = append(stops, window{stopping, time.Now()})
		name := fmt.Sprintf("a%d", i+1)
		before := time.Now()
		if cur, err = server(name, "0"); err != nil {
			return nil, err
		}
		at, err := evs.Wait(ctx, cur.ID, "start", before)
		if err != nil {
			return nil, err
		}
		changes = append(changes, change{to: name, at: at})
		if _, err := l.WaitLanded(ctx, name, at, 1); err != nil {
			return nil, fmt.Errorf("wait for connections on %s: %w", name, err)
		}
	}
	recreate := summarize(l.Stop(), recreateRow, ci, changes, stops)
	recreate.established = checkEstablished(held) + " (ended with their backend)"
	fmt.Fprintf(os.Stderr, "bench: rewire: %s: recreates: %+v\n", pfx, recreate)
	return []rewireKind{claims, recreate}, nil
}

// classic measures the socat way: recreate the ambassador container with
// the new backend's address, keeping the ambassador's address.
func (r *rig) classic(ctx context.Context, rewires int) (rewireKind, error) {
	var backends [2]*harness.Container
	for i := range backends {
		name := fmt.Sprintf("c%d", i)
		var err error
		if backends[i], err = r.server(ctx, name, name, nil); err != nil {
			return rewireKind{}, err
		}
	}
	ip := r.net.Addr(200)
	startAmb := func(i int) (*harness.Container, error) {
		b := backends[i%2]
		return r.eng.Start(ctx, harness.Spec{
			Name:     fmt.Sprintf("classic-amb%d", i),
			Image:    r.images[ambassadord],
			Cmd:      []string{"--docker=off"},
			Env:      []string{fmt.Sprintf("BACKEND_PORT_%d_TCP=tcp://%s:%d", dataPort, b.IP, dataPort)},
			Networks: []string{r.net.Name},
			IPs:      map[string]netip.Addr{r.net.Name: ip},
		})
	}
	amb, err := startAmb(0)
	if err != nil {
		return rewireKind{}, err
	}
	addr := fmt.Sprintf("%s:%d", ip, dataPort)
	if err := waitServed(ctx, addr, "c0"); err != nil {
		return rewireKind{}, err
	}
	l := load.Start(addr, rewireLoad)
	defer l.Stop()
	held, err := openEstablished(ctx, addr)
	if err != nil {
		return rewireKind{}, err
	}
	var changes []change
	for i := 1; i <= rewires; i++ {
		at := time.Now()
		if err := r.eng.Remove(ctx, amb.ID); err != nil {
			return rewireKind{}, err
		}
		if amb, err = startAmb(i); err != nil {
			return rewireKind{}, err
		}
		name := fmt.Sprintf("c%d", i%2)
		changes = append(changes, change{to: name, at: at})
		if _, err := l.WaitLanded(ctx, name, at, 1); err != nil {
			return rewireKind{}, fmt.Errorf("wait for connections on %s: %w", name, err)
		}
	}
	k := summarize(l.Stop(), classicRow, classic, changes, nil)
	k.established = checkEstablished(held) + " (cut with the ambassador)"
	fmt.Fprintf(os.Stderr, "bench: rewire: classic: %+v\n", k)
	return k, nil
}

// summarize turns the changes and a load's result into a kind. Failures
// of attempts that started inside one of stops are counted apart.
func summarize(res load.Result, name string, cand int, changes []change, stops []window) rewireKind {
	// lat runs from the change; own from when the new backend listened,
	// if that was later: the part no proxy could have saved is the
	// backend's own start-up.
	var lat, own []time.Duration
	for _, c := range changes {
		if first, ok := res.First(c.to, c.at); ok {
			lat = append(lat, first.ID.Accepted.Sub(c.at))
			own = append(own, first.ID.Accepted.Sub(later(c.at, first.ID.Listening)))
		}
	}
	slices.Sort(lat)
	slices.Sort(own)
	k := rewireKind{name: name, cand: cand, rewires: len(lat), attempts: len(res.Attempts)}
	reasons := map[string]int{}
	for _, a := range res.Failed() {
		k.failed++
		during := slices.ContainsFunc(stops, func(w window) bool { return !a.Start.Before(w.from) && !a.Start.After(w.to) })
		if during {
			k.failedInStop++
		}
		// The error's last part, without addresses, names the reason.
		msg := a.Err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		reasons[fmt.Sprintf("%s (during a backend stop: %v)", msg, during)]++
	}
	for _, r := range slices.Sorted(maps.Keys(reasons)) {
		fmt.Fprintf(os.Stderr, "bench: rewire: %d failed: %s\n", reasons[r], r)
	}
	if len(lat) > 0 {
		k.medianMS, k.p99MS, k.maxMS = medianOf(lat), p99(lat), ms(lat[len(lat)-1])
		k.ownMedianMS, k.ownP99MS = medianOf(own), p99(own)
	}
	return k
}

// medianOf and p99 (nearest rank) of sorted, in milliseconds.
func medianOf(sorted []time.Duration) float64 { return ms(sorted[(len(sorted)-1)/2]) }
func p99(sorted []time.Duration) float64 {
	return ms(sorted[max((99*len(sorted)+99)/100, 1)-1])
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitServed waits until a fresh connection to addr is answered by name.
func waitServed(ctx context.Context, addr, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return harness.Poll(ctx, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		id, err := load.Whoami(actx, addr)
		if err != nil {
			return err
		}
		if id.Name != name {
			return fmt.Errorf("served by %s, not %s", id.Name, name)
		}
		return nil
	})
}

// openEstablished opens the long-lived connections whose fate a kind of
// rewire reports: whoami, then echoes.
func openEstablished(ctx context.Context, addr string) ([]*load.Session, error) {
	var conns []*load.Session
	for range established {
		octx, cancel := context.WithTimeout(ctx, rewireLoad.Timeout)
		s, err := load.Open(octx, addr)
		cancel()
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("open established connection: %w", err)
		}
		conns = append(conns, s)
	}
	return conns, nil
}

// checkEstablished says how many of conns still echo a byte, and closes
// them.
func checkEstablished(conns []*load.Session) string {
	defer closeAll(conns)
	alive := 0
	for _, c := range conns {
		if c.Echo([]byte{'x'}, 2*time.Second) == nil {
			alive++
		}
	}
	return fmt.Sprintf("%d of %d kept", alive, len(conns))
}

func closeAll(conns []*load.Session) {
	for _, c := range conns {
		c.Close()
	}
}

// printRewire adds the rewire rows, one per kind with a cell per
// candidate measured, and the image size.
func (b *bench) printRewire(w io.Writer) {
	if b.rewire == nil {
		return
	}
	ncols := len(b.columns())
	var names []string
	byName := map[string]map[int]rewireKind{}
	for _, k := range b.rewire.kinds {
		if byName[k.name] == nil {
			names = append(names, k.name)
			byName[k.name] = map[int]rewireKind{}
		}
		byName[k.name][k.cand] = k
	}
	for _, name := range names {
		ks := byName[name]
		cells := make([]string, ncols)
		cells[0] = name
		for ci := range b.cands {
			cells[1+ci] = "—"
			if k, ok := ks[ci]; ok {
				cells[1+ci] = k.cell()
			}
		}
		if a, ok := ks[ambassadord]; ok {
			if base, ok := ks[baseline]; ok && b.hasBaseline() {
				cells[ncols-2] = fmt.Sprintf("median %s, p99 %s", ratio(a.medianMS, base.medianMS), ratio(a.p99MS, base.p99MS))
			}
			g := a.goal()
			cells[ncols-1] = fmt.Sprintf("%s p99 ≤ %g ms, zero failed; %s p99 ≤ %g ms from the new backend listening",
				mark(a.p99MS <= g && a.failed == 0), g, mark(a.ownP99MS <= g), g)
		}
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
		if name == engineClaimRow {
			b.printLoss(w, ncols)
		}
	}
	if !slices.Contains(names, engineClaimRow) {
		b.printLoss(w, ncols)
	}
	cells := make([]string, ncols)
	cells[0] = "image size, MB (repository Dockerfile)"
	for ci := range b.cands {
		cells[1+ci] = "—"
		if n, ok := b.rewire.imageBytes[ci]; ok {
			cells[1+ci] = fmt.Sprintf("%.1f", float64(n)/1e6)
		}
	}
	if n, ok := b.rewire.imageBytes[ambassadord]; ok {
		mb := float64(n) / 1e6
		if base, ok := b.rewire.imageBytes[baseline]; ok && b.hasBaseline() {
			cells[ncols-2] = ratio(float64(n), float64(base))
		}
		cells[ncols-1] = mark(mb <= 15) + " ≤15 MB"
	}
	fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
}

// printLoss adds the row of an engine's loss, if it was measured: after
// the remote claims' row.
func (b *bench) printLoss(w io.Writer, ncols int) {
	l := b.rewire.loss
	if l == nil {
		return
	}
	cells := make([]string, ncols)
	cells[0] = engineLossRow
	for ci := range b.cands {
		cells[1+ci] = "—"
	}
	cells[1+ambassadord] = l.cell()
	cells[ncols-1] = l.goal()
	fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
}

// cell renders a kind's figures for its column.
func (k rewireKind) cell() string {
	cell := fmt.Sprintf("median %.1f ms, p99 %.1f ms (max %.1f) over %d; from when the new backend listened: median %.1f ms, p99 %.1f ms; failed %d of %d fresh connections",
		k.medianMS, k.p99MS, k.maxMS, k.rewires, k.ownMedianMS, k.ownP99MS, k.failed, k.attempts)
	if k.failedInStop > 0 {
		cell += fmt.Sprintf(" (%d made while the old backend stopped)", k.failedInStop)
	}
	if k.failedInStart > 0 {
		cell += fmt.Sprintf(" (%d made while the new backend started)", k.failedInStart)
	}
	return cell + "; established: " + k.established
}
