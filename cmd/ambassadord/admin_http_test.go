package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// TestAdminAccess: what each listener asks of a request. Over TCP: a Host
// that is an IP literal, localhost or a name of --admin-hosts; for a
// state change, --admin-writable and the bearer token. Everywhere: a state
// change is application/json. On the socket: a peer the peer check
// accepted.
func TestAdminAccess(t *testing.T) {
	sum := sha256.Sum256([]byte("s3cret"))
	tcp := access{writable: true, tcp: true, token: sum[:], hosts: []string{"amb.internal"}}
	readOnly := access{tcp: true, token: sum[:]}
	socket := access{writable: true, peers: true}
	const ctJSON = "application/json"
	for _, tt := range []struct {
		name   string
		acc    access
		method string
		host   string
		auth   string
		ctype  string
		peer   *peerConn // on the socket
		want   int
		errHas string
	}{
		{"IPv4 host", tcp, "GET", "127.0.0.1:9191", "", "", nil, 200, ""},
		{"IPv6 host", tcp, "GET", "[::1]:9191", "", "", nil, 200, ""},
		{"IPv6 host without port", tcp, "GET", "[::1]", "", "", nil, 200, ""},
		{"localhost", tcp, "GET", "localhost:9191", "", "", nil, 200, ""},
		{"LOCALHOST.", tcp, "GET", "LOCALHOST.", "", "", nil, 200, ""},
		{"a name of --admin-hosts", tcp, "GET", "Amb.Internal:9191", "", "", nil, 200, ""},
		{"another name", tcp, "GET", "evil.example:9191", "", "", nil, 421, "--admin-hosts"},
		{"a name ending like localhost", tcp, "GET", "evil.localhost", "", "", nil, 421, "--admin-hosts"},
		{"a name starting like an allowed one", tcp, "GET", "amb.internal.evil.example", "", "", nil, 421, "--admin-hosts"},
		{"no host", tcp, "GET", "", "", "", nil, 421, "--admin-hosts"},
		{"another name, with the token", tcp, "POST", "evil.example", "Bearer s3cret", ctJSON, nil, 421, "--admin-hosts"},
		{"post without a token", tcp, "POST", "127.0.0.1", "", ctJSON, nil, 401, "Authorization: Bearer"},
		{"post with another token", tcp, "POST", "127.0.0.1", "Bearer s3cret2", ctJSON, nil, 401, "--admin-token-file"},
		{"post with the token as Basic", tcp, "POST", "127.0.0.1", "Basic s3cret", ctJSON, nil, 401, "--admin-token-file"},
		{"post with the token as text/plain", tcp, "POST", "127.0.0.1", "Bearer s3cret", "text/plain", nil, 415, "application/json"},
		{"post with the token, no content type", tcp, "POST", "127.0.0.1", "Bearer s3cret", "", nil, 415, "application/json"},
		{"post with the token", tcp, "POST", "127.0.0.1", "Bearer s3cret", ctJSON, nil, 200, ""},
		{"post with the token, lower-case scheme, charset", tcp, "POST", "localhost", "bearer s3cret", ctJSON + "; charset=utf-8", nil, 200, ""},
		{"writable without a token file", access{writable: true, tcp: true}, "POST", "127.0.0.1", "Bearer ", ctJSON, nil, 401, "--admin-token-file"},
		{"read-only, with the token", readOnly, "POST", "127.0.0.1", "Bearer s3cret", ctJSON, nil, 403, "admin socket"},
		{"read-only, a read", readOnly, "GET", "127.0.0.1", "", "", nil, 200, ""},
		{"socket post", socket, "POST", "ambassadord", "", ctJSON, &peerConn{allowed: true}, 200, ""},
		{"socket post as text/plain", socket, "POST", "ambassadord", "", "text/plain", &peerConn{allowed: true}, 415, "application/json"},
		{"socket, refused peer", socket, "GET", "ambassadord", "", "", &peerConn{cred: peerCred{pid: 42, uid: 1234}}, 403, "uid 1234 (pid 42)"},
		{"socket, unknown peer", socket, "GET", "ambassadord", "", "", nil, 403, "serves only root"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testAdmin(t, adminLimits{})
			path, body := "/healthz", ""
			if tt.method == "POST" {
				path, body = "/rewire", `{"key":"6379","target":"cache"}`
			}
			r := httptest.NewRequest(tt.method, path, strings.NewReader(body))
			r.Host = tt.host
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			if tt.peer != nil {
				r = r.WithContext(context.WithValue(r.Context(), peerKey{}, tt.peer))
			}
			w := httptest.NewRecorder()
			a.handlerFor(tt.acc).ServeHTTP(w, r)
			assert.Equal(t, tt.want, w.Code, w.Body.String())
			if tt.errHas != "" {
				var reply rewireReply
				require.NoError(t, json.Unmarshal(w.Body.Bytes(), &reply), w.Body.String())
				assert.Contains(t, reply.Error, tt.errHas)
			}
			if tt.want == http.StatusUnauthorized {
				assert.Equal(t, `Bearer realm="ambassadord"`, w.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

func TestReadToken(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		errHas  string
	}{
		{"a token", "s3cret\n", 0o600, "s3cret", ""},
		{"white space around", "  s3cret \n\n", 0o400, "s3cret", ""},
		{"empty", "", 0o600, "", "empty"},
		{"blank", " \n\t\n", 0o600, "", "empty"},
		{"two words", "s3cret other\n", 0o600, "", "one word on one line"},
		{"two lines", "s3cret\nother\n", 0o600, "", "one word on one line"},
		{"group-readable", "s3cret", 0o640, "", "chmod 600"},
		{"world-readable", "s3cret", 0o604, "", "chmod 600"},
		{"group-writable", "s3cret", 0o620, "", "chmod 600"},
		{"too long", strings.Repeat("x", maxTokenBytes+1), 0o600, "", "one token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			require.NoError(t, os.WriteFile(path, []byte(tt.content), tt.mode))
			require.NoError(t, os.Chmod(path, tt.mode)) // whatever the umask
			got, err := readToken(path)
			if tt.errHas != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.errHas)
				assert.Contains(t, err.Error(), path)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := readToken(filepath.Join(t.TempDir(), "nosuch"))
		assert.ErrorContains(t, err, "read --admin-token-file")
	})
	t.Run("a directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "dir")
		require.NoError(t, os.Mkdir(dir, 0o700))
		_, err := readToken(dir)
		assert.ErrorContains(t, err, "not a regular file")
	})
}

// TestAdminWritableOverTCP: the daemon with --admin-writable serves a
// rewire over TCP that bears the token of --admin-token-file, and only
// that one; a token file open to others stops it at start-up.
func TestAdminWritableOverTCP(t *testing.T) {
	a, b := greeter(t, "a"), greeter(t, "b")
	listen := strconv.Itoa(freePort(t))
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
	assert.Equal(t, "a", read(t, addr), "after refused rewires")
	assert.Equal(t, http.StatusOK, rewire("Bearer s3cret", "application/json"))
	assert.Equal(t, "b", read(t, addr))

	require.NoError(t, os.Chmod(token, 0o644))
	cfg, err := parseConfig([]string{"--docker=off", "--listen-address=127.0.0.1", "--route", strconv.Itoa(freePort(t)) + ":" + a,
		"--admin-socket=", "--admin-address=127.0.0.1:0", "--admin-writable", "--admin-token-file", token}, env())
	require.NoError(t, err)
	err = serve(context.Background(), cfg, nil, zaptest.NewLogger(t))
	assert.ErrorContains(t, err, "chmod 600 "+token)
}
