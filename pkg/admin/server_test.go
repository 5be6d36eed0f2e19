package admin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
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
			a := testServer(t, Limits{})
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
				var reply errorReply
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

// scriptedController answers as the test sets.
type scriptedController struct {
	status *api.Status
	reply  api.RewireReply
	err    error
}

func (c scriptedController) Status() *api.Status { return c.status }

func (c scriptedController) Rewire(context.Context, api.RewireRequest) (api.RewireReply, error) {
	return c.reply, c.err
}

// TestAdminAnswers: what the endpoint answers for each outcome of the
// controller: a refused rewire by its kind, a rewire the controller did
// not take, a status not published yet, a route it does not have.
func TestAdminAnswers(t *testing.T) {
	ready := &api.Status{Ready: true, Routes: []api.Route{{Name: "6379", Listen: "127.0.0.1:6379", Target: "cache"}}}
	for _, tt := range []struct {
		name   string
		c      scriptedController
		method string
		path   string
		want   int
		errHas string // in the error, or else the body
	}{
		{"rewired", scriptedController{reply: api.RewireReply{Routes: []api.Route{{Name: "6379"}}}}, "POST", "/rewire", 200, `"name": "6379"`},
		{"invalid", scriptedController{reply: api.RewireReply{Error: "new target", Refusal: api.Invalid}}, "POST", "/rewire", 400, "new target"},
		{"unknown", scriptedController{reply: api.RewireReply{Error: "no route", Refusal: api.Unknown}}, "POST", "/rewire", 404, "no route"},
		{"unusable", scriptedController{reply: api.RewireReply{Error: "nothing changed", Refusal: api.Unusable}}, "POST", "/rewire", 409, "nothing changed"},
		{"not taken", scriptedController{err: context.DeadlineExceeded}, "POST", "/rewire", 503, "busy or shutting down"},
		{"status before the first", scriptedController{}, "GET", "/routes", 503, "starting"},
		{"a route before the first status", scriptedController{}, "GET", "/routes/6379", 503, "starting"},
		{"not ready before the first status", scriptedController{}, "GET", "/readyz", 503, ""},
		{"not ready", scriptedController{status: &api.Status{NotReady: []string{"route 6379 is not listening"}}}, "GET", "/readyz", 503, "route 6379 is not listening"},
		{"ready", scriptedController{status: ready}, "GET", "/readyz", 200, "ready"},
		{"a route by target", scriptedController{status: ready}, "GET", "/routes/cache", 200, `"listen": "127.0.0.1:6379"`},
		{"a route by listen port", scriptedController{status: ready}, "GET", "/routes/6379", 200, `"target": "cache"`},
		{"no such route", scriptedController{status: ready}, "GET", "/routes/80", 404, `no route or target \"80\"`},
		{"no metrics", scriptedController{status: ready}, "GET", "/metrics", 404, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Controller: tt.c, Logger: zaptest.NewLogger(t)}
			r := httptest.NewRequest(tt.method, tt.path, strings.NewReader(`{"key":"6379","target":"cache"}`))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			s.handlerFor(access{writable: true}).ServeHTTP(w, r)
			assert.Equal(t, tt.want, w.Code, w.Body.String())
			assert.Contains(t, w.Body.String(), tt.errHas)
		})
	}
}
