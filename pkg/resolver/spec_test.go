package resolver

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRoute(t *testing.T) {
	tests := []struct {
		in     string
		want   []Endpoint
		port   int
		target string // a single backend named by a name is a target
	}{
		{"6379:redis:6379", []Endpoint{{Host: "redis", Port: 6379}}, 6379, "redis"},
		{"6379:redis", []Endpoint{{Host: "redis", Port: 6379}}, 6379, "redis"},
		{"6379:10.0.0.5", []Endpoint{{Host: "10.0.0.5", Port: 6379}}, 6379, ""},
		{"80:10.0.0.5:8080", []Endpoint{{Host: "10.0.0.5", Port: 8080}}, 80, ""},
		{"8080:[::1]:80", []Endpoint{{Host: "::1", Port: 80}}, 8080, ""},
		{"8080:[::1]", []Endpoint{{Host: "::1", Port: 8080}}, 8080, ""},
		{"8080:[fe80::1%eth0.100]:80", []Endpoint{{Host: "fe80::1%eth0.100", Port: 80}}, 8080, ""},
		{"8080:[::ffff:10.0.0.1]:80", []Endpoint{{Host: "::ffff:10.0.0.1", Port: 80}}, 8080, ""},
		{"6379:10.0.0.5:6379,10.0.0.6:6379", []Endpoint{{Host: "10.0.0.5", Port: 6379}, {Host: "10.0.0.6", Port: 6379}}, 6379, ""},
		{"6379:a,b:1,[::2]", []Endpoint{{Host: "a", Port: 6379}, {Host: "b", Port: 1}, {Host: "::2", Port: 6379}}, 6379, ""},
		{"6379:a,b", []Endpoint{{Host: "a", Port: 6379}, {Host: "b", Port: 6379}}, 6379, ""},
		{"1:my_redis_1:65535", []Endpoint{{Host: "my_redis_1", Port: 65535}}, 1, "my_redis_1"},
		{"65535:db.example.com.", []Endpoint{{Host: "db.example.com.", Port: 65535}}, 65535, ""},
		{"65535:db.example.com", []Endpoint{{Host: "db.example.com", Port: 65535}}, 65535, "db.example.com"},
		{"5432:Db-1.Internal", []Endpoint{{Host: "Db-1.Internal", Port: 5432}}, 5432, "Db-1.Internal"},
		{"5432:" + strings.Repeat("a", 63), []Endpoint{{Host: strings.Repeat("a", 63), Port: 5432}}, 5432, strings.Repeat("a", 63)},
		{"5432:" + longName(253), []Endpoint{{Host: longName(253), Port: 5432}}, 5432, longName(253)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRoute(tt.in)
			require.NoError(t, err)
			assert.Equal(t, Spec{Protocol: TCP, Listen: tt.port, Backends: tt.want, Source: `--route "` + tt.in + `"`, Target: tt.target}, got)
		})
	}
}

func TestParseRouteErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"", "missing backend"},
		{"6379", "missing backend"},
		{":redis", "missing listen port"},
		{"6379:", `backend "": empty backend`},
		{"abc:redis", `listen port "abc": not a decimal number`},
		{"-1:redis", `listen port "-1": not a decimal number`},
		{"+80:redis", `listen port "+80": not a decimal number`},
		{"0:redis", `listen port "0": out of range 1..65535`},
		{"65536:redis", `listen port "65536": out of range 1..65535`},
		{"99999999999999999999:redis", "out of range 1..65535"},
		{"0080:redis", `listen port "0080": leading zero`},
		{"80:redis:0", `backend "redis:0": port "0": out of range`},
		{"80:redis:65536", `port "65536": out of range`},
		{"80:redis:http", `port "http": not a decimal number`},
		{"80:redis:", `backend "redis:": missing port after ':'`},
		{"80:redis:80,", `backend "": empty backend`},
		{"80:,redis", `backend "": empty backend`},
		{"80:a,,b", `backend "": empty backend`},
		{"80::80", "missing host"},
		{"80:::1", "too many colons: put IPv6 addresses in brackets"},
		{"80:::1:80", "too many colons"},
		{"80:[::1", "missing ']'"},
		{"80:[::1]80", `unexpected "80" after ']'`},
		{"80:[::1]:", "missing port after ':'"},
		{"80:[]:80", "empty IPv6 address"},
		{"80:[10.0.0.1]:80", `"10.0.0.1" in brackets is not an IPv6 address`},
		{"80:[redis]:80", `invalid IPv6 address "redis"`},
		{"80:[fe80::1%a b]:80", "invalid IPv6 zone"},
		{"80:[fe80::1%]:80", "invalid IPv6 address"},
		{"80:10.0.0.256", `invalid IPv4 address "10.0.0.256"`},
		{"80:127.1", `invalid IPv4 address "127.1"`},
		{"80:010.0.0.1", `invalid IPv4 address "010.0.0.1"`},
		{"80:1234", `invalid IPv4 address "1234"`},
		{"80:.", `invalid IPv4 address "."`},
		{"80:re dis", `invalid character ' '`},
		{" 80:redis", `listen port " 80"`},
		{"80:redis ", `invalid character ' '`},
		// ENGINE/NAME is a single backend's: a slash is no host's
		// character anywhere else (80:redis/x names the container x of
		// engine redis, TestParseEngineRoute).
		{"80:redis/x,y", `backend "redis/x": host "redis/x" contains invalid character '/'`},
		{"80:y,redis/x", `invalid character '/'`},
		{"80:a/b/c", `backend "a/b/c": host "b/c" contains invalid character '/'`},
		{"80:user@redis", `invalid character '@'`},
		{"80:rédis", `invalid character 'é'`},
		{"80:-redis", "label starting or ending with '-'"},
		{"80:redis-", "label starting or ending with '-'"},
		{"80:a..b", "empty label"},
		{"80:.redis", "empty label"},
		{"80:redis..", "empty label"},
		{"80:" + strings.Repeat("a", 64), "label longer than 63"},
		{"80:" + longName(254), "254 characters long, more than 253"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseRoute(tt.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.True(t, strings.HasPrefix(err.Error(), "parse route "), err.Error())
		})
	}
}

// longName returns a valid DNS name of exactly n characters.
func longName(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat("a", min(63, n-b.Len())))
	}
	return b.String()
}

// TestParseEngineRoute: a single backend ENGINE/NAME[:PORT] names the
// container NAME of engine ENGINE, with no DNS fallback; errors name the
// item and say what is wrong.
func TestParseEngineRoute(t *testing.T) {
	for _, tt := range []struct {
		in             string
		target, engine string
		port           int
	}{
		{"6379:big/redis:6379", "redis", "big", 6379},
		{"6379:big/redis", "redis", "big", 6379},
		{"80:redis/x", "x", "redis", 80},
		{"7000:big-2/my_redis.1:6380", "my_redis.1", "big-2", 6380},
		{"1:0_a-b/Redis", "Redis", "0_a-b", 1},
		{"1:" + strings.Repeat("e", 32) + "/r", "r", strings.Repeat("e", 32), 1},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRoute(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.target, got.Target)
			assert.Equal(t, tt.engine, got.Engine)
			assert.Equal(t, []Endpoint{{Host: tt.target, Port: tt.port}}, got.Backends)
			assert.Equal(t, `--route "`+tt.in+`"`, got.Source)
			again, err := ParseRoute(got.String())
			require.NoError(t, err)
			assert.Equal(t, got.Engine, again.Engine, got.String())
			assert.Equal(t, got.Backends, again.Backends, got.String())
		})
	}
	for _, tt := range []struct{ in, err string }{
		{"6379:local/redis", `parse route "6379:local/redis": backend "local/redis": "local" is the engine the ambassador runs on: leave the engine out (6379:redis)`},
		{"6379:/redis", `backend "/redis": empty engine name`},
		{"6379:Big/redis", `backend "Big/redis": engine name "Big" has 'B' at byte 0: want lower-case letters, digits, '_' and '-', starting with a letter or a digit`},
		{"6379:-big/redis", `engine name "-big" has '-' at byte 0`},
		{"6379:big.lan/redis", `engine name "big.lan" has '.' at byte 3`},
		{"6379:" + strings.Repeat("e", 33) + "/r", "is 33 characters long, more than 32"},
		{"6379:big/", `backend "big/": empty backend`},
		{"6379:big/10.0.0.5:6379", `backend "big/10.0.0.5:6379": "10.0.0.5" is not a container name: ENGINE/NAME names a container of engine big, not an address`},
		{"6379:big/[::1]:6379", `"::1" is not a container name`},
		{"6379:big/db.example.com.", `"db.example.com." is not a container name`},
		{"6379:big/redis:0", `backend "big/redis:0": port "0": out of range`},
		{"6379:big/re dis", `invalid character ' '`},
	} {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseRoute(tt.in)
			assert.ErrorContains(t, err, tt.err)
		})
	}
	// In AMBASSADORD_ROUTES, the error names the item.
	specs, err := ParseRouteList("6379:big/redis 80:local/web")
	assert.Nil(t, specs)
	assert.EqualError(t, err, `parse AMBASSADORD_ROUTES: route "80:local/web": backend "local/web": "local" is the engine the ambassador runs on: leave the engine out (80:web)`)
	specs, err = ParseRouteList("6379:big/redis;8080:small/web:80")
	require.NoError(t, err)
	assert.Equal(t, []Spec{
		{Protocol: TCP, Listen: 6379, Backends: []Endpoint{{Host: "redis", Port: 6379}}, Source: "AMBASSADORD_ROUTES", Target: "redis", Engine: "big"},
		{Protocol: TCP, Listen: 8080, Backends: []Endpoint{{Host: "web", Port: 80}}, Source: "AMBASSADORD_ROUTES", Target: "web", Engine: "small"},
	}, specs)
}

