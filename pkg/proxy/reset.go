package proxy

import "net"

// A connection that one side ends with a reset is passed on as a reset:
// a clean close (FIN) in its place would make an answer cut short (an
// HTTP/1.0 body, a dump, anything delimited by the close) look complete
// to the client, and a request cut short look whole to the backend. When
// a read, a write or a splice on one side fails (ECONNRESET, EPIPE, or any
// other socket error), the other side gets SO_LINGER {on, 0} just before
// it is closed, so that its close sends RST instead of FIN, and
// [Observer.Reset] hears of it once, with the direction of the side that
// failed. The event loops know that side from the descriptor in their
// sockError, the goroutines from their copyError.
//
// Everything else ends as before: a clean EOF is passed on as a FIN (a
// half-close), and a close the route asks for (Forget, CloseConns, Close,
// a drain) or an idle timeout closes both sides cleanly. A connection that
// its backend reset before answering and that replay takes over is
// replayed (replay_linux.go), not reset.
//
// A connection closed without reaching a backend (BackendWait ran out, no
// backend, a replay that found none, MaxConns, the route closing) is reset
// too: its client must not take the close for an empty answer.
//
// None of this costs a clean connection a system call: SO_LINGER is set
// only on the way to an abortive close, by closeReset for a net.Conn and
// by lingerZero for a raw socket of the event loops (conn_linux.go).

// lingerer is *net.TCPConn's SetLinger, declared here where it is used.
type lingerer interface{ SetLinger(sec int) error }

// closeReset closes nc so that its peer gets a reset, if nc can send one
// (TCP); other connections are closed as ever.
func closeReset(nc net.Conn) {
	if tc, ok := nc.(interface{ NetConn() net.Conn }); ok {
		nc = tc.NetConn() // TLS: the reset is TCP's; no close_notify before it
	}
	if l, ok := nc.(lingerer); ok {
		l.SetLinger(0)
	}
	nc.Close()
}
