package resolver

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// Options are the ambassador's settings that shape resolution. The zero
// value is the default.
type Options struct {
	// Network is the network to reach a backend on when the backend shares
	// several networks with the ambassador and its own ambassador.network
	// label does not choose. A name or an ID. When empty, or when the
	// backend is not on it, the lowest network name wins.
	Network string

	// ClaimScope limits which containers may claim a target by label; the
	// zero value admits every container the ambassador can reach.
	ClaimScope ClaimScope

	// Claims says on which routes claims count at all; the zero value
	// admits them on the route of the ambassador's own ambassador.target
	// label only.
	Claims Claims

	// Engines describes the engines whose containers the snapshot holds,
	// by name (source.Container.Engine). A container of an engine that is
	// not Remote, or not in the map, is local: reached at its IP on a
	// network it shares with the ambassador, as ever. A remote engine's
	// containers are reached at the address of its host and the host
	// port they publish for the route's backend port.
	//
	// The engine the ambassador runs on is LocalEngine; so is a container
	// whose Engine is empty or not in the map. Only its containers answer
	// to a target name without an engine, and only there are the
	// ambassador's own container and links. A route naming an engine
	// (Spec.Engine) that is neither in the map nor in the snapshot has no
	// backend.
	Engines map[string]Engine

	// NoLocality turns the preference for local backends off: at equal
	// priority, remote backends are then balanced with local ones, where
	// by default they serve only while no local one is usable (so that a
	// consumer next to its server never crosses the network).
	NoLocality bool

	// Local are the addresses the ambassador listens on: a backend at one
	// of them, on one of the routes' listen ports, would be the ambassador
	// itself, which would connect to itself until descriptors run out. It
	// is refused. Loopback ranges belong here whole (127.0.0.0/8), as do
	// the unspecified addresses when the ambassador listens on every
	// address. Empty means no check.
	Local []netip.Prefix

	// Overrides rewire routes by hand (`ambassadord rewire`), whatever
	// labels and links say: a key is a route's name (its listen port) or a
	// target name, and its value the target name, or static HOST:PORT, to
	// use instead. A route's own name wins over its target's. The route
	// keeps its listen port and backend port; a rewired route has no
	// fallback.
	Overrides map[string]string

	// ListenTLS says which routes listen with TLS (Route.ListenTLS); the
	// zero value, none but the routes of an ambassador labelled
	// ambassador.tls=true that its own container makes (its
	// ambassador.target label, its links): those exist only once it is
	// known, so a route never turns from plain to TLS under its clients.
	ListenTLS ListenTLS
}

// ListenTLS says which routes listen with TLS: every one, or those on the
// listed ports.
type ListenTLS struct {
	All   bool
	Ports []int
}

// covers reports whether the route on port listens with TLS.
func (l ListenTLS) covers(port int) bool {
	return l.All || slices.Contains(l.Ports, port)
}

// Engine is what the resolver knows of one engine (Options.Engines).
type Engine struct {
	// Remote marks an engine on another host than the ambassador's.
	Remote bool
	// Address is the remote engine's host, an IP or a name, where its
	// containers publish their ports: a binding to an unspecified
	// address (0.0.0.0, ::) is reached there. A binding to a specific
	// address is reached at that address instead.
	Address string
}

// Result is the outcome of Resolve.
type Result struct {
	// Routes are sorted by Listen, one per listen port.
	Routes []Route
	// Warnings are the things a person should hear about: sources skipped
	// because their listen port was taken, malformed labels, links and
	// label targets that yield no route. Each appears once, in a
	// deterministic order, so an unchanged input gives unchanged warnings.
	Warnings []string
}

// Sources of routes that Resolve makes itself.
const (
	linkSource  = "link "                      // + NAME:ALIAS
	labelSource = "label " + LabelTarget + "=" // + NAME
)

const (
	// noEngine is the NoBackend of a target route without fallback while
	// there is no snapshot.
	noEngine = "docker engine not reached"
	// roleValue is the value of LabelRole that marks an ambassador.
	roleValue = "ambassador"
	// hostNet is the network of a container run with --network host.
	hostNet = "host"
)

// Resolve computes the routes the proxy should serve from the route
// specifications and the engine's snapshot (nil while Docker is not
// reached). The routing model is described in the package documentation.
//
// Specs without Alias are the explicit ones (--route, AMBASSADORD_ROUTES)
// and come first; specs with Alias, from the classic link variables, come
// second; each keeps its order within its group. Resolve is pure and
// deterministic: the same arguments give the same Result.
func Resolve(specs []Spec, snap *source.Snapshot, opts Options) Result {
	r := &resolution{
		snap:     snap,
		opts:     opts,
		taken:    make(map[routeKey]*pending),
		covered:  make(map[string]bool),
		targets:  make(map[electionKey]*election),
		warnings: make(map[string]bool),
	}
	if snap != nil && snap.Self != nil && r.onLocalEngine(snap.Self) {
		// The ambassador runs on the local engine: a remote engine's
		// container that looked like its own is not.
		r.self = snap.Self
	}
	for _, s := range specs {
		if s.Alias == "" {
			r.addSpec(s)
		}
	}
	for _, s := range specs {
		if s.Alias != "" {
			r.addClassic(s)
		}
	}
	r.addLinks()
	r.addLabelTarget()

	var res Result
	for _, p := range r.order {
		res.Routes = append(res.Routes, r.route(p))
	}
	slices.SortFunc(res.Routes, func(a, b Route) int { return cmp.Or(a.Listen-b.Listen, strings.Compare(a.Protocol, b.Protocol)) })
	res.Warnings = r.warningList
	return res
}

// resolution is the state of one Resolve call.
type resolution struct {
	snap *source.Snapshot
	self *source.Container // nil when unknown or without a snapshot
	opts Options

	order   []*pending                // routes in the order their sources were read
	taken   map[routeKey]*pending     // by protocol and listen port
	covered map[string]bool           // link names whose classic variables made specs
	targets map[electionKey]*election // computed once per call

	warningList []string
	warnings    map[string]bool // those in warningList
}

// pending is a route before its target is resolved.
type pending struct {
	proto    string // TCP or UDP; "" means TCP
	listen   int
	source   string
	target   string     // "" for a static route
	engine   string     // the engine target names a container of; "" for the local one
	port     int        // backend port for a target
	fallback []Endpoint // static backends, or the target's fallback
	kind     routeKind  // where the route came from, for Options.Claims
	tls      bool       // the target's containers are dialled with TLS (tls://NAME)
	fromSelf bool       // from the ambassador's own container (its label, its links)
}

// routeKey identifies a route: its protocol and listen port.
type routeKey struct {
	proto  string
	listen int
}

func (p *pending) key() routeKey { return routeKey{cmp.Or(p.proto, TCP), p.listen} }

