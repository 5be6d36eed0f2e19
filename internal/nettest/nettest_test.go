package nettest

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGreeterAndRead(t *testing.T) {
	addr := Greeter(t, "hello")
	assert.Equal(t, "hello", Read(t, addr))
	assert.Equal(t, addr[len("127.0.0.1:"):], strconv.Itoa(Port(t, addr)))
	assert.NotZero(t, FreePort(t))
}

// TestRequireClosed: a connection its peer closed passes; one left open
// fails on the deadline, which a plain assert.Error(c.Read()) would take
// for a close.
func TestRequireClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()

	closed, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer closed.Close()
	(<-accepted).Close()
	RequireClosed(t, closed)

	open, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer open.Close()
	peer := <-accepted
	defer peer.Close()
	inner := &testing.T{}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		RequireClosed(inner, open)
	}()
	<-done
	assert.True(t, inner.Failed(), "a connection still open fails")
	assert.GreaterOrEqual(t, time.Since(start), CloseWithin)
}

// TestFreePortBelowEphemeral: the port is free, and outside the range the
// kernel takes connections' local ports from, so that no connection of a
// parallel test can take it before the test listens on it.
func TestFreePortBelowEphemeral(t *testing.T) {
	low := ephemeralLow()
	if low <= freePortBottom {
		t.Skipf("no room below the ephemeral range (%d)", low)
	}
	for range 20 {
		port := FreePort(t)
		assert.GreaterOrEqual(t, port, freePortBottom)
		assert.Less(t, port, min(low, freePortTop))
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		require.NoError(t, err)
		ln.Close()
	}
}

func TestFreeUDPPort(t *testing.T) {
	port := FreeUDPPort(t)
	if low := ephemeralLow(); low > freePortBottom {
		assert.Less(t, port, min(low, freePortTop))
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
	require.NoError(t, err)
	pc.Close()
}
