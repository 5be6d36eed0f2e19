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
	// Weight is the backend's share of new connections relative to the
	// others of its set, 1..MaxWeight: a backend of weight 3 takes three
	// connections for one of weight 1, with either Balance. Zero means 1;
	// larger values count as MaxWeight.
	Weight int
}

// MaxWeight is the largest Backend.Weight: it bounds the round-robin
// schedule of a set (the sum of its weights) and the products least
// connections compares.
const MaxWeight = 100

// weight returns b's weight, 1..MaxWeight.
func (b Backend) weight() int {
	return min(max(b.Weight, 1), MaxWeight)
}

// key identifies b for the counts that outlive a set (active connections,
// ejections): its address and what stands behind it, whatever its weight.
func (b Backend) key() backendKey { return backendKey{addr: b.Addr, id: b.ID} }

// backendKey is a backend's address and ID.
type backendKey struct{ addr, id string }

// Balance is how a route picks the backend of a new connection.
type Balance int32

const (
	// RoundRobin takes the backends in turn, each as many times in a
	// round as its weight, interleaved (smooth weighted round-robin).
	RoundRobin Balance = iota
	// LeastConn takes the backend with the fewest active connections for
	// its weight (active/weight); ties go round-robin. Long-lived
	// connections do not pile up on one backend as they can with
	// RoundRobin.
	LeastConn
)

// String returns the name of the balance, as flags and labels spell it.
func (b Balance) String() string {
	if b == LeastConn {
		return "least-conn"
	}
	return "round-robin"
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

	next atomic.Uint32
	// schedule is the rotation as indexes into backends, each as many
	// times as its weight, interleaved; nil when every weight is 1, and
	// the rotation is backends itself.
	schedule  []int
	confirmed atomic.Bool // a backend of backends accepted; fallback is done

	// replaced is closed when a newer set takes this one's place, waking
	// connections that wait for a backend.
	replaced chan struct{}

	// probe is shared by the connections waiting for a backend of the
	// set (probe.go).
	probe prober
}

func newBackendSet(backends, fallback []Backend) *backendSet {
	return &backendSet{backends: backends, fallback: fallback, replaced: make(chan struct{}), schedule: schedule(backends)}
}

// schedule returns the smooth weighted round-robin rotation of bs (as
// nginx builds it): each backend appears as many times as its weight,
// spread out rather than in runs, so that weights 5 and 1 give
// a a a b a a, not a a a a a b. Nil when every weight is 1.
func schedule(bs []Backend) []int {
	total := 0
	for _, b := range bs {
		total += b.weight()
	}
	if total == len(bs) || len(bs) < 2 {
		return nil
	}
	out := make([]int, 0, total)
	current := make([]int, len(bs))
	for range total {
		best := 0
		for i, b := range bs {
			current[i] += b.weight()
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		out = append(out, best)
	}
	return out
}

// order returns the order in which a new connection tries the backends:
// every backend once, starting with the next in the rotation, so that a
// failed connect falls through to the others. The rest follow in the
// set's order from the first.
func (s *backendSet) order() []Backend {
	n := len(s.backends)
	switch n {
	case 0:
		return nil
	case 1:
		return s.backends
	}
	return s.orderFrom(s.nextInRotation())
}

// nextInRotation advances the rotation and returns the index of the
// backend it comes to.
func (s *backendSet) nextInRotation() int {
	turn := s.next.Add(1) - 1
	if s.schedule != nil {
		return s.schedule[turn%uint32(len(s.schedule))]
	}
	return int(turn % uint32(len(s.backends)))
}

// orderFrom returns every backend once, starting with backends[start].
func (s *backendSet) orderFrom(start int) []Backend {
	out := make([]Backend, 0, len(s.backends))
	out = append(out, s.backends[start:]...)
	return append(out, s.backends[:start]...)
}

// leastConn returns the order of a new connection under LeastConn: first
// the backend with the fewest active connections for its weight (the
// lowest active/weight, compared as active×w' < active'×w), ties going to
// the next in the rotation; then the others as order gives them. active
// returns a backend's count.
func (s *backendSet) leastConn(active func(Backend) int64) []Backend {
	n := len(s.backends)
	if n < 2 {
		return s.backends
	}
	start := s.nextInRotation()
	best, bestActive := start, active(s.backends[start])
	for k := 1; k < n; k++ {
		i := (start + k) % n
		a := active(s.backends[i])
		if a*int64(s.backends[best].weight()) < bestActive*int64(s.backends[i].weight()) {
			best, bestActive = i, a
		}
	}
	return s.orderFrom(best)
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
