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
	"unicode"
)

// Endpoint is a static backend address, validated by the parser that made it.
type Endpoint struct {
	// Host is an IPv4 literal, an IPv6 literal without brackets (possibly
	// with a zone, "fe80::1%eth0"), or a DNS name, as the user wrote it.
	Host string
	// Port is 1..65535.
	Port int
	// TLS: the backend is dialled with TLS (tls://HOST:PORT).
	TLS bool
}

// String returns "host:port", bracketing IPv6 literals, in the form
// ParseRoute accepts; with tls:// in front for a TLS backend.
func (e Endpoint) String() string {
	if e.TLS {
		return tlsScheme + e.Addr()
	}
	return e.Addr()
}

// Addr returns "host:port", bracketing IPv6 literals: what is dialled.
func (e Endpoint) Addr() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
}

// tlsScheme in front of a backend, in a route or a classic variable, has
// it dialled with TLS.
const tlsScheme = "tls://"

// Spec is one route as the user specified it: a listening port and where
// connections to it are forwarded, either static backends or a target name
// that Resolve looks up among the containers, with the static backends as
// the fallback.
type Spec struct {
	// Protocol is the transport the route forwards: TCP, the only one so
	// far. Routes are keyed by protocol and listen port; "" means TCP.
	Protocol string
	// Listen is the port the ambassador listens on, 1..65535.
	Listen int
	// Backends are the static backends, in the order given; the parsers
	// return at least one. When Target is set they are only the fallback,
	// used while Docker is not reached or nothing answers to the name.
	// When Engine is set too, the one backend only carries the name and
	// the backend port: a container of another engine has no fallback
	// (DNS here knows nothing of it).
	Backends []Endpoint
	// Source says where the spec came from, for errors and logs, e.g.
	// `--route "6379:redis:6379"`, `env REDIS_PORT_6379_TCP` or
	// `AMBASSADORD_ROUTES`.
	Source string
	// Target, when not empty, is a name Resolve looks up live: containers
	// claiming it with the ambassador.target label, else the container of
	// that name. The backend port is that of Backends[0], or Listen when
	// there are no Backends.
	//
	// ParseRoute and ParseRouteList set it when the route has a single
	// backend whose host is a name rather than an IP literal, except a
	// fully qualified name ending in '.', which stays a plain DNS name:
	// "6379:redis:6379" has Target "redis", "443:api.example.com.:443" none.
	Target string
	// Engine names the engine Target is looked up on by name, as
	// --route 6379:big/redis:6379 gives it; "" for the local engine.
	// Claims on Target count from every engine, where they count. A spec
	// with an Engine has a Target, and no fallback.
	Engine string
	// Alias is the link alias of a spec made from a classic link variable,
	// as it appears in the variable's name: upper-case, with '_' for '-'
	// and '.', e.g. "REDIS" for REDIS_PORT_6379_TCP. It is empty for every
	// other spec. Resolve uses it to find the ambassador's link of that
	// alias, and orders specs with an Alias after those without.
	Alias string
}

// String renders the spec in the canonical LISTEN:HOST:PORT[,HOST:PORT...]
// form, or LISTEN:ENGINE/NAME:PORT for a spec with an Engine, with every
// backend port explicit. ParseRoute of the result yields the same Listen,
// Backends and Engine.
func (s Spec) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(s.Listen))
	if s.proto() != TCP {
		b.WriteString("/" + s.proto())
	}
	b.WriteByte(':')
	if s.Engine != "" && len(s.Backends) == 1 {
		e := s.Backends[0]
		if e.TLS {
			b.WriteString(tlsScheme)
		}
		b.WriteString(s.Engine)
		b.WriteByte('/')
		b.WriteString(e.Addr())
		return b.String()
	}
	for i, e := range s.Backends {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.String())
	}
	return b.String()
}

// TCP and UDP are the protocols of routes.
const (
	TCP = "tcp"
	UDP = "udp"
)

// proto returns the spec's protocol, TCP when unset.
func (s Spec) proto() string {
	if s.Protocol == "" {
		return TCP
	}
	return s.Protocol
}

// routeListSource is the Source of every spec from AMBASSADORD_ROUTES.
const routeListSource = "AMBASSADORD_ROUTES"

