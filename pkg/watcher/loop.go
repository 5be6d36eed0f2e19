package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// errStreamEnded marks a session that ended because its event stream did,
// while the engine may well still answer: reconnecting is routine, not an
// outage.
var errStreamEnded = errors.New("event stream ended")

type connState int

const (
	stateNew          connState = iota // nothing published yet
	stateConnected                     // the last update said Connected
	stateDisconnected                  // the last update said not Connected
)

// loop is the state of Run's goroutine; nothing else touches it.
type loop struct {
	w    *Watcher
	log  *zap.Logger
	cli  Client
	out  chan source.Update // the mailbox; this loop is its only writer
	host string             // the engine's address, for Explain

	snap  *source.Snapshot // the current view, as last published
	state connState
	err   error     // the published connection error, while disconnected
	stats *counters // the Watcher's; this loop is their only writer

	// eventAt is when the oldest relevant event not yet reflected in a
	// published update arrived; zero when there is none (Update.EventTime).
	eventAt time.Time

	sessions int // sessions that reached the engine and listed

	graves tombstones // what events said is gone while listings may still show it

	selfLogged bool   // the outcome of the self match has been logged
	selfID     string // the own container's ID as last logged; "" for none

	lastStreamErr string // the last unexpected stream error logged at Warn

	// streamErr is why the engine, which answers, has no event stream
	// for the watcher (Update.StreamErr); nil once a subscription
	// answers.
	streamErr error
	// stale is set when what the last update said about the event
	// stream is no longer true: the next listing publishes even if it
	// finds nothing new.
	stale bool
	// silenceLogged is set once a silent stream was logged at Warn, and
	// cleared when a stream delivers something.
	silenceLogged bool

	swarmErr   string    // the last Swarm listing's error, as logged; "" once one succeeds
	role       swarmRole // the engine's Swarm role, as its last ping (or info) said
	roleByInfo bool      // its pings do not say: infoRole asks
	infoAsked  bool      // infoRole asked in this session, or may not (refused)
	infoDenied bool      // the engine (a socket proxy) refused /info: not asked again
	// busySince is when the current spell of listings finding Swarm
	// tasks in transition began, or their view last changed; zero while
	// none is.
	busySince     time.Time
	engine        engineInfo      // what the engine said it is, at the session's start (podman.go)
	noHealthcheck map[string]bool // Podman: listed containers known to have no healthcheck
}

// ping pings the engine with the watchdog's timeout.
func (l *loop) ping(ctx context.Context, opts client.PingOptions) error {
	ctx, cancel := context.WithTimeout(ctx, l.w.pingTimeout())
	defer cancel()
	res, err := l.cli.Ping(ctx, opts)
	if err != nil {
		return fmt.Errorf("ping docker engine: %w", err)
	}
	l.noteRole(res)
	return nil
}

