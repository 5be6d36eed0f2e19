package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/ambassadord/ambassadord/internal/nettest"
)

// nobody is the uid the tests run other processes as, and give files to.
const nobody = 65534

// startSquatter runs the daemon (this test binary, see TestMain) as uid
// nobody with the admin socket socket, and waits until it listens there.
// It is killed when the test ends.
func startSquatter(t *testing.T, socket string) *os.Process {
	t.Helper()
	// A copy nobody may run: the test binary's directory is private.
	dir, err := os.MkdirTemp("", "ambassadord-squatter-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	self, err := os.Executable()
	require.NoError(t, err)
	b, err := os.ReadFile(self)
	require.NoError(t, err)
	bin := filepath.Join(dir, "ambassadord")
	require.NoError(t, os.WriteFile(bin, b, 0o755))

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), runMainEnv+"=--docker=off --admin-address= --listen-address=127.0.0.1 --log-level=error"+
		" --admin-socket="+socket+" --route="+strconv.Itoa(nettest.FreePort(t))+":127.0.0.1:1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// It listens once the CLI's client finds it: trusted (answered), or
	// refused as the holder it is.
	held := fmt.Sprintf("held by pid %d uid %d", cmd.Process.Pid, nobody)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := client(socket).Get(context.Background(), "/healthz", nil)
		if err == nil || strings.Contains(err.Error(), held) {
			return cmd.Process
		}
		select {
		case <-exited:
			require.FailNow(t, "the squatter exited", "%v", cmd.ProcessState)
		case <-time.After(10 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "the squatter does not listen on %s: %v", socket, err)
	}
}

// reachableTempDir returns a temporary directory that other users may
// enter: t.TempDir's and its parent's are private.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	return dir
}

// TestSquattedSocket: a daemon of another user (a squatter, as far as the
// CLI can tell) holds the admin socket. The CLI refuses to talk to it,
// naming it, unless it owns the private directory that holds the socket
// file; and a daemon configured with that socket does not start, naming
// the holder.
func TestSquattedSocket(t *testing.T) {
	nettest.RequireRoot(t, "to run a process as another user")
	for _, tt := range []struct {
		name   string
		socket func(t *testing.T) string
		code   int
		outHas string
	}{
		{"abstract", func(t *testing.T) string { return nettest.AbstractName(t, "squat") }, 1, "not by the daemon"},
		{"in a directory nobody may write but root", func(t *testing.T) string {
			parent := filepath.Join(reachableTempDir(t), "run")
			require.NoError(t, os.Mkdir(parent, 0o755))
			require.NoError(t, os.Chmod(parent, 0o755))
			dir := filepath.Join(parent, "ambassadord")
			require.NoError(t, os.Mkdir(dir, 0o700))
			require.NoError(t, os.Chown(dir, nobody, nobody))
			return filepath.Join(dir, "admin.sock")
		}, 0, "healthy"},
		{"in a directory of its own making", func(t *testing.T) string {
			parent := filepath.Join(reachableTempDir(t), "run")
			require.NoError(t, os.Mkdir(parent, 0o755))
			require.NoError(t, os.Chown(parent, nobody, nobody))
			dir := filepath.Join(parent, "ambassadord")
			require.NoError(t, os.Mkdir(dir, 0o700))
			require.NoError(t, os.Chown(dir, nobody, nobody))
			return filepath.Join(dir, "admin.sock")
		}, 1, "not by the daemon"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			socket := tt.socket(t)
			squatter := startSquatter(t, socket)
			out, code := cli(t, socket, "healthcheck")
			t.Logf("healthcheck: %s", out)
			assert.Equal(t, tt.code, code, out)
			assert.Contains(t, out, tt.outHas)
			if tt.code != 0 {
				assert.Contains(t, out, fmt.Sprintf("held by pid %d uid %d", squatter.Pid, nobody))
				out, code = cli(t, socket, "rewire", "6379", "cache")
				assert.Equal(t, 1, code, out)
				assert.Contains(t, out, "not by the daemon")
			}

			cfg, err := parseConfig([]string{"--docker=off", "--listen-address=127.0.0.1", "--route", strconv.Itoa(nettest.FreePort(t)) + ":127.0.0.1:1",
				"--admin-address=", "--admin-socket", socket}, env())
			require.NoError(t, err)
			err = serve(context.Background(), cfg, nil, zap.NewNop())
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf("in use by pid %d uid %d", squatter.Pid, nobody))
		})
	}
}
