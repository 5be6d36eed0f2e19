package resolver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// TestClaimsOnlyWhereInvited: a route from a link or from --route follows
// the container it names, as the classic socat ambassador did; a hostile
// container on a shared network that claims the name at the highest
// priority takes none of its connections, unless the operator opts in
// (Options.Claims). The ambassador's own ambassador.target label is
// claimable by default.
func TestClaimsOnlyWhereInvited(t *testing.T) {
	const maxPrio = "2147483647"
	redis := ctr("redis", "172.18.0.3", ports(tcp(6379)))
	hostile := ctr("evil", "172.18.0.66", claims("redis"), labels(LabelPriority, maxPrio))
	named := []source.Backend{backend("172.18.0.3:6379", "id-redis")}
	stolen := []source.Backend{backend("172.18.0.66:6379", "id-evil")}
	refused := func(from, flag string) []Candidate {
		return []Candidate{
			skipped("evil", "claims redis, but claims do not count on a route from "+from+
				", which follows the container named redis (--claims "+flag+" admits them)"),
			chosen("redis", "named redis, running, no healthcheck"),
		}
	}
	linkVar := func(t *testing.T) []Spec {
		return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://172.17.0.9:6379", "REDIS_NAME=/amb/redis")
	}
	route := func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "6379:redis:6379")} }
	noSpecs := func(t *testing.T) []Spec { return nil }
	linked := links(source.Link{Name: "redis", Alias: "redis"})

	for _, tt := range []struct {
		name       string
		specs      func(t *testing.T) []Spec
		self       *source.Container
		claims     Claims
		backends   []source.Backend
		candidates []Candidate // nil: not checked
	}{
		{name: "classic link variable", specs: linkVar, self: amb(linked), backends: named, candidates: refused("a link", "label,links")},
		{name: "the ambassador's own link", specs: noSpecs, self: amb(linked), backends: named, candidates: refused("a link", "label,links")},
		{name: "--route", specs: route, self: amb(), backends: named, candidates: refused("--route", "label,routes")},
		{name: "classic link variable, --claims links", specs: linkVar, self: amb(linked), claims: Claims{Links: true}, backends: stolen},
		{name: "own link, --claims links", specs: noSpecs, self: amb(linked), claims: Claims{Links: true}, backends: stolen},
		{name: "--route, --claims routes", specs: route, self: amb(), claims: Claims{Routes: true}, backends: stolen},
		{name: "--route, --claims links: still the name", specs: route, self: amb(), claims: Claims{Links: true}, backends: named},
		{
			name: "the ambassador's label: claimable by default", specs: noSpecs,
			self: amb(claims("redis"), ports(tcp(6379))), backends: stolen,
		},
		{
			name: "the ambassador's label, --claims none", specs: noSpecs,
			self: amb(claims("redis"), ports(tcp(6379))), claims: Claims{NoLabel: true}, backends: named,
			candidates: []Candidate{
				skipped("amb", "the ambassador itself"),
				skipped("evil", "claims redis, but claims do not count (--claims none)"),
				chosen("redis", "named redis, running, no healthcheck"),
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := Resolve(tt.specs(t), snapshot(tt.self, redis, hostile), Options{Claims: tt.claims})
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			assert.Equal(t, 6379, rt.Listen)
			assert.Equal(t, tt.backends, rt.Backends)
			if tt.candidates != nil {
				assert.Equal(t, tt.candidates, rt.Candidates)
			}
		})
	}
}

// TestDNSNameNeverClaimable: a target with a dot is a DNS name; no
// container claims it, whatever --claims admits.
func TestDNSNameNeverClaimable(t *testing.T) {
	spec := mustParseRoute(t, "5432:db.prod.example.com:5432")
	require.Equal(t, "db.prod.example.com", spec.Target)
	evil := ctr("evil", "172.18.0.66", claims("db.prod.example.com"), labels(LabelPriority, "9"))
	res := Resolve([]Spec{spec}, snapshot(amb(), evil), Options{Claims: Claims{Routes: true, Links: true}})
	require.Len(t, res.Routes, 1)
	rt := res.Routes[0]
	assert.Equal(t, []source.Backend{{Addr: "db.prod.example.com:5432"}}, rt.Backends, "DNS, never the claimer")
	assert.Equal(t, []Candidate{skipped("evil", "claims db.prod.example.com, but db.prod.example.com is a DNS name, which no container may claim")}, rt.Candidates)

	// The same on the ambassador's own label.
	self := amb(claims("db.prod.example.com"), ports(tcp(5432)))
	res = Resolve(nil, snapshot(self, evil), Options{})
	require.Len(t, res.Routes, 1)
	assert.Empty(t, res.Routes[0].Backends)
}

