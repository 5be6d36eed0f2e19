// Command rewirebench measures how fast new connections follow a change of
// backend, with real containers, for the side-by-side benchmark (bench/,
// `make bench`), which builds and runs it and puts its JSON result in its
// table. It lives under e2e/ because it drives the engine with the e2e
// harness, which is internal to e2e/.
//
// While a load of fresh connections (each asks the dataserver fixture who
// it is) runs through an ambassador, it changes the backend -rewires
// times in each of three ways:
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
// For each rewire it reports the time from the change (the engine's start
// event of the new backend; for classic, the moment the old ambassador is
// removed) to the first connection the new backend accepted, by the
// fixture's clock (the host's); the fresh connections that failed; and
// what happened to a few connections established before the changes.
// It also reports the size of the ambassadord image built from the
// repository's Dockerfile.
//
// Everything it creates is labelled ambassadord.bench=<run> and removed on
// exit. When no engine answers it prints {"skipped": reason} and exits 0.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// benchLabel marks everything this program creates: every run removes its
// own on exit and sweeps what killed runs left (older than staleAfter), and
// `make clean` removes all of it.
const (
	benchLabel = "ambassadord.bench"
	staleAfter = 30 * time.Minute
	dataPort   = 9000
	// established is how many long-lived connections each kind holds
	// open through its changes.
	established = 4
	// loadInterval is the pace of fresh connections, and so the
	// resolution of the latencies.
	loadInterval    = 2 * time.Millisecond
	loadConcurrency = 16
	attemptTimeout  = 15 * time.Second
	// recreateWait is the ambassador's --backend-wait, for the connections
	// made while no backend runs: longer than a recreate's gap, which is
	// the old backend's drain (the fixture's grace, 2 s, while it holds
	// the established connections) plus its removal and the new one's
	// start. The default, 3 s, is shorter than the first such gap (about
	// 3.1 s measured); the e2e recreate tests set 8 s for the same reason.
	recreateWait = "10s"
)

// result and kind are read by bench/rewire.go; the two must agree.
type result struct {
	ImageBytes int64  `json:"image_bytes"`
	Kinds      []kind `json:"kinds"`
	Skipped    string `json:"skipped,omitempty"`
}

