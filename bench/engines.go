package main

// Rewiring across engines (issue 15): the ambassadord binary on this
// machine follows two remote engines, private throw-away dockerds
// (harness.Dockerd) that play two other hosts: each with a loopback
// address of its own, its API on TCP with --tlsverify and certificates
// of a PKI made for the run, its containers' ports published on its
// address. Two figures:
//
//   - remote claim: while a0, on engine B, serves the target, a claimer
//     of a higher priority starts on engine C: the time from C's start
//     event (the Docker event's travel over TLS included) to the first
//     new connection it accepts, -rewires times; then it is stopped and
//     removed, and a0 serves again. The fresh connections that failed are
//     counted, and what happened to connections established on a0.
//   - engine lost: with a0 on B and c0 on C at the same priority, B's
//     daemon is killed (SIGKILL, its containerd with it; live restore
//     keeps a0 running, but its published port dies with the daemon's
//     docker-proxy): the time from the kill until /routes no longer lists
//     a0, against --engine-grace + 1 s; then B is started again and a0
//     comes back. The fresh connections that failed are counted, apart
//     from those a0 was answering when its engine died.
//
// It needs root and dockerd, as the e2e tests' private engines do;
// without them the rows are left out and a note says why.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// engineGrace is the ambassador's --engine-grace in the loss measurement:
// shorter than the default (5s), to keep the bench short; the goal is
// relative to it (grace + 1 s).
const engineGrace = 2 * time.Second

// engineTimeout bounds the whole engines part.
const engineTimeout = 5 * time.Minute

// The rows of the engines part.
const (
	engineClaimRow = "remote claim: a claimer started on another engine (TLS, its published port) → new connections on it (--engine, --replay all)"
	engineLossRow  = "remote engine lost (dockerd killed) → its backends dropped (--engine-grace 2s)"
)

// engineLoss is what the loss measurement found.
type engineLoss struct {
	grace time.Duration
	drops []time.Duration // from each kill to the route without the engine's backend, sorted
	// detected are, from each kill, when the ambassador took the engine
	// for unreachable (its status's unreachable_since), sorted: the grace
	// runs from there.
	detected []time.Duration
	// attempts and failed are the fresh connections made during the
	// losses and those that failed; cut are the failed ones that were
	// in flight on the lost backend when its engine died, included in
	// failed.
	attempts, failed, cut int
}

// cell renders the loss's figures.
func (l engineLoss) cell() string {
	if len(l.drops) == 0 {
		return "—"
	}
	cell := fmt.Sprintf("dropped %.2f s after the kill (median over %d, max %.2f s), grace %s", l.drops[(len(l.drops)-1)/2].Seconds(),
		len(l.drops), l.drops[len(l.drops)-1].Seconds(), l.grace)
	if n := len(l.detected); n > 0 {
		cell += fmt.Sprintf(", the engine taken for unreachable %.2f s after the kill (median; max %.2f s)", l.detected[(n-1)/2].Seconds(), l.detected[n-1].Seconds())
	}
	return cell + fmt.Sprintf("; failed %d of %d fresh connections (%d in flight on the killed engine's backend), the other engine serving throughout",
		l.failed, l.attempts, l.cut)
}

// goal says whether every drop came within the grace + 1 s.
func (l engineLoss) goal() string {
	ok := len(l.drops) > 0 && l.drops[len(l.drops)-1] <= l.grace+time.Second
	return mark(ok) + " dropped within grace + 1 s"
}

// engineRig is the engines part's world: two remote engines and an
// ambassador on the host following them.
type engineRig struct {
	eng       *harness.Engine // the local engine, which builds the image
	dataImage string
	b, c      *harness.Dockerd
	privB     *harness.Engine
	privC     *harness.Engine
	evsC      *harness.EventLog
	svc       string
	route     string // the ambassador's route, 127.0.0.1:port
	port      int
	admin     string // its admin endpoint's base URL
	amb       *exec.Cmd
}

// runEngines measures the remote claims and the engine losses with the
// ambassadord binary bin, and adds their rows to res.
func (r *rig) runEngines(ctx context.Context, bin, dir string, rewires, losses int, res *rewireResult) (notes []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	begin := time.Now()
	defer func() {
		fmt.Fprintf(os.Stderr, "bench: rewire: engines: done in %s\n", time.Since(begin).Round(100*time.Millisecond))
	}()
	e := &engineRig{eng: r.eng, dataImage: r.dataImage, svc: r.eng.Name("eng-svc")}
	defer func() { err = errors.Join(err, e.close()) }()
	if err := e.start(ctx, bin, dir); err != nil {
		return nil, err
	}
	k, err := e.claims(ctx, rewires)
	if err != nil {
		return nil, fmt.Errorf("remote claims: %w", err)
	}
	res.kinds = append(res.kinds, k)
	fmt.Fprintf(os.Stderr, "bench: rewire: engines: claims: %+v\n", k)
	if k.failedInStop+k.failedInStart > 0 {
		notes = append(notes, fmt.Sprintf("remote claims: %d fresh connections failed while a remote claimer stopped, %d while one started: "+
			"its port is published by docker-proxy (the private engines run without iptables), which accepts a connection "+
			"and closes it when nothing listens behind it: the app has closed its listener before the ambassador hears of the stop signal, "+
			"or has not opened it yet when the ambassador hears of the start; "+
			"the ambassador sees an EOF, not a refused connect or a reset, and neither moves nor replays it "+
			"(with iptables, a closed published port refuses the connect)", k.failedInStop, k.failedInStart))
	}
	l, err := e.losses(ctx, losses)
	if err != nil {
		return notes, fmt.Errorf("engine losses: %w", err)
	}
	res.loss = &l
	fmt.Fprintf(os.Stderr, "bench: rewire: engines: losses: %+v\n", l)
	return notes, nil
}

