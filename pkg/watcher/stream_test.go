package watcher

import (
	"context"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// The tests of this file are about the event stream itself: one that goes
// silent while the engine answers everything else, and subscriptions that
// the engine (or a proxy in front of it) never answers.

const (
	msgSilent      = "event stream silent: a resync found changes it did not deliver, and nothing came since; subscribing again"
	msgUnavailable = "event stream unavailable; following the engine by listing at every resync, and subscribing again"
	msgAvailable   = "event stream available again; following events"
	msgUnreachable = "docker engine unreachable; serving last known routes"
)

// A stream that stays open and says nothing (a proxy that stalls /events)
// while the engine's listing changes: the first resync finds the change,
// and the stream, which delivers nothing after it either, is replaced; a
// later change then arrives by its event, not with the next resync.
func TestSilentStreamIsReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f, Logger: zap.New(core)}
		start(t, w)
		take(t, w)
		silent := f.stream(t)

		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		time.Sleep(w.resync())
		u := take(t, w)
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
		assert.Equal(t, source.Stats{Resyncs: 1, Drift: 1}, u.Stats)
		assert.Equal(t, 1, f.count("events"), "one resync's drift alone proves nothing")

		lists := f.count("list")
		time.Sleep(silenceGrace)
		synctest.Wait()
		require.Equal(t, 2, f.count("events"), "the silent stream is replaced")
		assert.Error(t, silent.ctx.Err(), "the silent stream is cancelled")
		assert.Equal(t, lists+1, f.count("list"), "a listing after the new subscription's since")
		evs, ls := f.callTimes("events"), f.callTimes("list")
		assert.False(t, evs[1].After(ls[len(ls)-1]))
		none(t, w) // nothing changed meanwhile
		require.Equal(t, 1, logs.FilterMessage(msgSilent).Len())
		assert.Equal(t, zapcore.WarnLevel, logs.FilterMessage(msgSilent).All()[0].Level)

		// A change now arrives by its event, at once.
		t0 := time.Now()
		f.set(ctr(idWeb, "web"))
		f.send(t, containerEvent(events.ActionDie, idRedis, nil))
		u = take(t, w)
		assert.Equal(t, t0, time.Now())
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
		assert.Equal(t, []string{idRedis}, u.Gone)
		assert.Equal(t, source.Stats{Events: 1, Reconnects: 1, Resyncs: 1, Drift: 1}, u.Stats)

		// And a start, with its re-list (after the quiet period: it
		// comes in the same burst).
		f.set(ctr(idWeb, "web"), ctr(idAmb, "amb"))
		f.send(t, containerEvent(events.ActionStart, idAmb, nil))
		time.Sleep(w.quiet())
		u = take(t, w)
		assert.Equal(t, []string{"amb", "web"}, names(u.Snapshot))
		assert.Equal(t, 1, logs.FilterMessage(msgSilent).Len())
	})
}

// A stream that goes silent again and again (a proxy that stalls every
// stream) is replaced each time, and logged at Warn once until a stream
// delivers something.
func TestStreamsSilentAgainAreLoggedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f, Logger: zap.New(core)}
		start(t, w)
		take(t, w)

		for i, cs := range [][]container.Summary{
			{ctr(idRedis, "redis"), ctr(idWeb, "web")},
			{ctr(idRedis, "redis")},
			{ctr(idRedis, "redis"), ctr(idAmb, "amb")},
		} {
			f.set(cs...)
			time.Sleep(w.resync() + silenceGrace)
			take(t, w)
			assert.Equal(t, 2+i, f.count("events"))
		}
		assert.Equal(t, 3, logs.FilterMessage(msgSilent).Len())
		assert.Equal(t, 1, logs.FilterMessage(msgSilent).FilterLevelExact(zapcore.WarnLevel).Len())

		// A stream that delivers and then goes silent is news again.
		f.send(t, containerEvent(events.ActionStart, idRedis, nil))
		time.Sleep(time.Second)
		f.set(ctr(idRedis, "redis"))
		time.Sleep(w.resync() + silenceGrace)
		take(t, w)
		assert.Equal(t, 5, f.count("events"))
		assert.Equal(t, 2, logs.FilterMessage(msgSilent).FilterLevelExact(zapcore.WarnLevel).Len())
	})
}

