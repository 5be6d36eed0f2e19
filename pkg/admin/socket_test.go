package admin

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ambassadord/ambassadord/internal/nettest"
)

// nobody is the uid the tests run other processes as, and give files to.
const nobody = 65534

// listenTest listens on the unix socket path until the test ends.
func listenTest(t *testing.T, path string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestPrivateDir(t *testing.T) {
	for _, tt := range []struct {
		name   string
		root   bool // needs root
		setup  func(t *testing.T, dir string)
		errHas string
	}{
		{"missing: created 0700", false, func(t *testing.T, dir string) { require.NoError(t, os.Mkdir(filepath.Dir(dir), 0o755)) }, ""},
		{"missing with its parent", false, func(t *testing.T, dir string) {}, ""},
		{"private", false, func(t *testing.T, dir string) { require.NoError(t, os.MkdirAll(dir, 0o700)) }, ""},
		{"open to others", false, func(t *testing.T, dir string) {
			require.NoError(t, os.MkdirAll(dir, 0o700))
			require.NoError(t, os.Chmod(dir, 0o755))
		}, "mode 0755 lets others in"},
		{"a file", false, func(t *testing.T, dir string) {
			require.NoError(t, os.MkdirAll(filepath.Dir(dir), 0o755))
			require.NoError(t, os.WriteFile(dir, nil, 0o600))
		}, "not a directory"},
		{"a link to a private directory", false, func(t *testing.T, dir string) {
			require.NoError(t, os.MkdirAll(filepath.Dir(dir), 0o755))
			target := filepath.Join(t.TempDir(), "elsewhere")
			require.NoError(t, os.Mkdir(target, 0o700))
			require.NoError(t, os.Symlink(target, dir))
		}, "not a directory"},
		{"another user's", true, func(t *testing.T, dir string) {
			require.NoError(t, os.MkdirAll(dir, 0o700))
			require.NoError(t, os.Chown(dir, nobody, nobody))
		}, "owned by uid 65534"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root {
				nettest.RequireRoot(t, "to give a directory to another user")
			}
			dir := filepath.Join(t.TempDir(), "run", "ambassadord")
			tt.setup(t, dir)
			err := privateDir(dir)
			if tt.errHas != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.errHas)
				assert.Contains(t, err.Error(), dir)
				return
			}
			require.NoError(t, err)
			fi, err := os.Lstat(dir)
			require.NoError(t, err)
			assert.True(t, fi.IsDir())
			assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
		})
	}
}

// TestListenAdminSocket: auto listens on the file socket in its private
// directory, replacing a stale one; falls back to the abstract socket,
// saying why, when the directory is not private; and a socket in use,
// whichever, is a start-up error naming its holder.
func TestListenAdminSocket(t *testing.T) {
	holder := fmt.Sprintf("in use by pid %d uid %d", os.Getpid(), os.Geteuid())
	for _, tt := range []struct {
		name    string
		auto    bool
		setup   func(t *testing.T, file, abstract string) // before listening
		want    string                                    // "file" or "abstract": where it listens
		logHas  string                                    // in the Info line of a fallback
		errHas  string
		explict string // with auto false: "file" or "abstract"
	}{
		{name: "auto: a new private directory", auto: true, setup: func(t *testing.T, file, abstract string) {}, want: "file"},
		{name: "auto: a stale socket file", auto: true, setup: func(t *testing.T, file, abstract string) {
			require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o700))
			ln := listenTest(t, file).(*net.UnixListener)
			ln.SetUnlinkOnClose(false)
			ln.Close()
		}, want: "file"},
		{name: "auto: a directory open to others", auto: true, setup: func(t *testing.T, file, abstract string) {
			require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
			require.NoError(t, os.Chmod(filepath.Dir(file), 0o755))
		}, want: "abstract", logHas: "lets others in"},
		{name: "auto: a directory that cannot be made", auto: true, setup: func(t *testing.T, file, abstract string) {
			// Its parent is a file.
			require.NoError(t, os.WriteFile(filepath.Dir(filepath.Dir(file)), nil, 0o600))
		}, want: "abstract", logHas: "not a directory"},
		{name: "auto: the file socket in use", auto: true, setup: func(t *testing.T, file, abstract string) {
			require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o700))
			listenTest(t, file)
		}, errHas: holder},
		{name: "auto: no private directory, the abstract socket in use", auto: true, setup: func(t *testing.T, file, abstract string) {
			require.NoError(t, os.WriteFile(filepath.Dir(filepath.Dir(file)), nil, 0o600))
			listenTest(t, abstract)
		}, errHas: holder},
		{name: "an abstract socket in use", explict: "abstract", setup: func(t *testing.T, file, abstract string) {
			listenTest(t, abstract)
		}, errHas: holder},
		{name: "a socket file in use", explict: "file", setup: func(t *testing.T, file, abstract string) {
			require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o700))
			listenTest(t, file)
		}, errHas: holder},
		{name: "a stale socket file", explict: "file", setup: func(t *testing.T, file, abstract string) {
			require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o700))
			ln := listenTest(t, file).(*net.UnixListener)
			ln.SetUnlinkOnClose(false)
			ln.Close()
		}, want: "file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "run", "ambassadord", "admin.sock")
			abstract := nettest.AbstractName(t, "admin")
			tt.setup(t, file, abstract)
			core, logs := observer.New(zapcore.InfoLevel)
			path := SocketAuto
			switch tt.explict {
			case "file":
				path = file
			case "abstract":
				path = abstract
			}
			ln, got, err := listenSocket(zap.New(core), path, file, abstract)
			if tt.errHas != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.errHas)
				assert.Contains(t, err.Error(), "--admin-socket")
				return
			}
			require.NoError(t, err)
			defer ln.Close()
			want := map[string]string{"file": file, "abstract": abstract}[tt.want]
			assert.Equal(t, want, got)
			assert.Equal(t, want, ln.Addr().String())
			c, err := dialFirst(context.Background(), []string{got})
			require.NoError(t, err, "connect to the socket listened on")
			c.Close()
			fallbacks := logs.FilterMessageSnippet("using the abstract socket").All()
			if tt.logHas == "" {
				assert.Empty(t, fallbacks)
				return
			}
			require.Len(t, fallbacks, 1)
			assert.Contains(t, fallbacks[0].ContextMap()["reason"], tt.logHas)
		})
	}
}

