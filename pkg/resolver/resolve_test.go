package resolver

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// The networks of the test snapshots. The ambassador is on app unless a
// test says otherwise.
var (
	app   = source.Network{Name: "app", ID: "n-app"}
	back  = source.Network{Name: "back", ID: "n-back"}
	front = source.Network{Name: "front", ID: "n-front"}
	other = source.Network{Name: "other", ID: "n-other"}
)

// on returns n with the container's IP on it.
func on(n source.Network, ip string) source.Network {
	n.IP = ip
	return n
}

// amb is the ambassador's own container.
func amb(opts ...func(*source.Container)) *source.Container {
	c := ctr("amb", "172.18.0.2", labels(LabelRole, "ambassador"))
	for _, o := range opts {
		o(&c)
	}
	return &c
}

// ctr returns a running container without healthcheck on app at ip, its
// ID derived from its name.
func ctr(name, ip string, opts ...func(*source.Container)) source.Container {
	c := source.Container{ID: "id-" + name, Name: name, State: "running", Networks: []source.Network{on(app, ip)}}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// labels adds labels given as key, value, key, value...
func labels(kv ...string) func(*source.Container) {
	return func(c *source.Container) {
		if c.Labels == nil {
			c.Labels = make(map[string]string)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			c.Labels[kv[i]] = kv[i+1]
		}
	}
}

func claims(target string) func(*source.Container) { return labels(LabelTarget, target) }

func state(s string) func(*source.Container)  { return func(c *source.Container) { c.State = s } }
func health(h string) func(*source.Container) { return func(c *source.Container) { c.Health = h } }
func nets(n ...source.Network) func(*source.Container) {
	return func(c *source.Container) { c.Networks = n }
}
func ports(p ...source.Port) func(*source.Container) {
	return func(c *source.Container) { c.Ports = p }
}
func links(l ...source.Link) func(*source.Container) {
	return func(c *source.Container) { c.Links = l }
}

func tcp(p int) source.Port { return source.Port{Port: p, Proto: "tcp"} }

// snapshot returns a snapshot of self and containers, sorted by name as the
// watcher publishes them.
func snapshot(self *source.Container, containers ...source.Container) *source.Snapshot {
	if self != nil {
		containers = append(containers, *self)
	}
	slices.SortFunc(containers, func(a, b source.Container) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return &source.Snapshot{Self: self, Containers: containers}
}

// mustParseRoute parses an explicit route known to be valid.
func mustParseRoute(t *testing.T, s string) Spec {
	t.Helper()
	spec, err := ParseRoute(s)
	require.NoError(t, err)
	return spec
}

// mustParseClassicEnv parses classic variables known to be valid.
func mustParseClassicEnv(t *testing.T, environ ...string) []Spec {
	t.Helper()
	specs, _, err := ParseClassicEnv(environ)
	require.NoError(t, err)
	return specs
}

func backend(addr, id string) source.Backend { return source.Backend{Addr: addr, ID: id} }

func chosen(name, reason string) Candidate {
	return Candidate{ID: "id-" + name, Name: name, Chosen: true, Reason: reason}
}

func skipped(name, reason string) Candidate {
	return Candidate{ID: "id-" + name, Name: name, Reason: reason}
}

// TestResolveTarget covers how a target name resolves to containers: claims,
// priority, health, state, ambassadors, Self, names, ports and networks. It
// resolves one explicit route to the target redis on port 6379, with a
// fallback a host name that only DNS resolves (redis.example.com), or the
// same route without fallback.
func TestResolveTarget(t *testing.T) {
	fallback := []source.Backend{{Addr: "redis.example.com:6379"}}
	tests := []struct {
		name       string
		self       *source.Container // amb() when nil, unless noSelf
		noSelf     bool
		containers []source.Container
		opts       Options
		noFallback bool
		// defaultClaims leaves Options.Claims as the case has it: the
		// runner otherwise admits claims on the explicit route.
		defaultClaims bool

		backends   []source.Backend
		candidates []Candidate
		noBackend  string
		warnings   []string
	}{
		{
			name:       "no container: fallback",
			containers: []source.Container{ctr("web", "172.18.0.9")},
			backends:   fallback,
		},
		{
			name:       "no container, no fallback",
			noFallback: true,
			backends:   nil,
			noBackend:  "no container claims or is named redis (run a container named redis, or label one ambassador.target=redis)",
		},
		{
			name:       "named, no healthcheck",
			containers: []source.Container{ctr("redis", "172.18.0.3")},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name:       "named, healthy",
			containers: []source.Container{ctr("redis", "172.18.0.3", health("healthy"))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, healthy")},
		},
		{
			name:       "named, unhealthy: fallback",
			containers: []source.Container{ctr("redis", "172.18.0.3", health("unhealthy"))},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "unhealthy")},
		},
		{
			name:       "named, unhealthy, no fallback",
			noFallback: true,
			containers: []source.Container{ctr("redis", "172.18.0.3", health("unhealthy"))},
			candidates: []Candidate{skipped("redis", "unhealthy")},
			noBackend:  "no usable container for redis (redis: unhealthy)",
		},
		{
			name:       "named, health starting",
			containers: []source.Container{ctr("redis", "172.18.0.3", health("starting"))},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "health starting (not yet healthy)")},
		},
		{
			name:       "named, unknown health",
			containers: []source.Container{ctr("redis", "172.18.0.3", health("weird"))},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", `health "weird"`)},
		},
		{
			name:       "named, paused: no new connections",
			containers: []source.Container{ctr("redis", "172.18.0.3", state("paused"))},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "paused")},
		},
		{
			name:       "named, restarting",
			containers: []source.Container{ctr("redis", "172.18.0.3", state("restarting"))},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "not running (restarting)")},
		},
		{
			name:       "named, state unknown",
			containers: []source.Container{ctr("redis", "172.18.0.3", state(""))},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "not running (state unknown)")},
		},
		{
			name:       "named is an ambassador: a name is explicit",
			containers: []source.Container{ctr("redis", "172.18.0.3", labels(LabelRole, "ambassador"))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name:       "a claimer beats the named container",
			containers: []source.Container{ctr("redis", "172.18.0.3"), ctr("cache", "172.18.0.4", claims("redis"))},
			backends:   []source.Backend{backend("172.18.0.4:6379", "id-cache")},
			candidates: []Candidate{
				chosen("cache", "claims redis (claim scope network), priority 0, running, no healthcheck"),
				skipped("redis", "named redis, but containers claim redis"),
			},
		},
		{
			name: "equal claimers are all chosen, by name",
			containers: []source.Container{
				ctr("redis-2", "172.18.0.5", claims("redis"), health("healthy")),
				ctr("redis-1", "172.18.0.4", claims("redis")),
				ctr("web", "172.18.0.6", claims("web")),
			},
			backends: []source.Backend{backend("172.18.0.4:6379", "id-redis-1"), backend("172.18.0.5:6379", "id-redis-2")},
			candidates: []Candidate{
				chosen("redis-1", "claims redis (claim scope network), priority 0, running, no healthcheck"),
				chosen("redis-2", "claims redis (claim scope network), priority 0, healthy"),
			},
		},
		{
			name: "highest priority wins",
			containers: []source.Container{
				ctr("blue", "172.18.0.4", claims("redis")),
				ctr("green", "172.18.0.5", claims("redis"), labels(LabelPriority, "10")),
				ctr("standby", "172.18.0.6", claims("redis"), labels(LabelPriority, "-1")),
			},
			backends: []source.Backend{backend("172.18.0.5:6379", "id-green")},
			candidates: []Candidate{
				skipped("blue", "lower priority (0 < 10)"),
				chosen("green", "claims redis (claim scope network), priority 10, running, no healthcheck"),
				skipped("standby", "lower priority (-1 < 10)"),
			},
		},
		{
			name: "negative priority alone still serves",
			containers: []source.Container{
				ctr("standby", "172.18.0.6", claims("redis"), labels(LabelPriority, "-1")),
			},
			backends:   []source.Backend{backend("172.18.0.6:6379", "id-standby")},
			candidates: []Candidate{chosen("standby", "claims redis (claim scope network), priority -1, running, no healthcheck")},
		},
		{
			name: "malformed priority counts as 0",
			containers: []source.Container{
				ctr("blue", "172.18.0.4", claims("redis"), labels(LabelPriority, "high")),
				ctr("green", "172.18.0.5", claims("redis")),
			},
			backends: []source.Backend{backend("172.18.0.4:6379", "id-blue"), backend("172.18.0.5:6379", "id-green")},
			candidates: []Candidate{
				chosen("blue", `claims redis (claim scope network), priority 0 (malformed ambassador.priority "high": not an integer), running, no healthcheck`),
				chosen("green", "claims redis (claim scope network), priority 0, running, no healthcheck"),
			},
			warnings: []string{`container blue: label ambassador.priority="high": not an integer; treated as 0`},
		},
		{
			name: "only healthy claimers compete on priority",
			containers: []source.Container{
				ctr("blue", "172.18.0.4", claims("redis"), labels(LabelPriority, "10"), health("unhealthy")),
				ctr("green", "172.18.0.5", claims("redis"), health("healthy")),
			},
			backends: []source.Backend{backend("172.18.0.5:6379", "id-green")},
			candidates: []Candidate{
				skipped("blue", "unhealthy"),
				chosen("green", "claims redis (claim scope network), priority 0, healthy"),
			},
		},
		{
			name: "paused claimer gets no new connections",
			containers: []source.Container{
				ctr("blue", "172.18.0.4", claims("redis"), labels(LabelPriority, "10"), state("paused")),
				ctr("green", "172.18.0.5", claims("redis")),
			},
			backends: []source.Backend{backend("172.18.0.5:6379", "id-green")},
			candidates: []Candidate{
				skipped("blue", "paused"),
				chosen("green", "claims redis (claim scope network), priority 0, running, no healthcheck"),
			},
		},
		{
			name: "unhealthy claimers leave it to the named container",
			containers: []source.Container{
				ctr("blue", "172.18.0.4", claims("redis"), health("unhealthy")),
				ctr("redis", "172.18.0.3"),
			},
			backends: []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{
				skipped("blue", "unhealthy"),
				chosen("redis", "named redis, running, no healthcheck"),
			},
		},
		{
			name: "an ambassador never claims",
			containers: []source.Container{
				ctr("other-amb", "172.18.0.7", claims("redis"), labels(LabelRole, "ambassador")),
				ctr("redis", "172.18.0.3"),
			},
			backends: []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{
				skipped("other-amb", "ambassador (ambassador.role=ambassador)"),
				chosen("redis", "named redis, running, no healthcheck"),
			},
		},
		{
			name:       "the ambassador's own claim never counts",
			self:       amb(claims("redis")),
			containers: []source.Container{ctr("redis", "172.18.0.3")},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{
				skipped("amb", "the ambassador itself"),
				chosen("redis", "named redis, running, no healthcheck"),
			},
			// On the ambassador the label names the target to serve too.
			warnings: []string{"label ambassador.target=redis: no route: the ambassador exposes no TCP or UDP port; set label ambassador.ports, or run it with --expose PORT"},
		},
		{
			name: "the ambassador's own claim never counts, even without the role label",
			self: func() *source.Container {
				c := ctr("amb", "172.18.0.2", claims("redis"))
				return &c
			}(),
			backends:   fallback,
			candidates: []Candidate{skipped("amb", "the ambassador itself")},
			warnings:   []string{"label ambassador.target=redis: no route: the ambassador exposes no TCP or UDP port; set label ambassador.ports, or run it with --expose PORT"},
		},
		{
			name: "the ambassador is never the named container",
			self: func() *source.Container {
				c := ctr("redis", "172.18.0.2", labels(LabelRole, "ambassador"))
				return &c
			}(),
			noFallback: true,
			candidates: []Candidate{skipped("redis", "the ambassador itself")},
			noBackend:  "no container claims or is named redis, other than the ambassador itself (run a container named redis, or label one ambassador.target=redis)",
		},
		{
			name: "claim scope label: a claimer without the label never counts, whatever its priority",
			opts: Options{ClaimScope: ClaimScope{Label: "trusted=yes"}},
			containers: []source.Container{
				ctr("good", "172.18.0.4", claims("redis"), labels("trusted", "yes")),
				ctr("evil", "172.18.0.5", claims("redis"), labels(LabelPriority, "100", "trusted", "no")),
			},
			backends: []source.Backend{backend("172.18.0.4:6379", "id-good")},
			candidates: []Candidate{
				skipped("evil", "claims redis, but outside the claim scope: no label trusted=yes"),
				chosen("good", "claims redis (claim scope label:trusted=yes), priority 0, running, no healthcheck"),
			},
		},
		{
			name: "claim scope project: only the ambassador's own compose project",
			self: amb(labels(LabelComposeProject, "shop")),
			opts: Options{ClaimScope: ClaimScope{Project: true}},
			containers: []source.Container{
				ctr("mine", "172.18.0.4", claims("redis"), labels(LabelComposeProject, "shop")),
				ctr("theirs", "172.18.0.5", claims("redis"), labels(LabelComposeProject, "blog", LabelPriority, "9")),
			},
			backends: []source.Backend{backend("172.18.0.4:6379", "id-mine")},
			candidates: []Candidate{
				chosen("mine", "claims redis (claim scope project), priority 0, running, no healthcheck"),
				skipped("theirs", "claims redis, but outside the claim scope: not in compose project shop"),
			},
		},
		{
			name:       "claim scope project, ambassador in no project: no claimer counts, the named container still does",
			opts:       Options{ClaimScope: ClaimScope{Project: true}},
			containers: []source.Container{ctr("other", "172.18.0.4", claims("redis")), ctr("redis", "172.18.0.3", claims("redis"))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{
				skipped("other", "claims redis, but claim scope project, but the ambassador belongs to no compose project"),
				chosen("redis", "named redis, running, no healthcheck"),
			},
		},
		{
			name: "ambassador.port overrides the port of a claimer",
			containers: []source.Container{
				ctr("blue", "172.18.0.4", claims("redis"), labels(LabelPort, "6380")),
				ctr("green", "172.18.0.5", claims("redis")),
			},
			backends: []source.Backend{backend("172.18.0.4:6380", "id-blue"), backend("172.18.0.5:6379", "id-green")},
			candidates: []Candidate{
				chosen("blue", "claims redis (claim scope network), priority 0, running, no healthcheck, port 6380 (ambassador.port)"),
				chosen("green", "claims redis (claim scope network), priority 0, running, no healthcheck"),
			},
		},
		{
			name:       "ambassador.port is for claimers only",
			containers: []source.Container{ctr("redis", "172.18.0.3", labels(LabelPort, "6380"))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name: "malformed ambassador.port: claimer skipped",
			containers: []source.Container{
				ctr("blue", "172.18.0.4", claims("redis"), labels(LabelPort, "http"), labels(LabelPriority, "10")),
				ctr("green", "172.18.0.5", claims("redis")),
			},
			backends: []source.Backend{backend("172.18.0.5:6379", "id-green")},
			candidates: []Candidate{
				skipped("blue", `malformed ambassador.port "http": not a decimal number`),
				chosen("green", "claims redis (claim scope network), priority 0, running, no healthcheck"),
			},
			warnings: []string{`container blue: skipped for redis: label ambassador.port="http": not a decimal number`},
		},
		{
			name: "no shared network: skipped, and cannot shadow a reachable claimer",
			containers: []source.Container{
				ctr("blue", "10.1.0.4", claims("redis"), labels(LabelPriority, "10"), nets(on(back, "10.1.0.4"), on(front, "10.2.0.4"))),
				ctr("green", "172.18.0.5", claims("redis")),
			},
			backends: []source.Backend{backend("172.18.0.5:6379", "id-green")},
			candidates: []Candidate{
				skipped("blue", "no network shared with the ambassador: container on [back front], ambassador on [app]"),
				chosen("green", "claims redis (claim scope network), priority 0, running, no healthcheck"),
			},
			warnings: []string{"container blue: skipped: no network shared with the ambassador: container on [back front], ambassador on [app]; connect them with docker network connect"},
		},
		{
			name:       "shared network without an IPv4 address",
			containers: []source.Container{ctr("redis", "", nets(app))},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "no IPv4 address on the networks shared with the ambassador [app]")},
		},
		{
			name:       "on no network at all, ambassador outside Docker",
			noSelf:     true,
			containers: []source.Container{ctr("redis", "", nets())},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "on no network, publishes nothing for port 6379 (docker run -p 6379); "+noNetworkFix)},
			warnings:   []string{"container redis on no network: skipped: it publishes nothing for port 6379; publish it (docker run -p 6379)"},
		},
		{
			// Rootless Podman's slirp4netns and pasta: no network the
			// host can reach, but published ports, on the host.
			name:   "on no network, publishing on every address, ambassador on the host",
			noSelf: true,
			containers: []source.Container{ctr("redis", "", nets(), func(c *source.Container) {
				c.Ports = []source.Port{{Port: 6379, Proto: "tcp", Published: []source.Binding{{HostPort: 16379}}}}
			})},
			backends:   []source.Backend{backend("127.0.0.1:16379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck, published on the host at 127.0.0.1:16379 (no network of its own)")},
		},
		{
			name:   "on no network, publishing on the loopback and another address: the loopback first",
			noSelf: true,
			containers: []source.Container{ctr("redis", "", nets(), func(c *source.Container) {
				c.Ports = []source.Port{{Port: 6379, Proto: "tcp", Published: []source.Binding{
					{HostIP: "192.168.1.5", HostPort: 16379}, {HostIP: "127.0.0.1", HostPort: 26379},
				}}}
			})},
			backends:   []source.Backend{backend("127.0.0.1:26379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck, published on the host at 127.0.0.1:26379 (no network of its own)")},
		},
		{
			name: "on no network, ambassador in a container: not reachable",
			containers: []source.Container{ctr("redis", "", nets(), func(c *source.Container) {
				c.Ports = []source.Port{{Port: 6379, Proto: "tcp", Published: []source.Binding{{HostPort: 16379}}}}
			})},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "no network shared with the ambassador: container on [], ambassador on [app]")},
			warnings:   []string{"container redis: skipped: no network shared with the ambassador: container on [], ambassador on [app]; connect them with docker network connect"},
		},
		{
			name:       "one shared network among several: no choice to explain",
			containers: []source.Container{ctr("redis", "", nets(on(app, "172.18.0.3"), on(back, "10.1.0.3")))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name: "several shared networks: lowest name",
			self: amb(nets(on(front, "10.2.0.2"), on(back, "10.1.0.2"))),
			containers: []source.Container{
				ctr("redis", "", nets(on(front, "10.2.0.3"), on(back, "10.1.0.3"), on(other, "10.3.0.3"))),
			},
			backends:   []source.Backend{backend("10.1.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck, network back (lowest name of [back front]; set ambassador.network to choose)")},
			warnings:   []string{"container redis: reached on network back (lowest name of [back front]; set ambassador.network to choose)"},
		},
		{
			name: "several shared networks: Options.Network",
			self: amb(nets(on(back, "10.1.0.2"), on(front, "10.2.0.2"))),
			containers: []source.Container{
				ctr("redis", "", nets(on(back, "10.1.0.3"), on(front, "10.2.0.3"))),
			},
			opts:       Options{Network: "front"},
			backends:   []source.Backend{backend("10.2.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck, network front (the ambassador's preferred network)")},
		},
		{
			name: "several shared networks: Options.Network by ID",
			self: amb(nets(on(back, "10.1.0.2"), on(front, "10.2.0.2"))),
			containers: []source.Container{
				ctr("redis", "", nets(on(back, "10.1.0.3"), on(front, "10.2.0.3"))),
			},
			opts:       Options{Network: "n-front"},
			backends:   []source.Backend{backend("10.2.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck, network front (the ambassador's preferred network)")},
		},
		{
			name: "several shared networks: Options.Network not among them",
			self: amb(nets(on(back, "10.1.0.2"), on(front, "10.2.0.2"))),
			containers: []source.Container{
				ctr("redis", "", nets(on(back, "10.1.0.3"), on(front, "10.2.0.3"))),
			},
			opts:       Options{Network: "other"},
			backends:   []source.Backend{backend("10.1.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck, network back (lowest name of [back front]; set ambassador.network to choose)")},
			warnings:   []string{"container redis: reached on network back (lowest name of [back front]; set ambassador.network to choose)"},
		},
		{
			name: "several shared networks: the backend's label beats Options.Network",
			self: amb(nets(on(back, "10.1.0.2"), on(front, "10.2.0.2"))),
			containers: []source.Container{
				ctr("redis", "", nets(on(back, "10.1.0.3"), on(front, "10.2.0.3")), labels(LabelNetwork, "front")),
			},
			opts:       Options{Network: "back"},
			backends:   []source.Backend{backend("10.2.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck, network front (ambassador.network)")},
		},
		{
			name: "ambassador.network naming an unshared network",
			self: amb(nets(on(back, "10.1.0.2"), on(front, "10.2.0.2"))),
			containers: []source.Container{
				ctr("redis", "", nets(on(back, "10.1.0.3"), on(front, "10.2.0.3"), on(other, "10.3.0.3")), labels(LabelNetwork, "other")),
			},
			backends: []source.Backend{backend("10.1.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", `named redis, running, no healthcheck, ambassador.network="other" is not shared with the ambassador; `+
				"network back (lowest name of [back front]; set ambassador.network to choose)")},
			warnings: []string{
				`container redis: label ambassador.network="other" names no network it shares with the ambassador ([back front]); using another`,
				"container redis: reached on network back (lowest name of [back front]; set ambassador.network to choose)",
			},
		},
		{
			name:       "ambassador.network naming the only shared network: no choice to explain",
			containers: []source.Container{ctr("redis", "", nets(on(app, "172.18.0.3"), on(back, "10.1.0.3")), labels(LabelNetwork, "app"))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name:       "ambassador.network naming an unshared network, one shared network",
			containers: []source.Container{ctr("redis", "172.18.0.3", labels(LabelNetwork, "other"))},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", `named redis, running, no healthcheck, ambassador.network="other" is not shared with the ambassador; network app`)},
			warnings:   []string{`container redis: label ambassador.network="other" names no network it shares with the ambassador ([app]); using another`},
		},
		{
			name:       "networks shared by ID, whatever their names",
			self:       amb(nets(source.Network{Name: "old-name", ID: "n-app", IP: "172.18.0.2"})),
			containers: []source.Container{ctr("redis", "172.18.0.3")},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name:       "a network recreated under the same name is another network",
			self:       amb(nets(source.Network{Name: "app", ID: "n-app-2", IP: "172.18.0.2"})),
			containers: []source.Container{ctr("redis", "172.18.0.3")},
			backends:   fallback,
			candidates: []Candidate{skipped("redis", "no network shared with the ambassador: container on [app], ambassador on [app]")},
			warnings:   []string{"container redis: skipped: no network shared with the ambassador: container on [app], ambassador on [app]; connect them with docker network connect"},
		},
		{
			name:       "networks shared by name when an ID is unknown",
			self:       amb(nets(source.Network{Name: "app", IP: "172.18.0.2"})),
			containers: []source.Container{ctr("redis", "172.18.0.3")},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name:       "ambassador outside Docker: every network is shared",
			noSelf:     true,
			containers: []source.Container{ctr("redis", "", nets(on(other, "10.3.0.3")))},
			backends:   []source.Backend{backend("10.3.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name:       "ambassador on the host network: every network is shared",
			self:       amb(nets(source.Network{Name: "host", ID: "n-host"})),
			containers: []source.Container{ctr("redis", "", nets(on(other, "10.3.0.3")))},
			backends:   []source.Backend{backend("10.3.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
		},
		{
			name: "claimer and named at once counts as a claimer",
			containers: []source.Container{
				ctr("redis", "172.18.0.3", claims("redis"), labels(LabelPriority, "5")),
			},
			backends:   []source.Backend{backend("172.18.0.3:6379", "id-redis")},
			candidates: []Candidate{chosen("redis", "claims redis (claim scope network), priority 5, running, no healthcheck")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self := tt.self
			if self == nil && !tt.noSelf {
				self = amb()
			}
			spec := mustParseRoute(t, "6379:redis:6379")
			spec.Backends = []Endpoint{{Host: "redis.example.com", Port: 6379}}
			if tt.noFallback {
				spec.Backends = nil
			}
			opts := tt.opts
			if !tt.defaultClaims {
				// The election is what this table tests: claims count
				// on the route, as --claims routes makes them.
				opts.Claims.Routes = true
			}
			res := Resolve([]Spec{spec}, snapshot(self, tt.containers...), opts)
			require.Len(t, res.Routes, 1)
			got := res.Routes[0]
			assert.Equal(t, "redis", got.Target)
			assert.Equal(t, 6379, got.Port)
			assert.Equal(t, tt.backends, got.Backends)
			assert.Equal(t, tt.candidates, got.Candidates)
			assert.Equal(t, tt.noBackend, got.NoBackend)
			assert.Equal(t, tt.warnings, res.Warnings)
		})
	}
}

// TestResolveSources covers where routes come from and which source wins a
// listen port.
func TestResolveSources(t *testing.T) {
	redis := ctr("redis", "172.18.0.3", ports(tcp(6379), source.Port{Port: 53, Proto: "udp"}))
	web := ctr("web", "172.18.0.4", ports(tcp(80), tcp(443)))
	redisLinked := links(source.Link{Name: "redis", Alias: "redis"})

	tests := []struct {
		name     string
		specs    func(t *testing.T) []Spec
		snap     *source.Snapshot
		want     []Route
		warnings []string
	}{
		{
			name:  "explicit route to an IP: static, even with a snapshot",
			specs: func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "6379:172.18.0.3")} },
			snap:  snapshot(amb(), redis),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: `--route "6379:172.18.0.3"`,
				Backends: []source.Backend{{Addr: "172.18.0.3:6379"}},
			}},
		},
		{
			name:  "explicit route to several names: static",
			specs: func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "6379:redis,web")} },
			snap:  snapshot(amb(), redis, web),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: `--route "6379:redis,web"`,
				Backends: []source.Backend{{Addr: "redis:6379"}, {Addr: "web:6379"}},
			}},
		},
		{
			name:  "explicit route to a fully qualified name: static",
			specs: func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "6379:redis.:6379")} },
			snap:  snapshot(amb(), redis),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: `--route "6379:redis.:6379"`,
				Backends: []source.Backend{{Addr: "redis.:6379"}},
			}},
		},
		{
			name:  "explicit route to a name: the container, pinned to its ID",
			specs: func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "7000:redis:6379")} },
			snap:  snapshot(amb(), redis),
			want: []Route{{
				Name: "7000", Listen: 7000, Source: `--route "7000:redis:6379"`, Target: "redis", Port: 6379,
				Backends:   []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis"}},
				Candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
			}},
		},
		{
			name: "classic variable with a link: the linked container, the variable only a fallback",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://172.17.0.9:6379", "REDIS_NAME=/amb/redis")
			},
			snap: snapshot(amb(redisLinked), redis),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: "env REDIS_PORT_6379_TCP", Target: "redis", Port: 6379,
				Backends:   []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis"}},
				Candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
			}},
		},
		{
			// The variable's address was redis's when the ambassador
			// started; Docker gives it to the next container at once.
			name: "classic variable with a link, linked container unhealthy: no backend, never the variable's address",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://172.18.0.7:6379")
			},
			snap: snapshot(amb(redisLinked), ctr("redis", "172.18.0.3", health("unhealthy")), ctr("stranger", "172.18.0.7")),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: "env REDIS_PORT_6379_TCP", Target: "redis", Port: 6379,
				Candidates: []Candidate{skipped("redis", "unhealthy")},
				NoBackend: "no usable container for redis (redis: unhealthy); " +
					"fallback 172.18.0.7:6379 not used: it was the target's address, and Docker reuses addresses",
			}},
		},
		{
			name: "classic variable with a link, linked container gone: no backend",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://172.17.0.9:6379")
			},
			snap: snapshot(amb(redisLinked)),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: "env REDIS_PORT_6379_TCP", Target: "redis", Port: 6379,
				NoBackend: "no container is named redis (run a container named redis); " +
					"fallback 172.17.0.9:6379 not used: it was the target's address, and Docker reuses addresses",
			}},
		},
		{
			name: "classic variable with a link, no snapshot yet: the variable's address",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://172.17.0.9:6379")
			},
			want: []Route{{
				Name: "6379", Listen: 6379, Source: "env REDIS_PORT_6379_TCP",
				Backends: []source.Backend{{Addr: "172.17.0.9:6379"}},
			}},
		},
		{
			name:  "explicit route to a container name, no such container: no DNS fallback while watched",
			specs: func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "7000:redis:6379")} },
			snap:  snapshot(amb()),
			want: []Route{{
				Name: "7000", Listen: 7000, Source: `--route "7000:redis:6379"`, Target: "redis", Port: 6379,
				NoBackend: "no container is named redis (run a container named redis); " +
					"fallback redis:6379 not used: a container name is resolved from the engine, not by DNS",
			}},
		},
		{
			name:  "explicit route to a host name, no such container: DNS",
			specs: func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "7000:db.example.com:5432")} },
			snap:  snapshot(amb()),
			want: []Route{{
				Name: "7000", Listen: 7000, Source: `--route "7000:db.example.com:5432"`, Target: "db.example.com", Port: 5432,
				Backends: []source.Backend{{Addr: "db.example.com:5432"}},
			}},
		},
		{
			name: "classic variable with a link whose alias Docker respells",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "MY_DB_1_PORT_5432_TCP=tcp://172.17.0.9:5432")
			},
			snap: snapshot(amb(links(source.Link{Name: "/pg", Alias: "/amb/my-db.1"})), ctr("pg", "172.18.0.5")),
			want: []Route{{
				Name: "5432", Listen: 5432, Source: "env MY_DB_1_PORT_5432_TCP", Target: "pg", Port: 5432,
				Backends:   []source.Backend{{Addr: "172.18.0.5:5432", ID: "id-pg"}},
				Candidates: []Candidate{chosen("pg", "named pg, running, no healthcheck")},
			}},
		},
		{
			name: "classic variable without a link: static",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://10.0.0.9:6379")
			},
			snap: snapshot(amb(), redis),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: "env REDIS_PORT_6379_TCP",
				Backends: []source.Backend{{Addr: "10.0.0.9:6379"}},
			}},
		},
		{
			name: "classic variable naming a host, without a link: static",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://redis:6379")
			},
			snap: snapshot(amb(), redis),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: "env REDIS_PORT_6379_TCP",
				Backends: []source.Backend{{Addr: "redis:6379"}},
			}},
		},
		{
			name:  "link without variables (Docker 29): one route per exposed TCP port",
			specs: func(t *testing.T) []Spec { return nil },
			snap:  snapshot(amb(links(source.Link{Name: "web", Alias: "site"})), web),
			want: []Route{
				{
					Name: "80", Listen: 80, Source: "link web:site", Target: "web", Port: 80,
					Backends:   []source.Backend{{Addr: "172.18.0.4:80", ID: "id-web"}},
					Candidates: []Candidate{chosen("web", "named web, running, no healthcheck")},
				},
				{
					Name: "443", Listen: 443, Source: "link web:site", Target: "web", Port: 443,
					Backends:   []source.Backend{{Addr: "172.18.0.4:443", ID: "id-web"}},
					Candidates: []Candidate{chosen("web", "named web, running, no healthcheck")},
				},
			},
		},
		{
			name:  "link: a UDP port is a UDP route",
			specs: func(t *testing.T) []Spec { return nil },
			snap:  snapshot(amb(redisLinked), redis),
			want: []Route{{
				Name: "53/udp", Protocol: UDP, Listen: 53, Source: "link redis:redis", Target: "redis", Port: 53,
				Backends:   []source.Backend{{Addr: "172.18.0.3:53", ID: "id-redis"}},
				Candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
			}, {
				Name: "6379", Listen: 6379, Source: "link redis:redis", Target: "redis", Port: 6379,
				Backends:   []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis"}},
				Candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
			}},
		},
		{
			name: "link whose variables made routes adds none",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "SITE_PORT_8080_TCP=tcp://172.17.0.9:80")
			},
			snap: snapshot(amb(links(source.Link{Name: "web", Alias: "site"})), web),
			want: []Route{{
				Name: "8080", Listen: 8080, Source: "env SITE_PORT_8080_TCP", Target: "web", Port: 80,
				Backends:   []source.Backend{{Addr: "172.18.0.4:80", ID: "id-web"}},
				Candidates: []Candidate{chosen("web", "named web, running, no healthcheck")},
			}},
		},
		{
			name:  "link and an explicit route to the same container and port: one route, no warning",
			specs: func(t *testing.T) []Spec { return []Spec{mustParseRoute(t, "6379:redis")} },
			snap:  snapshot(amb(redisLinked), ctr("redis", "172.18.0.3", ports(tcp(6379)))),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: `--route "6379:redis"`, Target: "redis", Port: 6379,
				Backends:   []source.Backend{{Addr: "172.18.0.3:6379", ID: "id-redis"}},
				Candidates: []Candidate{chosen("redis", "named redis, running, no healthcheck")},
			}},
		},
		{
			name:  "link to a container that is not running",
			specs: func(t *testing.T) []Spec { return nil },
			snap:  snapshot(amb(redisLinked)),
			warnings: []string{
				"link redis:redis: no route: container redis is not running",
			},
		},
		{
			name:     "link to a container exposing no TCP port",
			specs:    func(t *testing.T) []Spec { return nil },
			snap:     snapshot(amb(redisLinked), ctr("redis", "172.18.0.3")),
			warnings: []string{"link redis:redis: no route: container redis exposes no TCP or UDP port; add --route LISTEN:redis:PORT"},
		},
		{
			name:  "label target with ports: LISTEN[:BACKEND], bad entries skipped",
			specs: func(t *testing.T) []Spec { return nil },
			snap: snapshot(amb(claims("web"), labels(LabelPorts, "8080:80,x,443")),
				ctr("web-1", "172.18.0.4", claims("web")), ctr("web-2", "172.18.0.5", claims("web"))),
			want: []Route{
				{
					Name: "443", Listen: 443, Source: "label ambassador.target=web", Target: "web", Port: 443,
					Backends: []source.Backend{{Addr: "172.18.0.4:443", ID: "id-web-1"}, {Addr: "172.18.0.5:443", ID: "id-web-2"}},
					Candidates: []Candidate{
						skipped("amb", "the ambassador itself"),
						chosen("web-1", "claims web (claim scope network), priority 0, running, no healthcheck"),
						chosen("web-2", "claims web (claim scope network), priority 0, running, no healthcheck"),
					},
				},
				{
					Name: "8080", Listen: 8080, Source: "label ambassador.target=web", Target: "web", Port: 80,
					Backends: []source.Backend{{Addr: "172.18.0.4:80", ID: "id-web-1"}, {Addr: "172.18.0.5:80", ID: "id-web-2"}},
					Candidates: []Candidate{
						skipped("amb", "the ambassador itself"),
						chosen("web-1", "claims web (claim scope network), priority 0, running, no healthcheck"),
						chosen("web-2", "claims web (claim scope network), priority 0, running, no healthcheck"),
					},
				},
			},
			warnings: []string{`label ambassador.target=web: label ambassador.ports: entry "x" skipped: listen port "x": not a decimal number (want LISTEN or LISTEN:BACKEND)`},
		},
		{
			name:  "label target with ports, nothing running: routes without backend",
			specs: func(t *testing.T) []Spec { return nil },
			snap:  snapshot(amb(claims("web"), labels(LabelPorts, "80"))),
			want: []Route{{
				Name: "80", Listen: 80, Source: "label ambassador.target=web", Target: "web", Port: 80,
				Candidates: []Candidate{skipped("amb", "the ambassador itself")},
				NoBackend:  "no container claims or is named web, other than the ambassador itself (run a container named web, or label one ambassador.target=web)",
			}},
		},
		{
			name:     "label target with a ports label giving no port",
			specs:    func(t *testing.T) []Spec { return nil },
			snap:     snapshot(amb(claims("web"), labels(LabelPorts, " , ")), web),
			warnings: []string{`label ambassador.target=web: no route: label ambassador.ports=" , " gives no port`},
		},
		{
			// A claimer exposing other ports never opens a listener: the
			// ports are the ambassador's own (docker run --expose).
			name:  "label target without ports: the ambassador's own exposed TCP and UDP ports, never the claimers'",
			specs: func(t *testing.T) []Spec { return nil },
			snap: snapshot(amb(claims("web"), ports(tcp(80), source.Port{Port: 53, Proto: "udp"}, tcp(8443))),
				ctr("web-1", "172.18.0.4", claims("web"), ports(tcp(80), source.Port{Port: 53, Proto: "udp"})),
				ctr("web-2", "172.18.0.5", claims("web"), ports(tcp(22), tcp(80))),
				ctr("web-old", "172.18.0.6", claims("web"), labels(LabelPriority, "-1"), ports(tcp(9999)))),
			want: []Route{
				{
					Name: "53/udp", Protocol: UDP, Listen: 53, Source: "label ambassador.target=web", Target: "web", Port: 53,
					Backends: []source.Backend{{Addr: "172.18.0.4:53", ID: "id-web-1"}, {Addr: "172.18.0.5:53", ID: "id-web-2"}},
					Candidates: []Candidate{
						skipped("amb", "the ambassador itself"),
						chosen("web-1", "claims web (claim scope network), priority 0, running, no healthcheck"),
						chosen("web-2", "claims web (claim scope network), priority 0, running, no healthcheck"),
						skipped("web-old", "lower priority (-1 < 0)"),
					},
				},
				{
					Name: "80", Listen: 80, Source: "label ambassador.target=web", Target: "web", Port: 80,
					Backends: []source.Backend{{Addr: "172.18.0.4:80", ID: "id-web-1"}, {Addr: "172.18.0.5:80", ID: "id-web-2"}},
					Candidates: []Candidate{
						skipped("amb", "the ambassador itself"),
						chosen("web-1", "claims web (claim scope network), priority 0, running, no healthcheck"),
						chosen("web-2", "claims web (claim scope network), priority 0, running, no healthcheck"),
						skipped("web-old", "lower priority (-1 < 0)"),
					},
				},
				{
					Name: "8443", Listen: 8443, Source: "label ambassador.target=web", Target: "web", Port: 8443,
					Backends: []source.Backend{{Addr: "172.18.0.4:8443", ID: "id-web-1"}, {Addr: "172.18.0.5:8443", ID: "id-web-2"}},
					Candidates: []Candidate{
						skipped("amb", "the ambassador itself"),
						chosen("web-1", "claims web (claim scope network), priority 0, running, no healthcheck"),
						chosen("web-2", "claims web (claim scope network), priority 0, running, no healthcheck"),
						skipped("web-old", "lower priority (-1 < 0)"),
					},
				},
			},
		},
		{
			name:  "label target without ports, nothing usable: the route listens with no backend",
			specs: func(t *testing.T) []Spec { return nil },
			snap:  snapshot(amb(claims("web"), ports(tcp(80))), ctr("web-1", "172.18.0.4", claims("web"), ports(tcp(80)), health("unhealthy"))),
			want: []Route{{
				Name: "80", Listen: 80, Source: "label ambassador.target=web", Target: "web", Port: 80,
				Candidates: []Candidate{skipped("amb", "the ambassador itself"), skipped("web-1", "unhealthy")},
				NoBackend:  "no usable container for web (web-1: unhealthy)",
			}},
		},
		{
			name:     "label target, the ambassador exposing no port and no ports label: no route",
			specs:    func(t *testing.T) []Spec { return nil },
			snap:     snapshot(amb(claims("web")), ctr("web-1", "172.18.0.4", claims("web"), ports(tcp(80)))),
			warnings: []string{"label ambassador.target=web: no route: the ambassador exposes no TCP or UDP port; set label ambassador.ports, or run it with --expose PORT"},
		},
		{
			name:     "empty label target",
			specs:    func(t *testing.T) []Spec { return nil },
			snap:     snapshot(amb(claims("")), web),
			warnings: []string{"label ambassador.target=: ignored: empty target name"},
		},
		{
			name: "precedence: explicit, classic, link, label",
			specs: func(t *testing.T) []Spec {
				// Classic specs first in the list: order between groups
				// does not matter, only Alias does.
				return append(mustParseClassicEnv(t,
					"REDIS_PORT_6379_TCP=tcp://172.17.0.9:6379",
					"WEB_PORT_80_TCP=tcp://172.17.0.8:80",
				), mustParseRoute(t, "6379:10.0.0.1"))
			},
			snap: snapshot(amb(
				links(source.Link{Name: "web", Alias: "site"}),
				claims("web"), labels(LabelPorts, "80,443,8080"),
			), web),
			want: []Route{
				{
					Name: "80", Listen: 80, Source: "env WEB_PORT_80_TCP",
					Backends: []source.Backend{{Addr: "172.17.0.8:80"}},
				},
				{
					Name: "443", Listen: 443, Source: "link web:site", Target: "web", Port: 443,
					Backends: []source.Backend{{Addr: "172.18.0.4:443", ID: "id-web"}},
					Candidates: []Candidate{
						skipped("amb", "the ambassador itself"),
						chosen("web", "named web, running, no healthcheck"),
					},
				},
				{
					Name: "6379", Listen: 6379, Source: `--route "6379:10.0.0.1"`,
					Backends: []source.Backend{{Addr: "10.0.0.1:6379"}},
				},
				{
					Name: "8080", Listen: 8080, Source: "label ambassador.target=web", Target: "web", Port: 8080,
					Backends: []source.Backend{{Addr: "172.18.0.4:8080", ID: "id-web"}},
					Candidates: []Candidate{
						skipped("amb", "the ambassador itself"),
						chosen("web", "named web, running, no healthcheck"),
					},
				},
			},
			warnings: []string{
				`env REDIS_PORT_6379_TCP: listen port 6379 skipped: already taken by --route "6379:10.0.0.1"`,
				"link web:site: listen port 80 skipped: already taken by env WEB_PORT_80_TCP",
				"label ambassador.target=web: listen port 80 skipped: already taken by env WEB_PORT_80_TCP",
				// Not 443: the link's route there is the same target and port.
			},
		},
		{
			name: "two explicit specs on one port: the first wins",
			specs: func(t *testing.T) []Spec {
				return []Spec{mustParseRoute(t, "80:10.0.0.1"), mustParseRoute(t, "80:10.0.0.2")}
			},
			want: []Route{{
				Name: "80", Listen: 80, Source: `--route "80:10.0.0.1"`,
				Backends: []source.Backend{{Addr: "10.0.0.1:80"}},
			}},
			warnings: []string{`--route "80:10.0.0.2": listen port 80 skipped: already taken by --route "80:10.0.0.1"`},
		},
		{
			name: "sorted by listen port",
			specs: func(t *testing.T) []Spec {
				return []Spec{mustParseRoute(t, "9000:10.0.0.1"), mustParseRoute(t, "80:10.0.0.2"), mustParseRoute(t, "443:10.0.0.3")}
			},
			want: []Route{
				{Name: "80", Listen: 80, Source: `--route "80:10.0.0.2"`, Backends: []source.Backend{{Addr: "10.0.0.2:80"}}},
				{Name: "443", Listen: 443, Source: `--route "443:10.0.0.3"`, Backends: []source.Backend{{Addr: "10.0.0.3:443"}}},
				{Name: "9000", Listen: 9000, Source: `--route "9000:10.0.0.1"`, Backends: []source.Backend{{Addr: "10.0.0.1:9000"}}},
			},
		},
		{
			name: "snapshot without Self: no links, no label, classic static",
			specs: func(t *testing.T) []Spec {
				return mustParseClassicEnv(t, "REDIS_PORT_6379_TCP=tcp://172.17.0.9:6379")
			},
			snap: snapshot(nil, redis),
			want: []Route{{
				Name: "6379", Listen: 6379, Source: "env REDIS_PORT_6379_TCP",
				Backends: []source.Backend{{Addr: "172.17.0.9:6379"}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Resolve(tt.specs(t), tt.snap, Options{})
			assert.Equal(t, tcpRoutes(tt.want), res.Routes)
			assert.Equal(t, tt.warnings, res.Warnings)
		})
	}
}