// Listings that differ from the view, without the stream being dead, do
// not replace it.
func TestNoReplacementWithoutSilence(t *testing.T) {
	for _, tt := range []struct {
		name  string
		do    func(t *testing.T, f *fakeClient, w *Watcher)
		drift uint64
	}{
		{
			// The resync lists the change a moment before its event
			// arrives.
			name: "event racing a resync",
			do: func(t *testing.T, f *fakeClient, w *Watcher) {
				f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
				time.Sleep(w.resync() + 100*time.Millisecond)
				f.send(t, containerEvent(events.ActionStart, idWeb, nil))
			},
			drift: 1, // an upper bound, as documented
		},
		{
			// The resync lists a change whose event is late, and the
			// stream brings another first: it is alive.
			name: "other event after a resync",
			do: func(t *testing.T, f *fakeClient, w *Watcher) {
				f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
				time.Sleep(w.resync() + silenceGrace - time.Millisecond)
				f.send(t, containerEvent(events.ActionExecStart+": sh", idRedis, nil))
			},
			drift: 1,
		},
		{
			// A re-list an event led to finds more than that event
			// says: the other events are on their way.
			name: "re-list after an event finds more",
			do: func(t *testing.T, f *fakeClient, w *Watcher) {
				f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"), ctr(idAmb, "amb"))
				f.send(t, containerEvent(events.ActionStart, idWeb, nil))
			},
		},
		{
			// A tombstone expires at the very time of a resync: the
			// listing differs from the view because of it.
			name: "tombstone expiring at a resync",
			do: func(t *testing.T, f *fakeClient, w *Watcher) {
				time.Sleep(w.resync() - tombstoneTTL)
				f.send(t, containerEvent(events.ActionDie, idRedis, nil))
				time.Sleep(tombstoneTTL)
			},
		},
		{
			// A tombstone's recheck re-lists: the listing wins.
			name: "tombstone recheck",
			do: func(t *testing.T, f *fakeClient, w *Watcher) {
				f.send(t, containerEvent(events.ActionDie, idRedis, nil))
				time.Sleep(tombstoneTTL)
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				core, logs := observer.New(zapcore.DebugLevel)
				f := newFake(ctr(idRedis, "redis"))
				w := &Watcher{Client: f, Logger: zap.New(core)}
				start(t, w)
				take(t, w)

				tt.do(t, f, w)
				time.Sleep(2 * silenceGrace)
				synctest.Wait()
				assert.Equal(t, 1, f.count("events"), "the stream was replaced")
				assert.Zero(t, logs.FilterMessage(msgSilent).Len())
				assert.Equal(t, tt.drift, w.Stats().Drift)
				assert.Zero(t, w.Stats().Reconnects)
			})
		})
	}
}

// A subscription that the engine never answers (a proxy that black-holes
// /events) while it answers listings and pings: the watcher follows the
// engine by listing at every resync, says so in StreamErr while Connected,
// keeps subscribing again in the background, and follows events again
// once a subscription answers.
func TestHungSubscriptionIsFollowedByListing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis"))
		f.setEventsHang(true)
		w := &Watcher{Client: f, Logger: zap.New(core)}
		start(t, w)
		t0 := time.Now()

		// The listing does not wait for the subscription.
		u := take(t, w)
		assert.Equal(t, t0, time.Now())
		assert.Equal(t, source.Update{Source: "docker", Snapshot: u.Snapshot, Connected: true, Engine: "Docker 20.10.24 (API 1.41)"}, u)
		assert.Equal(t, []string{"redis"}, names(u.Snapshot))

		time.Sleep(subscribeTimeout)
		u = take(t, w)
		assert.True(t, u.Connected)
		assert.NoError(t, u.Err)
		assert.EqualError(t, u.StreamErr, "subscribe to events: no answer within 10s: context deadline exceeded")
		assert.ErrorIs(t, u.StreamErr, context.DeadlineExceeded)
		assert.Equal(t, []string{"redis"}, names(u.Snapshot))
		require.Equal(t, 1, logs.FilterMessage(msgUnavailable).Len())
		assert.Equal(t, zapcore.WarnLevel, logs.FilterMessage(msgUnavailable).All()[0].Level)

		// A change is listed at the next resync, with no drift: listing
		// is how the watcher follows the engine now.
		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		time.Sleep(w.resync() - subscribeTimeout - time.Millisecond)
		none(t, w)
		time.Sleep(time.Millisecond)
		u = take(t, w)
		assert.Equal(t, []string{"redis", "web"}, names(u.Snapshot))
		assert.True(t, u.Connected)
		assert.Error(t, u.StreamErr)
		assert.Equal(t, source.Stats{Resyncs: 1}, u.Stats)

		// Another, and a removal, named in Gone.
		f.set(ctr(idWeb, "web"))
		time.Sleep(w.resync())
		u = take(t, w)
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
		assert.Equal(t, []string{idRedis}, u.Gone)
		assert.True(t, u.Connected)
		assert.Equal(t, source.Stats{Resyncs: 2}, u.Stats)

		// Meanwhile: subscriptions retried, each after the last one's
		// timeout and a backoff; pings; never an outage.
		evs := f.callTimes("events")
		require.GreaterOrEqual(t, len(evs), 4)
		for i := 1; i < len(evs); i++ {
			gap := evs[i].Sub(evs[i-1])
			assert.GreaterOrEqual(t, gap, subscribeTimeout+minBackoff/2, "attempt %d", i)
			assert.LessOrEqual(t, gap, subscribeTimeout+maxBackoff, "attempt %d", i)
		}
		assert.Greater(t, f.count("ping"), len(evs), "the watchdog pings, and so does each failed attempt")
		assert.Zero(t, logs.FilterMessage(msgUnreachable).Len())
		assert.Equal(t, 1, logs.FilterMessage(msgUnavailable).Len(), "retries are logged at debug")
		failed := 0
		for _, at := range evs {
			if !time.Now().Before(at.Add(subscribeTimeout)) {
				failed++
			}
		}
		assert.Equal(t, failed-1, logs.FilterMessage("event stream still unavailable").Len())

		// The next attempt answers: events drive the updates again.
		f.setEventsHang(false)
		lists := f.count("list")
		time.Sleep(subscribeTimeout + maxBackoff)
		u = take(t, w)
		assert.True(t, u.Connected)
		assert.NoError(t, u.StreamErr)
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
		assert.Equal(t, uint64(1), u.Stats.Reconnects)
		assert.Equal(t, lists+1, f.count("list"), "a listing after the answer")
		assert.Equal(t, 1, logs.FilterMessage(msgAvailable).Len())

		t1 := time.Now()
		f.set(ctr(idWeb, "web"), ctr(idAmb, "amb"))
		f.send(t, containerEvent(events.ActionStart, idAmb, nil))
		u = take(t, w)
		assert.Equal(t, t1, time.Now(), "by the event, not at the next resync")
		assert.Equal(t, []string{"amb", "web"}, names(u.Snapshot))
		assert.NoError(t, u.StreamErr)
		f.set(ctr(idAmb, "amb"))
		f.send(t, containerEvent(events.ActionDie, idWeb, nil))
		u = take(t, w)
		assert.Equal(t, []string{idWeb}, u.Gone)
		assert.Zero(t, logs.FilterMessage(msgUnreachable).Len())
	})
}

