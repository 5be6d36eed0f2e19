package proxy

import (
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEstablishedOncePerPath: whatever connects a connection and whatever
// carries its bytes, conn.established runs exactly once per backend the
// connection reaches, called by the step of that path, and before the
// backend reads the client's first byte: the one place for a
// per-connection step such as a PROXY protocol header.
func TestEstablishedOncePerPath(t *testing.T) {
	tests := []struct {
		name  string
		route func() *Route
		// backends returns the route's first set, given the backend
		// that answers (echo), and what to do, if anything, once the
		// client has sent everything.
		backends func(t *testing.T, echo Backend) (first []Backend, then func(*Route))
		// want is who called established, in order, and for which
		// backend ("echo", or "other").
		want []string
	}{{
		name:  "event loop connects and carries",
		route: func() *Route { return &Route{} },
		backends: func(t *testing.T, echo Backend) ([]Backend, func(*Route)) {
			return []Backend{echo}, nil
		},
		want: []string{"(*eventLoop).startConn echo"},
	}, {
		// The loop's connect is refused; the goroutine path connects to
		// the next backend and hands the connection back to a loop.
		name:  "event loop's connect refused, goroutine connects",
		route: func() *Route { return &Route{} },
		backends: func(t *testing.T, echo Backend) ([]Backend, func(*Route)) {
			return []Backend{{ID: "other", Addr: deadAddr(t)}, echo}, nil
		},
		want: []string{"(*conn).serve echo"},
	}, {
		name:  "no event loops: goroutines connect and carry",
		route: func() *Route { return &Route{noLoops: true} },
		backends: func(t *testing.T, echo Backend) ([]Backend, func(*Route)) {
			return []Backend{echo}, nil
		},
		want: []string{"(*conn).serve echo"},
	}, {
		name:  "idle timeout: goroutines connect and carry",
		route: func() *Route { return &Route{IdleTimeout: time.Minute} },
		backends: func(t *testing.T, echo Backend) ([]Backend, func(*Route)) {
			return []Backend{echo}, nil
		},
		want: []string{"(*conn).serve echo"},
	}, {
		// The first backend resets the connection before answering and
		// leaves the set: the replay resumes on the echo.
		name:  "replay resumes",
		route: func() *Route { return &Route{ReplayBytes: 64} },
		backends: func(t *testing.T, echo Backend) ([]Backend, func(*Route)) {
			old, reset := resetter(t, "")
			old.ID = "other"
			return []Backend{old}, func(r *Route) {
				<-reset
				r.SetBackends([]Backend{echo})
			}
		},
		want: []string{"(*eventLoop).startConn other", "(*eventLoop).resume echo"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				calls []string // guarded by mu
				// callsAtFirstByte is len(calls) when the echo read
				// the client's first byte; guarded by mu.
				callsAtFirstByte = -1
			)
			echo := Backend{ID: "echo", Addr: startBackend(t, func(c net.Conn) {
				first := make([]byte, 1)
				if _, err := io.ReadFull(c, first); err != nil {
					return
				}
				mu.Lock()
				callsAtFirstByte = len(calls)
				mu.Unlock()
				c.Write(first)
				echo(c)
			})}
			r := tt.route()
			r.onEstablished = func(c *conn, b Backend) {
				assert.Same(t, r, c.route)
				call := establishedCaller(t) + " " + b.ID
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, call)
			}
			first, then := tt.backends(t, echo)
			r.SetBackends(first)
			c := dial(t, startRoute(t, r))
			_, err := c.Write([]byte("hello"))
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			if then != nil {
				then(r)
			}
			got, err := readAll(t, c)
			require.NoError(t, err)
			assert.Equal(t, "hello", got)
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, tt.want, calls)
			assert.Equal(t, len(tt.want), callsAtFirstByte, "established ran before the backend read a byte")
		})
	}

	t.Run("no backend", func(t *testing.T) {
		r := &Route{}
		r.onEstablished = func(*conn, Backend) { t.Error("established without a backend") }
		r.SetBackends([]Backend{{Addr: deadAddr(t)}})
		assertRejected(t, startRoute(t, r))
	})
}

// establishedCaller returns the function, within the package, that called
// conn.established, for an onEstablished hook to call.
func establishedCaller(t *testing.T) string {
	t.Helper()
	pcs := make([]uintptr, 16)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	const pkg = "github.com/ambassadord/ambassadord/pkg/proxy."
	seen := false
	for {
		f, more := frames.Next()
		name := strings.TrimPrefix(f.Function, pkg)
		if seen {
			return name
		}
		seen = name == "(*conn).established"
		if !more {
			t.Error("onEstablished not called by conn.established")
			return ""
		}
	}
}