// TestClaimsWithoutOwnNetworks: an ambassador whose own container is
// unknown (run on the host, by systemd) or on the host network reaches
// every network of the engine; claims then count only from the network
// the operator names (--network), and claimers are reached on it. The
// container named like the target still counts by its name.
func TestClaimsWithoutOwnNetworks(t *testing.T) {
	onHost := amb(nets(source.Network{Name: "host", ID: "n-host"}), claims("redis"), ports(tcp(6379)))
	unknown := func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "6379:redis:6379")} }
	appClaimer := ctr("good", "", claims("redis"), nets(on(app, "172.18.0.4"), on(other, "10.3.0.4")))
	otherClaimer := ctr("evil", "", claims("redis"), labels(LabelPriority, "100"), nets(on(other, "10.3.0.66")))
	named := ctr("redis", "", nets(on(other, "10.3.0.3")))
	const why = "the ambassador's own networks are unknown (it runs outside a container the engine knows, or on the host network)"

	for _, tt := range []struct {
		name       string
		self       *source.Container
		specs      func(t *testing.T) []Spec
		network    string
		backends   []source.Backend
		candidates []Candidate
	}{
		{
			name: "on the host network, no --network: no claim counts", self: onHost, specs: func(*testing.T) []Spec { return nil },
			backends: []source.Backend{backend("10.3.0.3:6379", "id-redis")},
			candidates: []Candidate{
				skipped("amb", "the ambassador itself"),
				skipped("evil", "claims redis, but "+why+": claims count only from the network --network names"),
				skipped("good", "claims redis, but "+why+": claims count only from the network --network names"),
				chosen("redis", "named redis, running, no healthcheck"),
			},
		},
		{
			name: "on the host network, --network app: the claimer on app, reached on app", self: onHost, specs: func(*testing.T) []Spec { return nil },
			network:  "app",
			backends: []source.Backend{backend("172.18.0.4:6379", "id-good")},
			candidates: []Candidate{
				skipped("amb", "the ambassador itself"),
				skipped("evil", "claims redis, but it is not on network app, the only one claims count from while "+why+" (--network)"),
				chosen("good", "claims redis (claim scope network), priority 0, running, no healthcheck, network app (--network)"),
				skipped("redis", "named redis, but containers claim redis"),
			},
		},
		{
			name: "own container unknown, --claims routes, no --network", specs: unknown,
			backends: []source.Backend{backend("10.3.0.3:6379", "id-redis")},
			candidates: []Candidate{
				skipped("evil", "claims redis, but "+why+": claims count only from the network --network names"),
				skipped("good", "claims redis, but "+why+": claims count only from the network --network names"),
				chosen("redis", "named redis, running, no healthcheck"),
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := snapshot(tt.self, appClaimer, otherClaimer, named)
			res := Resolve(tt.specs(t), snap, Options{Network: tt.network, Claims: Claims{Routes: true}})
			require.Len(t, res.Routes, 1)
			assert.Equal(t, tt.backends, res.Routes[0].Backends)
			assert.Equal(t, tt.candidates, res.Routes[0].Candidates)
		})
	}
}

// TestLabelValuesClipped: a label value of megabytes never reaches a
// warning, a reason or a route's source whole.
func TestLabelValuesClipped(t *testing.T) {
	huge := strings.Repeat("é", 2<<20) // 4 MiB, two bytes a rune
	self := amb(claims("redis"), labels(LabelPorts, "6379,"+huge), ports(tcp(6379)))
	bad := ctr("bad", "172.18.0.5", claims("redis"), labels(LabelPriority, huge, LabelNetwork, huge))
	badPort := ctr("bad-port", "172.18.0.6", claims("redis"), labels(LabelPort, huge))
	res := Resolve(nil, snapshot(self, bad, badPort), Options{})
	require.Len(t, res.Routes, 1)
	var text []string
	text = append(text, res.Warnings...)
	for _, c := range res.Routes[0].Candidates {
		text = append(text, c.Reason)
	}
	require.NotEmpty(t, res.Warnings)
	for _, s := range text {
		assert.Less(t, len(s), 1000, "%.200s", s)
	}
	assert.Contains(t, strings.Join(text, "\n"), "(4194304 bytes)")

	// The ambassador's own target label must be a name.
	res = Resolve(nil, snapshot(amb(claims(huge), ports(tcp(6379)))), Options{})
	assert.Empty(t, res.Routes)
	require.Len(t, res.Warnings, 1)
	assert.Less(t, len(res.Warnings[0]), 1000)
	assert.Contains(t, res.Warnings[0], "ignored: not a container or host name")
	// A container name longer than a DNS label is fine.
	long := strings.Repeat("x", 70)
	res = Resolve(nil, snapshot(amb(claims(long), ports(tcp(6379)))), Options{})
	assert.Empty(t, res.Warnings)
	require.Len(t, res.Routes, 1)
	assert.Equal(t, long, res.Routes[0].Target)
	for _, bad := range []string{"-x", "a b", "a/b", "é"} {
		res = Resolve(nil, snapshot(amb(claims(bad), ports(tcp(6379)))), Options{})
		assert.Empty(t, res.Routes, bad)
	}
}