// ParseRoute parses one explicit route, LISTEN_PORT:BACKEND[,BACKEND...],
// where BACKEND is HOST:PORT, or HOST alone to use LISTEN_PORT as the port.
//
// HOST is an IPv4 literal, a bracketed IPv6 literal ("[::1]:80"), or a DNS
// name: dot-separated labels of letters, digits, hyphens and underscores
// (Docker container names may contain underscores), at most 253 characters.
// Ports are decimal 1..65535 without leading zeros. No whitespace is
// allowed anywhere.
//
// Examples: "6379:redis:6379", "6379:10.0.0.5", "8080:[::1]:80",
// "6379:10.0.0.5:6379,10.0.0.6:6379", "6379:big/redis:6379".
//
// A route with a single backend whose host is a name (not an IP literal, not
// ending in '.') gets that name as its Target: Resolve then prefers the
// containers that claim or bear the name, and falls back to the name itself,
// resolved by DNS at connect time, when there are none. Routes with IP
// literals or several backends are static.
//
// A single backend ENGINE/NAME[:PORT] names the container NAME of the
// engine ENGINE (see CheckEngineName; not the local engine, which a route
// names by leaving the engine out): Target NAME, Engine ENGINE, and no
// fallback. NAME is a name as above, never an address.
//
// The returned Spec has Source `--route "<s>"`.
func ParseRoute(s string) (Spec, error) {
	spec, err := parseRoute(s)
	if err != nil {
		return Spec{}, fmt.Errorf("parse route %q: %w", s, err)
	}
	spec.Source = fmt.Sprintf("--route %q", s)
	return spec, nil
}

