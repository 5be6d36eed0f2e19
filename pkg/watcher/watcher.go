package watcher

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/resolver"
)

const (
	defaultResync       = 30 * time.Second
	defaultQuiet        = 10 * time.Millisecond
	defaultMaxDelay     = 50 * time.Millisecond
	defaultPingInterval = 10 * time.Second

	// maxPingTimeout bounds the watchdog's ping; a shorter PingInterval
	// bounds it too, so that pings never overlap.
	maxPingTimeout = 5 * time.Second

	// requestTimeout bounds one listing (with the inspect of the
	// ambassador's own container), so a stalled engine cannot freeze the
	// loop.
	requestTimeout = 10 * time.Second

	// subscribeTimeout bounds the wait for the engine to answer a
	// subscription to its events (the response headers; the stream then
	// lasts as long as it lasts). One that does not answer in time is
	// retried in the background, with the reconnect backoff, while the
	// watcher follows the engine by listing.
	subscribeTimeout = requestTimeout

	// Reconnect delays double from minBackoff up to maxBackoff, each drawn
	// at random from its upper half so that many ambassadors restarted
	// with the engine do not reconnect in lockstep. A session that lasted
	// maxBackoff or longer starts the sequence over.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second

	// eventBuffer is how many events the reader holds for a busy loop
	// before it drops them and marks the view dirty instead.
	eventBuffer = 256
)

// StateStopping is the [resolver.Container].State the watcher gives a
// running container that was sent a stop signal (a kill event with TERM,
// KILL, INT or QUIT, as docker stop sends): it is draining and about to
// die. It is not running for the resolver, so it gets no new connections,
// but it is not gone either: its established connections are kept, for the
// app to finish. It lasts until the container dies (then it is gone) or
// starts again, and at most 30s, after which a container still running is
// taken to have handled the signal and gets new connections again.
const StateStopping = "stopping"

// Watcher follows one Docker engine and publishes [Update]s.
//
// Set the fields, then call [Watcher.Run] once; the fields must not change
// afterwards. Only Client is required: the other fields' zero values select
// the documented defaults.
type Watcher struct {
	// Client talks to the engine. Nil means a client that Run creates with
	// [NewClient](Host) and closes when it returns.
	Client Client

	// Host is the engine's address when Client is nil: "" means
	// $DOCKER_HOST, else the default socket (see [DefaultHost]).
	Host string

	// SelfIDs are candidate IDs, or ID prefixes of at least 12 hex digits,
	// of the ambassador's own container, strongest first: see
	// [SelfCandidates]. The first one that matches exactly one listed
	// container (by full ID or unique prefix) becomes [resolver.Snapshot].Self.
	// Empty, or no match, means the ambassador runs outside a container
	// the engine knows, and Self is nil.
	SelfIDs []string

	// Logger receives the watcher's logs; the caller scopes it (for
	// example with Named("watcher")). Nil means no logs.
	Logger *zap.Logger

	// Resync is the period of the full resync that catches changes the
	// events did not deliver (counted as [Stats].Drift); a resync that
	// finds some on a stream that then stays silent for a second has the
	// stream replaced. Without an event stream, it is how often the
	// watcher lists. Zero means 30s.
	Resync time.Duration

	// Quiet is how long the event stream must be quiet before a burst of
	// events triggers a re-list; an event that comes when nothing was
	// listed for Quiet triggers one at once too. Zero means 10ms.
	Quiet time.Duration

	// MaxDelay caps how long a re-list waits after the first event of a
	// burst, however long the burst goes on. Zero means 50ms.
	MaxDelay time.Duration

	// PingInterval is the period of the stalled-stream watchdog: the
	// engine is pinged, with a timeout, and a failure ends the event stream
	// and counts as the engine being unreachable. Zero means 10s.
	PingInterval time.Duration

	running atomic.Bool // set by the first Run

	// stats are written by Run's loop only, and read by Stats from any
	// goroutine: an update is published only when the view changes, so
	// counters carried by updates alone would stand still on a quiet
	// engine.
	stats counters

	mailboxOnce sync.Once
	mailbox     chan Update // capacity 1; written only by Run's loop
}

// Update is what the watcher knows of the engine at one moment. Updates are
// plain values: their snapshots and slices are never mutated after
// publication.
type Update struct {
	// Snapshot is the newest view of the engine's containers, or the last
	// known one while the engine is unreachable; nil when the engine has
	// never been reached.
	Snapshot *resolver.Snapshot

	// Connected is false while the engine is unreachable. Consumers should
	// keep serving the routes of the last snapshot meanwhile.
	Connected bool

	// Err is the connection error that made the engine unreachable, with
	// advice where [Explain] has some (for logs and status). Nil while
	// Connected.
	Err error

	// StreamErr says why the watcher has no event stream while the engine
	// answers everything else (Connected is true): the last subscription
	// got no answer within 10s, as through a proxy that black-holes
	// /events. Meanwhile the watcher follows the engine by listing at
	// every resync (the snapshots stay current, up to the resync period
	// late, and Gone still names what disappeared) and subscribes again
	// with capped backoff; StreamErr is nil again, in an update of its
	// own, once a subscription answers. Always nil while not Connected.
	// It is not Err: the engine is reachable, and nothing that acts on
	// an outage should.
	StreamErr error

	// Gone are the IDs of containers that disappeared since the previous
	// update: they stopped, died or were removed, or lost a network
	// attachment (disconnected, or reconnected with another address).
	// Consumers should close established connections to them at once:
	// Docker may already have given their address to another container.
	// A paused container is not gone: it keeps its address and its
	// connections; its State says "paused". Nor is a container that was
	// sent a stop signal, until it dies: its State says [StateStopping].
	// The fast path names a container here as soon as its event arrives,
	// before the re-list; a re-list names those whose disappearance no
	// event reported. An ID is never lost with an update the mailbox
	// replaced: it is carried over into the next one.
	Gone []string

	// Stats are the watcher's counters as of this update. They move on
	// without an update too (events and resyncs that change nothing
	// publish none): [Watcher.Stats] has the current ones.
	Stats Stats

	// EventTime is when the watcher received the oldest event whose effect
	// this update is the first to publish, so that the consumer can measure
	// how long an event takes to reach its routes. It is the zero time for
	// an update no event led to: the first listing, a reconnect, a
	// periodic resync, an outage. An update that replaces one the consumer
	// had not taken keeps the older time.
	EventTime time.Time
}

