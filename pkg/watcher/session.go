package watcher

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// silenceGrace is how long an event stream has, after a resync found
// changes it did not deliver, to deliver anything at all before it is taken
// for dead and replaced. The listing can run ahead of the events by a few
// milliseconds (a container is listed as running just before its start
// event is sent), so one resync's drift alone does not prove the stream
// dead; a live stream delivers that change's event at once, whatever else
// it brings.
const silenceGrace = time.Second

// session is the state of one session, from the ping that opens it to the
// error that ends it. It belongs to Run's goroutine, as the loop does.
//
// A session always has a listing to go by; it follows the engine's events
// when it has a stream, and otherwise lists at every resync while it keeps
// trying to subscribe. A subscription never blocks the loop: each attempt
// runs in its own goroutine ([subscription.run]), which the session cancels
// when it replaces it, and waits for when it ends.
type session struct {
	l   *loop
	ctx context.Context
	wg  sync.WaitGroup // the subscriptions' goroutines

	sub        *subscription // the current one, pending or answered; nil while a retry waits
	subscribed bool          // a subscription of this session has answered
	attempts   int           // subscriptions that did not answer, in a row
	retry      *time.Timer   // the next attempt, after one that did not answer

	// suspect is set when a resync found changes the current stream did
	// not deliver, and cleared by anything the stream delivers; confirm
	// replaces the stream if it is still set silenceGrace later.
	suspect bool
	confirm *time.Timer

	// recheck re-lists when a tombstone or stopping mark that changed a
	// listing expires, so that the listing wins if it still disagrees
	// then; recheckAt is when (zero when none is set).
	recheck   *time.Timer
	recheckAt time.Time
}

// subscription is one attempt to follow the engine's events: the request,
// until the engine answers it or subscribeTimeout passes, and then the
// stream it answered with. One goroutine does both.
type subscription struct {
	since   time.Time // taken before the request, and before any listing that counts on it
	filters client.Filters
	cancel  context.CancelFunc
	answer  chan error // capacity 1: nil once the engine answered, else why it did not
	r       *reader

	// Owned by the loop:
	answered bool // the loop received a nil answer: r is read
	covered  bool // a listing started after since
}

// stoppedTimer returns a timer that does not run until it is Reset.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop() // since Go 1.23, no stale tick can be received after Stop
	return t
}

// session reaches the engine, subscribes to its events, lists, and then
// follows the engine until the stream ends, the engine stops answering or
// ctx is cancelled. It returns why it ended: an error wrapping
// errStreamEnded, another error when the engine could not be reached, or
// ctx's error.
func (l *loop) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	s := &session{l: l, ctx: ctx, retry: stoppedTimer(), confirm: stoppedTimer(), recheck: stoppedTimer()}
	defer func() {
		cancel() // ends every subscription's goroutine
		s.wg.Wait()
		s.retry.Stop()
		s.confirm.Stop()
		s.recheck.Stop()
	}()

	// The first ping also negotiates the API version, and tells an
	// unreachable engine apart before anything else is tried.
	if err := l.ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return err
	}
	l.identify(ctx)

	// A fresh listing, and the events replayed since before it, are the
	// whole truth: what earlier events said no longer matters.
	l.graves.reset(l.state == stateDisconnected)
	// The listing does not wait for the engine to answer the
	// subscription: the subscription's since is taken first, and the
	// engine replays every event from then on once it answers, so nothing
	// that lands while the watcher subscribes and lists is missed. An
	// engine (or a proxy) that never answers /events therefore delays
	// nothing.
	s.subscribe()
	l.infoAsked = false
	snap, err := s.list()
	if err != nil {
		return err
	}
	if l.sessions > 0 {
		l.stats.reconnects.Add(1)
	}
	l.sessions++
	l.update(snap)
	return s.follow()
}

