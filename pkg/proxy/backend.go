package proxy

import (
	"slices"
	"sync/atomic"
)

// Backend is one place a route can forward a connection to.
//
// Backends are plain values: a route's backend set is replaced whole, never
// mutated, so a connection that read the set keeps a consistent view.
type Backend struct {
	// Addr is "host:port". The host may be an IP literal or a DNS name; a
	// name is resolved at connect time, so DNS-based backends follow changes.
	Addr string

	// ID identifies what stands behind Addr (for example a container ID).
	// It is carried for logs and metrics; the proxy never interprets it.
	ID string

	// TLS dials the backend with TLS, with the config Route.BackendTLS
	// gives for Addr's host.
	TLS bool

	// ProxyProtocol is the PROXY protocol version (ProxyV1, ProxyV2) the
	// backend expects a header of, ahead of the client's bytes; it wins
	// over the route's (Route.ProxyProtocol). Zero means the route's.
	ProxyProtocol int
}

// String returns the address, with the short ID when there is one.
func (b Backend) String() string {
	s := b.Addr
	if b.TLS {
		s = "tls://" + s
	}
	if b.ID == "" {
		return s
	}
	return s + " (" + shortID(b.ID) + ")"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// backendSet is an immutable list of backends plus the round-robin cursor
// for it. A new set starts its rotation afresh.
type backendSet struct {
	backends []Backend

	// fallback holds backends of earlier sets that this one dropped. A new
	// connection tries them only after every backend in backends refused,
	// and only until one of backends has accepted a connection: a rewire is
	// make-before-break, since a container's start event arrives before its
	// process listens.
	fallback []Backend

	next      atomic.Uint32
	confirmed atomic.Bool // a backend of backends accepted; fallback is done

	// replaced is closed when a newer set takes this one's place, waking
	// connections that wait for a backend.
	replaced chan struct{}

	// probe is shared by the connections waiting for a backend of the
	// set (probe.go).
	probe prober
}

func newBackendSet(backends, fallback []Backend) *backendSet {
	return &backendSet{backends: backends, fallback: fallback, replaced: make(chan struct{})}
}

// order returns the order in which a new connection tries the backends:
// every backend once, starting with the next in the rotation, so that a
// failed connect falls through to the others.
func (s *backendSet) order() []Backend {
	n := len(s.backends)
	switch n {
	case 0:
		return nil
	case 1:
		return s.backends
	}
	start := int((s.next.Add(1) - 1) % uint32(n))
	out := make([]Backend, 0, n)
	out = append(out, s.backends[start:]...)
	return append(out, s.backends[:start]...)
}

// has reports whether b is in the set, as a backend or a fallback. A nil
// set has nothing.
func (s *backendSet) has(b Backend) bool {
	return s != nil && (slices.Contains(s.backends, b) || slices.Contains(s.fallback, b))
}

// fallbackOrder returns the fallback tier, or nil once a backend of the
// set has accepted a connection.
func (s *backendSet) fallbackOrder() []Backend {
	if s.confirmed.Load() {
		return nil
	}
	return s.fallback
}

// without returns the backends of bs that are not in drop.
func without(bs, drop []Backend) []Backend {
	var out []Backend
	for _, b := range bs {
		if !slices.Contains(drop, b) && !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out
}
