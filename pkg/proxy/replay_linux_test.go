package proxy

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// resetter returns a backend that takes each connection, waits for the
// client's first bytes without reading them, writes answer (if any), and
// resets the connection: what the kernel of a stopped app does to the
// connections left in its accept queue. reset is closed after each reset.
func resetter(t *testing.T, answer string) (b Backend, reset <-chan struct{}) {
	t.Helper()
	return ender(t, answer, true)
}

// closer is resetter with a FIN in place of the reset, after reading the
// client's first bytes: what a published port (docker-proxy) does when
// the app behind it no longer listens.
func closer(t *testing.T) (b Backend, closed <-chan struct{}) {
	t.Helper()
	return ender(t, "", false)
}

func ender(t *testing.T, answer string, reset bool) (b Backend, ended <-chan struct{}) {
	t.Helper()
	done := make(chan struct{}, 16)
	addr := startBackend(t, func(c net.Conn) {
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			return
		}
		peek := make([]byte, 64)
		raw.Read(func(fd uintptr) bool {
			_, _, err := unix.Recvfrom(int(fd), peek, unix.MSG_PEEK)
			return err != unix.EAGAIN
		})
		if answer != "" {
			c.Write([]byte(answer))
			time.Sleep(50 * time.Millisecond) // for the proxy to pass it on
		}
		if reset {
			c.(*net.TCPConn).SetLinger(0) // Close resets
		} else {
			// Unread bytes would have the close reset too.
			c.Read(peek)
		}
		c.Close()
		done <- struct{}{}
	})
	return Backend{ID: "resetter", Addr: addr}, done
}

// counting wraps handle, counting the connections it serves.
func counting(n *atomic.Int32, handle func(net.Conn)) func(net.Conn) {
	return func(c net.Conn) {
		n.Add(1)
		handle(c)
	}
}

// TestReplayReset: a backend that resets a connection before answering
// and then leaves the set (a stopped container) does not fail it: the
// connection is replayed on the new set, with what the client had sent
// and its FIN, and is reported closed on the first backend, opened on
// the second, and replayed there, not reset.
func TestReplayReset(t *testing.T) {
	obs := &recorder{}
	old, reset := resetter(t, "")
	next := Backend{ID: "next", Addr: startBackend(t, echo)}
	r := &Route{Observer: obs, ReplayBytes: 64}
	r.SetBackends([]Backend{old})
	c := dial(t, startRoute(t, r))
	_, err := c.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	<-reset
	time.Sleep(20 * time.Millisecond) // the watcher hears of the stop later
	r.SetBackends([]Backend{next})

	requireReplayed(t, c, obs, old, next, "hello")
}

// requireReplayed reads c to its end and requires msg there, echoed by
// next after a replay from old: reported closed on old, opened on next,
// replayed there, and neither rejected nor reset.
func requireReplayed(t *testing.T, c net.Conn, obs *recorder, old, next Backend, msg string) {
	t.Helper()
	got, err := readAll(t, c)
	require.NoError(t, err)
	assert.Equal(t, msg, got, "replayed on next")
	waitFor(t, func() bool { return len(obs.events().closed) == 2 })
	n := int64(len(msg))
	ev := obs.events()
	assert.Equal(t, []Backend{old, next}, ev.opened)
	assert.Equal(t, []closedConn{{old, n, 0}, {next, n, n}}, ev.closed)
	assert.Equal(t, []Backend{next}, ev.replayed)
	assert.Empty(t, ev.rejected)
	assert.Empty(t, ev.resets)
}

