package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
)

// HAProxy's PROXY protocol (v1, text; v2, binary) carries a client's
// address through a proxy: a header the proxy writes to the backend
// before the client's first byte. Behind an ambassador every backend
// would otherwise see the ambassador's address.
//
// Sending: a route (ProxyProtocol) or a backend (Backend.ProxyProtocol,
// which wins) asks for it. conn.established, the step every path takes
// once per backend the connection reaches, makes the header (conn.header),
// and the path writes it before any byte of the client's: serve's
// goroutine before it hands the connection over, to a loop or to its
// copy goroutines (writePrelude); an event loop that made the connect,
// with the client's first bytes in one writev, or alone at once if there
// are none, so that a backend that speaks first is not kept waiting
// (startConn, half.prefix); a replay resumed on a new backend, ahead of
// the replayed bytes (resume). A TLS backend is the one exception: its
// header goes on the plain socket before the TLS handshake, as HAProxy's
// send-proxy does with ssl, so dial writes it, before established.
//
// Accepting: a route with AcceptProxy reads a header from each client
// before anything else (before TLS too) and sends on the address it
// carries instead of the client's own, so that a chain of proxies keeps
// the first client's address. Only clients whose address is in
// AcceptProxy may send one: any other is reset at once, before a byte is
// read, so that a container on the same network cannot claim another
// address. A trusted client that sends no valid header within
// ProxyHeaderTimeout is reset too. Each outcome is reported
// (Observer.ProxyHeaderAccepted, ProxyHeaderRejected). The parsing is
// github.com/pires/go-proxyproto's.
//
// Connections of a route that accepts headers are served from a goroutine
// (conn.serve) until the header is read: the event loops never wait for a
// client, and a goroutine per trusted client that has not sent its
// header yet is bounded by ProxyHeaderTimeout and MaxConns.

// The PROXY protocol versions a route or a backend may send.
const (
	ProxyV1 = 1 // text: "PROXY TCP4 SRC DST SPORT DPORT\r\n"
	ProxyV2 = 2 // binary
)

// defaultProxyHeaderTimeout bounds the wait for a client's PROXY header.
const defaultProxyHeaderTimeout = 5 * time.Second

// The reasons [Observer.ProxyHeaderRejected] reports. The connection is
// also reported Rejected with RejectProxyHeader.
const (
	ProxyUntrusted = "untrusted" // the client's address is not in AcceptProxy
	ProxyMissing   = "missing"   // the client sent something else than a header, or closed first
	ProxyMalformed = "malformed" // a header signature, then something invalid
	ProxyTimeout   = "timeout"   // no header within ProxyHeaderTimeout
)

// RejectProxyHeader is the reason [Observer.Rejected] reports for a client
// of a route accepting PROXY headers that sent none it could take, or was
// not trusted to send one.
const RejectProxyHeader = "proxy_header"

// ParseProxyVersion parses a PROXY protocol version as the labels and
// flags write it: v1 or v2.
func ParseProxyVersion(s string) (int, error) {
	switch s {
	case "v1":
		return ProxyV1, nil
	case "v2":
		return ProxyV2, nil
	}
	return 0, fmt.Errorf("PROXY protocol version %q: want v1 or v2", s)
}

func (r *Route) proxyHeaderTimeout() time.Duration {
	if r.ProxyHeaderTimeout > 0 {
		return r.ProxyHeaderTimeout
	}
	return defaultProxyHeaderTimeout
}

// acceptsProxy reports whether the route reads a PROXY header from its
// clients.
func (r *Route) acceptsProxy() bool { return len(r.AcceptProxy) > 0 }

