// Command bench measures ambassadord beside its peers on loopback and
// prints one markdown table: direct (no proxy), the classic ambassador
// (socat, as the old image ran it), HAProxy (mode tcp, 2 threads) and
// ambassadord (the binary built from this repository, static routes).
// Every cell carries its ratio to direct; a column gives ambassadord's
// ratio to HAProxy, and another whether issue 5's goal is met.
//
// The candidates are interleaved (direct, classic, HAProxy, ambassadord,
// direct, ...) over several rounds and medians are reported, because the
// machine is shared and noisy. Each measurement starts a fresh proxy
// process, so CPU, memory and descriptors are that measurement's alone.
//
// Rewiring with real containers is measured by e2e/cmd/rewirebench (it
// needs the e2e harness, internal to e2e/), which this command builds and
// runs last, and whose rows it adds to the table.
//
// Run it with `make bench` (full, under 10 minutes) or `make bench QUICK=1`
// (one round, small counts, under 2 minutes). bench/setup.sh installs the
// peers from Debian's packages when they are missing.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is what a full and a quick run differ in.
type config struct {
	rounds       int
	iperfSeconds int
	// Per redis-benchmark run: plain, pipelined by 16, and new
	// connections. A full run's last about a second: at 20,000, 200,000
	// and 5,000 they lasted half a second, their p99 was a few slow
	// requests, and their CPU a few 10 ms ticks.
	requests          int
	pipelinedRequests int
	churnConns        int
	idleConns         int
	startups          int // start-up samples per candidate and round
	rewires           int // per kind of rewire; 0 skips the rewire test
	// runTimeout bounds one client run (redis-benchmark, iperf3 beyond
	// its -t): socat's listen backlog of 5 can stall connects for seconds.
	runTimeout time.Duration
}

var (
	full  = config{rounds: 3, iperfSeconds: 2, requests: 50000, pipelinedRequests: 500000, churnConns: 20000, idleConns: 9000, startups: 3, rewires: 20, runTimeout: 20 * time.Second}
	quick = config{rounds: 1, iperfSeconds: 1, requests: 5000, pipelinedRequests: 50000, churnConns: 1000, idleConns: 500, startups: 2, rewires: 3, runTimeout: 8 * time.Second}
)

// Port offsets from the base port. The backends use base+offset; candidate
// i listens on base+10*(i+1)+offset.
const (
	portIperf   = 0
	portRedis   = 1
	portHold    = 2
	portStartup = 3 // and the next startupRoutes-1
	portsPer    = 10
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		if err := hold(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench hold: %v\n", err)
			os.Exit(1)
		}
		return
	}
	isQuick := flag.Bool("quick", os.Getenv("QUICK") != "", "one round with small counts (CI smoke); default from $QUICK")
	bin := flag.String("ambassadord", "bin/ambassadord", "the ambassadord binary to measure (make build)")
	base := flag.Int("base-port", 24100, "first of the loopback ports the bench uses (it needs 50 from there)")
	rounds := flag.Int("rounds", 0, "rounds; 0 means 3, or 1 with -quick")
	rewires := flag.Int("rewires", -1, "rewires of each kind with real containers; 0 skips them; -1 means 20, or 3 with -quick")
	only := flag.String("only", "", "comma-separated subset of bulk,rr,churn,idle,startup,rewire (for development)")
	flag.Parse()

	cfg := full
	if *isQuick {
		cfg = quick
	}
	if *rounds > 0 {
		cfg.rounds = *rounds
	}
	if *rewires >= 0 {
		cfg.rewires = *rewires
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, *bin, *base, *isQuick, *only); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// bench holds one run's state. Only the main goroutine touches it.
type bench struct {
	cfg       config
	quick     bool
	cands     []candidate
	base      int
	dir       string // logs and configuration files
	samples   map[string]*[4][]float64
	churnRuns [4]int // churn runs made, per candidate
	failures  [4]int // churn runs that failed, per candidate
	notes     []string
	rewire    *rewireResult
}

func (b *bench) port(ci, offset int) int { return b.base + portsPer*(ci+1) + offset }

func (b *bench) add(key string, ci int, v float64) {
	s := b.samples[key]
	if s == nil {
		s = new([4][]float64)
		b.samples[key] = s
	}
	s[ci] = append(s[ci], v)
}