// name is the route's Name: its listen port, with /udp for UDP, so that
// a TCP and a UDP route on one port (DNS) have names of their own.
func (p *pending) name() string {
	if k := p.key(); k.proto != TCP {
		return strconv.Itoa(k.listen) + "/" + k.proto
	}
	return strconv.Itoa(p.listen)
}

// routeKind is where a route came from, as far as Options.Claims is
// concerned.
type routeKind int

const (
	kindRoute routeKind = iota // --route, AMBASSADORD_ROUTES
	kindLink                   // a classic variable of a link, or a link
	kindLabel                  // the ambassador's own ambassador.target label
)

// flagValue is the --claims item that admits claims on routes of kind k.
func (k routeKind) flagValue() string {
	switch k {
	case kindLink:
		return "links"
	case kindLabel:
		return "label"
	}
	return "routes"
}

// claimable says whether containers may claim target on a route of kind
// k, and if not, why not, for the candidates' reasons.
func (r *resolution) claimable(k routeKind, target string) (bool, string) {
	if isDNSName(target) {
		return false, fmt.Sprintf("%s is a DNS name, which no container may claim", clip(target))
	}
	c := r.opts.Claims
	switch {
	case k == kindRoute && !c.Routes, k == kindLink && !c.Links:
		return false, fmt.Sprintf("claims do not count on a route from %s, which follows the container named %s (--claims %s admits them)",
			k.describe(), clip(target), c.with(k))
	case k == kindLabel && c.NoLabel:
		return false, "claims do not count (--claims none)"
	}
	return true, ""
}

// describe names the kind in messages.
func (k routeKind) describe() string {
	switch k {
	case kindLink:
		return "a link"
	case kindLabel:
		return "the ambassador's label " + LabelTarget
	}
	return "--route"
}

// with returns the --claims value that also admits claims on kind k.
func (c Claims) with(k routeKind) string {
	switch k {
	case kindLink:
		c.Links = true
	case kindRoute:
		c.Routes = true
	case kindLabel:
		c.NoLabel = false
	}
	return c.String()
}

// isDNSName reports whether a target name has a dot inside it: a host name
// such as db.prod.example.com, which DNS resolves, not a claim.
func isDNSName(name string) bool {
	return strings.Contains(strings.TrimSuffix(name, "."), ".")
}

// warn records a warning, once however often it comes up (a bad label on a
// container that several routes consider, for instance).
func (r *resolution) warn(format string, args ...any) {
	w := clipMessage(fmt.Sprintf(format, args...))
	if !r.warnings[w] {
		r.warnings[w] = true
		r.warningList = append(r.warningList, w)
	}
}

// add records p unless its listen port is taken by an earlier source. A
// route identical in effect to the one holding the port (same target,
// engine and port) is dropped silently: `--route 6379:redis` and `--link
// redis:redis` mean the same listener.
func (r *resolution) add(p *pending) {
	if held, ok := r.taken[p.key()]; ok {
		if p.target == "" || held.target != p.target || held.engine != p.engine || held.port != p.port {
			r.warn("%s: listen port %d skipped: already taken by %s", p.source, p.listen, held.source)
		}
		return
	}
	r.taken[p.key()] = p
	r.order = append(r.order, p)
}

// addSpec adds an explicit spec: a target route when ParseRoute found a
// name, with its endpoint as the fallback, else a static route. A target
// on another engine has no fallback: DNS here knows nothing of its
// containers.
func (r *resolution) addSpec(s Spec) {
	p := &pending{proto: s.proto(), listen: s.Listen, source: s.Source, target: s.Target, fallback: s.Backends, kind: kindRoute}
	if s.Target != "" {
		p.port = s.Listen
		if len(s.Backends) > 0 {
			p.port, p.tls = s.Backends[0].Port, s.Backends[0].TLS
		}
		if s.Engine != "" {
			p.engine, p.fallback = s.Engine, nil
		}
	}
	r.add(p)
}

// addClassic adds a spec from a classic link variable: the linked
// container by name when the ambassador has a link of that alias, the
// variable's address serving only as the fallback; otherwise static, as
// for a remote host given with -e.
func (r *resolution) addClassic(s Spec) {
	p := &pending{proto: s.proto(), listen: s.Listen, source: s.Source, fallback: s.Backends, kind: kindLink}
	if l, ok := r.link(s.Alias); ok && len(s.Backends) > 0 {
		r.covered[l.Name] = true
		p.target = l.Name
		p.port, p.tls = s.Backends[0].Port, s.Backends[0].TLS
	}
	r.add(p)
}

// link returns the ambassador's link whose alias Docker would spell alias
// in variable names.
func (r *resolution) link(alias string) (source.Link, bool) {
	if r.self == nil {
		return source.Link{}, false
	}
	for _, l := range r.self.Links {
		if variableAlias(l.Alias) == alias {
			return source.Link{Name: baseName(l.Name), Alias: l.Alias}, true
		}
	}
	return source.Link{}, false
}

// variableAlias spells a link alias as Docker does in variable names:
// upper-case, with '_' for '-' and '.'. A path ("/amb/redis", as the engine
// reports HostConfig.Links) is reduced to its last element.
func variableAlias(alias string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '.' {
			return '_'
		}
		return r
	}, strings.ToUpper(baseName(alias)))
}

// baseName returns a container name or alias without the engine's path
// ("/redis", "/amb/redis" -> "redis").
func baseName(s string) string {
	return s[strings.LastIndexByte(s, '/')+1:]
}

// addLinks adds one route per exposed TCP port of each container the
// ambassador links to, unless the link's classic variables already made
// routes: Docker 29 injects no variables, and --link redis:redis must still
// work. Listen and backend port are the exposed port.
func (r *resolution) addLinks() {
	if r.self == nil {
		return
	}
	for _, l := range r.self.Links {
		name := baseName(l.Name)
		if r.covered[name] {
			continue
		}
		from := linkSource + name + ":" + baseName(l.Alias)
		c := r.container(name)
		if c == nil {
			r.warn("%s: no route: container %s is not running", from, name)
			continue
		}
		var n int
		for _, pt := range c.Ports {
			if pt.Proto != TCP && pt.Proto != UDP {
				r.warn("%s: port %d/%s skipped: only TCP and UDP are forwarded", from, pt.Port, pt.Proto)
				continue
			}
			n++
			r.add(&pending{proto: pt.Proto, listen: pt.Port, source: from, target: name, port: pt.Port, kind: kindLink, fromSelf: true})
		}
		if n == 0 {
			r.warn("%s: no route: container %s exposes no TCP or UDP port; add --route LISTEN:%s:PORT", from, name, name)
		}
	}
}

// container returns the container of that name on the local engine, where
// the ambassador's links are, or nil.
func (r *resolution) container(name string) *source.Container {
	for i := range r.snap.Containers {
		if c := &r.snap.Containers[i]; c.Name == name && r.onLocalEngine(c) {
			return c
		}
	}
	return nil
}

