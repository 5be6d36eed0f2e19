package watcher

import (
	"slices"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// tombstoneTTL bounds how long an event's word that something is gone
// overrides listings that still show it. The engine's listing lags its
// events by tens of milliseconds; past this, the listing wins again (in
// case the event that revived it was dropped).
const tombstoneTTL = 5 * time.Second

// stoppingTTL bounds how long a stop signal keeps a container that is still
// listed as running out of new connections. docker stop sends SIGKILL 10s
// after the stop signal by default (its -t, or the container's
// StopTimeout), and die follows at once; 30s leaves room for longer stop
// timeouts. A container that outlives it handled the signal and kept
// running (SIGTERM taken as a reload, docker kill -s TERM to an app that
// ignores it), and takes new connections again.
const stoppingTTL = 30 * time.Second

// tombstones remember what events said is gone for as long as the engine's
// listing may still show it. The engine announces a death, or a network
// disconnect, before its listing reflects it: on Docker 20.10 a container
// is still listed as running, with its address, some 80ms after its die
// event, and an attachment some 10ms after its disconnect event. A re-list
// in that window would bring a dead container, and an address Docker may
// give to another container, back into the routes, and nothing would
// correct it before the next event or resync.
//
// A tombstone ends when the listing confirms it (the container, or its
// attachment, is no longer listed), when a later event revives it (start,
// connect), when it is older than tombstoneTTL, or when a new session
// starts from a fresh listing.
//
// They also remember which containers were sent a stop signal: such a
// container stays listed as running, with its address, for as long as it
// drains (seconds), and the listing has no way to tell. A listed container
// under such a mark gets the state [source.StateStopping], which takes it out of
// new connections but, unlike a tombstone, keeps its established ones. The
// mark ends when the listing no longer shows the container, when it dies or
// starts again, or after stoppingTTL; a new session keeps it, since the
// fresh listing cannot contradict it, unless the engine was unreachable
// in between (reset).
//
// The zero value is ready; it belongs to the loop.
type tombstones struct {
	dead     map[string]time.Time     // container ID → when an event said it stopped
	detached map[attachment]time.Time // → when an event said it ended
	stopping map[string]time.Time     // container ID → when it was sent a stop signal
}

// attachment is one container's attachment to one network, by IDs.
type attachment struct {
	container, network string
}

// bury records that container id stopped. Its death supersedes a stop
// signal: the tombstone hides it altogether.
func (t *tombstones) bury(id string, now time.Time) {
	if id == "" {
		return
	}
	if t.dead == nil {
		t.dead = make(map[string]time.Time)
	}
	t.dead[id] = now
	delete(t.stopping, id)
}

// condemn records that container id was sent a stop signal: it is about to
// stop, and meanwhile drains.
func (t *tombstones) condemn(id string, now time.Time) {
	if id == "" {
		return
	}
	if t.stopping == nil {
		t.stopping = make(map[string]time.Time)
	}
	t.stopping[id] = now
}

// revive forgets that container id stopped, was sent a stop signal or was
// disconnected: it started again.
func (t *tombstones) revive(id string) {
	delete(t.dead, id)
	delete(t.stopping, id)
	for a := range t.detached {
		if a.container == id {
			delete(t.detached, a)
		}
	}
}

// detach records that container was disconnected from network.
func (t *tombstones) detach(container, network string, now time.Time) {
	if container == "" || network == "" {
		return
	}
	if t.detached == nil {
		t.detached = make(map[attachment]time.Time)
	}
	t.detached[attachment{container, network}] = now
}

// reattach forgets that container was disconnected from network.
func (t *tombstones) reattach(container, network string) {
	delete(t.detached, attachment{container, network})
}

// reset forgets what events said is gone, for a new session that starts
// from a fresh listing. Stop signals are kept, the listing showing a
// stopping container as running, unless the engine was unreachable
// (outage): it most likely restarted, and without live-restore its
// shutdown signalled every container and its start started again those
// with a restart policy, which the listing shows running, while their
// start events came before the new session subscribed. A mark kept then
// took them out of new connections for stoppingTTL. (With live-restore, a
// container signalled just before an outage and still draining after it
// gets new connections until its death's event; a refused one moves on.)
func (t *tombstones) reset(outage bool) {
	clear(t.dead)
	clear(t.detached)
	if outage {
		clear(t.stopping)
	}
}

// apply removes from a fresh listing, in place, what the tombstones say is
// gone, and marks the running containers that were sent a stop signal as
// stopping, after forgetting the tombstones and marks the listing confirms
// or that expired. It returns the filtered listing, and when the oldest
// tombstone or mark that changed something expires (zero if none did): a
// re-list then lets the listing win if it still disagrees.
func (t *tombstones) apply(cs []source.Container, now time.Time) ([]source.Container, time.Time) {
	listed := make(map[string]int, len(cs))
	for i, c := range cs {
		listed[c.ID] = i
	}
	var expiry time.Time
	keepFor := func(at time.Time, ttl time.Duration) bool {
		if now.Sub(at) >= ttl {
			return false
		}
		if exp := at.Add(ttl); expiry.IsZero() || exp.Before(expiry) {
			expiry = exp
		}
		return true
	}
	keep := func(at time.Time) bool { return keepFor(at, tombstoneTTL) }
	for id, at := range t.dead {
		if _, ok := listed[id]; !ok || !keep(at) {
			delete(t.dead, id)
		}
	}
	for a, at := range t.detached {
		i, ok := listed[a.container]
		if !ok || !slices.ContainsFunc(cs[i].Networks, func(n source.Network) bool { return n.ID == a.network }) || !keep(at) {
			delete(t.detached, a)
		}
	}
	for id, at := range t.stopping {
		i, ok := listed[id]
		switch {
		case !ok || now.Sub(at) >= stoppingTTL:
			delete(t.stopping, id)
		case cs[i].State == string(container.StateRunning) && keepFor(at, stoppingTTL):
			// Paused, restarting: not taking new connections
			// anyway, and the state says more.
			cs[i].State = source.StateStopping
		}
	}
	if len(t.dead) == 0 && len(t.detached) == 0 {
		return cs, expiry
	}
	out := cs[:0]
	for _, c := range cs {
		if _, ok := t.dead[c.ID]; ok {
			continue
		}
		c.Networks = nilIfEmpty(slices.DeleteFunc(c.Networks, func(n source.Network) bool {
			_, ok := t.detached[attachment{c.ID, n.ID}]
			return ok
		}))
		out = append(out, c)
	}
	return nilIfEmpty(out), expiry
}
