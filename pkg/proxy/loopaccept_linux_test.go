package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(es) - 1 // ReadDir's own
}

func TestLoopAcceptServesAndCloses(t *testing.T) {
	r := &Route{}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r) // which checks that Serve returns nil
	waitLoopListening(t, r)
	for i := range 20 {
		msg := string(randomBytes(100+i, uint64(i)))
		assert.Equal(t, msg, roundTrip(t, addr, msg))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, r.Shutdown(ctx))
	// Closed with Shutdown: refused, so no duplicate of the socket is
	// left open either, which would keep it listening.
	_, err := net.Dial("tcp", addr)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
}

// waitLoopListening waits until r serves a listener with its event loops.
func waitLoopListening(t *testing.T, r *Route) {
	t.Helper()
	waitFor(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for l := range r.listeners {
			if _, ok := l.(*loopListener); ok {
				return true
			}
		}
		return false
	})
}

// TestLoopAcceptBacksOffAndRecovers runs the process out of descriptors
// while a connection waits to be accepted: the loops must not spin on the
// level-triggered socket but back off, name the exhaustion, and accept the
// connection once descriptors are free again.
func TestLoopAcceptBacksOffAndRecovers(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r := &Route{Logger: zap.New(core)}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	addr := startRoute(t, r)
	// No connection before: one closing meanwhile would free descriptors.
	waitLoopListening(t, r)

	// Fill every descriptor under a lowered limit but one, for the client.
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	low := lim
	low.Cur = uint64(openFDs(t) + 64)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
	var fill []*os.File
	restore := func() {
		for _, f := range fill {
			f.Close()
		}
		fill = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	defer restore()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			require.True(t, errors.Is(err, syscall.EMFILE), "%v", err)
			break
		}
		fill = append(fill, f)
	}
	require.NotEmpty(t, fill)
	fill[len(fill)-1].Close()
	fill = fill[:len(fill)-1]
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err, "the client takes the last descriptor")
	defer c.Close()

	// The loops fail to accept it, and back off: 5, 10, 20, 40 ms...
	// rather than spin on the socket, which stays readable.
	cpu := func() time.Duration {
		var ru syscall.Rusage
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	const wait = 150 * time.Millisecond
	used := cpu()
	time.Sleep(wait)
	used = cpu() - used
	failures := logs.FilterMessage("accept failed; backing off").All()
	restore()
	require.Len(t, failures, 1, "one warning a second at most")
	assert.Equal(t, true, failures[0].ContextMap()["fd_exhaustion"])
	assert.Less(t, used, wait/3, "CPU time while backing off")

	// Descriptors free again: the waiting connection is served.
	_, err = c.Write([]byte("served"))
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "served", string(got))
}