// The silent stream's replacement hangs too (a proxy that stalls the
// stream and black-holes new /events requests): the watcher does not
// stall, and follows the engine by listing.
func TestReplacementThatHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis"))
		w := &Watcher{Client: f, Logger: zap.New(core)}
		start(t, w)
		take(t, w)

		f.setEventsHang(true)
		f.set(ctr(idRedis, "redis"), ctr(idWeb, "web"))
		time.Sleep(w.resync())
		assert.Equal(t, []string{"redis", "web"}, names(take(t, w).Snapshot))
		time.Sleep(silenceGrace)
		synctest.Wait()
		assert.Equal(t, 2, f.count("events"))
		none(t, w)

		time.Sleep(subscribeTimeout)
		u := take(t, w)
		assert.True(t, u.Connected)
		assert.Error(t, u.StreamErr)

		// The resyncs follow the engine, as often as before.
		f.set(ctr(idWeb, "web"))
		time.Sleep(w.resync() - silenceGrace - subscribeTimeout)
		u = take(t, w)
		assert.Equal(t, []string{"web"}, names(u.Snapshot))
		assert.Equal(t, []string{idRedis}, u.Gone)
		assert.True(t, u.Connected)
		assert.Equal(t, source.Stats{Resyncs: 2, Drift: 1}, u.Stats, "no drift without a stream")
		assert.Equal(t, 1, logs.FilterMessage(msgSilent).Len())
		assert.Equal(t, 1, logs.FilterMessage(msgUnavailable).Len())
		assert.Zero(t, logs.FilterMessage(msgUnreachable).Len())
	})
}

// A subscription that does not answer because the engine answers nothing
// any more is an outage, not a stream to do without.
func TestSubscriptionFailureWhileEngineDownIsAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		f := newFake(ctr(idRedis, "redis"))
		f.setEventsHang(true)
		w := &Watcher{Client: f, Logger: zap.New(core), PingInterval: time.Hour}
		start(t, w)
		first := take(t, w)

		f.setPing(dialErr(syscall.ECONNREFUSED), false)
		time.Sleep(subscribeTimeout)
		u := take(t, w)
		assert.False(t, u.Connected)
		assert.ErrorIs(t, u.Err, syscall.ECONNREFUSED)
		assert.NoError(t, u.StreamErr)
		assert.Same(t, first.Snapshot, u.Snapshot)
		assert.Zero(t, logs.FilterMessage(msgUnavailable).Len())
		assert.Equal(t, 1, logs.FilterMessage(msgUnreachable).Len())
	})
}
