package admin

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// connCap holds at most max connections of one admin listener open, so that
// the admin port can never take the descriptors the data path needs: with
// no cap, 130 idle connections under `ulimit -n 128` left a route's clients
// nothing but EOF.
//
// Past the cap a new connection is not left waiting (in the kernel's
// backlog, a crowd of idle connections would hold every later client behind
// it for minutes): it takes the place of the connection that has waited
// longest without a request in flight, one that has sent nothing yet or
// sits idle between requests. Such a connection holds nothing, and its
// client, if it ever sends a request, reconnects (Go's and Prometheus's
// clients retry an idempotent request on a reused connection that closed).
// So a flood of idle or slow-header connections costs the process max
// descriptors and never locks a fresh client out. Only when every held
// connection has a request in flight, each bounded by the read and write
// timeouts, is the new one answered 503 and closed.
//
// The listener's Accept and the server's ConnState hook both use it; mu
// guards conns.
type connCap struct {
	net.Listener
	max     int
	log     *zap.Logger
	evicted rateLog // idle connections closed to make room, logged at most once a second
	busy    rateLog // 503s answered, likewise

	mu    sync.Mutex
	conns map[net.Conn]heldConn // guarded by mu
}

// heldConn is what connCap knows of a connection it holds: its state as
// the HTTP server last reported it, and since when.
type heldConn struct {
	state http.ConnState
	since time.Time
}

func newConnCap(ln net.Listener, max int, log *zap.Logger) *connCap {
	return &connCap{Listener: ln, max: max, log: log, conns: map[net.Conn]heldConn{}}
}

// Accept returns the next connection, making room for it as the type's
// doc says.
func (l *connCap) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admit(c) {
			return c, nil
		}
	}
}

// admit holds c, closing the longest-waiting connection without a request
// in flight when the cap is reached. It reports false when every held
// connection is busy: c is then answered 503 and closed.
func (l *connCap) admit(c net.Conn) bool {
	now := time.Now()
	l.mu.Lock()
	var victim net.Conn
	if len(l.conns) >= l.max {
		var oldest time.Time
		for vc, h := range l.conns {
			if h.state != http.StateNew && h.state != http.StateIdle {
				continue
			}
			if victim == nil || h.since.Before(oldest) {
				victim, oldest = vc, h.since
			}
		}
		if victim == nil {
			l.mu.Unlock()
			l.refuse(c, now)
			return false
		}
		delete(l.conns, victim)
	}
	l.conns[c] = heldConn{state: http.StateNew, since: now}
	l.mu.Unlock()
	if victim != nil {
		// The server's goroutine for victim sees its read fail and lets
		// it go; its descriptor is free now.
		victim.Close()
		if n, ok := l.evicted.event(now); ok {
			l.log.Info("admin connections at the cap; closed the longest idle to make room",
				zap.String("remote", victim.RemoteAddr().String()), zap.Int("cap", l.max), zap.Int("closed", n))
		}
	}
	return true
}

// refuse answers a connection beyond the cap 503 and closes it. It has sent
// nothing yet, or very little: the answer fits in its socket's send buffer,
// so the write does not block.
func (l *connCap) refuse(c net.Conn, now time.Time) {
	const body = `{"error": "too many admin connections with requests in flight; try again"}` + "\n"
	c.SetWriteDeadline(now.Add(100 * time.Millisecond))
	c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	c.Close()
	if n, ok := l.busy.event(now); ok {
		l.log.Warn("admin connections at the cap, all with requests in flight; answered 503",
			zap.Int("cap", l.max), zap.Int("refused", n))
	}
}

// track is the server's ConnState hook: it keeps each held connection's
// state, and forgets the connections that closed.
func (l *connCap) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
	default:
		if _, ok := l.conns[c]; ok {
			l.conns[c] = heldConn{state: s, since: time.Now()}
		}
	}
}

// held returns how many connections are held open in state s.
func (l *connCap) held(s http.ConnState) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, h := range l.conns {
		if h.state == s {
			n++
		}
	}
	return n
}

// rateLog lets an event be logged at most once a second, with the number of
// events since the last line: a flood of refused connections must not flood
// the log too. An event that comes within the second is counted and
// reported with the next line.
type rateLog struct {
	mu   sync.Mutex
	last time.Time // of the last line; guarded by mu
	n    int       // events since then; guarded by mu
}

// event counts one event at now and reports whether to log a line, with
// the number of events it covers.
func (r *rateLog) event(now time.Time) (n int, log bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if !r.last.IsZero() && now.Sub(r.last) < time.Second {
		return 0, false
	}
	n, r.n, r.last = r.n, 0, now
	return n, true
}
