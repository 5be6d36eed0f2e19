package daemon

import (
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// holder is a backend that greets every connection with its name and keeps
// it open, like an app draining on a stop signal that has not closed its
// listener yet: if the proxy sent it a new connection, it would accept it.
func holder(t *testing.T, name string) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	conns := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name))
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), conns
}

// TestDynamicStoppingBackend: a backend the watcher reports stopping (it
// was sent a stop signal, and drains) gets no new connection, not even as
// a make-before-break fallback, while its established connections go on;
// when it dies, they are closed. With no other backend, new connections
// wait for one.
func TestDynamicStoppingBackend(t *testing.T) {
	drainingAddr, accepted := holder(t, "draining")
	otherAddr := nettest.Greeter(t, "other")
	listen := nettest.FreePort(t)
	opts := testOptions(t, strconv.Itoa(listen)+":svc:1")
	opts.BackendWait = 5 * time.Second
	d, _ := newTestDaemon(t, opts)
	table, key := d.table, routeKey{resolver.TCP, listen}
	addr := "127.0.0.1:" + strconv.Itoa(listen)
	ctx := context.Background()

	claim := func(priority string) map[string]string {
		return map[string]string{resolver.LabelTarget: "svc", resolver.LabelPriority: priority}
	}
	draining := loopbackContainer("draining", nettest.Port(t, drainingAddr), claim("10"))
	stopping := draining
	stopping.State = source.StateStopping
	other := loopbackContainer("other", nettest.Port(t, otherAddr), claim("0"))
	update := func(gone []string, cs ...source.Container) {
		d.update(ctx, 0, source.Update{Connected: true, Gone: gone, Snapshot: &source.Snapshot{Containers: cs}})
	}
	noNewConn := func() {
		t.Helper()
		select {
		case <-accepted:
			t.Fatal("a new connection reached the stopping backend")
		default:
		}
	}

	// The higher-priority claimer serves; a client holds a connection.
	update(nil, draining, other)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	got := make([]byte, len("draining"))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, "draining", string(got))
	backendSide := <-accepted

	// A stop signal: new connections go to the other claimer at once; the
	// established one keeps working both ways.
	update(nil, stopping, other)
	backends := table.routes[key].proxy.Backends()
	require.Len(t, backends, 1)
	assert.Equal(t, other.ID, backends[0].ID)
	for range 5 {
		assert.Equal(t, "other", nettest.Read(t, addr))
	}
	noNewConn()
	_, err = backendSide.Write([]byte("still here"))
	require.NoError(t, err)
	got = make([]byte, len("still here"))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err, "the established connection was cut at the stop signal")
	assert.Equal(t, "still here", string(got))
	_, err = c.Write([]byte("ack"))
	require.NoError(t, err)
	require.NoError(t, backendSide.SetReadDeadline(time.Now().Add(5*time.Second)))
	got = make([]byte, 3)
	_, err = io.ReadFull(backendSide, got)
	require.NoError(t, err)
	assert.Equal(t, "ack", string(got))

	// It dies: what is left of its connections is closed.
	update([]string{draining.ID}, other)
	nettest.RequireClosed(t, c, "the connection to the dead backend was closed")

	// The only backend is stopping: no backend, and new connections wait
	// (--backend-wait) instead of reaching it, until one appears.
	update(nil, draining)
	update(nil, stopping)
	assert.Empty(t, table.routes[key].proxy.Backends())
	waited := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			waited <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			waited <- err.Error()
			return
		}
		waited <- string(b)
	}()
	require.Eventually(t, func() bool { return table.routes[key].proxy.Active() == 1 }, 5*time.Second, time.Millisecond,
		"the connection waits in the proxy")
	update(nil, stopping, other)
	assert.Equal(t, "other", <-waited, "the waiting connection went to the new backend, not the stopping one")
	noNewConn()
}
