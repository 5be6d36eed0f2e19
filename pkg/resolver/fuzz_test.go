package resolver

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// checkSpec reports a test error unless spec is one a parser may return.
func checkSpec(t *testing.T, spec Spec) {
	t.Helper()
	if spec.Listen < 1 || spec.Listen > 65535 {
		t.Errorf("listen port %d out of range in %+v", spec.Listen, spec)
	}
	if len(spec.Backends) == 0 {
		t.Errorf("no backends in %+v", spec)
	}
	for _, e := range spec.Backends {
		if e.Host == "" {
			t.Errorf("empty host in %+v", spec)
		}
		if e.Port < 1 || e.Port > 65535 {
			t.Errorf("backend port %d out of range in %+v", e.Port, spec)
		}
	}
	if spec.Source == "" {
		t.Errorf("empty source in %+v", spec)
	}
	// A target is exactly the name of a single backend.
	if spec.Target != "" && (len(spec.Backends) != 1 || spec.Backends[0].Host != spec.Target) {
		t.Errorf("target %q is not the only backend's host in %+v", spec.Target, spec)
	}
	// An engine names a container: a target name, never an address, on an
	// engine of valid name other than the local one.
	if spec.Engine != "" {
		if spec.Target == "" || !isTargetName(spec.Target) {
			t.Errorf("engine %q without a container name in %+v", spec.Engine, spec)
		}
		if err := CheckEngineName(spec.Engine); err != nil || spec.Engine == LocalEngine {
			t.Errorf("engine %q accepted: %v", spec.Engine, err)
		}
	}
}

// checkRoundTrip reports a test error unless the canonical form of spec
// parses back to the same listen port and backends, and is a fixed point.
func checkRoundTrip(t *testing.T, spec Spec) {
	t.Helper()
	canonical := spec.String()
	again, err := ParseRoute(canonical)
	if err != nil {
		t.Fatalf("canonical form %q of %+v does not parse: %v", canonical, spec, err)
	}
	if again.Listen != spec.Listen || !equalEndpoints(again.Backends, spec.Backends) || again.Engine != spec.Engine {
		t.Fatalf("canonical form %q parsed to %+v, want %+v", canonical, again, spec)
	}
	if got := again.String(); got != canonical {
		t.Fatalf("canonical form %q re-rendered as %q", canonical, got)
	}
}

func equalEndpoints(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{
		"6379:redis:6379", "6379:10.0.0.5", "8080:[::1]:80", "6379:10.0.0.5:6379,10.0.0.6:6379",
		"8080:[fe80::1%eth0]:80", "80:my_db.example.com.", "0:x", "80:::1", "80:[::1", "80:127.1",
		"65535:a,b:1,[::ffff:1.2.3.4]", "080:x", "80:-x", "80:a..b",
		"6379:big/redis:6379", "6379:local/redis", "6379:big/10.0.0.1", "6379:a/b/c", "6379:big/x,y", "1:B/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseRoute(s)
		if err != nil {
			return
		}
		checkSpec(t, spec)
		if want := `--route "` + s + `"`; spec.Source != want {
			t.Errorf("source %q, want %q", spec.Source, want)
		}
		// Whatever is accepted is safe to print and to split on whitespace.
		if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == ';' || r >= 0x7f }) {
			t.Errorf("accepted %q, which contains whitespace, ';', or non-ASCII", s)
		}
		// A slash is the engine's, and only an engine route's.
		if (spec.Engine != "") != strings.Contains(s, "/") || strings.Count(s, "/") > 1 {
			t.Errorf("%q parsed with engine %q", s, spec.Engine)
		}
		checkRoundTrip(t, spec)
	})
}

func FuzzParseRouteList(f *testing.F) {
	for _, s := range []string{
		"", "6379:redis", "8080:web:80;6379:redis\n\t5432:[::1]:5432,db ;; ", "6379:a 6379:b", "a:b;80",
		"6379:big/redis;80:local/web 81:x/y,z",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := ParseRouteList(s)
		if err != nil {
			return
		}
		seen := make(map[int]bool)
		for _, spec := range specs {
			checkSpec(t, spec)
			if spec.Source != "AMBASSADORD_ROUTES" {
				t.Errorf("source %q", spec.Source)
			}
			if seen[spec.Listen] {
				t.Errorf("listen port %d returned twice", spec.Listen)
			}
			seen[spec.Listen] = true
			checkRoundTrip(t, spec)
		}
	})
}