// addLabelTarget adds the routes the ambassador's own ambassador.target
// label asks for: the ports of its ambassador.ports label, else the
// ambassador's own exposed TCP ports (docker run --expose 6379). Listen
// ports come only from the ambassador's own configuration, never from the
// containers that claim its target: a claimer exposing other ports must
// not open listeners, nor close the ones serving connections.
func (r *resolution) addLabelTarget() {
	if r.self == nil {
		return
	}
	name, ok := r.self.Labels[LabelTarget]
	if !ok {
		return
	}
	from := labelSource + clip(name)
	if name == "" {
		r.warn("%s: ignored: empty target name", from)
		return
	}
	if err := checkTargetName(name); err != nil {
		r.warn("%s: ignored: %v", from, err)
		return
	}
	var pairs []portPair
	if v, ok := r.self.Labels[LabelPorts]; ok {
		var warnings []string
		pairs, warnings = parsePortsLabel(v)
		for _, w := range warnings {
			r.warn("%s: %s", from, w)
		}
		if len(pairs) == 0 {
			r.warn("%s: no route: label %s=%s gives no port", from, LabelPorts, quote(v))
		}
	} else {
		for _, pt := range r.self.Ports {
			if pt.Proto == TCP || pt.Proto == UDP {
				pairs = append(pairs, portPair{Proto: pt.Proto, Listen: pt.Port, Backend: pt.Port})
			}
		}
		if len(pairs) == 0 {
			r.warn("%s: no route: the ambassador exposes no TCP or UDP port; set label %s, or run it with --expose PORT", from, LabelPorts)
		}
	}
	for _, p := range pairs {
		r.add(&pending{proto: p.Proto, listen: p.Listen, source: from, target: name, port: p.Backend, kind: kindLabel, fromSelf: true})
	}
}

// containerBackend returns the backend of the container c at addr, with
// the weight and the health check its labels give. A malformed label is
// warned of and left out: weight 1, and the route's check if any, since a
// typo must not leave a backend unchecked where the route checks.
func (r *resolution) containerBackend(c *source.Container, addr string, tls bool) source.Backend {
	b := source.Backend{Addr: addr, ID: c.ID, TLS: tls}
	if v, ok := c.Labels[LabelWeight]; ok {
		w, note, err := parseWeight(v)
		switch {
		case err != nil:
			r.warn("container %s: label %s=%s: %v; treated as 1", c.Name, LabelWeight, quote(v), err)
		case note != "":
			r.warn("container %s: label %s=%s %s", c.Name, LabelWeight, quote(v), note)
		}
		b.Weight = w
	}
	if v, ok := c.Labels[LabelCheck]; ok {
		chk, err := source.ParseCheck(v)
		if err != nil {
			r.warn("container %s: label %s=%s ignored: %v", c.Name, LabelCheck, quote(v), err)
		} else {
			b.Check = chk
			if !chk.Enabled() {
				b.Check.Kind = source.CheckOff // off, even where the route checks
			}
		}
	}
	return b
}

// route resolves p into the Route the proxy serves: the chosen containers
// of its target, else its static backends or fallback, else nothing and
// the reason.
func (r *resolution) route(p *pending) Route {
	override := r.override(p)
	if override != "" {
		p = overridden(p, override)
	}
	rt := Route{Name: p.name(), Protocol: p.key().proto, Listen: p.listen, Source: p.source, Target: p.target, Engine: p.engine, Port: p.port, Override: override,
		ListenTLS: p.key().proto == TCP && (r.opts.ListenTLS.covers(p.listen) || p.fromSelf && tlsLabel(r.self))}
	noBackend := noEngine
	if p.target == "" {
		noBackend = "no backend given"
	}
	switch {
	case p.target == "" || r.snap == nil:
	case p.engine != "" && p.engine != LocalEngine && !r.knowsEngine(p.engine):
		noBackend = fmt.Sprintf("no engine named %s (see --engine)", p.engine)
	default:
		e := r.elect(p.target, p.kind, p.engine, p.port, p.key().proto)
		for _, c := range e.candidates {
			rt.Candidates = append(rt.Candidates, c.Candidate)
		}
		balance := ""
		for _, c := range e.chosen() {
			b := r.containerBackend(c.ctr, c.addr, p.tls || rt.Protocol == TCP && tlsLabel(c.ctr))
			b.ProxyProtocol = c.proxy
			rt.Backends = append(rt.Backends, b)
			switch v := strings.TrimSpace(c.ctr.Labels[LabelBalance]); v {
			case "":
			case BalanceLeastConn:
				balance = v
			case BalanceRoundRobin:
				balance = cmp.Or(balance, v)
			default:
				r.warn("container %s: label %s=%s ignored: want %s or %s", c.ctr.Name, LabelBalance, quote(v), BalanceRoundRobin, BalanceLeastConn)
			}
		}
		if rt.Protocol == TCP {
			rt.Balance = balance
		}
		if len(rt.Backends) > 0 {
			return rt
		}
		noBackend = e.noBackend
	}
	for _, f := range p.fallback {
		if p.target != "" && r.snap != nil {
			if why := unusableFallback(f); why != "" {
				noBackend = fmt.Sprintf("%s; fallback %s not used: %s", noBackend, f, why)
				continue
			}
		}
		if r.ownAddress(f, p.key().proto) {
			// A container's address is never the ambassador's own: its
			// own container is not a candidate. A static address can be.
			noBackend = fmt.Sprintf("%s; %s", noBackend, selfLoop(f))
			r.warn("route %d (from %s): %s", p.listen, p.source, selfLoop(f))
			continue
		}
		rt.Backends = append(rt.Backends, source.Backend{Addr: f.Addr(), TLS: f.TLS})
	}
	if len(rt.Backends) == 0 {
		rt.NoBackend = noBackend
	}
	return rt
}

// maxTargetLen bounds a target name: Docker puts no limit on container
// names, but a name longer than a DNS name is no one's.
const maxTargetLen = 255

