package main

// UDP forwarding (issue 17): a table of its own, on loopback, in front of
// a Go UDP echo (`bench udpecho`, a process of its own). The columns:
//
//   - direct: the client to the echo;
//   - classic: socat as the old image would have run it,
//     `socat UDP4-RECVFROM:P,fork UDP4-SENDTO:127.0.0.1:B`, which forks a
//     process per datagram, living half a second for the answer;
//   - nginx: Debian's nginx-light with libnginx-mod-stream, a configuration
//     of ours (udpNginxConfig), one worker, as ambassadord serves a route
//     from one event loop, in two columns: with proxy_responses 1, the
//     usual configuration for DNS, which ends a session once its
//     datagrams are answered (and so holds no idle flow), and without,
//     which keeps a session for proxy_timeout, as ambassadord keeps a
//     flow, and is the faster of the two under a load of many datagrams
//     per client;
//   - ambassadord: `--route P/udp:127.0.0.1:B`.
//
// Rows: small-datagram throughput (a 64-byte datagram each way, many
// flows each keeping a few in flight, from a Go client: requests/s, loss,
// the proxy's CPU per million datagrams); latency at a fixed moderate
// rate (p50, p99, loss), twice: as the machine is, and with its CPUs kept
// out of idle by spinners at SCHED_IDLE (spin.go), which leaves out the
// delay of waking an idle CPU, alike for every column; memory and
// descriptors per idle flow, with 50,000 flows held (2,000 with -quick).
// Interleaved rounds and medians as for the other tables; each
// measurement starts a fresh proxy.
//
// Idle flows take a local port each, at the client and at the proxy (its
// socket to the backend): 50,000 of them do not fit in the default
// ephemeral range (28,232 ports). As root, the idle rows are measured in
// a network namespace of their own (`bench udpidle`, started with
// CLONE_NEWNET), whose port range is widened there and whose clients bind
// ports outside it, the machine's settings untouched; otherwise on the
// machine's loopback with fewer flows, and a note says so. They take a
// descriptor each too, in the proxy and in the client: a hard limit below
// 50,000 that the bench may not raise (CAP_SYS_RESOURCE) caps the flows,
// and a note says so; ambassadord's are then held in a VM of the bench's
// own (vm.go), where it is root, if bench/setup.sh could fetch one.
//
// Last, with the rewires of the other tables, a UDP rewire row: a claim
// moving new flows, under a load of fresh flows (udpRewire, below).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// The UDP table's columns, in table order; interleaved in this order.
const (
	udpDirect = iota
	udpClassic
	udpNginx     // proxy_responses 1
	udpNginxKept // sessions kept for proxy_timeout
	udpAmbassadord
	udpBaseline // only when the run has a baseline binary
)

// UDP ports, from the base port (UDP's port space is not TCP's, so they
// may be the TCP rows' numbers): the echo at the base, column ci's proxy
// at base + portsPer*(ci+1).
const udpEchoSlot = 0

// The loads. Throughput: udpFlows sockets each keep udpWindow requests in
// flight, 256 in all, about what the default socket buffers (208 KiB)
// queue of 64-byte datagrams. Latency: udpRateFlows sockets each send one
// request every udpRateEvery and wait for its answer: 2,000 requests/s.
const (
	udpSize       = 64
	udpFlows      = 64
	udpWindow     = 4
	udpRateFlows  = 20
	udpRateEvery  = 10 * time.Millisecond
	udpLossWait   = 50 * time.Millisecond // a window with no answer this long is taken as lost
	udpDrain      = 100 * time.Millisecond
	udpIdleWorker = 8 // idle flows opened at once
)

// udpIdleTimeout is the proxies' idle timeout in the idle rows: flows
// must outlive the opening of 50,000 of them.
const udpIdleTimeout = 10 * time.Minute

// udpCandidate is one column of the UDP table.
type udpCandidate struct {
	name string
	// launch starts the proxy from listen to the echo at backend, logging
	// into dir; idle configures it to hold flows for the idle rows. nil
	// for direct.
	launch func(bin, dir string, listen, backend, flows int, idle bool) ([]*exec.Cmd, error)
	// noIdle, if set, says why the proxy holds no idle flow.
	noIdle string
	// workers: the proxy's children live as long as it does (nginx's
	// worker), so its CPU is read without waiting for them to be reaped.
	workers bool
	// flowsCap, if not 0, caps the flows of the throughput load: socat
	// forks a process per datagram, each living half a second.
	flowsCap int
}

// udpCandidates returns the UDP columns, with baselineBin's, a second
// ambassadord, unless it is empty.
func udpCandidates(baselineBin string) []udpCandidate {
	cs := []udpCandidate{
		udpDirect: {name: "direct"},
		udpClassic: {name: "classic (socat)", launch: launchUDPSocat, flowsCap: 8,
			noIdle: "a process per datagram, ending half a second after it"},
		udpNginx: {name: "nginx (proxy_responses 1)", launch: udpNginxLauncher(true), workers: true,
			noIdle: "a session ends once its datagrams are answered"},
		udpNginxKept:   {name: "nginx (sessions kept)", launch: udpNginxLauncher(false), workers: true},
		udpAmbassadord: {name: "ambassadord", launch: launchUDPAmbassadord},
	}
	if baselineBin != "" {
		cs = append(cs, udpCandidate{name: "ambassadord (baseline)", noIdle: "measured for ambassadord only",
			launch: func(_, dir string, listen, backend, flows int, idle bool) ([]*exec.Cmd, error) {
				return launchUDPAmbassadord(baselineBin, dir, listen, backend, flows, idle)
			}})
	}
	return cs
}

// udpBench is the UDP part's state. Only the main goroutine touches it.
type udpBench struct {
	b       *bench
	bin     string
	cands   []udpCandidate
	samples map[string][][]float64 // by metric key, then by column
	notes   []string
	netns   bool       // the idle rows run in a network namespace of their own
	rewired *udpRewire // the rewires; nil when not measured
	vmHeld  bool       // ambassadord's idle flows were held in a VM (vm.go)
}

