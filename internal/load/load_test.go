package load

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
)

// server is a loopback stand-in for the dataserver fixture's whoami mode:
// it reads the header, answers with its identity and, like the fixture,
// echoes until EOF. Its answer can be changed while it runs.
type server struct {
	ln   net.Listener
	name atomic.Pointer[string]
	// reply, if set, replaces the whole answer: it gets the connection
	// after the header and closes it when done.
	reply atomic.Pointer[func(net.Conn)]
	wg    sync.WaitGroup
}

func newServer(t *testing.T, name string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &server{ln: ln}
	s.name.Store(&name)
	s.wg.Go(s.serve)
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() { s.answer(c) })
	}
}

func (s *server) answer(c net.Conn) {
	defer c.Close()
	accepted := time.Now()
	if _, err := dataproto.ReadHeader(c); err != nil {
		return
	}
	if f := s.reply.Load(); f != nil {
		(*f)(c)
		return
	}
	id := dataproto.Identity{Name: *s.name.Load(), Local: netip.MustParseAddrPort(c.LocalAddr().String()), Accepted: accepted, Listening: accepted}
	if _, err := c.Write(id.Encode()); err != nil {
		return
	}
	io.Copy(c, c)
}

func TestWhoami(t *testing.T) {
	s := newServer(t, "a")
	id, err := Whoami(t.Context(), s.addr())
	require.NoError(t, err)
	assert.Equal(t, "a", id.Name)
	assert.Equal(t, s.addr(), id.Local.String())
}

// TestWhoamiStrict: an answer is an identity followed by EOF; anything
// else, or an end before the identity, is a failure.
func TestWhoamiStrict(t *testing.T) {
	tests := []struct {
		name    string
		reply   func(net.Conn)
		wantErr func(error) bool
	}{
		{
			name:    "closed before the identity",
			reply:   func(net.Conn) {},
			wantErr: IsNoBackend,
		},
		{
			// After the half-close, as the ambassador resets a connection
			// it found no backend for; a reset before it would fail the
			// half-close instead (ENOTCONN).
			name: "reset before the identity",
			reply: func(c net.Conn) {
				io.Copy(io.Discard, c)
				c.(*net.TCPConn).SetLinger(0)
			},
			wantErr: IsNoBackend,
		},
		{
			name: "bytes after the identity",
			reply: func(c net.Conn) {
				c.Write(append(dataproto.Identity{Name: "a", Local: netip.MustParseAddrPort("127.0.0.1:1")}.Encode(), "extra"...))
			},
			wantErr: func(err error) bool { return !IsNoBackend(err) },
		},
		{
			name:    "not an identity",
			reply:   func(c net.Conn) { c.Write([]byte("hello\n")) },
			wantErr: func(err error) bool { return !IsNoBackend(err) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, "a")
			s.reply.Store(&tt.reply)
			_, err := Whoami(t.Context(), s.addr())
			require.Error(t, err)
			assert.True(t, tt.wantErr(err), "%v", err)
		})
	}
}

// TestWhoamiHang: a server that never answers makes the attempt end at
// its deadline, which is neither a close nor a missing backend.
func TestWhoamiHang(t *testing.T) {
	s := newServer(t, "a")
	release := make(chan struct{})
	defer close(release)
	hang := func(net.Conn) { <-release }
	s.reply.Store(&hang)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := Whoami(ctx, s.addr())
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.False(t, Closed(err))
	assert.False(t, IsNoBackend(err))
	assert.Equal(t, "hung (deadline)", How(err))
}

// TestLoadFollowsServer: a load records which server answered each
// attempt; WaitLanded sees a change of server, and First finds the first
// attempt the new one accepted.
func TestLoadFollowsServer(t *testing.T) {
	s := newServer(t, "a")
	l := Start(s.addr(), Config{Interval: time.Millisecond, WaitTimeout: 10 * time.Second})
	defer l.Stop()
	_, err := l.WaitLanded(t.Context(), "a", time.Now(), 5)
	require.NoError(t, err)

	b := "b"
	changed := time.Now()
	s.name.Store(&b)
	_, err = l.WaitLanded(t.Context(), "b", changed, 5)
	require.NoError(t, err)
	res := l.Stop()

	assert.Empty(t, res.Failed(), "failed attempts:\n%s", Describe(res.Failed()))
	assert.Len(t, res.Attempts, len(res.On("a"))+len(res.On("b")))
	assert.GreaterOrEqual(t, len(res.StartedAfter(changed).On("b")), 5)
	first, ok := res.First("b", changed)
	require.True(t, ok)
	for _, a := range res.On("b") {
		if !a.ID.Accepted.Before(changed) {
			assert.False(t, a.ID.Accepted.Before(first.ID.Accepted), "an attempt on b accepted before the first")
		}
	}
	_, ok = res.First("b", time.Now().Add(time.Hour))
	assert.False(t, ok)
	for i := 1; i < len(res.Attempts); i++ {
		assert.False(t, res.Attempts[i].Start.Before(res.Attempts[i-1].Start), "attempts in order of start")
	}
	assert.Contains(t, res.String(), "failed=0")
	assert.Positive(t, res.Longest())
}

