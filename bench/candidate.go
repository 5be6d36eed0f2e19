package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// route forwards a listening port on 127.0.0.1 to a backend port on
// 127.0.0.1.
type route struct{ listen, backend int }

// candidate is one column of the table: a way of reaching the backends.
type candidate struct {
	name string
	bin  string // the ambassadord binary, for the ambassadord columns
	// launch starts the proxy processes forwarding routes, logging into
	// dir; nil for direct, which has no proxy.
	launch func(dir string, routes []route) ([]*exec.Cmd, error)
	// idleCap, if not 0, caps the idle test's connections: socat forks a
	// process per connection, and opening 9,000 of them takes minutes.
	idleCap int
	// requestCap and churnCap, if not 0, cap the requests and the new
	// connections of one redis-benchmark run, for the same reason: at a
	// few thousand requests or connections a second (pipelined requests
	// as slow, at times), socat would take longer than a run may.
	requestCap, churnCap int
}

// The columns, in table order; interleaved in this order in every round.
// baseline is there only when the run has a baseline binary.
const (
	direct = iota
	classic
	haproxy
	ambassadord
	baseline
)

// candidates returns the columns: the peers and ambassadordBin, and
// baselineBin, a second ambassadord, unless it is empty.
func candidates(ambassadordBin, baselineBin string) []candidate {
	cs := []candidate{
		direct:      {name: "direct"},
		classic:     {name: "classic (socat)", launch: launchSocat, idleCap: 1000, requestCap: 100000, churnCap: 5000},
		haproxy:     {name: "HAProxy", launch: launchHAProxy},
		ambassadord: {name: "ambassadord", bin: ambassadordBin, launch: ambassadordLauncher(ambassadordBin, "ambassadord")},
	}
	if baselineBin != "" {
		cs = append(cs, candidate{name: "ambassadord (baseline)", bin: baselineBin, launch: ambassadordLauncher(baselineBin, "baseline")})
	}
	return cs
}

// ambassadordLauncher launches bin, logging to dir/log.log.
func ambassadordLauncher(bin, log string) func(dir string, routes []route) ([]*exec.Cmd, error) {
	return func(dir string, routes []route) ([]*exec.Cmd, error) {
		return launchAmbassadord(bin, log, dir, routes)
	}
}

// addr is where a client reaches r through c.
func (c candidate) addr(r route) (host string, port int) {
	if c.launch == nil {
		return "127.0.0.1", r.backend
	}
	return "127.0.0.1", r.listen
}

// launchSocat runs one socat per route, exactly as the classic ambassador
// image did (TCP4-LISTEN:PORT,fork,reuseaddr TCP4:HOST:PORT): a process
// forked per connection.
func launchSocat(dir string, routes []route) ([]*exec.Cmd, error) {
	var cmds []*exec.Cmd
	for _, r := range routes {
		cmd := exec.Command("socat",
			fmt.Sprintf("TCP4-LISTEN:%d,fork,reuseaddr", r.listen),
			fmt.Sprintf("TCP4:127.0.0.1:%d", r.backend))
		if err := startLogged(cmd, dir, "socat"); err != nil {
			stop(cmds)
			return nil, err
		}
		cmds = append(cmds, cmd)
	}
	return cmds, nil
}

// haproxyConfig is HAProxy in TCP mode with two threads (one per core of
// the reference machine). maxconn is raised for the idle test, within what
// a 20,000-descriptor limit allows (two per connection); the long client
// and server timeouts keep idle connections open.
const haproxyConfig = `global
	nbthread 2
	maxconn 9500

defaults
	mode tcp
	maxconn 9500
	timeout connect 5s
	timeout client 1h
	timeout server 1h
`

func launchHAProxy(dir string, routes []route) ([]*exec.Cmd, error) {
	var cfg strings.Builder
	cfg.WriteString(haproxyConfig)
	for i, r := range routes {
		fmt.Fprintf(&cfg, "\nlisten r%d\n\tbind 127.0.0.1:%d\n\tserver s%d 127.0.0.1:%d\n", i, r.listen, i, r.backend)
	}
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg.String()), 0o644); err != nil {
		return nil, fmt.Errorf("write haproxy config: %w", err)
	}
	cmd := exec.Command("haproxy", "-db", "-f", file)
	if err := startLogged(cmd, dir, "haproxy"); err != nil {
		return nil, err
	}
	return []*exec.Cmd{cmd}, nil
}

// launchAmbassadord runs bin with static routes only, logging to dir/log.log:
// no engine, no admin endpoint or socket, default log level and GOMAXPROCS.
func launchAmbassadord(bin, log, dir string, routes []route) ([]*exec.Cmd, error) {
	args := []string{"--docker=off", "--admin-address=", "--admin-socket=", "--listen-address=127.0.0.1"}
	for _, r := range routes {
		args = append(args, "--route", fmt.Sprintf("%d:127.0.0.1:%d", r.listen, r.backend))
	}
	cmd := exec.Command(bin, args...)
	if err := startLogged(cmd, dir, log); err != nil {
		return nil, err
	}
	return []*exec.Cmd{cmd}, nil
}

// startLogged starts cmd with its output appended to dir/name.log, in a
// process group of its own so that stop can signal its children too.
func startLogged(cmd *exec.Cmd, dir, name string) error {
	f, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", name, err)
	}
	defer f.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return nil
}

// proxy is a running candidate.
type proxy struct {
	cmds []*exec.Cmd
}

// start launches c for routes and waits until every route listens. For
// direct it returns an empty proxy.
func start(ctx context.Context, c candidate, dir string, routes []route) (*proxy, error) {
	if c.launch == nil {
		return &proxy{}, nil
	}
	cmds, err := c.launch(dir, routes)
	if err != nil {
		return nil, err
	}
	p := &proxy{cmds: cmds}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, r := range routes {
		for !listening(r.listen) {
			if ctx.Err() != nil {
				p.stop()
				return nil, fmt.Errorf("%s: port %d not listening after 10s (see %s)", c.name, r.listen, dir)
			}
			time.Sleep(2 * time.Millisecond) // polling the socket table
		}
	}
	return p, nil
}

// pids are the proxy's own processes (not the children they fork).
func (p *proxy) pids() []int {
	var pids []int
	for _, c := range p.cmds {
		pids = append(pids, c.Process.Pid)
	}
	return pids
}

// cpu is the CPU time the proxy and its children have used so far.
func (p *proxy) cpu() (time.Duration, error) {
	if len(p.cmds) == 0 {
		return 0, nil
	}
	return cpuTime(p.pids())
}

// stop ends the proxy and its children and waits for it.
func (p *proxy) stop() { stop(p.cmds) }

func stop(cmds []*exec.Cmd) {
	for _, c := range cmds {
		// The negative PID signals the process group: socat's children too.
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				fmt.Fprintf(os.Stderr, "bench: wait for %s: %v\n", c.Path, err)
			}
		}
	}
}

// portArg formats a port for a command line.
func portArg(p int) string { return strconv.Itoa(p) }
