package main

// The cost of active health checks (issue 19): ambassadord with one route
// of healthBackends static backends, each a loopback listener of a helper
// process (`bench listeners N`), without checks, with a tcp check and with
// a send/expect check, all at the default interval (2s). The CPU the
// daemon uses over a window, as a share of one core, in interleaved
// rounds; the checks' cost is the difference from the run without them.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const (
	// healthBackends is the number of backends checked: issue 19's "500
	// backends".
	healthBackends = 500
	// healthGoal is issue 19's bound on the checks' cost: a share of one
	// core.
	healthGoal = 2.0
)

// healthCand is one configuration of the daemon: its --check, "" for
// none, and whether its interval is the default one, on which the goal is
// judged.
type healthCand struct {
	name        string
	check       string
	defaultRate bool
}

var healthCands = []healthCand{
	{"no checks", "", false},
	{"tcp, every 5s (default)", "tcp", true},
	{"send/expect, every 5s (default)", `send=PING\r\n,expect=+PONG`, true},
	{"tcp, every 2s", "tcp,interval=2s", false},
	{"send/expect, every 2s", `send=PING\r\n,expect=+PONG,interval=2s`, false},
}

// healthBench is the health checks' table.
type healthBench struct {
	window  time.Duration // each measurement's
	rounds  int
	cpu     [][]float64 // by candidate: % of one core, per round
	checks  [][]float64 // by candidate: checks per second, per round
	up      []int       // by candidate: backends up in the last measurement
	notes   []string
	helperN int
}

func (h *healthBench) note(format string, args ...any) {
	h.notes = append(h.notes, fmt.Sprintf(format, args...))
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// runHealth measures the health checks' cost.
func (b *bench) runHealth(ctx context.Context, bin string) error {
	h := &healthBench{window: 20 * time.Second, rounds: b.cfg.rounds,
		cpu: make([][]float64, len(healthCands)), checks: make([][]float64, len(healthCands)), up: make([]int, len(healthCands))}
	if b.quick {
		h.window = 5 * time.Second
	}
	b.health = h
	self, err := os.Executable()
	if err != nil {
		return err
	}
	helper := exec.Command(self, "listeners", strconv.Itoa(healthBackends))
	out, err := helper.StdoutPipe()
	if err != nil {
		return err
	}
	helper.Stderr = os.Stderr
	// A process group of its own, which stop signals.
	helper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := helper.Start(); err != nil {
		return fmt.Errorf("start the listeners: %w", err)
	}
	defer stop([]*exec.Cmd{helper})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read the listeners' ports: %w", err)
	}
	ports := strings.Fields(line)
	if len(ports) != healthBackends {
		return fmt.Errorf("the listeners gave %d ports, want %d", len(ports), healthBackends)
	}
	backends := make([]string, len(ports))
	for i, p := range ports {
		backends[i] = "127.0.0.1:" + p
	}
	for round := 1; round <= h.rounds; round++ {
		t := time.Now()
		for ci, c := range healthCands {
			cpu, checks, up, err := h.measure(ctx, bin, b.dir, backends, c)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				h.note("round %d, %s: %v", round, c.name, err)
				continue
			}
			h.cpu[ci] = append(h.cpu[ci], cpu)
			h.checks[ci] = append(h.checks[ci], checks)
			h.up[ci] = up
		}
		fmt.Fprintf(os.Stderr, "bench: round %d/%d health done in %s\n", round, h.rounds, time.Since(t).Round(100*time.Millisecond))
	}
	return nil
}

