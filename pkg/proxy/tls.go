package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// TLS is per connection, on either side or both, and never on the event
// loops: crypto/tls reads and writes records in user space, so a
// connection with a TLS side is connected by a goroutine and its bytes
// moved by one goroutine per direction (copy.go), without splice or
// replay. A route listening with TLS (Route.SetTLS) completes the handshake
// with its client, client certificate checked by the config, before any
// backend is dialled: a client refused never reaches one. A backend with
// TLS (Backend.TLS) is dialled, then its handshake done within the same
// dial timeout; a handshake that fails is a failed connect like a refused
// one, and the next backend is tried. Half-close over TLS is close_notify
// (tls.Conn.CloseWrite), and a reset goes to the TCP socket under it.

// defaultHandshakeTimeout bounds a listener's TLS handshake: a client that
// opens a connection and sends nothing holds a goroutine no longer.
const defaultHandshakeTimeout = 10 * time.Second

// The sides [Observer.Handshake] reports.
const (
	SideListen  = "listen"  // a client's handshake with the route's listener
	SideBackend = "backend" // the route's handshake with a backend it dialled
)

// RejectHandshake is the reason [Observer.Rejected] reports for a client
// whose TLS handshake with the listener failed (Route.SetTLS).
const RejectHandshake = "tls"

// DialTLS is the reason [Observer.DialFailed] reports for a backend that
// accepted the connect but failed its TLS handshake.
const DialTLS = "tls"

// SetTLS makes the route listen with TLS from the next accept on: each
// client completes a handshake with cfg (which decides what client
// certificates it requires) within HandshakeTimeout, before any backend
// is dialled, and its connection takes the goroutine path. Nil, the
// default, means plain TCP. Established connections keep the mode they
// were accepted with.
func (r *Route) SetTLS(cfg *tls.Config) { r.listenTLS.Store(cfg) }

// TLS returns what SetTLS set.
func (r *Route) TLS() *tls.Config { return r.listenTLS.Load() }

func (r *Route) handshakeTimeout() time.Duration {
	if r.HandshakeTimeout > 0 {
		return r.HandshakeTimeout
	}
	return defaultHandshakeTimeout
}

// usesTLS reports whether connections of the route, to any backend of
// set, may need TLS on a side: they cannot be event loops'.
func (r *Route) usesTLS(set *backendSet) bool {
	if r.TLS() != nil {
		return true
	}
	if set == nil {
		return false
	}
	for _, bs := range [][]Backend{set.backends, set.fallback} {
		for _, b := range bs {
			if b.TLS {
				return true
			}
		}
	}
	return false
}

// handshakeClient completes the listener's TLS handshake of cfg with c's
// client, whose connection it then replaces with the TLS one. On failure
// the client has had the alert crypto/tls sends, and is closed.
func (c *conn) handshakeClient(ctx context.Context, cfg *tls.Config) error {
	r := c.route
	c.mu.Lock()
	if c.aborted {
		c.mu.Unlock()
		return net.ErrClosed
	}
	tc := tls.Server(c.client, cfg)
	c.client = tc // abort closes it, and with it a handshake in flight
	c.mu.Unlock()
	hctx, cancel := context.WithTimeout(ctx, r.handshakeTimeout())
	defer cancel()
	err := tc.HandshakeContext(hctx)
	r.observer().Handshake(SideListen, err == nil && tc.ConnectionState().DidResume, err)
	if err != nil {
		tc.NetConn().Close()
		return fmt.Errorf("tls handshake: %w", err)
	}
	return nil
}

// handshakeBackend wraps raw, just connected to b, in TLS with the
// route's config for b's address, and completes the handshake within ctx.
func (r *Route) handshakeBackend(ctx context.Context, raw net.Conn, b Backend) (net.Conn, error) {
	if r.BackendTLS == nil {
		raw.Close()
		return nil, &handshakeError{errors.New("the route has no TLS configuration for backends")}
	}
	tc := tls.Client(raw, r.BackendTLS(b.Addr))
	if err := tc.HandshakeContext(ctx); err != nil {
		r.observer().Handshake(SideBackend, false, err)
		raw.Close()
		return nil, &handshakeError{err}
	}
	return &backendTLS{Conn: tc, route: r, backend: b}, nil
}

// backendTLS is a TLS backend's connection, its handshake reported at its
// first read rather than when tls.Conn's handshake returns: in TLS 1.3 a
// server checks the client's certificate after the client's side of the
// handshake has ended, and says it refused it with an alert that only the
// first read gets. Such a refusal is a failed handshake, logged with the
// server's reason, not an ok one followed by a reset no one explains.
type backendTLS struct {
	*tls.Conn
	route    *Route
	backend  Backend
	reported sync.Once
}

func (c *backendTLS) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.reported.Do(func() { c.report(n, err) })
	return n, err
}

// report reports the handshake, after the first read gave n bytes and err.
func (c *backendTLS) report(n int, err error) {
	obs := c.route.observer()
	if n == 0 && isRemoteAlert(err) {
		obs.Handshake(SideBackend, false, err)
		c.route.logger().Warn("backend refused the TLS handshake after it ended (it refuses this ambassador's certificate, --tls-cert, or its CA): check that the backend's client CA signed it",
			zap.Stringer("backend", c.backend), zap.Error(err))
		return
	}
	obs.Handshake(SideBackend, c.ConnectionState().DidResume, nil)
}

// isRemoteAlert reports whether err is an alert the peer sent (crypto/tls
// returns it as a net.OpError of Op "remote error").
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// tlsRefused reports whether err, a failed connect, is only certificate
// refusals: a TLS backend that refuses, or is refused, at the handshake
// will not accept a retry within BackendWait either.
func tlsRefused(err error) bool {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs := joined.Unwrap()
		return len(errs) > 0 && !slices.ContainsFunc(errs, func(e error) bool { return !tlsRefused(e) })
	}
	var he *handshakeError
	return errors.As(err, &he) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded)
}

// handshakeError is a backend's failed TLS handshake: a failed connect
// of its own kind (DialTLS), whatever failed in it, a timeout included.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }
