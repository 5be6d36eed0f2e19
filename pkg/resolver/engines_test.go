package resolver

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// The engines of the tests with several: big and small are remote hosts,
// side a second engine on the ambassador's own host.
var testEngines = map[string]Engine{
	"big":   {Remote: true, Address: "192.168.1.52"},
	"small": {Remote: true, Address: "2001:db8::7"},
	"bare":  {Remote: true},
	"junk":  {Remote: true, Address: "[192.168.1.52]:2376"},
	"zero":  {Remote: true, Address: "::"},
	"here":  {Remote: true, Address: "127.0.0.1"},
	"side":  {},
}

// remote returns a running container of engine, on that engine's own
// bridge (which the ambassador does not share), its ID derived from its
// engine and name.
func remote(engine, name string, opts ...func(*source.Container)) source.Container {
	c := ctr(name, "", nets(on(source.Network{Name: "bridge", ID: "n-bridge-" + engine}, "172.17.0.5")))
	c.ID, c.Engine = "id-"+engine+"-"+name, engine
	for _, o := range opts {
		o(&c)
	}
	return c
}

// publish adds the TCP port p, published on bindings.
func publish(p int, bindings ...source.Binding) func(*source.Container) {
	return func(c *source.Container) {
		c.Ports = append(c.Ports, source.Port{Port: p, Proto: TCP, Published: bindings})
	}
}

func bind(ip string, port int) source.Binding { return source.Binding{HostIP: ip, HostPort: port} }

// remoteChosen and remoteSkipped are the candidates of remote containers.
func remoteChosen(engine, name, reason string) Candidate {
	return Candidate{ID: "id-" + engine + "-" + name, Name: name, Engine: engine, Chosen: true, Reason: reason}
}

func remoteSkipped(engine, name, reason string) Candidate {
	return Candidate{ID: "id-" + engine + "-" + name, Name: name, Engine: engine, Reason: reason}
}