// start starts the engines (B with live restore, so that a0 outlives its
// daemon), copies the data server image to them, starts a0 on B and the
// ambassador, and waits until it serves a0.
func (e *engineRig) start(ctx context.Context, bin, dir string) error {
	pki, err := harness.NewPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return err
	}
	// IDs name bridges: at most 11 characters, unique on the machine.
	if e.b, err = harness.StartDockerdWith(ctx, e.eng.Run+"b", harness.DockerdOptions{LiveRestore: true, TLS: pki.CA}); err != nil {
		return err
	}
	if e.c, err = harness.StartDockerdWith(ctx, e.eng.Run+"c", harness.DockerdOptions{TLS: pki.CA}); err != nil {
		return err
	}
	if e.privB, err = e.b.Engine(ctx, e.eng.Label, e.eng.Run); err != nil {
		return err
	}
	if e.privC, err = e.c.Engine(ctx, e.eng.Label, e.eng.Run); err != nil {
		return err
	}
	for _, p := range []*harness.Engine{e.privB, e.privC} {
		if err := e.eng.CopyImage(ctx, p, e.dataImage); err != nil {
			return err
		}
	}
	e.evsC = e.privC.Events(ctx)
	if _, err := e.server(ctx, e.privB, "a0", 0); err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	e.port = ports[0]
	e.route = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ports[0])).String()
	adminAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ports[1])).String()
	e.admin = "http://" + adminAddr
	e.amb = exec.Command(bin,
		"--docker=off",
		"--engine", fmt.Sprintf("b=%s,tls=%s", e.b.TCPHost, pki.Client),
		"--engine", fmt.Sprintf("c=%s,tls=%s", e.c.TCPHost, pki.Client),
		"--engine-grace", engineGrace.String(),
		"--route", fmt.Sprintf("%d:%s:%d", e.port, e.svc, dataPort),
		"--claims", "label,routes",
		"--listen-address", "127.0.0.1",
		"--admin-address", adminAddr,
		"--admin-socket", "",
		"--backend-wait", recreateWait,
		"--replay", "all",
		"--log-format", "json",
	)
	e.amb.Env = []string{}
	if err := startLogged(e.amb, dir, "engines-ambassadord"); err != nil {
		return err
	}
	return waitServed(ctx, e.route, "a0")
}

// server starts a data server named name on p, claiming the target with
// priority and publishing its port on its engine's address, and waits
// until it accepts.
func (e *engineRig) server(ctx context.Context, p *harness.Engine, name string, priority int) (*harness.Container, error) {
	c, err := p.Start(ctx, harness.Spec{
		Name: "eng-" + name, Image: e.dataImage, Env: []string{"NAME=" + name},
		Labels:  map[string]string{resolver.LabelTarget: e.svc, resolver.LabelPriority: strconv.Itoa(priority)},
		Publish: map[uint16]netip.Addr{dataPort: {}},
	})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c, harness.WaitTCP(wctx, fmt.Sprintf("%s:%d", c.IP, dataproto.AdminPort))
}

// claims measures the remote claims: c<i> on C over a0 on B.
func (e *engineRig) claims(ctx context.Context, rewires int) (rewireKind, error) {
	l := load.Start(e.route, rewireLoad)
	defer l.Stop()
	held, err := openEstablished(ctx, e.route)
	if err != nil {
		return rewireKind{}, err
	}
	var changes []change
	var stops []window
	for i := range rewires {
		name := fmt.Sprintf("c%d", i)
		before := time.Now()
		c, err := e.server(ctx, e.privC, name, 10)
		if err != nil {
			return rewireKind{}, err
		}
		at, err := e.evsC.Wait(ctx, c.ID, "start", before)
		if err != nil {
			return rewireKind{}, err
		}
		changes = append(changes, change{to: name, at: at})
		if _, err := l.WaitLanded(ctx, name, at, 1); err != nil {
			return rewireKind{}, fmt.Errorf("wait for connections on %s: %w", name, err)
		}
		stopping := time.Now()
		if err := e.privC.Stop(ctx, c.ID, 5*time.Second); err != nil {
			return rewireKind{}, err
		}
		if err := e.privC.Remove(ctx, c.ID); err != nil {
			return rewireKind{}, err
		}
		stops = append(stops, window{stopping, time.Now()})
		if _, err := l.WaitLanded(ctx, "a0", time.Now(), 1); err != nil {
			return rewireKind{}, fmt.Errorf("wait for connections on a0: %w", err)
		}
	}
	res := l.Stop()
	k := summarize(res, engineClaimRow, ambassadord, changes, stops)
	k.goalMS = 100
	for _, a := range res.Failed() {
		if slices.ContainsFunc(changes, func(c change) bool {
			first, ok := res.First(c.to, c.at)
			return ok && a.Start.After(c.at.Add(-50*time.Millisecond)) && a.Start.Before(first.ID.Accepted)
		}) {
			k.failedInStart++
		}
	}
	k.established = checkEstablished(held) + " (stay on a0, on the other engine)"
	return k, nil
}

