package soak

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
)

// backend is a loopback stand-in for a dataserver in whoami mode: its
// identity, then an echo through tamper (nil: a faithful one).
type backend struct {
	ln     net.Listener
	tamper func(c *net.TCPConn, echoed int64, b []byte) ([]byte, bool) // the bytes to echo, and whether to go on
	wg     sync.WaitGroup
}

func newBackend(t *testing.T, tamper func(c *net.TCPConn, echoed int64, b []byte) ([]byte, bool)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &backend{ln: ln, tamper: tamper}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(c.(*net.TCPConn)) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *backend) addr() string { return s.ln.Addr().String() }

func (s *backend) serve(c *net.TCPConn) {
	defer c.Close()
	if _, err := dataproto.ReadHeader(c); err != nil {
		return
	}
	id := dataproto.Identity{Name: "t0-b0-g0", Local: netip.MustParseAddrPort(c.LocalAddr().String()), Accepted: time.Now(), Listening: time.Now()}
	if _, err := c.Write(id.Encode()); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	var echoed int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			out, goOn := buf[:n], true
			if s.tamper != nil {
				out, goOn = s.tamper(c, echoed, buf[:n])
			}
			if _, err := c.Write(out); err != nil || !goOn {
				return
			}
			echoed += int64(n)
		}
		if err != nil {
			c.CloseWrite()
			return
		}
	}
}

func TestShort(t *testing.T) {
	tests := []struct {
		name        string
		tamper      func(c *net.TCPConn, echoed int64, b []byte) ([]byte, bool)
		wantCorrupt bool
		wantClosed  bool
	}{
		{name: "faithful"},
		{
			name: "a byte flipped",
			tamper: func(_ *net.TCPConn, _ int64, b []byte) ([]byte, bool) {
				b[len(b)/2] ^= 1
				return b, true
			},
			wantCorrupt: true,
		},
		{
			name: "a byte too many",
			tamper: func(_ *net.TCPConn, _ int64, b []byte) ([]byte, bool) {
				return append(b, 'x'), true
			},
			wantCorrupt: true,
		},
		{
			name: "cut short",
			tamper: func(_ *net.TCPConn, _ int64, b []byte) ([]byte, bool) {
				return b[:len(b)/2], false
			},
			wantClosed: true,
		},
		{
			name: "reset",
			tamper: func(c *net.TCPConn, _ int64, b []byte) ([]byte, bool) {
				c.SetLinger(0)
				return nil, false
			},
			wantClosed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newBackend(t, tt.tamper)
			got := Short(1, s.addr(), 42, 5000)
			assert.Equal(t, 1, got.Route)
			assert.Equal(t, s.addr(), got.Addr)
			assert.EqualValues(t, 5000, got.Sent)
			assert.False(t, got.End.Before(got.Start))
			assert.Equal(t, tt.wantCorrupt, got.Corrupt != "", "corrupt: %q", got.Corrupt)
			if tt.wantClosed {
				// A reset may discard the identity before the client
				// reads it: then the session has none.
				require.Error(t, got.Err)
				assert.True(t, Closed(got.Err), "%v", got.Err)
			} else if !tt.wantCorrupt {
				assert.True(t, got.OK(), "%s", got)
				assert.Equal(t, "t0-b0-g0", got.ID.Name)
				assert.EqualValues(t, 5000, got.Echoed)
			}
		})
	}
}

// TestShortNotAnIdentity: a server that answers with something else than
// an identity corrupts the session; one that closes first fails it.
func TestShortNotAnIdentity(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Read all the client sends, up to its half-close, so that
			// the close is a FIN, not a reset.
			io.Copy(io.Discard, c)
			if i == 0 {
				c.Write([]byte("hello world\n"))
			}
			c.Close()
		}
	}()
	got := Short(0, ln.Addr().String(), 1, 10)
	assert.NotEmpty(t, got.Corrupt, "%s", got)
	got = Short(0, ln.Addr().String(), 1, 10)
	assert.Empty(t, got.Corrupt)
	assert.True(t, Closed(got.Err), "%v", got.Err)
	assert.Empty(t, got.ID.Name)
}

func TestLong(t *testing.T) {
	s := newBackend(t, nil)
	got := Long(0, s.addr(), 7, 200*time.Millisecond, nil)
	assert.True(t, got.OK(), "%s", got)
	assert.True(t, got.Long)
	assert.Positive(t, got.Sent)
	assert.Equal(t, got.Sent, got.Echoed)

	// Halted early, it ends cleanly too.
	stop := make(chan struct{})
	time.AfterFunc(50*time.Millisecond, func() { close(stop) })
	got = Long(0, s.addr(), 7, time.Minute, stop)
	assert.True(t, got.OK(), "%s", got)
	assert.Less(t, got.End.Sub(got.Start), 10*time.Second)
}

func TestLongCutOrCorrupted(t *testing.T) {
	flip := newBackend(t, func(_ *net.TCPConn, echoed int64, b []byte) ([]byte, bool) {
		if echoed > 20000 {
			b[0] ^= 0x80
		}
		return b, true
	})
	got := Long(0, flip.addr(), 7, 300*time.Millisecond, nil)
	assert.Contains(t, got.Corrupt, "echo byte ")
	assert.NoError(t, got.Err)

	cut := newBackend(t, func(c *net.TCPConn, echoed int64, b []byte) ([]byte, bool) {
		if echoed > 20000 {
			c.SetLinger(0)
			return nil, false
		}
		return b, true
	})
	got = Long(0, cut.addr(), 7, 5*time.Second, nil)
	assert.Empty(t, got.Corrupt)
	require.Error(t, got.Err)
	assert.True(t, Closed(got.Err), "%v", got.Err)
	assert.Less(t, got.End.Sub(got.Start), 4*time.Second, "ended with the cut, not with its plan")

	// A clean end (EOF) before the half-close is not the server's doing.
	early := newBackend(t, func(c *net.TCPConn, echoed int64, b []byte) ([]byte, bool) {
		return b, echoed < 20000
	})
	got = Long(0, early.addr(), 7, 5*time.Second, nil)
	require.Error(t, got.Err)
	assert.ErrorIs(t, got.Err, io.ErrUnexpectedEOF)
}

// TestClients: the workers of every route record sessions until halted,
// and every one completes against faithful backends.
func TestClients(t *testing.T) {
	a, b := newBackend(t, nil), newBackend(t, nil)
	c := StartClients([]string{a.addr(), b.addr()}, 1)
	require.Eventually(t, func() bool { return c.Count() >= 20 }, 10*time.Second, 10*time.Millisecond)
	ss := c.Halt()
	assert.Equal(t, ss, c.Halt(), "a second halt returns the same")
	routes := map[int]int{}
	long := 0
	for _, s := range ss {
		assert.True(t, s.OK(), "%s", s)
		routes[s.Route]++
		if s.Long {
			long++
		}
	}
	assert.Positive(t, routes[0])
	assert.Positive(t, routes[1])
	assert.Equal(t, 2*longWorkers, long, "every long worker's session, ended early by the halt")
}
