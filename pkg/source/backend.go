package source

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
}

// String returns the address, with the short ID when there is one.
func (b Backend) String() string {
	if b.TLS {
		return "tls://" + Backend{Addr: b.Addr, ID: b.ID}.String()
	}
	if b.ID == "" {
		return b.Addr
	}
	id := b.ID
	if len(id) > 12 {
		id = id[:12]
	}
	return b.Addr + " (" + id + ")"
}