// TestLoadRecordsFailures: attempts to a server that closes without an
// answer fail, look like a missing backend, and are described.
func TestLoadRecordsFailures(t *testing.T) {
	s := newServer(t, "a")
	shut := func(net.Conn) {}
	s.reply.Store(&shut)
	l := Start(s.addr(), Config{Interval: time.Millisecond, MaxAttempts: 10})
	defer l.Stop()
	require.Eventually(t, func() bool { return len(l.Result().Attempts) == 10 }, 10*time.Second, 5*time.Millisecond)
	res := l.Stop()
	require.Len(t, res.Failed(), 10)
	for _, a := range res.Attempts {
		assert.True(t, IsNoBackend(a.Err), "%v", a.Err)
		assert.Empty(t, a.ID.Name)
	}
	assert.Contains(t, res.String(), "failed=10")
}

// TestDescribe lists ten attempts at most, and says how many more.
func TestDescribe(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	ok := Attempt{Start: at, End: at.Add(3 * time.Millisecond), ID: dataproto.Identity{Name: "a", Accepted: at.Add(time.Millisecond)}}
	failed := Attempt{Start: at, End: at.Add(time.Second), Err: io.EOF}
	assert.Equal(t, "  03:04:05.000 +3ms: a (accepted 03:04:05.001)\n  03:04:05.000 +1s: EOF\n", Describe([]Attempt{ok, failed}))
	many := make([]Attempt, 12)
	for i := range many {
		many[i] = ok
	}
	d := Describe(many)
	assert.Equal(t, 11, strings.Count(d, "\n"))
	assert.Contains(t, d, "  ... and 2 more\n")
}

// TestLoadSkipsBusyTicks: a tick that finds every slot busy is skipped and
// counted, not queued; stopping waits for the attempts in flight.
func TestLoadSkipsBusyTicks(t *testing.T) {
	s := newServer(t, "a")
	release := make(chan struct{})
	held := func(c net.Conn) {
		<-release
		c.Write(dataproto.Identity{Name: "late", Local: netip.MustParseAddrPort("127.0.0.1:1")}.Encode())
	}
	s.reply.Store(&held)
	l := Start(s.addr(), Config{Interval: time.Millisecond, Concurrency: 2})
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.skipped >= 5
	}, 10*time.Second, time.Millisecond)
	l.cancel() // what Stop does first: no attempt starts from now on
	close(release)
	res := l.Stop()
	assert.Len(t, res.Attempts, 2, "only the two in flight ran")
	assert.Len(t, res.On("late"), 2, "and they were not cut short by the stop")
	assert.GreaterOrEqual(t, res.Skipped, 5)
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	assert.Equal(t, defaultInterval, c.interval())
	assert.Equal(t, defaultConcurrency, c.concurrency())
	assert.Equal(t, defaultTimeout, c.timeout())
	assert.Equal(t, defaultWaitTimeout, c.waitTimeout())
	c = Config{Interval: time.Second, Concurrency: 3, Timeout: time.Minute, WaitTimeout: time.Hour}
	assert.Equal(t, time.Second, c.interval())
	assert.Equal(t, 3, c.concurrency())
	assert.Equal(t, time.Minute, c.timeout())
	assert.Equal(t, time.Hour, c.waitTimeout())
}

func TestHow(t *testing.T) {
	tests := []struct {
		err    error
		want   string
		closed bool
	}{
		{nil, "open", false},
		{io.EOF, "EOF", true},
		{io.ErrUnexpectedEOF, "EOF", true},
		{&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, "reset", true},
		{&net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, "broken pipe", true},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, "hung (deadline)", false},
		{errors.New("other"), "other", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, How(tt.err))
		assert.Equal(t, tt.closed, tt.err != nil && Closed(tt.err), "%v", tt.err)
	}
}

// TestSession: an established session knows its server and echoes; a
// server that closes fails the echo.
func TestSession(t *testing.T) {
	s := newServer(t, "a")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	sess, err := Open(ctx, s.addr())
	require.NoError(t, err)
	defer sess.Close()
	assert.Equal(t, "a", sess.ID.Name)
	require.NoError(t, sess.Echo([]byte("hello"), 5*time.Second))
	require.NoError(t, sess.Echo([]byte("again"), 5*time.Second))

	shut := func(c net.Conn) { c.Close() }
	s.reply.Store(&shut)
	_, err = Open(ctx, s.addr())
	require.Error(t, err)
	assert.True(t, IsNoBackend(err), "%v", err)

	require.NoError(t, sess.Conn.CloseWrite())
	err = sess.Echo([]byte("x"), time.Second)
	require.Error(t, err, "an echo after the half-close")
}
