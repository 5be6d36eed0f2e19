package main

// The TLS hop (issue 16): a client-side ambassador and a server-side one,
// the hop between them over TLS on loopback, in front of the same backends
// as the rest of the bench (iperf3, redis-server, the holding backend).
// Three ways of making that hop, and direct as the reference:
//
//   - stunnel: two stunnel4 instances, the common do-it-yourself setup:
//     the client side with client = yes, presenting a client certificate
//     and verifying the server's chain and IP; the server side requiring
//     and verifying a client certificate. TLS 1.3 only, as ambassadord's
//     default, and OpenSSL's defaults otherwise (suites, groups, tickets).
//   - ambassadord (TLS): two ambassadord processes with mutual TLS, the
//     server side with --tls-listen all and --tls-client-ca, the client
//     side dialling tls:// with --tls-ca and a client certificate.
//   - ambassadord (plaintext): the same two processes without TLS, the
//     reference for what TLS costs (and for the memory goal).
//
// Every measurement starts a fresh pair; CPU and memory are both
// processes' summed. The certificates (ECDSA P-256: a CA, a server
// certificate for 127.0.0.1, a client certificate) are made for the run
// with crypto/x509 into the run's directory, PEM files both programs read.
// The pairs listen on a block of ports of their own above the main
// candidates' (tlsPorts), so the rows can run alone (-only tls).

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The TLS table's columns, in table order; interleaved in this order in
// every round.
const (
	tlsDirect = iota
	tlsStunnel
	tlsAmbassadord
	tlsPlain
)

// tlsPorts is the offset from the base port of the TLS pairs' block: past
// the main candidates' (a baseline included), portsPer ports per column.
const tlsPorts = portsPer * (baseline + 2)

// Slots in a column's block of portsPer ports: the client side listens at
// the backend's offset (0 to 2), the server side at serverSlot plus it.
const (
	adminClientSlot = 3
	serverSlot      = 5
	adminServerSlot = 8
	ktlsSlot        = 9 // direct's block: the kernel TLS probe's listener
)

// newConnWorkers is how many clients open new connections at once, as the
// churn row's redis-benchmark -c 50 does.
const newConnWorkers = 50

// hop is where one measurement's pair listens: clients dial client, the
// client side forwards to the server side at server, which forwards to the
// backend. For direct, client is the backend's port and there is no pair.
type hop struct {
	backend, server, client  int
	adminClient, adminServer int // ambassadord's admin endpoints (/metrics)
}

// tlsCandidate is one column of the TLS table.
type tlsCandidate struct {
	name string
	// launch starts the pair for h with certificates from pki, logging
	// into dir; nil for direct. verbose asks stunnel for its per-connection
	// log lines (the resumption probe); ambassadord ignores it.
	launch func(dir string, p *pki, h hop, verbose bool) ([]*exec.Cmd, error)
	admin  bool // an ambassadord pair: its admin endpoints serve /metrics
}

func tlsCandidates(bin string) []tlsCandidate {
	return []tlsCandidate{
		tlsDirect:      {name: "direct"},
		tlsStunnel:     {name: "stunnel pair", launch: launchStunnelPair},
		tlsAmbassadord: {name: "ambassadord pair (TLS)", admin: true, launch: ambassadordPair(bin, true)},
		tlsPlain:       {name: "ambassadord pair (plaintext)", admin: true, launch: ambassadordPair(bin, false)},
	}
}

// tlsBench is the TLS part's state. Only the main goroutine touches it.
type tlsBench struct {
	b       *bench
	cands   []tlsCandidate
	pki     *pki
	samples map[string][][]float64 // by metric key, then by column
	notes   []string
	// Found once, in the first round, for the notes.
	goSuite, stunnelSuite string
}

func newTLSBench(b *bench, bin string) *tlsBench {
	return &tlsBench{b: b, cands: tlsCandidates(bin), samples: map[string][][]float64{}}
}

func (t *tlsBench) add(key string, ci int, v float64) {
	s := t.samples[key]
	if s == nil {
		s = make([][]float64, len(t.cands))
		t.samples[key] = s
	}
	s[ci] = append(s[ci], v)
}

// note records a remark printed under the TLS table.
func (t *tlsBench) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
	fmt.Fprintf(os.Stderr, "bench: tls: "+format+"\n", args...)
}