// FuzzParseClassicEnv takes an environment as newline-separated entries.
func FuzzParseClassicEnv(f *testing.F) {
	f.Add(strings.Join(redisLink, "\n"))
	for _, s := range []string{
		"REDIS_NAME=/amb/redis\nREDIS_ENV_X_PORT_1_TCP=tcp://evil:1",
		"PROD_ENV_DB_PORT_5432_TCP=tcp://10.0.0.7:5432",
		"A_PORT_1_TCP=tcp://[::1]:1\nB_PORT_2_TCP=tcp://b.example:2",
		"A_PORT_1_TCP=http://x:1", "A_PORT_0_TCP=tcp://x:1", "A_PORT_1_TCP=tcp://x:1/",
		"A_PORT_1_TCP=tcp://x:1\nB_PORT_1_TCP=tcp://y:1", "A_PORT_53_UDP=udp://x:53", "A_PORT_1_TCP",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		environ := strings.Split(s, "\n")
		specs, warnings, err := ParseClassicEnv(environ)
		if err != nil {
			if specs != nil {
				t.Errorf("specs %+v returned with error %v", specs, err)
			}
			return
		}
		names := make(map[string]bool)
		for _, kv := range environ {
			if name, _, ok := strings.Cut(kv, "="); ok {
				names[name] = true
			}
		}
		for i, spec := range specs {
			checkSpec(t, spec)
			if len(spec.Backends) != 1 {
				t.Errorf("%d backends in %+v", len(spec.Backends), spec)
			}
			if i > 0 {
				prev := specs[i-1]
				if prev.Listen > spec.Listen || prev.Listen == spec.Listen && prev.proto() >= spec.proto() {
					t.Errorf("not sorted by listen and protocol, or duplicate: %+v", specs)
				}
			}
			name, ok := strings.CutPrefix(spec.Source, "env ")
			if want := map[string]string{"_TCP": TCP, "_UDP": UDP}[name[max(len(name)-4, 0):]]; spec.proto() != want {
				t.Errorf("protocol %s from %s", spec.proto(), spec.Source)
			}
			if !ok || !names[name] {
				t.Errorf("source %q does not name a variable of the environment", spec.Source)
			}
			if spec.Target != "" {
				t.Errorf("classic spec with target %+v", spec)
			}
			if !strings.HasPrefix(name, spec.Alias+"_PORT_") || spec.Alias == "" {
				t.Errorf("alias %q is not the prefix of %s", spec.Alias, name)
			}
			// The security invariant: nothing forwarded from a linked
			// container's environment becomes a listener.
			for j := 1; j < len(name); j++ {
				if strings.HasPrefix(name[j:], "_ENV_") && names[name[:j]+"_NAME"] {
					t.Errorf("listener from link-forwarded variable %s", name)
				}
			}
			checkRoundTrip(t, spec)
		}
		for _, w := range warnings {
			if !strings.HasPrefix(w, "env ") {
				t.Errorf("warning %q does not name a variable", w)
			}
		}
	})
}

func FuzzParsePortsLabel(f *testing.F) {
	for _, s := range []string{"", "6379", "6379,8080:80", " 1 , 2:3 ,", "6379,6379", "0", "1:2:3", "080", "a,:1,1:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pairs, warnings := parsePortsLabel(s)
		seen := make(map[int]bool)
		var canonical []string
		for _, p := range pairs {
			if p.Listen < 1 || p.Listen > 65535 || p.Backend < 1 || p.Backend > 65535 {
				t.Errorf("port out of range in %+v from %q", p, s)
			}
			if seen[p.Listen] {
				t.Errorf("listen port %d returned twice from %q", p.Listen, s)
			}
			seen[p.Listen] = true
			canonical = append(canonical, fmt.Sprintf("%d:%d", p.Listen, p.Backend))
		}
		for _, w := range warnings {
			if !strings.HasPrefix(w, "label ambassador.ports: entry ") {
				t.Errorf("warning %q does not name the label", w)
			}
		}
		// The canonical form parses back to the same pairs, silently.
		again, warnings := parsePortsLabel(strings.Join(canonical, ","))
		if !slices.Equal(again, pairs) || len(warnings) > 0 {
			t.Errorf("canonical form of %+v parsed to %+v, %q", pairs, again, warnings)
		}
	})
}

