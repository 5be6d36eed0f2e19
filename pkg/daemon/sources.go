package daemon

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// sourceState is what the run loop knows of one source: its latest
// snapshot and connection state. Only the run loop uses it.
type sourceState struct {
	src    source.Source
	name   string
	host   string // for the status (Options.SourceHosts)
	remote bool   // Options.Engines[name].Remote: lost beyond the grace, its containers are dropped

	snap      *source.Snapshot // latest; nil until it answered, and once it ended
	connected bool
	err       string    // Update.Err
	streamErr string    // Update.StreamErr
	engine    string    // Update.Engine, the last one not empty
	synced    bool      // a snapshot of it has been applied
	failed    bool      // it has been unreachable at least once (its first attempt, for readiness)
	lost      time.Time // when it became unreachable; zero while it answers
	dropped   bool      // remote, and lost for longer than the grace: its containers are out of the merged view
	ended     bool      // its Run returned while the daemon ran
}

// settled reports whether the readiness no longer waits for the source:
// once it has synced; a remote engine also once it has failed to answer,
// since a lost host must not hold back the ambassador of this one.
func (s *sourceState) settled() bool {
	return s.synced || (s.remote && s.failed)
}

// sourceUpdate is an update on its way from a source's forwarder to the
// run loop: index says which source it comes from, whatever the update's
// own tag says; ended, that the source's mailbox closed.
type sourceUpdate struct {
	source.Update
	index int
	ended bool
}

// runSource runs one source until ctx is cancelled. A source returns an
// error only when it cannot start at all: the daemon goes on serving what
// it can, and says so.
func (d *Daemon) runSource(ctx context.Context, wg *sync.WaitGroup, s *sourceState) {
	defer wg.Done()
	if err := s.src.Run(ctx); err != nil {
		d.log.Error("cannot follow the engine", zap.String("source", s.name), errorField(err))
	}
}

// forward hands the updates of the source at index to the run loop, one
// at a time, then that the source ended. It takes one update from the
// source's latest-wins mailbox only when the loop has taken the previous
// one, so a busy loop makes the source merge its updates (their Gone
// included) rather than queue them.
func (d *Daemon) forward(ctx context.Context, wg *sync.WaitGroup, index int, src source.Source, out chan<- sourceUpdate) {
	defer wg.Done()
	in := src.Updates()
	for {
		var su sourceUpdate
		select {
		case <-ctx.Done():
			return
		case u, ok := <-in:
			su = sourceUpdate{Update: u, index: index, ended: !ok}
		}
		select {
		case <-ctx.Done():
			return
		case out <- su:
		}
		if su.ended {
			return
		}
	}
}

// update applies one update of the source at index.
func (d *Daemon) update(ctx context.Context, index int, u source.Update) {
	if len(u.Gone) > 0 {
		// First, before anything else: new connections must not reach an
		// address the engine may already have handed to another
		// container.
		d.table.forget(u.Gone)
	}
	s := d.sources[index]
	s.connected = u.Connected
	s.err, s.streamErr = "", ""
	if u.Err != nil {
		s.err = u.Err.Error()
	}
	if u.StreamErr != nil {
		s.streamErr = u.StreamErr.Error()
	}
	if u.Engine != "" {
		s.engine = u.Engine
	}
	// Not u.Stats: the counters are read live when they are served.
	d.metrics.SourceState(s.name, u.Connected, u.StreamErr == nil)
	d.followGrace(s, u.Connected)
	if u.Snapshot == nil {
		// The engine has never answered (the source logs why): keep
		// serving the routes that need no engine. A remote engine that
		// failed its first attempt no longer holds back the routes
		// without a backend, which resolving again lets listen.
		if err := d.resolve(ctx); err != nil {
			d.log.Error("cannot serve route", errorField(err))
		}
		return
	}
	s.snap = u.Snapshot
	s.synced = true
	d.remerge(ctx)
	if !u.EventTime.IsZero() {
		d.metrics.Applied(time.Since(u.EventTime))
	}
	if len(d.routes) == 0 && !d.noRoutes {
		d.log.Warn("no routes yet: link a container, label the ambassador ambassador.target=NAME, or pass --route")
	}
	d.noRoutes = len(d.routes) == 0
}