// checkTargetName accepts what may name a container or a host: letters,
// digits, '_', '.' and '-', starting with a letter or a digit, as Docker
// requires of container names.
func checkTargetName(name string) error {
	if len(name) > maxTargetLen {
		return fmt.Errorf("not a container or host name: %d bytes long, more than %d", len(name), maxTargetLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && (r == '_' || r == '.' || r == '-')
		if !ok {
			return fmt.Errorf("not a container or host name: %s has %q at byte %d", quote(name), r, i)
		}
	}
	return nil
}

// ownAddress reports whether e is one of the ambassador's own listening
// addresses: an address of Options.Local and the listen port of a route.
// A host name is not looked up here (see SelfLoops).
func (r *resolution) ownAddress(e Endpoint, proto string) bool {
	if r.taken[routeKey{proto, e.Port}] == nil {
		return false
	}
	return isLocal(r.opts.Local, e.Host)
}

// isLocal reports whether host is an IP literal within one of local.
func isLocal(local []netip.Prefix, host string) bool {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range local {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// selfLoop says why a backend at the ambassador's own address is refused.
func selfLoop(e Endpoint) string {
	return fmt.Sprintf("backend %s refused: it is the ambassador's own listening address, which would connect to itself until descriptors run out", e)
}

// SelfLoops returns an error naming every backend of specs that is one of
// the ambassador's own listening addresses: an address within local on
// one of the specs' listen ports. Host names are resolved with lookup
// (nil: they are not checked). Call it at start-up, to refuse such static
// routes before anything listens; Resolve drops the ones that appear
// later (an override, a port that a label adds), with a warning.
func SelfLoops(specs []Spec, local []netip.Prefix, lookup func(host string) []netip.Addr) error {
	listen := make(map[int]bool, len(specs))
	for _, s := range specs {
		listen[s.Listen] = true
	}
	var errs []error
	for _, s := range specs {
		if s.Engine != "" {
			// A container of another engine, not a host to look up.
			continue
		}
		for _, e := range s.Backends {
			if !listen[e.Port] {
				continue
			}
			own := isLocal(local, e.Host)
			if _, err := netip.ParseAddr(e.Host); err != nil && lookup != nil {
				for _, a := range lookup(e.Host) {
					own = own || isLocal(local, a.String())
				}
			}
			if own {
				errs = append(errs, fmt.Errorf("%s: %s", s.Source, selfLoop(e)))
			}
		}
	}
	return errors.Join(errs...)
}

// unknownTargetFix says how to give a target a backend.
func unknownTargetFix(name string, claimable bool) string {
	if !claimable {
		return fmt.Sprintf("run a container named %s", clip(name))
	}
	return fmt.Sprintf("run a container named %s, or label one %s=%s", clip(name), LabelTarget, clip(name))
}

// unusableFallback says why, while the engine is watched, a target
// route's fallback must not be used, or returns "" for a fallback that may.
//
// An IP address is the one the target had when the route was made (a
// classic link variable). With the engine in view, the target is not
// running there any more: Docker reuses addresses at once, so the address
// belongs to a stranger or to nobody (connects hang until a stranger takes
// it). A single-label name is a container name, which Docker's DNS
// resolves only for containers the snapshot shows, and may still answer
// with the address of one being removed. A name with a dot is a host name
// beyond Docker's reach (db.example.com), which only DNS can resolve.
func unusableFallback(f Endpoint) string {
	if _, err := netip.ParseAddr(f.Host); err == nil {
		return "it was the target's address, and Docker reuses addresses"
	}
	if !strings.Contains(strings.TrimSuffix(f.Host, "."), ".") {
		return "a container name is resolved from the engine, not by DNS"
	}
	return ""
}

// override returns the rewire that applies to p, or "".
func (r *resolution) override(p *pending) string {
	if to, ok := r.opts.Overrides[p.name()]; ok {
		return to
	}
	if p.target != "" {
		return r.opts.Overrides[p.target]
	}
	return ""
}

// overridden returns p rewired to to: a target name (ENGINE/NAME for a
// container of another engine), or a static address (an IP, or
// HOST:PORT). A value that is neither leaves the route with no backend,
// never the old one.
func overridden(p *pending, to string) *pending {
	q := *p
	q.fallback, q.engine = nil, ""
	// The backend port stays: a target's, else a single static backend's,
	// else the listen port.
	port := p.port
	if port == 0 && len(p.fallback) == 1 {
		port = p.fallback[0].Port
	}
	port = cmp.Or(port, p.listen)
	if !isStaticOverride(to) {
		q.target, q.port = to, port
		if engine, name, ok := strings.Cut(to, "/"); ok {
			q.engine, q.target = engine, name
		}
		return &q
	}
	q.target, q.port = "", 0
	host, tls := strings.CutPrefix(to, tlsScheme)
	if e, err := parseEndpoint(host, port); err == nil {
		e.TLS = tls || p.tls
		q.fallback = []Endpoint{e}
	}
	return &q
}

func isStaticOverride(to string) bool {
	return strings.Contains(to, ":") || net.ParseIP(to) != nil
}

// ParseOverride checks the value of a rewire: a target name, ENGINE/NAME
// for a container of another engine, an IP, or HOST:PORT.
func ParseOverride(to string) error {
	if isStaticOverride(to) {
		_, err := parseEndpoint(strings.TrimPrefix(to, tlsScheme), 1)
		return err
	}
	if to == "" {
		return fmt.Errorf("empty target name")
	}
	engine, name, ok := strings.Cut(to, "/")
	if !ok {
		return checkHost(to)
	}
	if engine == LocalEngine {
		return fmt.Errorf("%q is the engine the ambassador runs on: leave the engine out (%s)", engine, name)
	}
	if err := CheckEngineName(engine); err != nil {
		return err
	}
	if err := checkHost(name); err != nil {
		return err
	}
	if !isTargetName(name) {
		return fmt.Errorf("%q is not a container name: ENGINE/NAME names a container of engine %s, not an address", name, engine)
	}
	return nil
}

// election is the outcome of looking a target name up in the snapshot.
type election struct {
	candidates []*candidate
	noBackend  string // when none is chosen

	// claimable: claims count (Resolution.claimable); noClaims says why
	// not, when they do not.
	claimable bool
	noClaims  string
}

// electionKey identifies an election: the same name is looked up apart
// for routes on which claims count and routes on which they do not, by
// name on different engines, and for different backend ports, which
// decide where a remote container is reached (the host port it
// publishes for the backend port).
type electionKey struct {
	name   string
	kind   routeKind
	engine string // the engine the name is looked up on; "" for the local one
	port   int
	proto  string // a remote container publishes each protocol's ports apart
}

// chosen returns the chosen candidates, in candidate order.
func (e *election) chosen() []*candidate {
	var out []*candidate
	for _, c := range e.candidates {
		if c.Chosen {
			out = append(out, c)
		}
	}
	return out
}

// candidate is a container considered for a target, with what the election
// needs to know of it.
type candidate struct {
	Candidate
	ctr      *source.Container
	claims   bool   // by label, and allowed to (claimable route, not Self, not an ambassador, in scope)
	usable   bool   // running, healthy, reachable, valid port label
	priority int    // for claimers
	addr     string // the backend address, HOST:PORT, when usable
	port     int    // ambassador.port override; 0 for none
	proxy    int    // ambassador.proxy-protocol: the PROXY header version it expects; 0 for none
	remote   bool   // on a remote engine (Options.Engines), reached where it publishes
	mesh     bool   // a Swarm task reached through its service's routing mesh

	// For the Reason of a chosen candidate: the priority as the election
	// reports it, the health, port and network notes, and for a remote
	// one its engine and address.
	priorityText string
	detail       string
	where        string
}

// elect looks a target name up in the snapshot for a route of kind k and
// backend port port, once per Resolve call. engine is the engine to look
// the name up on, "" for the local one.
//
// Claimers come first, where claims count on the route (Options.Claims):
// running, healthy, reachable containers of any engine labelled
// ambassador.target=name, in the claim scope, Self and ambassadors
// excluded; those of the highest priority are chosen, and of those the
// local ones alone while there is one (unless Options.NoLocality). Only
// when none qualifies does the container named name on engine count. A
// claimer that cannot be reached does not count, so it cannot shadow a
// lower-priority one that can.
func (r *resolution) elect(name string, k routeKind, engine string, port int, proto string) *election {
	key := electionKey{name, k, engine, port, proto}
	if e, ok := r.targets[key]; ok {
		return e
	}
	e := &election{}
	e.claimable, e.noClaims = r.claimable(k, name)
	r.targets[key] = e

	for _, c := range r.sortedContainers() {
		byLabel := c.Labels[LabelTarget] == name
		// A Swarm service's name stands for all its running tasks.
		byName := (c.Name == name || c.Task != nil && c.Task.Service == name) && r.onEngine(c, engine)
		if !byLabel && !byName {
			continue
		}
		e.candidates = append(e.candidates, r.consider(c, name, byLabel, byName, e, port, proto))
	}

	best, claimed := 0, false
	for _, c := range e.candidates {
		if c.claims && c.usable && (!claimed || c.priority > best) {
			best, claimed = c.priority, true
		}
	}
	// Locality: at the top priority, a usable local claimer keeps the
	// remote ones out, so that a consumer next to its server never
	// crosses the network.
	preferLocal := false
	for _, c := range e.candidates {
		if c.claims && c.usable && c.priority == best && !c.remote {
			preferLocal = !r.opts.NoLocality
		}
	}
	for _, c := range e.candidates {
		switch {
		case !c.usable:
		case c.claims && c.priority == best && c.remote && preferLocal:
			c.Reason = fmt.Sprintf("remote (%s); a local claimer of equal priority is preferred (--prefer-local)", c.where)
		case c.claims && c.priority == best && c.remote:
			c.Chosen = true
			c.Reason = fmt.Sprintf("claims %s (claim scope %s; %s), priority %s%s", name, r.opts.ClaimScope, c.where, c.priorityText, c.detail)
		case c.claims && c.priority == best:
			c.Chosen = true
			c.Reason = fmt.Sprintf("claims %s (claim scope %s), priority %s%s", name, r.opts.ClaimScope, c.priorityText, c.detail)
		case c.claims:
			c.Reason = fmt.Sprintf("lower priority (%d < %d)", c.priority, best)
		case claimed:
			c.Reason = fmt.Sprintf("named %s, but containers claim %s", name, name)
		case c.remote:
			c.Chosen = true
			c.Reason = fmt.Sprintf("named %s (%s)%s", name, c.where, c.detail)
		default:
			c.Chosen = true
			c.Reason = fmt.Sprintf("named %s%s", name, c.detail)
		}
	}

	// The routing mesh balances a service's tasks itself: one backend
	// per address.
	mesh := map[string]*candidate{}
	for _, c := range e.candidates {
		if !c.Chosen || !c.mesh {
			continue
		}
		if first, ok := mesh[c.addr]; ok {
			c.Chosen = false
			c.Reason = fmt.Sprintf("reached through the routing mesh at %s, as %s is: Swarm balances the tasks there", c.addr, first.Name)
			continue
		}
		mesh[c.addr] = c
	}
	for _, c := range e.candidates {
		c.Reason = clipMessage(c.Reason)
	}
	if len(e.chosen()) > 0 {
		return e
	}
	// Self is left out: on an ambassador serving its own ambassador.target
	// label it is always a candidate, and never news.
	var why []string
	for _, c := range e.candidates {
		if !r.isSelf(c.ctr) {
			why = append(why, c.Name+": "+c.Reason)
		}
	}
	switch {
	case len(why) > 0:
		e.noBackend = fmt.Sprintf("no usable container for %s (%s)", name, strings.Join(why, "; "))
	case engine != "" && !e.claimable:
		e.noBackend = fmt.Sprintf("no container is named %s on engine %s (run one there)", name, engine)
	case engine != "":
		e.noBackend = fmt.Sprintf("no container claims %s, nor is named %s on engine %s (run one there, or label one %s=%s)", name, name, engine, LabelTarget, clip(name))
	case len(e.candidates) > 0:
		e.noBackend = fmt.Sprintf("no container claims or is named %s, other than the ambassador itself (%s)", name, unknownTargetFix(name, e.claimable))
	case !e.claimable:
		e.noBackend = fmt.Sprintf("no container is named %s (%s)", name, unknownTargetFix(name, false))
	default:
		e.noBackend = fmt.Sprintf("no container claims or is named %s (%s)", name, unknownTargetFix(name, true))
	}
	return e
}

// isSelf reports whether c is the ambassador's own container, which is on
// the local engine.
func (r *resolution) isSelf(c *source.Container) bool {
	return r.self != nil && c.ID == r.self.ID && c.Engine == r.self.Engine
}

// onLocalEngine reports whether c is on the engine the ambassador runs on:
// LocalEngine, or an engine Options.Engines does not describe (a single
// engine's source may bear any name).
func (r *resolution) onLocalEngine(c *source.Container) bool {
	if c.Engine == "" || c.Engine == LocalEngine {
		return true
	}
	_, described := r.opts.Engines[c.Engine]
	return !described
}

// onEngine reports whether c is on the engine named engine, "" (or
// LocalEngine, in a Spec made by hand) for the local one: where a target
// is looked up by name.
func (r *resolution) onEngine(c *source.Container, engine string) bool {
	if engine == "" || engine == LocalEngine {
		return r.onLocalEngine(c)
	}
	return c.Engine == engine
}

// isRemote reports whether c is on a remote engine: reached where its
// engine's host publishes its ports, not on a network it shares with the
// ambassador.
func (r *resolution) isRemote(c *source.Container) bool {
	return c.Engine != "" && c.Engine != LocalEngine && r.opts.Engines[c.Engine].Remote
}

// knowsEngine reports whether engine is one Options.Engines describes or
// one the snapshot has containers of.
func (r *resolution) knowsEngine(engine string) bool {
	if _, ok := r.opts.Engines[engine]; ok {
		return true
	}
	return slices.ContainsFunc(r.snap.Containers, func(c source.Container) bool { return c.Engine == engine })
}

// sortedContainers returns the snapshot's containers by Name, then ID,
// then engine, whatever order the sources used.
func (r *resolution) sortedContainers() []*source.Container {
	out := make([]*source.Container, 0, len(r.snap.Containers))
	for i := range r.snap.Containers {
		out = append(out, &r.snap.Containers[i])
	}
	slices.SortFunc(out, func(a, b *source.Container) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID), strings.Compare(a.Engine, b.Engine))
	})
	return out
}

