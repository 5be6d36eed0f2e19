package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// Observer receives a route's connection events, for metrics. Calls come
// from the route's accept loop and connection goroutines concurrently;
// implementations must be fast and safe for concurrent use, since they run
// on the data path.
type Observer interface {
	// ConnOpened reports that a connection reached backend b and starts
	// moving bytes.
	ConnOpened(b Backend)

	// ConnClosed reports the end of a connection that ConnOpened reported:
	// up is the number of bytes written to the backend (client→backend),
	// down the number written to the client (backend→client), and d the
	// time from ConnOpened until both directions finished. Bytes are
	// reported once, here, whether the connection ended cleanly or not.
	ConnClosed(b Backend, up, down int64, d time.Duration)

	// DialFailed reports one failed connect to b. A connection that tries
	// several backends, or retries for BackendWait, reports every failure.
	// reason is one of the Dial* constants. Connects cut short by the
	// route closing are not reported.
	DialFailed(b Backend, reason string)

	// Rejected reports a connection closed without reaching a backend;
	// reason is one of the Reject* constants. Such a connection is reset,
	// not closed cleanly: the client must not take it for an empty answer.
	Rejected(reason string)

	// Reset reports a connection that one side ended with a reset (or
	// another error), passed on to the other side as a reset rather than
	// as a clean close, so that an answer cut short never looks complete.
	// direction is DirectionUp when the client's side failed (the backend
	// is reset), DirectionDown when the backend's did (the client is
	// reset). It comes before the connection's ConnClosed. Closes the
	// route asks for (Forget, CloseConns, Close) and idle timeouts are
	// not resets.
	Reset(direction string)

	// Replayed reports a connection that its backend reset before
	// answering, sent again to backend b (Route.ReplayBytes). The first
	// backend's ConnClosed and b's ConnOpened are reported as well.
	Replayed(b Backend)

	// Ejected reports a backend that failed Route.EjectAfter times in a
	// row, ejected for d: new connections try it only after the others.
	Ejected(b Backend, d time.Duration)

	// Handshake reports a TLS handshake on side (SideListen, SideBackend):
	// err nil when it succeeded, resumed when it resumed a session
	// instead of a full handshake (tls.go).
	Handshake(side string, resumed bool, err error)

	// ProxyHeaderSent reports a PROXY protocol header of version (ProxyV1,
	// ProxyV2) written to a backend ahead of a client's bytes.
	ProxyHeaderSent(version int)

	// ProxyHeaderAccepted reports a PROXY protocol header of version read
	// from a trusted client (Route.AcceptProxy).
	ProxyHeaderAccepted(version int)

	// ProxyHeaderRejected reports a client of a route accepting PROXY
	// headers that was reset for reason, one of the Proxy* reasons
	// (ProxyUntrusted, ProxyMissing, ProxyMalformed, ProxyTimeout); the
	// connection is reported Rejected (RejectProxyHeader) too.
	ProxyHeaderRejected(reason string)
}

// The directions [Observer.Reset] reports, as in the bytes of
// [Observer.ConnClosed]: up is client to backend, down backend to client.
const (
	DirectionUp   = "up"
	DirectionDown = "down"
)

// The reasons [Observer.DialFailed] reports.
const (
	DialRefused     = "refused"     // the backend answered with a reset: nothing listens on the port
	DialTimedOut    = "timeout"     // no answer within the dial timeout
	DialUnreachable = "unreachable" // no route to the host or network
	DialDNS         = "dns"         // the backend's host name did not resolve
	DialOther       = "other"       // anything else
)

// The reasons [Observer.Rejected] reports.
const (
	RejectNoBackend = "no_backend" // the set was empty, or no backend accepted (within BackendWait)
	RejectLimit     = "limit"      // MaxConns connections were already being served
	RejectShutdown  = "shutdown"   // the route was shutting down or closed
)

// nopObserver is the observer of a route without one.
type nopObserver struct{}

func (nopObserver) ConnOpened(Backend)                              {}
func (nopObserver) ConnClosed(Backend, int64, int64, time.Duration) {}
func (nopObserver) DialFailed(Backend, string)                      {}
func (nopObserver) Rejected(string)                                 {}
func (nopObserver) Reset(string)                                    {}
func (nopObserver) Replayed(Backend)                                {}
func (nopObserver) Ejected(Backend, time.Duration)                  {}
func (nopObserver) Handshake(string, bool, error)                   {}
func (nopObserver) ProxyHeaderSent(int)                             {}
func (nopObserver) ProxyHeaderAccepted(int)                         {}
func (nopObserver) ProxyHeaderRejected(string)                      {}

// dialFailure classifies a failed connect for [Observer.DialFailed]. The
// DNS check comes first: a resolver timeout is a DNS problem, not a
// backend that does not answer.
func dialFailure(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	var tlsErr *handshakeError
	switch {
	case errors.As(err, &tlsErr):
		return DialTLS
	case errors.As(err, &dnsErr):
		return DialDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return DialRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &netErr) && netErr.Timeout():
		return DialTimedOut
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EHOSTDOWN), errors.Is(err, syscall.ENETDOWN):
		return DialUnreachable
	}
	return DialOther
}
