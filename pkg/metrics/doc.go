// Package metrics holds ambassadord's Prometheus metrics: one
// [proxy.Observer] per route for the connection series, the per-route and
// per-backend series the controller reports as it applies routes
// (backends, rewires, overrides), the engine gauges it reports from the
// sources' updates (reachable, events followed, containers dropped after
// the engine grace), and the engine counters, read from the sources'
// Stats at every scrape; each engine's series carry its source's name as
// the engine label. [Reference] renders the same definitions as the
// documentation's table, so the help a scrape shows and the reference are
// the same words.
//
// The package knows nothing of the controller: [Metrics] has the methods
// the controller's metrics sink interface asks for (pkg/daemon declares
// it), and imports only pkg/proxy (the Observer) and pkg/source (Stats).
//
// Concurrency contract: every method of a Metrics is safe for concurrent
// use. The controller's goroutine reports routes and engine state, the
// proxy's connection goroutines and event loops call the observers, and
// scrapes run on the admin endpoint's goroutines. One mutex guards the
// route and source maps, one per route its backends; neither is held
// across anything that blocks.
package metrics