// hop returns column ci's ports for the backend at offset.
func (t *tlsBench) hop(ci, offset int) hop {
	p := func(slot int) int { return t.b.base + tlsPorts + portsPer*ci + slot }
	backend := t.b.port(-1, offset)
	if t.cands[ci].launch == nil {
		return hop{backend: backend, client: backend}
	}
	return hop{backend: backend, client: p(offset), server: p(serverSlot + offset),
		adminClient: p(adminClientSlot), adminServer: p(adminServerSlot)}
}

// runTLS measures the TLS hop over the configured rounds, the backends
// running. A measurement that fails leaves a gap and a note.
func (b *bench) runTLS(ctx context.Context, bin string) error {
	if _, err := exec.LookPath("stunnel4"); err != nil {
		return fmt.Errorf("stunnel4 is missing (bench/setup.sh installs it): %w", err)
	}
	t := newTLSBench(b, bin)
	b.tls = t
	for p := b.base + tlsPorts; p < b.base+tlsPorts+portsPer*len(t.cands); p++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return fmt.Errorf("port %d is taken (choose another -base-port): %w", p, err)
		}
		ln.Close()
	}
	var err error
	if t.pki, err = newPKI(filepath.Join(b.dir, "pki")); err != nil {
		return fmt.Errorf("make certificates: %w", err)
	}
	t.note("%s", kernelTLS(b.base+tlsPorts+ktlsSlot))
	parts := []struct {
		name string
		run  func(context.Context, int) error
	}{
		{"bulk", t.bulk},
		{"rr", t.requestResponse},
		{"new connections", t.newConns},
		{"idle", t.idle},
	}
	for round := 1; round <= b.cfg.rounds; round++ {
		if round == 1 {
			t.probe(ctx)
		}
		for _, part := range parts {
			begin := time.Now()
			for ci := range t.cands {
				if err := part.run(ctx, ci); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					t.note("round %d, %s through %s: %v", round, part.name, t.cands[ci].name, err)
				}
			}
			fmt.Fprintf(os.Stderr, "bench: tls round %d/%d %s done in %s\n", round, b.cfg.rounds, part.name, time.Since(begin).Round(100*time.Millisecond))
		}
	}
	return nil
}

// start launches column ci's pair for the backend at offset and waits
// until both sides (and ambassadord's admin endpoints) listen.
func (t *tlsBench) start(ctx context.Context, ci, offset int, verbose bool) (*proxy, hop, error) {
	c, h := t.cands[ci], t.hop(ci, offset)
	if c.launch == nil {
		return &proxy{}, h, nil
	}
	cmds, err := c.launch(t.b.dir, t.pki, h, verbose)
	if err != nil {
		return nil, h, err
	}
	p := &proxy{cmds: cmds}
	ports := []int{h.server, h.client}
	if c.admin {
		ports = append(ports, h.adminServer, h.adminClient)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, port := range ports {
		for !listening(port) {
			if ctx.Err() != nil {
				p.stop()
				return nil, h, fmt.Errorf("port %d not listening after 10s: %s", port, t.logTail(ci))
			}
			time.Sleep(2 * time.Millisecond) // polling the socket table
		}
	}
	return p, h, nil
}

// logTail returns the last lines of column ci's logs, for an error.
func (t *tlsBench) logTail(ci int) string {
	var tails []string
	for _, side := range []string{"server", "client"} {
		name := pairLog(t.cands[ci].name, side)
		b, _ := os.ReadFile(filepath.Join(t.b.dir, name+".log"))
		tails = append(tails, name+": "+lastLines(string(b), 3))
	}
	return strings.Join(tails, "; ")
}

// pairLog names the log of one side of a pair.
func pairLog(cand, side string) string {
	switch {
	case strings.HasPrefix(cand, "stunnel"):
		return "stunnel-" + side
	case strings.Contains(cand, "TLS"):
		return "tls-" + side
	}
	return "plain-" + side
}

// bulk measures one iperf3 stream each way through the pair, and both
// sides' CPU per GB over both.
func (t *tlsBench) bulk(ctx context.Context, ci int) error {
	p, h, err := t.start(ctx, ci, portIperf, false)
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
		res, err := runIperf3(ctx, t.b.cfg, "127.0.0.1", h.client, dir.reverse)
		if err != nil {
			return err
		}
		after, err := p.cpu()
		if err != nil {
			return err
		}
		t.add(dir.key, ci, res.bitsPerSecond/1e9)
		bytes += res.bytes
		cpu += after - before
	}
	if t.cands[ci].launch != nil {
		t.add("bulk-cpu", ci, cpu.Seconds()/(bytes/1e9))
	}
	return nil
}

