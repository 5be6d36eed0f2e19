package watcher

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/stretchr/testify/assert"

	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestConvertContainer(t *testing.T) {
	id := id64("redis")
	for _, tt := range []struct {
		name string
		in   container.Summary
		want source.Container
	}{
		{
			name: "plain running container",
			in:   ctr(id, "redis"),
			want: source.Container{ID: id, Name: "redis", State: "running"},
		},
		{
			name: "labels are copied",
			in:   ctr(id, "redis", withLabels("ambassador.target", "cache", "ambassador.priority", "3")),
			want: source.Container{ID: id, Name: "redis", State: "running",
				Labels: map[string]string{"ambassador.target": "cache", "ambassador.priority": "3"}},
		},
		{
			name: "networks sorted by name, IPv4 only",
			in: ctr(id, "redis",
				withNet("zeta", "n3", "10.0.3.2"),
				withNet("alpha", "n1", "10.0.1.2"),
				withNet("host", "n0", ""),
				withNet("mapped", "n2", "::ffff:10.0.2.2"),
				withNet("v6only", "n4", "fd00::2"),
			),
			want: source.Container{ID: id, Name: "redis", State: "running", Networks: []source.Network{
				{Name: "alpha", ID: "n1", IP: "10.0.1.2"},
				{Name: "host", ID: "n0"},
				{Name: "mapped", ID: "n2", IP: "10.0.2.2"},
				{Name: "v6only", ID: "n4"},
				{Name: "zeta", ID: "n3", IP: "10.0.3.2"},
			}},
		},
		{
			name: "ports deduplicated across host addresses, with their bindings, and sorted; sctp left out",
			in: ctr(id, "redis", withPorts(
				container.PortSummary{IP: netip.MustParseAddr("0.0.0.0"), PrivatePort: 6379, PublicPort: 16379, Type: "tcp"},
				container.PortSummary{IP: netip.MustParseAddr("::"), PrivatePort: 6379, PublicPort: 16379, Type: "tcp"},
				container.PortSummary{PrivatePort: 53, Type: "udp"},
				container.PortSummary{PrivatePort: 53, Type: "tcp"},
				container.PortSummary{PrivatePort: 80},
				container.PortSummary{PrivatePort: 9, Type: "sctp"},
			)),
			want: source.Container{ID: id, Name: "redis", State: "running", Ports: []source.Port{
				{Port: 53, Proto: "tcp"}, {Port: 53, Proto: "udp"}, {Port: 80, Proto: "tcp"},
				{Port: 6379, Proto: "tcp", Published: []source.Binding{{HostIP: "0.0.0.0", HostPort: 16379}, {HostIP: "::", HostPort: 16379}}},
			}},
		},
		{
			// What a remote engine reports: a port published on one of
			// its host's addresses, on loopback (reachable from that
			// host only: the resolver's to judge), and IPv4 and IPv6
			// given different host ports, as some engines do.
			name: "bindings to specific addresses, and to other host ports per family",
			in: ctr(id, "redis", withPorts(
				container.PortSummary{IP: netip.MustParseAddr("192.168.1.52"), PrivatePort: 6379, PublicPort: 6379, Type: "tcp"},
				container.PortSummary{IP: netip.MustParseAddr("127.0.0.1"), PrivatePort: 6379, PublicPort: 16379, Type: "tcp"},
				container.PortSummary{IP: netip.MustParseAddr("0.0.0.0"), PrivatePort: 80, PublicPort: 32768, Type: "tcp"},
				container.PortSummary{IP: netip.MustParseAddr("::"), PrivatePort: 80, PublicPort: 32769, Type: "tcp"},
				container.PortSummary{IP: netip.MustParseAddr("2001:db8::1"), PrivatePort: 53, PublicPort: 53, Type: "udp"},
			)),
			want: source.Container{ID: id, Name: "redis", State: "running", Ports: []source.Port{
				{Port: 53, Proto: "udp", Published: []source.Binding{{HostIP: "2001:db8::1", HostPort: 53}}},
				{Port: 80, Proto: "tcp", Published: []source.Binding{{HostIP: "0.0.0.0", HostPort: 32768}, {HostIP: "::", HostPort: 32769}}},
				{Port: 6379, Proto: "tcp", Published: []source.Binding{{HostIP: "192.168.1.52", HostPort: 6379}, {HostIP: "127.0.0.1", HostPort: 16379}}},
			}},
		},
		{
			name: "own name chosen over legacy link names",
			in:   container.Summary{ID: id, Names: []string{"/amb/db", "/other/cache", "/redis"}, State: "running"},
			want: source.Container{ID: id, Name: "redis", State: "running"},
		},
		{
			name: "paused",
			in:   ctr(id, "redis", withStatus(container.StatePaused, "Up 2 hours (Paused)")),
			want: source.Container{ID: id, Name: "redis", State: "paused"},
		},
		{
			name: "health from status: healthy",
			in:   ctr(id, "redis", withStatus(container.StateRunning, "Up 5 minutes (healthy)")),
			want: source.Container{ID: id, Name: "redis", State: "running", Health: "healthy"},
		},
		{
			name: "health from status: unhealthy",
			in:   ctr(id, "redis", withStatus(container.StateRunning, "Up 5 minutes (unhealthy)")),
			want: source.Container{ID: id, Name: "redis", State: "running", Health: "unhealthy"},
		},
		{
			name: "health from status: starting",
			in:   ctr(id, "redis", withStatus(container.StateRunning, "Up 2 seconds (health: starting)")),
			want: source.Container{ID: id, Name: "redis", State: "running", Health: "starting"},
		},
		{
			name: "structured health wins over status",
			in: ctr(id, "redis", withStatus(container.StateRunning, "Up 5 minutes (healthy)"), func(s *container.Summary) {
				s.Health = &container.HealthSummary{Status: container.Unhealthy, FailingStreak: 3}
			}),
			want: source.Container{ID: id, Name: "redis", State: "running", Health: "unhealthy"},
		},
		{
			name: "structured none means no healthcheck",
			in: ctr(id, "redis", withStatus(container.StateRunning, "Up 5 minutes (healthy)"), func(s *container.Summary) {
				s.Health = &container.HealthSummary{Status: container.NoHealthcheck}
			}),
			want: source.Container{ID: id, Name: "redis", State: "running"},
		},
		{
			name: "empty structured health falls back to status",
			in: ctr(id, "redis", withStatus(container.StateRunning, "Up 5 minutes (health: starting)"), func(s *container.Summary) {
				s.Health = &container.HealthSummary{}
			}),
			want: source.Container{ID: id, Name: "redis", State: "running", Health: "starting"},
		},
		{
			name: "nil network settings and nil endpoints",
			in: container.Summary{ID: id, Names: []string{"/redis"}, State: "running",
				NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"x": nil}}},
			want: source.Container{ID: id, Name: "redis", State: "running"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, convertContainer(tt.in))
		})
	}
}

