// Package watcher follows the Docker engine and publishes snapshots of the
// containers the resolver needs: a Watcher is a [source.Source]. It is the
// only package that imports the Docker client; Docker API types never leave
// it: they are converted to [source.Snapshot] at the edge.
//
// The listing is the truth and events are hints. The watcher subscribes to
// container and network events with a since= time taken before it lists, so
// nothing that happens between the listing and the subscription is missed;
// every relevant event then triggers a debounced full re-list, and a snapshot
// is published only when it differs from the previous one. Duplicated and
// replayed events are therefore harmless. Only an event's type, action and
// actor ID are trusted: a container's labels are copied into the event's
// attributes and can overwrite any of them. The one attribute read, a kill
// event's signal, can only mislead about that container's own traffic. A
// label can hold megabytes: what the watcher logs of values a container's
// creator sets (attributes, names) is clipped to 64 bytes, with the length
// of the whole.
//
// A Watcher follows the local engine (DOCKER_HOST and the rest of Docker's
// environment, or the default socket), or an engine given by --engine: an
// [EngineSpec], parsed by [ParseEngine] and [ParseEngines], reached on a unix
// socket or over TCP, with mutual TLS from a directory laid out as
// DOCKER_CERT_PATH is, and nothing of the environment. [Check] tells at
// start a configuration that cannot work (a TLS mistake, a plain engine
// given TLS or the other way) from an engine that is merely unreachable
// ([ErrUnreachable]), which the Watcher follows once it answers. Every
// container a Watcher lists carries its name (source.Container.Engine),
// with the host ports it publishes.
//
// Podman's API service (podman system service) answers the same API with
// gaps; the watcher asks the engine's /version at the start of every
// session which one it follows, says so in [source.Update].Engine, and on
// Podman lists every container and keeps the running, paused and stopping
// ones (Podman's default listing has only the running), reads health by
// inspecting the containers that have a healthcheck, and takes Podman's
// names of die and destroy ("died" in filters, "remove"): see podman.go.
//
// Two events take a fast path: when a container dies, stops or is destroyed,
// or is disconnected from a network, an update without it (or without that
// attachment) is published at once, naming it in [Update.Gone], before the
// re-list confirms. Docker may give the freed address to another container
// immediately, and no new connection must reach it. The engine's listing
// lags those events by some milliseconds, so what they remove stays removed
// from later listings until a listing agrees, a later event revives it, or
// a few seconds pass.
//
// A third one prepares the first: when a container is sent a stop signal
// (docker stop), an update with its state [source.StateStopping] is published at
// once, so that new connections go elsewhere while the app drains, without
// naming it in Gone: its established connections are the app's to finish.
// Later listings, which show it running until it dies, keep that state for
// up to 30s.
//
// The watcher resyncs fully after every reconnect and on a timer, watches for
// a stalled stream by pinging the engine, and reconnects forever with capped,
// jittered exponential backoff. While the engine is unreachable it publishes
// one update saying so and keeps the last snapshot in it, so consumers keep
// serving the last known routes. When a stream ends it pings the engine at
// once, so an engine that stopped is published as unreachable then, not at
// the next attempt.
//
// An event stream can also go silent while the engine answers everything
// else (a proxy that stalls /events). When a periodic resync finds changes
// the stream did not deliver, and the stream then delivers nothing at all
// for a second, it is replaced by a new subscription (since taken before,
// then a listing). Only a resync can tell: a re-list that an
// event led to proves the stream alive, and one after a tombstone expired
// may differ because of the expiry. A subscription that the engine does not
// answer within 10s (a proxy that black-holes /events) is no outage either
// when the engine still answers a ping: the watcher then follows the engine
// by listing at every resync, says so in [source.Update].StreamErr while
// Connected, and subscribes again in the background with capped backoff
// until one answers. Subscribing never blocks the loop, and the first
// listing of a session does not wait for it.
//
// Concurrency contract: [Watcher.Run] owns one goroutine loop, which holds all
// the watcher's state, plus one goroutine per subscription, which sends the
// request and then reads the stream it answered with; the loop starts,
// cancels and waits for them. The reader never blocks on the loop: when the
// loop is behind it drops events and marks the view dirty, which forces a
// re-list. Updates go through a latest-wins mailbox
// ([Watcher.Updates]) that never blocks the loop either: a slow consumer sees
// only the newest update, with the [Update.Gone] lists of any it missed
// merged in. Published snapshots are never mutated. The loop's counters are
// atomics that [Watcher.Stats] reads from any goroutine, since an event or
// a resync that changes nothing publishes no update.
package watcher
