package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The PROXY protocol's cost (issue 19): the churn row's load,
// redis-benchmark -k 0 -c 50 (a new connection per GET), through one
// ambassadord on two routes that differ only in the header: one sends a
// PROXY v2 header to its backend (--send-proxy), the other none. A
// backend must take the header, and redis does not: both routes go to
// HAProxy in front of redis, on two frontends that differ only in
// accept-proxy, so that the backend side's work is the same but for
// parsing the header. The runs alternate between the routes (without,
// with, with, without in each round), and the table gives their medians
// and the ratio, judged against issue 19's goal: the header costs at most
// 5% of the connections per second.

// The PROXY part's ports, from the base port: after the TLS hop's block.
const (
	proxyPorts        = tlsPorts + portsPer*4 // the first port after the TLS hop's
	proxyPlainBackend = 0                     // HAProxy's frontend without accept-proxy
	proxyPPBackend    = 1                     // HAProxy's frontend with accept-proxy
	proxyPlainRoute   = 2                     // ambassadord's route without --send-proxy
	proxyPPRoute      = 3                     // ambassadord's route with it
	proxyAdmin        = 4                     // ambassadord's admin endpoint
)

// The PROXY table's columns.
const (
	proxyWithout = iota
	proxyWith
)

// proxyRows are the PROXY table's metrics.
var proxyRows = []row{
	{key: "churn-cps", label: "churn -k 0 -c 50: connections/s", higher: true},
	{key: "churn-p99", label: "churn: p99 ms", digits: 3},
	{key: "churn-cpu", label: "churn: ambassadord CPU-s per 100k connections", digits: 2},
}

// proxyBench is the PROXY part's state. Only the main goroutine touches it.
type proxyBench struct {
	b       *bench
	samples map[string][][]float64 // by metric key, then by column
	sent    float64                // headers ambassadord counted as sent
	conns   float64                // connections it counted on the route that sends them
	notes   []string
}

func (p *proxyBench) port(slot int) int { return p.b.base + proxyPorts + slot }

func (p *proxyBench) add(key string, col int, v float64) {
	s := p.samples[key]
	if s == nil {
		s = make([][]float64, 2)
		p.samples[key] = s
	}
	s[col] = append(s[col], v)
}

func (p *proxyBench) note(format string, args ...any) {
	p.notes = append(p.notes, fmt.Sprintf(format, args...))
	fmt.Fprintf(os.Stderr, "bench: proxy: "+format+"\n", args...)
}

// runProxy measures the PROXY header's cost over the configured rounds,
// redis running.
func (b *bench) runProxy(ctx context.Context, bin string) error {
	p := &proxyBench{b: b, samples: map[string][][]float64{}}
	b.proxy = p
	for slot := range portsPer {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.port(slot)))
		if err != nil {
			return fmt.Errorf("port %d is taken (choose another -base-port): %w", p.port(slot), err)
		}
		ln.Close()
	}
	redis := b.port(-1, portRedis)
	conf := haproxyConfig + fmt.Sprintf(`
frontend plain
	bind 127.0.0.1:%d
	default_backend redis
frontend pp
	bind 127.0.0.1:%d accept-proxy
	default_backend redis
backend redis
	server redis 127.0.0.1:%d
`, p.port(proxyPlainBackend), p.port(proxyPPBackend), redis)
	file := filepath.Join(b.dir, "haproxy-pp.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return err
	}
	hap := exec.Command("haproxy", "-db", "-f", file)
	if err := startLogged(hap, b.dir, "haproxy-pp"); err != nil {
		return err
	}
	defer stop([]*exec.Cmd{hap})
	plainRoute, ppRoute := p.port(proxyPlainRoute), p.port(proxyPPRoute)
	amb := exec.Command(bin, "--docker=off", "--admin-socket=", "--listen-address=127.0.0.1",
		"--admin-address", "127.0.0.1:"+strconv.Itoa(p.port(proxyAdmin)),
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", plainRoute, p.port(proxyPlainBackend)),
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", ppRoute, p.port(proxyPPBackend)),
		"--send-proxy", strconv.Itoa(ppRoute), "--send-proxy-version", "v2")
	if err := startLogged(amb, b.dir, "ambassadord-pp"); err != nil {
		return err
	}
	ambProc := &proxy{cmds: []*exec.Cmd{amb}}
	defer ambProc.stop()
	deadline := time.Now().Add(10 * time.Second)
	for _, port := range []int{p.port(proxyPlainBackend), p.port(proxyPPBackend), plainRoute, ppRoute, p.port(proxyAdmin)} {
		for !listening(port) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("port %d not listening after 10s (see %s)", port, b.dir)
			}
			time.Sleep(2 * time.Millisecond) // polling the socket table
		}
	}
	// A warm-up run through each, not measured.
	for _, port := range []int{plainRoute, ppRoute} {
		if _, err := runRedisBenchmark(ctx, b.cfg.runTimeout, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-c", "50",
			"-n", strconv.Itoa(b.cfg.churnConns/10), "-k", "0", "-t", "get"); err != nil {
			return fmt.Errorf("warm up: %w", err)
		}
	}
	for round := 1; round <= b.cfg.rounds; round++ {
		begin := time.Now()
		for _, col := range []int{proxyWithout, proxyWith, proxyWith, proxyWithout} {
			port := plainRoute
			if col == proxyWith {
				port = ppRoute
			}
			if err := p.churn(ctx, ambProc, col, port); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p.note("round %d: %v", round, err)
			}
		}
		fmt.Fprintf(os.Stderr, "bench: proxy round %d/%d done in %s\n", round, b.cfg.rounds, time.Since(begin).Round(100*time.Millisecond))
	}
	m, err := scrape(ctx, p.port(proxyAdmin))
	if err != nil {
		return fmt.Errorf("scrape ambassadord: %w", err)
	}
	p.sent = m[fmt.Sprintf(`ambassadord_proxy_headers_sent_total{route="%d",version="v2"}`, ppRoute)]
	p.conns = m[fmt.Sprintf(`ambassadord_connections_total{backend="127.0.0.1:%d",route="%d"}`, p.port(proxyPPBackend), ppRoute)]
	if p.sent != p.conns || p.sent == 0 {
		p.note("ambassadord counted %v headers sent, for %v connections on the route that sends them", p.sent, p.conns)
	}
	return nil
}