func TestConvertContainersSortedAndDetached(t *testing.T) {
	labels := map[string]string{"k": "v"}
	in := []container.Summary{
		ctr(id64("b"), "web"),
		ctr(id64("a"), "db", func(s *container.Summary) { s.Labels = labels }),
		{Names: []string{"/no-id"}},
	}
	got := convertContainers(in, "big")
	assert.Equal(t, []string{"db", "web"}, []string{got[0].Name, got[1].Name})
	assert.Equal(t, []string{"big", "big"}, []string{got[0].Engine, got[1].Engine}, "every container says which engine listed it")
	labels["k"] = "changed"
	assert.Equal(t, "v", got[0].Labels["k"], "the snapshot must not share the listing's maps")
	assert.Nil(t, convertContainers(nil, "big"))
}

func TestParseLink(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want source.Link
		ok   bool
	}{
		{"/redis:/amb/redis", source.Link{Name: "redis", Alias: "redis"}, true},
		{"/redis-1:/ambassador/cache", source.Link{Name: "redis-1", Alias: "cache"}, true},
		{"redis:db", source.Link{Name: "redis", Alias: "db"}, true},
		{"redis", source.Link{Name: "redis", Alias: "redis"}, true},
		{"/redis", source.Link{Name: "redis", Alias: "redis"}, true},
		{" /redis : /amb/DB ", source.Link{Name: "redis", Alias: "DB"}, true},
		{"/redis:/amb/", source.Link{Name: "redis", Alias: "amb"}, true},
		{"/redis:", source.Link{Name: "redis", Alias: "redis"}, true},
		{"", source.Link{}, false},
		{":/amb/db", source.Link{}, false},
		{"/", source.Link{}, false},
		{"/re dis:/amb/db", source.Link{}, false},
		{"/redis:/amb/d$b", source.Link{}, false},
		{"/-redis:/amb/db", source.Link{}, false},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseLink(tt.in)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseLinksSortedAndDeduplicated(t *testing.T) {
	got := parseLinks([]string{"/web:/amb/web", "/redis:/amb/cache", "bad link", "/redis:/amb/cache"})
	assert.Equal(t, []source.Link{{Name: "redis", Alias: "cache"}, {Name: "web", Alias: "web"}}, got)
	assert.Nil(t, parseLinks(nil))
}

func FuzzParseLink(f *testing.F) {
	for _, s := range []string{"/redis:/amb/redis", "redis:db", "redis", "", ":", "/:/", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := parseLink(s)
		if !ok {
			return
		}
		for _, v := range []string{l.Name, l.Alias} {
			if !validName(v) || strings.ContainsAny(v, "/: \t\n") {
				t.Fatalf("parseLink(%q) = %+v: invalid element %q", s, l, v)
			}
		}
	})
}