// trusted reports whether remote may send a PROXY header.
func (r *Route) trusted(remote net.Addr) bool {
	ta, ok := remote.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("")
	return slices.ContainsFunc(r.AcceptProxy, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// proxyVersion is the PROXY protocol version to send to b, 0 for none.
func (r *Route) proxyVersion(b Backend) int {
	if b.ProxyProtocol != 0 {
		return b.ProxyProtocol
	}
	return r.ProxyProtocol
}

// proxyHeader returns the PROXY header to write to b ahead of the
// client's bytes, or nil if b takes none; it reports the header sent.
// The header says the connection came from the client (or from the
// address the client's own header carried) to the address it connected
// to (localAddr, asked once per connection).
func (c *conn) proxyHeader(b Backend) []byte {
	v := c.route.proxyVersion(b)
	if v == 0 {
		return nil
	}
	if c.proxySrc == nil {
		c.proxySrc, c.proxyDst = c.remote, c.localAddr()
	}
	h := proxyproto.HeaderProxyFromAddrs(byte(v), c.proxySrc, c.proxyDst)
	buf, err := h.Format()
	if err != nil {
		// Only a header made of addresses HeaderProxyFromAddrs took and
		// formats can come here: say so rather than nothing.
		h = &proxyproto.Header{Version: byte(v), Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
		buf, _ = h.Format()
	}
	c.route.observer().ProxyHeaderSent(v)
	return buf
}

// readProxyHeader reads the client's PROXY header, within the route's
// header timeout, and keeps the addresses it carries for the headers c
// sends, and whatever the client sent after it for the backend. c.client
// is a net.Conn (wrapClient). It reports the reason of a rejection, ""
// when the header was taken.
func (c *conn) readProxyHeader() (string, error) {
	r := c.route
	c.mu.Lock()
	nc, aborted := c.client, c.aborted
	c.mu.Unlock()
	if aborted {
		// Closed before wrapClient made the client a net.Conn: abort
		// left the raw socket to its owner, and the read would wait for
		// the whole timeout. Once nc is set, abort closes it.
		return ProxyMissing, net.ErrClosed
	}
	deadline := time.Now().Add(r.proxyHeaderTimeout())
	if err := nc.SetReadDeadline(deadline); err != nil {
		return ProxyMissing, err
	}
	br := bufio.NewReaderSize(nc, 512)
	h, err := proxyproto.Read(br)
	if err == nil {
		err = nc.SetReadDeadline(time.Time{})
	}
	switch {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded), !time.Now().Before(deadline):
		// The parser does not always wrap the read's error: a header cut
		// short by the deadline is a timeout too.
		return ProxyTimeout, err
	case errors.Is(err, proxyproto.ErrNoProxyProtocol), isTeardown(err):
		return ProxyMissing, err
	default:
		return ProxyMalformed, err
	}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		c.pending = slices.Clone(rest)
	}
	// A LOCAL header (the upstream's own health check), or one of another
	// family than TCP, carries no client: the connection's own addresses
	// stand.
	if h.Command == proxyproto.PROXY {
		if src, dst, ok := h.TCPAddrs(); ok {
			c.proxySrc, c.proxyDst = src, dst
		}
	}
	r.observer().ProxyHeaderAccepted(int(h.Version))
	return "", nil
}

// rejectUntrusted turns away, before reading anything, a client that is
// not trusted to send a PROXY header on a route that requires one. It
// reports whether it did.
func (r *Route) rejectUntrusted(a accepted) bool {
	if !r.acceptsProxy() || r.trusted(a.remote) {
		return false
	}
	r.logger().Debug("client not trusted to send a PROXY header; closing", zap.Stringer("remote", a.remote))
	a.reject()
	obs := r.observer()
	obs.ProxyHeaderRejected(ProxyUntrusted)
	obs.Rejected(RejectProxyHeader)
	return true
}

// writePrelude writes to bc, the backend b that a goroutine connected c
// to, what goes ahead of the client's bytes: the PROXY header that
// established made, then what the client sent after its own header.
func (c *conn) writePrelude(bc net.Conn, b Backend) error {
	buf := c.header
	c.header = nil
	if len(buf) == 0 && len(c.pending) == 0 {
		return nil
	}
	buf = append(buf, c.pending...)
	if _, err := bc.Write(buf); err != nil {
		return fmt.Errorf("write to %s ahead of the client's bytes: %w", b, err)
	}
	return nil
}

// pendingToClient gives what the client sent after its PROXY header back
// to the client's reads, for a route that listens with TLS: those bytes
// are the start of its TLS handshake, not bytes for the backend.
func (c *conn) pendingToClient() {
	if len(c.pending) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.client = &prefixConn{Conn: c.client, prefix: c.pending}
	c.pending = nil
}

// prefixConn is a client whose first reads return prefix, what was read
// from it ahead of them.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// SetLinger is the socket's, for a reset (reset.go).
func (p *prefixConn) SetLinger(sec int) error {
	if l, ok := p.Conn.(lingerer); ok {
		return l.SetLinger(sec)
	}
	return nil
}