// churn makes one churn run through port, for column col.
func (p *proxyBench) churn(ctx context.Context, amb *proxy, col, port int) error {
	n := p.b.cfg.churnConns
	before, err := amb.cpu()
	if err != nil {
		return err
	}
	res, err := runRedisBenchmark(ctx, p.b.cfg.runTimeout, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-c", "50", "-n", strconv.Itoa(n), "-k", "0", "-t", "get")
	if err != nil {
		return err
	}
	after, err := amb.cpu()
	if err != nil {
		return err
	}
	p.add("churn-cps", col, res.rps)
	p.add("churn-p99", col, res.p99)
	p.add("churn-cpu", col, (after-before).Seconds()/(float64(n)/1e5))
	return nil
}

// print writes the PROXY table and its notes.
func (p *proxyBench) print(w io.Writer) {
	fmt.Fprintf(w, "\n### The PROXY protocol header (issue 19): the same route with and without it\n\n")
	fmt.Fprintln(w, "| metric | without | with --send-proxy (v2) | with ÷ without | issue 19 goal |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range proxyRows {
		s := p.samples[r.key]
		if s == nil {
			continue
		}
		without, with := median(s[proxyWithout]), median(s[proxyWith])
		goal := ""
		if r.key == "churn-cps" {
			switch {
			case math.IsNaN(without) || math.IsNaN(with):
				goal = "not judged: a column is missing"
			default:
				goal = mark(roundTo(with, r.digits) >= 0.95*roundTo(without, r.digits)) + " ≥0.95× without"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.label, format(without, r.digits), format(with, r.digits), ratio(with, without), goal)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Cells: median of %d runs each (%d connections a run), alternating without, with, with, without in every round; one ambassadord serves both routes (`--route A:127.0.0.1:H1 --route B:127.0.0.1:H2 --send-proxy B`). ", len(p.samples["churn-cps"][proxyWithout]), p.b.cfg.churnConns)
	fmt.Fprintln(w, "The backend is HAProxy (`mode tcp`, `nbthread 2`) in front of redis, on two frontends that differ only in `accept-proxy`: redis takes no header. CPU: ambassadord's utime+stime from /proc/PID/stat, 10 ms ticks.")
	fmt.Fprintf(w, "Headers ambassadord counted sent (ambassadord_proxy_headers_sent_total): %v, for %v connections it counted on the route that sends them (ambassadord_connections_total), warm-up included; HAProxy refuses a connection without one, which fails the run.\n", p.sent, p.conns)
	for _, n := range p.notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
}
