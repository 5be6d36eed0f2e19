//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// requireEngineEnv set to 1 turns "no engine" from a skip into a failure.
const requireEngineEnv = "AMBASSADORD_E2E_REQUIRE_ENGINE"

// staleAfter is the age after which resources of another run count as
// leftovers of a crashed run. It must exceed the e2e -timeout in the
// Makefile (20m) so a concurrent run on the shared engine is never swept.
const staleAfter = 30 * time.Minute

// testTimeout bounds each test's engine calls and waits; readyTimeout
// bounds waiting for one container to become ready, so a broken ambassador
// fails fast with its logs. A test's parallel subtests share its context
// and wait for a free slot (-parallel is GOMAXPROCS, 2 here) behind the
// other tests, the swarms' and Podman's a minute each: 3 minutes ran out
// while they waited in a full run.
const (
	testTimeout  = 8 * time.Minute
	readyTimeout = 30 * time.Second
)

// Set once by TestMain before any test runs; read-only afterwards.
var (
	eng             *harness.Engine
	version         string // stamped into the binary under test
	ambassadorImage string
	ambassadorBin   string // the binary in ambassadorImage, kept until the run ends
	redisImage      string
	dataImage       string
	skipReason      string // non-empty when no engine answers
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	pingCtx, cancelPing := context.WithTimeout(ctx, 15*time.Second)
	e, err := harness.Connect(pingCtx, harness.E2ELabel)
	cancelPing()
	if err != nil {
		if os.Getenv(requireEngineEnv) == "1" {
			fmt.Fprintf(os.Stderr, "e2e: %s=1 but no docker engine answers: %v\n", requireEngineEnv, err)
			return 1
		}
		skipReason = fmt.Sprintf("no docker engine answers (%v); set %s=1 to fail instead", err, requireEngineEnv)
		return m.Run()
	}
	eng = e
	defer e.Close()
	defer cleanup()

	// Ctrl-C kills the test binary before deferred calls run: clean up first.
	stopSignals := cleanupOnSignal()
	defer stopSignals()

	if err := e.Sweep(ctx, staleAfter); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: sweep leftovers of earlier runs: %v\n", err)
	}
	// The build directory outlives the build: tests that run the binary
	// on the host (engine_restart_test.go) use it from there.
	dir, err := os.MkdirTemp("", "ambassadord-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: create build dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildImages(ctx, dir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return m.Run()
}

// buildImages builds the binary once into dir, and the three images this
// run uses.
func buildImages(ctx context.Context, dir string) error {
	start := time.Now()
	root, err := harness.RepoRoot(ctx)
	if err != nil {
		return err
	}

	version = "e2e-" + eng.Run
	bin, err := harness.AmbassadorBinary(ctx, root, dir, version)
	if err != nil {
		return err
	}
	ambassadorBin = bin
	if ambassadorImage, err = eng.BuildAmbassadorImage(ctx, "", root, bin, version); err != nil {
		return err
	}
	if redisImage, err = eng.BuildRedisImage(ctx); err != nil {
		return err
	}
	if dataImage, err = eng.BuildDataServerImage(ctx, root, dir); err != nil {
		return err
	}
	fmt.Printf("e2e: run %s: built %s, %s, %s in %s\n", eng.Run, ambassadorImage, redisImage, dataImage, time.Since(start).Round(time.Millisecond))
	return nil
}

func cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := eng.Cleanup(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cleanup run %s: %v\n", eng.Run, err)
	}
}

// cleanupOnSignal removes this run's resources and exits if the test binary
// is interrupted. The returned function stops the watcher and waits for it.
func cleanupOnSignal() (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "e2e: %v: removing run %s\n", s, eng.Run)
			cleanup()
			os.Exit(1)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		<-exited
	}
}

