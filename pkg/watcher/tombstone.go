package watcher

import (
	"slices"
	"time"

	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// tombstoneTTL bounds how long an event's word that something is gone
// overrides listings that still show it. The engine's listing lags its
// events by tens of milliseconds; past this, the listing wins again (in
// case the event that revived it was dropped).
const tombstoneTTL = 5 * time.Second

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
// starts from a fresh listing. The zero value is ready; it belongs to the
// loop.
type tombstones struct {
	dead     map[string]time.Time     // container ID → when an event said it stopped
	detached map[attachment]time.Time // → when an event said it ended
}

// attachment is one container's attachment to one network, by IDs.
type attachment struct {
	container, network string
}

// bury records that container id stopped.
func (t *tombstones) bury(id string, now time.Time) {
	if id == "" {
		return
	}
	if t.dead == nil {
		t.dead = make(map[string]time.Time)
	}
	t.dead[id] = now
}

// revive forgets that container id stopped or was disconnected: it
// started again.
func (t *tombstones) revive(id string) {
	delete(t.dead, id)
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

// reset forgets everything.
func (t *tombstones) reset() {
	clear(t.dead)
	clear(t.detached)
}

// apply removes from a fresh listing, in place, what the tombstones say is
// gone, after forgetting the tombstones the listing confirms or that
// expired. It returns the filtered listing, and when the oldest tombstone
// that hid something expires (zero if none did): a re-list then lets the
// listing win if it still disagrees.
func (t *tombstones) apply(cs []resolver.Container, now time.Time) ([]resolver.Container, time.Time) {
	listed := make(map[string]int, len(cs))
	for i, c := range cs {
		listed[c.ID] = i
	}
	var expiry time.Time
	keep := func(at time.Time) bool {
		if now.Sub(at) >= tombstoneTTL {
			return false
		}
		if exp := at.Add(tombstoneTTL); expiry.IsZero() || exp.Before(expiry) {
			expiry = exp
		}
		return true
	}
	for id, at := range t.dead {
		if _, ok := listed[id]; !ok || !keep(at) {
			delete(t.dead, id)
		}
	}
	for a, at := range t.detached {
		i, ok := listed[a.container]
		if !ok || !slices.ContainsFunc(cs[i].Networks, func(n resolver.Network) bool { return n.ID == a.network }) || !keep(at) {
			delete(t.detached, a)
		}
	}
	if len(t.dead) == 0 && len(t.detached) == 0 {
		return cs, time.Time{}
	}
	out := cs[:0]
	for _, c := range cs {
		if _, ok := t.dead[c.ID]; ok {
			continue
		}
		c.Networks = nilIfEmpty(slices.DeleteFunc(c.Networks, func(n resolver.Network) bool {
			_, ok := t.detached[attachment{c.ID, n.ID}]
			return ok
		}))
		out = append(out, c)
	}
	return nilIfEmpty(out), expiry
}
