//go:build e2e

package e2e

// The UDP tests with containers (issue 17): a real DNS server from Debian,
// dnsmasq, packed FROM scratch with the libraries ldd lists, behind the
// UDP routes of ambassador containers, dig as the client, and a query load
// of our own (udp_dns_test.go) while claims and removals change the
// route. Every fixture server answers the name udpWhoName with an address
// of its own, so each answer says which server it came from. The
// ambassador binary on the host, without containers, is tested in
// udp_host_test.go. Every helper's name starts with udp so that it cannot
// clash with the other files.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dnsload"
	"github.com/ambassadord/ambassadord/internal/harness"
)

// dnsmasqBin is Debian's dnsmasq (package dnsmasq-base), packed into the
// fixture image.
const dnsmasqBin = "/usr/sbin/dnsmasq"

// The fixture servers' answers for udpWhoName: the first server's, the
// second's.
const udpWhoName = "who.test"

var (
	udpWho1 = netip.MustParseAddr("10.0.0.1")
	udpWho2 = netip.MustParseAddr("10.0.0.2")
)

// udpDNSPort is where the fixture listens, UDP and TCP.
const udpDNSPort = 53

// udpDockerfile runs dnsmasq in the foreground, logging to stderr,
// answering only what its --address flags (the container's arguments) say.
// It exposes 53/udp, so that a --link makes DNS_PORT_53_UDP, and 53/tcp.
const udpDockerfile = `FROM scratch
COPY rootfs/ /
EXPOSE 53/udp 53/tcp
ENTRYPOINT ["/usr/sbin/dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--port=53"]
`

// The fixture's users: dnsmasq drops its privileges to nobody.
const (
	udpPasswd = "root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n"
	udpGroup  = "root:x:0:\nnogroup:x:65534:\n"
)

// The dnsmasq image is built once, by the first test that needs it, and
// removed with the run's other images.
var (
	udpImageOnce sync.Once
	udpImageTag  string
	udpImageErr  error
)

// udpImage returns the dnsmasq fixture image, building it on first use.
func udpImage(t *testing.T, ctx context.Context) string {
	t.Helper()
	udpImageOnce.Do(func() {
		// Not the first caller's context: the image serves every test.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		udpImageTag, udpImageErr = udpBuildImage(ctx)
	})
	require.NoError(t, udpImageErr)
	return udpImageTag
}

func udpBuildImage(ctx context.Context) (string, error) {
	start := time.Now()
	if _, err := os.Stat(dnsmasqBin); err != nil {
		return "", fmt.Errorf("the DNS fixture needs %s (.ci/setup installs dnsmasq-base): %w", dnsmasqBin, err)
	}
	files, err := harness.Rootfs(ctx, dnsmasqBin)
	if err != nil {
		return "", err
	}
	files = append(files,
		harness.File{Name: "Dockerfile", Mode: 0o644, Data: []byte(udpDockerfile)},
		harness.File{Name: "rootfs/etc/passwd", Mode: 0o644, Data: []byte(udpPasswd)},
		harness.File{Name: "rootfs/etc/group", Mode: 0o644, Data: []byte(udpGroup)},
	)
	tag := eng.ImageTag("dnsmasq")
	if err := eng.BuildImage(ctx, tag, files, nil); err != nil {
		return "", err
	}
	fmt.Printf("e2e: built %s in %s\n", tag, time.Since(start).Round(time.Millisecond))
	return tag, nil
}

// udpStartDNS starts a dnsmasq fixture named short(t, s.Name) answering
// udpWhoName with who, with the extra dnsmasq flags, and waits until it
// answers. It is removed when the test ends.
func udpStartDNS(t *testing.T, ctx context.Context, s harness.Spec, who netip.Addr, extra ...string) *harness.Container {
	t.Helper()
	s.Name = short(t, s.Name)
	s.Image = udpImage(t, ctx)
	s.Cmd = append([]string{"--address=/" + udpWhoName + "/" + who.String()}, extra...)
	t.Logf("$ %s", eng.Command(s))
	c, err := eng.Start(ctx, s)
	if c != nil {
		t.Cleanup(func() { remove(t, c) })
	}
	require.NoError(t, err)
	waitAnswer(t, ctx, addr(c, udpDNSPort), udpWhoName, who)
	return c
}