// TestResolveWithoutSnapshot covers Docker not reached (yet): static
// routes and fallbacks serve, target routes without fallback say why they
// have no backend, and routes from links and labels do not exist.
func TestResolveWithoutSnapshot(t *testing.T) {
	specs := []Spec{
		mustParseRoute(t, "80:10.0.0.1"),
		mustParseRoute(t, "6379:redis"),
		{Listen: 7000, Target: "cache", Source: "test"},
		{Listen: 7001, Source: "test"},
	}
	specs = append(specs, mustParseClassicEnv(t, "DB_PORT_5432_TCP=tcp://172.17.0.9:5432")...)
	want := []Route{
		{Name: "80", Listen: 80, Source: `--route "80:10.0.0.1"`, Backends: []source.Backend{{Addr: "10.0.0.1:80"}}},
		{Name: "5432", Listen: 5432, Source: "env DB_PORT_5432_TCP", Backends: []source.Backend{{Addr: "172.17.0.9:5432"}}},
		{Name: "6379", Listen: 6379, Source: `--route "6379:redis"`, Target: "redis", Port: 6379, Backends: []source.Backend{{Addr: "redis:6379"}}},
		{Name: "7000", Listen: 7000, Source: "test", Target: "cache", Port: 7000, NoBackend: "docker engine not reached"},
		{Name: "7001", Listen: 7001, Source: "test", NoBackend: "no backend given"},
	}
	res := Resolve(specs, nil, Options{})
	assert.Equal(t, tcpRoutes(want), res.Routes)
	assert.Empty(t, res.Warnings)
}