func (u *udpBench) add(key string, ci int, v float64) {
	s := u.samples[key]
	if s == nil {
		s = make([][]float64, len(u.cands))
		u.samples[key] = s
	}
	s[ci] = append(s[ci], v)
}

// note records a remark printed under the UDP table.
func (u *udpBench) note(format string, args ...any) {
	u.notes = append(u.notes, fmt.Sprintf(format, args...))
	fmt.Fprintf(os.Stderr, "bench: udp: "+format+"\n", args...)
}

func (u *udpBench) echoPort() int         { return u.b.base + udpEchoSlot }
func (u *udpBench) listenPort(ci int) int { return u.b.base + portsPer*(ci+1) }

// runUDP measures the UDP rows over the configured rounds. A measurement
// that fails leaves a gap and a note.
func (b *bench) runUDP(ctx context.Context, bin string) error {
	if _, err := exec.LookPath(udpNginxBin()); err != nil {
		return fmt.Errorf("nginx is missing (bench/setup.sh installs nginx-light): %w", err)
	}
	if _, err := os.Stat(udpStreamModule); err != nil {
		return fmt.Errorf("nginx's stream module is missing (bench/setup.sh installs libnginx-mod-stream): %w", err)
	}
	baseBin := ""
	if b.hasBaseline() {
		baseBin = b.cands[baseline].bin
	}
	u := &udpBench{b: b, bin: bin, cands: udpCandidates(baseBin), samples: map[string][][]float64{}}
	b.udp = u
	ports := []int{u.echoPort()}
	for ci := udpClassic; ci < len(u.cands); ci++ {
		ports = append(ports, u.listenPort(ci))
	}
	for _, p := range ports {
		c, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return fmt.Errorf("udp port %d is taken (choose another -base-port): %w", p, err)
		}
		c.Close()
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	echo := exec.Command(self, "udpecho", strconv.Itoa(u.echoPort()))
	if err := startLogged(echo, b.dir, "udpecho"); err != nil {
		return err
	}
	defer stop([]*exec.Cmd{echo})
	if err := waitUDPBound(ctx, u.echoPort()); err != nil {
		return fmt.Errorf("udp echo: %w", err)
	}
	u.netns = os.Geteuid() == 0
	parts := []struct {
		name string
		run  func(context.Context, int) error
	}{
		{"throughput", u.throughput},
		{"latency", u.latency},
		{"latency, CPUs kept busy", u.latencyBusy},
		{"idle", u.idle},
	}
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, part := range parts {
			begin := time.Now()
			for ci := range u.cands {
				if err := part.run(ctx, ci); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					u.note("round %d, %s through %s: %v", round, part.name, u.cands[ci].name, err)
				}
			}
			fmt.Fprintf(os.Stderr, "bench: udp round %d/%d %s done in %s\n", round, b.cfg.rounds, part.name, time.Since(begin).Round(100*time.Millisecond))
		}
	}
	return nil
}

// start launches column ci's proxy in front of the echo and waits until
// it is bound; it returns the address clients send to.
func (u *udpBench) start(ctx context.Context, ci int) (*proxy, string, error) {
	c := u.cands[ci]
	if c.launch == nil {
		return &proxy{}, net.JoinHostPort("127.0.0.1", strconv.Itoa(u.echoPort())), nil
	}
	cmds, err := c.launch(u.bin, u.b.dir, u.listenPort(ci), u.echoPort(), 0, false)
	if err != nil {
		return nil, "", err
	}
	p := &proxy{cmds: cmds}
	if err := waitUDPBound(ctx, u.listenPort(ci)); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("%s: %w (see %s)", c.name, err, u.b.dir)
	}
	return p, net.JoinHostPort("127.0.0.1", strconv.Itoa(u.listenPort(ci))), nil
}

// throughput runs the windowed echo load through column ci for
// cfg.udpTime and records requests/s, loss and the proxy's CPU per
// million datagrams.
func (u *udpBench) throughput(ctx context.Context, ci int) error {
	c := u.cands[ci]
	p, addr, err := u.start(ctx, ci)
	if err != nil {
		return err
	}
	defer p.stop()
	flows := udpFlows
	if c.flowsCap > 0 {
		flows = c.flowsCap
	}
	// A short warm-up, not measured: the flows' first datagrams make
	// the proxy's flows.
	if _, err := udpWindowed(ctx, addr, flows, udpWindow, 100*time.Millisecond); err != nil {
		return fmt.Errorf("warm up: %w", err)
	}
	before, err := c.cpu(p)
	if err != nil {
		return err
	}
	res, err := udpWindowed(ctx, addr, flows, udpWindow, u.b.cfg.udpTime)
	if err != nil {
		return err
	}
	after, err := c.cpu(p)
	if err != nil {
		return err
	}
	if res.received == 0 {
		return errors.New("no answer")
	}
	u.add("tput-rps", ci, float64(res.receivedInTime)/res.elapsed.Seconds())
	u.add("tput-loss", ci, 100*float64(res.sent-res.received)/float64(res.sent))
	if c.launch != nil {
		u.add("tput-cpu", ci, (after-before).Seconds()/(float64(res.sent+res.received)/1e6))
	}
	return nil
}

// latency runs the paced load through column ci for cfg.udpRateTime and
// records the round trips' p50 and p99, and the loss.
func (u *udpBench) latency(ctx context.Context, ci int) error {
	return u.paced(ctx, ci, "lat")
}

// latencyBusy is latency with the CPUs kept out of idle by spinners at
// SCHED_IDLE (spin.go), into the rows of prefix lat-busy.
func (u *udpBench) latencyBusy(ctx context.Context, ci int) error {
	spinners, err := startSpinners(u.b.dir)
	if err != nil {
		return err
	}
	defer stop([]*exec.Cmd{spinners})
	return u.paced(ctx, ci, "lat-busy")
}

