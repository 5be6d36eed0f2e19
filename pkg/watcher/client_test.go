package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The client is satisfied by the real Docker client.
var _ Client = (*client.Client)(nil)

func dialErr(errno syscall.Errno) error {
	return fmt.Errorf("ping docker engine: %w", &net.OpError{Op: "dial", Net: "unix",
		Err: os.NewSyscallError("connect", errno)})
}

func TestExplain(t *testing.T) {
	const (
		denied = "permission denied on /var/run/docker.sock: run the container with --group-add $(stat -c %g /var/run/docker.sock), or as root"
		// Outside a container, no mount can be missing.
		missingOnHost = "no Docker socket at /var/run/docker.sock: the Docker engine is not running (or is restarting), " +
			"or it listens elsewhere: start it, or set --docker-host"
		missingInContainer = "no Docker socket at /var/run/docker.sock: the Docker engine is not running (or is restarting), " +
			"or this container lacks the mount: mount it with -v /var/run/docker.sock:/var/run/docker.sock"
		stale = "the Docker socket at /var/run/docker.sock refuses connections: the engine is down, or it restarted " +
			"and this container's bind mount still shows the old socket file (a mounted file does not follow the new one). " +
			"Mount the socket's directory instead (-v /var/run:/var/run/docker-host " +
			"-e AMBASSADORD_DOCKER_HOST=unix:///var/run/docker-host/docker.sock), or reach the engine through a socket proxy (deploy/socket-proxy)"
	)
	for _, tt := range []struct {
		name      string
		err       error
		host      string
		container bool   // the ambassador runs in a container
		want      string // "" means unchanged
	}{
		{"permission denied", dialErr(syscall.EACCES), "unix:///var/run/docker.sock", true, denied},
		{"socket missing, on the host", dialErr(syscall.ENOENT), "unix:///var/run/docker.sock", false, missingOnHost},
		{"socket missing, in a container", dialErr(syscall.ENOENT), "unix:///var/run/docker.sock", true, missingInContainer},
		{"other socket path, on the host", dialErr(syscall.ENOENT), "unix:///run/docker.sock", false,
			"no Docker socket at /run/docker.sock: the Docker engine is not running (or is restarting), " +
				"or it listens elsewhere: start it, or set --docker-host"},
		{"other socket path, in a container", dialErr(syscall.ENOENT), "unix:///run/docker.sock", true,
			"no Docker socket at /run/docker.sock: the Docker engine is not running (or is restarting), " +
				"or this container lacks the mount: mount it with -v /var/run/docker.sock:/run/docker.sock"},
		{"podman socket missing", dialErr(syscall.ENOENT), "unix:///run/user/1000/podman/podman.sock", false,
			"no Podman socket at /run/user/1000/podman/podman.sock: Podman's API service is not running: " +
				"systemctl enable --now podman.socket (rootless: systemctl --user enable --now podman.socket), " +
				"or run podman system service --time=0 unix:///run/user/1000/podman/podman.sock"},
		{"refused: stale socket", dialErr(syscall.ECONNREFUSED), "unix:///var/run/docker.sock", true, stale},
		{"tcp host is left alone", dialErr(syscall.EACCES), "tcp://10.0.0.1:2375", true, ""},
		{"engine error mentioning a file is left alone",
			errors.New("list containers: open /var/lib/docker/x: no such file or directory"), "unix:///var/run/docker.sock", true, ""},
		{"EOF is left alone", io.EOF, "unix:///var/run/docker.sock", true, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inContainer := func() bool { return tt.container }
			got := explain(tt.err, tt.host, inContainer)
			if tt.want == "" {
				assert.Equal(t, tt.err, got)
				return
			}
			assert.EqualError(t, got, tt.want)
			assert.ErrorIs(t, got, tt.err, "the cause is kept")
			assert.Equal(t, got, explain(got, tt.host, inContainer), "explaining twice changes nothing")
		})
	}
	assert.NoError(t, Explain(nil, ""))
}

