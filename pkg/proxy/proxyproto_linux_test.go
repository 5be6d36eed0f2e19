package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestProxyHeaderReplay: a connection replayed on a new backend sends it
// a header of its own before the replayed bytes, with the same client
// address; and what a client sent after its own header is replayed too.
func TestProxyHeaderReplay(t *testing.T) {
	for _, accept := range []bool{false, true} {
		name := "header sent"
		if accept {
			name = "header accepted and sent"
		}
		t.Run(name, func(t *testing.T) {
			obs := &recorder{}
			old, reset := resetter(t, "")
			next, seen := proxyEcho(t, "next", "")
			r := &Route{Observer: obs, ReplayBytes: 64, ProxyProtocol: ProxyV2}
			if accept {
				r.AcceptProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}
			r.SetBackends([]Backend{old})
			addr := startRoute(t, r)
			c := dial(t, addr)
			msg := []byte("hello")
			wantSrc, wantDst := c.LocalAddr().String(), addr
			if accept {
				msg = append([]byte("PROXY TCP4 203.0.113.7 198.51.100.1 40123 6379\r\n"), msg...)
				wantSrc, wantDst = "203.0.113.7:40123", "198.51.100.1:6379"
			}
			_, err := c.Write(msg)
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			<-reset
			time.Sleep(20 * time.Millisecond) // the watcher hears of the stop later
			r.SetBackends([]Backend{next})

			got, err := readAll(t, c)
			require.NoError(t, err)
			assert.Equal(t, "hello", got)
			h := nextHeader(t, seen)
			require.NoError(t, h.err)
			assert.Equal(t, seenHeader{version: ProxyV2, src: wantSrc, dst: wantDst}, h)
			require.Eventually(t, func() bool { return len(obs.events().closed) == 2 }, 5*time.Second, 10*time.Millisecond)
			ev := obs.events()
			assert.Equal(t, []Backend{next}, ev.replayed)
			assert.Equal(t, []int{ProxyV2, ProxyV2}, ev.proxySent, "one header per backend")
		})
	}
}

// TestAcceptProxyUntrustedNeverRead: an untrusted client is reset by the
// event loop that accepted it, before any byte of it is read: a client
// that sends nothing is not kept waiting for the header timeout.
func TestAcceptProxyUntrustedNeverRead(t *testing.T) {
	obs := &recorder{}
	r := &Route{AcceptProxy: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, ProxyHeaderTimeout: time.Hour, Observer: obs}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r)
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		defer c.Close()
		requireClosed(t, c)
	}
	assert.Less(t, time.Since(start), 5*time.Second)
	require.Eventually(t, func() bool { return len(obs.events().proxyRejected) == 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{ProxyUntrusted}, obs.events().proxyRejected)
}

// TestHalfPrefix: a half's prefix (the PROXY header of a connection an
// event loop connected) reaches dst before src's first bytes, with them
// when src has sent some, alone when it has not (a backend that speaks
// first waits for it), and before src's FIN when that is all there is.
func TestHalfPrefix(t *testing.T) {
	for _, tt := range []struct {
		name  string
		src   string // what src has sent before the pump
		close bool   // and its FIN
		want  string // what dst has after the pump
	}{
		{name: "with the client's first bytes", src: "hello", want: "HDRhello"},
		{name: "alone", want: "HDR"},
		{name: "before the FIN", close: true, want: "HDR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, src := socketPair(t)
			dst, backend := socketPair(t)
			l := &eventLoop{buf: make([]byte, loopBufferSize)}
			h := &half{src: src, dst: dst, prefix: []byte("HDR")}
			if tt.src != "" {
				_, err := unix.Write(client, []byte(tt.src))
				require.NoError(t, err)
			}
			if tt.close {
				require.NoError(t, unix.Shutdown(client, unix.SHUT_WR))
				h.finPending = true
			}
			require.NoError(t, l.pump(h))
			assert.Nil(t, h.prefix)
			assert.False(t, h.holds())
			assert.Equal(t, int64(len(tt.want)), h.written)
			assert.Equal(t, tt.close, h.done, "the FIN passed on")
			buf := make([]byte, 64)
			n, err := unix.Read(backend, buf)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(buf[:n]))

			// What the client sends next follows, without the prefix.
			if !tt.close {
				_, err = unix.Write(client, []byte(" again"))
				require.NoError(t, err)
				require.NoError(t, l.pump(h))
				n, err = unix.Read(backend, buf)
				require.NoError(t, err)
				assert.Equal(t, " again", string(buf[:n]))
			}
		})
	}
}

// socketPair returns a connected pair of non-blocking stream sockets,
// closed when the test ends.
func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() {
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return fds[0], fds[1]
}
