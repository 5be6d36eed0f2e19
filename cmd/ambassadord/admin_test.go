package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// runDaemon runs serve in-process with a private admin socket and TCP
// endpoint, and returns them.
func runDaemon(t *testing.T, args ...string) (socket, adminAddr string) {
	t.Helper()
	socket = fmt.Sprintf("@ambassadord-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	adminAddr = "127.0.0.1:" + strconv.Itoa(nettest.FreePort(t))
	cfg, err := parseConfig(append([]string{"--docker=off", "--listen-address=127.0.0.1", "--backend-wait=0",
		"--admin-socket", socket, "--admin-address", adminAddr}, args...), env())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, nil, zaptest.NewLogger(t)) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Eventually(t, func() bool {
		return client(socket).Get(context.Background(), "/healthz", nil) == nil
	}, 5e9, 1e7)
	return socket, adminAddr
}

func cli(t *testing.T, socket string, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cliMain(args[0], append(args[1:], "--admin-socket", socket), &out, &errOut)
	return out.String() + errOut.String(), code
}

// readState reads the overrides of the state file at path, as the daemon
// writes them.
func readState(t *testing.T, path string) []api.Override {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var st struct {
		Version   int            `json:"version"`
		Overrides []api.Override `json:"overrides"`
	}
	require.NoError(t, json.Unmarshal(b, &st))
	require.Equal(t, 1, st.Version)
	return st.Overrides
}

func TestAdminAndCLI(t *testing.T) {
	a, b := nettest.Greeter(t, "a"), nettest.Greeter(t, "b")
	listen := strconv.Itoa(nettest.FreePort(t))
	state := filepath.Join(t.TempDir(), "state.json")
	socket, adminAddr := runDaemon(t, "--route", listen+":"+a, "--state-file", state)
	addr := "127.0.0.1:" + listen

	out, code := cli(t, socket, "healthcheck")
	assert.Equal(t, 0, code, out)

	out, code = cli(t, socket, "status")
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "docker:  not followed")
	assert.Contains(t, out, "ready:   yes")
	assert.Regexp(t, `(?m)^`+listen+`\s+127\.0\.0\.1:`+listen+`\s+-\s+`+a, out)

	// Rewire by hand: new connections move at once, the status says so,
	// and the state file keeps it.
	assert.Equal(t, "a", nettest.Read(t, addr))
	out, code = cli(t, socket, "rewire", listen, b, "--drain", "1m")
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "route "+listen+" → "+b)
	assert.Equal(t, "b", nettest.Read(t, addr))
	out, _ = cli(t, socket, "status", "--json")
	assert.Contains(t, out, `"override": "`+b+`"`)
	saved := readState(t, state)
	require.Len(t, saved, 1)
	assert.Equal(t, api.Override{Key: listen, Target: b, Since: saved[0].Since, Drain: api.Duration(60e9)}, saved[0])

	out, code = cli(t, socket, "explain", listen)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "rewired by hand to "+b)

	// Errors a person can act on.
	out, code = cli(t, socket, "rewire", "9", b)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `no route or target "9"`)
	out, code = cli(t, socket, "rewire", listen, "bad host")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `new target "bad host"`)

	// Reset returns to the configured backend.
	out, code = cli(t, socket, "rewire", "--reset", listen)
	require.Equal(t, 0, code, out)
	assert.Equal(t, "a", nettest.Read(t, addr))
	assert.Empty(t, readState(t, state))

	// The TCP endpoint serves reads and metrics paths, and refuses changes.
	resp, err := http.Get("http://" + adminAddr + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Post("http://"+adminAddr+"/rewire", "application/json", strings.NewReader(`{"key":"`+listen+`","target":"`+b+`"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "a", nettest.Read(t, addr))
}

func TestStateFileRestoresRewires(t *testing.T) {
	a, b := nettest.Greeter(t, "a"), nettest.Greeter(t, "b")
	listen := strconv.Itoa(nettest.FreePort(t))
	state := filepath.Join(t.TempDir(), "state.json")
	require.NoError(t, os.WriteFile(state, []byte(`{"version": 1, "overrides": [{"key": "`+listen+`", "target": "`+b+`"}]}`), 0o600))
	socket, _ := runDaemon(t, "--route", listen+":"+a, "--state-file", state)
	assert.Equal(t, "b", nettest.Read(t, "127.0.0.1:"+listen))
	out, _ := cli(t, socket, "status")
	assert.Contains(t, out, "rewired to "+b)
}

func TestCLIWithoutDaemon(t *testing.T) {
	out, code := cli(t, "@ambassadord-test-nobody-here", "healthcheck")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "cannot reach the ambassadord daemon")
}

// TestAdminWritableOverTCP: the daemon with --admin-writable serves a
// rewire over TCP that bears the token of --admin-token-file, and only
// that one; a token file open to others stops it at start-up.
func TestAdminWritableOverTCP(t *testing.T) {
	a, b := nettest.Greeter(t, "a"), nettest.Greeter(t, "b")
	listen := strconv.Itoa(nettest.FreePort(t))
	token := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(token, []byte("s3cret\n"), 0o600))
	_, adminAddr := runDaemon(t, "--route", listen+":"+a, "--admin-writable", "--admin-token-file", token)
	addr := "127.0.0.1:" + listen

	rewire := func(auth, ctype string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/rewire", strings.NewReader(`{"key":"`+listen+`","target":"`+b+`"}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", ctype)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusUnauthorized, rewire("", "application/json"))
	assert.Equal(t, http.StatusUnauthorized, rewire("Bearer wrong", "application/json"))
	assert.Equal(t, http.StatusUnsupportedMediaType, rewire("Bearer s3cret", "text/plain"))
	assert.Equal(t, "a", nettest.Read(t, addr), "after refused rewires")
	assert.Equal(t, http.StatusOK, rewire("Bearer s3cret", "application/json"))
	assert.Equal(t, "b", nettest.Read(t, addr))

	require.NoError(t, os.Chmod(token, 0o644))
	cfg, err := parseConfig([]string{"--docker=off", "--listen-address=127.0.0.1", "--route", strconv.Itoa(nettest.FreePort(t)) + ":" + a,
		"--admin-socket=", "--admin-address=127.0.0.1:0", "--admin-writable", "--admin-token-file", token}, env())
	require.NoError(t, err)
	err = serve(context.Background(), cfg, nil, zaptest.NewLogger(t))
	assert.ErrorContains(t, err, "chmod 600 "+token)
}