func TestExplainDefaultHost(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///custom/docker.sock")
	assert.EqualError(t, explain(dialErr(syscall.ENOENT), "", func() bool { return true }),
		"no Docker socket at /custom/docker.sock: the Docker engine is not running (or is restarting), "+
			"or this container lacks the mount: mount it with -v /var/run/docker.sock:/custom/docker.sock")
}

// TestExplainRealClient checks Explain against the errors the real client
// returns, which do not always wrap their cause.
func TestExplainRealClient(t *testing.T) {
	refuse := func(errno syscall.Errno) client.Opt {
		return client.WithDialContext(func(context.Context, string, string) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", errno)}
		})
	}
	for _, tt := range []struct {
		name  string
		opt   client.Opt
		stale bool   // leave a dead socket file at the path
		want  string // a prefix, with the socket path for %s; "" means unchanged
	}{
		{
			// Whether the mount advice follows depends on where the
			// test runs; TestExplain covers both.
			name: "missing socket",
			want: "no Docker socket at %s: the Docker engine is not running (or is restarting), or ",
		},
		{
			// Tests run as root, which no socket permission stops.
			name: "permission denied",
			opt:  refuse(syscall.EACCES),
			want: "permission denied on %s: run the container with --group-add $(stat -c %%g %[1]s), or as root",
		},
		{
			// A real socket file that nothing listens on any more, as a
			// bind-mounted socket is after the engine restarted.
			name:  "stale socket",
			stale: true,
			want:  "the Docker socket at %s refuses connections: the engine is down, or it restarted and this container's bind mount still shows the old socket file",
		},
		{
			name: "other dial error",
			opt:  refuse(syscall.EHOSTUNREACH),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "docker.sock")
			if tt.stale {
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
				require.NoError(t, err)
				ln.SetUnlinkOnClose(false)
				require.NoError(t, ln.Close())
				require.FileExists(t, sock)
			}
			cli, err := client.New(client.WithHost("unix://"+sock), tt.opt)
			require.NoError(t, err)
			defer cli.Close()
			_, err = cli.Ping(context.Background(), client.PingOptions{NegotiateAPIVersion: true})
			require.Error(t, err)
			got := Explain(fmt.Errorf("ping docker engine: %w", err), cli.DaemonHost())
			if tt.want == "" {
				assert.NotContains(t, got.Error(), "run the container")
				assert.NotContains(t, got.Error(), "mount it")
				return
			}
			assert.True(t, strings.HasPrefix(got.Error(), fmt.Sprintf(tt.want, sock)), "got %q", got)
		})
	}
}

func TestNewClientHost(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///from/env.sock")
	cli, err := NewClient("")
	require.NoError(t, err)
	assert.Equal(t, "unix:///from/env.sock", cli.DaemonHost())
	require.NoError(t, cli.Close())

	cli, err = NewClient("tcp://127.0.0.1:2375")
	require.NoError(t, err)
	assert.Equal(t, "tcp://127.0.0.1:2375", cli.DaemonHost())
	require.NoError(t, cli.Close())

	_, err = NewClient("nonsense")
	assert.ErrorContains(t, err, "create docker client")
}

func TestDetectHost(t *testing.T) {
	getenv := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, tt := range []struct {
		name  string
		env   func(string) string
		files []string
		want  string
	}{
		{"nothing: Docker's default", getenv(), nil, ""},
		{"docker", getenv(), []string{"/var/run/docker.sock", "/run/podman/podman.sock"}, ""},
		{"rootful podman", getenv(), []string{"/run/podman/podman.sock"}, "unix:///run/podman/podman.sock"},
		{"rootless podman", getenv("XDG_RUNTIME_DIR", "/run/user/1000/"), []string{"/run/user/1000/podman/podman.sock"},
			"unix:///run/user/1000/podman/podman.sock"},
		{"a relative XDG_RUNTIME_DIR is ignored", getenv("XDG_RUNTIME_DIR", "run"), []string{"run/podman/podman.sock"}, ""},
		{"DOCKER_HOST", getenv("DOCKER_HOST", "tcp://h:2376"), []string{"/run/podman/podman.sock"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			exists := func(p string) bool { return slices.Contains(tt.files, p) }
			assert.Equal(t, tt.want, DetectHost(tt.env, exists))
		})
	}
}