// event handles one event and reports whether it calls for a re-list. Only
// the event's type, action and actor ID are trusted: a container's labels
// are copied into the actor's attributes and can overwrite any of them.
// The one exception, a kill event's signal, can only mislead about the
// container's own traffic (see below).
func (l *loop) event(m events.Message) bool {
	l.stats.events.Add(1)
	if !relevant(m) {
		return false
	}
	l.received(time.Now())
	switch m.Type {
	case events.ContainerEventType:
		switch m.Action {
		case events.ActionDie, events.ActionStop, events.ActionDestroy, actionRemove:
			// Not pause: a paused container keeps its address and
			// its established connections.
			l.graves.bury(m.Actor.ID, time.Now())
			l.removeContainer(m.Actor.ID, m.Action)
		case events.ActionKill:
			// docker stop sends the stop signal, and die comes only
			// once the app has drained, seconds later; meanwhile it
			// refuses new connections, or resets those it had not
			// accepted. A stop signal takes it out of new connections
			// at once; its established ones are the app's to finish
			// until die. Other signals (HUP, USR1, WINCH...) leave it
			// running.
			//
			// The signal is an attribute, which a label named
			// "signal" on this container overwrites. That can only
			// concern this container's own traffic (the actor ID is
			// trusted): make its stop look like a SIGHUP (it then
			// keeps new connections until it dies, as without this
			// fast path), or make a harmless signal take it out of
			// new connections for stoppingTTL.
			if sig := m.Actor.Attributes["signal"]; isStopSignal(sig) {
				l.graves.condemn(m.Actor.ID, time.Now())
				l.stopContainer(m.Actor.ID, sig)
			}
		case events.ActionStart, events.ActionRestart:
			// Not unpause: docker stop and docker kill resume a
			// paused container to deliver the signal, and the
			// engine reports that unpause after the kill.
			l.graves.revive(m.Actor.ID)
		}
	case events.NetworkEventType:
		switch m.Action {
		case events.ActionDisconnect:
			// For network events the actor is the network, and the
			// container is only in the attributes: a hint, which
			// container labels cannot forge (they appear in container
			// events only). The fast path uses it only if that
			// container is attached to that network.
			container := m.Actor.Attributes["container"]
			l.graves.detach(container, m.Actor.ID, time.Now())
			l.removeAttachment(container, m.Actor.ID)
		case events.ActionConnect:
			l.graves.reattach(m.Actor.Attributes["container"], m.Actor.ID)
		}
	}
	return true
}

// relevant reports whether an event can change a snapshot, and so calls for
// a re-list. Only its type and action are looked at.
func relevant(m events.Message) bool {
	switch m.Type {
	case events.ContainerEventType:
		switch m.Action {
		case events.ActionDie, events.ActionStop, events.ActionDestroy, actionRemove,
			events.ActionStart, events.ActionRestart,
			events.ActionPause, events.ActionUnPause, events.ActionRename, events.ActionKill:
			return true
		}
		return strings.HasPrefix(string(m.Action), string(events.ActionHealthStatus))
	case events.NetworkEventType:
		return m.Action == events.ActionDisconnect || m.Action == events.ActionConnect
	case events.ServiceEventType, events.NodeEventType:
		return m.Action == events.ActionCreate || m.Action == events.ActionUpdate || m.Action == events.ActionRemove
	}
	return false
}

// received notes that an event arrived at t: the next update published
// carries the time of the oldest such event.
func (l *loop) received(t time.Time) {
	if l.eventAt.IsZero() {
		l.eventAt = t
	}
}

// removeContainer is the fast path for a container that stopped: it
// publishes the current view without it at once, without waiting for the
// re-list.
func (l *loop) removeContainer(id string, action events.Action) {
	next, ok := withoutContainer(l.snap, id)
	if !ok {
		return
	}
	l.log.Debug("container gone", zap.String("container", id), zap.String("event", string(action)))
	l.snap = next
	l.publish([]string{id})
}

// stopContainer is the fast path for a container sent a stop signal: it
// publishes the current view with the container stopping at once. The
// container is not named in Gone: its established connections are kept.
func (l *loop) stopContainer(id, signal string) {
	next, ok := withStopping(l.snap, id)
	if !ok {
		return
	}
	l.log.Debug("container stopping; no new connections", zap.String("container", id),
		zap.String("event", string(events.ActionKill)), clipped("signal", signal))
	l.snap = next
	l.publish(nil)
}

// isStopSignal reports whether a kill event's signal is one that ends a
// process unless it handles it otherwise: TERM, KILL, INT or QUIT, the
// usual stop signals. Engines report it as a decimal number (20.10 and
// later alike format it with strconv.Itoa); names, with or without "SIG",
// are accepted too.
func isStopSignal(signal string) bool {
	switch strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(signal)), "SIG") {
	case "15", "TERM", "9", "KILL", "2", "INT", "3", "QUIT":
		return true
	}
	return false
}

