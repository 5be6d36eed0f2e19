package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is an Observer that records every event.
type recorder struct {
	mu sync.Mutex
	// The fields below are guarded by mu.
	opened   []Backend
	closed   []closedConn
	failed   []failedDial
	rejected []string
	resets   []string // directions
	replayed []Backend
	ejected  []Backend
	shakes   []handshake

	proxySent     []int // versions
	proxyAccepted []int // versions
	proxyRejected []string
}

type handshake struct {
	side    string
	resumed bool
	err     error
}

type closedConn struct {
	backend  Backend
	up, down int64
}

type failedDial struct {
	backend Backend
	reason  string
}

// record appends v to the list at to, one of r's, under r.mu.
func record[T any](r *recorder, to *[]T, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*to = append(*to, v)
}

func (r *recorder) ConnOpened(b Backend) {
	record(r, &r.opened, b)
}

func (r *recorder) ConnClosed(b Backend, up, down int64, d time.Duration) {
	record(r, &r.closed, closedConn{b, up, down})
}

func (r *recorder) DialFailed(b Backend, reason string) {
	record(r, &r.failed, failedDial{b, reason})
}

func (r *recorder) Rejected(reason string) {
	record(r, &r.rejected, reason)
}

func (r *recorder) Reset(direction string) {
	record(r, &r.resets, direction)
}

func (r *recorder) Replayed(b Backend) {
	record(r, &r.replayed, b)
}

func (r *recorder) Ejected(b Backend, d time.Duration) {
	record(r, &r.ejected, b)
}

func (r *recorder) Handshake(side string, resumed bool, err error) {
	record(r, &r.shakes, handshake{side, resumed, err})
}

func (r *recorder) ProxyHeaderSent(v int) {
	record(r, &r.proxySent, v)
}

func (r *recorder) ProxyHeaderAccepted(v int) {
	record(r, &r.proxyAccepted, v)
}

func (r *recorder) ProxyHeaderRejected(reason string) {
	record(r, &r.proxyRejected, reason)
}

// events returns a copy of what was recorded.
func (r *recorder) events() recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	return recorder{
		opened:   append([]Backend(nil), r.opened...),
		closed:   append([]closedConn(nil), r.closed...),
		failed:   append([]failedDial(nil), r.failed...),
		rejected: append([]string(nil), r.rejected...),
		resets:   append([]string(nil), r.resets...),
		replayed: append([]Backend(nil), r.replayed...),
		ejected:  append([]Backend(nil), r.ejected...),
		shakes:   append([]handshake(nil), r.shakes...),

		proxySent:     append([]int(nil), r.proxySent...),
		proxyAccepted: append([]int(nil), r.proxyAccepted...),
		proxyRejected: append([]string(nil), r.proxyRejected...),
	}
}

func TestObserverCountsBytes(t *testing.T) {
	const up, down = 3<<20 + 7, 1<<20 + 3
	for _, idle := range []time.Duration{0, time.Minute} {
		t.Run("idle="+idle.String(), func(t *testing.T) {
			obs := &recorder{}
			reply := randomBytes(down, 3)
			b := Backend{Addr: startBackend(t, func(c net.Conn) {
				io.Copy(io.Discard, c)
				c.Write(reply)
			}), ID: "b1"}
			r := &Route{IdleTimeout: idle, Observer: obs}
			r.SetBackends([]Backend{b})
			got := roundTrip(t, startRoute(t, r), string(randomBytes(up, 4)))
			require.Len(t, got, down)

			waitFor(t, func() bool { return len(obs.events().closed) == 1 })
			ev := obs.events()
			assert.Equal(t, []Backend{b}, ev.opened)
			assert.Equal(t, []closedConn{{b, up, down}}, ev.closed)
			assert.Empty(t, ev.failed)
			assert.Empty(t, ev.rejected)
		})
	}
}

func TestObserverCountsBytesOnReset(t *testing.T) {
	// The backend reads the request, answers, and once the client has the
	// answer resets the connection: the copy fails, the client is reset in
	// turn, and the bytes moved until then are still reported.
	for _, idle := range []time.Duration{0, time.Minute} {
		t.Run("idle="+idle.String(), func(t *testing.T) {
			obs := &recorder{}
			answered := make(chan struct{})
			b := Backend{Addr: startBackend(t, func(c net.Conn) {
				io.ReadFull(c, make([]byte, 4))
				c.Write([]byte("hello"))
				<-answered
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			})}
			r := &Route{IdleTimeout: idle, Observer: obs}
			r.SetBackends([]Backend{b})
			c := dial(t, startRoute(t, r))
			_, err := c.Write([]byte("ping"))
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, err = io.ReadFull(c, make([]byte, 5))
			require.NoError(t, err)
			close(answered)
			requireReset(t, c)

			waitFor(t, func() bool { return len(obs.events().closed) == 1 })
			assert.Equal(t, []closedConn{{b, 4, 5}}, obs.events().closed)
		})
	}
}

func TestObserverRejects(t *testing.T) {
	t.Run("no backend", func(t *testing.T) {
		obs := &recorder{}
		r := &Route{Observer: obs}
		assertRejected(t, startRoute(t, r))
		waitFor(t, func() bool { return len(obs.events().rejected) == 1 })
		ev := obs.events()
		assert.Equal(t, []string{RejectNoBackend}, ev.rejected)
		assert.Empty(t, ev.failed)
		assert.Empty(t, ev.opened)
	})
	t.Run("every backend refused", func(t *testing.T) {
		obs := &recorder{}
		dead1, dead2 := Backend{Addr: deadAddr(t)}, Backend{Addr: deadAddr(t)}
		r := &Route{Observer: obs}
		r.SetBackends([]Backend{dead1, dead2})
		assertRejected(t, startRoute(t, r))
		waitFor(t, func() bool { return len(obs.events().rejected) == 1 })
		ev := obs.events()
		assert.Equal(t, []string{RejectNoBackend}, ev.rejected)
		assert.ElementsMatch(t, []failedDial{{dead1, DialRefused}, {dead2, DialRefused}}, ev.failed)
	})
	t.Run("limit", func(t *testing.T) {
		obs := &recorder{}
		b := Backend{Addr: startBackend(t, echo)}
		r := &Route{MaxConns: 1, Observer: obs}
		r.SetBackends([]Backend{b})
		addr := startRoute(t, r)
		first := dial(t, addr)
		_, err := first.Write([]byte("x"))
		require.NoError(t, err)
		_, err = io.ReadFull(first, make([]byte, 1))
		require.NoError(t, err)

		assertRejected(t, addr)
		waitFor(t, func() bool { return len(obs.events().rejected) == 1 })
		ev := obs.events()
		assert.Equal(t, []string{RejectLimit}, ev.rejected)
		assert.Equal(t, []Backend{b}, ev.opened)
	})
	t.Run("shutdown while dialling", func(t *testing.T) {
		// A dial that never answers is cut short by Close: the route is at
		// fault, not the backend, so no dial failure is reported.
		obs := &recorder{}
		dialling := make(chan struct{}, 1)
		r := &Route{Observer: obs, DialTimeout: time.Minute,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dialling <- struct{}{}
				<-ctx.Done()
				return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
			}}
		r.SetBackends([]Backend{{Addr: "192.0.2.1:80"}})
		addr := startRoute(t, r)
		dial(t, addr)
		<-dialling
		require.NoError(t, r.Close())
		ev := obs.events()
		assert.Equal(t, []string{RejectShutdown}, ev.rejected)
		assert.Empty(t, ev.failed)
	})
}

func TestObserverDialTimeout(t *testing.T) {
	// The hook stands for a host that never answers: it waits for the
	// dial's deadline, and fails as net.Dialer does then.
	obs := &recorder{}
	b := Backend{Addr: "192.0.2.1:80"}
	r := &Route{Observer: obs, DialTimeout: 20 * time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			<-ctx.Done()
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}}
	r.SetBackends([]Backend{b})
	assertRejected(t, startRoute(t, r))
	waitFor(t, func() bool { return len(obs.events().rejected) == 1 })
	ev := obs.events()
	assert.Equal(t, []failedDial{{b, DialTimedOut}}, ev.failed)
	assert.Equal(t, []string{RejectNoBackend}, ev.rejected)
}

func TestDialFailure(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, pastDeadline := (&net.Dialer{}).DialContext(expired, "tcp", "192.0.2.1:80")
	require.Error(t, pastDeadline)
	_, refused := net.Dial("tcp", deadAddr(t))
	require.Error(t, refused)

	opErr := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"real refused dial", refused, DialRefused},
		{"real dial past its deadline", pastDeadline, DialTimedOut},
		{"refused", opErr(&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}), DialRefused},
		{"context deadline", opErr(context.DeadlineExceeded), DialTimedOut},
		{"connect timed out", opErr(&os.SyscallError{Syscall: "connect", Err: syscall.ETIMEDOUT}), DialTimedOut},
		{"host unreachable", opErr(&os.SyscallError{Syscall: "connect", Err: syscall.EHOSTUNREACH}), DialUnreachable},
		{"network unreachable", opErr(&os.SyscallError{Syscall: "connect", Err: syscall.ENETUNREACH}), DialUnreachable},
		{"no such host", opErr(&net.DNSError{Err: "no such host", Name: "db", IsNotFound: true}), DialDNS},
		{"dns timeout", opErr(&net.DNSError{Err: "i/o timeout", Name: "db", IsTimeout: true}), DialDNS},
		{"wrapped", fmt.Errorf("backend: %w", opErr(syscall.ECONNREFUSED)), DialRefused},
		{"other", errors.New("boom"), DialOther},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, dialFailure(tt.err), "%v", tt.err)
		})
	}
}