// TestPeerCheckRefusal: a peer the socket does not serve is answered 403
// naming the users it serves, its request read (no reset), and the
// refusals of a burst are logged once.
func TestPeerCheckRefusal(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	a := testServer(t, Limits{})
	socket := nettest.AbstractName(t, "admin")
	ln, err := listenUnix(socket)
	require.NoError(t, err)
	a.serve(&peerCheckListener{Listener: ln, log: zap.New(core), allow: func(uint32) bool { return false }},
		a.handlerFor(access{writable: true, peers: true}))

	client := &Client{Socket: socket}
	start := time.Now()
	const burst = 20
	for i := range burst {
		var err error
		if i%2 == 0 {
			err = client.Get(t.Context(), "/healthz", nil)
		} else {
			// A request with a body the socket does not read: unread,
			// it would reach the peer as a reset.
			err = client.Post(t.Context(), "/rewire", map[string]string{"key": "6379", "target": strings.Repeat("x", 32<<10)}, nil)
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), "serves only root (uid 0)")
		assert.Contains(t, err.Error(), fmt.Sprintf("runs as uid %d", os.Geteuid()))
	}
	took := time.Since(start)
	lines := logs.FilterMessageSnippet("refused a peer").All()
	require.NotEmpty(t, lines)
	assert.LessOrEqual(t, len(lines), 1+int(took/time.Second), "log lines for %d refusals in %s", burst, took)
	assert.EqualValues(t, 1, lines[0].ContextMap()["refused"])
}

// TestDialFirst: the CLI tries the sockets in order, going on past those
// that do not accept.
func TestDialFirst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	require.NoError(t, os.Mkdir(dir, 0o700))
	file, abstract := filepath.Join(dir, "admin.sock"), nettest.AbstractName(t, "admin")
	for _, tt := range []struct {
		name   string
		listen []string
		want   string
	}{
		{"the file first", []string{file, abstract}, file},
		{"no file: the abstract socket", []string{abstract}, abstract},
		{"neither", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range tt.listen {
				ln := listenTest(t, p)
				defer ln.Close()
			}
			c, err := dialFirst(context.Background(), []string{file, abstract})
			if tt.want == "" {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tt.want, c.RemoteAddr().String())
		})
	}
}

func TestTrustedHolder(t *testing.T) {
	const self = 1000
	for _, tt := range []struct {
		name    string
		uid     uint32
		owner   uint32
		private bool
		want    bool
	}{
		{"root", 0, 0, false, true},
		{"the CLI's own user", self, 0, false, true},
		{"another user", 2000, 0, false, false},
		{"the owner of the private directory", 2000, 2000, true, true},
		{"another user than the directory's owner", 2000, 3000, true, false},
		{"the owner of a directory that is not private", 2000, 2000, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, trustedHolder(tt.uid, self, tt.owner, tt.private))
		})
	}
}

func TestSocketDirOwner(t *testing.T) {
	nettest.RequireRoot(t, "to give directories to another user")
	for _, tt := range []struct {
		name        string
		dirMode     os.FileMode
		dirOwner    int
		parentMode  os.FileMode
		parentOwner int
		abstract    bool
		wantPrivate bool
	}{
		{"private, under root's", 0o700, nobody, 0o755, 0, false, true},
		{"open to the group", 0o750, nobody, 0o755, 0, false, false},
		{"under a directory others may write", 0o700, nobody, 0o777, 0, false, false},
		{"under its owner's directory", 0o700, nobody, 0o755, nobody, false, false},
		{"abstract", 0o700, nobody, 0o755, 0, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			parent := filepath.Join(t.TempDir(), "run")
			dir := filepath.Join(parent, "ambassadord")
			require.NoError(t, os.MkdirAll(dir, 0o700))
			require.NoError(t, os.Chmod(dir, tt.dirMode))
			require.NoError(t, os.Chown(dir, tt.dirOwner, tt.dirOwner))
			require.NoError(t, os.Chmod(parent, tt.parentMode))
			require.NoError(t, os.Chown(parent, tt.parentOwner, tt.parentOwner))
			path := filepath.Join(dir, "admin.sock")
			if tt.abstract {
				path = "@ambassadord"
			}
			owner, private := socketDirOwner(path, 0)
			assert.Equal(t, tt.wantPrivate, private)
			if private {
				assert.EqualValues(t, tt.dirOwner, owner)
			}
		})
	}
}