// removeAttachment is the fast path for a container disconnected from a
// network: it publishes the current view without that attachment at once.
func (l *loop) removeAttachment(containerID, networkID string) {
	next, ok := withoutAttachment(l.snap, containerID, networkID)
	if !ok {
		return
	}
	l.log.Debug("container disconnected", clipped("container", containerID), zap.String("network", networkID),
		zap.String("event", string(events.ActionDisconnect)))
	l.snap = next
	l.publish([]string{containerID})
}

// list lists the running containers (paused and restarting ones included:
// without All, the engine lists every container whose process exists), and
// on a Swarm manager the running tasks of services in their containers'
// place, leaves out what the tombstones say is gone, and inspects the
// ambassador's own container for its links. It also returns when to list
// again: when a tombstone that hid something expires, or soon while Swarm
// tasks are in transition; or the zero time.
func (l *loop) list(ctx context.Context) (*source.Snapshot, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var sw <-chan swarmListing
	if l.role == swarmManager {
		sw = l.fetchSwarm(ctx)
	}
	res, err := l.cli.ContainerList(ctx, l.listOptions())
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("list containers: %w", err)
	}
	items := res.Items
	if l.engine.podman() {
		items = podmanAlive(items)
	}
	cs := convertContainers(items, l.w.Name())
	if sw == nil && l.roleByInfo && !l.infoAsked && swarmHint(cs) {
		// An engine that does not say its Swarm role in its pings
		// runs Swarm tasks: asked once a session, and at resyncs.
		l.infoAsked = true
		if l.infoRole(ctx); l.role == swarmManager {
			sw = l.fetchSwarm(ctx)
		}
	}
	var poll time.Time
	if sw != nil {
		// The containers are listed: an engine that answers, which
		// may refuse the Swarm listings (a socket proxy that allows
		// only the container reads) or fail them.
		if lst := <-sw; !l.swarmFailed(lst.err) {
			var busy bool
			cs, busy = convertTasks(lst.services, lst.tasks, lst.nodes, cs, l.w.Name())
			poll = l.pollSwarm(busy, cs)
		} else {
			l.busySince = time.Time{}
		}
	}
	cs, expiry := l.graves.apply(cs, time.Now())
	if l.engine.podman() {
		if err := l.podmanHealth(ctx, cs); err != nil {
			return nil, time.Time{}, err
		}
	}
	if !poll.IsZero() && (expiry.IsZero() || poll.Before(expiry)) {
		expiry = poll
	}
	snap := &source.Snapshot{Containers: cs}
	i := l.findSelf(cs)
	if i < 0 {
		return snap, expiry, nil
	}
	id := cs[i].ID
	ins, err := l.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	if hc := ins.Container.HostConfig; hc != nil {
		cs[i].Links = parseLinks(hc.Links)
	}
	self := cs[i]
	snap.Self = &self
	return snap, expiry, nil
}

// findSelf returns the index of the ambassador's own container in cs, or
// -1, and logs the outcome when it changes.
func (l *loop) findSelf(cs []source.Container) int {
	if len(l.w.SelfIDs) == 0 && l.w.Spec != nil {
		// An engine given by --engine is not expected to run the
		// ambassador: its absence there is no news.
		return -1
	}
	i := matchSelf(l.w.SelfIDs, cs)
	id := ""
	if i >= 0 {
		id = cs[i].ID
	}
	if l.selfLogged && id == l.selfID {
		return i
	}
	l.selfLogged, l.selfID = true, id
	if i < 0 {
		l.log.Info("own container not found; running without links and own labels",
			zap.Strings("candidates", l.w.SelfIDs))
	} else {
		l.log.Info("own container found", zap.String("container", id), clipped("name", cs[i].Name))
	}
	return i
}