// losses measures n losses of engine B, with c0 on C serving beside a0.
func (e *engineRig) losses(ctx context.Context, n int) (engineLoss, error) {
	c0, err := e.server(ctx, e.privC, "c0", 0)
	if err != nil {
		return engineLoss{}, err
	}
	a0, err := e.lookup(ctx, e.privB, "a0")
	if err != nil {
		return engineLoss{}, err
	}
	if err := e.waitBackends(ctx, a0, c0); err != nil {
		return engineLoss{}, err
	}
	l := load.Start(e.route, rewireLoad)
	defer l.Stop()
	loss := engineLoss{grace: engineGrace}
	var kills []time.Time
	for range n {
		if _, err := l.WaitLanded(ctx, "a0", time.Now(), 1); err != nil {
			return engineLoss{}, fmt.Errorf("wait for connections on a0: %w", err)
		}
		killed := time.Now()
		if err := e.b.Kill(ctx); err != nil {
			return engineLoss{}, err
		}
		kills = append(kills, killed)
		if err := e.waitBackends(ctx, c0); err != nil {
			return engineLoss{}, err
		}
		loss.drops = append(loss.drops, time.Since(killed))
		var st api.Status
		if err := fetchStatus(ctx, e.admin, &st); err != nil {
			return engineLoss{}, err
		}
		for _, src := range st.Sources {
			if src.Name == "b" && !src.UnreachableSince.IsZero() {
				loss.detected = append(loss.detected, src.UnreachableSince.Sub(killed))
			}
		}
		if err := e.b.Start(ctx); err != nil {
			return engineLoss{}, err
		}
		if err := e.waitBackends(ctx, a0, c0); err != nil {
			return engineLoss{}, err
		}
	}
	if _, err := l.WaitLanded(ctx, "a0", time.Now(), 1); err != nil {
		return engineLoss{}, fmt.Errorf("wait for connections on a0: %w", err)
	}
	res := l.Stop()
	slices.Sort(loss.drops)
	slices.Sort(loss.detected)
	loss.attempts = len(res.Attempts)
	for _, a := range res.Failed() {
		loss.failed++
		if slices.ContainsFunc(kills, func(k time.Time) bool { return !a.Start.After(k) && a.End.Before(k.Add(time.Second)) }) {
			loss.cut++
		}
	}
	return loss, nil
}

// lookup finds the container of the run called name on p.
func (e *engineRig) lookup(ctx context.Context, p *harness.Engine, name string) (*harness.Container, error) {
	insp, err := p.Inspect(ctx, p.Name("eng-"+name))
	if err != nil {
		return nil, err
	}
	return &harness.Container{ID: insp.ID, Name: p.Name("eng-" + name)}, nil
}

// waitBackends polls /routes, every 20 ms, until the route serves exactly
// want.
func (e *engineRig) waitBackends(ctx context.Context, want ...*harness.Container) error {
	var ids []string
	for _, c := range want {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var got []string
	for {
		var st api.Status
		if err := fetchStatus(ctx, e.admin, &st); err == nil {
			got = got[:0]
			if r, ok := st.Route(strconv.Itoa(e.port)); ok {
				for _, b := range r.Backends {
					got = append(got, b.ContainerID)
				}
			}
			slices.Sort(got)
			if slices.Equal(got, ids) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("route %d serves %v, want %v: %w", e.port, got, ids, ctx.Err())
		case <-t.C:
		}
	}
}

// close stops the ambassador and tears the engines down.
func (e *engineRig) close() error {
	if e.amb != nil && e.amb.Process != nil {
		stop([]*exec.Cmd{e.amb})
	}
	var errs []error
	for _, p := range []*harness.Engine{e.privB, e.privC} {
		if p != nil {
			p.Close()
		}
	}
	for _, d := range []*harness.Dockerd{e.b, e.c} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	return errors.Join(errs...)
}

// fetchStatus reads GET /routes of the admin endpoint at admin.
func fetchStatus(ctx context.Context, admin string, st *api.Status) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/routes", nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusServiceUnavailable {
		return fmt.Errorf("GET %s/routes: %s", admin, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(st)
}

// freePorts returns n TCP ports free on 127.0.0.1 now.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
