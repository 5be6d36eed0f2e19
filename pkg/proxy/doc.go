// Package proxy is ambassadord's layer-4 data path. It knows nothing of
// Docker: it listens, accepts, dials a backend and moves bytes.
//
// A [Route] is a listener plus a backend set. The set is replaced whole at any
// moment with [Route.SetBackends] and read exactly once per new connection,
// so a swap never restarts the listener and never touches an established
// connection. An optional [Observer] receives each route's connection
// events for metrics; the package keeps no counters of its own.
//
// A side that ends its connection with a reset has the other side reset
// in turn, and a connection that reaches no backend is reset, never closed
// cleanly: an answer cut short must not look complete (reset.go).
//
// Every connection goes through one lifecycle (conn.go): accepted, dialled,
// established with a backend (conn.established, the one place for a
// per-connection step, whichever path connected it), its bytes moved, and
// reported closed. Two paths move the bytes: the event loops
// (loop_linux.go), or one goroutine per direction (copy.go).
//
// Concurrency contract: a Route's exported methods are safe for concurrent
// use. [Route.Serve] runs the accept loop in the caller's goroutine; every
// accepted connection is dialled by a goroutine that the Route owns, and
// once connected its bytes are moved by the event loops that all routes
// share (one thread per GOMAXPROCS, started with the first connection and
// stopped when the last route that used them closes), or, with an idle
// timeout, by one goroutine per direction. [Route.Shutdown] or
// [Route.Close] ends every connection and waits for them.
//
// A [UDPRoute] is the datagram counterpart of a Route: a flow per client
// address, each with a socket of its own to one backend of the set, owned
// by one event loop per route; see udp.go. TLS is per connection and
// never on the event loops; see tls.go. A route may send the PROXY
// protocol's header to its backends, and read one from trusted clients;
// see proxyproto.go.
//
// # Systems other than Linux
//
// The event loops, and what makes the data path cheap (accept4, splice,
// epoll, eventfd, socket options set once on the listener), are Linux's:
// their files are named _linux.go. Elsewhere the package builds and
// serves every connection by the path Linux takes when the event loops
// cannot start: Go's Accept and dialer, and a buffer copied by one
// goroutine per direction, with half-close, resets passed on, idle
// timeouts and backend waits as on Linux. There is no replay there
// (ReplayBytes has no effect): only an event loop keeps a client's first
// bytes. loop_other.go declares what the Linux files give the rest of the
// package, as it is without them. ambassadord itself runs on Linux; this
// is so that the module builds, and its tests of the goroutine path run,
// on a developer's machine.
package proxy
