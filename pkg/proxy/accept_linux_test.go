package proxy

import (
	"context"
	"net"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// flakyListener fails its first accepts with EMFILE, as a process out of
// file descriptors does.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestAcceptBacksOffAndRecovers(t *testing.T) {
	// Out of descriptors, the pool's idle pipes are handed back first.
	var ps []*pipe
	for range 10 {
		p, err := getPipe()
		require.NoError(t, err)
		ps = append(ps, p)
	}
	for _, p := range ps {
		putPipe(p)
	}
	require.GreaterOrEqual(t, len(pipePool), 10)

	r := &Route{Logger: zaptest.NewLogger(t)}
	r.SetBackends([]Backend{{Addr: startBackend(t, echo)}})
	inner, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(t, err)
	ln := &flakyListener{Listener: inner, fails: 5}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln) }()
	t.Cleanup(func() {
		r.Close()
		require.NoError(t, <-served)
	})
	assert.Equal(t, "still here", roundTrip(t, inner.Addr().String(), "still here"))
	assert.Equal(t, 0, ln.fails)
	// The round trip may have pooled a pipe per direction since, but the
	// one from before is gone.
	assert.LessOrEqual(t, len(pipePool), 2)
}