// udpDig runs dig against server:port for udpWhoName, one try of a
// second, over TCP if tcp, and returns its short answer.
func udpDig(ctx context.Context, server netip.Addr, port uint16, tcp bool) (string, error) {
	args := []string{"@" + server.String(), "-p", strconv.Itoa(int(port)), udpWhoName, "+short", "+tries=1", "+time=1"}
	if tcp {
		args = append(args, "+tcp")
	}
	out, err := exec.CommandContext(ctx, "dig", args...).CombinedOutput()
	if errors.Is(err, exec.ErrNotFound) {
		return "", harness.Permanent(fmt.Errorf("dig is missing (.ci/setup installs bind9-dnsutils): %w", err))
	}
	if err != nil {
		return "", fmt.Errorf("dig %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// udpWaitDig waits until dig, through server:port, is answered with want.
func udpWaitDig(t *testing.T, ctx context.Context, server netip.Addr, port uint16, tcp bool, want netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var got string
	err := harness.Poll(ctx, func(ctx context.Context) error {
		var err error
		if got, err = udpDig(ctx, server, port, tcp); err != nil {
			return err
		}
		if got != want.String() {
			return fmt.Errorf("dig answered %q", got)
		}
		return nil
	})
	require.NoError(t, err, "dig @%s -p %d %s (tcp: %v)", server, port, udpWhoName, tcp)
	t.Logf("$ dig @%s -p %d %s +short%s\n%s", server, port, udpWhoName, map[bool]string{true: " +tcp"}[tcp], got)
}

// udpQueryBurst sends 32 queries of one size at once from one socket to
// server, which the ambassador there forwards to dnsmasq together, as one
// segmented message across the engine's bridge, as it does dnsmasq's
// answers read at once, and requires each answered once, with want.
func udpQueryBurst(t *testing.T, server netip.AddrPort, want netip.Addr) {
	t.Helper()
	const n = 32
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	require.NoError(t, err)
	defer c.Close()
	for id := range uint16(n) {
		_, err := c.Write(dnsload.Query(id+1, udpWhoName))
		require.NoError(t, err)
	}
	answered := map[uint16]int{}
	buf := make([]byte, 512)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	for len(answered) < n {
		k, err := c.Read(buf)
		if !assert.NoError(t, err, "%d of %d queries answered", len(answered), n) {
			break
		}
		id, a, err := dnsload.Answer(buf[:k])
		require.NoError(t, err)
		assert.Equal(t, want, a, "the answer to query %d", id)
		answered[id]++
	}
	for id := range uint16(n) {
		assert.Equal(t, 1, answered[id+1], "answers to query %d", id+1)
	}
	t.Logf("%d queries sent at once to %s, each answered once", n, server)
}

// TestUDPDNS: dnsmasq behind an ambassador's UDP route, in each way of
// making one, and dig through it:
//
//   - label: an ambassador following the engine, labelled
//     ambassador.target=dns and ambassador.ports=53/udp,53: a UDP route
//     and a TCP one on 53, both to dnsmasq (which serves DNS over both);
//   - link: the classic `--link dns:dns`, no engine: the image exposes
//     53/udp and 53/tcp, so Docker injects DNS_PORT_53_UDP and
//     DNS_PORT_53_TCP, and both routes are made;
//   - variable: DNS_PORT_53_UDP=udp://IP:53 alone;
//   - route: --route 5300/udp:IP:53.
//
// dnsmasq logs each query with its source: the ambassador's address.
func TestUDPDNS(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	dns := udpStartDNS(t, ctx, harness.Spec{Name: "dns"}, udpWho1, "--log-queries")
	backend := addr(dns, udpDNSPort)
	for _, tt := range []struct {
		name   string
		spec   harness.Spec
		follow bool
		port   uint16
		tcp    bool   // a TCP route on the same port too
		source string // what /routes says made the UDP route
	}{
		{"label", harness.Spec{Labels: map[string]string{labelTarget: dns.Name, labelPorts: "53/udp,53"}}, true, 53, true, "label"},
		{"link", harness.Spec{Links: []string{link(dns, "dns")}}, false, 53, true, "DNS_PORT_53_UDP"},
		{"variable", harness.Spec{Env: []string{"DNS_PORT_53_UDP=udp://" + backend}}, false, 53, false, "DNS_PORT_53_UDP"},
		{"route", harness.Spec{Cmd: []string{"--route", "5300/udp:" + backend}}, false, 5300, false, "--route"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := setup(t)
			tt.spec.Name = "ambassador-" + tt.name
			var amb *harness.Container
			if tt.follow {
				amb = startFollower(t, ctx, tt.spec)
			} else {
				amb = startAmbassador(t, ctx, tt.spec)
			}
			udpWaitDig(t, ctx, amb.IP, tt.port, false, udpWho1)
			if tt.tcp {
				udpWaitDig(t, ctx, amb.IP, tt.port, true, udpWho1)
			}
			udpQueryBurst(t, netip.AddrPortFrom(amb.IP, tt.port), udpWho1)

			st := statusOf(t, ctx, amb)
			name := strconv.Itoa(int(tt.port)) + "/udp"
			r := st.route(t, name)
			require.Len(t, r.Backends, 1, "backends of %s", name)
			assert.Equal(t, backend, r.Backends[0].Addr, "the backend of %s", name)
			var routes []string
			for _, r := range st.Routes {
				routes = append(routes, r.Name)
			}
			if tt.tcp {
				assert.ElementsMatch(t, []string{name, strconv.Itoa(int(tt.port))}, routes, "the ambassador's routes")
			} else {
				assert.Equal(t, []string{name}, routes, "the ambassador's routes")
			}
			stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "explain", name)
			t.Logf("$ ambassadord explain %s\n%s%s", name, stdout, stderr)
			assert.Equal(t, 0, code, "explain %s", name)
			assert.Contains(t, stdout, tt.source, "explain says where the route comes from")

			// The query reached dnsmasq from the ambassador.
			logs, errs, err := eng.Logs(ctx, dns.ID)
			require.NoError(t, err)
			assert.Contains(t, logs+errs, "query[A] "+udpWhoName+" from "+amb.IP.String(), "dnsmasq's log")
		})
	}
}

// udpTakeover bounds, in the e2e tests, the time from a claimer's start
// event to the first new flow the ambassador sends to it. The goal (p99
// ≤ 50 ms, TCP's) is measured by `make bench`; here one sample, on a
// machine the whole suite shares, is checked against a bound that only a
// broken rewire misses, and logged.
const udpTakeover = 500 * time.Millisecond

// udpQueries is the query load of the rewire tests: a fresh socket every
// 2 ms, each a new flow, and 4 long-lived sockets with a query every
// 10 ms; a query is sent again after 300 ms without an answer, as a
// resolver does, and lost after its second try.
var udpQueries = dnsload.Config{
	Fresh:   2 * time.Millisecond,
	Flows:   4,
	Every:   10 * time.Millisecond,
	Tries:   2,
	Timeout: 300 * time.Millisecond,
}

// udpMetrics returns the URL of an ambassador container's metrics (with
// publicAdmin).
func udpMetrics(amb *harness.Container) string {
	return "http://" + addr(amb, ambAdminPort) + "/metrics"
}

// TestUDPClaimRewire: an ambassador labelled ambassador.target=dns,
// ambassador.ports=53/udp serves dns (dnsmasq answering udpWho1) under a
// query load, until dns2 (answering udpWho2) claims the target with
// priority 10:
//
//   - new flows (fresh sockets) go to dns2 from its start event on, within
//     udpTakeover (logged); no query of a fresh socket goes to dns after
//     dns2 has answered one, and none is lost once dns2 answers: the only
//     datagrams lost were sent to dns2 before its dnsmasq listened (the
//     ambassador counts them unreachable);
//   - long-lived flows stay on dns while it runs;
//   - dns stopped (docker stop), they move to dns2 at their next datagram
//     (counted as moved, one per flow), and none of their queries is lost:
//     a datagram sent between dnsmasq's exit and the ambassador's hearing
//     of it is lost, and its retry answered by dns2.
func TestUDPClaimRewire(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	dns := udpStartDNS(t, ctx, harness.Spec{Name: "dns", Networks: []string{n.Name}}, udpWho1)
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: dns.Name, labelPorts: "53/udp"},
		Cmd:      publicAdmin,
	})
	target := addr(amb, udpDNSPort)
	waitAnswer(t, ctx, target, udpWhoName, udpWho1)

	evs := eng.Events(ctx)
	l := startDNSLoad(t, target, udpWhoName, udpQueries)
	require.NoError(t, waitAnswered(ctx, l, -2, udpWho1, time.Now(), 100))
	claiming := time.Now()
	dns2 := udpStartDNS(t, ctx, harness.Spec{
		Name: "dns2", Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: dns.Name, labelPriority: "10"},
	}, udpWho2)
	started := waitEvent(t, ctx, evs, dns2.ID, "start", claiming)
	require.NoError(t, waitAnswered(ctx, l, -1, udpWho2, time.Now(), 100))

	// dns stopped: the long-lived flows move.
	stopping := time.Now()
	require.NoError(t, eng.Stop(ctx, dns.ID, 5*time.Second))
	stopped := time.Now()
	for i := range udpQueries.Flows {
		require.NoError(t, waitAnswered(ctx, l, i, udpWho2, stopping, 20), "long-lived flow %d after dns stopped", i)
	}
	res := l.Stop()
	killed := waitEvent(t, ctx, evs, dns.ID, "kill", stopping)
	died := waitEvent(t, ctx, evs, dns.ID, "die", stopping)
	t.Logf("load: %s; dns2 started at %s, dns sent its stop signal at %s and died at %s",
		res, started.Format("15:04:05.000"), killed.Format("15:04:05.000"), died.Format("15:04:05.000"))

	// New flows: the first datagram of a fresh socket after dns2's start
	// that dns did not answer went to dns2 (answered, or sent before its
	// dnsmasq listened).
	fresh := res.Flow(-1)
	routed, ok := fresh.After(started).First(func(d dnsload.Try) bool { return d.Answer != udpWho1 })
	require.True(t, ok, "no fresh query left dns after dns2's start")
	answered, ok := fresh.First(func(d dnsload.Try) bool { return d.Answer == udpWho2 })
	require.True(t, ok, "dns2 answered no fresh query")
	took := routed.Sent.Sub(started)
	assert.LessOrEqual(t, took, udpTakeover, "new flows to dns2 after its start event")
	beforeAnswer := fresh.After(started).Filter(func(d dnsload.Try) bool { return d.Sent.Before(answered.Sent) })
	t.Logf("new flows went to dns2 %s after its start event (goal: p99 ≤ 50 ms, measured by make bench; bound here %s); dns2 answered the first %s after it; %d fresh datagrams in between, %d of them lost (sent before dnsmasq listened)",
		took.Round(100*time.Microsecond), udpTakeover, answered.Sent.Sub(started).Round(100*time.Microsecond), len(beforeAnswer), len(beforeAnswer.Lost()))
	afterAnswer := answered.Sent.Add(answered.Took)
	noneOf(t, fresh.After(afterAnswer).By(udpWho1), "fresh queries answered by dns after dns2 had answered one")
	noneOf(t, res.After(answered.Sent).Lost().Filter(func(d dnsload.Try) bool {
		return d.Flow == -1 || d.Sent.Before(stopping)
	}), "datagrams lost once dns2 answered, before dns was stopped")
	noneOf(t, fresh.Filter(func(d dnsload.Try) bool { return d.Lost() && d.Sent.Before(started) }),
		"fresh datagrams lost before dns2 started")

	// Long-lived flows: on dns while it ran, then on dns2.
	f := waitMetrics(t, ctx, udpMetrics(amb), want("ambassadord_udp_flows_ended_total",
		map[string]string{"route": "53/udp", "reason": "moved"}, float64(udpQueries.Flows)))
	unreachable, _ := f.value("ambassadord_udp_unreachable_total", map[string]string{"route": "53/udp", "backend": addr(dns2, udpDNSPort)})
	unreachableOld, _ := f.value("ambassadord_udp_unreachable_total", map[string]string{"route": "53/udp", "backend": addr(dns, udpDNSPort)})
	t.Logf("ICMP port unreachable counted from dns2 (before it listened): %v; from dns (after it exited): %v", unreachable, unreachableOld)
	for i := range udpQueries.Flows {
		flow := res.Flow(i)
		noneOf(t, flow.Filter(func(d dnsload.Try) bool { return d.Sent.Before(stopping) && d.Answer != udpWho1 }),
			"datagrams of long-lived flow %d not answered by dns while it ran", i)
		moved, ok := flow.After(stopping).First(func(d dnsload.Try) bool { return d.Answer == udpWho2 })
		require.True(t, ok, "long-lived flow %d never reached dns2", i)
		noneOf(t, flow.After(moved.Sent).Filter(func(d dnsload.Try) bool { return d.Answer != udpWho2 }),
			"datagrams of long-lived flow %d not answered by dns2 after its move", i)
		cut := flow.After(stopping).Filter(func(d dnsload.Try) bool { return d.Sent.Before(moved.Sent) && d.Lost() })
		t.Logf("long-lived flow %d: moved to dns2 %s after the stop call (docker stop returned after %s), at its datagram of %s; %d datagram(s) lost in between: %s",
			i, moved.Sent.Sub(stopping).Round(time.Millisecond), stopped.Sub(stopping).Round(time.Millisecond), moved.Sent.Format("15:04:05.000"), len(cut), strings.TrimSpace(cut.Describe()))
	}
	assert.Zero(t, res.LostQueries(), "queries lost (after their retry): %s", res)
}