// setup skips the test when no engine answers and returns a context that
// bounds the test's engine calls.
func setup(t *testing.T) context.Context {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

var (
	unsafeName = regexp.MustCompile(`[^a-z0-9_.-]+`)
	containers atomic.Int64 // makes names unique within the run
)

// start starts a container named after the test, logs the equivalent
// docker command, and removes the container when the test ends (printing
// its logs first if the test failed).
func start(t *testing.T, ctx context.Context, s harness.Spec) *harness.Container {
	t.Helper()
	test := unsafeName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "-")
	s.Name = fmt.Sprintf("%s-%s-%d", test, s.Name, containers.Add(1))
	t.Logf("$ %s", eng.Command(s))
	c, err := eng.Start(ctx, s)
	if c != nil {
		t.Cleanup(func() { remove(t, c) })
	}
	require.NoError(t, err)
	return c
}

func remove(t *testing.T, c *harness.Container) {
	// t.Context() is already cancelled when cleanups run.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if t.Failed() {
		stdout, stderr, err := eng.Logs(ctx, c.ID)
		t.Logf("logs of %s (err %v):\n%s%s", c.Name, err, stdout, stderr)
	}
	assert.NoError(t, eng.Remove(ctx, c.ID))
}

// startRedis starts a redis fixture and waits until it accepts.
func startRedis(t *testing.T, ctx context.Context, env ...string) *harness.Container {
	t.Helper()
	c := start(t, ctx, harness.Spec{Name: "redis", Image: redisImage, Env: env})
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(ctx, addr(c, 6379)))
	return c
}

// startAmbassador starts an ambassador from the image under test and waits
// until it has logged a listening route and accepts on every port in wait.
func startAmbassador(t *testing.T, ctx context.Context, s harness.Spec, wait ...uint16) *harness.Container {
	t.Helper()
	if s.Name == "" {
		s.Name = "ambassador"
	}
	s.Image = ambassadorImage
	c := start(t, ctx, s)
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, eng.WaitLog(ctx, c.ID, "route listening"))
	for _, p := range wait {
		require.NoError(t, harness.WaitTCP(ctx, addr(c, p)))
	}
	return c
}

// runToExit runs a one-shot container, requires exit code 0 and returns
// its trimmed stdout.
func runToExit(t *testing.T, ctx context.Context, s harness.Spec) string {
	t.Helper()
	s.OneShot = true
	c := start(t, ctx, s)
	code, err := eng.Wait(ctx, c.ID)
	require.NoError(t, err)
	stdout, stderr, err := eng.Logs(ctx, c.ID)
	require.NoError(t, err)
	require.Equalf(t, int64(0), code, "%s exited %d; stdout:\n%s\nstderr:\n%s", c.Name, code, stdout, stderr)
	return strings.TrimSpace(stdout)
}

// redisCLI runs `redis-cli -h redis ARGS...` in a consumer container that
// reaches redis only through --link <target>:redis, and returns its output.
func redisCLI(t *testing.T, ctx context.Context, target *harness.Container, args ...string) string {
	t.Helper()
	return runToExit(t, ctx, harness.Spec{
		Name:       "consumer-" + strings.ToLower(args[0]),
		Image:      redisImage,
		Entrypoint: []string{harness.RedisCLI},
		Links:      []string{link(target, "redis")},
		Cmd:        append([]string{"-h", "redis"}, args...),
	})
}

// addr is host:port of a container port on the bridge, reachable from the
// host running the tests.
func addr(c *harness.Container, port uint16) string {
	return fmt.Sprintf("%s:%d", c.IP, port)
}

// link is the --link value that makes c reachable as alias.
func link(c *harness.Container, alias string) string { return c.Name + ":" + alias }

// logLine returns the first line of out holding every one of substrs,
// or "".
func logLine(out string, substrs ...string) string {
	for line := range strings.Lines(out) {
		ok := true
		for _, s := range substrs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// waitLogLine polls out, a process's log as copied so far, for up to
// 5 s until a line holds every one of substrs, and returns it ("" if none
// came): the copy of a process's output runs on its own, so a line can
// come after what it reports has been seen by other means (a counter, a
// connection's end).
func waitLogLine(t *testing.T, ctx context.Context, out func() string, substrs ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var line string
	harness.Poll(ctx, func(context.Context) error {
		if line = logLine(out(), substrs...); line == "" {
			return errors.New("not logged yet")
		}
		return nil
	})
	return line
}
