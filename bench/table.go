package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// row is one metric of the table.
type row struct {
	key, label string
	digits     int
	higher     bool // higher is better; only used to word the goal
	// goal says whether ambassadord meets issue 5's goal, given the
	// medians by candidate (NaN where not measured); empty if no goal.
	goal func(m []float64) string
	sum  bool // the cell is the sum over rounds, not the median
}

// rows are the table's metrics in order. Keys are those measure.go adds.
var rows = []row{
	{key: "bulk-up", label: "bulk →: iperf3, 1 stream, Gbit/s", digits: 2, higher: true, goal: bulkGoal},
	{key: "bulk-down", label: "bulk ←: iperf3 -R, Gbit/s", digits: 2, higher: true, goal: bulkGoal},
	{key: "bulk-cpu", label: "bulk: proxy CPU-s per GB", digits: 3, goal: atMost(ambassadord, 0.5, "")},
	{key: "set-rps", label: "SET -c 50: req/s", higher: true, goal: vsHAProxy(1.0, true)},
	{key: "set-p50", label: "SET -c 50: p50 ms", digits: 3},
	{key: "set-p99", label: "SET -c 50: p99 ms", digits: 3, goal: vsHAProxy(1.2, false)},
	{key: "get-rps", label: "GET -c 50: req/s", higher: true, goal: vsHAProxy(1.0, true)},
	{key: "get-p50", label: "GET -c 50: p50 ms", digits: 3},
	{key: "get-p99", label: "GET -c 50: p99 ms", digits: 3, goal: vsHAProxy(1.2, false)},
	{key: "rr-cpu", label: "-c 50: proxy CPU-s per 100k req", digits: 2},
	{key: "pset-rps", label: "SET -c 50 -P 16: req/s", higher: true, goal: vsHAProxy(1.0, true)},
	{key: "pset-p50", label: "SET -c 50 -P 16: p50 ms", digits: 3},
	{key: "pset-p99", label: "SET -c 50 -P 16: p99 ms", digits: 3, goal: vsHAProxy(1.2, false)},
	{key: "pget-rps", label: "GET -c 50 -P 16: req/s", higher: true, goal: vsHAProxy(1.0, true)},
	{key: "pget-p50", label: "GET -c 50 -P 16: p50 ms", digits: 3},
	{key: "pget-p99", label: "GET -c 50 -P 16: p99 ms", digits: 3, goal: vsHAProxy(1.2, false)},
	{key: "prr-cpu", label: "-c 50 -P 16: proxy CPU-s per 100k req", digits: 2},
	{key: "churn-cps", label: "churn -k 0 -c 50: connections/s", higher: true, goal: vsHAProxy(0.9, true)},
	{key: "churn-p99", label: "churn: p99 ms", digits: 3},
	{key: "churn-cpu", label: "churn: proxy CPU-s per 100k connections", digits: 2},
	{key: "idle-conns", label: "idle: connections held through the proxy"},
	{key: "idle-kib", label: "idle: proxy KiB per connection (PSS)", digits: 1, goal: atMost(ambassadord, 10, "")},
	{key: "idle-rss-kib", label: "idle: proxy KiB per connection (VmRSS)", digits: 1},
	{key: "idle-fds", label: "idle: proxy fds per connection", digits: 2, goal: atMost(ambassadord, 2, "")},
	{key: "startup-ms", label: "start-up to accepting on 3 routes, ms", digits: 1, goal: atMost(ambassadord, 100, "")},
}

// tlsRows are the TLS table's metrics in order; keys are those tls.go
// adds. The goals are issue 16's, ambassadord's TLS pair against stunnel's
// (or, for memory, against its own plaintext pair).
var tlsRows = []row{
	{key: "bulk-up", label: "bulk →: iperf3, 1 stream, Gbit/s", digits: 2, higher: true, goal: vsStunnel(1.5, true)},
	{key: "bulk-down", label: "bulk ←: iperf3 -R, Gbit/s", digits: 2, higher: true, goal: vsStunnel(1.5, true)},
	{key: "bulk-cpu", label: "bulk: both sides' CPU-s per GB", digits: 3, goal: vsStunnel(0.7, false)},
	{key: "set-rps", label: "SET -c 50: req/s", higher: true, goal: vsStunnel(1.2, true)},
	{key: "set-p99", label: "SET -c 50: p99 ms", digits: 3},
	{key: "get-rps", label: "GET -c 50: req/s", higher: true, goal: vsStunnel(1.2, true)},
	{key: "get-p99", label: "GET -c 50: p99 ms", digits: 3},
	{key: "rr-cpu", label: "-c 50: both sides' CPU-s per 100k req", digits: 2},
	{key: "newconn-cps", label: "new connections -c 50, a PING each: connections/s", higher: true, goal: vsStunnel(1.0, true)},
	{key: "newconn-p99", label: "new connections: connect, PING, PONG p99 ms", digits: 3},
	{key: "newconn-resumed", label: "new connections: client side's handshakes that resumed, %", digits: 1},
	{key: "newconn-cpu", label: "new connections: both sides' CPU-s per 100k connections", digits: 2},
	{key: "newconn-failed", label: "new connections: failed (sum over rounds)", sum: true},
	{key: "idle-conns", label: "idle: connections held through the pair"},
	{key: "idle-rss-kib", label: "idle: both sides' KiB per connection (VmRSS)", digits: 1, goal: tlsVsPlain(2)},
	{key: "idle-fds", label: "idle: both sides' fds per connection", digits: 2},
	{key: "idle-tasks", label: "idle: both sides' threads (stunnel) or goroutines (ambassadord) per connection", digits: 2},
}

