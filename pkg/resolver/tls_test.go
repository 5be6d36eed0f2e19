package resolver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// TestParseTLSBackends: tls:// in front of a backend, in a route or a
// classic variable, has it dialled with TLS, and renders back.
func TestParseTLSBackends(t *testing.T) {
	for _, tt := range []struct {
		in     string
		want   []Endpoint
		target string
		engine string
	}{
		{"6379:tls://big-server:6379", []Endpoint{{Host: "big-server", Port: 6379, TLS: true}}, "big-server", ""},
		{"6379:tls://10.0.0.5", []Endpoint{{Host: "10.0.0.5", Port: 6379, TLS: true}}, "", ""},
		{"6379:tls://[::1]:6380", []Endpoint{{Host: "::1", Port: 6380, TLS: true}}, "", ""},
		{"6379:tls://10.0.0.5:1,10.0.0.6:2", []Endpoint{{Host: "10.0.0.5", Port: 1, TLS: true}, {Host: "10.0.0.6", Port: 2}}, "", ""},
		{"6379:tls://big/redis:6380", []Endpoint{{Host: "redis", Port: 6380, TLS: true}}, "redis", "big"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got := mustParseRoute(t, tt.in)
			assert.Equal(t, tt.want, got.Backends)
			assert.Equal(t, tt.target, got.Target)
			assert.Equal(t, tt.engine, got.Engine)
			again := mustParseRoute(t, got.String())
			assert.Equal(t, got.Backends, again.Backends, "%s renders as %s", tt.in, got.String())
			assert.Equal(t, got.Engine, again.Engine)
		})
	}
	for _, bad := range []string{"6379:tls://", "6379:tls://tls://x:1", "6379:TLS://x:1", "6379:tls:/x:1"} {
		_, err := ParseRoute(bad)
		assert.Error(t, err, bad)
	}

	specs := mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tls://192.168.1.52:6379")
	require.Len(t, specs, 1)
	assert.Equal(t, []Endpoint{{Host: "192.168.1.52", Port: 6379, TLS: true}}, specs[0].Backends)
	_, _, err := ParseClassicEnv([]string{"REDIS_PORT_6379_TCP=ssl://192.168.1.52:6379"})
	assert.ErrorContains(t, err, "scheme must be tcp:// (or tls://, to dial the backend with TLS)")
}

// TestTLSBackendsAndListeners: a backend is dialled with TLS when its
// route says tls:// or the container is labelled ambassador.tls=true (a
// server-side ambassador); a label never turns TLS off. Routes listen with
// TLS where Options.ListenTLS says so, or all of them on an ambassador
// labelled ambassador.tls=true.
func TestTLSBackendsAndListeners(t *testing.T) {
	plain := ctr("redis", "172.18.0.3")
	marked := ctr("redis", "172.18.0.3", labels(LabelTLS, "true"))
	denied := ctr("redis", "172.18.0.3", labels(LabelTLS, "false"))
	for _, tt := range []struct {
		name      string
		route     string
		self      *source.Container
		c         source.Container
		opts      Options
		tls       bool
		listenTLS bool
	}{
		{name: "plain", route: "6379:redis:6379", self: amb(), c: plain},
		{name: "tls:// route", route: "6379:tls://redis:6379", self: amb(), c: plain, tls: true},
		{name: "labelled backend", route: "6379:redis:6379", self: amb(), c: marked, tls: true},
		{name: "ambassador.tls=false does not turn tls:// off", route: "6379:tls://redis:6379", self: amb(), c: denied, tls: true},
		{name: "another value is not true", route: "6379:redis:6379", self: amb(), c: ctr("redis", "172.18.0.3", labels(LabelTLS, "yes"))},
		{name: "--tls-listen all", route: "6379:redis:6379", self: amb(), c: plain, opts: Options{ListenTLS: ListenTLS{All: true}}, listenTLS: true},
		{name: "--tls-listen 6379", route: "6379:redis:6379", self: amb(), c: plain, opts: Options{ListenTLS: ListenTLS{Ports: []int{6379}}}, listenTLS: true},
		{name: "--tls-listen another port", route: "6379:redis:6379", self: amb(), c: plain, opts: Options{ListenTLS: ListenTLS{Ports: []int{6380}}}},
		{name: "the ambassador labelled: not its --route", route: "6379:redis:6379", self: amb(labels(LabelTLS, "true")), c: plain},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := Resolve([]Spec{mustParseRoute(t, tt.route)}, snapshot(tt.self, tt.c), tt.opts)
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			assert.Equal(t, []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis", TLS: tt.tls}}, rt.Backends)
			assert.Equal(t, tt.listenTLS, rt.ListenTLS)
		})
	}

	// The routes of the labelled ambassador's own container listen with TLS.
	self := amb(labels(LabelTLS, "true"), claims("redis"), ports(tcp(6379)), links(source.Link{Name: "web", Alias: "web"}))
	web := ctr("web", "172.18.0.4", ports(tcp(80)))
	res := Resolve(nil, snapshot(self, plain, web), Options{})
	require.Len(t, res.Routes, 2)
	for _, rt := range res.Routes {
		assert.True(t, rt.ListenTLS, "route %s from %s", rt.Name, rt.Source)
	}

	// The fallback of a tls:// target keeps TLS, and so does a rewire to
	// an address.
	res = Resolve([]Spec{mustParseRoute(t, "6379:tls://10.0.0.9:6379")}, nil, Options{})
	assert.Equal(t, []source.Backend{{Addr: "10.0.0.9:6379", TLS: true}}, res.Routes[0].Backends)
	res = Resolve([]Spec{mustParseRoute(t, "6379:tls://redis:6379")}, snapshot(amb()), Options{Overrides: map[string]string{"6379": "10.0.0.7:6400"}})
	assert.Equal(t, []source.Backend{{Addr: "10.0.0.7:6400", TLS: true}}, res.Routes[0].Backends)
	require.NoError(t, ParseOverride("tls://10.0.0.7:6400"), "a rewire may name a TLS address")
	res = Resolve([]Spec{mustParseRoute(t, "6379:redis:6379")}, snapshot(amb()), Options{Overrides: map[string]string{"6379": "tls://10.0.0.7:6400"}})
	assert.Equal(t, []source.Backend{{Addr: "10.0.0.7:6400", TLS: true}}, res.Routes[0].Backends)
}
