// Command demo shows ambassadord on the local engine. First the job of
// Docker's classic socat ambassador: it builds the images, starts a real
// redis, an ambassador linked to it and consumer containers that reach
// redis only through the ambassador. Then the dynamic ambassador: a
// consumer keeps asking which redis answers while a second redis claims
// the target by label and the rewire command moves the route by hand. It
// prints each equivalent docker command with its output. Everything it creates is labelled
// ambassadord.demo=<run> and removed on exit, Ctrl-C included.
//
// Run it with `make demo` (go run ./e2e/cmd/demo).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// runTimeout bounds the whole demo; it normally takes about 30 s.
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
	if d.ambassadorImage, err = d.eng.BuildAmbassadorImage(ctx, "", root, bin, "demo"); err != nil {
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
	step("the classic image stopped here: moving redis meant recreating the ambassador. Now the dynamic form")
	return d.rewire(ctx)
}

// rewire shows the dynamic ambassador: with the engine's socket it follows
// the containers that claim a target, and the rewire command moves a route
// by hand, while a consumer keeps asking which server answers.
func (d *demo) rewire(ctx context.Context) error {
	socket, ok := strings.CutPrefix(d.eng.Client.DaemonHost(), "unix://")
	if !ok {
		step("skipping the dynamic part: the engine is at %s, not on a unix socket an ambassador could mount", d.eng.Client.DaemonHost())
		return nil
	}
	// Claims are engine-wide: a target name of this run's own.
	target := d.eng.Name("cache")

	step("4. redis-a claims the target %s with a label", target)
	a, err := d.startRedis(ctx, "redis-a", map[string]string{resolver.LabelTarget: target})
	if err != nil {
		return err
	}

	step("5. a dynamic ambassador: the socket mounted, the target and port as labels")
	amb, err := d.start(ctx, harness.Spec{
		Name:   "cache-ambassador",
		Image:  d.ambassadorImage,
		Binds:  []string{socket + ":/var/run/docker.sock"},
		Labels: map[string]string{resolver.LabelTarget: target, resolver.LabelPorts: "6379"},
	})
	if err != nil {
		return err
	}
	if err := d.eng.WaitHealthy(ctx, amb.ID); err != nil {
		return err
	}
	if err := d.exec(ctx, amb, "status"); err != nil {
		return err
	}

	step("6. a consumer asks which redis answers (CONFIG GET dbfilename) on a new connection every %s, all along", consumerEvery)
	cctx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	served := d.consume(cctx, amb.IP.String()+":6379")
	if err := waitServed(ctx, served, "redis-a"); err != nil {
		return err
	}

	step("7. redis-b claims the target too, with a higher priority: new connections move to it at once")
	if _, err := d.startRedis(ctx, "redis-b", map[string]string{resolver.LabelTarget: target, resolver.LabelPriority: "10"}); err != nil {
		return err
	}
	if err := waitServed(ctx, served, "redis-b"); err != nil {
		return err
	}

	step("8. rewire by hand, no container changed: route 6379 to redis-a")
	if err := d.exec(ctx, amb, "rewire", "6379", a.Name); err != nil {
		return err
	}
	if err := waitServed(ctx, served, "redis-a"); err != nil {
		return err
	}
	if err := d.exec(ctx, amb, "status"); err != nil {
		return err
	}

	step("9. back to what the labels say")
	if err := d.exec(ctx, amb, "rewire", "--reset", "6379"); err != nil {
		return err
	}
	if err := waitServed(ctx, served, "redis-b"); err != nil {
		return err
	}
	stopConsumer()
	step("done: the consumer only ever named the ambassador; nothing was restarted to rewire it")
	return nil
}

// consumerEvery is the consumer's pace.
const consumerEvery = 300 * time.Millisecond

// startRedis starts a redis server that tells its name: its dbfilename is
// <name>.rdb, which CONFIG GET returns to any client.
func (d *demo) startRedis(ctx context.Context, name string, labels map[string]string) (*harness.Container, error) {
	c, err := d.start(ctx, harness.Spec{Name: name, Image: d.redisImage, Labels: labels, Cmd: []string{"--dbfilename", name + ".rdb"}})
	if err != nil {
		return nil, err
	}
	return c, harness.WaitTCP(ctx, c.IP.String()+":6379")
}

// consume asks addr which redis answers, on a new connection every
// consumerEvery, until ctx ends; it prints every answer and sends it on the
// returned channel, dropping answers nobody waits for.
func (d *demo) consume(ctx context.Context, addr string) <-chan string {
	served := make(chan string, 1)
	go func() {
		t := time.NewTicker(consumerEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			name, err := whoami(ctx, addr)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				fmt.Printf("   consumer: %v\n", err)
				continue
			}
			fmt.Printf("   consumer: answered by %s\n", name)
			select {
			case served <- name:
			default:
			}
		}
	}()
	return served
}

// waitServed waits until the consumer is answered by name, and a little
// longer, so that the output shows it settled.
func waitServed(ctx context.Context, served <-chan string, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for n := 0; n < 3; {
		select {
		case got := <-served:
			if got == name {
				n++
			}
		case <-ctx.Done():
			return fmt.Errorf("the consumer was not answered by %s: %w", name, ctx.Err())
		}
	}
	return nil
}

// whoami asks the redis at addr for its dbfilename (see startRedis), on a
// connection of its own, and returns the name in it.
func whoami(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\ndbfilename\r\n"); err != nil {
		return "", err
	}
	// *2, $10, dbfilename, $N, <name>.rdb
	r := bufio.NewReader(c)
	var line string
	for range 5 {
		if line, err = r.ReadString('\n'); err != nil {
			return "", fmt.Errorf("read reply: %w", err)
		}
	}
	return strings.TrimSuffix(strings.TrimSpace(line), ".rdb"), nil
}

// exec runs the ambassador's own CLI in its container, as a person would
// with docker exec, and prints the command and its output.
func (d *demo) exec(ctx context.Context, amb *harness.Container, args ...string) error {
	argv := append([]string{"exec", amb.Name, "/ambassadord"}, args...)
	cmd("docker %s", strings.Join(argv, " "))
	out, err := exec.CommandContext(ctx, "docker", argv...).CombinedOutput()
	for line := range strings.Lines(string(out)) {
		fmt.Printf("   %s", line)
	}
	if err != nil {
		return fmt.Errorf("docker %s: %w", strings.Join(argv, " "), err)
	}
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
