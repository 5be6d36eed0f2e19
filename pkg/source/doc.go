// Package source holds the plain values every layer of ambassadord shares,
// and the interface a source of them implements.
//
// A Source follows one container engine (the Docker watcher, pkg/watcher,
// is one; a second engine or a Swarm cluster would be siblings) and
// publishes Updates: Snapshots of its containers, tagged with the source's
// name, with what disappeared since (Gone) and its connection state. The
// controller merges the sources' updates, the resolver turns them into
// routes whose Backends the proxy serves.
//
// The package imports nothing of the module and nothing of any engine's
// API: each source converts its engine's types to these at its edge. Every
// value here is immutable once published: a source builds new ones for
// every change, so they cross goroutines and packages without locks.
package source