// consider judges one container matching a target by label, by name, or
// both, for election e of a route with backend port port. It sets Reason
// for an unusable candidate; the election sets it for the others.
func (r *resolution) consider(c *source.Container, name string, byLabel, byName bool, e *election, port int, proto string) *candidate {
	cd := &candidate{Candidate: Candidate{ID: c.ID, Name: c.Name, Engine: c.Engine}, ctr: c, remote: r.isRemote(c)}
	if c.Task != nil {
		cd.Task = c.Task.String() + " on " + c.Task.Node
		// A task of a remote engine's swarm on an overlay network the
		// ambassador is attached to is reached there, as a local
		// container is: per task.
		if cd.remote && slices.ContainsFunc(c.Networks, func(n source.Network) bool { return n.Overlay && r.shared(n) }) {
			cd.remote = false
		}
	}
	isAmbassador := c.Labels[LabelRole] == roleValue
	switch {
	case r.isSelf(c):
		cd.Reason = "the ambassador itself"
		return cd
	case byLabel && isAmbassador && !byName:
		cd.Reason = fmt.Sprintf("ambassador (%s=%s)", LabelRole, roleValue)
		return cd
	case c.State == "paused":
		cd.Reason = "paused"
		return cd
	case c.State != "running":
		cd.Reason = fmt.Sprintf("not running (%s)", cmp.Or(c.State, "state unknown"))
		return cd
	}
	// An ambassador named by the user counts, but never as a claimer.
	cd.claims = byLabel && !isAmbassador
	// onlyNet is the network a claimer must be reached on while the
	// ambassador's own networks are unknown; "" otherwise.
	var onlyNet string
	if cd.claims {
		ok, why := e.claimable, e.noClaims
		if ok {
			ok, why = r.opts.ClaimScope.admits(c, r.self)
		}
		// A remote claimer shares no network with the ambassador: the
		// operator admitted its engine by configuring it.
		if ok && !cd.remote {
			onlyNet, ok, why = r.claimNetwork(c)
		}
		if !ok {
			if !byName {
				cd.Reason = fmt.Sprintf("claims %s, but %s", name, why)
				return cd
			}
			// Still the container of that name.
			cd.claims, onlyNet = false, ""
		}
	}

	var health string
	switch c.Health {
	case "":
		health = "running, no healthcheck"
	case "healthy":
		health = "healthy"
	case "unhealthy":
		cd.Reason = "unhealthy"
		return cd
	case "starting":
		cd.Reason = "health starting (not yet healthy)"
		return cd
	default:
		cd.Reason = fmt.Sprintf("health %s", quote(c.Health))
		return cd
	}
	details := []string{health}

	if cd.claims {
		if v, ok := c.Labels[LabelPort]; ok {
			p, err := parsePort(strings.TrimSpace(v))
			if err != nil {
				cd.Reason = fmt.Sprintf("malformed %s %s: %v", LabelPort, quote(v), err)
				r.warn("container %s: skipped for %s: label %s=%s: %v", c.Name, name, LabelPort, quote(v), err)
				return cd
			}
			cd.port = p
			details = append(details, fmt.Sprintf("port %d (%s)", p, LabelPort))
		}
	}

	if v, ok := c.Labels[LabelProxyProtocol]; ok && proto == TCP {
		p, err := parseProxyProtocol(v)
		if err != nil {
			cd.Reason = fmt.Sprintf("malformed %s %s: %v", LabelProxyProtocol, quote(v), err)
			r.warn("container %s: skipped for %s: label %s=%s: %v", c.Name, name, LabelProxyProtocol, quote(v), err)
			return cd
		}
		cd.proxy = p
		details = append(details, fmt.Sprintf("PROXY protocol v%d (%s)", p, LabelProxyProtocol))
	}

	if cd.remote {
		addr, mesh, skip := r.publishedTask(c, cmp.Or(cd.port, port), proto)
		if skip != "" {
			cd.Reason = skip
			return cd
		}
		cd.addr, cd.where, cd.mesh = addr, fmt.Sprintf("engine %s, reached at %s", c.Engine, addr), mesh
		if mesh {
			cd.where = fmt.Sprintf("engine %s, through the routing mesh at %s: no network shared with the task", c.Engine, addr)
		}
	} else if len(c.Networks) == 0 && onlyNet == "" && r.self == nil {
		// No network of its own (rootless Podman's slirp4netns or
		// pasta, --network none): the ambassador, on the host (no
		// Self), reaches what it publishes there. A claimer never gets
		// here: on the host, claims count from --network alone.
		addr, skip := r.publishedOnHost(c, cmp.Or(cd.port, port), proto)
		if skip != "" {
			cd.Reason = skip
			return cd
		}
		cd.addr = addr
		details = append(details, "published on the host at "+addr+" (no network of its own)")
	} else {
		ip, note, skip := r.address(c, onlyNet)
		if skip != "" {
			cd.Reason = skip
			return cd
		}
		if note != "" {
			details = append(details, note)
		}
		cd.addr = net.JoinHostPort(ip, strconv.Itoa(cmp.Or(cd.port, port)))
	}
	cd.usable = true
	cd.detail = ", " + strings.Join(details, ", ")

	if cd.claims {
		cd.priorityText = "0"
		if v, ok := c.Labels[LabelPriority]; ok {
			p, err := parsePriority(v)
			if err != nil {
				cd.priorityText = fmt.Sprintf("0 (malformed %s %s: %v)", LabelPriority, quote(v), err)
				r.warn("container %s: label %s=%s: %v; treated as 0", c.Name, LabelPriority, quote(v), err)
			} else {
				cd.priority = p
				cd.priorityText = strconv.Itoa(p)
			}
		}
	}
	return cd
}