// Stats count what the watcher has done since Run started.
type Stats struct {
	// Events is the number of events received, relevant or not.
	Events uint64
	// Reconnects is the number of times the watcher subscribed again, and
	// resynced, after losing the event stream or the engine: a stream
	// that ended, an engine unreachable, a silent stream it replaced, a
	// subscription that answered after some did not.
	Reconnects uint64
	// Resyncs is the number of periodic resyncs done.
	Resyncs uint64
	// Drift is the number of periodic resyncs whose listing differed from
	// the view maintained from events: changes the events did not deliver.
	// An event racing with the resync can be counted too, so it is an
	// upper bound. Resyncs without an event stream (see
	// [Update].StreamErr) are how the watcher follows the engine then, and
	// count no drift.
	Drift uint64
}

// counters are the live [Stats]. Only Run's loop adds to them, so the
// values it loads when it publishes are consistent with one another.
type counters struct {
	events, reconnects, resyncs, drift atomic.Uint64
}

// load reads the counters. Drift is read before Resyncs, which the loop
// adds to first, so that a concurrent reader never sees more drift than
// resyncs.
func (c *counters) load() Stats {
	var s Stats
	s.Drift = c.drift.Load()
	s.Resyncs = c.resyncs.Load()
	s.Reconnects = c.reconnects.Load()
	s.Events = c.events.Load()
	return s
}

// Stats returns the watcher's counters now, including what published no
// update: an event or a resync that changed nothing. It is safe for
// concurrent use, while Run runs and after; before Run, it returns zeros.
// Each counter is read atomically, but not all four at one instant: read
// while the loop counts, they may be from moments a few instructions apart,
// though never with more Drift than Resyncs.
func (w *Watcher) Stats() Stats {
	return w.stats.load()
}

// Updates returns the watcher's mailbox. It holds at most one update, the
// newest: the watcher replaces an update the consumer has not taken yet
// instead of waiting for it, merging the replaced update's Gone into the
// new one. The channel is closed when Run returns after having started.
func (w *Watcher) Updates() <-chan Update {
	return w.updates()
}

func (w *Watcher) updates() chan Update {
	w.mailboxOnce.Do(func() { w.mailbox = make(chan Update, 1) })
	return w.mailbox
}

// Run follows the engine until ctx is cancelled, then returns nil. It never
// gives up on an unreachable engine: it publishes that fact and keeps
// retrying. It returns an error only if the Watcher is misconfigured or Run
// was already called.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("watcher: Run called twice")
	}
	out := w.updates()
	defer close(out)
	cli := w.Client
	if cli == nil {
		c, err := NewClient(w.Host)
		if err != nil {
			return err
		}
		defer c.Close()
		cli = c
	}

	l := &loop{
		w:     w,
		log:   w.logger(),
		cli:   cli,
		out:   out,
		host:  daemonHost(cli),
		stats: &w.stats,
	}
	attempt := 0
	for {
		start := time.Now()
		err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) >= maxBackoff {
			attempt = 0
		}
		l.ended(err)
		delay := backoff(attempt)
		attempt++
		l.log.Debug("reconnecting to docker engine", zap.Duration("delay", delay), zap.Int("attempt", attempt))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the delay before reconnect attempt n (from 0): a random
// duration in the upper half of minBackoff·2ⁿ, capped at maxBackoff.
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 16 {
		d = min(minBackoff<<n, maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

func daemonHost(c Client) string {
	if h, ok := c.(daemonHoster); ok {
		return h.DaemonHost()
	}
	return ""
}

func (w *Watcher) logger() *zap.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return zap.NewNop()
}

func (w *Watcher) resync() time.Duration {
	if w.Resync > 0 {
		return w.Resync
	}
	return defaultResync
}

func (w *Watcher) quiet() time.Duration {
	if w.Quiet > 0 {
		return w.Quiet
	}
	return defaultQuiet
}

func (w *Watcher) maxDelay() time.Duration {
	if w.MaxDelay > 0 {
		return w.MaxDelay
	}
	return defaultMaxDelay
}

func (w *Watcher) pingInterval() time.Duration {
	if w.PingInterval > 0 {
		return w.PingInterval
	}
	return defaultPingInterval
}

func (w *Watcher) pingTimeout() time.Duration {
	return min(w.pingInterval(), maxPingTimeout)
}
