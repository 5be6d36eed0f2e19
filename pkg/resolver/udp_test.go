package resolver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// TestParseUDPRoutes: LISTEN/udp makes a UDP route, /tcp the TCP route
// written out; a TLS backend and another protocol are refused; a TCP and
// a UDP route share a port, in a route list as in Merge.
func TestParseUDPRoutes(t *testing.T) {
	for _, tt := range []struct {
		in     string
		proto  string
		want   []Endpoint
		target string
	}{
		{"53/udp:dns:53", UDP, []Endpoint{{Host: "dns", Port: 53}}, "dns"},
		{"53/udp:10.0.0.2", UDP, []Endpoint{{Host: "10.0.0.2", Port: 53}}, ""},
		{"514/udp:10.0.0.2:5514,10.0.0.3:5514", UDP, []Endpoint{{Host: "10.0.0.2", Port: 5514}, {Host: "10.0.0.3", Port: 5514}}, ""},
		{"53/udp:big/dns", UDP, []Endpoint{{Host: "dns", Port: 53}}, "dns"},
		{"6379/tcp:redis:6379", TCP, []Endpoint{{Host: "redis", Port: 6379}}, "redis"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got := mustParseRoute(t, tt.in)
			assert.Equal(t, tt.proto, got.Protocol)
			assert.Equal(t, tt.want, got.Backends)
			assert.Equal(t, tt.target, got.Target)
			again := mustParseRoute(t, got.String())
			assert.Equal(t, got.Protocol, again.Protocol, "%s renders as %s", tt.in, got.String())
			assert.Equal(t, got.Backends, again.Backends)
		})
	}
	for in, want := range map[string]string{
		"53/udp:tls://dns:53": "tls:// is for TCP routes",
		"53/sctp:dns":         `protocol "sctp": want tcp or udp`,
		"53/:dns":             `protocol "": want tcp or udp`,
		"/udp:dns":            `listen port "": empty`,
	} {
		_, err := ParseRoute(in)
		assert.ErrorContains(t, err, want, in)
	}

	specs, err := ParseRouteList("53:dns:53 53/udp:dns:53")
	require.NoError(t, err)
	assert.Len(t, specs, 2)
	_, err = ParseRouteList("53/udp:a 53/udp:b")
	assert.ErrorContains(t, err, `listen port 53 is claimed twice: "53/udp:a" and "53/udp:b"`)
	_, err = Merge([]Spec{mustParseRoute(t, "53/udp:a")}, []Spec{mustParseRoute(t, "53/udp:b")})
	assert.ErrorContains(t, err, "listen port 53 is claimed twice")
}

// TestUDPRoutes: a UDP route resolves to its containers as a TCP one does,
// named LISTEN/udp beside the TCP route on its port; a remote container
// is reached where it publishes the UDP port, not the TCP one; a rewire by
// name of a UDP route; no TLS on UDP, neither way.
func TestUDPRoutes(t *testing.T) {
	dns := ctr("dns", "172.18.0.3", ports(tcp(53), source.Port{Port: 53, Proto: UDP}), labels(LabelTLS, "true"))
	specs := []Spec{mustParseRoute(t, "53/udp:dns:53"), mustParseRoute(t, "53:dns:53")}
	res := Resolve(specs, snapshot(amb(), dns), Options{ListenTLS: ListenTLS{All: true}})
	require.Len(t, res.Routes, 2)
	tcpRoute, udpRoute := res.Routes[0], res.Routes[1]
	assert.Equal(t, "53", tcpRoute.Name)
	assert.Equal(t, "53/udp", udpRoute.Name)
	assert.Equal(t, UDP, udpRoute.Protocol)
	assert.Equal(t, []source.Backend{{Addr: "172.18.0.3:53", ID: "id-dns"}}, udpRoute.Backends, "no TLS to a UDP backend")
	assert.False(t, udpRoute.ListenTLS, "no TLS on a UDP listener")
	assert.True(t, tcpRoute.ListenTLS)
	assert.True(t, tcpRoute.Backends[0].TLS)

	// A rewire names the UDP route by its name.
	res = Resolve(specs, snapshot(amb(), dns), Options{Overrides: map[string]string{"53/udp": "10.0.0.9:5353"}})
	assert.Equal(t, []source.Backend{{Addr: "10.0.0.9:5353"}}, res.Routes[1].Backends)
	assert.Equal(t, "dns", res.Routes[0].Target, "the TCP route is not rewired")

	// A remote claimer: the UDP port it publishes.
	far := remote("big", "far", claims("dns"), ports(
		source.Port{Port: 53, Proto: TCP, Published: []source.Binding{bind("0.0.0.0", 32000)}},
		source.Port{Port: 53, Proto: UDP, Published: []source.Binding{bind("0.0.0.0", 32001)}},
	))
	self := amb(claims("dns"), labels(LabelPorts, "53/udp,53"))
	res = Resolve(nil, snapshot(self, far), Options{Engines: testEngines})
	require.Len(t, res.Routes, 2)
	assert.Equal(t, "192.168.1.52:32000", res.Routes[0].Backends[0].Addr)
	assert.Equal(t, "192.168.1.52:32001", res.Routes[1].Backends[0].Addr)
	onlyTCP := remote("big", "far", claims("dns"), publish(53, bind("0.0.0.0", 32000)))
	res = Resolve(nil, snapshot(self, onlyTCP), Options{Engines: testEngines})
	assert.Empty(t, res.Routes[1].Backends)
	assert.Contains(t, res.Routes[1].NoBackend, "publishes nothing for port 53/udp (docker run -p 53/udp)")
}
