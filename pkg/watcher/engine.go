package watcher

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

// LocalName is the name of the engine the ambassador runs on, the one
// --docker and --docker-host give: no engine given by [ParseEngine] may
// take it.
const LocalName = "local"

// maxNameLen bounds an engine's name: it is a label of metrics and a word
// of logs.
const maxNameLen = 32

// EngineSpec is one engine to follow besides the local one, as
// --engine NAME=URL[,tls=DIR][,address=IP][,insecure] gives it (and
// AMBASSADORD_ENGINES, the same separated by ';'). [ParseEngine] returns
// only valid specs; [EngineSpec.Validate] checks the TLS directory, which
// takes I/O. A Watcher follows one through its Spec field.
type EngineSpec struct {
	// Name tells the engine apart: Update.Source, source.Container.Engine,
	// routes (ENGINE/NAME), logs and metrics. Lower-case letters, digits,
	// '_' and '-', starting with a letter or a digit, at most 32
	// characters, and not LocalName.
	Name string

	// URL is the engine's address: unix:///PATH, or tcp://HOST:PORT with
	// HOST an IP literal (IPv6 in brackets) or a DNS name.
	URL string

	// TLSDir is the directory that holds ca.pem (the CA that signed the
	// engine's certificate), cert.pem and key.pem (the client's
	// certificate and its unencrypted key), as DOCKER_CERT_PATH does; ""
	// for none. Only a tcp:// engine takes one. The engine's certificate is
	// always verified against ca.pem alone.
	TLSDir string

	// Address is the IP literal given by address=: where the engine's
	// host is reached, as its containers publish their ports there. ""
	// when none was given: HostAddress then falls back to the URL's host.
	Address string

	// Insecure is the explicit opt-in to a tcp:// engine without TLS: its
	// API, which controls every container of its host, then travels in
	// clear text to whoever answers. The caller should log a warning.
	Insecure bool
}

// HostAddress returns where the engine's host is reached, for the ports its
// containers publish: Address, else the host of a tcp:// URL (an IP or a
// DNS name, without brackets), else "" (a unix:// engine without address=).
func (s EngineSpec) HostAddress() string {
	if s.Address != "" {
		return s.Address
	}
	if hostport, ok := strings.CutPrefix(s.URL, "tcp://"); ok {
		if host, _, err := net.SplitHostPort(hostport); err == nil {
			return host
		}
	}
	return ""
}

// String returns the spec in the syntax ParseEngine reads, which gives the
// same spec back.
func (s EngineSpec) String() string {
	var b strings.Builder
	b.WriteString(s.Name)
	b.WriteByte('=')
	b.WriteString(s.URL)
	if s.TLSDir != "" {
		b.WriteString(",tls=")
		b.WriteString(s.TLSDir)
	}
	if s.Address != "" {
		b.WriteString(",address=")
		b.WriteString(s.Address)
	}
	if s.Insecure {
		b.WriteString(",insecure")
	}
	return b.String()
}

// The fixes the parser's errors give more than once.
const (
	engineSyntax = "want NAME=URL[,tls=DIR][,address=IP][,insecure]"
	urlSyntax    = "want unix:///PATH or tcp://HOST:PORT"
	sshFix       = "ssh:// is not supported: Docker's ssh connection helper runs the ssh client, and `docker system dial-stdio` " +
		"on the engine's host, and the ambassadord image (FROM scratch) has no ssh client: " +
		"use tcp://HOST:2376 with tls=DIR (dockerd --tlsverify), or forward the engine's socket over ssh " +
		"(ssh -nNT -L /run/NAME.sock:/var/run/docker.sock USER@HOST) and give unix:///run/NAME.sock"
	plainFix = "tcp:// without tls= sends the engine's API, which controls every container of its host, in clear text " +
		"and to whoever answers: add tls=DIR (a directory with ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH), " +
		"or add insecure to accept that on a network you trust"
)

// ParseEngine parses one engine: NAME=URL[,tls=DIR][,address=IP][,insecure].
// Surrounding whitespace is ignored. It checks the syntax only: the TLS
// directory is read by [EngineSpec.Validate]. Errors name the item, what is
// wrong and how to fix it.
func ParseEngine(s string) (EngineSpec, error) {
	spec, err := parseEngine(strings.TrimSpace(s))
	if err != nil {
		return EngineSpec{}, fmt.Errorf("engine %q: %w", strings.TrimSpace(s), err)
	}
	return spec, nil
}

