package main

// Swarm tasks (issue 18): a private, throw-away dockerd made a single-node
// Swarm manager (never the shared engine), an attachable overlay, a
// service of one data server claiming the target, and the ambassadord
// image as a standalone container on that engine, on its bridge (where
// the load reaches it) and on the overlay (where it reaches the tasks),
// following the manager through its socket. Each round forces a
// start-first update (docker service update --force): Swarm starts a new
// task, then shuts the old one down. The figure runs from the new task's
// container start event (the task becoming running) to the first new
// connection it accepts through the ambassador, and, apart, from when its
// server listened; the fresh connections that failed are counted.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

const swarmRow = "Swarm task running (start-first update) → first new connection on it (a service following a manager, --replay all)"

// swarmTimeout bounds the whole Swarm part.
const swarmTimeout = 5 * time.Minute

// runSwarm measures tasks taking over, rewires times, with the image of
// candidate ci.
func (r *rig) runSwarm(ctx context.Context, dir, image string, ci, rewires int) (k rewireKind, err error) {
	ctx, cancel := context.WithTimeout(ctx, swarmTimeout)
	defer cancel()
	begin := time.Now()
	defer func() {
		fmt.Fprintf(os.Stderr, "bench: rewire: swarm: done in %s\n", time.Since(begin).Round(100*time.Millisecond))
	}()
	d, err := harness.StartDockerd(ctx, r.eng.Run+"s", false)
	if err != nil {
		return k, err
	}
	defer func() { err = errors.Join(err, d.Close()) }()
	if err := d.SwarmInit(ctx); err != nil {
		return k, err
	}
	priv, err := d.Engine(ctx, r.eng.Label, r.eng.Run)
	if err != nil {
		return k, err
	}
	defer priv.Close()
	for _, img := range []string{r.dataImage, image} {
		if err := r.eng.CopyImage(ctx, priv, img); err != nil {
			return k, err
		}
	}
	evs := priv.Events(ctx)
	docker := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "docker", args...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	const ovl, svc = "bench-ovl", "bench-svc"
	target := r.eng.Name("swarm-svc")
	if _, err := docker("network", "create", "--driver", "overlay", "--attachable", ovl); err != nil {
		return k, err
	}
	if _, err := docker("service", "create", "--detach=false", "--quiet", "--no-resolve-image", "--name", svc,
		"--label", resolver.LabelTarget+"="+target, "--network", ovl, "--replicas", "1",
		"--env", "NAME={{.Task.Name}}", "--update-order", "start-first", "--update-monitor", "100ms", "--stop-grace-period", "2s", r.dataImage); err != nil {
		return k, err
	}
	amb, err := priv.Start(ctx, harness.Spec{
		Name: "swarm-amb", Image: image, Networks: []string{"bridge", ovl},
		Binds: []string{filepath.Join(d.Dir, "docker.sock") + ":/var/run/docker.sock"},
		Cmd: []string{"--route", fmt.Sprintf("%d:%s:%d", dataPort, target, dataPort), "--claims", "label,routes",
			"--replay", "all", "--backend-wait", recreateWait},
	})
	if err != nil {
		return k, err
	}
	defer func() {
		// The ambassador's log, kept with the bench's: the engine goes.
		stdout, stderr, _ := priv.Logs(context.Background(), amb.ID)
		os.WriteFile(filepath.Join(dir, "swarm-ambassadord.log"), []byte(stdout+stderr), 0o644)
	}()
	route := fmt.Sprintf("%s:%d", amb.IP, dataPort)
	current, err := docker("ps", "--format", "{{.Names}}", "--filter", "label=com.docker.swarm.service.name="+svc)
	if err != nil {
		return k, err
	}
	if err := waitServed(ctx, route, current); err != nil {
		return k, err
	}

	l := load.Start(route, rewireLoad)
	defer l.Stop()
	var changes []change
	running := func() (string, error) {
		return docker("ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}", "--filter", "label=com.docker.swarm.service.name="+svc)
	}
	for range rewires {
		// The task before is alone: the one before it has shut down
		// (--stop-grace-period), and the next task is the only new one.
		if err := harness.Poll(ctx, func(context.Context) error {
			out, err := running()
			if err == nil && strings.Count(out, "\n") > 0 {
				err = fmt.Errorf("tasks still running: %q", out)
			}
			return err
		}); err != nil {
			return k, err
		}
		forced := time.Now()
		if _, err := docker("service", "update", "--detach=false", "--quiet", "--no-resolve-image", "--force", svc); err != nil {
			return k, err
		}
		out, err := running()
		if err != nil {
			return k, err
		}
		// The old task may still be shutting down (--stop-grace-period).
		var id, name string
		for line := range strings.Lines(out) {
			if i, n, ok := strings.Cut(strings.TrimSpace(line), " "); ok && n != current {
				if name != "" {
					return k, fmt.Errorf("after the update, want one new task running, have %q", out)
				}
				id, name = i, n
			}
		}
		if name == "" {
			return k, fmt.Errorf("after the update, no new task running: %q", out)
		}
		started, err := evs.Wait(ctx, id, "start", forced)
		if err != nil {
			return k, err
		}
		res, err := l.WaitLanded(ctx, name, started, 1)
		if err != nil {
			return k, err
		}
		changes = append(changes, change{to: name, at: started})
		if first, ok := res.First(name, started); ok {
			fmt.Fprintf(os.Stderr, "bench: rewire: swarm: task %s: started %s, listening +%s, first connection +%s (update %s)\n",
				name, started.Format("15:04:05.000"), first.ID.Listening.Sub(started).Round(time.Millisecond),
				first.ID.Accepted.Sub(started).Round(time.Millisecond), time.Since(forced).Round(10*time.Millisecond))
		}
		current = name
	}
	k = summarize(l.Stop(), swarmRow, ci, changes, nil)
	k.goalMS = 100
	k.established = "—"
	fmt.Fprintf(os.Stderr, "bench: rewire: swarm: %+v\n", k)
	return k, nil
}
