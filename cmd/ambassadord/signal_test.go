package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/internal/nettest"
)

// cancelled returns a context that is done already: serve then starts
// everything, checks it, and returns at once.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// echoer serves an echo of every line on a loopback port.
func echoer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte(msg + "\n"))
	require.NoError(t, err)
	got, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, msg+"\n", got)
}

// TestSignalsDrain: SIGTERM, SIGINT and SIGHUP each stop the daemon
// gracefully: the listener closes at once, an established connection
// keeps working through the grace period, and the process exits 0. Go's
// default for SIGHUP killed it with no drain (exit status 129).
func TestSignalsDrain(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			backend := echoer(t)
			listen := strconv.Itoa(nettest.FreePort(t))
			addr := "127.0.0.1:" + listen
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), runMainEnv+"=--docker=off --listen-address=127.0.0.1 --admin-address= --admin-socket= "+
				"--log-level=warn --shutdown-grace=3s --route "+listen+":"+backend)
			cmd.Stderr = os.Stderr
			require.NoError(t, cmd.Start())
			var waitErr error
			exited := make(chan struct{})
			go func() {
				waitErr = cmd.Wait()
				close(exited)
			}()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})

			var c net.Conn
			require.Eventually(t, func() bool {
				var err error
				c, err = net.Dial("tcp", addr)
				return err == nil
			}, 10*time.Second, 10*time.Millisecond)
			defer c.Close()
			echo(t, c, "before")

			require.NoError(t, cmd.Process.Signal(sig))
			// The listener closes at once...
			require.Eventually(t, func() bool {
				nc, err := net.Dial("tcp", addr)
				if err == nil {
					nc.Close()
				}
				return err != nil
			}, 5*time.Second, 10*time.Millisecond, "still accepting after %s", sig)
			// ...while the established connection still works.
			echo(t, c, "during the grace period")
			c.Close()

			select {
			case <-exited:
				var exit *exec.ExitError
				if errors.As(waitErr, &exit) {
					t.Fatalf("exit after %s: %v", sig, waitErr)
				}
				require.NoError(t, waitErr)
			case <-time.After(10 * time.Second):
				t.Fatalf("still running 10s after %s", sig)
			}
		})
	}
}

// TestSelfLoopRefusedAtStart: a static route whose backend is the
// ambassador's own listening address would connect to itself until
// descriptors run out; start-up refuses it, naming the route.
func TestSelfLoopRefusedAtStart(t *testing.T) {
	listen := strconv.Itoa(nettest.FreePort(t))
	for _, args := range [][]string{
		{"--route", listen + ":127.0.0.1:" + listen},
		{"--route", listen + ":localhost"},
		{"--listen-address=127.0.0.1", "--route", listen + ":127.0.0.5:" + listen + ",10.0.0.1"},
	} {
		cfg, err := parseConfig(append([]string{"--docker=off", "--admin-address=", "--admin-socket="}, args...), env())
		require.NoError(t, err)
		err = serve(cancelled(), cfg, nil, zaptest.NewLogger(t))
		if args[0] == "--listen-address=127.0.0.1" {
			// Listening on 127.0.0.1 only: 127.0.0.5 is not the ambassador.
			assert.NoError(t, err, "%v", args)
			continue
		}
		require.Error(t, err, "%v", args)
		assert.Contains(t, err.Error(), "it is the ambassador's own listening address", "%v", args)
	}
	// A route on another port of the same machine is fine.
	cfg, err := parseConfig([]string{"--docker=off", "--admin-address=", "--admin-socket=", "--route", listen + ":127.0.0.1:1"}, env())
	require.NoError(t, err)
	assert.NoError(t, serve(cancelled(), cfg, nil, zaptest.NewLogger(t)))
}