// publishedTask is published for a container, and for a Swarm task the
// port its node publishes in host mode or, failing that, its service's
// routing mesh at the engine's address (mesh set).
func (r *resolution) publishedTask(c *source.Container, port int, proto string) (addr string, mesh bool, skip string) {
	if c.Task == nil {
		addr, skip = r.published(c, port, proto)
		return addr, false, skip
	}
	if slices.ContainsFunc(c.Ports, func(p source.Port) bool { return p.Port == port && p.Proto == proto }) {
		addr, skip = r.published(c, port, proto)
		return addr, false, skip
	}
	viaMesh := *c
	viaMesh.Ports = c.Task.Mesh
	addr, skip = r.published(&viaMesh, port, proto)
	return addr, skip == "", skip
}

// published returns where the ambassador reaches c, a container of a
// remote engine, for its port port of protocol proto: its engine's host, at the host
// port it publishes port on. A binding to a specific address is reached
// there; one to every address of the host (0.0.0.0, ::, "") at the
// engine's Address. Bindings on the engine's Address come first, then
// those on other addresses, each by host port then address. A binding on
// the host's loopback (unless the engine's Address is a loopback one:
// the engine runs beside the ambassador), or with a zone, is not
// reachable from another host. skip says why c cannot be reached.
func (r *resolution) published(c *source.Container, port int, proto string) (addr, skip string) {
	address := r.opts.Engines[c.Engine].Address
	if checkAddress(address) != nil {
		address = ""
	}
	return r.publishedAt(c, port, proto, address, "on engine "+c.Engine)
}