// ParseRouteList parses the value of AMBASSADORD_ROUTES: routes in the
// syntax of ParseRoute, separated by whitespace or ';'. Empty items are
// ignored, so an empty value yields no specs.
//
// Specs are returned in the order given, each with Source
// `AMBASSADORD_ROUTES`. Because that source does not tell the items apart,
// two items with the same listen port are rejected here, naming both items,
// rather than later by Merge. All malformed items are reported together.
func ParseRouteList(s string) ([]Spec, error) {
	items := strings.FieldsFunc(s, func(r rune) bool {
		return r == ';' || unicode.IsSpace(r)
	})
	var (
		specs []Spec
		errs  []error
		seen  = make(map[portKey]string)
	)
	for _, item := range items {
		spec, err := parseRoute(item)
		if err != nil {
			errs = append(errs, fmt.Errorf("parse %s: route %q: %w", routeListSource, item, err))
			continue
		}
		key := portKey{spec.proto(), spec.Listen}
		if first, ok := seen[key]; ok {
			errs = append(errs, fmt.Errorf("parse %s: listen port %d is claimed twice: %q and %q (%s)", routeListSource, spec.Listen, first, item, conflictFix))
			continue
		}
		seen[key] = item
		spec.Source = routeListSource
		specs = append(specs, spec)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return specs, nil
}

// conflictFix ends the error of two routes on one listen port.
const conflictFix = "keep one of them, or give one another listen port"

// Merge concatenates spec lists and returns them sorted by Listen. Two specs
// with the same Listen port are an error naming the port and both sources,
// in the order the lists were given; every such conflict is reported.
//
// Merge copies the specs into a new slice; it never modifies its arguments.
func Merge(lists ...[]Spec) ([]Spec, error) {
	var all []Spec
	for _, l := range lists {
		all = append(all, l...)
	}
	// Stable, so that of two claimants the one given first is named first.
	slices.SortStableFunc(all, func(a, b Spec) int { return cmp.Or(a.Listen-b.Listen, strings.Compare(a.proto(), b.proto())) })
	same := func(a, b Spec) bool { return a.Listen == b.Listen && a.proto() == b.proto() }
	var errs []error
	for i := 1; i < len(all); i++ {
		if !same(all[i], all[i-1]) {
			continue
		}
		// Name the first claimant of the port, not merely the previous one,
		// when three or more specs claim it.
		first := i - 1
		for first > 0 && same(all[first-1], all[i]) {
			first--
		}
		errs = append(errs, fmt.Errorf("listen port %d is claimed twice: %s and %s (%s)", all[i].Listen, all[first].Source, all[i].Source, conflictFix))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return all, nil
}

// parseRoute parses LISTEN_PORT:BACKEND[,BACKEND...] and leaves Source
// empty; errors carry no context about where s came from.
func parseRoute(s string) (Spec, error) {
	listen, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Spec{}, errors.New("missing backend: want LISTEN_PORT:HOST[:PORT][,HOST[:PORT]...]")
	}
	if listen == "" {
		return Spec{}, errors.New("missing listen port")
	}
	listen, proto, err := cutProto(listen)
	if err != nil {
		return Spec{}, err
	}
	port, err := parsePort(listen)
	if err != nil {
		return Spec{}, fmt.Errorf("listen port %q: %w", listen, err)
	}
	if proto == UDP && strings.Contains(rest, tlsScheme) {
		return Spec{}, errors.New("tls:// is for TCP routes: a UDP route forwards datagrams as they are")
	}
	spec := Spec{Protocol: proto, Listen: port}
	if single, tls := strings.CutPrefix(rest, tlsScheme); !strings.Contains(rest, ",") {
		if engine, name, ok := strings.Cut(single, "/"); ok && single[0] != '[' {
			spec, err := parseEngineRoute(spec, rest, engine, name)
			if err == nil {
				spec.Backends[0].TLS = tls
			}
			return spec, err
		}
	}
	for b := range strings.SplitSeq(rest, ",") {
		host, tls := strings.CutPrefix(b, tlsScheme)
		e, err := parseEndpoint(host, port)
		if err != nil {
			return Spec{}, fmt.Errorf("backend %q: %w", b, err)
		}
		e.TLS = tls
		spec.Backends = append(spec.Backends, e)
	}
	if len(spec.Backends) == 1 && isTargetName(spec.Backends[0].Host) {
		spec.Target = spec.Backends[0].Host
	}
	return spec, nil
}

// parseEngineRoute completes spec from its single backend b,
// ENGINE/NAME[:PORT], split at the slash.
func parseEngineRoute(spec Spec, b, engine, name string) (Spec, error) {
	if engine == LocalEngine {
		return Spec{}, fmt.Errorf("backend %q: %q is the engine the ambassador runs on: leave the engine out (%d:%s)", b, engine, spec.Listen, name)
	}
	if err := CheckEngineName(engine); err != nil {
		return Spec{}, fmt.Errorf("backend %q: %w", b, err)
	}
	e, err := parseEndpoint(name, spec.Listen)
	if err != nil {
		return Spec{}, fmt.Errorf("backend %q: %w", b, err)
	}
	if !isTargetName(e.Host) {
		return Spec{}, fmt.Errorf("backend %q: %q is not a container name: ENGINE/NAME names a container of engine %s, not an address", b, e.Host, engine)
	}
	spec.Backends = []Endpoint{e}
	spec.Target, spec.Engine = e.Host, engine
	return spec, nil
}

// LocalEngine is the name of the engine the ambassador runs on
// (source.Container.Engine): its containers are the ones a target without
// an engine names, and the ambassador's own container and links are
// there. A route names it by leaving the engine out.
const LocalEngine = "local"

// maxEngineLen bounds an engine name: it is a label of metrics and a word
// of logs.
const maxEngineLen = 32

// CheckEngineName accepts the name of an engine, as --engine NAME=URL and
// a route's ENGINE/NAME give it: lower-case letters, digits, '_' and '-',
// starting with a letter or a digit, at most 32 characters. LocalEngine
// is one, reserved for the engine the ambassador runs on.
func CheckEngineName(name string) error {
	if name == "" {
		return errors.New("empty engine name")
	}
	if len(name) > maxEngineLen {
		return fmt.Errorf("engine name %s is %d characters long, more than %d", quote(name), len(name), maxEngineLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || i > 0 && (r == '_' || r == '-')
		if !ok {
			return fmt.Errorf("engine name %q has %q at byte %d: want lower-case letters, digits, '_' and '-', starting with a letter or a digit", name, r, i)
		}
	}
	return nil
}

// isTargetName reports whether a validated host may name a container or a
// claim: it is not an IP literal and does not end in '.', the DNS way of
// saying "this name is fully qualified, do not look it up elsewhere".
func isTargetName(host string) bool {
	if strings.HasSuffix(host, ".") {
		return false
	}
	_, err := netip.ParseAddr(host)
	return err != nil
}

// parseEndpoint parses HOST:PORT, or HOST alone when defaultPort is not 0.
// HOST is validated by checkHost, or by checkIPv6 when bracketed.
func parseEndpoint(s string, defaultPort int) (Endpoint, error) {
	if s == "" {
		return Endpoint{}, errors.New("empty backend")
	}
	var (
		host, port string
		hasPort    bool
	)
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Endpoint{}, errors.New("missing ']' after IPv6 address")
		}
		host = s[1:end]
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return Endpoint{}, fmt.Errorf("unexpected %q after ']'", rest)
		}
		if err := checkIPv6(host); err != nil {
			return Endpoint{}, err
		}
	} else {
		host, port, hasPort = strings.Cut(s, ":")
		if strings.Contains(port, ":") {
			return Endpoint{}, errors.New("too many colons: put IPv6 addresses in brackets, e.g. [::1]:80")
		}
		if err := checkHost(host); err != nil {
			return Endpoint{}, err
		}
	}
	switch {
	case hasPort && port == "":
		return Endpoint{}, errors.New("missing port after ':'")
	case hasPort:
		p, err := parsePort(port)
		if err != nil {
			return Endpoint{}, fmt.Errorf("port %q: %w", port, err)
		}
		return Endpoint{Host: host, Port: p}, nil
	case defaultPort == 0:
		return Endpoint{}, errors.New("missing port")
	default:
		return Endpoint{Host: host, Port: defaultPort}, nil
	}
}

