package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// Stop stops a container like `docker stop -t timeout`: SIGTERM, then
// SIGKILL after timeout. It returns once the container has stopped.
func (e *Engine) Stop(ctx context.Context, id string, timeout time.Duration) error {
	secs := int(timeout.Round(time.Second) / time.Second)
	if _, err := e.Client.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	return nil
}

// Restart starts a stopped container again, like `docker start`.
func (e *Engine) Restart(ctx context.Context, id string) error {
	if _, err := e.Client.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// Rename renames a container, like `docker rename`; newName is a full
// name (see Name).
func (e *Engine) Rename(ctx context.Context, id, newName string) error {
	if _, err := e.Client.ContainerRename(ctx, id, client.ContainerRenameOptions{NewName: newName}); err != nil {
		return fmt.Errorf("rename container %s to %s: %w", id, newName, err)
	}
	return nil
}

// EventLog records the engine's events about this run's containers, and
// network events, from the moment Events returned, so that a test can take
// the time of a change from the engine rather than from its API call. It
// is safe for concurrent use.
type EventLog struct {
	mu     sync.Mutex
	events []events.Message // guarded by mu, in arrival order
	err    error            // guarded by mu: why a stream ended
}

// Events starts recording until ctx ends. The engine replays events from
// the time of the call, so nothing that happens after Events returns is
// missed.
//
// Container events are filtered by the run label. Network events cannot
// be: their attributes carry neither the network's nor the container's
// labels, so a label filter drops them all. They are recorded for every
// network, and Wait matches them by container ID.
func (e *Engine) Events(ctx context.Context) *EventLog {
	since := time.Now()
	opts := func(f client.Filters) client.EventsListOptions {
		return client.EventsListOptions{Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()), Filters: f}
	}
	l := &EventLog{}
	go l.record(e.Client.Events(ctx, opts(make(client.Filters).
		Add("type", string(events.ContainerEventType)).
		Add("label", e.Label+"="+e.Run))))
	go l.record(e.Client.Events(ctx, opts(make(client.Filters).
		Add("type", string(events.NetworkEventType)))))
	return l
}

// record appends events until the stream ends; a named function so that
// stack dumps say what the goroutine is.
func (l *EventLog) record(res client.EventsResult) {
	for {
		select {
		case m := <-res.Messages:
			l.mu.Lock()
			l.events = append(l.events, m)
			l.mu.Unlock()
		case err := <-res.Err:
			if err == nil {
				err = errors.New("event stream ended")
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			return
		}
	}
}

// Wait waits for the first event about the container id (its own events,
// or a network's events naming it) whose action starts with action and
// which happened at or after after, and returns the engine's time of it.
func (l *EventLog) Wait(ctx context.Context, id, action string, after time.Time) (time.Time, error) {
	var at time.Time
	err := Poll(ctx, func(context.Context) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, m := range l.events {
			t := time.Unix(0, m.TimeNano)
			if (m.Actor.ID == id || m.Actor.Attributes["container"] == id) &&
				strings.HasPrefix(string(m.Action), action) && !t.Before(after) {
				at = t
				return nil
			}
		}
		if l.err != nil {
			return Permanent(fmt.Errorf("event stream ended: %w", l.err))
		}
		return errors.New("no such event yet")
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("wait for event %q of %s: %w", action, id, err)
	}
	return at, nil
}