// update makes snap the current view after a listing, and publishes it if
// it differs from the last update or the engine was not reachable before.
// Containers that vanished or lost an attachment since the current view are
// named in Gone: the fast path may have missed them (events dropped, or
// lost with the stream).
func (l *loop) update(snap *source.Snapshot) {
	switch l.state {
	case stateNew:
		l.log.Info("connected to docker engine", zap.Int("containers", len(snap.Containers)), zap.String("engine", l.engine.String()))
	case stateDisconnected:
		l.log.Info("docker engine reachable again", zap.Int("containers", len(snap.Containers)), zap.String("engine", l.engine.String()))
	case stateConnected:
		if equalSnapshots(l.snap, snap) && !l.stale {
			// The events since the last update changed nothing: a
			// later update is not theirs to time.
			l.eventAt = time.Time{}
			return
		}
	}
	gone := goneIDs(l.snap, snap)
	l.snap, l.state, l.err = snap, stateConnected, nil
	l.publish(gone)
}

// ended handles the end of a session: a stream that ended is routine, an
// engine that could not be reached is published once per outage.
func (l *loop) ended(err error) {
	// The updates that follow (an outage, the next session's listing)
	// are not about the events this session received.
	l.eventAt = time.Time{}
	if errors.Is(err, errStreamEnded) {
		msg := err.Error()
		switch {
		case expectedStreamEnd(err):
			l.lastStreamErr = ""
			l.log.Debug("event stream ended; reconnecting", errField(err))
		case msg != l.lastStreamErr:
			l.lastStreamErr = msg
			l.log.Warn("event stream failed; reconnecting", errField(err))
		default:
			l.log.Debug("event stream failed again; reconnecting", errField(err))
		}
		return
	}
	err = l.w.explain(err, l.host)
	if l.state == stateDisconnected {
		if l.err != nil && err.Error() == l.err.Error() {
			l.log.Debug("docker engine still unreachable", errField(err))
			return
		}
		// Another reason (the engine is back, now with a certificate we
		// refuse): the status says the current one.
		l.log.Warn("docker engine still unreachable, for another reason", errField(err))
		l.err = err
		l.publish(nil)
		return
	}
	l.log.Warn("docker engine unreachable; serving last known routes", errField(err))
	l.state, l.err = stateDisconnected, err
	// Whether the next session's subscription answers is its own news.
	l.streamErr = nil
	l.publish(nil)
}

// expectedStreamEnd reports whether a stream ended the way streams do when
// an engine restarts or a proxy in front of it cuts long requests.
func expectedStreamEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

// publish puts an update built from the current state in the mailbox. If the
// consumer has not taken the previous update yet, the new one replaces it
// and inherits its Gone: an ID in Gone must reach the consumer even if the
// snapshot that dropped it does not.
func (l *loop) publish(gone []string) {
	u := source.Update{
		Source:    l.w.Name(),
		Snapshot:  l.snap,
		Connected: l.state == stateConnected,
		Err:       l.err,
		Gone:      gone,
		Stats:     l.stats.load(),
		EventTime: l.eventAt,
		Engine:    l.engine.String(),
	}
	if u.Connected {
		u.StreamErr = l.streamErr
	}
	l.eventAt = time.Time{}
	l.stale = false
	select {
	case old := <-l.out:
		u.Gone = mergeIDs(old.Gone, u.Gone)
		if !old.EventTime.IsZero() {
			u.EventTime = old.EventTime // older than any event since
		}
	default:
	}
	l.out <- u // never blocks: the mailbox is empty and this loop is its only writer
}