// requestResponse measures redis SET and GET with 50 clients through the
// pair, after a warm-up run (whose connections make the handshakes), and
// both sides' CPU per 100k requests.
func (t *tlsBench) requestResponse(ctx context.Context, ci int) error {
	p, h, err := t.start(ctx, ci, portRedis, false)
	if err != nil {
		return err
	}
	defer p.stop()
	port := strconv.Itoa(h.client)
	if _, err := runRedisBenchmark(ctx, t.b.cfg.runTimeout, "-h", "127.0.0.1", "-p", port, "-c", "50",
		"-n", strconv.Itoa(t.b.cfg.requests/10), "-t", "set"); err != nil {
		return fmt.Errorf("warm up: %w", err)
	}
	n := t.b.cfg.requests
	var cpu time.Duration
	for _, test := range []string{"set", "get"} {
		before, err := p.cpu()
		if err != nil {
			return err
		}
		res, err := runRedisBenchmark(ctx, t.b.cfg.runTimeout, "-h", "127.0.0.1", "-p", port, "-c", "50",
			"-n", strconv.Itoa(n), "-t", test)
		if err != nil {
			return err
		}
		after, err := p.cpu()
		if err != nil {
			return err
		}
		cpu += after - before
		t.add(test+"-rps", ci, res.rps)
		t.add(test+"-p99", ci, res.p99)
	}
	if t.cands[ci].launch != nil {
		t.add("rr-cpu", ci, cpu.Seconds()/(2*float64(n)/1e5))
	}
	return nil
}

// warmConns is how many connections, one at a time, precede a timed run
// of new connections: the client side has a session to resume by then.
const warmConns = 20

// newConns measures new connections per second through the pair: 50
// clients each opening a fresh TCP connection, sending one PING, reading
// PONG and closing, for cfg.newConnTime. The client side then resumes its
// sessions with the server side; for ambassadord the fraction it resumed
// is read from its metrics.
func (t *tlsBench) newConns(ctx context.Context, ci int) error {
	c := t.cands[ci]
	p, h, err := t.start(ctx, ci, portRedis, false)
	if err != nil {
		return err
	}
	defer p.stop()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.client))
	if res := pingLoop(ctx, addr, 1, warmConns, 0); res.err != nil {
		return fmt.Errorf("warm up: %w", res.err)
	}
	var before map[string]float64
	if c.admin {
		if before, err = scrape(ctx, h.adminClient); err != nil {
			return err
		}
	}
	cpuBefore, err := p.cpu()
	if err != nil {
		return err
	}
	res := pingLoop(ctx, addr, newConnWorkers, 0, t.b.cfg.newConnTime)
	cpuAfter, err := p.cpu()
	if err != nil {
		return err
	}
	t.add("newconn-failed", ci, float64(res.failed))
	if res.failed > 0 {
		t.note("new connections through %s: %d of %d failed, the first: %v", c.name, res.failed, res.ok+res.failed, res.err)
	}
	if res.ok == 0 {
		return fmt.Errorf("no connection succeeded: %w", res.err)
	}
	t.add("newconn-cps", ci, float64(res.ok)/res.elapsed.Seconds())
	t.add("newconn-p99", ci, ms(percentile(res.latencies, 0.99)))
	if c.launch != nil {
		t.add("newconn-cpu", ci, (cpuAfter-cpuBefore).Seconds()/(float64(res.ok+res.failed)/1e5))
	}
	if c.admin && ci == tlsAmbassadord {
		after, err := scrape(ctx, h.adminClient)
		if err != nil {
			return err
		}
		resumed, total := handshakes(after, before)
		if total == 0 {
			t.note("new connections through %s: its client side counted no TLS handshake (ambassadord_tls_handshakes_total{side=\"backend\"})", c.name)
		} else {
			t.add("newconn-resumed", ci, 100*resumed/total)
		}
	}
	return nil
}