// parsePort parses a decimal port 1..65535. Leading zeros are rejected
// because some tools (socat among them) read such numbers as octal.
func parsePort(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a decimal number")
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, errors.New("leading zero")
	}
	if len(s) > 5 {
		return 0, errors.New("out of range 1..65535")
	}
	p, err := strconv.Atoi(s)
	if err != nil {
		return 0, err // unreachable: at most five digits
	}
	if p < 1 || p > 65535 {
		return 0, errors.New("out of range 1..65535")
	}
	return p, nil
}

// checkIPv6 accepts an IPv6 literal without brackets, with an optional zone
// made of the characters of interface names.
func checkIPv6(host string) error {
	if host == "" {
		return errors.New("empty IPv6 address in brackets")
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("invalid IPv6 address %q", host)
	}
	if !addr.Is6() {
		return fmt.Errorf("%q in brackets is not an IPv6 address", host)
	}
	// Interface names such as "eth0", "br-1a2b" or "eth0.100" (a VLAN).
	if zone := addr.Zone(); strings.IndexFunc(zone, func(r rune) bool { return !isNameChar(r) && r != '.' }) >= 0 {
		return fmt.Errorf("invalid IPv6 zone %q", zone)
	}
	return nil
}

// maxNameLen is the longest DNS name, not counting a trailing dot.
const maxNameLen = 253

// maxLabelLen is the longest label of a DNS name.
const maxLabelLen = 63

// checkHost accepts an IPv4 literal or a DNS name (RFC 1123, plus
// underscores). A host made only of digits and dots must be a valid IPv4
// literal: "127.1" or "010.0.0.1" would otherwise reach the system resolver,
// which may read them as IP addresses in surprising ways.
func checkHost(host string) error {
	if host == "" {
		return errors.New("missing host")
	}
	if strings.Trim(host, "0123456789.") == "" {
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is4() {
			return fmt.Errorf("invalid IPv4 address %q", host)
		}
		return nil
	}
	name := strings.TrimSuffix(host, ".") // a fully qualified name may end in a dot
	if len(name) > maxNameLen {
		return fmt.Errorf("host name is %d characters long, more than %d", len(name), maxNameLen)
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return fmt.Errorf("host %q has an empty label", host)
		case len(label) > maxLabelLen:
			return fmt.Errorf("host %q has a label longer than %d characters", host, maxLabelLen)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("host %q has a label starting or ending with '-'", host)
		}
		if i := strings.IndexFunc(label, func(r rune) bool { return !isNameChar(r) }); i >= 0 {
			r := []rune(label[i:])[0]
			return fmt.Errorf("host %q contains invalid character %q", host, r)
		}
	}
	return nil
}

// isNameChar reports whether r may appear in a host name label.
func isNameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}