// TestResolveDeterministic checks that the order of the snapshot's
// containers does not matter and that repeated calls agree.
func TestResolveDeterministic(t *testing.T) {
	containers := []source.Container{
		ctr("c", "172.18.0.5", claims("redis")),
		ctr("a", "172.18.0.3", claims("redis"), labels(LabelPriority, "x")),
		ctr("b", "172.18.0.4", claims("redis"), labels(LabelPort, "y")),
		ctr("redis", "172.18.0.6"),
	}
	specs := []Spec{mustParseRoute(t, "6379:redis"), mustParseRoute(t, "6380:redis")}
	opts := Options{Claims: Claims{Routes: true}}
	want := Resolve(specs, &source.Snapshot{Self: amb(), Containers: containers}, opts)
	require.Len(t, want.Routes, 2)
	require.Len(t, want.Routes[0].Backends, 2)
	for range 20 {
		shuffled := slices.Clone(containers)
		slices.Reverse(shuffled)
		shuffled[0], shuffled[2] = shuffled[2], shuffled[0]
		got := Resolve(specs, &source.Snapshot{Self: amb(), Containers: shuffled}, opts)
		assert.Equal(t, want, got)
		containers = shuffled
	}
}

// TestResolvePinsBackendsToContainers checks that a backend names the
// container it was resolved to, so that the proxy can tell a container that
// took over an IP from the one it replaced.
func TestResolvePinsBackendsToContainers(t *testing.T) {
	const (
		oldID = "0f3a5c9e2b7d4e1f8a6c3b9d2e5f7a1c4b8d6e9f2a5c7b3d1e4f6a8c9b2d5e7f"
		newID = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
	)
	spec := mustParseRoute(t, "6379:redis")
	before := ctr("redis", "172.18.0.3")
	before.ID = oldID
	after := before
	after.ID = newID // recreated with the same name and IP

	r1 := Resolve([]Spec{spec}, snapshot(amb(), before), Options{}).Routes
	r2 := Resolve([]Spec{spec}, snapshot(amb(), after), Options{}).Routes
	assert.Equal(t, []source.Backend{{Addr: "172.18.0.3:6379", ID: oldID}}, r1[0].Backends)
	assert.Equal(t, []source.Backend{{Addr: "172.18.0.3:6379", ID: newID}}, r2[0].Backends)
	assert.False(t, r1[0].Equal(r2[0]), "a new container behind the same address is a change")
}