// udpRows are the UDP table's metrics in order; keys are those udp.go
// adds, and udpGoal judges them against issue 17's goals.
var udpRows = []row{
	{key: "tput-rps", label: fmt.Sprintf("%d B echo, %d flows × %d in flight: requests/s (a datagram each way)", udpSize, udpFlows, udpWindow), higher: true},
	{key: "tput-loss", label: "echo: datagrams lost, %", digits: 2},
	{key: "tput-cpu", label: "echo: proxy CPU-s per million datagrams", digits: 2},
	{key: "lat-p50", label: fmt.Sprintf("%s requests/s (%d flows): round trip p50 ms", format(float64(udpRateFlows)*float64(time.Second/udpRateEvery), 0), udpRateFlows), digits: 3},
	{key: "lat-p99", label: "paced: round trip p99 ms", digits: 3},
	{key: "lat-loss", label: "paced: datagrams lost, %", digits: 2},
	{key: "lat-busy-p50", label: "paced, CPUs kept out of idle (a SCHED_IDLE spinner per CPU): round trip p50 ms", digits: 3},
	{key: "lat-busy-p99", label: "paced, CPUs kept out of idle: round trip p99 ms", digits: 3},
	{key: "lat-busy-loss", label: "paced, CPUs kept out of idle: datagrams lost, %", digits: 2},
	{key: "idle-flows", label: "idle: flows held through the proxy"},
	{key: "idle-pss", label: "idle: proxy KiB per flow (PSS)", digits: 2},
	{key: "idle-rss", label: "idle: proxy KiB per flow (VmRSS)", digits: 2},
	{key: "idle-fds", label: "idle: proxy fds per flow", digits: 2},
}

// vsStunnel judges ambassadord's TLS pair against the stunnel pair.
func vsStunnel(factor float64, higher bool) func([]float64) string {
	return func(m []float64) string {
		if math.IsNaN(m[tlsStunnel]) {
			return "not judged: no stunnel figure"
		}
		if higher {
			return mark(m[tlsAmbassadord] >= factor*m[tlsStunnel]) + fmt.Sprintf(" ≥%.1f× stunnel", factor)
		}
		return mark(m[tlsAmbassadord] <= factor*m[tlsStunnel]) + fmt.Sprintf(" ≤%.1f× stunnel", factor)
	}
}

// tlsVsPlain judges ambassadord's TLS pair against its plaintext pair.
func tlsVsPlain(factor float64) func([]float64) string {
	return func(m []float64) string {
		if math.IsNaN(m[tlsPlain]) {
			return "not judged: no plaintext figure"
		}
		return mark(m[tlsAmbassadord] <= factor*m[tlsPlain]) + fmt.Sprintf(" ≤%g× plaintext", factor)
	}
}

func bulkGoal(m []float64) string {
	ok := m[ambassadord] >= 1.3*m[haproxy] && m[ambassadord] >= 0.65*m[direct]
	return mark(ok) + " ≥1.3× HAProxy, ≥0.65× direct"
}

func vsHAProxy(factor float64, higher bool) func([]float64) string {
	return func(m []float64) string {
		if higher {
			return mark(m[ambassadord] >= factor*m[haproxy]) + fmt.Sprintf(" ≥%.1f× HAProxy", factor)
		}
		return mark(m[ambassadord] <= factor*m[haproxy]) + fmt.Sprintf(" ≤%.1f× HAProxy", factor)
	}
}

func atMost(ci int, limit float64, unit string) func([]float64) string {
	return func(m []float64) string {
		return mark(m[ci] <= limit) + fmt.Sprintf(" ≤%g%s", limit, unit)
	}
}

