// Package daemon is ambassadord's controller: it follows any number of
// sources (source.Source: the Docker watcher today), resolves their merged
// view and the configured route specs into routes (pkg/resolver), and
// serves those routes with the proxy (pkg/proxy), one listener per
// protocol and listen port. It owns the route table, the rewires made by
// hand and their drains, the state file that keeps rewires across
// restarts, and the status document the admin endpoint serves.
//
// A [Daemon] is built from [Options], plain values, not command-line
// strings: the command, tests, the demo and benchmarks construct it
// directly. The admin endpoint (pkg/admin) reaches it through
// [Daemon.Status] and [Daemon.Rewire]; metrics (pkg/metrics) through the
// [Metrics] sink declared here. The package imports no engine's API and no
// source implementation: sources come in through the source.Source
// interface.
//
// Sources are merged: the resolver sees the containers of every source;
// the ambassador's own container (Self) comes from the first local source
// that found it; what any source reports Gone is forgotten at once, before
// anything else, so that no new connection reaches an address its engine
// may already have handed to another container; and a source that stops
// takes its containers with it. See sources.go.
//
// Active health checks (Options.Checks, the ambassador.check label) run
// in a health.Monitor the daemon owns: after every resolution it is told
// the checked backends, and a checked backend reaches the proxy's set
// only while it is up; a change of a backend's state reaches the run
// loop on a channel, and the last resolution is applied again. See
// health.go.
//
// Engines are local or remote (Options.Engines). A remote engine that
// becomes unreachable keeps its containers as candidates for
// Options.EngineGrace, since they may still serve; then they leave the
// merged view (new connections go elsewhere, established ones are left
// alone) until the engine answers again, a resync rather than a restart.
// A local engine's last snapshot is served however long it is down: one
// that restarts with live-restore leaves its containers serving, while a
// remote one that does not answer is a lost host or a partition. See
// grace.go.
//
// Readiness waits for every engine's first sync, except that a remote
// engine that has failed its first attempt no longer holds it back: a lost
// host must not keep the ambassador of this one unready. Its status entry
// says it never synced. Until every engine has settled so, a route without
// a backend that does not listen yet waits rather than listens.
//
// Concurrency contract: [Daemon.Run] owns one goroutine, the run loop,
// which holds all the controller's state (snapshots, routes, overrides)
// without locks; it starts and waits for one goroutine per source running
// its Run, one per source forwarding its updates to the loop, one accept
// loop per listening route, and the timers of drains. The engines' grace
// is one timer the run loop owns and selects on. [Daemon.Status] and
// [Daemon.Rewire] are safe to call from any goroutine: the loop publishes
// an immutable status document through an atomic pointer, and a rewire is
// a request the loop answers. Run returns once every goroutine it started
// has ended.
package daemon
