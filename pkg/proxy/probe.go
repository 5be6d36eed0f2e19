package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// While a backend refuses connections (a container booting), every
// connection waiting for it (BackendWait) used to retry it on a schedule
// of its own: about 35 connects each over a 3 s wait, so that ten waiting
// clients made 350, and the load on a booting backend grew with the number
// of its clients. Instead, once a connection's own first pass over the set
// has failed, it waits with the others for that set (backendSet.probe):
// one of them, the leader, retries the set for all of them on the retry
// schedule (nextRetryDelay); the others wait without dialling until the
// leader connects (then they all try at once, and those that fail wait
// again), the set is replaced (then each tries the new set at once, as a
// new connection would), their own BackendWait runs out, or the route
// closes. When the leader leaves (connected, or out of time), another
// waiter takes over, on the same schedule. A set is probed once per
// interval, whatever the number of connections waiting for it.

// prober is the shared probing of one backend set by the connections
// waiting for it.
type prober struct {
	mu sync.Mutex
	// The fields below are guarded by mu.
	waiters int           // connections waiting for the set, the leader included
	round   *probeRound   // the leader's; nil while no waiter leads
	delay   time.Duration // before the leader's next probe
	// changedAt is when waiters last came to the set from one it
	// replaced: the set is new, and probed every minRetryDelay for
	// newSetPolling (nextRetryDelay).
	changedAt time.Time
}

// probeRound is one leader's time at the head of a set's waiters.
type probeRound struct {
	over      chan struct{} // closed when the leader leaves
	connected bool          // written before over is closed: the leader left connected
}

// enter counts a connection in among the set's waiters; changedAt is when
// it saw the set it waited for before replaced by this one, if it did.
// The schedule starts over when no connection was waiting.
func (p *prober) enter(changedAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiters == 0 {
		p.delay = minRetryDelay
	}
	p.waiters++
	if changedAt.After(p.changedAt) {
		p.changedAt = changedAt
	}
}

// exit counts a connection out of the set's waiters.
func (p *prober) exit() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiters--
}

// join returns the current leader's round, or a new round led by the
// caller when no waiter leads; lead reports which.
func (p *prober) join() (round *probeRound, lead bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.round != nil {
		return p.round, false
	}
	p.round = &probeRound{over: make(chan struct{})}
	return p.round, true
}

// leave ends the leader's round, and wakes the other waiters: to try at
// once if the leader connected, to take the lead over otherwise.
func (p *prober) leave(round *probeRound, connected bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	round.connected = connected
	close(round.over)
	p.round = nil
}

// nextDelay returns how long the leader waits before its next probe.
func (p *prober) nextDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// failed moves the schedule on after a probe that failed.
func (p *prober) failed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = nextRetryDelay(p.delay, time.Since(p.changedAt) < newSetPolling)
}

// errReplaced ends a connection's wait for a set that was replaced: it
// tries the new set at once.
var errReplaced = errors.New("backend set replaced")

// await waits, with the other connections waiting for set, for a backend
// of it to accept c, until deadline or until ctx is done; changedAt is
// when c saw its previous set replaced by this one, if it did. It returns
// errReplaced when set is replaced, and otherwise, when c is not
// connected, the error of its last try (lastErr if it made none).
func (r *Route) await(ctx context.Context, set *backendSet, c *conn, deadline, changedAt time.Time,
	lastErr error) (net.Conn, Backend, error) {
	p := &set.probe
	p.enter(changedAt)
	defer p.exit()
	expired := time.NewTimer(time.Until(deadline))
	defer expired.Stop()
	for {
		round, lead := p.join()
		if lead {
			return r.lead(ctx, set, c, round, deadline, lastErr)
		}
		select {
		case <-round.over:
			if !round.connected {
				continue // the leader ran out of time: one of us takes over
			}
			// A backend accepts again: every waiter tries at once.
			bc, b, err := r.dial(ctx, set, c)
			if err == nil {
				return bc, b, nil
			}
			lastErr = err
			if ctx.Err() != nil || !time.Now().Before(deadline) {
				return nil, Backend{}, lastErr
			}
		case <-set.replaced:
			return nil, Backend{}, errReplaced
		case <-expired.C:
			return nil, Backend{}, lastErr
		case <-ctx.Done():
			return nil, Backend{}, lastErr
		}
	}
}

// lead probes set on the retry schedule, for c and the connections
// waiting with it, until a probe connects c, the set is replaced, c's
// deadline passes or ctx is done; then it ends round, which hands the lead
// on. It returns as await does.
func (r *Route) lead(ctx context.Context, set *backendSet, c *conn, round *probeRound, deadline time.Time,
	lastErr error) (net.Conn, Backend, error) {
	p := &set.probe
	connected := false
	defer func() { p.leave(round, connected) }()
	for {
		t := time.NewTimer(min(p.nextDelay(), time.Until(deadline)))
		select {
		case <-set.replaced:
			t.Stop()
			return nil, Backend{}, errReplaced
		case <-ctx.Done():
			t.Stop()
			return nil, Backend{}, lastErr
		case <-t.C:
		}
		bc, b, err := r.dial(ctx, set, c)
		if err == nil {
			connected = true
			return bc, b, nil
		}
		lastErr = err
		p.failed()
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return nil, Backend{}, lastErr
		}
	}
}