// TestReplayFIN: a backend that closes a connection (FIN) before a byte,
// as a published port does once the app behind it stopped listening, and
// then leaves the set, does not end it: the connection is replayed on the
// new set. One that stays in the set is tried again after closedWait (a
// published port before its app listens), once: closed again, the client
// gets the FIN, not a reset, and nothing is rejected.
func TestReplayFIN(t *testing.T) {
	t.Run("backend gone", func(t *testing.T) {
		obs := &recorder{}
		old, closed := closer(t)
		next := Backend{ID: "next", Addr: startBackend(t, echo)}
		r := &Route{Observer: obs, ReplayBytes: 64}
		r.SetBackends([]Backend{old})
		c := dial(t, startRoute(t, r))
		_, err := c.Write([]byte("hello"))
		require.NoError(t, err)
		<-closed
		time.Sleep(20 * time.Millisecond)
		r.SetBackends([]Backend{next})
		require.NoError(t, c.CloseWrite())
		got, err := readAll(t, c)
		require.NoError(t, err)
		assert.Equal(t, "hello", got)
		waitFor(t, func() bool { return len(obs.events().closed) == 2 })
		assert.Equal(t, []Backend{next}, obs.events().replayed)
		assert.Empty(t, obs.events().resets)
	})
	t.Run("backend stays and listens", func(t *testing.T) {
		// A published port before its app listens: the first connection
		// closed, the next ones served.
		obs := &recorder{}
		var n atomic.Int32
		addr := startBackend(t, func(c net.Conn) {
			if n.Add(1) == 1 {
				c.Read(make([]byte, 64))
				return // closed: a FIN
			}
			echo(c)
		})
		b := Backend{ID: "starting", Addr: addr}
		r := &Route{Observer: obs, ReplayBytes: 64}
		r.SetBackends([]Backend{b})
		c := dial(t, startRoute(t, r))
		start := time.Now()
		_, err := c.Write([]byte("hello"))
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		got, err := readAll(t, c)
		require.NoError(t, err)
		assert.Equal(t, "hello", got)
		assert.GreaterOrEqual(t, time.Since(start), closedWait)
		assert.Less(t, time.Since(start), replayWait)
		waitFor(t, func() bool { return len(obs.events().closed) == 2 })
		assert.Equal(t, []Backend{b}, obs.events().replayed)
	})
	t.Run("backend stays and closes again", func(t *testing.T) {
		obs := &recorder{}
		old, _ := closer(t)
		r := &Route{Observer: obs, ReplayBytes: 64}
		r.SetBackends([]Backend{old})
		c := dial(t, startRoute(t, r))
		_, err := c.Write([]byte("hello"))
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		got, err := readAll(t, c)
		require.NoError(t, err, "a FIN, not a reset: replayed once")
		assert.Empty(t, got)
		waitFor(t, func() bool { return len(obs.events().closed) == 2 })
		ev := obs.events()
		assert.Empty(t, ev.rejected)
		assert.Equal(t, []Backend{old}, ev.replayed)
		assert.Empty(t, ev.resets)
	})
	t.Run("replay off", func(t *testing.T) {
		old, _ := closer(t)
		r := &Route{}
		r.SetBackends([]Backend{old})
		c := dial(t, startRoute(t, r))
		start := time.Now()
		_, err := c.Write([]byte("hello"))
		require.NoError(t, err)
		got, err := readAll(t, c)
		require.NoError(t, err)
		assert.Empty(t, got)
		assert.Less(t, time.Since(start), replayWait/2, "the FIN passed on at once")
	})
}