// mergeIDs returns a new slice with the IDs of a followed by those of b that
// are not in a.
func mergeIDs(a, b []string) []string {
	if len(a) == 0 {
		return b
	}
	out := slices.Clone(a)
	for _, id := range b {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// debouncer coalesces a burst of events into one re-list: its timer fires
// once the stream has been quiet for quiet, and at the latest limit after
// the burst's first event, so an endless stream still yields a re-list every
// limit. An event that comes when there was no re-list for quiet fires it at
// once, and a trailing re-list follows after quiet (later if more events
// come, as for any burst): a container that starts alone (the common
// rewire) is listed without waiting, which took 10 ms out of the 15-23 ms
// from a start event to the rewire, while the trailing re-list covers an
// engine whose listing lags its events (20.10 reports a pause before the
// view its listing reads shows it).
type debouncer struct {
	quiet, limit time.Duration
	timer        *time.Timer
	pending      bool      // the timer is set for a burst
	leading      bool      // ... to fire at once, with a trailing re-list to follow
	first        time.Time // the burst's first event, while pending
	last         time.Time // when the timer last fired
}

func newDebouncer(quiet, limit time.Duration) *debouncer {
	t := time.NewTimer(time.Hour)
	t.Stop() // since Go 1.23, no stale tick can be received after Stop
	// Made right after a listing, which counts as the last re-list.
	return &debouncer{quiet: quiet, limit: limit, timer: t, last: time.Now()}
}

// kick records an event and sets the timer.
func (d *debouncer) kick() {
	now := time.Now()
	if !d.pending {
		d.pending, d.first = true, now
		if now.Sub(d.last) >= d.quiet {
			d.leading = true
			d.timer.Reset(0)
			return
		}
	}
	if d.leading {
		return // the leading re-list comes before the loop reads another event
	}
	wait := min(d.quiet, d.limit-now.Sub(d.first))
	d.timer.Reset(max(wait, 0))
}

// fired records that the timer fired, for the loop to re-list; after a
// leading re-list, it sets the trailing one.
func (d *debouncer) fired() {
	now := time.Now()
	d.last = now
	if d.leading {
		d.leading, d.first = false, now
		d.timer.Reset(d.quiet)
		return
	}
	d.pending = false
}

// reader forwards one event stream to the loop. It never blocks on the loop
// (the engine drops the events of a subscriber that stops reading): when the
// buffer is full it counts the event as dropped and raises overflow, and the
// loop re-lists instead of replaying them.
type reader struct {
	events   chan events.Message // buffered
	overflow chan struct{}       // capacity 1: events were dropped
	dropped  atomic.Uint64       // events dropped since the loop last looked
	done     chan error          // capacity 1: why the stream ended
}

// run reads stream until it ends or ctx is cancelled.
func (r *reader) run(ctx context.Context, stream client.EventsResult) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-stream.Messages:
			if !ok {
				r.done <- io.EOF
				return
			}
			select {
			case r.events <- m:
			default:
				r.dropped.Add(1)
				select {
				case r.overflow <- struct{}{}:
				default:
				}
			}
		case err, ok := <-stream.Err:
			if !ok || err == nil {
				err = io.EOF
			}
			r.done <- err
			return
		}
	}
}

// errField logs an error as a plain string, as cmd/ambassadord does: zap's
// default adds a verbose variant for wrapped errors.
func errField(err error) zap.Field {
	return zap.String("error", err.Error())
}

// maxLogValue bounds what the watcher logs of a value that a container's
// creator sets: an event's attributes, which the container's labels
// overwrite, and names. A label may hold megabytes, and every log line that
// copied it whole would carry them. 64 bytes hold a full container ID.
const maxLogValue = 64

// clipped logs a value a container's creator sets, clipped by clip.
func clipped(key, value string) zap.Field {
	return zap.String(key, clip(value))
}

// clip returns s if it has at most maxLogValue bytes, else its first
// maxLogValue bytes, cut back to the start of a rune so that no character
// is split, followed by how long s was.
func clip(s string) string {
	if len(s) <= maxLogValue {
		return s
	}
	n := maxLogValue
	// s[n] is the first byte left out: if it continues a rune, that
	// rune starts before n and is left out whole. A rune has at most 4
	// bytes, so at most 3 are stepped back over, valid UTF-8 or not.
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
}