func TestClip(t *testing.T) {
	assert.Equal(t, "short", clip("short"))
	assert.Equal(t, strings.Repeat("a", 64), clip(strings.Repeat("a", 64)))
	assert.Equal(t, strings.Repeat("a", 64)+"…(65 bytes)", clip(strings.Repeat("a", 65)))
	// Never cut a rune in two.
	got := clip("a" + strings.Repeat("é", 40))
	assert.Equal(t, "a"+strings.Repeat("é", 31)+"…(81 bytes)", got)
	assert.Equal(t, `"x"`, quote("x"))
	assert.Equal(t, `"`+strings.Repeat("b", 64)+`"…(100 bytes)`, quote(strings.Repeat("b", 100)))
}

// TestSelfLoop: a backend that is the ambassador's own listening address
// would make it connect to itself until descriptors run out. Static
// routes are refused at start-up (SelfLoops); a loop that appears later
// (a rewire to it) leaves the route without that backend, saying why.
func TestSelfLoop(t *testing.T) {
	local := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("172.18.0.2/32"),
	}
	for _, tt := range []struct {
		route string
		loop  bool
	}{
		{"6379:127.0.0.1:6379", true},
		{"6379:127.0.0.2", true},
		{"6379:[::1]:6379", true},
		{"6379:0.0.0.0:6379", true},
		{"6379:172.18.0.2:6379", true},
		{"6379:172.18.0.3:6379", false},
		{"6379:127.0.0.1:6380", false},
		{"6379:localhost:6379", true},
		{"6379:redis:6379", false},
	} {
		t.Run(tt.route, func(t *testing.T) {
			lookup := func(host string) []netip.Addr {
				if host == "localhost" {
					return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
				}
				return nil
			}
			err := SelfLoops([]Spec{mustParseRoute(t, tt.route)}, local, lookup)
			if !tt.loop {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "it is the ambassador's own listening address")
			assert.Contains(t, err.Error(), `--route "`+tt.route+`"`)
		})
	}
	// Another route's port counts too: 6379 → 6380 → 6379.
	err := SelfLoops([]Spec{mustParseRoute(t, "6379:127.0.0.1:6380"), mustParseRoute(t, "6380:10.0.0.1:6379")}, local, nil)
	assert.ErrorContains(t, err, `--route "6379:127.0.0.1:6380": backend 127.0.0.1:6380 refused`)

	// Resolve: a rewire to the ambassador's own address.
	specs := []Spec{mustParseRoute(t, "6379:10.0.0.1:6379")}
	res := Resolve(specs, snapshot(amb()), Options{Local: local, Overrides: map[string]string{"6379": "127.0.0.1:6379"}})
	require.Len(t, res.Routes, 1)
	assert.Empty(t, res.Routes[0].Backends)
	assert.Contains(t, res.Routes[0].NoBackend, "backend 127.0.0.1:6379 refused: it is the ambassador's own listening address")
	assert.Contains(t, res.Warnings, "route 6379 (from --route \"6379:10.0.0.1:6379\"): backend 127.0.0.1:6379 refused: it is the ambassador's own listening address, which would connect to itself until descriptors run out")
	// Without Local, nothing is refused.
	res = Resolve(specs, snapshot(amb()), Options{Overrides: map[string]string{"6379": "127.0.0.1:6379"}})
	assert.Equal(t, []source.Backend{{Addr: "127.0.0.1:6379"}}, res.Routes[0].Backends)
}

func TestParseClaims(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Claims
		str  string
		err  string
	}{
		{in: "", want: Claims{}, str: "label"},
		{in: "label", want: Claims{}, str: "label"},
		{in: "label,links,routes", want: Claims{Links: true, Routes: true}, str: "label,links,routes"},
		{in: "links", want: Claims{Links: true, NoLabel: true}, str: "links"},
		{in: " routes , label ", want: Claims{Routes: true}, str: "label,routes"},
		{in: "none", want: Claims{NoLabel: true}, str: "none"},
		{in: "none,label", err: `"none" is not one of label, links, routes (or none alone)`},
		{in: "all", err: `"all" is not one of`},
	} {
		got, err := ParseClaims(tt.in)
		if tt.err != "" {
			assert.ErrorContains(t, err, tt.err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
		assert.Equal(t, tt.str, got.String(), tt.in)
	}
}