func mark(ok bool) string {
	if ok {
		return "met:"
	}
	return "**not met**:"
}

// roundTo rounds x to digits decimals, as format prints it.
func roundTo(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// median returns the median of xs, NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// format renders v with the given digits, or with none and thousands
// separators when digits is 0.
func format(v float64, digits int) string {
	if math.IsNaN(v) {
		return "—"
	}
	if digits > 0 {
		return fmt.Sprintf("%.*f", digits, v)
	}
	s := fmt.Sprintf("%.0f", v)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func ratio(v, ref float64) string {
	if math.IsNaN(v) || math.IsNaN(ref) || ref == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", v/ref)
}

// print writes the table, its notes and how it was measured.
func (b *bench) print(w io.Writer, begin time.Time) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "\n### ambassadord side by side, %s\n\n", begin.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "Machine: %s, %d CPUs (nproc), kernel %s, %s. Run: %s, %d round(s), medians; took %s.\n\n",
		host, runtime.NumCPU(), kernel(), cpuModel(), b.mode(), b.cfg.rounds, time.Since(begin).Round(time.Second))
	if len(b.samples) > 0 || b.rewire != nil {
		b.table(w)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Cells: median over rounds (ratio to direct). CPU: utime+stime of the proxy and its (reaped) children from /proc/PID/stat, 10 ms ticks.")
		fmt.Fprintln(w, "Idle: memory and descriptors the proxy holds per idle connection, after one byte each way; kernel socket and pipe buffers are not in PSS/RSS.")
		fmt.Fprintln(w, "classic = `socat TCP4-LISTEN:PORT,fork,reuseaddr TCP4:127.0.0.1:PORT`; HAProxy = `mode tcp`, `nbthread 2`; ambassadord = bin/ambassadord --docker=off --route ..., default GOMAXPROCS.")
		if b.hasBaseline() {
			fmt.Fprintf(w, "ambassadord (baseline) = %s, run as ambassadord is; ambassadord ÷ baseline is the ratio of their medians, above 1 where ambassadord's figure is the higher, better or not (see each row).\n", b.baseline)
		}
	}
	for _, n := range b.notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
	if b.tls != nil {
		b.tls.print(w)
	}
	if b.udp != nil {
		b.udp.print(w)
	}
	if b.proxy != nil {
		b.proxy.print(w)
	}
	if b.health != nil {
		b.health.print(w)
	}
}

// print writes the UDP table and its notes.
func (u *udpBench) print(w io.Writer) {
	fmt.Fprintf(w, "\n### UDP forwarding (issue 17): small datagrams on loopback to a Go echo\n\n")
	u.table(w)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Cells: median over rounds (ratio to direct). CPU: utime+stime of the proxy and its (reaped) children from /proc/PID/stat, 10 ms ticks, per million datagrams forwarded either way.")
	fmt.Fprintf(w, "Echo: %d flows (connected sockets) of a Go client, each sending a datagram for every answer so as to keep %d in flight (%d in all), a window unanswered for %s taken as lost and sent anew; requests/s counts the answers; lost = not answered %s after the load. Paced: each flow sends one datagram every %s and waits for its answer, so a round trip is one datagram each way, without a queue. CPUs kept out of idle: the same, with a thread per CPU spinning at SCHED_IDLE (which any other task preempts at once), as idle=poll would: a round trip through a proxy wakes four tasks, and a CPU woken from idle adds its own delay to each (on a VM, the hypervisor's), alike for every proxy.\n",
		udpFlows, udpWindow, udpFlows*udpWindow, udpLossWait, udpDrain, udpRateEvery)
	fmt.Fprintln(w, "The backend: a Go echo (`bench udpecho`), two sockets on one port with SO_REUSEPORT, a goroutine each.")
	fmt.Fprintln(w, "classic = `socat UDP4-RECVFROM:P,fork UDP4-SENDTO:127.0.0.1:B` (a process per datagram), at most 8 flows in the echo load; nginx = nginx-light with libnginx-mod-stream, `worker_processes 1`, `listen 127.0.0.1:P udp; proxy_pass 127.0.0.1:B; proxy_timeout 30s;` with `proxy_responses 1;` (a session ends once answered, the usual DNS configuration) or without (a session lives for proxy_timeout, as a flow of ambassadord's), a foreground process with its own prefix, pid file and error log; ambassadord = `--route P/udp:127.0.0.1:B`, one event loop for the route.")
	fmt.Fprintln(w, "The machine's CPUs are shared by the client, the echo and the proxy, so requests/s is the three's together; CPU per million datagrams is the proxy's own cost.")
	if len(u.cands) > udpBaseline {
		fmt.Fprintf(w, "ambassadord (baseline) = %s, run as ambassadord is, without the idle rows; ambassadord ÷ baseline is the ratio of their medians.\n", u.b.baseline)
	}
	where := "in a network namespace of its own (the ephemeral port range widened there to " + udpIdlePortRange + ", clients bound outside it, the descriptor limit raised where allowed), the machine's settings untouched"
	if !u.netns {
		where = "on the machine's loopback"
	}
	fmt.Fprintf(w, "Idle: flows each answered once, then held, %s, with an idle timeout of %s; memory and descriptors the proxy grew by, per flow, after a first flow; kernel socket buffers are not in PSS/RSS.\n", where, udpIdleTimeout)
	for _, n := range u.notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
}