// TestRemoteClaimers: on the route of the ambassador's own label
// (ambassador.target=redis, port 6379), a claimer of a remote engine is
// reached at its engine's host and the port it publishes there for the
// backend port; one that publishes nothing reachable is no candidate, and
// says why. At the top priority, local claimers are preferred to remote
// ones, unless NoLocality.
func TestRemoteClaimers(t *testing.T) {
	const claimReason = "claims redis (claim scope network; engine big, reached at 192.168.1.52:32768), priority 0, running, no healthcheck"
	self := amb(claims("redis"), ports(tcp(6379)))
	local := ctr("near", "172.18.0.3", claims("redis"))
	ambSkipped := skipped("amb", "the ambassador itself")

	for _, tt := range []struct {
		name       string
		containers []source.Container
		opts       Options
		backends   []source.Backend
		candidates []Candidate
		noBackend  string
		warnings   []string
	}{
		{
			name:       "published on 0.0.0.0: the engine's address",
			containers: []source.Container{remote("big", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32768)))},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far", claimReason)},
		},
		{
			name:       "published on every address, IPv4 and IPv6, as docker run -p does",
			containers: []source.Container{remote("big", "far", claims("redis"), publish(6379, bind("::", 32768), bind("0.0.0.0", 32768)))},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far", claimReason)},
		},
		{
			name:       "an empty host IP is every address",
			containers: []source.Container{remote("big", "far", claims("redis"), publish(6379, bind("", 32768)))},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far", claimReason)},
		},
		{
			name:       "published on a specific address: that address",
			containers: []source.Container{remote("big", "far", claims("redis"), publish(6379, bind("10.0.0.7", 32768)))},
			backends:   []source.Backend{backend("10.0.0.7:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far", "claims redis (claim scope network; engine big, reached at 10.0.0.7:32768), priority 0, running, no healthcheck")},
		},
		{
			name: "a binding on the engine's address comes before one elsewhere",
			containers: []source.Container{remote("big", "far", claims("redis"),
				publish(6379, bind("10.0.0.7", 30000), bind("192.168.1.52", 32768)))},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far", claimReason)},
		},
		{
			name: "IPv6: the engine's address bracketed",
			containers: []source.Container{remote("small", "far", claims("redis"),
				publish(6379, bind("::", 32768)))},
			backends: []source.Backend{backend("[2001:db8::7]:32768", "id-small-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("small", "far",
				"claims redis (claim scope network; engine small, reached at [2001:db8::7]:32768), priority 0, running, no healthcheck")},
		},
		{
			name: "IPv6: a specific address bracketed",
			containers: []source.Container{remote("big", "far", claims("redis"),
				publish(6379, bind("2001:db8::9", 32768)))},
			backends: []source.Backend{backend("[2001:db8::9]:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far",
				"claims redis (claim scope network; engine big, reached at [2001:db8::9]:32768), priority 0, running, no healthcheck")},
		},
		{
			name:       "nothing published: no candidate, and says why",
			containers: []source.Container{remote("big", "far", claims("redis"), ports(tcp(6379)))},
			candidates: []Candidate{ambSkipped, remoteSkipped("big", "far", "on engine big, publishes nothing for port 6379 (docker run -p 6379)")},
			noBackend:  "no usable container for redis (far: on engine big, publishes nothing for port 6379 (docker run -p 6379))",
			warnings:   []string{"container far on engine big: skipped: it publishes nothing for port 6379; publish it (docker run -p 6379)"},
		},
		{
			name:       "another port published, not the backend port",
			containers: []source.Container{remote("big", "far", claims("redis"), publish(6380, bind("0.0.0.0", 32768)))},
			candidates: []Candidate{ambSkipped, remoteSkipped("big", "far", "on engine big, publishes nothing for port 6379 (docker run -p 6379)")},
			noBackend:  "no usable container for redis (far: on engine big, publishes nothing for port 6379 (docker run -p 6379))",
			warnings:   []string{"container far on engine big: skipped: it publishes nothing for port 6379; publish it (docker run -p 6379)"},
		},
		{
			name: "published on its host's loopback only",
			containers: []source.Container{remote("big", "far", claims("redis"),
				publish(6379, bind("127.0.0.1", 32768), bind("::1", 32768)))},
			candidates: []Candidate{ambSkipped, remoteSkipped("big", "far",
				"on engine big, publishes port 6379 only where the ambassador cannot reach it (127.0.0.1:32768: its host's loopback; [::1]:32768: its host's loopback)")},
			noBackend: "no usable container for redis (far: on engine big, publishes port 6379 only where the ambassador cannot reach it (127.0.0.1:32768: its host's loopback; [::1]:32768: its host's loopback))",
		},
		{
			name: "the loopback binding is passed over for a reachable one",
			containers: []source.Container{remote("big", "far", claims("redis"),
				publish(6379, bind("127.0.0.1", 30000), bind("0.0.0.0", 32768)))},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far", claimReason)},
		},
		{
			name: "every address, but the engine's address unknown",
			containers: []source.Container{remote("bare", "far", claims("redis"),
				publish(6379, bind("0.0.0.0", 32768)))},
			candidates: []Candidate{ambSkipped, remoteSkipped("bare", "far",
				"on engine bare, publishes port 6379 only where the ambassador cannot reach it (0.0.0.0:32768: every address of its host, but the engine's address is unknown or invalid (address= in --engine))")},
			noBackend: "no usable container for redis (far: on engine bare, publishes port 6379 only where the ambassador cannot reach it (0.0.0.0:32768: every address of its host, but the engine's address is unknown or invalid (address= in --engine)))",
		},
		{
			name: "every address, but the engine's address invalid",
			containers: []source.Container{remote("junk", "far", claims("redis"),
				publish(6379, bind("::", 32768)))},
			candidates: []Candidate{ambSkipped, remoteSkipped("junk", "far",
				"on engine junk, publishes port 6379 only where the ambassador cannot reach it ([::]:32768: every address of its host, but the engine's address is unknown or invalid (address= in --engine))")},
			noBackend: "no usable container for redis (far: on engine junk, publishes port 6379 only where the ambassador cannot reach it ([::]:32768: every address of its host, but the engine's address is unknown or invalid (address= in --engine)))",
		},
		{
			name: "every address, and the engine's address unspecified: not a host's",
			containers: []source.Container{remote("zero", "far", claims("redis"),
				publish(6379, bind("0.0.0.0", 32768)))},
			candidates: []Candidate{ambSkipped, remoteSkipped("zero", "far",
				"on engine zero, publishes port 6379 only where the ambassador cannot reach it (0.0.0.0:32768: every address of its host, but the engine's address is unknown or invalid (address= in --engine))")},
			noBackend: "no usable container for redis (far: on engine zero, publishes port 6379 only where the ambassador cannot reach it (0.0.0.0:32768: every address of its host, but the engine's address is unknown or invalid (address= in --engine)))",
		},
		{
			name: "an engine at a loopback address runs beside the ambassador: its loopback bindings are reachable",
			containers: []source.Container{remote("here", "far", claims("redis"),
				publish(6379, bind("127.0.0.1", 32768)))},
			backends: []source.Backend{backend("127.0.0.1:32768", "id-here-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("here", "far",
				"claims redis (claim scope network; engine here, reached at 127.0.0.1:32768), priority 0, running, no healthcheck")},
		},
		{
			name: "malformed bindings are passed over",
			containers: []source.Container{remote("big", "far", claims("redis"),
				publish(6379, bind("0.0.0.0", 0), bind("nowhere", 30000), bind("fe80::1%eth0", 31000), bind("10.0.0.7", 32768)))},
			backends: []source.Backend{backend("10.0.0.7:32768", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far",
				"claims redis (claim scope network; engine big, reached at 10.0.0.7:32768), priority 0, running, no healthcheck")},
		},
		{
			name: "ambassador.port picks the binding of that port",
			containers: []source.Container{remote("big", "far", claims("redis"), labels(LabelPort, "7000"),
				publish(6379, bind("0.0.0.0", 32768)), publish(7000, bind("0.0.0.0", 32769)))},
			backends: []source.Backend{backend("192.168.1.52:32769", "id-big-far")},
			candidates: []Candidate{ambSkipped, remoteChosen("big", "far",
				"claims redis (claim scope network; engine big, reached at 192.168.1.52:32769), priority 0, running, no healthcheck, port 7000 (ambassador.port)")},
		},
		{
			name:       "ambassador.port names a port it does not publish",
			containers: []source.Container{remote("big", "far", claims("redis"), labels(LabelPort, "7000"), publish(6379, bind("0.0.0.0", 32768)))},
			candidates: []Candidate{ambSkipped, remoteSkipped("big", "far", "on engine big, publishes nothing for port 7000 (docker run -p 7000)")},
			noBackend:  "no usable container for redis (far: on engine big, publishes nothing for port 7000 (docker run -p 7000))",
			warnings:   []string{"container far on engine big: skipped: it publishes nothing for port 7000; publish it (docker run -p 7000)"},
		},
		{
			name:       "a UDP port published is not the TCP one",
			containers: []source.Container{remote("big", "far", claims("redis"), ports(source.Port{Port: 6379, Proto: "udp", Published: []source.Binding{bind("0.0.0.0", 32768)}}))},
			candidates: []Candidate{ambSkipped, remoteSkipped("big", "far", "on engine big, publishes nothing for port 6379 (docker run -p 6379)")},
			noBackend:  "no usable container for redis (far: on engine big, publishes nothing for port 6379 (docker run -p 6379))",
			warnings:   []string{"container far on engine big: skipped: it publishes nothing for port 6379; publish it (docker run -p 6379)"},
		},
		{
			name:       "unhealthy, paused, an ambassador: as on the local engine",
			containers: []source.Container{remote("big", "a", claims("redis"), health("unhealthy"), publish(6379, bind("0.0.0.0", 1))), remote("big", "b", claims("redis"), state("paused")), remote("big", "c", claims("redis"), labels(LabelRole, "ambassador"), publish(6379, bind("0.0.0.0", 3)))},
			candidates: []Candidate{
				remoteSkipped("big", "a", "unhealthy"), ambSkipped, remoteSkipped("big", "b", "paused"),
				remoteSkipped("big", "c", "ambassador (ambassador.role=ambassador)"),
			},
			noBackend: "no usable container for redis (a: unhealthy; b: paused; c: ambassador (ambassador.role=ambassador))",
		},
		{
			name:       "at equal priority the local claimer is preferred",
			containers: []source.Container{local, remote("big", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32768)))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-near")},
			candidates: []Candidate{
				ambSkipped,
				remoteSkipped("big", "far", "remote (engine big, reached at 192.168.1.52:32768); a local claimer of equal priority is preferred (--prefer-local)"),
				chosen("near", "claims redis (claim scope network), priority 0, running, no healthcheck"),
			},
		},
		{
			name:       "NoLocality: balanced together",
			containers: []source.Container{local, remote("big", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32768)))},
			opts:       Options{NoLocality: true},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-far"), backend("172.18.0.3:6379", "id-near")},
			candidates: []Candidate{
				ambSkipped,
				remoteChosen("big", "far", claimReason),
				chosen("near", "claims redis (claim scope network), priority 0, running, no healthcheck"),
			},
		},
		{
			name: "the local claimer unusable: the remote one serves",
			containers: []source.Container{ctr("near", "172.18.0.3", claims("redis"), health("starting")),
				remote("big", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32768)))},
			backends: []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{
				ambSkipped, remoteChosen("big", "far", claimReason),
				skipped("near", "health starting (not yet healthy)"),
			},
		},
		{
			name: "a remote claimer of higher priority beats a local one",
			containers: []source.Container{local,
				remote("big", "far", claims("redis"), labels(LabelPriority, "10"), publish(6379, bind("0.0.0.0", 32768)))},
			backends: []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{
				ambSkipped,
				remoteChosen("big", "far", "claims redis (claim scope network; engine big, reached at 192.168.1.52:32768), priority 10, running, no healthcheck"),
				skipped("near", "lower priority (0 < 10)"),
			},
		},
		{
			name: "a local claimer of higher priority beats a remote one",
			containers: []source.Container{ctr("near", "172.18.0.3", claims("redis"), labels(LabelPriority, "1")),
				remote("big", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32768)))},
			backends: []source.Backend{backend("172.18.0.3:6379", "id-near")},
			candidates: []Candidate{
				ambSkipped, remoteSkipped("big", "far", "lower priority (0 < 1)"),
				chosen("near", "claims redis (claim scope network), priority 1, running, no healthcheck"),
			},
		},
		{
			name: "remote claimers of equal priority on two engines, no local one: both",
			containers: []source.Container{
				remote("big", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32768))),
				remote("small", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32770))),
			},
			backends: []source.Backend{backend("192.168.1.52:32768", "id-big-far"), backend("[2001:db8::7]:32770", "id-small-far")},
			candidates: []Candidate{
				ambSkipped, remoteChosen("big", "far", claimReason),
				remoteChosen("small", "far", "claims redis (claim scope network; engine small, reached at [2001:db8::7]:32770), priority 0, running, no healthcheck"),
			},
		},
		{
			name: "a second engine on the ambassador's host is local: its network, and preferred",
			containers: []source.Container{
				remote("side", "beside", claims("redis"), nets(on(app, "172.18.0.9"))),
				remote("big", "far", claims("redis"), publish(6379, bind("0.0.0.0", 32768))),
			},
			backends: []source.Backend{backend("172.18.0.9:6379", "id-side-beside")},
			candidates: []Candidate{
				ambSkipped,
				{ID: "id-side-beside", Name: "beside", Engine: "side", Chosen: true, Reason: "claims redis (claim scope network), priority 0, running, no healthcheck"},
				remoteSkipped("big", "far", "remote (engine big, reached at 192.168.1.52:32768); a local claimer of equal priority is preferred (--prefer-local)"),
			},
		},
		{
			name:       "a remote container with the ambassador's ID is not the ambassador",
			containers: []source.Container{remote("big", "amb", claims("redis"), func(c *source.Container) { c.ID = "id-amb" }, publish(6379, bind("0.0.0.0", 32768)))},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-amb")},
			candidates: []Candidate{ambSkipped, {ID: "id-amb", Name: "amb", Engine: "big", Chosen: true, Reason: claimReason}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Engines = testEngines
			res := Resolve(nil, snapshot(self, tt.containers...), opts)
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			assert.Equal(t, tt.backends, rt.Backends)
			assert.Equal(t, tt.candidates, rt.Candidates)
			assert.Equal(t, tt.noBackend, rt.NoBackend)
			assert.Equal(t, tt.warnings, res.Warnings)
		})
	}
}