func FuzzParsePriority(f *testing.F) {
	for _, s := range []string{"0", "10", "-5", "+7", " 3 ", "high", "2147483648", "--1", "", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePriority(s)
		if err != nil {
			if p != 0 {
				t.Errorf("priority %d returned with error %v", p, err)
			}
			return
		}
		if p > maxPriority || p < -maxPriority {
			t.Errorf("priority %d from %q out of range", p, s)
		}
		// What is accepted is an integer as strconv reads it.
		want, perr := strconv.Atoi(strings.TrimSpace(s))
		if perr != nil || want != p {
			t.Errorf("parsePriority(%q) = %d, strconv says %d, %v", s, p, want, perr)
		}
		if again, err := parsePriority(strconv.Itoa(p)); err != nil || again != p {
			t.Errorf("canonical form of %d parsed to %d, %v", p, again, err)
		}
	})
}

func FuzzParseClaimScope(f *testing.F) {
	for _, s := range []string{"network", "project", "label:trusted", "label:a=b=c", "label:", " project ", "label: x", "LABEL:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scope, err := ParseClaimScope(s)
		if err != nil {
			if scope != (ClaimScope{}) {
				t.Errorf("scope %+v returned with error %v", scope, err)
			}
			return
		}
		// The canonical form parses back to the same scope.
		again, err := ParseClaimScope(scope.String())
		if err != nil || again != scope {
			t.Errorf("canonical form %q of %+v parsed to %+v, %v", scope.String(), scope, again, err)
		}
	})
}

func FuzzParseClaims(f *testing.F) {
	for _, s := range []string{"", "label", "none", "label,links,routes", " routes , label ", "links,links", "none,label", "all"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseClaims(s)
		if err != nil {
			if c != (Claims{}) {
				t.Errorf("claims %+v returned with error %v", c, err)
			}
			return
		}
		// The canonical form parses back to the same claims.
		again, err := ParseClaims(c.String())
		if err != nil || again != c {
			t.Errorf("canonical form %q of %+v parsed to %+v, %v", c.String(), c, again, err)
		}
	})
}

// FuzzResolveLabels feeds label values, which anyone who can start a
// container controls, to Resolve and checks the invariants of its result.
func FuzzResolveLabels(f *testing.F) {
	f.Add("web", "80,8080:80", "10", "8080", "back", "web")
	f.Add("web", "", "x", "0", "nope", "")
	f.Add("", "1:2:3", "-1", "", "", "amb")
	f.Fuzz(func(t *testing.T, target, portsLabel, priority, port, network, name string) {
		self := &source.Container{
			ID: "id-amb", Name: "amb", State: "running",
			Labels:   map[string]string{LabelRole: "ambassador", LabelTarget: target, LabelPorts: portsLabel},
			Networks: []source.Network{{Name: "back", ID: "n-back", IP: "10.1.0.2"}, {Name: "front", ID: "n-front", IP: "10.2.0.2"}},
			Links:    []source.Link{{Name: name, Alias: name}},
		}
		claimer := source.Container{
			ID: "id-" + name, Name: name, State: "running",
			Labels: map[string]string{
				LabelTarget: target, LabelPriority: priority, LabelPort: port, LabelNetwork: network,
			},
			Networks: []source.Network{{Name: "back", ID: "n-back", IP: "10.1.0.3"}, {Name: "front", ID: "n-front", IP: "10.2.0.3"}},
			Ports:    []source.Port{{Port: 80, Proto: "tcp"}, {Port: 53, Proto: "udp"}},
		}
		other := source.Container{
			ID: "id-other", Name: "other", State: "running",
			Labels:   map[string]string{LabelTarget: target},
			Networks: []source.Network{{Name: "front", ID: "n-front", IP: "10.2.0.4"}},
			Ports:    []source.Port{{Port: 8080, Proto: "tcp"}},
		}
		if portsLabel == "" {
			// No ambassador.ports: the ambassador's own exposed
			// ports (none) are its label's, not its claimers'.
			delete(self.Labels, LabelPorts)
		}
		snap := &source.Snapshot{Self: self, Containers: []source.Container{*self, claimer, other}}
		specs := []Spec{{Listen: 6379, Target: name, Source: "fuzz"}}

		res := Resolve(specs, snap, Options{Network: network})
		if again := Resolve(specs, snap, Options{Network: network}); !reflect.DeepEqual(res, again) {
			t.Fatalf("not deterministic:\n%+v\n%+v", res, again)
		}
		// Listen ports come from the ambassador's own configuration
		// only: the spec, its ambassador.ports label and its link (to
		// the container named name, exposing 80 and 53/udp); never from
		// what a claimer exposes (other's 8080).
		own := map[int]bool{6379: true, 80: true, 53: true}
		pairs, _ := parsePortsLabel(portsLabel)
		for _, p := range pairs {
			own[p.Listen] = true
		}
		// Whatever the labels, a warning or a reason quotes them clipped.
		for _, w := range res.Warnings {
			if len(w) > 2000 {
				t.Errorf("warning of %d bytes: %.200s", len(w), w)
			}
		}
		for i, rt := range res.Routes {
			if !own[rt.Listen] {
				t.Errorf("route %d is not the ambassador's own port", rt.Listen)
			}
			for _, c := range rt.Candidates {
				if len(c.Reason) > 2000 {
					t.Errorf("reason of %d bytes: %.200s", len(c.Reason), c.Reason)
				}
			}
			if prev := (routeKey{}); i > 0 {
				prev = routeKey{res.Routes[i-1].Protocol, res.Routes[i-1].Listen}
				if prev.listen > rt.Listen || prev.listen == rt.Listen && prev.proto >= rt.Protocol {
					t.Errorf("routes not sorted by listen and protocol, or a listen port twice: %+v", res.Routes)
				}
			}
			name := strconv.Itoa(rt.Listen)
			if rt.Protocol == UDP {
				name += "/udp"
			}
			if rt.Listen < 1 || rt.Listen > 65535 || rt.Name != name {
				t.Errorf("bad listen port or name in %+v", rt)
			}
			if (len(rt.Backends) == 0) != (rt.NoBackend != "") {
				t.Errorf("NoBackend %q with backends %v", rt.NoBackend, rt.Backends)
			}
			for _, b := range rt.Backends {
				if b.ID == "id-amb" {
					t.Errorf("the ambassador is its own backend in %+v", rt)
				}
				host, p, err := net.SplitHostPort(b.Addr)
				if err != nil || host == "" {
					t.Errorf("backend address %q: %v", b.Addr, err)
				}
				if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
					t.Errorf("backend port %q in %+v", p, rt)
				}
			}
		}
	})
}

