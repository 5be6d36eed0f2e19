package resolver

import (
	"errors"
	"fmt"
	"strings"
)

// ParseClassicEnv reads the variables that Docker's legacy links inject
// (--link redis:redis) from an environment in os.Environ form ("K=V") and
// returns one spec per TCP port, sorted by Listen, reproducing the classic
// socat ambassador image: for every <ALIAS>_PORT_<P>_TCP=tcp://HOST:PORT it
// listens on P and forwards to HOST:PORT.
//
// Only names of exactly that shape are considered; REDIS_PORT,
// REDIS_PORT_6379_TCP_ADDR and the like are ignored, as are entries without
// "=". A P that is not a port, or a value that is not exactly
// tcp://HOST:PORT, is an error naming the variable; all such errors are
// reported together. <ALIAS>_PORT_<P>_UDP variables are skipped with a
// warning, since UDP is not forwarded yet. Variables forwarded from a linked
// container's own environment (<ALIAS>_ENV_..., where <ALIAS>_NAME is set)
// are skipped with a warning and never cause an error, however malformed, so
// a linked container cannot open listeners in the ambassador. Two variables
// with the same P are an error.
//
// Each spec has exactly one backend, Source `env <NAME>`, Alias <ALIAS> and
// no Target: Resolve makes the linked container the target when the
// ambassador has a link of that alias, and otherwise keeps the spec static,
// as for a remote host given with -e. Warnings are returned in the order of
// environ, even when err is not nil.
func ParseClassicEnv(environ []string) (specs []Spec, warnings []string, err error) {
	names := make(map[string]bool, len(environ))
	for _, kv := range environ {
		if name, _, ok := strings.Cut(kv, "="); ok && name != "" {
			names[name] = true
		}
	}
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok {
			continue // not "K=V"; os.Environ can return these on odd systems
		}
		alias, port, proto, ok := classicName(name)
		if !ok {
			continue
		}
		// Checked before anything else: a forwarded variable is the linked
		// container's business, so it must neither listen nor fail startup.
		if via, ok := linkForwarded(name, names); ok {
			warnings = append(warnings, fmt.Sprintf("env %s: ignored: forwarded from the environment of the container linked as %s (%s_NAME is set)", name, via, via))
			continue
		}
		listen, err := parsePort(port)
		if err != nil {
			errs = append(errs, fmt.Errorf("env %s: port %q in name: %w", name, port, err))
			continue
		}
		parse, protocol := parseClassicValue, TCP
		if proto == "UDP" {
			parse, protocol = parseClassicUDP, UDP
		}
		e, err := parse(value)
		if err != nil {
			errs = append(errs, fmt.Errorf("env %s=%q: %w", name, value, err))
			continue
		}
		specs = append(specs, Spec{Protocol: protocol, Listen: listen, Backends: []Endpoint{e}, Source: "env " + name, Alias: alias})
	}
	if len(errs) > 0 {
		return nil, warnings, errors.Join(errs...)
	}
	specs, err = Merge(specs)
	if err != nil {
		return nil, warnings, err
	}
	return specs, warnings, nil
}

// classicName reports whether name has the shape <ALIAS>_PORT_<P>_TCP or
// <ALIAS>_PORT_<P>_UDP with ALIAS and P non-empty, and returns ALIAS, P (not
// yet validated) and the protocol. When the alias itself contains "_PORT_",
// the last occurrence separates alias and port.
func classicName(name string) (alias, port, proto string, ok bool) {
	base, ok := strings.CutSuffix(name, "_TCP")
	proto = "TCP"
	if !ok {
		base, ok = strings.CutSuffix(name, "_UDP")
		proto = "UDP"
	}
	if !ok {
		return "", "", "", false
	}
	i := strings.LastIndex(base, "_PORT_")
	if i <= 0 {
		return "", "", "", false // no "_PORT_", or an empty alias
	}
	port = base[i+len("_PORT_"):]
	if port == "" {
		return "", "", "", false
	}
	return base[:i], port, proto, true
}

// linkForwarded reports whether the variable name was forwarded from a
// linked container's environment, and the alias it came through.
//
// Why: Docker copies every variable of a linked container's own environment
// into ours as <ALIAS>_ENV_<NAME>. A container we link to, which may be
// untrusted, that sets X_PORT_1_TCP=tcp://evil:1 thus makes us see
// REDIS_ENV_X_PORT_1_TCP=tcp://evil:1, a name of the classic shape with
// alias REDIS_ENV_X. Honouring it would let the linked container open
// listeners in the ambassador and point them anywhere. Docker also always
// sets <ALIAS>_NAME for a link, so a name that has "_ENV_" at index i, where
// name[:i]+"_NAME" is in the environment, is treated as forwarded. Every
// occurrence of "_ENV_" is tried because an alias may itself contain
// "_ENV_". A user's own alias containing "_ENV_" without a matching _NAME
// variable is honoured. Any mistake errs on the safe side: an extra _NAME
// variable can only make us skip more, never listen more.
func linkForwarded(name string, names map[string]bool) (alias string, ok bool) {
	for i := 0; ; {
		j := strings.Index(name[i:], "_ENV_")
		if j < 0 {
			return "", false
		}
		i += j
		if i > 0 && names[name[:i]+"_NAME"] {
			return name[:i], true
		}
		i++ // look for the next occurrence, which may overlap ("_ENV_ENV_")
	}
}

// parseClassicValue parses the value of a classic link variable, which must
// be exactly tcp://HOST:PORT, or tls://HOST:PORT, ambassadord's extension
// for a backend dialled with TLS (Docker never sets it).
func parseClassicValue(v string) (Endpoint, error) {
	rest, ok := strings.CutPrefix(v, "tcp://")
	tls := false
	if !ok {
		rest, tls = strings.CutPrefix(v, tlsScheme)
		if !tls {
			return Endpoint{}, errors.New("scheme must be tcp:// (or tls://, to dial the backend with TLS)")
		}
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		return Endpoint{}, fmt.Errorf("unexpected %q after HOST:PORT", rest[i:])
	}
	e, err := parseEndpoint(rest, 0)
	e.TLS = tls
	return e, err
}

// parseClassicUDP parses the value of a classic _UDP link variable, which
// must be exactly udp://HOST:PORT.
func parseClassicUDP(v string) (Endpoint, error) {
	rest, ok := strings.CutPrefix(v, "udp://")
	if !ok {
		return Endpoint{}, errors.New("scheme must be udp://")
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		return Endpoint{}, fmt.Errorf("unexpected %q after HOST:PORT", rest[i:])
	}
	return parseEndpoint(rest, 0)
}