// paced runs the paced load through column ci and records its round
// trips' p50 and p99 and its loss in the rows of prefix.
func (u *udpBench) paced(ctx context.Context, ci int, prefix string) error {
	p, addr, err := u.start(ctx, ci)
	if err != nil {
		return err
	}
	defer p.stop()
	if _, err := udpPaced(ctx, addr, udpRateFlows, udpRateEvery, 100*time.Millisecond); err != nil {
		return fmt.Errorf("warm up: %w", err)
	}
	res, err := udpPaced(ctx, addr, udpRateFlows, udpRateEvery, u.b.cfg.udpRateTime)
	if err != nil {
		return err
	}
	if len(res.rtts) == 0 {
		return errors.New("no answer")
	}
	u.add(prefix+"-p50", ci, ms(percentile(res.rtts, 0.50)))
	u.add(prefix+"-p99", ci, ms(percentile(res.rtts, 0.99)))
	u.add(prefix+"-loss", ci, 100*float64(res.sent-res.received)/float64(res.sent))
	return nil
}

// idle measures what column ci's proxy holds per idle flow, in a helper
// process of its own (udpidle), in a network namespace of its own as
// root.
func (u *udpBench) idle(ctx context.Context, ci int) error {
	c := u.cands[ci]
	if c.launch == nil {
		return nil
	}
	if c.noIdle != "" {
		if !slices.ContainsFunc(u.notes, func(n string) bool { return strings.HasPrefix(n, "idle: "+c.name) }) {
			u.note("idle: %s holds no flow: %s", c.name, c.noIdle)
		}
		return nil
	}
	flows := u.b.cfg.udpIdleFlows
	if !u.netns && flows > udpHostFlows {
		flows = udpHostFlows
		if !slices.ContainsFunc(u.notes, func(n string) bool { return strings.HasPrefix(n, "idle: not root") }) {
			u.note("idle: not root, so no network namespace of its own: %d flows on the machine's loopback, not %d (the ephemeral ports and descriptors would not do)", flows, u.b.cfg.udpIdleFlows)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var (
		out []byte
		vm  string // the kernel the VM booted, if the flows were held in one
		log string // the end of the VM's logs
	)
	if u.netns && ci == udpAmbassadord && !fdsFor(flows) {
		// Not here, with too few descriptors: in a VM, if there is
		// one, else capped (udpIdle says so). Once: a VM's run takes
		// a minute, and the memory a flow takes does not vary.
		if u.vmHeld {
			return nil
		}
		kernel, err := vmKernel()
		if err == nil {
			var res string
			res, log, err = runInVM(ctx, kernel, map[string]string{"/ambassadord": u.bin},
				[]string{"udpidle", "-cand", strconv.Itoa(ci), "-flows", strconv.Itoa(flows), "-bin", "/ambassadord", "-dir", "/tmp"})
			if err == nil {
				out, vm = []byte(res), filepath.Base(kernel)
			}
		}
		if err != nil {
			u.note("idle: %s's flows not held in a VM: %v", c.name, err)
		}
	}
	if out == nil {
		args := []string{"udpidle", "-cand", strconv.Itoa(ci), "-flows", strconv.Itoa(flows), "-bin", u.bin, "-dir", u.b.dir}
		if !u.netns {
			args = append(args, "-host", "-base", strconv.Itoa(u.b.base))
		}
		cmd := exec.CommandContext(ctx, self, args...)
		if u.netns {
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if out, err = cmd.Output(); err != nil {
			return fmt.Errorf("udpidle: %w: %s", err, lastLines(stderr.String(), 3))
		}
	}
	var r udpIdleResult
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("udpidle: parse %q: %w", out, err)
	}
	if r.Capped != "" && !slices.ContainsFunc(u.notes, func(n string) bool { return strings.HasPrefix(n, "idle: capped") }) {
		u.note("idle: capped at %s", r.Capped)
	}
	if r.Err != "" {
		if log != "" {
			r.Err += "; the VM's logs end with:\n" + log
		}
		if r.Held == 0 {
			return errors.New(r.Err)
		}
		u.note("idle flows through %s: %s", c.name, r.Err)
	}
	if vm != "" {
		u.vmHeld = true
		u.note("idle: %s's flows were held in a VM, as this machine's hard descriptor limit is below %d: qemu-system-x86_64 under software emulation, %d MiB, booting %s, the proxy, the echo and the clients in it as here, in the first round only", c.name, flows+udpIdleSpareFDs, vmMemory, vm)
	}
	held := float64(r.Held)
	u.add("idle-flows", ci, held)
	u.add("idle-pss", ci, float64(r.PSSKiB)/held)
	u.add("idle-rss", ci, float64(r.RSSKiB)/held)
	u.add("idle-fds", ci, float64(r.FDs)/held)
	return nil
}

// cpu is the CPU time p has used so far: for a proxy with workers, theirs
// read as they run.
func (c udpCandidate) cpu(p *proxy) (time.Duration, error) {
	if !c.workers {
		return p.cpu()
	}
	var total time.Duration
	for _, pid := range tree(p.pids()) {
		s, err := readStat(pid)
		if err != nil {
			return 0, err
		}
		total += s.cpu
	}
	return total, nil
}

// udpHostFlows is how many idle flows are held outside a network
// namespace of their own: within the default ephemeral range and a
// 20,000-descriptor limit, client and proxy each taking one per flow.
const udpHostFlows = 8000

// udpResult is what a load counted.
type udpResult struct {
	sent, received int
	receivedInTime int // answers that came within the timed span
	elapsed        time.Duration
	rtts           []time.Duration // paced load: the round trips, sorted
}

// udpWindowed runs flows sockets to addr, each sending a 64-byte
// datagram for every answer so as to keep window in flight, for d; a
// window without an answer for udpLossWait is taken as lost and sent
// anew. Then it waits udpDrain for late answers.
func udpWindowed(ctx context.Context, addr string, flows, window int, d time.Duration) (udpResult, error) {
	conns, err := udpDial(addr, flows)
	if err != nil {
		return udpResult{}, err
	}
	defer closeConns(conns)
	var (
		mu  sync.Mutex
		res udpResult
		wg  sync.WaitGroup
	)
	begin := time.Now()
	end := begin.Add(d)
	for _, c := range conns {
		wg.Go(func() {
			sent, received, inTime := udpWindowFlow(ctx, c, window, end)
			mu.Lock()
			res.sent += sent
			res.received += received
			res.receivedInTime += inTime
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = d
	return res, ctx.Err()
}

// udpWindowFlow is one flow of udpWindowed.
func udpWindowFlow(ctx context.Context, c *net.UDPConn, window int, end time.Time) (sent, received, inTime int) {
	msg := make([]byte, udpSize)
	buf := make([]byte, 2048)
	send := func() bool {
		binary.BigEndian.PutUint64(msg, uint64(sent))
		if _, err := c.Write(msg); err != nil {
			return false
		}
		sent++
		return true
	}
	inFlight := 0
	for now := time.Now(); now.Before(end) && ctx.Err() == nil; now = time.Now() {
		for inFlight < window {
			if !send() {
				break
			}
			inFlight++
		}
		c.SetReadDeadline(now.Add(udpLossWait))
		if _, err := c.Read(buf); err != nil {
			inFlight = 0 // lost, or late: the window starts anew
			continue
		}
		received++
		if time.Now().Before(end) {
			inTime++
		}
		inFlight = max(inFlight-1, 0)
	}
	c.SetReadDeadline(time.Now().Add(udpDrain))
	for {
		if _, err := c.Read(buf); err != nil {
			return sent, received, inTime
		}
		received++
	}
}

// udpPaced runs flows sockets to addr, each sending a 64-byte datagram
// every every and waiting for its answer (at most every), for d, and
// returns the round trips.
func udpPaced(ctx context.Context, addr string, flows int, every, d time.Duration) (udpResult, error) {
	conns, err := udpDial(addr, flows)
	if err != nil {
		return udpResult{}, err
	}
	defer closeConns(conns)
	var (
		mu  sync.Mutex
		res udpResult
		wg  sync.WaitGroup
	)
	begin := time.Now()
	end := begin.Add(d)
	for i, c := range conns {
		// Staggered, so that the flows' datagrams spread over the period.
		first := begin.Add(every * time.Duration(i) / time.Duration(flows))
		wg.Go(func() {
			sent, rtts := udpPacedFlow(ctx, c, first, every, end)
			mu.Lock()
			res.sent += sent
			res.received += len(rtts)
			res.rtts = append(res.rtts, rtts...)
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = d
	slices.Sort(res.rtts)
	return res, ctx.Err()
}

// udpPacedFlow is one flow of udpPaced.
func udpPacedFlow(ctx context.Context, c *net.UDPConn, next time.Time, every time.Duration, end time.Time) (sent int, rtts []time.Duration) {
	msg := make([]byte, udpSize)
	buf := make([]byte, 2048)
	for ; next.Before(end) && ctx.Err() == nil; next = next.Add(every) {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait) // the pace of the load
		}
		binary.BigEndian.PutUint64(msg, uint64(sent))
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			continue
		}
		sent++
		c.SetReadDeadline(t.Add(every))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break // lost (or later than the next one is due)
			}
			if n >= 8 && binary.BigEndian.Uint64(buf) == uint64(sent-1) {
				rtts = append(rtts, time.Since(t))
				break
			}
		}
	}
	return sent, rtts
}

// udpDial opens n sockets connected to addr.
func udpDial(addr string, n int) ([]*net.UDPConn, error) {
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	var conns []*net.UDPConn
	for range n {
		c, err := net.DialUDP("udp4", nil, raddr)
		if err != nil {
			closeConns(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeConns(conns []*net.UDPConn) {
	for _, c := range conns {
		c.Close()
	}
}

// waitUDPBound polls the socket table until a UDP socket is bound to
// port on 127.0.0.1 or the wildcard.
func waitUDPBound(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for !udpBound(port) {
		if ctx.Err() != nil {
			return fmt.Errorf("no udp socket bound to %d after 10s", port)
		}
		time.Sleep(2 * time.Millisecond) // polling the socket table
	}
	return nil
}

// udpBound reports whether a UDP socket is bound to port, from
// /proc/net/udp and udp6 (of the caller's network namespace): unconnected
// (state 07), with no remote address, so a client's socket does not
// count.
func udpBound(port int) bool { return socketIn("udp", "07", port) }

// launchUDPSocat runs socat as the classic ambassador image would have
// for a UDP port: a child per datagram received, sending it on and
// answering with what comes back.
func launchUDPSocat(_, dir string, listen, backend, _ int, _ bool) ([]*exec.Cmd, error) {
	cmd := exec.Command("socat", fmt.Sprintf("UDP4-RECVFROM:%d,fork", listen), fmt.Sprintf("UDP4-SENDTO:127.0.0.1:%d", backend))
	if err := startLogged(cmd, dir, "udp-socat"); err != nil {
		return nil, err
	}
	return []*exec.Cmd{cmd}, nil
}

// udpStreamModule is libnginx-mod-stream's module.
const udpStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// udpNginxBin is nginx's path: /usr/sbin, which a user's PATH may lack.
func udpNginxBin() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	return "/usr/sbin/nginx"
}

// udpNginxConfig is nginx's stream module forwarding UDP, in the
// foreground with its own pid file and error log. One worker: ambassadord
// serves a route from one event loop (nginx with several needs reuseport
// to keep a client's datagrams on one worker). With proxy_responses 1, the
// usual configuration for DNS, a session ends once its datagrams are
// answered; without, it lives for proxy_timeout after its last datagram.
const udpNginxConfig = `load_module %s;
daemon off;
worker_processes 1;
pid %s;
error_log %s warn;
worker_rlimit_nofile %d;
events {
	worker_connections %d;
}
stream {
	server {
		listen 127.0.0.1:%d udp;
		proxy_pass 127.0.0.1:%d;
		%s
		proxy_timeout %s;
	}
}
`

// udpNginxLauncher returns the launcher of nginx, with proxy_responses 1
// if responses; proxy_timeout is 30s, or udpIdleTimeout for the idle rows.
func udpNginxLauncher(responses bool) func(_, dir string, listen, backend, flows int, idle bool) ([]*exec.Cmd, error) {
	return func(_, dir string, listen, backend, flows int, idle bool) ([]*exec.Cmd, error) {
		ndir := filepath.Join(dir, fmt.Sprintf("nginx-%d", listen))
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			return nil, err
		}
		line, timeout := "", "30s"
		if responses {
			line = "proxy_responses 1;"
		}
		if idle {
			timeout = fmt.Sprintf("%ds", int(udpIdleTimeout.Seconds()))
		}
		// A session takes two connections: the client's and the upstream's.
		conns := max(2*flows+udpIdleSpareFDs, 4096)
		conf := fmt.Sprintf(udpNginxConfig, udpStreamModule, filepath.Join(ndir, "nginx.pid"), filepath.Join(ndir, "error.log"),
			conns+udpIdleSpareFDs, conns, listen, backend, line, timeout)
		file := filepath.Join(ndir, "nginx.conf")
		if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
			return nil, fmt.Errorf("write nginx config: %w", err)
		}
		cmd := exec.Command(udpNginxBin(), "-p", ndir, "-c", file, "-e", filepath.Join(ndir, "error.log"))
		if err := startLogged(cmd, dir, "udp-nginx"); err != nil {
			return nil, err
		}
		return []*exec.Cmd{cmd}, nil
	}
}

func launchUDPAmbassadord(bin, dir string, listen, backend, flows int, idle bool) ([]*exec.Cmd, error) {
	args := []string{"--docker=off", "--admin-address=", "--admin-socket=", "--listen-address=127.0.0.1",
		"--route", fmt.Sprintf("%d/udp:127.0.0.1:%d", listen, backend)}
	if idle {
		args = append(args, "--udp-idle-timeout", udpIdleTimeout.String(), "--udp-max-flows", strconv.Itoa(flows+1000))
	}
	cmd := exec.Command(bin, args...)
	if err := startLogged(cmd, dir, "udp-ambassadord"); err != nil {
		return nil, err
	}
	return []*exec.Cmd{cmd}, nil
}

// udpEcho is the UDP rows' backend, run as a process of its own (`bench
// udpecho PORT [TAG]`): it answers each datagram with TAG and the
// datagram, from two sockets bound to the port with SO_REUSEPORT (the
// kernel spreads the clients over them), a goroutine each, so that it is
// not what limits the proxies.
func udpEcho(args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return errors.New("usage: bench udpecho PORT [TAG]")
	}
	var tag []byte
	if len(args) == 2 {
		tag = []byte(args[1])
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	addr := "0.0.0.0:" + args[0]
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			return err
		}
		wg.Go(func() { errs <- serveEcho(pc.(*net.UDPConn), tag) })
	}
	wg.Wait()
	return <-errs
}

// serveEcho answers the datagrams of c with tag and the datagram until c
// fails.
func serveEcho(c *net.UDPConn, tag []byte) error {
	buf := make([]byte, 1<<16)
	copy(buf, tag)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf[len(tag):])
		if err != nil {
			return err
		}
		if _, err := c.WriteToUDPAddrPort(buf[:len(tag)+n], from); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
	}
}