// TestRemoteClaimScope: the claim scopes project and label apply to remote
// claimers as to local ones; the default scope, network, admits a remote
// claimer, whose engine the operator configured, while the local rule
// that claims count only from --network when the ambassador's own
// networks are unknown stays as it was.
func TestRemoteClaimScope(t *testing.T) {
	inShop := labels(LabelComposeProject, "shop")
	pub := publish(6379, bind("0.0.0.0", 32768))
	for _, tt := range []struct {
		name       string
		self       *source.Container
		scope      ClaimScope
		network    string
		containers []source.Container
		backends   []source.Backend
		candidates []Candidate
	}{
		{
			name: "project: the remote claimer of the ambassador's project", self: amb(inShop), scope: ClaimScope{Project: true},
			containers: []source.Container{
				remote("big", "mine", claims("redis"), inShop, pub),
				remote("big", "theirs", claims("redis"), labels(LabelComposeProject, "other"), pub),
			},
			backends: []source.Backend{backend("192.168.1.52:32768", "id-big-mine")},
			candidates: []Candidate{
				remoteChosen("big", "mine", "claims redis (claim scope project; engine big, reached at 192.168.1.52:32768), priority 0, running, no healthcheck"),
				remoteSkipped("big", "theirs", "claims redis, but outside the claim scope: not in compose project shop"),
			},
		},
		{
			name: "label: only the remote claimer with the label", self: amb(), scope: ClaimScope{Label: "trusted=yes"},
			containers: []source.Container{
				remote("big", "mine", claims("redis"), labels("trusted", "yes"), pub),
				remote("big", "theirs", claims("redis"), pub),
			},
			backends: []source.Backend{backend("192.168.1.52:32768", "id-big-mine")},
			candidates: []Candidate{
				remoteChosen("big", "mine", "claims redis (claim scope label:trusted=yes; engine big, reached at 192.168.1.52:32768), priority 0, running, no healthcheck"),
				remoteSkipped("big", "theirs", "claims redis, but outside the claim scope: no label trusted=yes"),
			},
		},
		{
			name: "network, own networks unknown, no --network: the local claimer refused, the remote one admitted",
			containers: []source.Container{
				ctr("near", "172.18.0.3", claims("redis")),
				remote("big", "far", claims("redis"), pub),
			},
			backends: []source.Backend{backend("192.168.1.52:32768", "id-big-far")},
			candidates: []Candidate{
				remoteChosen("big", "far", "claims redis (claim scope network; engine big, reached at 192.168.1.52:32768), priority 0, running, no healthcheck"),
				skipped("near", "claims redis, but the ambassador's own networks are unknown (it runs outside a container the engine knows, or on the host network): claims count only from the network --network names"),
			},
		},
		{
			name: "network, own networks unknown, --network app: the local claimer on app preferred", network: "app",
			containers: []source.Container{
				ctr("near", "172.18.0.3", claims("redis")),
				remote("big", "far", claims("redis"), pub),
			},
			backends: []source.Backend{backend("172.18.0.3:6379", "id-near")},
			candidates: []Candidate{
				remoteSkipped("big", "far", "remote (engine big, reached at 192.168.1.52:32768); a local claimer of equal priority is preferred (--prefer-local)"),
				chosen("near", "claims redis (claim scope network), priority 0, running, no healthcheck, network app (--network)"),
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{Engines: testEngines, ClaimScope: tt.scope, Network: tt.network, Claims: Claims{Routes: true}}
			res := Resolve([]Spec{mustParseRoute(t, "6379:redis:6379")}, snapshot(tt.self, tt.containers...), opts)
			require.Len(t, res.Routes, 1)
			assert.Equal(t, tt.backends, res.Routes[0].Backends)
			assert.Equal(t, tt.candidates, res.Routes[0].Candidates)
		})
	}
}