func TestCheckEngineName(t *testing.T) {
	for _, ok := range []string{"local", "big", "b", "0", "big-server_2", strings.Repeat("a", 32)} {
		assert.NoError(t, CheckEngineName(ok), ok)
	}
	for _, bad := range []string{"", "Big", "_a", "-a", "a.b", "a/b", "a b", "é", strings.Repeat("a", 33)} {
		assert.Error(t, CheckEngineName(bad), bad)
	}
}

func TestSpecString(t *testing.T) {
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Listen: 6379, Backends: []Endpoint{{Host: "redis", Port: 6379}}}, "6379:redis:6379"},
		{Spec{Listen: 6379, Backends: []Endpoint{{Host: "redis", Port: 6380}}, Target: "redis", Engine: "big"}, "6379:big/redis:6380"},
		{Spec{Listen: 8080, Backends: []Endpoint{{Host: "::1", Port: 80}, {Host: "10.0.0.1", Port: 81}}}, "8080:[::1]:80,10.0.0.1:81"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.spec.String())
		})
	}
}

func TestParseRouteList(t *testing.T) {
	const src = "AMBASSADORD_ROUTES"
	tests := []struct {
		name string
		in   string
		want []Spec
	}{
		{"empty", "", nil},
		{"only separators", " ;\t;\n ", nil},
		{"one", "6379:redis", []Spec{{Listen: 6379, Backends: []Endpoint{{Host: "redis", Port: 6379}}, Source: src, Target: "redis"}}},
		{
			"whitespace and semicolons, order kept",
			"  8080:web:80;6379:redis\n\t5432:[::1]:5432,db ;; ",
			[]Spec{
				{Listen: 8080, Backends: []Endpoint{{Host: "web", Port: 80}}, Source: src, Target: "web"},
				{Listen: 6379, Backends: []Endpoint{{Host: "redis", Port: 6379}}, Source: src, Target: "redis"},
				{Listen: 5432, Backends: []Endpoint{{Host: "::1", Port: 5432}, {Host: "db", Port: 5432}}, Source: src},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRouteList(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tcpSpecs(tt.want), got)
		})
	}
}

func TestParseRouteListErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr []string
	}{
		{"bad item", "6379:redis 80:x:0", []string{`parse AMBASSADORD_ROUTES: route "80:x:0": backend "x:0": port "0": out of range`}},
		{"all bad items reported", "a:b;6379:redis;80", []string{`route "a:b"`, `route "80": missing backend`}},
		{"duplicate", "6379:a 6379:b", []string{`parse AMBASSADORD_ROUTES: listen port 6379 is claimed twice: "6379:a" and "6379:b" (keep one of them, or give one another listen port)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRouteList(tt.in)
			require.Error(t, err)
			assert.Nil(t, got)
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	a := Spec{Listen: 6379, Backends: []Endpoint{{Host: "redis", Port: 6379}}, Source: "env REDIS_PORT_6379_TCP"}
	b := Spec{Listen: 80, Backends: []Endpoint{{Host: "web", Port: 80}}, Source: `--route "80:web"`}
	c := Spec{Listen: 5432, Backends: []Endpoint{{Host: "db", Port: 5432}}, Source: "AMBASSADORD_ROUTES"}
	tests := []struct {
		name  string
		lists [][]Spec
		want  []Spec
	}{
		{"nothing", nil, nil},
		{"empty lists", [][]Spec{nil, {}}, nil},
		{"sorted by listen", [][]Spec{{a}, {b, c}}, []Spec{b, c, a}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Merge(tt.lists...)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestMergeDoesNotModifyInput(t *testing.T) {
	in := []Spec{{Listen: 2, Source: "x"}, {Listen: 1, Source: "y"}}
	_, err := Merge(in)
	require.NoError(t, err)
	assert.Equal(t, []Spec{{Listen: 2, Source: "x"}, {Listen: 1, Source: "y"}}, in)
}

func TestMergeConflicts(t *testing.T) {
	env := Spec{Listen: 6379, Backends: []Endpoint{{Host: "172.17.0.2", Port: 6379}}, Source: "env REDIS_PORT_6379_TCP"}
	flag := Spec{Listen: 6379, Backends: []Endpoint{{Host: "x", Port: 1}}, Source: `--route "6379:x:1"`}
	list := Spec{Listen: 6379, Backends: []Endpoint{{Host: "y", Port: 1}}, Source: "AMBASSADORD_ROUTES"}
	other := Spec{Listen: 80, Backends: []Endpoint{{Host: "web", Port: 80}}, Source: `--route "80:web"`}
	tests := []struct {
		name    string
		lists   [][]Spec
		wantErr []string
	}{
		{
			"env and flag",
			[][]Spec{{env}, {other, flag}},
			[]string{`listen port 6379 is claimed twice: env REDIS_PORT_6379_TCP and --route "6379:x:1" (keep one of them, or give one another listen port)`},
		},
		{
			"within one list",
			[][]Spec{{flag, other, env}},
			[]string{`listen port 6379 is claimed twice: --route "6379:x:1" and env REDIS_PORT_6379_TCP (keep one of them, or give one another listen port)`},
		},
		{
			"three claimants each named against the first",
			[][]Spec{{env}, {flag}, {list}},
			[]string{
				`listen port 6379 is claimed twice: env REDIS_PORT_6379_TCP and --route "6379:x:1" (keep one of them, or give one another listen port)`,
				`listen port 6379 is claimed twice: env REDIS_PORT_6379_TCP and AMBASSADORD_ROUTES (keep one of them, or give one another listen port)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Merge(tt.lists...)
			require.Error(t, err)
			assert.Nil(t, got)
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

// tcpSpecs returns specs with Protocol TCP where it is unset: every route
// the parsers make is a TCP one.
func tcpSpecs(specs []Spec) []Spec {
	for i := range specs {
		if specs[i].Protocol == "" {
			specs[i].Protocol = TCP
		}
	}
	return specs
}

// tcpRoutes is tcpSpecs for routes.
func tcpRoutes(routes []Route) []Route {
	for i := range routes {
		if routes[i].Protocol == "" {
			routes[i].Protocol = TCP
		}
	}
	return routes
}

// TestProtocolKeys: routes are keyed by protocol and listen port, so that
// the same port can carry two protocols; two routes of one protocol on
// one port are a conflict.
func TestProtocolKeys(t *testing.T) {
	tcp := Spec{Protocol: TCP, Listen: 53, Backends: []Endpoint{{Host: "dns", Port: 53}}, Source: "a"}
	other := Spec{Protocol: "udp", Listen: 53, Backends: []Endpoint{{Host: "dns", Port: 53}}, Source: "b"}
	merged, err := Merge([]Spec{tcp}, []Spec{other})
	require.NoError(t, err)
	assert.Len(t, merged, 2)
	_, err = Merge([]Spec{tcp}, []Spec{{Listen: 53, Backends: []Endpoint{{Host: "x", Port: 1}}, Source: "c"}})
	assert.ErrorContains(t, err, "listen port 53 is claimed twice: a and c", "an unset protocol is TCP")
	routes := Resolve(merged, nil, Options{}).Routes
	require.Len(t, routes, 2)
	assert.Equal(t, []string{"tcp", "udp"}, []string{routes[0].Protocol, routes[1].Protocol})
}