// follow runs the session's loop once it has listed.
func (s *session) follow() error {
	l := s.l
	resync := time.NewTicker(l.w.resync())
	defer resync.Stop()
	ping := time.NewTicker(l.w.pingInterval())
	defer ping.Stop()
	d := newDebouncer(l.w.quiet(), l.w.maxDelay())
	defer d.timer.Stop()

	for {
		// Nil channels (no stream, no pending attempt) are never ready.
		var answer <-chan error
		var msgs <-chan events.Message
		var overflow <-chan struct{}
		var done <-chan error
		if sub := s.sub; sub != nil {
			if sub.answered {
				msgs, overflow, done = sub.r.events, sub.r.overflow, sub.r.done
			} else {
				answer = sub.answer
			}
		}

		select {
		case <-s.ctx.Done():
			return s.ctx.Err()

		case err := <-answer:
			if err := s.answered(err); err != nil {
				return err
			}

		case <-s.retry.C:
			s.subscribe()

		case m := <-msgs:
			s.delivered()
			if l.event(m) {
				d.kick()
			}

		case <-overflow:
			s.delivered()
			n := s.sub.r.dropped.Swap(0)
			l.stats.events.Add(n)
			l.received(time.Now())
			l.log.Debug("loop behind the event stream; events dropped, re-listing", zap.Uint64("dropped", n))
			d.kick()

		case err := <-done:
			// Events read before the end still get their fast path;
			// the resync after the reconnect covers everything else.
			for len(msgs) > 0 {
				l.event(<-msgs)
			}
			return fmt.Errorf("%w: %w", errStreamEnded, err)

		case <-d.timer.C:
			// An event led here: whatever this listing finds, the
			// stream is alive.
			d.fired()
			if err := s.relist(); err != nil {
				return err
			}

		case <-s.recheck.C:
			// What changed here may be the expiry itself: no drift.
			s.recheckAt = time.Time{}
			if err := s.relist(); err != nil {
				return err
			}

		case <-resync.C:
			if d.pending {
				continue // a re-list is due anyway; it would not tell drift apart
			}
			if err := s.resync(); err != nil {
				return err
			}

		case <-s.confirm.C:
			if s.suspect {
				s.silent()
			}

		case <-ping.C:
			if err := l.ping(s.ctx, client.PingOptions{}); err != nil {
				return err
			}
		}
	}
}

// subscribe starts a subscription in the background, with since taken now.
func (s *session) subscribe() {
	s.retry.Stop()
	ctx, cancel := context.WithCancel(s.ctx)
	sub := &subscription{
		since:   time.Now(),
		filters: eventFilters(s.l.engine.podman()),
		cancel:  cancel,
		answer:  make(chan error, 1),
		r: &reader{
			events:   make(chan events.Message, eventBuffer),
			overflow: make(chan struct{}, 1),
			done:     make(chan error, 1),
		},
	}
	s.sub = sub
	s.wg.Add(1)
	go sub.run(ctx, s.l.cli, &s.wg)
}

// drop cancels the current subscription, if any: its goroutine ends, and
// nothing it still sends is read.
func (s *session) drop() {
	if s.sub != nil {
		s.sub.cancel()
		s.sub = nil
	}
	s.suspect = false
	s.confirm.Stop()
}

// answered handles the answer to the current subscription: err is nil when
// the engine answered it, or why it did not.
func (s *session) answered(err error) error {
	l := s.l
	if err != nil {
		s.drop()
		// An engine that answers nothing is an outage; one that
		// answers all but the event stream (a proxy that black-holes
		// /events) is followed by listing.
		if err := l.ping(s.ctx, client.PingOptions{}); err != nil {
			return err
		}
		delay := backoff(s.attempts)
		s.attempts++
		s.retry.Reset(delay)
		l.streamUnavailable(err, delay)
		return nil
	}
	sub := s.sub
	sub.answered = true
	if s.subscribed || s.attempts > 0 {
		// A stream replaced, or one that answered at last: the listing
		// below is the resync that follows.
		l.stats.reconnects.Add(1)
	}
	s.subscribed, s.attempts = true, 0
	l.streamAvailable()
	if sub.covered {
		// A listing after since: the stream replays what it missed.
		if l.stale {
			l.publish(nil)
		}
		return nil
	}
	// The last listing is older than since: list again, or a change
	// between the two would wait for the next resync.
	return s.relist()
}

// delivered notes that the current stream delivered something: it is
// alive.
func (s *session) delivered() {
	s.suspect = false
	s.confirm.Stop()
	s.l.silenceLogged = false
}

// list lists, after noting that the current subscription's since is
// covered by a listing, and sets the recheck timer.
func (s *session) list() (*source.Snapshot, error) {
	if s.sub != nil {
		s.sub.covered = true
	}
	snap, expiry, err := s.l.list(s.ctx)
	if err != nil {
		return nil, err
	}
	s.recheckAt = expiry
	if expiry.IsZero() {
		s.recheck.Stop()
	} else {
		s.recheck.Reset(time.Until(expiry))
	}
	return snap, nil
}

