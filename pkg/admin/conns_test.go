package admin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// fakeController is a controller that is ready and accepts every rewire.
type fakeController struct{}

func (fakeController) Status() *api.Status { return &api.Status{Ready: true} }

func (fakeController) Rewire(context.Context, api.RewireRequest) (api.RewireReply, error) {
	return api.RewireReply{}, nil
}

// testServer returns a server of a controller that is ready and accepts
// every rewire, within limits, stopped when the test ends.
func testServer(t *testing.T, limits Limits) *Server {
	t.Helper()
	s := &Server{Controller: fakeController{}, Logger: zaptest.NewLogger(t), Limits: limits}
	t.Cleanup(s.stop)
	return s
}

// serveTCP serves acc's API of s on a loopback port, and returns its
// address and its connection cap.
func serveTCP(t *testing.T, s *Server, acc access) (string, *connCap) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	capped := s.serve(ln, s.handlerFor(acc))
	return ln.Addr().String(), capped
}

// serverSockets counts this process's descriptors that are accepted TCP
// connections on port: the server's ends, told from the clients' (which
// the test holds too) by their local port.
func serverSockets(t *testing.T, port int) int {
	t.Helper()
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] == "0A" { // 0A: LISTEN
				continue
			}
			_, local, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(local, 16, 16); err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && inodes[link] {
			n++
		}
	}
	return n
}

func portOfAddr(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

// closedWithin reads c until it ends, for at most within, and returns how
// long that took and what was read; err is nil when c ended (EOF or reset)
// and the deadline error when it did not.
func closedWithin(c net.Conn, within time.Duration) (took time.Duration, read string, err error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return time.Since(start), string(b), err
	}
	return time.Since(start), string(b), nil
}

func TestAdminLimitsDefaults(t *testing.T) {
	for _, tt := range []struct {
		name   string
		limits Limits
		want   Limits
	}{
		{"zero means the defaults", Limits{},
			Limits{defaultReadTimeout, defaultWriteTimeout, defaultIdleTimeout, defaultMaxConns}},
		{"set fields win", Limits{time.Second, 2 * time.Second, 3 * time.Second, 4},
			Limits{time.Second, 2 * time.Second, 3 * time.Second, 4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.limits
			assert.Equal(t, tt.want, Limits{l.readTimeout(), l.writeTimeout(), l.idleTimeout(), l.maxConns()})
		})
	}
	// A rewire that waited for the run loop must still be able to answer.
	assert.Greater(t, Limits{}.writeTimeout(), requestTimeout)
}

// TestAdminConnCap: connections past the cap take no descriptor (the
// longest idle ones are closed), a fresh client is still served, and when
// every held connection has a request in flight a new one is answered 503.
func TestAdminConnCap(t *testing.T) {
	const limit, crowd = 8, 100

	t.Run("idle crowd", func(t *testing.T) {
		a := testServer(t, Limits{MaxConns: limit})
		addr, _ := serveTCP(t, a, access{tcp: true})
		var idle []net.Conn
		t.Cleanup(func() {
			for _, c := range idle {
				c.Close()
			}
		})
		for range crowd {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			idle = append(idle, c)
		}
		// Accepted after the crowd: once it is answered, the whole crowd
		// has been accepted.
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://" + addr + "/healthz")
		require.NoError(t, err, "a fresh client behind %d idle connections", crowd)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.LessOrEqual(t, serverSockets(t, portOfAddr(t, addr)), limit, "descriptors held by the admin port")

		closed := 0
		for _, c := range idle {
			if _, _, err := closedWithin(c, 10*time.Millisecond); err == nil {
				closed++
			}
		}
		assert.GreaterOrEqual(t, closed, crowd-limit, "idle connections closed by the cap")
	})

	t.Run("all busy", func(t *testing.T) {
		a := testServer(t, Limits{MaxConns: limit})
		addr, capped := serveTCP(t, a, access{writable: true})
		// Requests in flight: bodies that never come.
		for range limit {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			_, err = io.WriteString(c, "POST /rewire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool { return capped.held(http.StateActive) == limit }, 5*time.Second, 10*time.Millisecond)
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	})
}

// TestAdminTimeouts: an admin connection is closed after the idle timeout
// between requests, and after the read timeout when it sends nothing or a
// request body too slowly.
func TestAdminTimeouts(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, tt := range []struct {
		name   string
		limits Limits
		send   string
		want   string // in what the client reads before the close
	}{
		{"idle keep-alive", Limits{IdleTimeout: timeout},
			"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK"},
		{"nothing sent", Limits{ReadTimeout: timeout}, "", ""},
		{"slow headers", Limits{ReadTimeout: timeout}, "GET /healthz HTTP/1.1\r\nHost:", ""},
		{"slow body", Limits{ReadTimeout: timeout},
			"POST /rewire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", "400 Bad Request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testServer(t, tt.limits)
			addr, _ := serveTCP(t, a, access{writable: true})
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer c.Close()
			_, err = io.WriteString(c, tt.send)
			require.NoError(t, err)
			took, read, err := closedWithin(c, 5*time.Second)
			require.NoError(t, err, "the connection is still open after %s; read %q", took, read)
			t.Logf("closed after %s", took.Round(time.Millisecond))
			assert.Contains(t, read, tt.want)
			assert.GreaterOrEqual(t, took, timeout/2)
			assert.Less(t, took, 2*time.Second)
		})
	}
}

func TestRateLog(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at  time.Duration
		n   int
		log bool
	}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"the first event logs", []step{{0, 1, true}}},
		{"a burst logs once, then its count", []step{
			{0, 1, true}, {100 * time.Millisecond, 0, false}, {500 * time.Millisecond, 0, false},
			{1100 * time.Millisecond, 3, true}, {1200 * time.Millisecond, 0, false}, {5 * time.Second, 2, true},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r rateLog
			for _, s := range tt.steps {
				n, log := r.event(t0.Add(s.at))
				assert.Equal(t, step{s.at, s.n, s.log}, step{s.at, n, log})
			}
		})
	}
}