// noNetworkFix says what to do about a container without a network of its
// own that the ambassador cannot reach at a published port.
const noNetworkFix = "it has no network address the ambassador can reach (rootless Podman's slirp4netns or pasta, " +
	"or --network none): publish the port (podman run -p PORT), or put it on a network shared with the ambassador (podman network create)"

// publishedOnHost returns where the ambassador, on the host of its local
// engine, reaches c, a container of that engine with no network of its
// own (rootless Podman's slirp4netns and pasta give it none the host can
// reach), for its port port of protocol proto: at the host port it
// publishes, on the host's loopback when it publishes on every address.
func (r *resolution) publishedOnHost(c *source.Container, port int, proto string) (addr, skip string) {
	addr, skip = r.publishedAt(c, port, proto, "127.0.0.1", "on no network")
	if skip != "" {
		skip += "; " + noNetworkFix
	}
	return addr, skip
}

// publishedAt is published for a container whose host is reached at
// address ("" when unknown); where tells the container's engine or
// network in skip's reasons and the warning.
func (r *resolution) publishedAt(c *source.Container, port int, proto, address, where string) (addr, skip string) {
	var bindings []source.Binding
	for _, p := range c.Ports {
		if p.Port == port && p.Proto == proto {
			bindings = append(bindings, p.Published...)
		}
	}
	if len(bindings) == 0 {
		flag := strconv.Itoa(port)
		if proto != TCP {
			flag += "/" + proto
		}
		if c.Task != nil {
			fix := fmt.Sprintf("attach the ambassador to one of its overlay networks %v, or publish the port: docker service update --publish-add %s", networkNames(c.Networks), flag)
			r.warn("task %s of service %s on engine %s: skipped: no network shared with the ambassador, and the service publishes nothing for port %s; %s", c.Name, c.Task.Service, c.Engine, flag, fix)
			return "", fmt.Sprintf("on engine %s, shares no network with the ambassador and publishes nothing for port %s (%s)", c.Engine, flag, fix)
		}
		r.warn("container %s %s: skipped: it publishes nothing for port %s; publish it (docker run -p %s)", c.Name, where, flag, flag)
		return "", fmt.Sprintf("%s, publishes nothing for port %s (docker run -p %s)", where, flag, flag)
	}
	slices.SortFunc(bindings, func(a, b source.Binding) int {
		return cmp.Or(a.HostPort-b.HostPort, strings.Compare(a.HostIP, b.HostIP))
	})
	var (
		onAddress, elsewhere string
		why                  []string
	)
	for _, b := range bindings {
		host, onEngineAddress, unreachable := bindingHost(b, address)
		switch {
		case unreachable != "":
			if !slices.Contains(why, unreachable) {
				why = append(why, unreachable)
			}
		case onEngineAddress && onAddress == "":
			onAddress = net.JoinHostPort(host, strconv.Itoa(b.HostPort))
		case !onEngineAddress && elsewhere == "":
			elsewhere = net.JoinHostPort(host, strconv.Itoa(b.HostPort))
		}
	}
	addr = cmp.Or(onAddress, elsewhere)
	if addr == "" {
		return "", fmt.Sprintf("%s, publishes port %d only where the ambassador cannot reach it (%s)", where, port, strings.Join(why, "; "))
	}
	host, p, _ := net.SplitHostPort(addr)
	hostPort, _ := strconv.Atoi(p)
	if e := (Endpoint{Host: host, Port: hostPort}); r.ownAddress(e, proto) {
		return "", selfLoop(e)
	}
	return addr, ""
}

// checkAddress accepts the Address of an engine: an IP literal or a host
// name, without brackets or port. An unspecified address (0.0.0.0, ::) is
// no host's: connecting to it reaches the ambassador's own.
func checkAddress(a string) error {
	if ip, err := netip.ParseAddr(a); err == nil {
		if ip.Zone() != "" || ip.IsUnspecified() {
			return fmt.Errorf("%s is not the address of a host", a)
		}
		return nil
	}
	if strings.Contains(a, ":") {
		return fmt.Errorf("%s is not an IP address", quote(a))
	}
	return checkHost(a)
}

// isLoopback reports whether a is a loopback IP literal.
func isLoopback(a string) bool {
	ip, err := netip.ParseAddr(a)
	return err == nil && ip.Unmap().IsLoopback()
}

// bindingHost returns the host a binding of a remote engine is reached at:
// the engine's address for an unspecified one, else the binding's own
// address; onAddress says it is the engine's address. unreachable says
// why the binding cannot be used.
func bindingHost(b source.Binding, address string) (host string, onAddress bool, unreachable string) {
	shown := net.JoinHostPort(b.HostIP, strconv.Itoa(b.HostPort))
	if b.HostPort < 1 || b.HostPort > 65535 {
		return "", false, fmt.Sprintf("%s: port out of range 1..65535", clip(shown))
	}
	if b.HostIP == "" {
		b.HostIP = "0.0.0.0"
	}
	ip, err := netip.ParseAddr(b.HostIP)
	switch {
	case err != nil:
		return "", false, fmt.Sprintf("%s: not an IP address", clip(shown))
	case ip.IsUnspecified() && address == "":
		return "", false, fmt.Sprintf("%s: every address of its host, but the engine's address is unknown or invalid (address= in --engine)", shown)
	case ip.IsUnspecified():
		return address, true, ""
	case ip.Zone() != "":
		return "", false, fmt.Sprintf("%s: an address with a zone, which only its host can use", clip(shown))
	case ip.Unmap().IsLoopback() && !isLoopback(address):
		// Reachable only from the engine's host, unless the engine
		// is on the ambassador's (its address a loopback one).
		return "", false, fmt.Sprintf("%s: its host's loopback", shown)
	}
	host = ip.Unmap().String()
	return host, host == address, ""
}