// table writes the UDP markdown table, a row per metric measured.
func (u *udpBench) table(w io.Writer) {
	cols := []string{"metric"}
	for _, c := range u.cands {
		cols = append(cols, c.name)
	}
	for _, ci := range udpNginxes {
		cols = append(cols, "ambassadord ÷ "+u.cands[ci].name)
	}
	if len(u.cands) > udpBaseline {
		cols = append(cols, "ambassadord ÷ baseline")
	}
	cols = append(cols, "issue 17 goal")
	fmt.Fprintln(w, "| "+strings.Join(cols, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(cols)))
	// The goals are judged on the figures as printed.
	shown := map[string][]float64{}
	for _, r := range udpRows {
		m := make([]float64, len(u.cands))
		for ci := range m {
			m[ci] = math.NaN()
			if s := u.samples[r.key]; s != nil {
				m[ci] = roundTo(median(s[ci]), r.digits)
			}
		}
		shown[r.key] = m
	}
	for _, r := range udpRows {
		s := u.samples[r.key]
		if s == nil {
			continue
		}
		m := make([]float64, len(u.cands))
		for ci := range m {
			m[ci] = median(s[ci])
		}
		cells := []string{r.label}
		for ci := range m {
			cell := format(m[ci], r.digits)
			if ci != udpDirect && !strings.HasSuffix(r.key, "loss") {
				if rt := ratio(m[ci], m[udpDirect]); rt != "" {
					cell += " (" + rt + ")"
				}
			}
			cells = append(cells, cell)
		}
		for _, ci := range udpNginxes {
			cells = append(cells, ratio(m[udpAmbassadord], m[ci]))
		}
		if len(u.cands) > udpBaseline {
			cells = append(cells, ratio(m[udpAmbassadord], m[udpBaseline]))
		}
		cells = append(cells, udpGoal(r.key, shown, u.b.cfg.udpIdleFlows))
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	if r := u.rewired; r != nil {
		cells := make([]string, len(cols))
		cells[0] = udpRewireRow
		for ci := range u.cands {
			cells[1+ci] = "—"
		}
		cells[1+udpAmbassadord] = r.cell()
		cells[len(cols)-1] = r.goal()
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
}

// print writes the TLS hop's table and its notes.
func (t *tlsBench) print(w io.Writer) {
	fmt.Fprintf(w, "\n### The TLS hop (issue 16): client-side and server-side ambassadors, TLS between them on loopback\n\n")
	t.table(w)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Cells: median over rounds (ratio to direct); both sides = the client-side and the server-side process, summed. CPU: utime+stime from /proc/PID/stat, 10 ms ticks.")
	fmt.Fprintf(w, "stunnel pair = two stunnel4, `sslVersionMin = TLSv1.3`, client certificate required and verified (`verifyChain`, `requireCert`), the server's chain and IP verified (`checkIP`), `debug = warning` (its default, notice, writes lines for every connection, which cut its new connections/s by 10×), OpenSSL's defaults otherwise; negotiated: %s.\n", orUnknown(t.stunnelSuite))
	fmt.Fprintf(w, "ambassadord pair (TLS) = server side `--route S:127.0.0.1:B --tls-listen all --tls-cert --tls-key --tls-client-ca`, client side `--route C:tls://127.0.0.1:S --tls-ca --tls-cert --tls-key`; a Go client with Go's defaults negotiated %s with the server side. Plaintext = the same pair without TLS. Both with an admin endpoint for /metrics.\n", orUnknown(t.goSuite))
	fmt.Fprintln(w, "New connections: 50 clients in a loop of connect, PING, +PONG, close, after 20 one at a time; resumed = the client side's handshakes with the server side that resumed a session: ambassadord's from ambassadord_tls_handshakes_total{side=\"backend\"} over the timed run, stunnel's from a run of its own at debug = info (its per-connection lines cost it CPU).")
	fmt.Fprintln(w, "Idle: memory, descriptors and threads or goroutines both sides hold per idle connection, after one byte each way; kernel socket buffers are not in RSS.")
	for _, n := range t.notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "not found"
	}
	return s
}

// table writes the TLS markdown table, a row per metric measured.
func (t *tlsBench) table(w io.Writer) {
	cols := []string{"metric"}
	for _, c := range t.cands {
		cols = append(cols, c.name)
	}
	cols = append(cols, "TLS ÷ stunnel", "TLS ÷ plaintext", "issue 16 goal")
	fmt.Fprintln(w, "| "+strings.Join(cols, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(cols)))
	for _, r := range tlsRows {
		s := t.samples[r.key]
		if s == nil {
			continue
		}
		m := make([]float64, len(t.cands))
		for ci := range m {
			switch {
			case r.sum && len(s[ci]) > 0:
				for _, v := range s[ci] {
					m[ci] += v
				}
			case r.sum:
				m[ci] = math.NaN()
			default:
				m[ci] = median(s[ci])
			}
		}
		cells := []string{r.label}
		for ci := range m {
			cell := format(m[ci], r.digits)
			if ci != tlsDirect && !r.sum {
				if rt := ratio(m[ci], m[tlsDirect]); rt != "" {
					cell += " (" + rt + ")"
				}
			}
			cells = append(cells, cell)
		}
		if r.sum {
			cells = append(cells, "", "")
		} else {
			cells = append(cells, ratio(m[tlsAmbassadord], m[tlsStunnel]), ratio(m[tlsAmbassadord], m[tlsPlain]))
		}
		g := ""
		switch {
		case r.goal == nil:
		case math.IsNaN(m[tlsAmbassadord]):
			g = "not judged: no TLS figure"
		default:
			shown := make([]float64, len(m))
			for ci := range m {
				shown[ci] = roundTo(m[ci], r.digits)
			}
			g = r.goal(shown)
		}
		cells = append(cells, g)
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
}

// columns returns the table's header cells: the metric, the candidates,
// the ratios and the goal.
func (b *bench) columns() []string {
	cols := []string{"metric"}
	for _, c := range b.cands {
		cols = append(cols, c.name)
	}
	cols = append(cols, "ambassadord ÷ HAProxy")
	if b.hasBaseline() {
		cols = append(cols, "ambassadord ÷ baseline")
	}
	return append(cols, "issue 5 goal")
}

// table writes the markdown table: a row per metric measured, the churn
// failures, and the rewire and image rows.
func (b *bench) table(w io.Writer) {
	cols := b.columns()
	fmt.Fprintln(w, "| "+strings.Join(cols, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(cols)))
	for _, r := range rows {
		s := b.samples[r.key]
		if s == nil {
			continue
		}
		m := make([]float64, len(b.cands))
		for ci := range m {
			m[ci] = median(s[ci])
		}
		cells := []string{r.label}
		for ci := range m {
			cell := format(m[ci], r.digits)
			if ci != direct {
				if rt := ratio(m[ci], m[direct]); rt != "" {
					cell += " (" + rt + ")"
				}
			}
			cells = append(cells, cell)
		}
		cells = append(cells, ratio(m[ambassadord], m[haproxy]))
		if b.hasBaseline() {
			cells = append(cells, ratio(m[ambassadord], m[baseline]))
		}
		g := ""
		if r.goal != nil && !math.IsNaN(m[ambassadord]) {
			// Judge the figures as printed: 2.0004 fds per connection
			// (two, plus the listener's share) is the 2.00 shown.
			shown := make([]float64, len(m))
			for ci := range m {
				shown[ci] = roundTo(m[ci], r.digits)
			}
			g = r.goal(shown)
		}
		cells = append(cells, g)
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	if slices.ContainsFunc(b.churnRuns, func(n int) bool { return n > 0 }) {
		cells := []string{"churn: failed runs (redis-benchmark stops at the first failed connect)"}
		for ci := range b.churnRuns {
			cells = append(cells, fmt.Sprintf("%d of %d runs", b.failures[ci], b.churnRuns[ci]))
		}
		cells = append(cells, "")
		if b.hasBaseline() {
			cells = append(cells, "")
		}
		cells = append(cells, mark(b.failures[ambassadord] == 0)+" zero failed connects")
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	b.printRewire(w)
}

func (b *bench) mode() string {
	if b.quick {
		return "QUICK"
	}
	return "full"
}

func kernel() string {
	v, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(v))
}

func cpuModel() string {
	v, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(v)) {
		if k, val, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return "unknown CPU"
}