// idle holds cfg.tlsIdleConns connections through the pair to the holding
// backend, each used once (a byte each way), and measures what both sides
// hold for them: memory, descriptors, and threads (stunnel) or goroutines
// (ambassadord, from go_goroutines).
func (t *tlsBench) idle(ctx context.Context, ci int) error {
	c := t.cands[ci]
	if c.launch == nil {
		return nil
	}
	p, h, err := t.start(ctx, ci, portHold, false)
	if err != nil {
		return err
	}
	defer p.stop()
	tasks := func() (float64, error) {
		if c.admin {
			return goroutines(ctx, h.adminClient, h.adminServer)
		}
		return threads(p.pids())
	}
	tasksBefore, err := tasks()
	if err != nil {
		return err
	}
	before, err := measureFootprint(p.pids())
	if err != nil {
		return err
	}
	conns, err := holdConns(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(h.client)), t.b.cfg.tlsIdleConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		if len(conns) == 0 {
			return err
		}
		t.note("idle connections through %s: %v", c.name, err)
	}
	after, err := measureFootprint(p.pids())
	if err != nil {
		return err
	}
	tasksAfter, err := tasks()
	if err != nil {
		return err
	}
	held := float64(len(conns))
	t.add("idle-conns", ci, held)
	t.add("idle-rss-kib", ci, float64(after.rssKiB-before.rssKiB)/held)
	t.add("idle-fds", ci, float64(after.fds-before.fds)/held)
	t.add("idle-tasks", ci, (tasksAfter-tasksBefore)/held)
	return nil
}

// probe finds, once, what the TLS columns negotiate, for the notes: the
// suite and key exchange of a Go client (as ambassadord's client side is)
// with ambassadord's server side, and of stunnel with stunnel, with the
// fraction of stunnel's client-side handshakes that resumed a session
// under the same load of new connections as the timed runs. stunnel logs
// those per connection only at debug = info, which costs it CPU, so they
// come from a pair of their own, not from the timed ones.
func (t *tlsBench) probe(ctx context.Context) {
	if err := t.probeGo(ctx); err != nil {
		t.note("ambassadord's negotiated suite not found: %v", err)
	}
	if err := t.probeStunnel(ctx); err != nil {
		t.note("stunnel's negotiated suite and resumption not found: %v", err)
	}
}

func (t *tlsBench) probeGo(ctx context.Context) error {
	p, h, err := t.start(ctx, tlsAmbassadord, portRedis, false)
	if err != nil {
		return err
	}
	defer p.stop()
	cfg, err := t.pki.clientConfig()
	if err != nil {
		return err
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(h.server)))
	if err != nil {
		return err
	}
	defer conn.Close()
	st := conn.(*tls.Conn).ConnectionState()
	t.goSuite = fmt.Sprintf("%s, %s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
	return nil
}

// stunnel's per-connection log lines at debug = info.
var (
	stunnelSuiteRE   = regexp.MustCompile(`(TLSv1\.[23]) ciphersuite: (\S+)`)
	stunnelKeyRE     = regexp.MustCompile(`Peer temporary key: ([^,]+)`)
	stunnelReusedRE  = regexp.MustCompile(`(?:TLS|SSL) connected: previous session reused`)
	stunnelNewSessRE = regexp.MustCompile(`(?:TLS|SSL) connected: new session negotiated`)
)

func (t *tlsBench) probeStunnel(ctx context.Context) error {
	logFile := filepath.Join(t.b.dir, pairLog("stunnel", "client")+".log")
	p, h, err := t.start(ctx, tlsStunnel, portRedis, true)
	if err != nil {
		return err
	}
	defer p.stop()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.client))
	if res := pingLoop(ctx, addr, 1, warmConns, 0); res.err != nil {
		return fmt.Errorf("warm up: %w", res.err)
	}
	fi, err := os.Stat(logFile)
	if err != nil {
		return err
	}
	res := pingLoop(ctx, addr, newConnWorkers, 0, min(t.b.cfg.newConnTime, time.Second))
	if res.ok == 0 {
		return fmt.Errorf("no connection succeeded: %w", res.err)
	}
	f, err := os.Open(logFile)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(fi.Size(), io.SeekStart); err != nil {
		return err
	}
	var reused, negotiated int
	suite, key := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case stunnelReusedRE.MatchString(line):
			reused++
		case stunnelNewSessRE.MatchString(line):
			negotiated++
		}
		if m := stunnelSuiteRE.FindStringSubmatch(line); m != nil {
			suite = m[1] + ", " + m[2]
		}
		if m := stunnelKeyRE.FindStringSubmatch(line); m != nil {
			key = m[1]
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if suite != "" {
		t.stunnelSuite = suite
		if key != "" {
			t.stunnelSuite += ", " + key
		}
	}
	if reused+negotiated == 0 {
		return fmt.Errorf("its client log at debug = info has no handshake line (%s)", logFile)
	}
	t.add("newconn-resumed", tlsStunnel, 100*float64(reused)/float64(reused+negotiated))
	return nil
}