// claimNetwork decides where a claimer may be reached from. Claims count
// from the networks the ambassador shares with the claimer; when the
// ambassador's own networks are unknown (it runs outside a container the
// engine knows, or on the host network, which reaches every bridge), that
// would be every network of the engine, so claims count only from the
// network the operator named (Options.Network), and the claimer is
// reached on it. It returns that network, or "" for any shared one, or
// why the claim does not count.
func (r *resolution) claimNetwork(c *source.Container) (only string, ok bool, why string) {
	if !r.ownNetworksUnknown() {
		return "", true, ""
	}
	const unknown = "the ambassador's own networks are unknown (it runs outside a container the engine knows, or on the host network)"
	if r.opts.Network == "" {
		return "", false, unknown + ": claims count only from the network --network names"
	}
	if _, ok := findNetwork(c.Networks, r.opts.Network); !ok {
		return "", false, fmt.Sprintf("it is not on network %s, the only one claims count from while %s (--network)", r.opts.Network, unknown)
	}
	return r.opts.Network, true, ""
}

// ownNetworksUnknown reports whether the ambassador's networks do not say
// which containers it shares a network with: it is not in a container the
// engine knows, or it is on the host network.
func (r *resolution) ownNetworksUnknown() bool {
	if r.self == nil {
		return true
	}
	for _, s := range r.self.Networks {
		if s.Name == hostNet {
			return true
		}
	}
	return false
}

// address picks the IP to reach c on: its IP on a network it shares with
// the ambassador. Among several, c's ambassador.network label chooses, then
// Options.Network, else the lowest network name; note says which rule chose
// when there was a choice. skip says why c cannot be reached. A non-empty
// only is the one network to reach c on (claimNetwork).
func (r *resolution) address(c *source.Container, only string) (ip, note, skip string) {
	if only != "" {
		n, _ := findNetwork(c.Networks, only)
		if n.IP == "" {
			return "", "", fmt.Sprintf("no IPv4 address on network %s (--network)", n.Name)
		}
		return n.IP, fmt.Sprintf("network %s (--network)", n.Name), ""
	}
	var shared, noIP []source.Network
	for _, n := range c.Networks {
		if !r.shared(n) {
			continue
		}
		if n.IP == "" {
			noIP = append(noIP, n)
			continue
		}
		shared = append(shared, n)
	}
	slices.SortFunc(shared, func(a, b source.Network) int { return strings.Compare(a.Name, b.Name) })
	switch {
	case len(shared) == 0 && len(noIP) > 0:
		return "", "", fmt.Sprintf("no IPv4 address on the networks shared with the ambassador %v", networkNames(noIP))
	case len(shared) == 0 && c.Task != nil:
		skip := fmt.Sprintf("task of service %s on %v, networks the ambassador is not attached to: attach it to one (an attachable overlay: docker network connect), or run it as a service on one",
			c.Task.Service, networkNames(c.Networks))
		r.warn("task %s: skipped: %s", c.Name, skip)
		return "", "", skip
	case len(shared) == 0 && r.self == nil:
		return "", "", "on no network"
	case len(shared) == 0:
		skip := fmt.Sprintf("no network shared with the ambassador: container on %v, ambassador on %v",
			networkNames(c.Networks), networkNames(r.self.Networks))
		r.warn("container %s: skipped: %s; connect them with docker network connect", c.Name, skip)
		return "", "", skip
	}

	var notes []string
	if want, ok := c.Labels[LabelNetwork]; ok {
		if n, ok := findNetwork(shared, want); ok {
			if len(shared) == 1 {
				return n.IP, "", ""
			}
			return n.IP, fmt.Sprintf("network %s (%s)", n.Name, LabelNetwork), ""
		}
		notes = append(notes, fmt.Sprintf("%s=%s is not shared with the ambassador", LabelNetwork, quote(want)))
		r.warn("container %s: label %s=%s names no network it shares with the ambassador (%v); using another",
			c.Name, LabelNetwork, quote(want), networkNames(shared))
	}
	n := shared[0]
	switch {
	case len(shared) == 1:
		if len(notes) > 0 {
			notes = append(notes, "network "+n.Name)
		}
	case r.opts.Network != "":
		if o, ok := findNetwork(shared, r.opts.Network); ok {
			notes = append(notes, fmt.Sprintf("network %s (the ambassador's preferred network)", o.Name))
			n = o
			break
		}
		fallthrough
	default:
		note := fmt.Sprintf("network %s (lowest name of %v; set %s to choose)", n.Name, networkNames(shared), LabelNetwork)
		notes = append(notes, note)
		r.warn("container %s: reached on %s", c.Name, note)
	}
	return n.IP, strings.Join(notes, "; "), ""
}

// shared reports whether the ambassador can reach a container on n: n is
// one of Self's networks, by ID when both sides know it, else by name.
// Without Self (the ambassador on the host, or unknown) and with Self on
// the host network, every network counts: the host routes to the bridges.
// (Claims are narrower there: claimNetwork.)
//
// A Swarm overlay network is the exception: only a container attached to
// it reaches its addresses, so it counts only when Self is attached.
func (r *resolution) shared(n source.Network) bool {
	if r.ownNetworksUnknown() {
		return !n.Overlay
	}
	for _, s := range r.self.Networks {
		if s.ID != "" && n.ID != "" {
			if s.ID == n.ID {
				return true
			}
			continue
		}
		if s.Name == n.Name {
			return true
		}
	}
	return false
}

// findNetwork returns the network of nets named, or with ID, want.
func findNetwork(nets []source.Network, want string) (source.Network, bool) {
	for _, n := range nets {
		if n.Name == want || n.ID != "" && n.ID == want {
			return n, true
		}
	}
	return source.Network{}, false
}

// networkNames returns the sorted names of nets, for messages.
func networkNames(nets []source.Network) []string {
	names := make([]string, 0, len(nets))
	for _, n := range nets {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// maxShown is the most of a label value (or another value a container
// sets) that a reason or a warning quotes: a label may be megabytes long,
// and every log line and `explain` would carry it whole.
const maxShown = 64

// clip returns s, or its first maxShown bytes (cut at a rune boundary)
// and how long it was.
func clip(s string) string { return clipTo(s, maxShown) }

// clipTo returns s, or its first max bytes, cut at a rune boundary, and
// how long it was.
func clipTo(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

// maxMessage bounds a warning or a reason as a whole: label values are
// clipped where they are quoted (maxShown), and this catches the rest,
// such as the names of links and containers, which Docker does not bound.
const maxMessage = 1024

// clipMessage returns s, or its first maxMessage bytes and its length.
func clipMessage(s string) string { return clipTo(s, maxMessage) }

// quote returns s quoted, clipped to maxShown bytes.
func quote(s string) string {
	if len(s) <= maxShown {
		return strconv.Quote(s)
	}
	c := clip(s)
	i := strings.LastIndex(c, "…(")
	return strconv.Quote(c[:i]) + c[i:]
}
