package watcher

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"
	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/source"
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

// Watcher follows one Docker engine and publishes [source.Update]s.
//
// Set the fields, then call [Watcher.Run] once; the fields must not change
// afterwards. Only Client is required: the other fields' zero values select
// the documented defaults.
type Watcher struct {
	// Engine names the engine, to tell this source apart from others
	// (source.Update.Source, source.Container.Engine, logs, metrics): Name
	// returns it. Empty means Spec's name, else "docker".
	Engine string

	// Client talks to the engine. Nil means a client that Run creates and
	// closes when it returns: for Spec when it is set, else with
	// [NewClient](Host).
	Client Client

	// Host is the local engine's address when Client and Spec are nil: ""
	// means $DOCKER_HOST, else the default socket (see [DefaultHost]).
	Host string

	// Spec, when not nil, is the engine to follow, as --engine gives it
	// ([ParseEngine]), instead of the local one: Run dials Spec.URL with
	// the TLS files of Spec.TLSDir, read once when Run starts, and reads
	// nothing of the environment (DOCKER_HOST, DOCKER_CERT_PATH,
	// DOCKER_TLS_VERIFY, DOCKER_API_VERSION, HTTP proxies), so that an
	// engine named on the command line is the one followed. Connection
	// errors get advice for such an engine (TLS, permissions) rather than
	// the local socket's. Check it with [Check] before Run, to stop at
	// start on a configuration that cannot work.
	Spec *EngineSpec

	// SelfIDs are candidate IDs, or ID prefixes of at least 12 hex digits,
	// of the ambassador's own container, strongest first: see
	// [SelfCandidates]. The first one that matches exactly one listed
	// container (by full ID or unique prefix) becomes [source.Snapshot].Self.
	// Empty, or no match, means the ambassador runs outside a container
	// the engine knows, and Self is nil.
	SelfIDs []string

	// Logger receives the watcher's logs; the caller scopes it (for
	// example with Named("watcher")). Nil means no logs.
	Logger *zap.Logger

	// Resync is the period of the full resync that catches changes the
	// events did not deliver (counted as [source.Stats].Drift); a resync that
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
	mailbox     chan source.Update // capacity 1; written only by Run's loop
}

// counters are the live [source.Stats]. Only Run's loop adds to them, so the
// values it loads when it publishes are consistent with one another.
type counters struct {
	events, reconnects, resyncs, drift atomic.Uint64
}

// load reads the counters. Drift is read before Resyncs, which the loop
// adds to first, so that a concurrent reader never sees more drift than
// resyncs.
func (c *counters) load() source.Stats {
	var s source.Stats
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
func (w *Watcher) Stats() source.Stats {
	return w.stats.load()
}

// Updates returns the watcher's mailbox. It holds at most one update, the
// newest: the watcher replaces an update the consumer has not taken yet
// instead of waiting for it, merging the replaced update's Gone into the
// new one. The channel is closed when Run returns after having started.
func (w *Watcher) Updates() <-chan source.Update {
	return w.updates()
}

func (w *Watcher) updates() chan source.Update {
	w.mailboxOnce.Do(func() { w.mailbox = make(chan source.Update, 1) })
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
		c, err := w.newClient()
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

		noHealthcheck: map[string]bool{},
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
		if errors.Is(err, errStreamEnded) {
			// A stream that ends is how an engine that stops shows first.
			// Whether it still answers is asked now rather than at the next
			// attempt, up to maxBackoff later: an outage is published (and
			// a remote engine's grace starts) when it begins.
			if perr := l.ping(ctx, client.PingOptions{}); perr != nil && ctx.Err() == nil {
				l.ended(perr)
			}
		}
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

// newClient returns the client Run uses when Client is nil.
func (w *Watcher) newClient() (*client.Client, error) {
	if w.Spec != nil {
		return newEngineClient(*w.Spec)
	}
	return NewClient(w.Host)
}

// defaultName is the name of a Watcher without one.
const defaultName = "docker"

// Name returns the source's name: Engine, else Spec's name, else "docker".
func (w *Watcher) Name() string {
	switch {
	case w.Engine != "":
		return w.Engine
	case w.Spec != nil:
		return w.Spec.Name
	}
	return defaultName
}

// URL returns the address of the engine the watcher follows, for status
// and logs (daemon.Options.SourceHosts): Spec's URL, else Host, else
// [DefaultHost]. With a Client given, it is the address the watcher was
// told, not necessarily the one that client dials.
func (w *Watcher) URL() string {
	switch {
	case w.Spec != nil:
		return w.Spec.URL
	case w.Host != "":
		return w.Host
	}
	return DefaultHost()
}

// explain adds advice to a connection error: an engine's given by
// --engine, or the local socket's.
func (w *Watcher) explain(err error, host string) error {
	if w.Spec != nil {
		return w.Spec.explain(err)
	}
	return Explain(err, host)
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

// A Watcher is a source of engine updates.
var _ source.Source = (*Watcher)(nil)