// measure runs the daemon with c's check on one route to backends, lets
// every backend be checked (or not) for a while, and returns the CPU it
// used over the window as a % of one core, the checks per second its
// metrics counted meanwhile, and the backends up at the end.
func (h *healthBench) measure(ctx context.Context, bin, dir string, backends []string, c healthCand) (cpu, checksPerSec float64, up int, err error) {
	listen, admin := freePort(), freePort()
	args := []string{"--docker=off", "--log-level=warn", "--admin-socket=", "--admin-address=127.0.0.1:" + strconv.Itoa(admin),
		"--route", strconv.Itoa(listen) + ":" + strings.Join(backends, ",")}
	if c.check != "" {
		args = append(args, "--check", strconv.Itoa(listen)+":"+c.check)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "AMBASSADORD_LISTEN_ADDRESS=127.0.0.1")
	if err := startLogged(cmd, dir, "health-"+strings.ReplaceAll(c.name, "/", "-")); err != nil {
		return 0, 0, 0, err
	}
	defer stop([]*exec.Cmd{cmd})
	metrics := "http://127.0.0.1:" + strconv.Itoa(admin) + "/metrics"
	// Settle: every backend checked rise (2) times, at most an interval
	// apart, its first check within a second.
	deadline := time.Now().Add(20 * time.Second)
	for {
		up, _, err = healthMetrics(ctx, metrics)
		if err == nil && (c.check == "" || up == len(backends)) {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, 0, fmt.Errorf("%d of %d backends up after 20s (%v)", up, len(backends), err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A while more, so that the window starts in the steady state.
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return 0, 0, 0, err
	}
	_, before, err := healthMetrics(ctx, metrics)
	if err != nil {
		return 0, 0, 0, err
	}
	cpu0, err := cpuTime([]int{cmd.Process.Pid})
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	if err := sleepCtx(ctx, h.window); err != nil {
		return 0, 0, 0, err
	}
	cpu1, err := cpuTime([]int{cmd.Process.Pid})
	if err != nil {
		return 0, 0, 0, err
	}
	elapsed := time.Since(start)
	up, after, err := healthMetrics(ctx, metrics)
	if err != nil {
		return 0, 0, 0, err
	}
	return 100 * (cpu1 - cpu0).Seconds() / elapsed.Seconds(), (after - before) / elapsed.Seconds(), up, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// healthMetrics reads the backends up and the checks done so far from
// the daemon's metrics.
func healthMetrics(ctx context.Context, url string) (up int, checks float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := httpGet(ctx, url)
	if err != nil {
		return 0, 0, err
	}
	defer req.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(req)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range f["ambassadord_health_backends"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "state" && l.GetValue() == "up" {
				up = int(m.GetGauge().GetValue())
			}
		}
	}
	for _, m := range f["ambassadord_health_checks_total"].GetMetric() {
		checks += m.GetCounter().GetValue()
	}
	return up, checks, nil
}

// print writes the health checks' table.
func (h *healthBench) print(w io.Writer) {
	fmt.Fprintf(w, "\n### Active health checks (issue 19): %d backends\n\n", healthBackends)
	cols := []string{"metric"}
	for _, c := range healthCands {
		cols = append(cols, c.name)
	}
	cols = append(cols, "issue 19 goal")
	fmt.Fprintln(w, "| "+strings.Join(cols, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(cols)))
	base := median(h.cpu[0])
	row := func(name string, cell func(ci int) string, goal string) {
		cells := []string{name}
		for ci := range healthCands {
			cells = append(cells, cell(ci))
		}
		fmt.Fprintln(w, "| "+strings.Join(append(cells, goal), " | ")+" |")
	}
	row("daemon CPU, % of one core", func(ci int) string { return format(median(h.cpu[ci]), 2) }, "")
	worst := math.NaN()
	row("checks' own CPU (minus no checks), % of one core", func(ci int) string {
		if ci == 0 {
			return "—"
		}
		d := median(h.cpu[ci]) - base
		if healthCands[ci].defaultRate && (math.IsNaN(worst) || d > worst) {
			worst = d
		}
		return format(d, 2)
	}, "")
	row("checks/s", func(ci int) string { return format(median(h.checks[ci]), 0) }, "")
	row("CPU per check, µs", func(ci int) string {
		if ci == 0 {
			return "—"
		}
		return format((median(h.cpu[ci])-base)/100*1e6/median(h.checks[ci]), 0)
	}, "")
	row("backends up", func(ci int) string {
		if ci == 0 {
			return "—"
		}
		return strconv.Itoa(h.up[ci])
	}, "")
	met := "not met"
	if !math.IsNaN(worst) && roundTo(worst, 2) <= healthGoal {
		met = "met"
	}
	fmt.Fprintf(w, "\nIssue 19 goal, health checks on %d backends use at most %.0f%% of a core, at the default interval (5s): **%s** (the costlier check, %s%%).\n", healthBackends, healthGoal, met, format(worst, 2))
	fmt.Fprintf(w, "\nCells: median over %d interleaved rounds. CPU: utime+stime of the daemon from /proc/PID/stat (10 ms ticks) over %s, after every backend passed and 3s more. The daemon: `bin/ambassadord --docker=off --route P:B1,...,B%d [--check P:CHECK]`, an admin endpoint on loopback for the counts (ambassadord_health_checks_total, ambassadord_health_backends), scraped before and after the window. The backends: %d loopback listeners of one helper process (`bench listeners`), answering `PING` with `+PONG`; its CPU is not counted. Timeout 1s, at most 16 checks at once; a check's connection is closed with a reset (no TIME_WAIT).\n",
		h.rounds, h.window, healthBackends, healthBackends)
	for _, n := range h.notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
}

// listeners is the health table's backends, run as a process of its own
// (`bench listeners N`): N loopback listeners, their ports printed on one
// line; each connection that sends "PING\r\n" gets "+PONG\r\n", every
// connection is then closed.
func listeners(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: bench listeners N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	var ports []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		go serveChecks(ln)
	}
	fmt.Println(strings.Join(ports, " "))
	select {}
}

func serveChecks(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go answerCheck(c)
	}
}

func answerCheck(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == nil && line == "PING\r\n" {
		c.Write([]byte("+PONG\r\n"))
	}
}

// httpGet GETs url, which must answer 200, and returns its body.
func httpGet(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return res.Body, nil
}