// TestReplayWaitsForBackend: a backend recreated (stopped, forgotten,
// started again) takes the replayed connection once it is in the set,
// within BackendWait; what the client sends during the wait follows.
func TestReplayWaitsForBackend(t *testing.T) {
	obs := &recorder{}
	old, _ := resetter(t, "")
	next := Backend{ID: "next", Addr: startBackend(t, echo)}
	r := &Route{Observer: obs, ReplayBytes: 64, BackendWait: 5 * time.Second}
	r.SetBackends([]Backend{old})
	c := dial(t, startRoute(t, r))
	_, err := c.Write([]byte("hel"))
	require.NoError(t, err)
	// The replay began (and the connection left its backend) before the
	// engine reports the backend's death.
	require.Eventually(t, func() bool { return len(obs.events().closed) == 1 }, 5*time.Second, time.Millisecond)
	r.Forget(old.ID)
	_, err = c.Write([]byte("lo"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	time.Sleep(100 * time.Millisecond)
	r.SetBackends([]Backend{next})

	got, err := readAll(t, c)
	require.NoError(t, err)
	assert.Equal(t, "hello", got)
}

// TestReplayNotWhileBackendStays: a backend that resets a connection and
// stays in the set is not tried again: the client sees its connection
// reset, replayWait later, and it is reported rejected.
func TestReplayNotWhileBackendStays(t *testing.T) {
	obs := &recorder{}
	old, _ := resetter(t, "")
	r := &Route{Observer: obs, ReplayBytes: 64}
	r.SetBackends([]Backend{old})
	c := dial(t, startRoute(t, r))
	start := time.Now()
	_, err := c.Write([]byte("hello"))
	require.NoError(t, err)
	assert.Empty(t, requireReset(t, c))
	assert.GreaterOrEqual(t, time.Since(start), replayWait)
	require.Eventually(t, func() bool { return len(obs.events().rejected) == 1 }, 5*time.Second, 10*time.Millisecond)
	ev := obs.events()
	assert.Equal(t, []string{RejectNoBackend}, ev.rejected)
	assert.Equal(t, []closedConn{{old, 5, 0}}, ev.closed)
	assert.Empty(t, ev.replayed)
	assert.Empty(t, ev.resets, "rejected, not reset")
}

// TestReplayNot: a connection is not replayed when the backend answered
// before its reset, when the client sent more than ReplayBytes, or with
// ReplayBytes zero: the client sees the reset, reported as one, and the
// next backend gets no connection.
func TestReplayNot(t *testing.T) {
	for _, tc := range []struct {
		name        string
		answer, msg string
		replayBytes int
		want        string
	}{
		{name: "answered", answer: "a", msg: "hello", replayBytes: 64, want: "a"},
		{name: "too much sent", msg: "hello", replayBytes: 4},
		{name: "off", msg: "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &recorder{}
			old, reset := resetter(t, tc.answer)
			var served atomic.Int32
			next := Backend{ID: "next", Addr: startBackend(t, counting(&served, echo))}
			r := &Route{ReplayBytes: tc.replayBytes, Observer: obs}
			r.SetBackends([]Backend{old})
			c := dial(t, startRoute(t, r))
			_, err := c.Write([]byte(tc.msg))
			require.NoError(t, err)
			<-reset
			r.SetBackends([]Backend{next})
			assert.Equal(t, tc.want, requireReset(t, c))
			assert.Zero(t, served.Load(), "the next backend got a connection")
			waitFor(t, func() bool { return len(obs.events().closed) == 1 })
			assert.Equal(t, []string{DirectionDown}, obs.events().resets)
			assert.Empty(t, obs.events().replayed)
		})
	}
}

// TestReplayOnceEjected: a backend that resets a connection and stays in
// the set (its engine's grace keeps a dead host's containers) but is
// ejected meanwhile, its other connections failing too, no longer holds
// the replay: it goes to the others at once, not replayWait later.
func TestReplayOnceEjected(t *testing.T) {
	obs := &recorder{}
	old, _ := resetter(t, "")
	next := Backend{ID: "next", Addr: startBackend(t, echo)}
	// The reset itself ejects it (EjectAfter 1), and the set keeps it,
	// first in the round.
	r := &Route{Observer: obs, ReplayBytes: 64, EjectAfter: 1, EjectTime: time.Hour}
	r.SetBackends([]Backend{old, next})
	c := dial(t, startRoute(t, r))
	start := time.Now()
	_, err := c.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())

	got, err := readAll(t, c)
	require.NoError(t, err)
	assert.Equal(t, "hello", got)
	assert.Less(t, time.Since(start), replayWait, "not held for replayWait")
	assert.Equal(t, []Backend{next}, obs.events().replayed)
	assert.Len(t, r.Ejections(), 1)
}

