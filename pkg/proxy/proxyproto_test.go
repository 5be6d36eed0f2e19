package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// seenHeader is what a PROXY-reading backend saw at the start of a
// connection: the header's version and addresses, or the error reading it.
type seenHeader struct {
	version  int
	src, dst string
	err      error
}

// proxyEcho returns a backend that reads a PROXY header with
// go-proxyproto (an implementation none of ours), reports it on the
// channel, writes banner if any (a backend that speaks first), and then
// echoes the rest until EOF.
func proxyEcho(t *testing.T, id, banner string) (Backend, <-chan seenHeader) {
	t.Helper()
	seen := make(chan seenHeader, 16)
	addr := startBackend(t, func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			seen <- seenHeader{err: err}
			return
		}
		s := seenHeader{version: int(h.Version)}
		if h.SourceAddr != nil {
			s.src, s.dst = h.SourceAddr.String(), h.DestinationAddr.String()
		}
		seen <- s
		c.SetReadDeadline(time.Time{})
		if banner != "" {
			c.Write([]byte(banner))
		}
		io.Copy(c, br)
		c.(*net.TCPConn).CloseWrite()
	})
	return Backend{ID: id, Addr: addr}, seen
}

// nextHeader returns the next header a proxyEcho saw, within 5 s.
func nextHeader(t *testing.T, seen <-chan seenHeader) seenHeader {
	t.Helper()
	select {
	case s := <-seen:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the backend saw no connection")
		return seenHeader{}
	}
}

// TestProxyHeaderSent: a route that sends PROXY headers writes one, of
// the version asked, with the client's address and the one it connected
// to, exactly, before the client's first byte, whichever path connects
// and carries the connection; a backend's own version wins over the
// route's.
func TestProxyHeaderSent(t *testing.T) {
	tests := []struct {
		name       string
		route      func() *Route
		version    int // the backend's own, 0 for the route's
		refuseOnce bool
		want       int
	}{
		{name: "event loop v1", route: func() *Route { return &Route{ProxyProtocol: ProxyV1} }, want: ProxyV1},
		{name: "event loop v2", route: func() *Route { return &Route{ProxyProtocol: ProxyV2} }, want: ProxyV2},
		{name: "backend's version wins", route: func() *Route { return &Route{ProxyProtocol: ProxyV1} }, version: ProxyV2, want: ProxyV2},
		{name: "backend asks, route does not", route: func() *Route { return &Route{} }, version: ProxyV1, want: ProxyV1},
		{name: "loop's connect refused, goroutine connects", route: func() *Route { return &Route{ProxyProtocol: ProxyV2} }, refuseOnce: true, want: ProxyV2},
		{name: "no event loops", route: func() *Route { return &Route{ProxyProtocol: ProxyV1, noLoops: true} }, want: ProxyV1},
		{name: "idle timeout: goroutines", route: func() *Route { return &Route{ProxyProtocol: ProxyV2, IdleTimeout: time.Minute} }, want: ProxyV2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, speaksFirst := range []bool{false, true} {
				t.Run(fmt.Sprintf("backend speaks first=%v", speaksFirst), func(t *testing.T) {
					banner := ""
					if speaksFirst {
						banner = "220 ready\n"
					}
					b, seen := proxyEcho(t, "echo", banner)
					b.ProxyProtocol = tt.version
					obs := &recorder{}
					r := tt.route()
					r.Observer = obs
					set := []Backend{b}
					if tt.refuseOnce {
						set = []Backend{{ID: "dead", Addr: deadAddr(t)}, b}
					}
					r.SetBackends(set)
					addr := startRoute(t, r)
					c := dial(t, addr)
					if speaksFirst {
						// Nothing from the client yet: the header alone
						// must reach the backend, which then answers.
						buf := make([]byte, len(banner))
						require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
						_, err := io.ReadFull(c, buf)
						require.NoError(t, err, "the backend waits for its header")
						assert.Equal(t, banner, string(buf))
					}
					assert.Equal(t, "hello", exchange(t, c, "hello"))
					require.NoError(t, c.CloseWrite())
					_, err := readAll(t, c)
					require.NoError(t, err)

					h := nextHeader(t, seen)
					require.NoError(t, h.err)
					assert.Equal(t, seenHeader{version: tt.want, src: c.LocalAddr().String(), dst: addr}, h)
					require.Eventually(t, func() bool { return len(obs.events().closed) == 1 }, 5*time.Second, 10*time.Millisecond)
					assert.Equal(t, []int{tt.want}, obs.events().proxySent)
				})
			}
		})
	}

	t.Run("none asked: nothing sent", func(t *testing.T) {
		r := &Route{}
		r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
		assert.Equal(t, "PROXY", roundTrip(t, startRoute(t, r), "PROXY"))
	})
}

