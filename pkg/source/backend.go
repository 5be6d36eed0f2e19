package source

import "strconv"

// Backend is one place a route forwards new connections to, as the
// resolver chose it: Addr is "host:port" (an IP literal, or a host name
// resolved at connect time), and ID what stands behind it, such as a
// container's full ID, so that a backend stays pinned to its container
// even when the engine gives the address to another; empty for a static
// backend. The proxy has a type of its own with the same fields, since it
// knows nothing of sources; the controller converts at its edge.
type Backend struct {
	Addr string
	ID   string
	// TLS dials the backend with TLS: its route says tls://, or the
	// container is labelled ambassador.tls=true.
	TLS bool
	// ProxyProtocol is the PROXY protocol version (1 or 2) whose header
	// the backend expects ahead of the client's bytes: the container is
	// labelled ambassador.proxy-protocol=v1 or v2. Zero means the
	// route's setting (--send-proxy).
	ProxyProtocol int
	// Weight is the backend's share of new connections relative to its
	// route's other backends (the ambassador.weight label), 1..100; zero
	// means 1.
	Weight int
	// Check is the active health check the backend asks for (the
	// ambassador.check label): none when its Kind is "", none even where
	// the route has one when it is CheckOff. The controller runs it and
	// keeps the backend out of the proxy's set until it passes; the
	// proxy never sees it.
	Check Check
}

// String returns the address, with the short ID when there is one.
func (b Backend) String() string {
	if b.TLS {
		return "tls://" + Backend{Addr: b.Addr, ID: b.ID, Weight: b.Weight}.String()
	}
	s := b.Addr
	if b.ID != "" {
		id := b.ID
		if len(id) > 12 {
			id = id[:12]
		}
		s += " (" + id + ")"
	}
	if b.Weight > 1 {
		s += " weight " + strconv.Itoa(b.Weight)
	}
	return s
}
