package daemon

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// defaultEngineGrace is Options.EngineGrace's zero value: long enough for
// a missed ping or a restarting engine, short enough that new connections
// stop trying a lost host within seconds.
const defaultEngineGrace = 5 * time.Second

func (d *Daemon) engineGrace() time.Duration {
	if d.opts.EngineGrace > 0 {
		return d.opts.EngineGrace
	}
	return defaultEngineGrace
}

// followGrace records whether the source's engine answers. One that
// becomes unreachable is lost from now on: if it is remote, its grace
// starts, at the end of which graceOver drops its containers. One that
// answers again is no longer lost, and a dropped one is back: the update
// that says so carries its fresh snapshot, which the caller merges.
//
// Why only remote engines: a local engine that restarts (with live-restore)
// leaves its containers serving, so its last snapshot keeps being served
// until it answers, as it always was; a remote engine that does not answer
// is a lost host or a partition, whose containers new connections should
// stop trying once the grace is over.
func (d *Daemon) followGrace(s *sourceState, connected bool) {
	switch {
	case connected:
		if s.dropped {
			d.log.Info("engine answers again; its containers are candidates again", zap.String("source", s.name))
			d.metrics.SourceDropped(s.name, false)
		}
		s.lost, s.dropped = time.Time{}, false
	case s.lost.IsZero():
		s.lost, s.failed = time.Now(), true
		if s.remote && s.snap != nil {
			d.log.Warn("remote engine unreachable; its containers stay candidates for the engine grace",
				zap.String("source", s.name), zap.Duration("grace", d.engineGrace()))
		}
	}
	d.armGrace()
}

// armGrace sets the grace timer to the earliest end of a grace that runs:
// that of a remote engine lost and not yet dropped. With none, it stops
// the timer.
func (d *Daemon) armGrace() {
	var next time.Time
	for _, s := range d.sources {
		if !s.remote || s.lost.IsZero() || s.dropped {
			continue
		}
		if end := s.lost.Add(d.engineGrace()); next.IsZero() || end.Before(next) {
			next = end
		}
	}
	if next.IsZero() {
		d.grace.Stop()
		return
	}
	d.grace.Reset(time.Until(next))
}

// graceOver drops the containers of every remote engine lost for the
// grace or longer: they leave the merged view, and the routes are resolved
// again without them. Established connections to them are left alone
// (the engine may be lost while its containers serve); new ones go to the
// other backends. Then it arms the timer for the next grace to end.
func (d *Daemon) graceOver(ctx context.Context) {
	now := time.Now()
	var dropped bool
	for _, s := range d.sources {
		if !s.remote || s.lost.IsZero() || s.dropped || now.Before(s.lost.Add(d.engineGrace())) {
			continue
		}
		s.dropped, dropped = true, true
		n := 0
		if s.snap != nil {
			n = len(s.snap.Containers)
		}
		d.log.Warn("remote engine unreachable beyond its grace; its containers are no longer candidates until it answers",
			zap.String("source", s.name), zap.Duration("grace", d.engineGrace()), zap.Int("containers", n))
		d.metrics.SourceDropped(s.name, true)
	}
	if dropped {
		d.remerge(ctx)
	}
	d.armGrace()
}
