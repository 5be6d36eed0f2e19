// Package proxy is ambassadord's layer-4 data path. It knows nothing of
// Docker: it listens, accepts, dials a backend and moves bytes.
//
// A [Route] is a listener plus a backend set. The set is replaced whole at any
// moment with [Route.SetBackends] and read exactly once per new connection,
// so a swap never restarts the listener and never touches an established
// connection. An optional [Observer] receives each route's connection
// events for metrics; the package keeps no counters of its own.
//
// Concurrency contract: a Route's exported methods are safe for concurrent
// use. [Route.Serve] runs the accept loop in the caller's goroutine; every
// accepted connection is served by one goroutine that the Route owns, plus a
// second one for the client-to-backend direction, and [Route.Shutdown] or
// [Route.Close] stops them all and waits for them.
package proxy