func TestRouteEqual(t *testing.T) {
	base := Route{
		Name: "6379", Listen: 6379, Source: "s", Target: "redis", Port: 6379,
		Backends:   []source.Backend{{Addr: "172.18.0.3:6379", ID: "a"}, {Addr: "172.18.0.4:6379", ID: "b"}},
		Candidates: []Candidate{{ID: "a", Name: "redis", Chosen: true, Reason: "x"}},
	}
	tests := []struct {
		name   string
		change func(*Route)
		equal  bool
	}{
		{"same", func(*Route) {}, true},
		{"candidates only explain", func(r *Route) { r.Candidates = nil }, true},
		{"candidate reason", func(r *Route) { r.Candidates = []Candidate{{ID: "a", Reason: "y"}} }, true},
		{"name", func(r *Route) { r.Name = "x" }, false},
		{"listen", func(r *Route) { r.Listen = 1 }, false},
		{"source", func(r *Route) { r.Source = "t" }, false},
		{"target", func(r *Route) { r.Target = "" }, false},
		{"engine", func(r *Route) { r.Engine = "big" }, false},
		{"port", func(r *Route) { r.Port = 1 }, false},
		{"no backend", func(r *Route) { r.NoBackend = "x" }, false},
		{"backend order", func(r *Route) { r.Backends = []source.Backend{r.Backends[1], r.Backends[0]} }, false},
		{"backend ID", func(r *Route) { r.Backends = []source.Backend{{Addr: "172.18.0.3:6379"}, r.Backends[1]} }, false},
		{"fewer backends", func(r *Route) { r.Backends = r.Backends[:1] }, false},
		{"no backends", func(r *Route) { r.Backends = nil }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			o.Backends = slices.Clone(base.Backends)
			tt.change(&o)
			assert.Equal(t, tt.equal, base.Equal(o))
			assert.Equal(t, tt.equal, o.Equal(base))
		})
	}
	assert.True(t, Route{}.Equal(Route{Backends: []source.Backend{}}), "nil and empty backends are the same")
}

