package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// through starts candidate ci's proxy for one route, from its port at
// offset to the backend's, and returns it with the address clients dial.
func (b *bench) through(ctx context.Context, ci, offset int) (p *proxy, host string, port int, err error) {
	c := b.cands[ci]
	r := route{listen: b.port(ci, offset), backend: b.port(-1, offset)}
	if p, err = start(ctx, c, b.dir, []route{r}); err != nil {
		return nil, "", 0, err
	}
	host, port = c.addr(r)
	return p, host, port, nil
}

// bulk measures one iperf3 stream each way through c, and the proxy's CPU
// per GB over both.
func (b *bench) bulk(ctx context.Context, ci int) error {
	c := b.cands[ci]
	p, host, port, err := b.through(ctx, ci, portIperf)
	if err != nil {
		return err
	}
	defer p.stop()
	var cpu time.Duration
	var bytes float64
	for _, dir := range []struct {
		key     string
		reverse bool
	}{{"bulk-up", false}, {"bulk-down", true}} {
		before, err := p.cpu()
		if err != nil {
			return err
		}
		res, err := runIperf3(ctx, b.cfg, host, port, dir.reverse)
		if err != nil {
			return fmt.Errorf("through %s: %w", c.name, err)
		}
		after, err := p.cpu()
		if err != nil {
			return err
		}
		b.add(dir.key, ci, res.bitsPerSecond/1e9)
		bytes += res.bytes
		cpu += after - before
	}
	if c.launch != nil {
		b.add("bulk-cpu", ci, cpu.Seconds()/(bytes/1e9))
	}
	return nil
}

// iperfResult is what the receiving end of one iperf3 run counted.
type iperfResult struct{ bitsPerSecond, bytes float64 }

// runIperf3 runs one iperf3 stream for cfg.iperfSeconds to host:port,
// from the server to the client if reverse.
func runIperf3(ctx context.Context, cfg config, host string, port int, reverse bool) (iperfResult, error) {
	args := []string{"-c", host, "-p", strconv.Itoa(port), "-t", strconv.Itoa(cfg.iperfSeconds), "-J"}
	if reverse {
		args = append(args, "-R")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.runTimeout+time.Duration(cfg.iperfSeconds)*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "iperf3", args...).Output()
	if err != nil {
		return iperfResult{}, fmt.Errorf("iperf3: %w: %s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return iperfResult{}, fmt.Errorf("parse iperf3 output: %w", err)
	}
	if res.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", res.Error)
	}
	return iperfResult{res.End.SumReceived.BitsPerSecond, res.End.SumReceived.Bytes}, nil
}

// redisResult is one line of redis-benchmark --csv.
type redisResult struct {
	rps, p50, p99 float64
}

