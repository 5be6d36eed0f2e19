package proxy

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireReset reads c to its end, within 5 s, and fails the test unless
// the connection ended with a reset: a FIN (EOF) is what a complete answer
// ends with. It returns what was read before the reset.
func requireReset(t *testing.T, c net.Conn) string {
	t.Helper()
	got, err := requireClosed(t, c)
	require.ErrorIs(t, err, syscall.ECONNRESET, "want a reset, not a clean close")
	return got
}

// TestResetPassesThrough: a side that resets its connection gets the
// other side reset in turn, on every data path, and the reset is
// reported once with the direction of the side that failed. A side that
// closes cleanly still reaches the other as a FIN.
func TestResetPassesThrough(t *testing.T) {
	for name, newRoute := range dataPaths {
		t.Run(name, func(t *testing.T) {
			t.Run("backend resets mid-answer", func(t *testing.T) {
				// A close-delimited answer cut short must not look
				// complete to the client.
				obs := &recorder{}
				cut := make(chan struct{})
				r := newRoute()
				r.Observer = obs
				r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
					io.ReadFull(c, make([]byte, 3))
					c.Write([]byte("half"))
					<-cut
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				})}})
				c := dial(t, startRoute(t, r))
				_, err := c.Write([]byte("GET"))
				require.NoError(t, err)
				assert.Equal(t, "half", exchangeRead(t, c, 4))
				close(cut)
				assert.Empty(t, requireReset(t, c))
				waitFor(t, func() bool { return len(obs.events().closed) == 1 })
				assert.Equal(t, []string{DirectionDown}, obs.events().resets)
			})
			t.Run("client resets", func(t *testing.T) {
				obs := &recorder{}
				read := make(chan struct{})
				ended := make(chan error, 1)
				r := newRoute()
				r.Observer = obs
				r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
					io.ReadFull(c, make([]byte, 5))
					close(read)
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, err := io.Copy(io.Discard, c)
					ended <- err
				})}})
				c := dial(t, startRoute(t, r))
				_, err := c.Write([]byte("hello"))
				require.NoError(t, err)
				<-read
				require.NoError(t, c.SetLinger(0))
				require.NoError(t, c.Close())
				assert.ErrorIs(t, <-ended, syscall.ECONNRESET, "the backend's read")
				waitFor(t, func() bool { return len(obs.events().closed) == 1 })
				assert.Equal(t, []string{DirectionUp}, obs.events().resets)
			})
			t.Run("backend closes cleanly", func(t *testing.T) {
				obs := &recorder{}
				r := newRoute()
				r.Observer = obs
				r.SetBackends([]Backend{{Addr: startBackend(t, func(c net.Conn) {
					io.ReadFull(c, make([]byte, 3))
					c.Write([]byte("whole"))
				})}})
				c := dial(t, startRoute(t, r))
				_, err := c.Write([]byte("GET"))
				require.NoError(t, err)
				got, err := requireClosed(t, c)
				require.NoError(t, err, "a FIN, not a reset")
				assert.Equal(t, "whole", got)
				require.NoError(t, c.Close())
				waitFor(t, func() bool { return len(obs.events().closed) == 1 })
				assert.Empty(t, obs.events().resets)
			})
		})
	}
}

// TestRejectResets: a connection closed without reaching a backend is
// reset, so that its client does not take the close for an empty answer,
// whichever way it was turned away. The clients send nothing: with unread
// bytes the kernel resets a closed connection anyway.
func TestRejectResets(t *testing.T) {
	paths := map[string]func() *Route{
		"loop":       func() *Route { return &Route{} },
		"goroutines": func() *Route { return &Route{noLoops: true} },
	}
	for name, newRoute := range paths {
		t.Run(name, func(t *testing.T) {
			for _, tt := range []struct {
				name   string
				reason string
				setup  func(t *testing.T, r *Route) // before Serve
				// reject connects to addr, for a connection the route
				// turns away.
				reject func(t *testing.T, r *Route, addr string) (net.Conn, error)
			}{
				{
					name: "backend wait runs out", reason: RejectNoBackend,
					setup: func(t *testing.T, r *Route) {
						r.BackendWait = 100 * time.Millisecond
						r.SetBackends([]Backend{{Addr: deadAddr(t)}})
					},
					reject: func(t *testing.T, r *Route, addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
				},
				{
					name: "no backend", reason: RejectNoBackend,
					setup:  func(t *testing.T, r *Route) { r.SetBackends(nil) },
					reject: func(t *testing.T, r *Route, addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
				},
				{
					name: "limit", reason: RejectLimit,
					setup: func(t *testing.T, r *Route) {
						r.MaxConns = 1
						r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
					},
					reject: func(t *testing.T, r *Route, addr string) (net.Conn, error) {
						assert.Equal(t, "in", exchange(t, dial(t, addr), "in"))
						return net.Dial("tcp", addr)
					},
				},
				{
					name: "route closes while waiting", reason: RejectShutdown,
					setup: func(t *testing.T, r *Route) {
						r.BackendWait = time.Minute
						r.SetBackends([]Backend{{Addr: deadAddr(t)}})
					},
					reject: func(t *testing.T, r *Route, addr string) (net.Conn, error) {
						c := dial(t, addr)
						waitFor(t, func() bool { return r.Active() == 1 })
						require.NoError(t, r.Close())
						return c, nil
					},
				},
			} {
				t.Run(tt.name, func(t *testing.T) {
					obs := &recorder{}
					r := newRoute()
					r.Observer = obs
					tt.setup(t, r)
					c, err := tt.reject(t, r, startRoute(t, r))
					if err != nil {
						// Reset before the connect returned.
						require.ErrorIs(t, err, syscall.ECONNRESET)
					} else {
						defer c.Close()
						assert.Empty(t, requireReset(t, c))
					}
					waitFor(t, func() bool { return len(obs.events().rejected) == 1 })
					assert.Equal(t, []string{tt.reason}, obs.events().rejected)
				})
			}
		})
	}
}

// exchangeRead reads n bytes from c, within 5 s.
func exchangeRead(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err)
	return string(buf)
}
