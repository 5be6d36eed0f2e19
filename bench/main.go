// Command bench measures ambassadord beside its peers on loopback and
// prints one markdown table: direct (no proxy), the classic ambassador
// (socat, as the old image ran it), HAProxy (mode tcp, 2 threads) and
// ambassadord (the binary built from this repository, static routes).
// Every cell carries its ratio to direct; a column gives ambassadord's
// ratio to HAProxy, and another whether issue 5's goal is met.
//
// With -baseline (a binary) or -baseline-rev (a git revision, built here
// as `make build` would), a second ambassadord is measured as one more
// column, "ambassadord (baseline)", in the same interleaved rounds, with a
// column of ambassadord's ratio to it: a refactor shows there whether it
// costs anything, against the previous commit, on the same machine in the
// same minutes.
//
// The candidates are interleaved (direct, classic, HAProxy, ambassadord,
// [baseline,] direct, ...) over several rounds and medians are reported,
// because the machine is shared and noisy. Each measurement starts a fresh
// proxy process, so CPU, memory and descriptors are that measurement's
// alone.
//
// Then the TLS hop of issue 16 (tls.go): a client-side and a server-side
// ambassador with TLS between them, made of two stunnel4 instances, of two
// ambassadord processes with mutual TLS, and of two without TLS, in a
// table of its own.
//
// Then UDP forwarding (issue 17, udp.go): small datagrams' throughput and
// latency, and memory per idle flow, through socat as the old image ran
// it, nginx's stream module and ambassadord, beside direct, in a third
// table.
//
// Then the cost of active health checks (issue 19, health.go): the
// daemon's CPU with 500 backends checked, beside the same without checks,
// in a table of its own.
//
// Last, rewiring is measured with real containers on the local Docker
// engine (rewire.go): how fast new connections follow a change of backend,
// for ambassadord (and the baseline) following the engine and for the
// classic way of recreating the ambassador; for ambassadord across
// engines, private TLS dockerds playing other hosts (engines.go); and the
// size of the image the
// repository's Dockerfile makes of the binary. Without an engine those
// rows are left out, and a note says why.
//
// Run it with `make bench` (full, under 10 minutes) or `make bench QUICK=1`
// (one round, small counts, a few minutes). bench/setup.sh installs the
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
	losses            int // remote engines killed, for the time their backends take to be dropped
	// The TLS hop: how long new connections are opened for, and how many
	// idle connections are held through a pair.
	newConnTime  time.Duration
	tlsIdleConns int
	// UDP: how long the throughput and the latency loads run, and how
	// many idle flows are held.
	udpTime, udpRateTime time.Duration
	udpIdleFlows         int
	// runTimeout bounds one client run (redis-benchmark, iperf3 beyond
	// its -t): socat's listen backlog of 5 can stall connects for seconds.
	runTimeout time.Duration
}

var (
	full = config{rounds: 3, iperfSeconds: 2, requests: 50000, pipelinedRequests: 500000, churnConns: 20000, idleConns: 9000, startups: 3, rewires: 20, losses: 3, runTimeout: 20 * time.Second,
		newConnTime: 3 * time.Second, tlsIdleConns: 1000, udpTime: 3 * time.Second, udpRateTime: 2 * time.Second, udpIdleFlows: 50000}
	quick = config{rounds: 1, iperfSeconds: 1, requests: 5000, pipelinedRequests: 50000, churnConns: 1000, idleConns: 500, startups: 2, rewires: 3, losses: 1, runTimeout: 8 * time.Second,
		newConnTime: time.Second, tlsIdleConns: 200, udpTime: 500 * time.Millisecond, udpRateTime: 500 * time.Millisecond, udpIdleFlows: 2000}
)

// Port offsets from the base port. The backends use base+offset; candidate
// i listens on base+10*(i+1)+offset; the TLS pairs from base+tlsPorts.
const (
	portIperf   = 0
	portRedis   = 1
	portHold    = 2
	portStartup = 3 // and the next startupRoutes-1
	portsPer    = 10
)