// runRedisBenchmark runs redis-benchmark with args plus --csv and returns
// its result line. redis-benchmark exits 1 at the first connection that
// fails (it cannot connect, or the server closed it), so a failed run
// means at least one failed connection.
func runRedisBenchmark(ctx context.Context, timeout time.Duration, args ...string) (redisResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-benchmark", append(args, "--csv")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("not done after %s", timeout)
		}
		return redisResult{}, fmt.Errorf("redis-benchmark %s: %w: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 1))
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(recs) < 2 {
		return redisResult{}, fmt.Errorf("parse redis-benchmark output %q: %v", out, err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	row := recs[len(recs)-1]
	var res redisResult
	for _, f := range []struct {
		name string
		v    *float64
	}{{"rps", &res.rps}, {"p50_latency_ms", &res.p50}, {"p99_latency_ms", &res.p99}} {
		i, ok := col[f.name]
		if !ok || i >= len(row) {
			return redisResult{}, fmt.Errorf("redis-benchmark output has no %s column: %q", f.name, out)
		}
		if *f.v, err = strconv.ParseFloat(row[i], 64); err != nil {
			return redisResult{}, fmt.Errorf("parse redis-benchmark %s: %w", f.name, err)
		}
	}
	return res, nil
}

// lastLines returns the last n lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// requestResponse measures redis GET and SET with 50 clients, plain and
// pipelined by 16, and the proxy's CPU per 100k requests for each kind.
func (b *bench) requestResponse(ctx context.Context, ci int) error {
	c := b.cands[ci]
	p, host, port, err := b.through(ctx, ci, portRedis)
	if err != nil {
		return err
	}
	defer p.stop()
	// A warm-up run first, not measured: the first 50 connections and
	// requests through a proxy just started measure its start-up (a row
	// of its own), not its request path, and they fell in SET's p99.
	if _, err := runRedisBenchmark(ctx, b.cfg.runTimeout, "-h", host, "-p", strconv.Itoa(port), "-c", "50",
		"-n", strconv.Itoa(b.cfg.requests/10), "-t", "set"); err != nil {
		return fmt.Errorf("warm up through %s: %w", c.name, err)
	}
	for _, pipeline := range []int{1, 16} {
		prefix, n := "", b.cfg.requests
		if pipeline > 1 {
			prefix, n = "p", b.cfg.pipelinedRequests
		}
		n = capped(n, c.requestCap)
		var cpu time.Duration
		for _, test := range []string{"set", "get"} { // SET first: GET reads its key
			before, err := p.cpu()
			if err != nil {
				return err
			}
			res, err := runRedisBenchmark(ctx, b.cfg.runTimeout, "-h", host, "-p", strconv.Itoa(port), "-c", "50",
				"-n", strconv.Itoa(n), "-P", strconv.Itoa(pipeline), "-t", test)
			if err != nil {
				return fmt.Errorf("through %s: %w", c.name, err)
			}
			after, err := p.cpu()
			if err != nil {
				return err
			}
			cpu += after - before
			b.add(prefix+test+"-rps", ci, res.rps)
			b.add(prefix+test+"-p50", ci, res.p50)
			b.add(prefix+test+"-p99", ci, res.p99)
		}
		if c.launch != nil {
			b.add(prefix+"rr-cpu", ci, cpu.Seconds()/(2*float64(n)/1e5))
		}
	}
	return nil
}

// churn measures a new connection per request: redis-benchmark -k 0 with
// 50 clients.
func (b *bench) churn(ctx context.Context, ci int) error {
	c := b.cands[ci]
	p, host, port, err := b.through(ctx, ci, portRedis)
	if err != nil {
		return err
	}
	defer p.stop()
	before, err := p.cpu()
	if err != nil {
		return err
	}
	n := capped(b.cfg.churnConns, c.churnCap)
	res, err := runRedisBenchmark(ctx, b.cfg.runTimeout, "-h", host, "-p", strconv.Itoa(port), "-c", "50", "-n", strconv.Itoa(n), "-k", "0", "-t", "get")
	b.churnRuns[ci]++
	if err != nil {
		// redis-benchmark stops at the first failed connection: count the
		// run as one failure, say why, and go on with the other runs.
		b.failures[ci]++
		b.note("churn through %s: %v", c.name, err)
		return nil
	}
	after, err := p.cpu()
	if err != nil {
		return err
	}
	b.add("churn-cps", ci, res.rps)
	b.add("churn-p99", ci, res.p99)
	if c.launch != nil {
		b.add("churn-cpu", ci, (after-before).Seconds()/(float64(n)/1e5))
	}
	return nil
}

// idle holds b.cfg.idleConns connections through c to the holding backend,
// each used once (a byte each way, so the proxy has connected to the
// backend and moved data), and measures what the proxy holds for them.
func (b *bench) idle(ctx context.Context, ci int) error {
	c := b.cands[ci]
	if c.launch == nil {
		return nil // nothing between client and backend to measure
	}
	p, host, port, err := b.through(ctx, ci, portHold)
	if err != nil {
		return err
	}
	defer p.stop()
	before, err := measureFootprint(p.pids())
	if err != nil {
		return err
	}
	n := capped(b.cfg.idleConns, c.idleCap)
	conns, err := holdConns(ctx, net.JoinHostPort(host, strconv.Itoa(port)), n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		if len(conns) == 0 {
			return fmt.Errorf("idle connections through %s: %w", c.name, err)
		}
		// Measure what it could hold, and say that it could not hold all.
		b.note("idle connections through %s: %v", c.name, err)
	}
	after, err := measureFootprint(p.pids())
	if err != nil {
		return err
	}
	held := float64(len(conns))
	b.add("idle-kib", ci, float64(after.pssKiB-before.pssKiB)/held)
	b.add("idle-rss-kib", ci, float64(after.rssKiB-before.rssKiB)/held)
	b.add("idle-fds", ci, float64(after.fds-before.fds)/held)
	b.add("idle-conns", ci, held)
	return nil
}

// holdConns opens n connections to addr, each sending one byte and reading
// the holding backend's echo of it, a few at a time: socat's listen
// backlog is 5, and what is measured here is the cost of holding, not of
// opening. It returns the
// connections it opened even on error, for the caller to close.
func holdConns(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	const parallel = 4
	var (
		mu    sync.Mutex
		conns []net.Conn
		errs  []error
		wg    sync.WaitGroup
	)
	// The first failure stops the opening: a proxy out of descriptors
	// (ambassadord holds 6 per connection) would make every later
	// connection wait for its timeout.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan struct{})
	for range parallel {
		wg.Go(func() {
			for range next {
				c, err := holdOne(ctx, addr)
				mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						errs = append(errs, err)
					}
					cancel()
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		if ctx.Err() != nil {
			break
		}
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return conns, fmt.Errorf("held %d of %d, then: %w", len(conns), n, errs[0])
	}
	return conns, nil
}

func holdOne(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	var buf [1]byte
	if _, err := c.Write([]byte{'x'}); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Read(buf[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("read echo: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// startupRoutes is how many routes the start-up test configures.
const startupRoutes = 3

// startup measures the time from launching c with three routes to every
// route accepting a connection (polled by connecting, every 0.5 ms).
func (b *bench) startup(ctx context.Context, ci int) error {
	c := b.cands[ci]
	if c.launch == nil {
		return nil
	}
	var routes []route
	for i := range startupRoutes {
		routes = append(routes, route{listen: b.port(ci, portStartup+i), backend: b.port(-1, portHold)})
	}
	for range b.cfg.startups {
		begin := time.Now()
		cmds, err := c.launch(b.dir, routes)
		if err != nil {
			return err
		}
		p := &proxy{cmds: cmds}
		err = waitAccepting(ctx, routes)
		took := time.Since(begin)
		p.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		b.add("startup-ms", ci, float64(took)/float64(time.Millisecond))
	}
	return nil
}

// waitAccepting polls each route's port by connecting until all accept.
func waitAccepting(ctx context.Context, routes []route) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, r := range routes {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(r.listen))
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("port %d: %w", r.listen, errors.Join(err, ctx.Err()))
			}
			time.Sleep(500 * time.Microsecond) // polling by connecting, as a client would
		}
	}
	return nil
}

// capped returns n, or limit if limit is set (not 0) and smaller.
func capped(n, limit int) int {
	if limit > 0 {
		return min(n, limit)
	}
	return n
}