func TestGoneIDs(t *testing.T) {
	a, b, c := id64("a"), id64("b"), id64("c")
	net := func(name, ip string) source.Network { return source.Network{Name: name, ID: "id-" + name, IP: ip} }
	prev := &source.Snapshot{Containers: []source.Container{
		{ID: a, Networks: []source.Network{net("n1", "10.0.0.2")}},
		{ID: b, Networks: []source.Network{net("n1", "10.0.0.3"), net("n2", "10.1.0.3")}},
		{ID: c, Networks: []source.Network{net("n1", "10.0.0.4")}},
	}}
	for _, tt := range []struct {
		name string
		prev *source.Snapshot
		next *source.Snapshot
		want []string
	}{
		{"first snapshot", nil, prev, nil},
		{"unchanged", prev, prev, nil},
		{"removed, disconnected, readdressed", prev, &source.Snapshot{Containers: []source.Container{
			{ID: b, Networks: []source.Network{net("n1", "10.0.0.3")}},
			{ID: c, Networks: []source.Network{net("n1", "10.0.0.9")}},
		}}, []string{a, b, c}},
		{"new network, paused and stopping are not gone", prev, &source.Snapshot{Containers: []source.Container{
			{ID: a, State: "paused", Networks: []source.Network{net("n1", "10.0.0.2"), net("n3", "10.3.0.2")}},
			prev.Containers[1],
			{ID: c, State: source.StateStopping, Networks: []source.Network{net("n1", "10.0.0.4")}},
		}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, goneIDs(tt.prev, tt.next))
		})
	}
}

func TestFastPathSnapshotsLeaveTheOriginalAlone(t *testing.T) {
	a, b := id64("a"), id64("b")
	mk := func() *source.Snapshot {
		self := source.Container{ID: a, Name: "amb", State: "running", Networks: []source.Network{{Name: "n1", ID: "i1"}, {Name: "n2", ID: "i2"}}}
		return &source.Snapshot{Self: &self, Containers: []source.Container{
			self,
			{ID: b, Name: "db", State: "running", Networks: []source.Network{{Name: "n1", ID: "i1"}}},
		}}
	}
	orig := mk()

	next, ok := withoutContainer(orig, b)
	assert.True(t, ok)
	assert.Equal(t, []source.Container{*orig.Self}, next.Containers)
	assert.Same(t, orig.Self, next.Self)

	next, ok = withoutContainer(orig, a)
	assert.True(t, ok)
	assert.Nil(t, next.Self, "Self stopped")

	_, ok = withoutContainer(orig, id64("zz"))
	assert.False(t, ok)
	_, ok = withoutContainer(nil, a)
	assert.False(t, ok)

	next, ok = withoutAttachment(orig, a, "i2")
	assert.True(t, ok)
	assert.Equal(t, []source.Network{{Name: "n1", ID: "i1"}}, next.Self.Networks)
	assert.Equal(t, []source.Network{{Name: "n1", ID: "i1"}}, next.Containers[0].Networks)

	next, ok = withoutAttachment(orig, b, "i1")
	assert.True(t, ok)
	assert.Nil(t, next.Containers[1].Networks)

	_, ok = withoutAttachment(orig, b, "i2")
	assert.False(t, ok, "b is not on i2")
	_, ok = withoutAttachment(orig, "", "i1")
	assert.False(t, ok)

	next, ok = withStopping(orig, b)
	assert.True(t, ok)
	assert.Equal(t, source.StateStopping, next.Containers[1].State)
	assert.Same(t, orig.Self, next.Self)

	next, ok = withStopping(orig, a)
	assert.True(t, ok)
	assert.Equal(t, source.StateStopping, next.Self.State, "Self follows")
	assert.Equal(t, next.Containers[0], *next.Self)

	_, ok = withStopping(next, a)
	assert.False(t, ok, "already stopping")
	_, ok = withStopping(orig, id64("zz"))
	assert.False(t, ok)
	_, ok = withStopping(nil, a)
	assert.False(t, ok)

	assert.Equal(t, mk(), orig, "the published snapshot was mutated")
}