// relist lists and makes the listing the current view.
func (s *session) relist() error {
	snap, err := s.list()
	if err != nil {
		return err
	}
	s.l.update(snap)
	return nil
}

// resync is the periodic re-list. A listing that differs from the view the
// stream built means changes it did not deliver: drift, counted, and a
// stream suspected dead. Only a resync can tell: the re-lists that events
// lead to prove the stream alive, and a recheck's listing may differ
// because a tombstone expired. Without a stream (one pending or
// unavailable), the resync is how the watcher follows the engine, and what
// it finds is no drift.
func (s *session) resync() error {
	l := s.l
	// A recheck due now and not yet run would make its expiry look like
	// drift.
	expired := !s.recheckAt.IsZero() && !time.Now().Before(s.recheckAt)
	// Joining or leaving a swarm makes no event.
	if l.role == swarmManager || l.snap != nil && swarmHint(l.snap.Containers) {
		l.infoRole(s.ctx)
	}
	snap, err := s.list()
	if err != nil {
		return err
	}
	l.stats.resyncs.Add(1)
	if s.sub != nil && s.sub.answered && !expired && !equalSnapshots(l.snap, snap) {
		l.stats.drift.Add(1)
		l.log.Info("resync found changes the events did not deliver")
		if !s.suspect {
			s.suspect = true
			s.confirm.Reset(silenceGrace)
		}
	}
	l.update(snap)
	return nil
}

// silent replaces a stream that did not deliver the changes a resync found,
// nor anything else in the silenceGrace since: a proxy that stalls /events
// while the engine answers the rest, or a stream lost without an error.
// Keeping it would leave every later change to the resyncs.
func (s *session) silent() {
	msg := "event stream silent: a resync found changes it did not deliver, and nothing came since; subscribing again"
	if s.l.silenceLogged {
		// Streams that go silent again and again: once is enough
		// until one delivers.
		s.l.log.Debug(msg, zap.Duration("grace", silenceGrace))
	} else {
		s.l.silenceLogged = true
		s.l.log.Warn(msg, zap.Duration("grace", silenceGrace))
	}
	s.drop()
	s.subscribe()
}

// streamUnavailable records that the engine answers but its event stream
// does not, and publishes it when that is news.
func (l *loop) streamUnavailable(err error, retry time.Duration) {
	if l.streamErr != nil {
		l.streamErr = err
		l.log.Debug("event stream still unavailable", errField(err), zap.Duration("retry", retry))
		return
	}
	l.streamErr = err
	l.log.Warn("event stream unavailable; following the engine by listing at every resync, and subscribing again",
		errField(err), zap.Duration("resync", l.w.resync()), zap.Duration("retry", retry))
	l.stale = true
	l.publish(nil)
}

// streamAvailable records that a subscription answered. The caller
// publishes (through update, or publish) if stale is set.
func (l *loop) streamAvailable() {
	if l.streamErr == nil {
		return
	}
	l.log.Info("event stream available again; following events")
	l.streamErr = nil
	l.stale = true
}

// run subscribes with sub.since, answers whether the engine answered
// within subscribeTimeout, and then reads the stream until it ends or ctx
// is cancelled.
func (sub *subscription) run(ctx context.Context, cli Client, wg *sync.WaitGroup) {
	defer wg.Done()
	// Events waits for the engine's response headers, with no deadline
	// of its own: a proxy that black-holes /events would hold it
	// forever.
	expired := time.AfterFunc(subscribeTimeout, sub.cancel)
	stream := cli.Events(ctx, client.EventsListOptions{
		Since:   fmt.Sprintf("%d.%09d", sub.since.Unix(), sub.since.Nanosecond()),
		Filters: sub.filters,
	})
	if !expired.Stop() {
		sub.answer <- fmt.Errorf("subscribe to events: no answer within %s: %w", subscribeTimeout, context.DeadlineExceeded)
		return
	}
	if err := ctx.Err(); err != nil {
		sub.answer <- fmt.Errorf("subscribe to events: %w", err) // cancelled: nobody reads it
		return
	}
	sub.answer <- nil
	sub.r.run(ctx, stream)
}