// note records a remark printed under the table.
func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(ctx context.Context, cfg config, bin string, base int, isQuick bool, only string) error {
	begin := time.Now()
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("ambassadord binary: %w (run make build)", err)
	}
	for _, tool := range []string{"iperf3", "socat", "haproxy", "redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing (bench/setup.sh installs it): %w", tool, err)
		}
	}
	dir, err := os.MkdirTemp("", "ambassadord-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{cfg: cfg, quick: isQuick, cands: candidates(bin), base: base, dir: dir, samples: map[string]*[4][]float64{}}
	if err := b.checkPorts(); err != nil {
		return err
	}
	stopBackends, err := b.startBackends(ctx)
	if err != nil {
		return err
	}
	defer stopBackends()

	want := func(part string) bool { return only == "" || slices.Contains(strings.Split(only, ","), part) }
	parts := []struct {
		name string
		run  func(context.Context, int) error
	}{
		{"bulk", b.bulk},
		{"rr", b.requestResponse},
		{"churn", b.churn},
		{"idle", b.idle},
		{"startup", b.startup},
	}
	for round := 1; round <= cfg.rounds; round++ {
		for _, part := range parts {
			if !want(part.name) {
				continue
			}
			t := time.Now()
			for ci := range b.cands {
				if err := part.run(ctx, ci); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					// One failed measurement (socat drops connections
					// beyond its listen backlog) leaves a gap, not a
					// missing table: say what failed.
					b.note("round %d, %s: %v", round, part.name, err)
				}
			}
			fmt.Fprintf(os.Stderr, "bench: round %d/%d %s done in %s\n", round, cfg.rounds, part.name, time.Since(t).Round(100*time.Millisecond))
		}
	}
	stopBackends()

	if want("rewire") {
		if cfg.rewires == 0 {
			b.note("rewire and image size skipped (-rewires=0)")
		} else if err := b.runRewire(ctx, dir); err != nil {
			// The rest of the table stands without it: say why it is missing.
			b.note("rewire with real containers not measured: %v", err)
		}
	}
	b.print(os.Stdout, begin)
	return nil
}

// checkPorts fails early if a port the bench needs is taken.
func (b *bench) checkPorts() error {
	for p := b.base; p < b.port(len(b.cands)-1, portsPer); p++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return fmt.Errorf("port %d is taken (choose another -base-port): %w", p, err)
		}
		ln.Close()
	}
	return nil
}

// startBackends starts the iperf3 server, redis-server and the holding
// backend for the idle test, and returns a function that stops them.
func (b *bench) startBackends(ctx context.Context) (func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stopAll := func() {
		stop(cmds)
		cmds = nil
	}
	for _, s := range []struct {
		name string
		port int
		argv []string
	}{
		{"iperf3", b.port(-1, portIperf), []string{"iperf3", "-s", "-p", portArg(b.port(-1, portIperf))}},
		{"redis-server", b.port(-1, portRedis), []string{"redis-server", "--port", portArg(b.port(-1, portRedis)), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--maxclients", "10000"}},
		{"hold", b.port(-1, portHold), []string{self, "hold", portArg(b.port(-1, portHold))}},
	} {
		cmd := exec.Command(s.argv[0], s.argv[1:]...)
		if err := startLogged(cmd, b.dir, s.name); err != nil {
			stopAll()
			return nil, err
		}
		cmds = append(cmds, cmd)
		deadline := time.Now().Add(10 * time.Second)
		for !listening(s.port) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				log, _ := os.ReadFile(filepath.Join(b.dir, s.name+".log"))
				stopAll()
				return nil, fmt.Errorf("%s did not listen on %d: %s", s.name, s.port, lastLines(string(log), 5))
			}
			time.Sleep(5 * time.Millisecond) // polling the socket table
		}
	}
	return stopAll, nil
}

// hold is the idle test's backend, run as a process of its own (`bench
// hold PORT`) so that its descriptors do not count against the client's
// limit: it echoes the first byte of each connection and then holds the
// connection until the peer closes it.
func hold(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: bench hold PORT")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+args[0])
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go holdConn(c)
	}
}

func holdConn(c net.Conn) {
	defer c.Close()
	var buf [512]byte
	n, err := c.Read(buf[:1])
	if err != nil || n == 0 {
		return
	}
	if _, err := c.Write(buf[:1]); err != nil {
		return
	}
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}