// TestEngineRoutes: a route target without an engine is looked up by name
// on the local engine only; ENGINE/NAME on that engine only, with no DNS
// fallback; claims, where they count, come from every engine.
func TestEngineRoutes(t *testing.T) {
	pub := publish(6379, bind("0.0.0.0", 32768))
	nearRedis := ctr("redis", "172.18.0.3")
	bigRedis := remote("big", "redis", pub)
	smallRedis := remote("small", "redis", publish(6379, bind("0.0.0.0", 32769)))
	for _, tt := range []struct {
		name       string
		route      string
		claims     Claims
		engines    map[string]Engine // testEngines when nil
		containers []source.Container
		backends   []source.Backend
		candidates []Candidate
		noBackend  string
	}{
		{
			name: "no engine: the local container of that name only", route: "6379:redis:6379",
			containers: []source.Container{nearRedis, bigRedis, smallRedis},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name: "no engine, only remote containers of that name: DNS as today", route: "6379:redis:6379",
			containers: []source.Container{bigRedis},
			noBackend:  "no container is named redis (run a container named redis); fallback redis:6379 not used: a container name is resolved from the engine, not by DNS",
		},
		{
			name: "big/redis: the container named redis on big only", route: "6379:big/redis:6379",
			containers: []source.Container{nearRedis, bigRedis, smallRedis},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-redis")},
			candidates: []Candidate{remoteChosen("big", "redis", "named redis (engine big, reached at 192.168.1.52:32768), running, no healthcheck")},
		},
		{
			name: "big/redis with a backend port of its own", route: "7000:big/redis:6379",
			containers: []source.Container{bigRedis},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-redis")},
			candidates: []Candidate{remoteChosen("big", "redis", "named redis (engine big, reached at 192.168.1.52:32768), running, no healthcheck")},
		},
		{
			name: "big/redis, not on big: no backend and no fallback", route: "6379:big/redis:6379",
			containers: []source.Container{nearRedis, smallRedis},
			noBackend:  "no container is named redis on engine big (run one there)",
		},
		{
			name: "big/redis publishing nothing", route: "6379:big/redis:6379",
			containers: []source.Container{remote("big", "redis")},
			candidates: []Candidate{remoteSkipped("big", "redis", "on engine big, publishes nothing for port 6379 (docker run -p 6379)")},
			noBackend:  "no usable container for redis (redis: on engine big, publishes nothing for port 6379 (docker run -p 6379))",
		},
		{
			name: "an engine that is not known", route: "6379:nowhere/redis:6379",
			containers: []source.Container{nearRedis, bigRedis},
			noBackend:  "no engine named nowhere (see --engine)",
		},
		{
			name: "an engine the snapshot knows, not the options", route: "6379:side2/redis:6379",
			containers: []source.Container{nearRedis, remote("side2", "redis", nets(on(app, "172.18.0.7")))},
			backends:   []source.Backend{backend("172.18.0.7:6379", "id-side2-redis")},
			candidates: []Candidate{{ID: "id-side2-redis", Name: "redis", Engine: "side2", Chosen: true, Reason: "named redis, running, no healthcheck"}},
		},
		{
			name: "a single engine of any name is the local one", route: "6379:redis:6379", engines: map[string]Engine{},
			containers: []source.Container{remote("docker", "redis", nets(on(app, "172.18.0.3")))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-docker-redis")},
			candidates: []Candidate{{ID: "id-docker-redis", Name: "redis", Engine: "docker", Chosen: true, Reason: "named redis, running, no healthcheck"}},
		},
		{
			name: "big/redis, claims invited: claimers of every engine first", route: "6379:big/redis:6379", claims: Claims{Routes: true},
			containers: []source.Container{bigRedis, ctr("near", "172.18.0.4", claims("redis")), remote("small", "far", claims("redis"), pub)},
			backends:   []source.Backend{backend("172.18.0.4:6379", "id-near")},
			candidates: []Candidate{
				remoteSkipped("small", "far", "remote (engine small, reached at [2001:db8::7]:32768); a local claimer of equal priority is preferred (--prefer-local)"),
				chosen("near", "claims redis (claim scope network), priority 0, running, no healthcheck"),
				remoteSkipped("big", "redis", "named redis, but containers claim redis"),
			},
		},
		{
			name: "big/redis, claims invited, none there", route: "6379:big/redis:6379", claims: Claims{Routes: true},
			containers: []source.Container{nearRedis, smallRedis},
			noBackend:  "no container claims redis, nor is named redis on engine big (run one there, or label one ambassador.target=redis)",
		},
		{
			name: "big/redis, claims not invited: the name only", route: "6379:big/redis:6379",
			containers: []source.Container{bigRedis, ctr("near", "172.18.0.4", claims("redis"))},
			backends:   []source.Backend{backend("192.168.1.52:32768", "id-big-redis")},
			candidates: []Candidate{
				skipped("near", "claims redis, but claims do not count on a route from --route, which follows the container named redis (--claims label,routes admits them)"),
				remoteChosen("big", "redis", "named redis (engine big, reached at 192.168.1.52:32768), running, no healthcheck"),
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			engines := tt.engines
			if engines == nil {
				engines = testEngines
			}
			spec := mustParseRoute(t, tt.route)
			res := Resolve([]Spec{spec}, snapshot(amb(), tt.containers...), Options{Engines: engines, Claims: tt.claims})
			require.Len(t, res.Routes, 1)
			rt := res.Routes[0]
			assert.Equal(t, spec.Engine, rt.Engine)
			assert.Equal(t, "redis", rt.Target)
			assert.Equal(t, tt.backends, rt.Backends)
			assert.Equal(t, tt.candidates, rt.Candidates)
			assert.Equal(t, tt.noBackend, rt.NoBackend)
		})
	}
}

// TestEngineRoutesElsewhere: what an engine route does beyond the
// election: without a snapshot, under a rewire, beside a link of the same
// port, with two backend ports, and at the ambassador's own address.
func TestEngineRoutesElsewhere(t *testing.T) {
	spec := mustParseRoute(t, "6379:big/redis:6379")
	t.Run("without a snapshot: no fallback", func(t *testing.T) {
		assert.Equal(t, []Route{{Name: "6379", Protocol: TCP, Listen: 6379, Source: spec.Source, Target: "redis", Engine: "big", Port: 6379, NoBackend: noEngine}}, Static([]Spec{spec}))
	})

	t.Run("a spec made by hand naming the local engine is the local name", func(t *testing.T) {
		local := Spec{Listen: 6379, Target: "redis", Engine: LocalEngine, Backends: []Endpoint{{Host: "redis", Port: 6379}}, Source: "test"}
		res := Resolve([]Spec{local}, snapshot(amb(), ctr("redis", "172.18.0.3"), remote("big", "redis", publish(6379, bind("0.0.0.0", 32768)))), Options{Engines: testEngines})
		require.Len(t, res.Routes, 1)
		assert.Equal(t, []source.Backend{backend("172.18.0.3:6379", "id-redis")}, res.Routes[0].Backends)
	})

	t.Run("a self-loop check at start-up leaves it alone", func(t *testing.T) {
		local := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		assert.NoError(t, SelfLoops([]Spec{spec}, local, func(string) []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.1")} }))
	})

	cache := remote("big", "cache", publish(6379, bind("0.0.0.0", 32770)))
	redis := remote("big", "redis", publish(6379, bind("0.0.0.0", 32768)), publish(6380, bind("0.0.0.0", 32769)))
	localCache := ctr("cache", "172.18.0.4")
	snap := snapshot(amb(), cache, redis, localCache)
	t.Run("rewired to ENGINE/NAME, and back to a local name", func(t *testing.T) {
		specs := []Spec{spec, mustParseRoute(t, "7000:redis:6379")}
		res := Resolve(specs, snap, Options{Engines: testEngines, Overrides: map[string]string{"6379": "cache", "7000": "big/cache"}})
		require.Len(t, res.Routes, 2)
		assert.Equal(t, []source.Backend{backend("172.18.0.4:6379", "id-cache")}, res.Routes[0].Backends)
		assert.Equal(t, "", res.Routes[0].Engine)
		assert.Equal(t, []source.Backend{backend("192.168.1.52:32770", "id-big-cache")}, res.Routes[1].Backends)
		assert.Equal(t, "big", res.Routes[1].Engine)
		assert.Equal(t, "cache", res.Routes[1].Target)
		assert.Equal(t, "big/cache", res.Routes[1].Override)
	})

	t.Run("one election per backend port", func(t *testing.T) {
		specs := []Spec{spec, mustParseRoute(t, "6380:big/redis")}
		res := Resolve(specs, snap, Options{Engines: testEngines})
		require.Len(t, res.Routes, 2)
		assert.Equal(t, []source.Backend{backend("192.168.1.52:32768", "id-big-redis")}, res.Routes[0].Backends)
		assert.Equal(t, []source.Backend{backend("192.168.1.52:32769", "id-big-redis")}, res.Routes[1].Backends)
	})

	t.Run("a link of the same port is another route", func(t *testing.T) {
		self := amb(links(source.Link{Name: "redis", Alias: "redis"}))
		res := Resolve([]Spec{spec}, snapshot(self, redis, ctr("redis", "172.18.0.3", ports(tcp(6379)))), Options{Engines: testEngines})
		require.Len(t, res.Routes, 1)
		assert.Equal(t, "big", res.Routes[0].Engine)
		assert.Equal(t, []string{`link redis:redis: listen port 6379 skipped: already taken by --route "6379:big/redis:6379"`}, res.Warnings)
	})

	t.Run("published at the ambassador's own listening address", func(t *testing.T) {
		engines := map[string]Engine{"big": {Remote: true, Address: "127.0.0.1"}}
		looped := remote("big", "redis", publish(6379, bind("0.0.0.0", 6379)))
		res := Resolve([]Spec{spec}, snapshot(amb(), looped), Options{Engines: engines, Local: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		require.Len(t, res.Routes, 1)
		assert.Empty(t, res.Routes[0].Backends)
		assert.Equal(t, []Candidate{remoteSkipped("big", "redis",
			"backend 127.0.0.1:6379 refused: it is the ambassador's own listening address, which would connect to itself until descriptors run out")}, res.Routes[0].Candidates)
	})
}

// TestSelfAndLinksAreLocal: the ambassador's own container and its links
// are on the local engine; a remote engine's container that looks like
// the ambassador, or bears a linked name, is neither.
func TestSelfAndLinksAreLocal(t *testing.T) {
	t.Run("a Self of a remote engine is ignored", func(t *testing.T) {
		self := remote("big", "amb", claims("redis"), ports(tcp(6379)), func(c *source.Container) { c.ID = "id-amb" })
		snap := &source.Snapshot{Self: &self, Containers: []source.Container{self}}
		res := Resolve(nil, snap, Options{Engines: testEngines})
		assert.Empty(t, res.Routes, "the label of a remote container is no ambassador's")
	})
	t.Run("a link names a local container", func(t *testing.T) {
		self := amb(links(source.Link{Name: "redis", Alias: "redis"}))
		res := Resolve(nil, snapshot(self, remote("big", "redis", ports(tcp(6379)))), Options{Engines: testEngines})
		assert.Empty(t, res.Routes)
		assert.Equal(t, []string{"link redis:redis: no route: container redis is not running"}, res.Warnings)
	})
	t.Run("a classic link variable's target is local", func(t *testing.T) {
		self := amb(links(source.Link{Name: "redis", Alias: "redis"}))
		specs := mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://172.17.0.9:6379")
		res := Resolve(specs, snapshot(self, remote("big", "redis", publish(6379, bind("0.0.0.0", 32768)))), Options{Engines: testEngines})
		require.Len(t, res.Routes, 1)
		assert.Empty(t, res.Routes[0].Backends)
		assert.Empty(t, res.Routes[0].Candidates)
	})
}

func TestParseOverrideEngine(t *testing.T) {
	for _, ok := range []string{"big/redis", "big-2/my_db.1"} {
		assert.NoError(t, ParseOverride(ok), ok)
	}
	for bad, want := range map[string]string{
		"local/redis":                         `"local" is the engine the ambassador runs on`,
		"Big/redis":                           `engine name "Big"`,
		"big/10.0.0.1":                        `"10.0.0.1" is not a container name`,
		"big/a/b":                             `invalid character '/'`,
		"big/":                                "missing host",
		"big/redis.":                          `"redis." is not a container name`,
		"big/redis:80":                        `invalid character '/'`,
		"/redis":                              "empty engine name",
		"big/re dis":                          `invalid character ' '`,
		"big/-redis":                          "label starting or ending with '-'",
		"big/[::1]":                           "too many colons",
		"0123456789abcdef0123456789abcdef0/x": "more than 32",
	} {
		assert.ErrorContains(t, ParseOverride(bad), want, bad)
	}
}
