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
// Concurrency contract: a Route's exported methods are safe for concurrent
// use. [Route.Serve] runs the accept loop in the caller's goroutine; every
// accepted connection is dialled by a goroutine that the Route owns, and
// once connected its bytes are moved by the event loops that all routes
// share (one thread per GOMAXPROCS, started with the first connection and
// stopped when the last route that used them closes), or, with an idle
// timeout, by one goroutine per direction. [Route.Shutdown] or
// [Route.Close] ends every connection and waits for them.
package proxy
