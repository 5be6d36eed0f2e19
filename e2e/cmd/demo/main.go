// Command demo shows ambassadord doing the job of Docker's classic socat
// ambassador on the local engine: it builds the images, starts a real
// redis, an ambassador linked to it and consumer containers that reach
// redis only through the ambassador, and prints each equivalent docker
// command with its output. Everything it creates is labelled
// ambassadord.demo=<run> and removed on exit, Ctrl-C included.
//
// Run it with `make demo` (go run ./e2e/cmd/demo).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ambassadord/ambassadord/e2e/internal/harness"
)

// runTimeout bounds the whole demo; it normally takes about 15 s.
const runTimeout = 2 * time.Minute

// staleAfter: demo resources older than this are leftovers of a demo that
// was killed (SIGKILL skips cleanup) and are removed at start.
const staleAfter = 10 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()

	eng, err := harness.Connect(ctx, harness.DemoLabel)
	if err != nil {
		return err
	}
	defer eng.Close()
	defer func() {
		// ctx may be cancelled (Ctrl-C): clean up with a fresh one.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		step("cleaning up: removing everything labelled %s=%s", eng.Label, eng.Run)
		err = errors.Join(err, eng.Cleanup(cctx))
	}()
	if err := eng.Sweep(ctx, staleAfter); err != nil {
		return err
	}

	d := &demo{eng: eng}
	if err := d.build(ctx); err != nil {
		return err
	}
	return d.show(ctx)
}

type demo struct {
	eng             *harness.Engine
	ambassadorImage string
	redisImage      string
	containers      int // numbers container names
}

func (d *demo) build(ctx context.Context) error {
	step("building bin/ambassadord (CGO_ENABLED=0) and two FROM-scratch images")
	root, err := harness.RepoRoot(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ambassadord-demo-")
	if err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(dir)
	bin, err := harness.AmbassadorBinary(ctx, root, dir, "demo")
	if err != nil {
		return err
	}
	if d.ambassadorImage, err = d.eng.BuildAmbassadorImage(ctx, root, bin, "demo"); err != nil {
		return err
	}
	cmd("docker build -t %s .   # the repository's Dockerfile: just the static binary", d.ambassadorImage)
	if d.redisImage, err = d.eng.BuildRedisImage(ctx); err != nil {
		return err
	}
	cmd("docker build -t %s ...   # Debian's redis-server and redis-cli with their libraries", d.redisImage)
	return nil
}

func (d *demo) show(ctx context.Context) error {
	step("1. a real redis, knowing nothing about ambassadors")
	redis, err := d.start(ctx, harness.Spec{Name: "redis", Image: d.redisImage})
	if err != nil {
		return err
	}
	if err := harness.WaitTCP(ctx, fmt.Sprintf("%s:6379", redis.IP)); err != nil {
		return err
	}

	step("2. the ambassador: linked to redis, no arguments; it forwards every <ALIAS>_PORT_<P>_TCP link variable")
	amb, err := d.start(ctx, harness.Spec{
		Name:   "redis-ambassador",
		Image:  d.ambassadorImage,
		Links:  []string{redis.Name + ":redis"},
		Expose: []uint16{6379},
	})
	if err != nil {
		return err
	}
	if err := d.eng.WaitLog(ctx, amb.ID, "route listening"); err != nil {
		return err
	}
	if err := harness.WaitTCP(ctx, fmt.Sprintf("%s:6379", amb.IP)); err != nil {
		return err
	}
	stdout, stderr, err := d.eng.Logs(ctx, amb.ID)
	if err != nil {
		return err
	}
	fmt.Printf("   ambassador log (docker logs %s):\n", amb.Name)
	for line := range strings.Lines(stdout + stderr) {
		fmt.Printf("     %s", line)
	}

	step("3. consumers link to the ambassador under the name redis, as if it were redis itself")
	for _, args := range [][]string{
		{"ping"},
		{"set", "greeting", "hello through the ambassador"},
		{"get", "greeting"},
		{"incr", "visits"},
		{"incr", "visits"},
	} {
		out, err := d.runToExit(ctx, harness.Spec{
			Name:       "consumer-" + args[0],
			OneShot:    true,
			Image:      d.redisImage,
			Entrypoint: []string{harness.RedisCLI},
			Links:      []string{amb.Name + ":redis"},
			Cmd:        append([]string{"-h", "redis"}, args...),
		})
		if err != nil {
			return err
		}
		fmt.Printf("%s\n", strings.TrimSpace(out))
	}
	step("done: the consumer only ever named \"redis\"; moving redis means restarting the ambassador alone")
	return nil
}

// start starts a container after printing its docker command.
func (d *demo) start(ctx context.Context, s harness.Spec) (*harness.Container, error) {
	d.containers++
	s.Name = fmt.Sprintf("%s-%d", s.Name, d.containers)
	cmd("%s", d.eng.Command(s))
	return d.eng.Start(ctx, s)
}

// runToExit runs a one-shot container and returns its stdout; a non-zero
// exit is an error carrying the output.
func (d *demo) runToExit(ctx context.Context, s harness.Spec) (string, error) {
	c, err := d.start(ctx, s)
	if err != nil {
		return "", err
	}
	code, err := d.eng.Wait(ctx, c.ID)
	if err != nil {
		return "", err
	}
	stdout, stderr, err := d.eng.Logs(ctx, c.ID)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("%s exited %d: %s%s", c.Name, code, stdout, stderr)
	}
	return stdout, d.eng.Remove(ctx, c.ID)
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func cmd(format string, args ...any) { fmt.Printf("$ "+format+"\n", args...) }