// pingResult is what a pingLoop did.
type pingResult struct {
	ok, failed int
	latencies  []time.Duration // of the successful connections, sorted
	elapsed    time.Duration
	err        error // the first failure
}

// pingLoop runs workers clients against the redis at addr (through a
// pair), each opening a new connection, sending PING, reading +PONG and
// closing, again and again: n connections in all if n > 0, else for d.
func pingLoop(ctx context.Context, addr string, workers, n int, d time.Duration) pingResult {
	var (
		mu   sync.Mutex
		res  pingResult
		wg   sync.WaitGroup
		left = n
	)
	begin := time.Now()
	deadline := begin.Add(d)
	more := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return false
		}
		if n > 0 {
			left--
			return left >= 0
		}
		return time.Now().Before(deadline)
	}
	for range workers {
		wg.Go(func() {
			for more() {
				t := time.Now()
				err := ping(ctx, addr)
				took := time.Since(t)
				mu.Lock()
				if err != nil {
					res.failed++
					if res.err == nil {
						res.err = err
					}
				} else {
					res.ok++
					res.latencies = append(res.latencies, took)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(begin)
	slices.Sort(res.latencies)
	return res
}

// ping makes one connection to addr, one PING and its PONG, and closes.
func ping(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	var buf [7]byte
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		return fmt.Errorf("read PONG: %w", err)
	}
	if string(buf[:]) != "+PONG\r\n" {
		return fmt.Errorf("read %q, want +PONG", buf[:])
	}
	return nil
}

// percentile returns the p-quantile of sorted (nearest rank), 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// scrape reads the samples of the ambassadord_tls_handshakes_total and
// go_goroutines series from the admin endpoint on port.
func scrape(ctx context.Context, port int) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	u := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/metrics"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u.String(), res.Status)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	return parseMetrics(string(body)), nil
}

// parseMetrics returns the samples of the series the bench reads, keyed
// by their text up to the value: go_goroutines, and
// ambassadord_tls_handshakes_total{...}, ambassadord_proxy_headers_* and
// ambassadord_connections_total (proxyproto.go) with their labels as
// exposed.
func parseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "go_goroutines") && !strings.HasPrefix(line, "ambassadord_tls_handshakes_total") &&
			!strings.HasPrefix(line, "ambassadord_proxy_headers_") && !strings.HasPrefix(line, "ambassadord_connections_total") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

var (
	sideRE   = regexp.MustCompile(`side="([^"]*)"`)
	resultRE = regexp.MustCompile(`result="([^"]*)"`)
)

// handshakes returns the backend-side TLS handshakes that succeeded
// between two scrapes, and how many of them resumed a session.
func handshakes(after, before map[string]float64) (resumed, total float64) {
	for k, v := range after {
		if !strings.HasPrefix(k, "ambassadord_tls_handshakes_total") {
			continue
		}
		side, result := sideRE.FindStringSubmatch(k), resultRE.FindStringSubmatch(k)
		if side == nil || result == nil || side[1] != "backend" {
			continue
		}
		d := v - before[k]
		switch result[1] {
		case "resumed":
			resumed += d
			total += d
		case "ok":
			total += d
		}
	}
	return resumed, total
}

// goroutines returns the sum of go_goroutines at the admin endpoints.
func goroutines(ctx context.Context, ports ...int) (float64, error) {
	var n float64
	for _, port := range ports {
		m, err := scrape(ctx, port)
		if err != nil {
			return 0, err
		}
		v, ok := m["go_goroutines"]
		if !ok {
			return 0, fmt.Errorf("the metrics at port %d have no go_goroutines", port)
		}
		n += v
	}
	return n, nil
}

// threads returns the threads of the processes, from /proc/PID/status.
func threads(pids []int) (float64, error) {
	var n float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				k, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					return 0, fmt.Errorf("parse /proc/%d/status threads: %w", pid, err)
				}
				n += float64(k)
			}
		}
	}
	return n, nil
}