// sourceEnded forgets what the source at index knew: its Run returned, so
// nothing follows its containers any more, and their addresses may go to
// others. The other sources' containers are untouched. A source that ends
// because the daemon is stopping changes nothing: its routes drain.
func (d *Daemon) sourceEnded(ctx context.Context, index int) {
	if ctx.Err() != nil {
		return
	}
	s := d.sources[index]
	s.ended, s.connected = true, false
	d.metrics.SourceState(s.name, false, false)
	// Whatever it knew is forgotten below: there is nothing left to drop.
	if s.dropped {
		d.metrics.SourceDropped(s.name, false)
	}
	s.lost, s.dropped = time.Time{}, false
	d.armGrace()
	if s.snap == nil {
		d.log.Warn("source stopped", zap.String("source", s.name))
		d.publish()
		return
	}
	ids := make([]string, len(s.snap.Containers))
	for i, c := range s.snap.Containers {
		ids[i] = c.ID
	}
	d.log.Warn("source stopped; its containers are forgotten", zap.String("source", s.name), zap.Int("containers", len(ids)))
	d.table.forget(ids)
	s.snap = nil
	d.remerge(ctx)
}

// remerge resolves the routes again from the sources' merged snapshots,
// and drops the make-before-break fallbacks that no longer run.
func (d *Daemon) remerge(ctx context.Context) {
	d.snap = merge(d.sources)
	if err := d.resolve(ctx); err != nil {
		d.log.Error("cannot serve route", errorField(err))
	}
	d.table.pruneFallbacks(usable(d.snap))
}

// merge returns the view the resolver sees of every source: the
// containers of all of them, sorted by name (then by source, in order);
// Self from the first local source that found it (the ambassador runs on
// its host; a remote engine's container that looked like it is not it). A
// source whose containers are
// dropped (a remote engine lost beyond its grace) counts as one that has
// not answered. It returns nil while no source has a snapshot (no engine
// has answered yet), and the one snapshot unchanged when only one source
// has.
func merge(sources []*sourceState) *source.Snapshot {
	var snaps []*source.Snapshot
	var self *source.Container
	for _, s := range sources {
		if s.snap != nil && !s.dropped {
			snaps = append(snaps, s.snap)
			if self == nil && !s.remote {
				self = s.snap.Self
			}
		}
	}
	switch {
	case len(snaps) == 0:
		return nil
	case len(snaps) == 1 && snaps[0].Self == self:
		return snaps[0]
	}
	out := &source.Snapshot{Self: self}
	for _, snap := range snaps {
		out.Containers = append(out.Containers, snap.Containers...)
	}
	slices.SortStableFunc(out.Containers, func(a, b source.Container) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// settled reports whether every source has answered once, or, for a
// remote one, failed to: until then, routes without a backend wait rather
// than listen, and the daemon is not ready.
func (d *Daemon) settled() bool {
	for _, s := range d.sources {
		if !s.settled() {
			return false
		}
	}
	return true
}

// usable returns whether a backend may still take new connections as a
// make-before-break fallback: static backends always, containers while they
// run (a paused one takes none) in the merged view, which holds no
// container of a dropped engine; with none (snap nil), static backends
// only.
func usable(snap *source.Snapshot) func(proxy.Backend) bool {
	running := map[string]bool{}
	if snap != nil {
		for _, c := range snap.Containers {
			if c.State == "running" {
				running[c.ID] = true
			}
		}
	}
	return func(b proxy.Backend) bool { return b.ID == "" || running[b.ID] }
}

// notSynced says which sources the status waits for.
func notSynced(sources []*sourceState) []string {
	var out []string
	for _, s := range sources {
		if !s.settled() {
			out = append(out, "waiting for the first sync with the "+s.name+" engine")
		}
	}
	return out
}