// TestReplayEjectedAlone: a backend that resets a connection unanswered
// and is ejected by it, alone in its set, is not tried again at once:
// the replay waits for the set to change (a stopped container's kill
// event), as it does for one not ejected, and goes to the new set.
func TestReplayEjectedAlone(t *testing.T) {
	obs := &recorder{}
	old, closed := resetter(t, "")
	next := Backend{ID: "next", Addr: startBackend(t, echo)}
	r := &Route{Observer: obs, ReplayBytes: 64, EjectAfter: 1, EjectTime: time.Hour}
	r.SetBackends([]Backend{old})
	c := dial(t, startRoute(t, r))
	_, err := c.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	<-closed
	require.Eventually(t, func() bool { return len(r.Ejections()) == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond) // the kill event, after the ejection
	r.SetBackends([]Backend{next})

	got, err := readAll(t, c)
	require.NoError(t, err)
	assert.Equal(t, "hello", got)
	assert.Equal(t, []Backend{next}, obs.events().replayed)
	assert.Empty(t, obs.events().resets)
}

// holder returns a backend that takes each connection, reads the client's
// first bytes, writes answer (if any) and then holds the connection
// without a word until the proxy closes it: an app that accepted a
// connection as it got its stop signal, and a host that vanished. got
// has what each connection brought, once it was read; ended is closed
// after each connection the proxy closed.
func holder(t *testing.T, answer string) (b Backend, got <-chan string, ended <-chan struct{}) {
	t.Helper()
	read, done := make(chan string, 16), make(chan struct{}, 16)
	addr := startBackend(t, func(c net.Conn) {
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		read <- string(buf[:n])
		if answer != "" {
			c.Write([]byte(answer))
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err == nil {
			done <- struct{}{} // the proxy's FIN, not the deadline
		}
	})
	return Backend{ID: "holder", Addr: addr}, read, done
}

// TestReplayForgotten: a backend forgotten (it died, or was removed)
// before it answered a connection, whose FIN or reset never came or came
// after the engine's word, does not fail it when the route replays: the
// connection goes to the set as it is then, with what the client had
// sent, and the forgotten backend's socket is closed. One the backend
// answered is closed, as it is without replay, and so is one whose
// client sent more than the route keeps.
func TestReplayForgotten(t *testing.T) {
	for _, tc := range []struct {
		name, answer, msg string
		replayBytes       int
		replayed          bool
	}{
		{name: "unanswered", msg: "hello", replayBytes: 64, replayed: true},
		{name: "answered", answer: "hi", msg: "hello", replayBytes: 64},
		{name: "more than kept", msg: "hello", replayBytes: 4},
		{name: "replay off", msg: "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &recorder{}
			old, got, ended := holder(t, tc.answer)
			next := Backend{ID: "next", Addr: startBackend(t, echo)}
			r := &Route{Observer: obs, ReplayBytes: tc.replayBytes}
			r.SetBackends([]Backend{old})
			c := dial(t, startRoute(t, r))
			_, err := c.Write([]byte(tc.msg))
			require.NoError(t, err)
			assert.Equal(t, tc.msg, <-got)
			if tc.answer != "" {
				buf := make([]byte, len(tc.answer))
				_, err := io.ReadFull(c, buf)
				require.NoError(t, err)
			}

			r.SetBackends([]Backend{next}) // old stays as a fallback
			assert.Equal(t, 1, r.Forget(old.ID))
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				require.FailNow(t, "the forgotten backend's connection was not closed")
			}
			if !tc.replayed {
				requireClosed(t, c)
				assert.Empty(t, obs.events().replayed)
				return
			}
			require.NoError(t, c.CloseWrite())
			requireReplayed(t, c, obs, old, next, tc.msg)
		})
	}
}