type kind struct {
	Name     string  `json:"name"`
	Column   string  `json:"column"`
	Rewires  int     `json:"rewires"`
	MedianMS float64 `json:"median_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	// OwnMedianMS and OwnP99MS run from when the new backend listened,
	// when that was after the change: the ambassador's own part.
	OwnMedianMS float64 `json:"own_median_ms"`
	OwnP99MS    float64 `json:"own_p99_ms"`
	Attempts    int     `json:"attempts"`
	Failed      int     `json:"failed"`
	// FailedInStop are the failures of attempts made while the old
	// backend was being stopped, included in Failed.
	FailedInStop int    `json:"failed_in_stop"`
	Established  string `json:"established"`
}

func main() {
	rewires := flag.Int("rewires", 20, "rewires of each kind")
	timeout := flag.Duration("timeout", 5*time.Minute, "bound on the whole run")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := run(ctx, *rewires)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rewirebench: %v\n", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		os.Exit(1)
	}
}

func run(ctx context.Context, rewires int) (res result, err error) {
	eng, err := harness.Connect(ctx, benchLabel)
	if err != nil {
		return result{Skipped: fmt.Sprintf("no Docker engine: %v", err)}, nil
	}
	defer eng.Close()
	socket, ok := strings.CutPrefix(eng.Client.DaemonHost(), "unix://")
	if !ok {
		return result{Skipped: "the engine is at " + eng.Client.DaemonHost() + ", not on a unix socket an ambassador could mount"}, nil
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = errors.Join(err, eng.Cleanup(cctx))
	}()
	if err := eng.Sweep(ctx, staleAfter); err != nil {
		return result{}, err
	}
	r := &rig{eng: eng, socket: socket}
	if err := r.build(ctx); err != nil {
		return result{}, err
	}
	img, err := eng.Client.ImageInspect(ctx, r.ambImage)
	if err != nil {
		return result{}, fmt.Errorf("inspect image %s: %w", r.ambImage, err)
	}
	res.ImageBytes = img.Size
	if r.net, err = eng.CreateNetwork(ctx, "net", true); err != nil {
		return result{}, err
	}
	dyn, err := r.dynamic(ctx, rewires)
	if err != nil {
		return result{}, err
	}
	cls, err := r.classic(ctx, rewires)
	if err != nil {
		return result{}, err
	}
	res.Kinds = append(dyn, cls)
	return res, nil
}

// rig holds the images and network of a run.
type rig struct {
	eng       *harness.Engine
	socket    string
	ambImage  string
	dataImage string
	net       *harness.Network
}

func (r *rig) build(ctx context.Context) error {
	root, err := harness.RepoRoot(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ambassadord-rewirebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := harness.AmbassadorBinary(ctx, root, dir, "bench")
	if err != nil {
		return err
	}
	if r.ambImage, err = r.eng.BuildAmbassadorImage(ctx, root, bin, "bench"); err != nil {
		return err
	}
	r.dataImage, err = r.eng.BuildDataServerImage(ctx, root, dir)
	return err
}

// server starts a dataserver answering whoami with name, and waits until it
// accepts (its admin port listens after its data port, so waiting for it
// is not a connection to the data port).
func (r *rig) server(ctx context.Context, name string, labels map[string]string) (*harness.Container, error) {
	c, err := r.eng.Start(ctx, harness.Spec{Name: name, Image: r.dataImage, Env: []string{"NAME=" + name}, Networks: []string{r.net.Name}, Labels: labels})
	if err != nil {
		return nil, err
	}
	return c, waitTCP(ctx, fmt.Sprintf("%s:%d", c.IP, dataproto.AdminPort))
}

func waitTCP(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return harness.WaitTCP(ctx, addr)
}

// dynamic measures the claim and then the recreate rewires on one
// ambassador following the engine.
func (r *rig) dynamic(ctx context.Context, rewires int) ([]kind, error) {
	svc := r.eng.Name("svc")
	claim := func(priority string) map[string]string {
		return map[string]string{resolver.LabelTarget: svc, resolver.LabelPriority: priority}
	}
	base, err := r.server(ctx, "a0", claim("0"))
	if err != nil {
		return nil, err
	}
	amb, err := r.eng.Start(ctx, harness.Spec{
		Name:  "amb",
		Image: r.ambImage,
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
	l := startLoad(addr)
	defer l.stop()
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
		c, err := r.server(ctx, name, claim("10"))
		if err != nil {
			return nil, err
		}
		at, err := evs.Wait(ctx, c.ID, "start", before)
		if err != nil {
			return nil, err
		}
		changes = append(changes, change{to: name, at: at})
		if err := l.waitLanded(ctx, name, at); err != nil {
			return nil, err
		}
		stopping := time.Now()
		if err := r.eng.Stop(ctx, c.ID, 5*time.Second); err != nil {
			return nil, err
		}
		if err := r.eng.Remove(ctx, c.ID); err != nil {
			return nil, err
		}
		stops = append(stops, window{stopping, time.Now()})
		if err := l.waitLanded(ctx, "a0", time.Now()); err != nil {
			return nil, err
		}
	}
	claims := l.summarize("label claim → new connections on the new backend (ambassadord, following the engine, --replay all)", "ambassadord", changes, stops)
	claims.Established = checkEstablished(held) + " (stay on the old backend, which stays up)"
	fmt.Fprintf(os.Stderr, "rewirebench: claims: %+v\n", claims)

	// Recreates: the only claimer is stopped, removed and created anew.
	held, err = openEstablished(ctx, addr)
	if err != nil {
		return nil, err
	}
	l.reset()
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
		if cur, err = r.server(ctx, name, claim("0")); err != nil {
			return nil, err
		}
		at, err := evs.Wait(ctx, cur.ID, "start", before)
		if err != nil {
			return nil, err
		}
		changes = append(changes, change{to: name, at: at})
		if err := l.waitLanded(ctx, name, at); err != nil {
			return nil, err
		}
	}
	recreate := l.summarize("backend recreated (stop, rm, run) → new connections on it (ambassadord, --backend-wait "+recreateWait+", --replay all)", "ambassadord", changes, stops)
	recreate.Established = checkEstablished(held) + " (ended with their backend)"
	fmt.Fprintf(os.Stderr, "rewirebench: recreates: %+v\n", recreate)
	return []kind{claims, recreate}, nil
}

// classic measures the socat way: recreate the ambassador container with
// the new backend's address, keeping the ambassador's address.
func (r *rig) classic(ctx context.Context, rewires int) (kind, error) {
	var backends [2]*harness.Container
	for i := range backends {
		var err error
		if backends[i], err = r.server(ctx, fmt.Sprintf("c%d", i), nil); err != nil {
			return kind{}, err
		}
	}
	ip := r.net.Addr(200)
	startAmb := func(i int) (*harness.Container, error) {
		b := backends[i%2]
		return r.eng.Start(ctx, harness.Spec{
			Name:     fmt.Sprintf("classic-amb%d", i),
			Image:    r.ambImage,
			Cmd:      []string{"--docker=off"},
			Env:      []string{fmt.Sprintf("BACKEND_PORT_%d_TCP=tcp://%s:%d", dataPort, b.IP, dataPort)},
			Networks: []string{r.net.Name},
			IPs:      map[string]netip.Addr{r.net.Name: ip},
		})
	}
	amb, err := startAmb(0)
	if err != nil {
		return kind{}, err
	}
	addr := fmt.Sprintf("%s:%d", ip, dataPort)
	if err := waitServed(ctx, addr, "c0"); err != nil {
		return kind{}, err
	}
	l := startLoad(addr)
	defer l.stop()
	held, err := openEstablished(ctx, addr)
	if err != nil {
		return kind{}, err
	}
	var changes []change
	for i := 1; i <= rewires; i++ {
		at := time.Now()
		if err := r.eng.Remove(ctx, amb.ID); err != nil {
			return kind{}, err
		}
		if amb, err = startAmb(i); err != nil {
			return kind{}, err
		}
		name := fmt.Sprintf("c%d", i%2)
		changes = append(changes, change{to: name, at: at})
		if err := l.waitLanded(ctx, name, at); err != nil {
			return kind{}, err
		}
	}
	k := l.summarize("classic: ambassador container recreated (rm -f, run) → new connections on the new backend", "classic", changes, nil)
	k.Established = checkEstablished(held) + " (cut with the ambassador)"
	fmt.Fprintf(os.Stderr, "rewirebench: classic: %+v\n", k)
	return k, nil
}