// ParseEngines parses a list of engines separated by ';', as
// AMBASSADORD_ENGINES holds it; empty items are ignored. Two engines with
// one name are refused. Every bad item is reported, in one joined error.
func ParseEngines(list string) ([]EngineSpec, error) {
	var specs []EngineSpec
	var errs []error
	for item := range strings.SplitSeq(list, ";") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		spec, err := ParseEngine(item)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		specs = append(specs, spec)
	}
	errs = append(errs, UniqueNames(specs))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return specs, nil
}

// UniqueNames returns an error for every name two specs share, naming both,
// or nil: for engines gathered from several places (repeated --engine
// flags, AMBASSADORD_ENGINES).
func UniqueNames(specs []EngineSpec) error {
	var errs []error
	first := make(map[string]int, len(specs))
	for i, s := range specs {
		j, dup := first[s.Name]
		if !dup {
			first[s.Name] = i
			continue
		}
		errs = append(errs, fmt.Errorf("engine %q is given twice, %q and %q: give each engine a name of its own",
			s.Name, specs[j].String(), s.String()))
	}
	return errors.Join(errs...)
}

func parseEngine(s string) (EngineSpec, error) {
	if s == "" {
		return EngineSpec{}, errors.New("empty: " + engineSyntax)
	}
	if i := strings.IndexFunc(s, badChar); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return EngineSpec{}, fmt.Errorf("%q at byte %d: whitespace, control and non-ASCII characters, and ';', have no place in an engine", r, i)
	}
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return EngineSpec{}, errors.New("missing '=' after the name: " + engineSyntax)
	}
	if err := checkName(name); err != nil {
		return EngineSpec{}, err
	}
	parts := strings.Split(rest, ",")
	spec := EngineSpec{Name: name, URL: parts[0]}
	if err := checkURL(spec.URL); err != nil {
		return EngineSpec{}, err
	}
	seen := make(map[string]bool)
	for _, opt := range parts[1:] {
		key, value, hasValue := strings.Cut(opt, "=")
		if seen[key] {
			return EngineSpec{}, fmt.Errorf("option %s is given twice", optionName(key))
		}
		seen[key] = true
		switch key {
		case "tls":
			if value == "" {
				return EngineSpec{}, errors.New("tls= needs a directory: tls=DIR, with ca.pem, cert.pem and key.pem in it")
			}
			spec.TLSDir = value
		case "address":
			addr, err := parseAddress(value)
			if err != nil {
				return EngineSpec{}, fmt.Errorf("address=%s: %w", value, err)
			}
			spec.Address = addr
		case "insecure":
			if hasValue {
				return EngineSpec{}, fmt.Errorf("insecure takes no value: write insecure, not insecure=%s", value)
			}
			spec.Insecure = true
		case "":
			return EngineSpec{}, errors.New("empty option (two commas, or one at the end): " + engineSyntax)
		default:
			return EngineSpec{}, fmt.Errorf("unknown option %q: want tls=DIR, address=IP or insecure", key)
		}
	}
	return spec, checkSecurity(spec)
}

// optionName returns an option as it is written.
func optionName(key string) string {
	if key == "insecure" {
		return key
	}
	return key + "="
}

// checkSecurity checks the options against the URL's scheme.
func checkSecurity(spec EngineSpec) error {
	tcp := strings.HasPrefix(spec.URL, "tcp://")
	switch {
	case !tcp && spec.TLSDir != "":
		return errors.New("tls= applies to tcp:// engines only: a unix:// socket is guarded by its file's permissions; drop tls=")
	case !tcp && spec.Insecure:
		return errors.New("insecure applies to tcp:// engines only: a unix:// socket never leaves the host; drop insecure")
	case spec.TLSDir != "" && spec.Insecure:
		return errors.New("tls= and insecure exclude each other: with tls= the engine is always verified; drop insecure")
	case tcp && spec.TLSDir == "" && !spec.Insecure:
		return errors.New(plainFix)
	}
	return nil
}

// badChar reports the characters no engine spec holds: they would not
// survive a list (';'), a log line or a shell.
func badChar(r rune) bool {
	return r <= ' ' || r >= 0x7f || r == ';'
}