func main() {
	// The bench's helper processes: the idle test's TCP backend, the UDP
	// rows' echo, their idle flows' holder and their spinners.
	for name, helper := range map[string]func([]string) error{"hold": hold, "udpecho": udpEcho, "udpidle": udpIdle, "listeners": listeners, "spin": spin} {
		if len(os.Args) > 1 && os.Args[1] == name {
			if inVM() {
				vmInit(helper, os.Args[2:])
				return
			}
			if err := helper(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "bench %s: %v\n", name, err)
				os.Exit(1)
			}
			return
		}
	}
	isQuick := flag.Bool("quick", os.Getenv("QUICK") != "", "one round with small counts (CI smoke); default from $QUICK")
	bin := flag.String("ambassadord", "bin/ambassadord", "the ambassadord binary to measure (make build)")
	baseBin := flag.String("baseline", "", "a second ambassadord binary, measured as a column of its own: the baseline")
	baseRev := flag.String("baseline-rev", "", "a git revision whose ambassadord is built and measured as the baseline (instead of -baseline)")
	base := flag.Int("base-port", 24100, "first of the loopback ports the bench uses (it needs 110 from there)")
	rounds := flag.Int("rounds", 0, "rounds; 0 means 3, or 1 with -quick")
	rewires := flag.Int("rewires", -1, "rewires of each kind with real containers; 0 skips them; -1 means 20, or 3 with -quick")
	only := flag.String("only", "", "comma-separated subset of bulk,rr,churn,idle,startup,tls,udp,proxy,health,rewire,swarm (for development; rewire includes swarm)")
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
	if *baseBin != "" && *baseRev != "" {
		fmt.Fprintln(os.Stderr, "bench: -baseline and -baseline-rev are two ways to give one baseline: choose one")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := options{cfg: cfg, bin: *bin, baseline: *baseBin, baselineRev: *baseRev, base: *base, quick: *isQuick, only: *only}
	if err := run(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// options are a run's settings, from the flags.
type options struct {
	cfg         config
	bin         string // the ambassadord binary under test
	baseline    string // a baseline binary, or ""
	baselineRev string // a git revision to build the baseline from, or ""
	base        int    // the first loopback port
	quick       bool
	only        string // parts to run, comma-separated; "" for all
}

// bench holds one run's state. Only the main goroutine touches it.
type bench struct {
	cfg       config
	quick     bool
	cands     []candidate
	baseline  string // what the baseline column is, for the notes; "" without one
	base      int
	dir       string                 // logs and configuration files
	samples   map[string][][]float64 // by metric key, then by candidate
	churnRuns []int                  // churn runs made, per candidate
	failures  []int                  // churn runs that failed, per candidate
	notes     []string
	rewire    *rewireResult
	swarmOnly bool         // of the rewires, the Swarm tasks' alone (-only swarm)
	tls       *tlsBench    // the TLS hop's table; nil if not measured
	udp       *udpBench    // the UDP table; nil if not measured
	proxy     *proxyBench  // the PROXY protocol table; nil if not measured
	health    *healthBench // the health checks' table; nil if not measured
}

// newBench returns a run's state for cands.
func newBench(cfg config, cands []candidate) *bench {
	return &bench{cfg: cfg, cands: cands, samples: map[string][][]float64{},
		churnRuns: make([]int, len(cands)), failures: make([]int, len(cands))}
}

// hasBaseline reports whether the run measures a baseline.
func (b *bench) hasBaseline() bool { return len(b.cands) > baseline }

func (b *bench) port(ci, offset int) int { return b.base + portsPer*(ci+1) + offset }

func (b *bench) add(key string, ci int, v float64) {
	s := b.samples[key]
	if s == nil {
		s = make([][]float64, len(b.cands))
		b.samples[key] = s
	}
	s[ci] = append(s[ci], v)
}

// note records a remark printed under the table.
func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(ctx context.Context, opts options) error {
	begin := time.Now()
	cfg, only := opts.cfg, opts.only
	bin, err := filepath.Abs(opts.bin)
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
	baseBin, baseWhat := opts.baseline, ""
	switch {
	case opts.baselineRev != "":
		if baseBin, baseWhat, err = buildBaseline(ctx, "", opts.baselineRev, dir); err != nil {
			return err
		}
	case baseBin != "":
		if baseBin, err = filepath.Abs(baseBin); err != nil {
			return err
		}
		if _, err := os.Stat(baseBin); err != nil {
			return fmt.Errorf("baseline binary: %w", err)
		}
		baseWhat = baseBin
	}
	b := newBench(cfg, candidates(bin, baseBin))
	b.quick, b.base, b.dir, b.baseline = opts.quick, opts.base, dir, baseWhat
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
	if want("tls") {
		if err := b.runTLS(ctx, bin); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.note("TLS hop not measured: %v", err)
		}
	}
	if want("udp") {
		if err := b.runUDP(ctx, bin); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.note("UDP not measured: %v", err)
		}
	}
	if want("proxy") {
		if err := b.runProxy(ctx, bin); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.note("PROXY protocol not measured: %v", err)
		}
	}
	if want("health") {
		if err := b.runHealth(ctx, bin); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.note("health checks not measured: %v", err)
		}
	}
	stopBackends()

	if want("rewire") || want("swarm") {
		b.swarmOnly = !want("rewire")
		if cfg.rewires == 0 {
			b.note("rewire and image size skipped (-rewires=0)")
		} else if err := b.runRewire(ctx); err != nil {
			// The rest of the table stands without it: say why it is missing.
			b.note("rewire with real containers not measured: %v", err)
		}
	}
	if want("rewire") && b.udp != nil && cfg.rewires > 0 {
		if err := b.udp.rewire(ctx, cfg.rewires); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.udp.note("rewire of UDP flows not measured: %v", err)
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