// ambassadordPair returns the launcher of two ambassadord processes, with
// mutual TLS between them or without.
func ambassadordPair(bin string, withTLS bool) func(dir string, p *pki, h hop, verbose bool) ([]*exec.Cmd, error) {
	name := "plain"
	if withTLS {
		name = "tls"
	}
	return func(dir string, p *pki, h hop, _ bool) ([]*exec.Cmd, error) {
		common := func(admin int) []string {
			return []string{"--docker=off", "--listen-address", "127.0.0.1",
				"--admin-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(admin)), "--admin-socket", ""}
		}
		server := append(common(h.adminServer), "--route", fmt.Sprintf("%d:127.0.0.1:%d", h.server, h.backend))
		client := append(common(h.adminClient), "--route", fmt.Sprintf("%d:127.0.0.1:%d", h.client, h.server))
		if withTLS {
			server = append(server, "--tls-listen", "all", "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca)
			client = append(common(h.adminClient), "--route", fmt.Sprintf("%d:tls://127.0.0.1:%d", h.client, h.server),
				"--tls-ca", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey)
		}
		return startPair(dir, name, exec.Command(bin, server...), exec.Command(bin, client...))
	}
}

// launchStunnelPair starts two stunnel4 instances, each from a
// configuration file of its own. TLS 1.3 only, as ambassadord's default;
// OpenSSL's defaults otherwise. verbose logs at info, which has a line per
// connection (its suite, whether it resumed).
func launchStunnelPair(dir string, p *pki, h hop, verbose bool) ([]*exec.Cmd, error) {
	debug := "warning" // stunnel's default, notice, logs each connection
	if verbose {
		debug = "info"
	}
	common := fmt.Sprintf("foreground = yes\npid =\ndebug = %s\n", debug)
	server := common + fmt.Sprintf(`
[server]
accept = 127.0.0.1:%d
connect = 127.0.0.1:%d
cert = %s
key = %s
CAfile = %s
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
`, h.server, h.backend, p.serverCert, p.serverKey, p.ca)
	client := common + fmt.Sprintf(`
[client]
client = yes
accept = 127.0.0.1:%d
connect = 127.0.0.1:%d
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkIP = 127.0.0.1
sslVersionMin = TLSv1.3
`, h.client, h.server, p.clientCert, p.clientKey, p.ca)
	var cmds []*exec.Cmd
	for _, c := range []struct{ side, conf string }{{"server", server}, {"client", client}} {
		file := filepath.Join(dir, "stunnel-"+c.side+".conf")
		if err := os.WriteFile(file, []byte(c.conf), 0o644); err != nil {
			return nil, fmt.Errorf("write stunnel config: %w", err)
		}
		cmds = append(cmds, exec.Command("stunnel4", file))
	}
	return startPair(dir, "stunnel", cmds[0], cmds[1])
}

// startPair starts a pair's server and client sides, logging to
// dir/NAME-server.log and dir/NAME-client.log.
func startPair(dir, name string, server, client *exec.Cmd) ([]*exec.Cmd, error) {
	if err := startLogged(server, dir, name+"-server"); err != nil {
		return nil, err
	}
	if err := startLogged(client, dir, name+"-client"); err != nil {
		stop([]*exec.Cmd{server})
		return nil, err
	}
	return []*exec.Cmd{server, client}, nil
}

// pki is the run's certificates and keys, PEM files in one directory.
type pki struct {
	ca                    string // the CA's certificate: both sides trust it
	serverCert, serverKey string // for 127.0.0.1
	clientCert, clientKey string // a client certificate
}

// newPKI makes a CA, and a server and a client certificate it signs, all
// ECDSA P-256 and valid for a day, into dir.
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		ca:         filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.pem"), serverKey: filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ambassadord bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.ca, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	for i, leaf := range []struct {
		cert, key string
		tmpl      x509.Certificate
	}{
		{p.serverCert, p.serverKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "127.0.0.1"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:    []string{"localhost"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}},
		{p.clientCert, p.clientKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "bench-client"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := leaf.tmpl
		tmpl.SerialNumber = big.NewInt(int64(i + 2))
		tmpl.NotBefore, tmpl.NotAfter = caTmpl.NotBefore, caTmpl.NotAfter
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := writePEM(leaf.cert, "CERTIFICATE", der, 0o644); err != nil {
			return nil, err
		}
		if err := writePEM(leaf.key, "PRIVATE KEY", keyDER, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func writePEM(file, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// clientConfig is a Go client's configuration with the client
// certificate, verifying a server at 127.0.0.1 against the CA: Go's
// defaults otherwise, as ambassadord's client side has.
func (p *pki) clientConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(p.ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in " + p.ca)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1"}, nil
}