// udpIdleResult is what `bench udpidle` measured, as JSON on its stdout.
type udpIdleResult struct {
	Held   int    `json:"held"`    // flows held
	PSSKiB int64  `json:"pss_kib"` // what the proxy grew by, holding them
	RSSKiB int64  `json:"rss_kib"`
	FDs    int    `json:"fds"`
	Err    string `json:"error,omitempty"` // why fewer were held than asked
	// Capped says why fewer were asked for than the bench wanted.
	Capped string `json:"capped,omitempty"`
}

// udpIdleSpareFDs is how many descriptors a process needs besides one per
// flow: nginx's own, the Go runtime's, the listeners.
const udpIdleSpareFDs = 1000

// Ports of the idle helper in its own network namespace: the echo and the
// proxy below the clients' ports, which are below the range left to the
// proxies' flows (udpIdlePortRange).
const (
	udpIdleEcho      = 1100
	udpIdleListen    = 1101
	udpIdleFirstPort = 2000 // clients bind 127.0.0.X:PORT, from here
	udpIdlePorts     = 5000 // ports per client address
	udpIdlePortRange = "10000 65535"
)

// udpIdle is `bench udpidle`: it holds idle flows through one proxy and
// prints what the proxy holds for them. Started in a network namespace of
// its own (CLONE_NEWNET), it brings its loopback up, widens the ephemeral
// port range there, and raises its descriptor limit, so that 50,000 flows
// fit; with -host, it runs in the machine's and takes what it is given.
func udpIdle(args []string) (err error) {
	fs := flag.NewFlagSet("udpidle", flag.ContinueOnError)
	ci := fs.Int("cand", udpAmbassadord, "the column")
	flows := fs.Int("flows", 2000, "flows to hold")
	bin := fs.String("bin", "", "the ambassadord binary")
	dir := fs.String("dir", "", "logs and configuration files")
	host := fs.Bool("host", false, "in the machine's network namespace, not a fresh one")
	base := fs.Int("base", 24100, "with -host, the base port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := udpCandidates("")[*ci]
	echoPort, listen := udpIdleEcho, udpIdleListen
	if *host {
		echoPort, listen = *base+portsPer*9, *base+portsPer*9+1 // clear of the other rows' ports
	} else {
		if err := udpIdleNamespace(); err != nil {
			return err
		}
	}
	// The proxy holds a descriptor per flow, and so does this process: a
	// hard limit below that, which takes CAP_SYS_RESOURCE to raise, caps
	// the flows.
	var capped string
	limit := uint64(*flows + udpIdleSpareFDs)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return err
		}
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return err
		}
		if n := int(rl.Max) - udpIdleSpareFDs; n < *flows {
			capped = fmt.Sprintf("%d flows, not %d: the hard descriptor limit is %d, and raising it to %d was refused (%v)", n, *flows, rl.Max, limit, err)
			*flows = n
		}
	}

	ec, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: echoPort})
	if err != nil {
		return err
	}
	ec.SetReadBuffer(4 << 20)
	go serveEcho(ec, nil)
	defer ec.Close()
	cmds, err := c.launch(*bin, *dir, listen, echoPort, *flows, true)
	if err != nil {
		return err
	}
	p := &proxy{cmds: cmds}
	defer p.stop()
	if err := waitUDPBound(context.Background(), listen); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	// One flow first, so that what the proxy allocates once is not
	// counted against the flows.
	raddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: listen}
	first, err := udpHold(raddr, nil)
	if err != nil {
		return fmt.Errorf("first flow: %w", err)
	}
	defer first.Close()
	before, err := measureFootprint(p.pids())
	if err != nil {
		return err
	}
	conns, holdErr := udpHoldMany(raddr, *flows, *host)
	defer closeConns(conns)
	after, err := measureFootprint(p.pids())
	if err != nil {
		return err
	}
	r := udpIdleResult{Held: len(conns), PSSKiB: after.pssKiB - before.pssKiB, RSSKiB: after.rssKiB - before.rssKiB, FDs: after.fds - before.fds, Capped: capped}
	if holdErr != nil {
		r.Err = holdErr.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// fdsFor reports whether this process's hard descriptor limit allows a
// descriptor for each of flows idle flows, and the spare.
func fdsFor(flows int) bool {
	var rl syscall.Rlimit
	return syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Max >= uint64(flows+udpIdleSpareFDs)
}

// udpIdleNamespace prepares the fresh network namespace the process runs
// in: its loopback up, and the ephemeral port range udpIdlePortRange. It
// refuses the machine's own namespace, whose port range is not the
// bench's to change: `bench udpidle` run by hand, without -host, would
// have widened it.
func udpIdleNamespace() error {
	if err := freshNetNamespace(); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte(udpIdlePortRange), 0o644); err != nil {
		return fmt.Errorf("widen the port range: %w", err)
	}
	return nil
}