// TestProxyHeaderTLSBackend: to a TLS backend the header goes on the
// plain socket, before the TLS handshake, as HAProxy's send-proxy does.
func TestProxyHeaderTLSBackend(t *testing.T) {
	ca := newTestCA(t, "ca")
	server := ca.serverConfig(t)
	seen := make(chan seenHeader, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serveListener(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			seen <- seenHeader{err: err}
			return
		}
		seen <- seenHeader{version: int(h.Version), src: h.SourceAddr.String(), dst: h.DestinationAddr.String()}
		tc := tls.Server(&bufferedConn{Conn: c, r: br}, server)
		if tc.Handshake() == nil {
			tlsEcho(tc)
		}
	})
	cert := ca.issue(t, "client")
	client := ca.clientConfig(t, &cert)
	r := &Route{ProxyProtocol: ProxyV2, BackendTLS: func(addr string) *tls.Config { return forHost(client, addr) }}
	r.SetBackends([]Backend{{Addr: ln.Addr().String(), TLS: true}})
	addr := startRoute(t, r)
	c := dial(t, addr)
	assert.Equal(t, "hello", exchange(t, c, "hello"))
	h := nextHeader(t, seen)
	require.NoError(t, h.err)
	assert.Equal(t, seenHeader{version: ProxyV2, src: c.LocalAddr().String(), dst: addr}, h)
}

// TestAcceptProxy: a route that accepts PROXY headers from a trusted
// client sends on the address the header carries, not the client's; a
// LOCAL header (an upstream's health check) leaves the client's own; and
// the bytes that came with the header, in the same segment, are not lost.
func TestAcceptProxy(t *testing.T) {
	tests := []struct {
		name    string
		header  func(c net.Conn) []byte
		wantSrc func(c net.Conn) string
		wantDst func(addr string) string
		version int
	}{{
		name:    "v1",
		header:  func(net.Conn) []byte { return []byte("PROXY TCP4 203.0.113.7 198.51.100.1 40123 6379\r\n") },
		wantSrc: func(net.Conn) string { return "203.0.113.7:40123" },
		wantDst: func(string) string { return "198.51.100.1:6379" },
		version: ProxyV1,
	}, {
		name: "v2 IPv6",
		header: func(net.Conn) []byte {
			h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 40123},
				&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 6379})
			b, err := h.Format()
			if err != nil {
				panic(err)
			}
			return b
		},
		wantSrc: func(net.Conn) string { return "[2001:db8::7]:40123" },
		wantDst: func(string) string { return "[2001:db8::1]:6379" },
		version: ProxyV2,
	}, {
		name: "v2 LOCAL: the connection's own addresses",
		header: func(net.Conn) []byte {
			h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
			b, _ := h.Format()
			return b
		},
		wantSrc: func(c net.Conn) string { return c.LocalAddr().String() },
		wantDst: func(addr string) string { return addr },
		version: ProxyV2,
	}}
	for _, tt := range tests {
		for _, path := range []string{"loops", "no loops"} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				b, seen := proxyEcho(t, "echo", "")
				obs := &recorder{}
				r := &Route{ProxyProtocol: ProxyV1, AcceptProxy: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
					Observer: obs, noLoops: path == "no loops"}
				r.SetBackends([]Backend{b})
				addr := startRoute(t, r)
				c := dial(t, addr)
				// The header and the first bytes in one segment, as an
				// upstream proxy sends them.
				_, err := c.Write(append(tt.header(c), "hello"...))
				require.NoError(t, err)
				require.NoError(t, c.CloseWrite())
				got, err := readAll(t, c)
				require.NoError(t, err)
				assert.Equal(t, "hello", got)
				h := nextHeader(t, seen)
				require.NoError(t, h.err)
				assert.Equal(t, seenHeader{version: ProxyV1, src: tt.wantSrc(c), dst: tt.wantDst(addr)}, h)
				ev := obs.events()
				assert.Equal(t, []int{tt.version}, ev.proxyAccepted)
				assert.Equal(t, []int{ProxyV1}, ev.proxySent)
				assert.Empty(t, ev.proxyRejected)
			})
		}
	}
}