// checkName accepts an engine's name. The rules are pkg/resolver's
// CheckEngineName, which reads a route's ENGINE/NAME: the watcher imports
// nothing of the resolver.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty engine name: " + engineSyntax)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("engine name %q is %d characters long, more than %d", name, len(name), maxNameLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || i > 0 && (r == '_' || r == '-')
		if !ok {
			return fmt.Errorf("engine name %q has %q at byte %d: want lower-case letters, digits, '_' and '-', starting with a letter or a digit", name, r, i)
		}
	}
	if name == LocalName {
		return fmt.Errorf("engine name %q is the engine the ambassador runs on (--docker-host gives its address): choose another name", name)
	}
	return nil
}

// checkURL accepts unix:///PATH and tcp://HOST:PORT.
func checkURL(u string) error {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return fmt.Errorf("URL %q has no scheme: %s", u, urlSyntax)
	}
	switch scheme {
	case "unix":
		return checkSocketPath(rest)
	case "tcp":
		return checkHostPort(rest)
	case "ssh":
		return errors.New(sshFix)
	case "http", "https":
		return fmt.Errorf("URL %q: write tcp:// for an engine on TCP, and tls=DIR for TLS: %s", u, urlSyntax)
	default:
		return fmt.Errorf("URL %q: unsupported scheme %q: %s", u, scheme, urlSyntax)
	}
}

// maxSocketPath is the longest path a unix socket address holds (108 bytes
// on Linux, 104 on the BSDs), as the Docker client checks it.
var maxSocketPath = len(syscall.RawSockaddrUnix{}.Path)

func checkSocketPath(path string) error {
	switch {
	case path == "":
		return errors.New("unix:// needs the socket's path: unix:///var/run/docker.sock")
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("unix://%s: the socket's path must be absolute: unix:///%s", path, path)
	case len(path) > maxSocketPath:
		return fmt.Errorf("unix://%s: the socket's path is %d bytes long, more than a socket address holds (%d)", path, len(path), maxSocketPath)
	}
	return nil
}

func checkHostPort(hostport string) error {
	if i := strings.IndexAny(hostport, "/?#@"); i >= 0 {
		return fmt.Errorf("tcp://%s: %q: a tcp:// URL is only HOST:PORT, with no user, path or query", hostport, hostport[i:i+1])
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		if !strings.Contains(strings.TrimPrefix(hostport, "["), ":") || strings.HasSuffix(hostport, "]") {
			return fmt.Errorf("tcp://%s: missing port: tcp://%s:2376 (Docker's port for TLS)", hostport, hostport)
		}
		return fmt.Errorf("tcp://%s: want HOST:PORT, an IPv6 address in brackets: tcp://[::1]:2376", hostport)
	}
	if err := checkPort(port); err != nil {
		return fmt.Errorf("tcp://%s: port %q: %w", hostport, port, err)
	}
	if strings.HasPrefix(hostport, "[") {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("tcp://%s: %q in brackets is not an IPv6 address (without a zone)", hostport, host)
		}
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" || a.Is6() {
			return fmt.Errorf("tcp://%s: put an IPv6 address in brackets, without a zone: tcp://[::1]:2376", hostport)
		}
		return nil
	}
	if !isHostName(host) {
		return fmt.Errorf("tcp://%s: %q is neither an IP address nor a host name", hostport, host)
	}
	return nil
}

// checkPort accepts a decimal port 1..65535, without leading zeros.
func checkPort(s string) error {
	n, err := strconv.Atoi(s)
	switch {
	case s == "":
		return errors.New("empty")
	case err != nil || s[0] == '+' || s[0] == '-':
		return errors.New("not a decimal number")
	case s[0] == '0':
		return errors.New("leading zero")
	case n < 1 || n > 65535:
		return errors.New("out of range 1..65535")
	}
	return nil
}

// isHostName reports whether s is a DNS host name: dot-separated labels of
// letters, digits and '-', neither starting nor ending with '-', at most 63
// bytes each and 253 in all, the last one not all digits (which resolvers
// may read as an IPv4 address, such as 127.1).
func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.ContainsFunc(last, func(r rune) bool { return r < '0' || r > '9' })
}

// parseAddress accepts address=IP: an IP literal other than an unspecified
// one, without a zone, returned in its canonical form.
func parseAddress(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty: want the IP address of the engine's host, where its containers publish their ports")
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return "", errors.New("not an IP address: want the IP address of the engine's host, where its containers publish their ports (a name goes in the URL)")
	case a.Zone() != "":
		return "", errors.New("an address with a zone cannot be reached from another host: drop the zone")
	case a.IsUnspecified():
		return "", errors.New("an unspecified address is no host's: give the address the engine's host is reached at")
	}
	return a.String(), nil
}