// TestUDPBackendGone: a route to two dnsmasq servers, a and b, both
// claiming svc; two long-lived flows, one on each, query every 10 ms, one
// datagram per query. a is removed (docker rm -f) mid-flow: its flow moves
// to b at its next datagram once the ambassador has heard (counted as
// moved: exactly one, the other flows on a being idle), and no datagram of
// it is lost after the move; the flow on b never notices.
func TestUDPBackendGone(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc") // claimed only: no container has this name
	claimer := func(name string) harness.Spec {
		return harness.Spec{Name: name, Networks: []string{n.Name}, Labels: map[string]string{labelTarget: svc}}
	}
	a := udpStartDNS(t, ctx, claimer("a"), udpWho1)
	b := udpStartDNS(t, ctx, claimer("b"), udpWho2)
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: "53/udp"},
		Cmd:      publicAdmin,
	})
	target := addr(amb, udpDNSPort)
	waitAnswer(t, ctx, target, udpWhoName, udpWho1)
	waitAnswer(t, ctx, target, udpWhoName, udpWho2)

	// Long-lived flows until one is on each server: new flows alternate.
	cfg := dnsload.Config{Flows: 2, Every: 10 * time.Millisecond, Tries: 1, Timeout: 300 * time.Millisecond}
	var l *dnsload.Load
	onA, onB := -1, -1
	for attempt := 0; onA < 0 || onB < 0; attempt++ {
		require.Less(t, attempt, 10, "no pair of flows on a and b")
		if l != nil {
			l.Stop()
		}
		l = startDNSLoad(t, target, udpWhoName, cfg)
		require.NoError(t, harness.Poll(ctx, func(context.Context) error {
			if len(l.Tries().Flow(0)) == 0 || len(l.Tries().Flow(1)) == 0 {
				return errors.New("no answer yet")
			}
			return nil
		}))
		first := func(i int) netip.Addr { return l.Tries().Flow(i)[0].Answer }
		onA, onB = -1, -1
		for i := range cfg.Flows {
			switch first(i) {
			case udpWho1:
				onA = i
			case udpWho2:
				onB = i
			}
		}
	}
	require.NoError(t, waitAnswered(ctx, l, onA, udpWho1, time.Now(), 20))
	metrics := udpMetrics(amb)
	before, err := scrape(ctx, metrics)
	require.NoError(t, err)
	movedBefore, _ := before.value("ambassadord_udp_flows_ended_total", map[string]string{"route": "53/udp", "reason": "moved"})
	require.Zero(t, movedBefore)

	evs := eng.Events(ctx)
	removing := time.Now()
	require.NoError(t, eng.Remove(ctx, a.ID))
	require.NoError(t, waitAnswered(ctx, l, onA, udpWho2, removing, 50))
	res := l.Stop()
	died := waitEvent(t, ctx, evs, a.ID, "die", removing)
	waitMetrics(t, ctx, metrics, want("ambassadord_udp_flows_ended_total", map[string]string{"route": "53/udp", "reason": "moved"}, 1))
	var st ambStatus
	getJSON(t, ctx, "http://"+addr(amb, ambAdminPort)+"/routes", &st)
	r := st.route(t, "53/udp")
	require.Len(t, r.Backends, 1, "backends of 53/udp after a's removal")
	assert.Equal(t, addr(b, udpDNSPort), r.Backends[0].Addr, "the backend left")
	t.Logf("load: %s; a removed at %s, died at %s", res, removing.Format("15:04:05.000"), died.Format("15:04:05.000"))

	flow := res.Flow(onA)
	moved, ok := flow.After(removing).First(func(d dnsload.Try) bool { return d.Answer == udpWho2 })
	require.True(t, ok)
	cut := flow.After(removing).Filter(func(d dnsload.Try) bool { return d.Sent.Before(moved.Sent) })
	t.Logf("the flow on a moved to b at its datagram sent %s after the removal (a's die event came %s after it); before the move, %d datagram(s) sent: %s",
		moved.Sent.Sub(removing).Round(time.Millisecond), died.Sub(removing).Round(time.Millisecond), len(cut), strings.TrimSpace(cut.Describe()))
	noneOf(t, flow.Filter(func(d dnsload.Try) bool { return d.Sent.Before(removing) && d.Answer != udpWho1 }), "datagrams of the flow on a not answered by a before its removal")
	noneOf(t, flow.After(moved.Sent).Filter(func(d dnsload.Try) bool { return d.Answer != udpWho2 }), "datagrams of the moved flow not answered by b after the move")
	noneOf(t, res.Flow(onB).Filter(func(d dnsload.Try) bool { return d.Answer != udpWho2 }), "datagrams of the flow on b not answered by b")
}