// TestAcceptProxyRejects: on a route that accepts PROXY headers, a client
// outside the trusted addresses is reset before anything is read, even
// with a valid header (no spoofing); a trusted one without a valid header
// within the timeout is reset too. No backend is ever dialled, and each
// is counted by reason.
func TestAcceptProxyRejects(t *testing.T) {
	tests := []struct {
		name    string
		trusted string
		send    string
		want    string
	}{
		{name: "untrusted, with a valid header", trusted: "10.0.0.0/8", send: "PROXY TCP4 203.0.113.7 198.51.100.1 40123 6379\r\nhello", want: ProxyUntrusted},
		{name: "no header", trusted: "127.0.0.1/32", send: "GET / HTTP/1.0\r\n\r\n", want: ProxyMissing},
		{name: "malformed v1", trusted: "127.0.0.0/8", send: "PROXY TCP4 not-an-address 198.51.100.1 1 2\r\n", want: ProxyMalformed},
		{name: "nothing: timeout", trusted: "127.0.0.0/8", send: "", want: ProxyTimeout},
		// The spec has a header sent at once; the parser drops one that
		// did not come in one read rather than wait (slow loris).
		{name: "half a header", trusted: "127.0.0.0/8", send: "PROXY TCP4 203.0.", want: ProxyMalformed},
		{name: "v2 signature, then garbage", trusted: "127.0.0.0/8", send: "\r\n\r\n\x00\r\nQUIT\n\x99\x99\x00\x00", want: ProxyMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dialled := make(chan struct{}, 1)
			obs := &recorder{}
			r := &Route{AcceptProxy: []netip.Prefix{netip.MustParsePrefix(tt.trusted)}, ProxyHeaderTimeout: 200 * time.Millisecond, Observer: obs}
			r.SetBackends([]Backend{{Addr: startBackend(t, func(net.Conn) { dialled <- struct{}{} })}})
			addr := startRoute(t, r)
			c, err := net.Dial("tcp", addr)
			if err == nil {
				defer c.Close()
				if tt.send != "" {
					c.Write([]byte(tt.send))
				}
				got, _ := requireClosed(t, c)
				assert.Empty(t, got)
			}
			require.Eventually(t, func() bool { return len(obs.events().rejected) == 1 }, 5*time.Second, 10*time.Millisecond)
			ev := obs.events()
			assert.Equal(t, []string{tt.want}, ev.proxyRejected)
			assert.Equal(t, []string{RejectProxyHeader}, ev.rejected)
			assert.Empty(t, ev.opened)
			require.Eventually(t, func() bool { return r.Active() == 0 }, 5*time.Second, 10*time.Millisecond)
			select {
			case <-dialled:
				t.Error("a backend was dialled")
			default:
			}
		})
	}
}

