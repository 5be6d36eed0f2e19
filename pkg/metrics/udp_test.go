package metrics

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/proxy"
)

// TestUDPMetrics: a UDP route's flows, datagrams, bytes, ends, drops and
// ICMP errors, per backend where they have one; a backend that left the
// set keeps its series while flows remain on it; the route's series go
// with it; and a UDP route has no TCP series.
func TestUDPMetrics(t *testing.T) {
	m := New("dev", "")
	a, b := proxy.Backend{Addr: "10.0.0.2:53"}, proxy.Backend{Addr: "10.0.0.3:53"}
	o := m.UDPObserver("53/udp")
	m.BackendSet("53/udp", []proxy.Backend{a, b})
	o.FlowOpened(a)
	o.FlowOpened(a)
	o.FlowOpened(b)
	o.Datagrams(a, proxy.DirectionUp, 10, 640)
	o.Datagrams(a, proxy.DirectionDown, 9, 1800)
	o.FlowClosed(b, proxy.FlowExpired)
	o.FlowClosed(a, proxy.FlowMoved)
	o.Dropped(proxy.DropNoBackend, 3)
	o.Unreachable(a)

	f := scrape(t, m)
	for _, tt := range []struct {
		name   string
		labels seriesLabels
		want   float64
	}{
		{"ambassadord_udp_flows_active", seriesLabels{"route": "53/udp", "backend": a.Addr}, 1},
		{"ambassadord_udp_flows_active", seriesLabels{"route": "53/udp", "backend": b.Addr}, 0},
		{"ambassadord_udp_flows_total", seriesLabels{"route": "53/udp", "backend": a.Addr}, 2},
		{"ambassadord_udp_datagrams_total", seriesLabels{"route": "53/udp", "backend": a.Addr, "direction": "up"}, 10},
		{"ambassadord_udp_bytes_total", seriesLabels{"route": "53/udp", "backend": a.Addr, "direction": "down"}, 1800},
		{"ambassadord_udp_flows_ended_total", seriesLabels{"route": "53/udp", "reason": "expired"}, 1},
		{"ambassadord_udp_flows_ended_total", seriesLabels{"route": "53/udp", "reason": "evicted"}, 0},
		{"ambassadord_udp_dropped_total", seriesLabels{"route": "53/udp", "reason": "no_backend"}, 3},
		{"ambassadord_udp_dropped_total", seriesLabels{"route": "53/udp", "reason": "flow_cap"}, 0},
		{"ambassadord_udp_unreachable_total", seriesLabels{"route": "53/udp", "backend": a.Addr}, 1},
	} {
		assert.Equal(t, tt.want, metricstest.Value(t, f, tt.name, tt.labels), "%s %v", tt.name, tt.labels)
	}
	_, ok := metricstest.Find(f, "ambassadord_connections_active", seriesLabels{"route": "53/udp"})
	assert.False(t, ok, "a UDP route has no connection series")

	// a leaves the set with a flow on it: kept; b, without: deleted.
	m.BackendSet("53/udp", nil)
	f = scrape(t, m)
	_, ok = metricstest.Find(f, "ambassadord_udp_flows_total", seriesLabels{"route": "53/udp", "backend": a.Addr})
	assert.True(t, ok)
	_, ok = metricstest.Find(f, "ambassadord_udp_flows_total", seriesLabels{"route": "53/udp", "backend": b.Addr})
	assert.False(t, ok)

	// a's last flow closes and the next set deletes its series; when a
	// comes back, its datagrams are counted anew, in series that are
	// scraped (not in counters held from before the deletion).
	o.FlowClosed(a, proxy.FlowExpired)
	m.BackendSet("53/udp", nil)
	_, ok = metricstest.Find(scrape(t, m), "ambassadord_udp_datagrams_total", seriesLabels{"route": "53/udp", "backend": a.Addr})
	require.False(t, ok)
	m.BackendSet("53/udp", []proxy.Backend{a})
	o.Datagrams(a, proxy.DirectionUp, 4, 256)
	o.Datagrams(a, proxy.DirectionUp, 1, 64)
	f = scrape(t, m)
	assert.Equal(t, 5.0, metricstest.Value(t, f, "ambassadord_udp_datagrams_total", seriesLabels{"route": "53/udp", "backend": a.Addr, "direction": "up"}))
	assert.Equal(t, 320.0, metricstest.Value(t, f, "ambassadord_udp_bytes_total", seriesLabels{"route": "53/udp", "backend": a.Addr, "direction": "up"}))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_udp_datagrams_total", seriesLabels{"route": "53/udp", "backend": a.Addr, "direction": "down"}))

	m.RouteRemoved("53/udp")
	assert.Empty(t, metricstest.RouteSeries(scrape(t, m), "53/udp"))
}
