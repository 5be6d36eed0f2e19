package watcher

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/ambassadord/ambassadord/pkg/source"
)

func TestTombstones(t *testing.T) {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := id64("a"), id64("b")
	n1 := source.Network{Name: "n1", ID: "i1", IP: "10.0.0.2"}
	n2 := source.Network{Name: "n2", ID: "i2", IP: "10.1.0.2"}
	listing := func() []source.Container {
		return []source.Container{
			{ID: a, Name: "a", Networks: []source.Network{n1, n2}},
			{ID: b, Name: "b", Networks: []source.Network{n1}},
		}
	}
	for _, tt := range []struct {
		name       string
		setup      func(*tombstones)
		listing    []source.Container
		now        time.Time
		want       []source.Container
		wantExpiry time.Time
		wantLeft   int // tombstones left
	}{
		{
			name:    "none",
			setup:   func(*tombstones) {},
			listing: listing(),
			now:     t0,
			want:    listing(),
		},
		{
			name:       "dead but still listed: hidden",
			setup:      func(g *tombstones) { g.bury(a, t0) },
			listing:    listing(),
			now:        t0.Add(time.Second),
			want:       listing()[1:],
			wantExpiry: t0.Add(tombstoneTTL),
			wantLeft:   1,
		},
		{
			name:    "dead and no longer listed: confirmed",
			setup:   func(g *tombstones) { g.bury(a, t0) },
			listing: listing()[1:],
			now:     t0.Add(time.Second),
			want:    listing()[1:],
		},
		{
			name:    "dead too long ago: the listing wins",
			setup:   func(g *tombstones) { g.bury(a, t0) },
			listing: listing(),
			now:     t0.Add(tombstoneTTL),
			want:    listing(),
		},
		{
			name:    "dead, then started",
			setup:   func(g *tombstones) { g.bury(a, t0); g.detach(a, "i1", t0); g.revive(a) },
			listing: listing(),
			now:     t0,
			want:    listing(),
		},
		{
			name:       "detached but still listed: hidden",
			setup:      func(g *tombstones) { g.detach(a, "i1", t0); g.detach(b, "i1", t0.Add(time.Second)) },
			listing:    listing(),
			now:        t0.Add(time.Second),
			want:       []source.Container{{ID: a, Name: "a", Networks: []source.Network{n2}}, {ID: b, Name: "b"}},
			wantExpiry: t0.Add(tombstoneTTL),
			wantLeft:   2,
		},
		{
			name:    "detached and confirmed",
			setup:   func(g *tombstones) { g.detach(a, "i2", t0) },
			listing: []source.Container{{ID: a, Name: "a", Networks: []source.Network{n1}}},
			now:     t0,
			want:    []source.Container{{ID: a, Name: "a", Networks: []source.Network{n1}}},
		},
		{
			name:    "detached, then connected",
			setup:   func(g *tombstones) { g.detach(a, "i2", t0); g.reattach(a, "i2") },
			listing: listing(),
			now:     t0,
			want:    listing(),
		},
		{
			name:    "empty IDs are ignored",
			setup:   func(g *tombstones) { g.bury("", t0); g.detach("", "i1", t0); g.detach(a, "", t0) },
			listing: listing(),
			now:     t0,
			want:    listing(),
		},
		{
			name:    "reset",
			setup:   func(g *tombstones) { g.bury(a, t0); g.detach(b, "i1", t0); g.reset(false) },
			listing: listing(),
			now:     t0,
			want:    listing(),
		},
		{
			name:       "everything hidden",
			setup:      func(g *tombstones) { g.bury(a, t0); g.bury(b, t0.Add(time.Second)) },
			listing:    listing(),
			now:        t0.Add(2 * time.Second),
			want:       nil,
			wantExpiry: t0.Add(tombstoneTTL),
			wantLeft:   2,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var g tombstones
			tt.setup(&g)
			got, expiry := g.apply(tt.listing, tt.now)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.wantExpiry, expiry)
			assert.Equal(t, tt.wantLeft, len(g.dead)+len(g.detached))
		})
	}
}

func TestStoppingMarks(t *testing.T) {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := id64("a"), id64("b")
	listing := func(stateA string) []source.Container {
		return []source.Container{{ID: a, Name: "a", State: stateA}, {ID: b, Name: "b", State: "running"}}
	}
	for _, tt := range []struct {
		name       string
		setup      func(*tombstones)
		listing    []source.Container
		now        time.Time
		want       []source.Container
		wantExpiry time.Time
		wantLeft   int // marks left
	}{
		{
			name:       "signalled and still running: stopping",
			setup:      func(g *tombstones) { g.condemn(a, t0) },
			listing:    listing("running"),
			now:        t0.Add(10 * time.Second),
			want:       listing(source.StateStopping),
			wantExpiry: t0.Add(stoppingTTL),
			wantLeft:   1,
		},
		{
			name:     "signalled and paused: paused says enough",
			setup:    func(g *tombstones) { g.condemn(a, t0) },
			listing:  listing("paused"),
			now:      t0,
			want:     listing("paused"),
			wantLeft: 1,
		},
		{
			name:    "signalled and no longer listed: confirmed",
			setup:   func(g *tombstones) { g.condemn(a, t0) },
			listing: listing("running")[1:],
			now:     t0,
			want:    listing("running")[1:],
		},
		{
			name:    "signalled too long ago: running again",
			setup:   func(g *tombstones) { g.condemn(a, t0) },
			listing: listing("running"),
			now:     t0.Add(stoppingTTL),
			want:    listing("running"),
		},
		{
			name:    "signalled, then started",
			setup:   func(g *tombstones) { g.condemn(a, t0); g.revive(a) },
			listing: listing("running"),
			now:     t0,
			want:    listing("running"),
		},
		{
			name:       "signalled, then dead: hidden",
			setup:      func(g *tombstones) { g.condemn(a, t0); g.bury(a, t0.Add(time.Second)) },
			listing:    listing("running"),
			now:        t0.Add(time.Second),
			want:       listing("running")[1:],
			wantExpiry: t0.Add(time.Second + tombstoneTTL),
		},
		{
			name:       "a new session keeps the mark",
			setup:      func(g *tombstones) { g.condemn(a, t0); g.reset(false) },
			listing:    listing("running"),
			now:        t0,
			want:       listing(source.StateStopping),
			wantExpiry: t0.Add(stoppingTTL),
			wantLeft:   1,
		},
		{
			// The engine restarted: its shutdown signalled a, its
			// start started it again (a restart policy) before the
			// new session subscribed.
			name:    "a new session after an outage forgets the mark",
			setup:   func(g *tombstones) { g.condemn(a, t0); g.reset(true) },
			listing: listing("running"),
			now:     t0,
			want:    listing("running"),
		},
		{
			name:       "the earliest expiry wins",
			setup:      func(g *tombstones) { g.condemn(a, t0); g.bury(b, t0.Add(time.Second)) },
			listing:    listing("running"),
			now:        t0.Add(time.Second),
			want:       []source.Container{{ID: a, Name: "a", State: source.StateStopping}},
			wantExpiry: t0.Add(time.Second + tombstoneTTL),
			wantLeft:   1,
		},
		{
			name:    "empty ID ignored",
			setup:   func(g *tombstones) { g.condemn("", t0) },
			listing: listing("running"),
			now:     t0,
			want:    listing("running"),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var g tombstones
			tt.setup(&g)
			got, expiry := g.apply(tt.listing, tt.now)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.wantExpiry, expiry)
			assert.Equal(t, tt.wantLeft, len(g.stopping))
		})
	}
}