// freshNetNamespace fails if the process's network namespace has an
// interface besides its loopback, as the machine's has and a namespace
// made by CLONE_NEWNET has not; the bench's VM (vm.go) has no network
// card either. (Comparing /proc/1/ns/net would not do: reading it is
// refused to root without CAP_SYS_PTRACE, as on this machine.)
func freshNetNamespace() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("not in a network namespace of its own (it has %s), whose settings the idle rows change: the bench starts udpidle with CLONE_NEWNET; by hand, pass -host", i.Name)
		}
	}
	return nil
}

// udpHoldMany opens n flows to raddr, udpIdleWorker at a time, each
// socket bound to a client address of its own (or, on the machine's
// loopback, to a port the kernel picks) and answered once. The first
// failure stops the opening; the sockets opened are returned with it.
func udpHoldMany(raddr *net.UDPAddr, n int, host bool) ([]*net.UDPConn, error) {
	var (
		mu    sync.Mutex
		conns []*net.UDPConn
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for range udpIdleWorker {
		wg.Go(func() {
			for i := range next {
				var laddr *net.UDPAddr
				if !host {
					laddr = &net.UDPAddr{IP: net.IPv4(127, 0, byte(i/udpIdlePorts/250), byte(2+i/udpIdlePorts%250)), Port: udpIdleFirstPort + i%udpIdlePorts}
				}
				c, err := udpHold(raddr, laddr)
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("held %d of %d, then: %w", len(conns), n, err)
				} else if err == nil {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return conns, first
}

// udpHold opens a socket from laddr (nil: the kernel's choice) to raddr
// and has one datagram answered through it.
func udpHold(raddr, laddr *net.UDPAddr) (*net.UDPConn, error) {
	c, err := net.DialUDP("udp4", laddr, raddr)
	if err != nil {
		return nil, err
	}
	msg := make([]byte, udpSize)
	for try := range 3 {
		if _, err = c.Write(msg); err != nil {
			break
		}
		c.SetReadDeadline(time.Now().Add(time.Duration(try+1) * 500 * time.Millisecond))
		if _, err = c.Read(msg); err == nil {
			return c, nil
		}
	}
	c.Close()
	return nil, fmt.Errorf("no answer from %s to %s: %w", c.LocalAddr(), raddr, err)
}

// udpNginxes are the nginx columns, which the goals are judged against.
var udpNginxes = []int{udpNginx, udpNginxKept}

// udpGoal judges the row key against issue 17's goals, given the medians
// of every row by column (NaN where not measured), against each nginx
// column, and the idle flows asked for; "" for a row without a goal.
func udpGoal(key string, m map[string][]float64, flows int) string {
	amb := m[key][udpAmbassadord]
	switch key {
	case "tput-rps", "lat-p50", "lat-p99", "lat-busy-p50", "lat-busy-p99":
	case "idle-flows":
		if math.IsNaN(amb) {
			return "not judged: no ambassadord figure"
		}
		return mark(amb >= float64(flows)) + " " + format(float64(flows), 0) + " held"
	case "idle-pss":
		if math.IsNaN(amb) {
			return "not judged: no ambassadord figure"
		}
		return atMost(udpAmbassadord, 2, " KiB")(m[key]) + " (plus its socket, in the kernel)"
	default:
		return ""
	}
	if math.IsNaN(amb) {
		return "not judged: no ambassadord figure"
	}
	var out []string
	for _, ci := range udpNginxes {
		what := udpCandidates("")[ci].name
		ref := m[key][ci]
		switch {
		case math.IsNaN(ref):
			out = append(out, "not judged against "+what+": no figure")
		case key == "tput-rps":
			loss := m["tput-loss"]
			out = append(out, mark(amb >= 1.5*ref && loss[udpAmbassadord] <= loss[ci])+" ≥1.5× "+what+", at its loss or lower")
		default:
			out = append(out, mark(amb <= ref)+" ≤ "+what)
		}
	}
	return strings.Join(out, "; ")
}

// The UDP rewire (issue 17): ambassadord on the host following the local
// engine, with a UDP route to svc (`--route P/udp:svc:9000 --claims
// label,routes`), in front of UDP servers in containers that answer with
// their name (this binary's udpecho, packed FROM scratch) and claim svc,
// under a load of fresh flows: a datagram every 2 ms, each from a socket
// and port of its own. On the host rather than in a container, so that no
// image of it need be built: the rewire is the same watcher, resolver and
// route either way. A claimer of svc
// with a higher priority starts, -rewires times, and is stopped and
// removed after it served. For each claim, the time from its start event
// to the first new flow the ambassador sent it (the first datagram sent
// after the event that the previous server did not answer), and to the
// first one it answered (its start-up included).

// udpRewirePort is the UDP servers' port, and the route's.
const udpRewirePort = 9000

// udpRewireRow is the row's label.
const udpRewireRow = "label claim → new flows on the new backend (ambassadord on the host following the engine), from its start event"

// udpRewire is what the rewires measured.
type udpRewire struct {
	n                         int
	medianMS, p99MS, maxMS    float64 // to the first new flow sent to the claimer
	answeredMedianMS, answP99 float64 // to the first datagram it answered
	sent, lost                int
	lostInStart, lostInStop   int // lost while a claimer started, or stopped
}

// udpRewireDockerfile packs this binary (%[1]s) as a UDP server answering
// with its name, the container's argument.
const udpRewireDockerfile = `FROM scratch
COPY rootfs/ /
EXPOSE 9000/udp
ENTRYPOINT ["%[1]s", "udpecho", "9000"]
`

// udpServerImage packs this binary, with the libraries ldd lists for it
// if it has any (`go run` links it with cgo), FROM scratch, as the rewire's
// UDP servers, and returns the tag.
func udpServerImage(ctx context.Context, eng *harness.Engine) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	files, err := harness.Rootfs(ctx, self)
	if err != nil {
		// A static binary: ldd has nothing to list.
		data, rerr := os.ReadFile(self)
		if rerr != nil {
			return "", rerr
		}
		files = []harness.File{{Name: "rootfs" + self, Mode: 0o755, Data: data}}
	}
	files = append(files, harness.File{Name: "Dockerfile", Mode: 0o644, Data: []byte(fmt.Sprintf(udpRewireDockerfile, self))})
	tag := eng.ImageTag("udpwho")
	return tag, eng.BuildImage(ctx, tag, files, nil)
}

// rewire measures the claims with the local engine, for the table.
func (u *udpBench) rewire(ctx context.Context, rewires int) (err error) {
	begin := time.Now()
	defer func() {
		fmt.Fprintf(os.Stderr, "bench: udp rewire done in %s\n", time.Since(begin).Round(100*time.Millisecond))
	}()
	eng, err := harness.Connect(ctx, harness.BenchLabel)
	if err != nil {
		return fmt.Errorf("no Docker engine: %w", err)
	}
	defer eng.Close()
	if !strings.HasPrefix(eng.Client.DaemonHost(), "unix://") {
		return fmt.Errorf("the engine is at %s, not on a unix socket: its containers' addresses may not be this host's to reach", eng.Client.DaemonHost())
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = errors.Join(err, eng.Cleanup(cctx))
	}()
	image, err := udpServerImage(ctx, eng)
	if err != nil {
		return err
	}
	n, err := eng.CreateNetwork(ctx, "udpnet", false)
	if err != nil {
		return err
	}
	svc := eng.Name("udp-svc")
	server := func(name, priority string) (*harness.Container, error) {
		return eng.Start(ctx, harness.Spec{Name: "udp-" + name, Image: image, Cmd: []string{name}, Networks: []string{n.Name},
			Labels: map[string]string{resolver.LabelTarget: svc, resolver.LabelPriority: priority}})
	}
	if _, err := server("a0", "0"); err != nil {
		return err
	}
	// The ambassador on the host, following the engine: a route to svc,
	// which only claims name, reached on the servers' network.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	amb := exec.Command(u.bin, "--docker", "on", "--docker-host", eng.Client.DaemonHost(), "--network", n.Name,
		"--route", fmt.Sprintf("%d/udp:%s:%d", port, svc, udpRewirePort), "--claims", "label,routes",
		"--listen-address", "127.0.0.1", "--admin-address=", "--admin-socket=")
	amb.Env = []string{} // no AMBASSADORD_* or link variable of the bench's
	if err := startLogged(amb, u.b.dir, "udp-rewire-ambassadord"); err != nil {
		return err
	}
	defer stop([]*exec.Cmd{amb})
	if err := waitUDPBound(ctx, port); err != nil {
		return fmt.Errorf("ambassadord: %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := udpWaitTag(ctx, addr, "a0"); err != nil {
		return err
	}
	evs := eng.Events(ctx)
	l := startUDPTagLoad(addr)
	defer l.stop()
	if _, err := l.wait(ctx, "a0", time.Now()); err != nil {
		return err
	}
	type claim struct {
		name                  string
		at, stopping, stopped time.Time
	}
	var claims []claim
	for i := range rewires {
		name := fmt.Sprintf("b%d", i)
		before := time.Now()
		c, err := server(name, "10")
		if err != nil {
			return err
		}
		at, err := evs.Wait(ctx, c.ID, "start", before)
		if err != nil {
			return err
		}
		if _, err := l.wait(ctx, name, at); err != nil {
			return err
		}
		stopping := time.Now()
		if err := eng.Stop(ctx, c.ID, 5*time.Second); err != nil {
			return err
		}
		if err := eng.Remove(ctx, c.ID); err != nil {
			return err
		}
		claims = append(claims, claim{name, at, stopping, time.Now()})
		if _, err := l.wait(ctx, "a0", time.Now()); err != nil {
			return err
		}
	}
	tries := l.stop()
	r := &udpRewire{sent: len(tries)}
	var routed, answered []time.Duration
	for _, c := range claims {
		for _, t := range tries {
			if !t.sent.Before(c.at) && t.tag != "a0" {
				routed = append(routed, t.sent.Sub(c.at))
				break
			}
		}
		for _, t := range tries {
			if !t.sent.Before(c.at) && t.tag == c.name {
				answered = append(answered, t.sent.Sub(c.at))
				break
			}
		}
	}
	for _, t := range tries {
		if t.tag != "" {
			continue
		}
		r.lost++
		why := ""
		for _, c := range claims {
			first, _ := firstTag(tries, c.name, c.at)
			switch {
			case !t.sent.Before(c.at) && t.sent.Before(first):
				r.lostInStart++
				why = "start"
			case !t.sent.Before(c.stopping) && !t.sent.After(c.stopped):
				r.lostInStop++
				why = "stop"
			}
		}
		if why == "" {
			// Say when, for a look at the ambassador's log.
			near := claims[0]
			for _, c := range claims {
				if c.at.Before(t.sent) {
					near = c
				}
			}
			fmt.Fprintf(os.Stderr, "bench: udp rewire: datagram sent at %s lost: %s after %s's start event, %s after its stop began\n",
				t.sent.Format("15:04:05.000"), t.sent.Sub(near.at).Round(100*time.Microsecond), near.name, t.sent.Sub(near.stopping).Round(100*time.Microsecond))
		}
	}
	slices.Sort(routed)
	slices.Sort(answered)
	if len(routed) > 0 {
		r.n = len(routed)
		r.medianMS, r.p99MS, r.maxMS = medianOf(routed), p99(routed), ms(routed[len(routed)-1])
	}
	if len(answered) > 0 {
		r.answeredMedianMS, r.answP99 = medianOf(answered), p99(answered)
	}
	u.rewired = r
	fmt.Fprintf(os.Stderr, "bench: udp rewire: %+v\n", *r)
	return nil
}

// firstTag returns when the first datagram sent at or after since that
// tag answered was sent.
func firstTag(tries []udpTry, tag string, since time.Time) (time.Time, bool) {
	for _, t := range tries {
		if !t.sent.Before(since) && t.tag == tag {
			return t.sent, true
		}
	}
	return time.Time{}, false
}

// cell renders the rewires for ambassadord's column.
func (r *udpRewire) cell() string {
	return fmt.Sprintf("median %.1f ms, p99 %.1f ms (max %.1f) over %d; answered by it: median %.1f ms, p99 %.1f ms; lost %d of %d datagrams: %d sent to a claimer before it listened, %d to one stopping before the ambassador heard, %d otherwise",
		r.medianMS, r.p99MS, r.maxMS, r.n, r.answeredMedianMS, r.answP99, r.lost, r.sent, r.lostInStart, r.lostInStop, r.lost-r.lostInStart-r.lostInStop)
}

// goal judges the rewires: new flows on the claimer within 50 ms (p99),
// and no datagram lost but while a claimer started or stopped.
func (r *udpRewire) goal() string {
	return fmt.Sprintf("%s p99 ≤ 50 ms; %s none lost otherwise", mark(r.n > 0 && r.p99MS <= 50), mark(r.lost == r.lostInStart+r.lostInStop))
}

// udpTry is one datagram of the rewire load: when it was sent, and the
// name of the server that answered it, "" if none did within
// udpRewireWait.
type udpTry struct {
	sent time.Time
	tag  string
}

// udpRewireWait bounds the wait for an answer in the rewire load.
const udpRewireWait = 300 * time.Millisecond

// udpTagLoad sends a datagram every 2 ms, each from a fresh socket, and
// records which server answered. Its goroutines are its own; stop ends
// them and waits.
type udpTagLoad struct {
	addr   string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	tries []udpTry // guarded by mu
}

func startUDPTagLoad(addr string) *udpTagLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &udpTagLoad{addr: addr, cancel: cancel}
	l.wg.Go(func() { l.run(ctx) })
	return l
}

// run starts a datagram from a fresh socket every 2 ms, at most 32 in
// flight, until ctx ends.
func (l *udpTagLoad) run(ctx context.Context) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			sent := time.Now()
			tag, _ := udpAskTag(l.addr)
			l.mu.Lock()
			l.tries = append(l.tries, udpTry{sent: sent, tag: tag})
			l.mu.Unlock()
		})
	}
}

