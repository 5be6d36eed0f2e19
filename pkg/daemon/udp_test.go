package daemon

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// udpWhoami answers every datagram on a loopback UDP port with name, and
// returns the port.
func udpWhoami(t *testing.T, name string) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// askUDP sends a datagram to addr from conn and returns the answer.
func askUDP(t *testing.T, c net.Conn) string {
	t.Helper()
	_, err := c.Write([]byte("who"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

// TestUDPRoute: a UDP route and a TCP route on one port, the UDP one
// named PORT/udp, its target's containers served per flow: a claimer of
// higher priority takes new flows, an established flow stays on its
// backend until that backend is gone, then moves at its next datagram;
// the metrics count the flows of the route, and the status names it.
func TestUDPRoute(t *testing.T) {
	port := nettest.FreeUDPPort(t)
	for port == 0 || !tcpFree(port) {
		port = nettest.FreeUDPPort(t)
	}
	p := strconv.Itoa(port)
	opts := testOptions(t, p+"/udp:svc:1", p+":svc:1")
	docker := opts.Sources[0].(*fakeSource)
	d, m := runDaemon(t, opts)

	a := loopbackContainer("a", udpWhoami(t, "a"), map[string]string{resolver.LabelTarget: "svc"})
	b := loopbackContainer("b", udpWhoami(t, "b"), map[string]string{resolver.LabelTarget: "svc", resolver.LabelPriority: "10"})
	docker.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{a}}})
	requireBackends(t, d, p+"/udp", a.ID)

	held, err := net.Dial("udp", "127.0.0.1:"+p)
	require.NoError(t, err)
	defer held.Close()
	assert.Equal(t, "a", askUDP(t, held))

	// b claims with priority 10: new flows go to b, the held one stays.
	docker.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{a, b}}})
	requireBackends(t, d, p+"/udp", b.ID)
	fresh, err := net.Dial("udp", "127.0.0.1:"+p)
	require.NoError(t, err)
	defer fresh.Close()
	assert.Equal(t, "b", askUDP(t, fresh))
	assert.Equal(t, "a", askUDP(t, held), "an established flow stays on its backend")

	// a is gone: the held flow moves at its next datagram.
	docker.publish(t, source.Update{Connected: true, Gone: []string{a.ID}, Snapshot: &source.Snapshot{Containers: []source.Container{b}}})
	require.Eventually(t, func() bool { return askUDP(t, held) == "b" }, 3*time.Second, 10*time.Millisecond)

	doc := d.Status()
	r, ok := doc.Route(p + "/udp")
	require.True(t, ok)
	assert.Equal(t, "127.0.0.1:"+p, r.Listen)
	assert.Equal(t, "udp", r.Protocol)
	assert.Equal(t, 2, r.Active, "two flows")
	tcp, ok := doc.Route(p)
	require.True(t, ok)
	assert.Equal(t, p, tcp.Name, "the TCP route beside it")

	f := metricstest.Scrape(t, m.Handler())
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_udp_flows_ended_total", metricstest.Labels{"route": p + "/udp", "reason": "moved"}))
	assert.Equal(t, 2.0, metricstest.Value(t, f, "ambassadord_udp_flows_active", metricstest.Labels{"route": p + "/udp", "backend": "127.0.0.1:" + b.Labels[resolver.LabelPort]}))
}

// tcpFree reports whether the TCP port is free on loopback.
func tcpFree(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