func TestParseProxyVersion(t *testing.T) {
	for s, want := range map[string]int{"v1": ProxyV1, "v2": ProxyV2} {
		got, err := ParseProxyVersion(s)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	for _, s := range []string{"", "1", "V2", "v3", " v1"} {
		_, err := ParseProxyVersion(s)
		assert.ErrorContains(t, err, "want v1 or v2", s)
	}
}

// bufferedConn is a net.Conn whose reads go through r, which has read
// ahead of what the test took from it.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// FuzzReadProxyHeader: whatever a trusted client sends first, the header
// is either taken, and then every byte after it goes on to the backend
// (the buffered rest, then the socket's), or the client is rejected with
// a reason; never a panic, never a byte lost.
func FuzzReadProxyHeader(f *testing.F) {
	v2, _ := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 1}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 2}).Format()
	for _, s := range []string{
		"PROXY TCP4 203.0.113.7 198.51.100.1 40123 6379\r\nhello", "PROXY UNKNOWN\r\n", "PROXY TCP6 ::1 ::1 1 2\r\n",
		"PROXY TCP4 1.2.3.4\r\n", "GET / HTTP/1.0\r\n\r\n", "", string(v2) + "payload", string(v2[:20]),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			client.Write(in)
			client.Close()
		}()
		c := &conn{route: &Route{ProxyHeaderTimeout: time.Second}, client: server,
			remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}}
		reason, err := c.readProxyHeader()
		if reason != "" {
			if err == nil {
				t.Fatalf("rejected (%s) without an error", reason)
			}
			return
		}
		rest, _ := io.ReadAll(server)
		after := append(slices.Clone(c.pending), rest...)
		if !bytes.HasSuffix(in, after) {
			t.Fatalf("bytes after the header lost: sent %q, passed on %q", in, after)
		}
		if len(after) == len(in) {
			t.Fatalf("a header taken from %q, but nothing read", in)
		}
	})
}

// TestAcceptProxyTLS: on a route that listens with TLS, the PROXY header
// comes before the TLS handshake, as HAProxy's send-proxy with ssl sends
// it; a client hello that came in the same segment as the header is not
// lost to the handshake.
func TestAcceptProxyTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	b, seen := proxyEcho(t, "echo", "")
	obs := &recorder{}
	r := &Route{ProxyProtocol: ProxyV2, AcceptProxy: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Observer: obs}
	r.SetTLS(ca.serverConfig(t))
	r.SetBackends([]Backend{b})
	addr := startRoute(t, r)
	raw := dial(t, addr)
	// The header goes out with the client's first write, the hello.
	hdr := []byte("PROXY TCP4 203.0.113.7 198.51.100.1 40123 6379\r\n")
	cert := ca.issue(t, "client")
	c := tls.Client(&headerFirst{Conn: raw, header: hdr}, forHost(ca.clientConfig(t, &cert), addr))
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	h := nextHeader(t, seen)
	require.NoError(t, h.err)
	assert.Equal(t, seenHeader{version: ProxyV2, src: "203.0.113.7:40123", dst: "198.51.100.1:6379"}, h)
	assert.Equal(t, []int{ProxyV1}, obs.events().proxyAccepted)
}

// headerFirst is a client connection whose first write carries header
// ahead of its bytes, in one segment.
type headerFirst struct {
	net.Conn
	header []byte
}

func (h *headerFirst) Write(b []byte) (int, error) {
	if h.header != nil {
		all := append(h.header, b...)
		h.header = nil
		n, err := h.Conn.Write(all)
		return max(0, n-(len(all)-len(b))), err
	}
	return h.Conn.Write(b)
}

// TestAcceptProxyClosedWhileWaiting: a client still owing its header when
// the route closes is rejected for the shutdown, not counted as a client
// that sent no header, and Close does not wait for its timeout.
func TestAcceptProxyClosedWhileWaiting(t *testing.T) {
	obs := &recorder{}
	r := &Route{AcceptProxy: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, ProxyHeaderTimeout: time.Hour, Observer: obs,
		Logger: zaptest.NewLogger(t)}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	require.Eventually(t, func() bool { return r.Active() == 1 }, 5*time.Second, time.Millisecond)
	begin := time.Now()
	require.NoError(t, r.Close())
	require.NoError(t, <-done)
	assert.Less(t, time.Since(begin), 5*time.Second)
	requireClosed(t, c)
	ev := obs.events()
	assert.Equal(t, []string{RejectShutdown}, ev.rejected)
	assert.Empty(t, ev.proxyRejected)
}