func TestResolveOverrides(t *testing.T) {
	redis := ctr("redis", "172.18.0.3")
	cache := ctr("cache", "172.18.0.4")
	spare := ctr("spare", "172.18.0.5", claims("cache"))
	snap := snapshot(amb(), redis, cache, spare)
	specs := []Spec{mustParseRoute(t, "6379:redis:6379"), mustParseRoute(t, "7000:redis:6379"), mustParseRoute(t, "8080:10.0.0.1:80")}

	tests := []struct {
		name      string
		overrides map[string]string
		want      map[string][]source.Backend // by route name
		override  map[string]string           // Route.Override by route name
	}{
		{
			name:      "a target moves every route to it",
			overrides: map[string]string{"redis": "cache"},
			want: map[string][]source.Backend{
				"6379": {backend("172.18.0.5:6379", "id-spare")}, // cache's claimer wins over the container named cache
				"7000": {backend("172.18.0.5:6379", "id-spare")},
				"8080": {backend("10.0.0.1:80", "")},
			},
			override: map[string]string{"6379": "cache", "7000": "cache"},
		},
		{
			name:      "a route name moves that route only, and beats its target's override",
			overrides: map[string]string{"7000": "cache", "redis": "spare"},
			want: map[string][]source.Backend{
				"6379": {backend("172.18.0.5:6379", "id-spare")},
				"7000": {backend("172.18.0.5:6379", "id-spare")},
				"8080": {backend("10.0.0.1:80", "")},
			},
			override: map[string]string{"6379": "spare", "7000": "cache"},
		},
		{
			name:      "a static route rewired to a target, and a target route to an address",
			overrides: map[string]string{"8080": "redis", "6379": "10.9.9.9:6380", "7000": "10.9.9.8"},
			want: map[string][]source.Backend{
				"6379": {backend("10.9.9.9:6380", "")},
				"7000": {backend("10.9.9.8:6379", "")},
				"8080": {backend("172.18.0.3:80", "id-redis")},
			},
			override: map[string]string{"6379": "10.9.9.9:6380", "7000": "10.9.9.8", "8080": "redis"},
		},
		{
			name:      "a target that does not exist leaves no backend, not the old one",
			overrides: map[string]string{"6379": "ghost"},
			want: map[string][]source.Backend{
				"6379": nil,
				"7000": {backend("172.18.0.3:6379", "id-redis")},
				"8080": {backend("10.0.0.1:80", "")},
			},
			override: map[string]string{"6379": "ghost"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Claims count on these routes (--claims routes): a rewire
			// keeps the claim policy of its route.
			res := Resolve(specs, snap, Options{Overrides: tt.overrides, Claims: Claims{Routes: true}})
			got := map[string][]source.Backend{}
			overrides := map[string]string{}
			for _, rt := range res.Routes {
				got[rt.Name] = rt.Backends
				if rt.Override != "" {
					overrides[rt.Name] = rt.Override
				}
				if len(rt.Backends) == 0 {
					assert.NotEmpty(t, rt.NoBackend)
				}
			}
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.override, overrides)
		})
	}
}

func TestParseOverride(t *testing.T) {
	for _, ok := range []string{"redis", "my_db-2", "10.0.0.1", "10.0.0.1:80", "[::1]:80", "db.example.com:5432"} {
		assert.NoError(t, ParseOverride(ok), ok)
	}
	for _, bad := range []string{"", "a b", "10.0.0.1:99999", "host:", "::1"} {
		assert.Error(t, ParseOverride(bad), bad)
	}
}