// wait waits until a datagram sent at or after since was answered by tag,
// and returns when it was sent.
func (l *udpTagLoad) wait(ctx context.Context, tag string, since time.Time) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var at time.Time
	err := harness.Poll(ctx, func(context.Context) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		var ok bool
		if at, ok = firstTag(l.tries, tag, since); !ok {
			return fmt.Errorf("no datagram answered by %s yet", tag)
		}
		return nil
	})
	return at, err
}

// stop ends the load and returns its datagrams in the order they were
// sent.
func (l *udpTagLoad) stop() []udpTry {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.SortFunc(l.tries, func(a, b udpTry) int { return a.sent.Compare(b.sent) })
	return slices.Clone(l.tries)
}

// udpFreshPorts hands out the local ports of the rewire load's sockets,
// each once, below the ephemeral range (32768 on by default): a port the
// kernel picked could be one a closed socket had, a client address the
// ambassador still holds a flow for, on the server it was on.
var udpFreshPorts atomic.Int32

// udpAskTag sends a datagram to addr from a fresh socket and returns the
// name of the server that answered.
func udpAskTag(addr string) (string, error) {
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return "", err
	}
	var c *net.UDPConn
	for range 100 {
		port := 20000 + int(udpFreshPorts.Add(1))%12000
		if c, err = net.DialUDP("udp4", &net.UDPAddr{Port: port}, raddr); !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte{'?'}); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(udpRewireWait))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	tag, ok := strings.CutSuffix(string(buf[:n]), "?")
	if !ok {
		return "", fmt.Errorf("answer %q", buf[:n])
	}
	return tag, nil
}

// udpWaitTag waits until a datagram to addr is answered by tag.
func udpWaitTag(ctx context.Context, addr, tag string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return harness.Poll(ctx, func(context.Context) error {
		got, err := udpAskTag(addr)
		if err != nil {
			return err
		}
		if got != tag {
			return fmt.Errorf("answered by %q", got)
		}
		return nil
	})
}