// FuzzResolveEngines feeds what a remote engine reports of its containers
// (where they publish a port), the engine's address, the labels and the
// route to Resolve, with a local and a remote claimer and a container of
// the target's name on each side, and checks where backends may point:
// a remote container's at its engine's address or the address of one of
// its bindings, and a published port; a local one's at one of its network
// IPs; never a remote claimer beside a usable local one of the same
// priority, unless locality is off.
func FuzzResolveEngines(f *testing.F) {
	f.Add("192.168.1.52", "0.0.0.0", 32768, "10.0.0.7", 32769, "", "0", "0", false, "6379:redis:6379")
	f.Add("2001:db8::7", "::", 32768, "", 1, "7000", "10", "-1", false, "6379:big/redis")
	f.Add("", "127.0.0.1", 32768, "fe80::1%eth0", 0, "x", "0", "0", true, "7000:big/redis:7000")
	f.Add("big.example", "::ffff:10.0.0.7", 65535, "nowhere", 70000, "6379", "1", "1", true, "6379:nowhere/redis")
	f.Fuzz(func(t *testing.T, address, ip1 string, port1 int, ip2 string, port2 int, portLabel, farPriority, nearPriority string, noLocality bool, route string) {
		spec, err := ParseRoute(route)
		if err != nil || spec.Target == "" {
			spec = Spec{Listen: 6379, Target: "redis", Backends: []Endpoint{{Host: "redis", Port: 6379}}, Source: "fuzz"}
		}
		backendPort := spec.Backends[0].Port
		portLabelled, _ := parsePort(portLabel)
		published := []source.Port{{Port: backendPort, Proto: TCP, Published: []source.Binding{{HostIP: ip1, HostPort: port1}}}}
		if portLabelled != 0 && portLabelled != backendPort {
			published = append(published, source.Port{Port: portLabelled, Proto: TCP, Published: []source.Binding{{HostIP: ip2, HostPort: port2}}})
		} else {
			published[0].Published = append(published[0].Published, source.Binding{HostIP: ip2, HostPort: port2})
		}
		self := &source.Container{
			ID: "id-amb", Name: "amb", State: "running", Engine: LocalEngine,
			Labels:   map[string]string{LabelRole: "ambassador"},
			Networks: []source.Network{{Name: "app", ID: "n-app", IP: "172.18.0.2"}},
		}
		claimer := func(id, name, engine, priority string, ip string) source.Container {
			return source.Container{
				ID: id, Name: name, State: "running", Engine: engine,
				Labels:   map[string]string{LabelTarget: spec.Target, LabelPriority: priority, LabelPort: portLabel},
				Networks: []source.Network{{Name: "app", ID: "n-app", IP: ip}},
				Ports:    published,
			}
		}
		near := claimer("id-near", "near", LocalEngine, nearPriority, "172.18.0.3")
		far := claimer("id-far", "far", "big", farPriority, "172.18.0.4") // its bridge's IP, unreachable
		far.Networks[0].ID = "n-big-app"
		named := source.Container{ID: "id-named", Name: spec.Target, State: "running", Engine: LocalEngine,
			Networks: []source.Network{{Name: "app", ID: "n-app", IP: "172.18.0.5"}}}
		farNamed := source.Container{ID: "id-far-named", Name: spec.Target, State: "running", Engine: "big", Ports: published}
		snap := &source.Snapshot{Self: self, Containers: []source.Container{*self, near, far, named, farNamed}}
		opts := Options{
			Engines:    map[string]Engine{"big": {Remote: true, Address: address}, LocalEngine: {}},
			NoLocality: noLocality,
			Claims:     Claims{Routes: true},
		}

		res := Resolve([]Spec{spec}, snap, opts)
		if again := Resolve([]Spec{spec}, snap, opts); !reflect.DeepEqual(res, again) {
			t.Fatalf("not deterministic:\n%+v\n%+v", res, again)
		}
		if len(res.Routes) != 1 {
			t.Fatalf("%d routes from one spec: %+v", len(res.Routes), res.Routes)
		}
		rt := res.Routes[0]
		if (len(rt.Backends) == 0) != (rt.NoBackend != "") {
			t.Errorf("NoBackend %q with backends %v", rt.NoBackend, rt.Backends)
		}
		for _, w := range res.Warnings {
			if len(w) > 2000 {
				t.Errorf("warning of %d bytes: %.200s", len(w), w)
			}
		}
		for _, c := range rt.Candidates {
			if len(c.Reason) > 2000 {
				t.Errorf("reason of %d bytes: %.200s", len(c.Reason), c.Reason)
			}
		}
		byID := map[string]source.Container{}
		for _, c := range snap.Containers {
			byID[c.ID] = c
		}
		chosenLocal, chosenRemote := false, false
		for _, b := range rt.Backends {
			host, p, err := net.SplitHostPort(b.Addr)
			port, perr := strconv.Atoi(p)
			if err != nil || perr != nil || host == "" || port < 1 || port > 65535 {
				t.Errorf("backend address %q: %v", b.Addr, err)
				continue
			}
			c, ok := byID[b.ID]
			switch {
			case !ok || b.ID == "id-amb":
				t.Errorf("backend %v is no candidate of the snapshot", b)
			case c.Engine == "big":
				chosenRemote = chosenRemote || b.ID == "id-far"
				if !publishedAt(c, host, port, address) {
					t.Errorf("remote backend %v: neither the engine's address %q nor a binding's, with a published port, in %+v", b, address, c.Ports)
				}
				if spec.Engine == "" && b.ID == "id-far-named" {
					t.Errorf("a remote container by name on a route without engine: %v", b)
				}
			default:
				chosenLocal = chosenLocal || b.ID == "id-near"
				if !slices.ContainsFunc(c.Networks, func(n source.Network) bool { return n.IP == host }) {
					t.Errorf("local backend %v is not at one of its network IPs %+v", b, c.Networks)
				}
				if spec.Engine != "" && b.ID == "id-named" {
					t.Errorf("the local container by name on a route to engine %s: %v", spec.Engine, b)
				}
			}
		}
		if chosenLocal && chosenRemote && !noLocality {
			if np, fp := priorityOf(nearPriority), priorityOf(farPriority); np == fp {
				t.Errorf("local and remote claimers of priority %d balanced with locality on: %v", np, rt.Backends)
			}
		}
	})
}

// publishedAt reports whether host:port is where c publishes a port: the
// address of a binding, or the engine's address for a binding to every
// address (or a binding to it).
func publishedAt(c source.Container, host string, port int, address string) bool {
	for _, p := range c.Ports {
		for _, b := range p.Published {
			if b.HostPort != port {
				continue
			}
			ip, err := netip.ParseAddr(cmp.Or(b.HostIP, "0.0.0.0"))
			if err != nil {
				continue
			}
			if host == address && (ip.IsUnspecified() || ip.Unmap().String() == address) || host == ip.Unmap().String() {
				return true
			}
		}
	}
	return false
}

// priorityOf is a claimer's priority as the election counts it.
func priorityOf(label string) int {
	p, _ := parsePriority(label)
	return p
}
