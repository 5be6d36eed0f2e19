package source

import (
	"context"
	"time"
)

// Source follows one container engine. Run follows it until ctx is
// cancelled, then returns nil (an error only when the source cannot start
// at all); Updates is its latest-wins mailbox, closed when Run returns
// after having started; Stats are its counters now, safe to read from any
// goroutine. Name tells sources apart in logs, metrics and Update.Source.
type Source interface {
	Name() string
	Run(ctx context.Context) error
	Updates() <-chan Update
	Stats() Stats
}

// Update is what a source knows of its engine at one moment. Updates are
// plain values: their snapshots and slices are never mutated after
// publication.
type Update struct {
	// Source is the name of the source that published it.
	Source string

	// Snapshot is the newest view of the engine's containers, or the last
	// known one while the engine is unreachable; nil when the engine has
	// never been reached.
	Snapshot *Snapshot

	// Connected is false while the engine is unreachable. Consumers should
	// keep serving the routes of the last snapshot meanwhile.
	Connected bool

	// Err is the connection error that made the engine unreachable, with
	// advice where the source has some (for logs and status). Nil while
	// Connected.
	Err error

	// StreamErr says why the source has no event stream while the engine
	// answers everything else (Connected is true), as through a proxy
	// that black-holes the engine's events. Meanwhile the source follows
	// the engine by listing it periodically (the snapshots stay current,
	// up to that period late, and Gone still names what disappeared);
	// StreamErr is nil again, in an update of its own, once events flow.
	// Always nil while not Connected. It is not Err: the engine is
	// reachable, and nothing that acts on an outage should.
	StreamErr error

	// Gone are the IDs of containers that disappeared since the previous
	// update: they stopped, died or were removed, or lost a network
	// attachment (disconnected, or reconnected with another address).
	// Consumers should close established connections to them at once:
	// the engine may already have given their address to another
	// container. A paused container is not gone: it keeps its address and
	// its connections; its State says "paused". Nor is a container that
	// was sent a stop signal, until it dies: its State says
	// StateStopping. An ID is never lost with an update the mailbox
	// replaced: it is carried over into the next one.
	Gone []string

	// Stats are the source's counters as of this update. They move on
	// without an update too (events and resyncs that change nothing
	// publish none): Source.Stats has the current ones.
	Stats Stats

	// EventTime is when the source received the oldest event whose effect
	// this update is the first to publish, so that the consumer can measure
	// how long an event takes to reach its routes. It is the zero time for
	// an update no event led to: the first listing, a reconnect, a
	// periodic resync, an outage. An update that replaces one the consumer
	// had not taken keeps the older time.
	EventTime time.Time

	// Engine says which engine the source follows, as the engine
	// describes itself: "Docker 20.10.24 (API 1.41)", "Podman 4.3.1 (API
	// 1.41)"; "" until it answered. For logs and the status.
	Engine string
}

// Stats count what a source has done since Run started.
type Stats struct {
	// Events is the number of events received, relevant or not.
	Events uint64
	// Reconnects is the number of times the source subscribed again, and
	// resynced, after losing the event stream or the engine.
	Reconnects uint64
	// Resyncs is the number of periodic resyncs done.
	Resyncs uint64
	// Drift is the number of periodic resyncs whose listing differed from
	// the view maintained from events: changes the events did not deliver
	// (an upper bound: an event racing with the resync can count too).
	Drift uint64
}
