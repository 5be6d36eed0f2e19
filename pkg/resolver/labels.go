package resolver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// portPair is one entry of the ambassador.ports label: listen on Listen,
// forward to the target's Backend port, with Proto (TCP or UDP).
type portPair struct {
	Proto           string
	Listen, Backend int
}

// parsePortsLabel parses the value of the ambassador.ports label on the
// ambassador: entries LISTEN or LISTEN:BACKEND, each with /udp at its end
// for UDP (/tcp, the default, may be written), separated by commas, e.g.
// "6379", "6379,8080:80" or "53/udp,53". Spaces around entries are ignored, as are empty
// entries ("6379," is "6379"), because labels are typed by hand in compose
// files. Ports are those of parsePort.
//
// A bad entry, or a second entry for a listen port, is skipped with a
// warning naming it; the other entries still count, so one typo does not
// take every listener down. Pairs are returned in the order given.
func parsePortsLabel(s string) (pairs []portPair, warnings []string) {
	seen := make(map[portKey]string)
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		p, err := parsePortPair(entry)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("label %s: entry %s skipped: %v", LabelPorts, quote(entry), err))
			continue
		}
		if first, ok := seen[portKey{p.Proto, p.Listen}]; ok {
			warnings = append(warnings, fmt.Sprintf("label %s: entry %s skipped: listen port %d/%s already given by %s", LabelPorts, quote(entry), p.Listen, p.Proto, quote(first)))
			continue
		}
		seen[portKey{p.Proto, p.Listen}] = entry
		pairs = append(pairs, p)
	}
	return pairs, warnings
}

// portKey is a listen port of a protocol.
type portKey struct {
	proto string
	port  int
}

// parsePortPair parses LISTEN or LISTEN:BACKEND, with an optional /udp or
// /tcp at the end; LISTEN alone means the same port on both sides.
func parsePortPair(entry string) (portPair, error) {
	entry, proto, err := cutProto(entry)
	if err != nil {
		return portPair{}, err
	}
	l, b, hasBackend := strings.Cut(entry, ":")
	listen, err := parsePort(l)
	if err != nil {
		return portPair{}, fmt.Errorf("listen port %s: %w (want LISTEN or LISTEN:BACKEND)", quote(l), err)
	}
	if !hasBackend {
		return portPair{Proto: proto, Listen: listen, Backend: listen}, nil
	}
	backend, err := parsePort(b)
	if err != nil {
		return portPair{}, fmt.Errorf("backend port %s: %w (want LISTEN or LISTEN:BACKEND)", quote(b), err)
	}
	return portPair{Proto: proto, Listen: listen, Backend: backend}, nil
}

// cutProto cuts a /udp or /tcp from the end of s, and returns the
// protocol, TCP without either.
func cutProto(s string) (string, string, error) {
	rest, proto, ok := strings.Cut(s, "/")
	switch {
	case !ok:
		return s, TCP, nil
	case proto == TCP || proto == UDP:
		return rest, proto, nil
	}
	return "", "", fmt.Errorf("protocol %s: want tcp or udp", quote(proto))
}

// maxPriority bounds ambassador.priority so that priorities compare and
// print without surprises on every platform; no one needs more.
const maxPriority = 1<<31 - 1

// parsePriority parses the value of the ambassador.priority label: a decimal
// integer with an optional sign, within ±maxPriority, spaces around it
// ignored. Negative priorities are allowed, to mark a standby below the
// default 0. The caller treats an error as priority 0.
func parsePriority(s string) (int, error) {
	t := strings.TrimSpace(s)
	digits := strings.TrimLeft(t, "+-")
	switch {
	case t == "":
		return 0, errors.New("empty")
	case len(t)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "":
		return 0, errors.New("not an integer")
	}
	p, err := strconv.ParseInt(t, 10, 64)
	if err != nil || p > maxPriority || p < -maxPriority {
		return 0, fmt.Errorf("out of range ±%d", maxPriority)
	}
	return int(p), nil
}

// Labels that drive resolution. They are set on backend containers, except
// LabelRole, which the ambassadord image carries, and LabelTarget and
// LabelPorts, which are also read from the ambassador's own container.
const (
	// LabelTarget on a backend claims a target name; on the ambassador it
	// names the target to serve.
	LabelTarget = "ambassador.target"
	// LabelPriority is a claimer's integer priority; the highest wins.
	// Default 0.
	LabelPriority = "ambassador.priority"
	// LabelNetwork on a backend names the network to reach it on.
	LabelNetwork = "ambassador.network"
	// LabelPort on a claimer overrides the route's backend port.
	LabelPort = "ambassador.port"
	// LabelPorts on the ambassador lists the ports to serve for its
	// target: "6379" or "6379,8080:80" (LISTEN:BACKEND).
	LabelPorts = "ambassador.ports"
	// LabelRole=ambassador marks an ambassador; ambassadors never count as
	// claimers.
	LabelRole = "ambassador.role"
	// LabelTLS=true on a backend has it dialled with TLS (its port speaks
	// TLS: a server-side ambassador's); on the ambassador it makes every
	// route listen with TLS (Options.ListenTLS). A label never turns TLS
	// off where a route asks for it.
	LabelTLS = "ambassador.tls"
	// LabelProxyProtocol=v1|v2 on a backend has every TCP connection to it
	// start with a PROXY protocol header of that version, carrying the
	// client's address: only the backend knows whether it expects one. A
	// container with another value is not a backend (a header it does not
	// expect, or none where it expects one, would break every connection).
	LabelProxyProtocol = "ambassador.proxy-protocol"
	// LabelWeight on a backend is its share of new connections relative
	// to the route's other backends: an integer from 1 (the default) to
	// 100, larger values clipped.
	LabelWeight = "ambassador.weight"
	// LabelBalance on a backend says how its route picks the backend of
	// a new connection: round-robin or least-conn. Any chosen backend
	// labelled least-conn makes the route least-conn.
	LabelBalance = "ambassador.balance"
	// LabelCheck on a backend asks for an active health check of it, in
	// the syntax of source.ParseCheck ("tcp", `send=PING\r\n,expect=+PONG`), or
	// "off" for none where --check gives its route one.
	LabelCheck = "ambassador.check"
)

// parseProxyProtocol parses the value of the ambassador.proxy-protocol
// label: v1 or v2, spaces around it and case ignored.
func parseProxyProtocol(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "v1":
		return 1, nil
	case "v2":
		return 2, nil
	}
	return 0, errors.New("want v1 or v2")
}

// tlsLabel reports whether c is labelled ambassador.tls=true.
func tlsLabel(c *source.Container) bool {
	return c != nil && c.Labels[LabelTLS] == "true"
}
