package watcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"
)

// Client is the part of the Docker Engine API the watcher uses. A
// *client.Client from [NewClient] satisfies it, and so do the tests' fakes.
type Client interface {
	// Ping checks that the engine answers.
	Ping(ctx context.Context, opts client.PingOptions) (client.PingResult, error)
	// Events streams the engine's events until ctx is cancelled or the
	// stream fails; reopening it is the caller's job.
	Events(ctx context.Context, opts client.EventsListOptions) client.EventsResult
	// ContainerList lists containers.
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	// ContainerInspect returns one container's full configuration.
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	// ServiceList, TaskList and NodeList list a Swarm manager's services,
	// tasks and nodes; they are called only on an engine whose ping says
	// it is one.
	ServiceList(ctx context.Context, opts client.ServiceListOptions) (client.ServiceListResult, error)
	TaskList(ctx context.Context, opts client.TaskListOptions) (client.TaskListResult, error)
	NodeList(ctx context.Context, opts client.NodeListOptions) (client.NodeListResult, error)
	// Info tells an engine's Swarm role where its ping does not (API
	// versions before 1.42 send no Swarm header).
	Info(ctx context.Context, opts client.InfoOptions) (client.SystemInfoResult, error)
	// ServerVersion tells which engine answers: Docker or Podman, its
	// version and API version.
	ServerVersion(ctx context.Context, opts client.ServerVersionOptions) (client.ServerVersionResult, error)
}

// daemonHoster is implemented by *client.Client: it tells which address the
// client dials, so that connection errors can name the socket.
type daemonHoster interface {
	DaemonHost() string
}

// NewClient returns a Docker client configured from the environment
// (DOCKER_HOST, DOCKER_API_VERSION, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY), with
// host overriding DOCKER_HOST when it is not empty.
//
// The client negotiates the API version with the engine on its first request
// (and again on the next one if the engine could not be reached), so it works
// with every engine from API 1.41 (Docker 20.10) to the newest one the client
// knows; DOCKER_API_VERSION pins a version instead. No connection is made
// here: an unreachable engine is reported by [Watcher.Run]. The caller closes
// the client when done.
func NewClient(host string) (*client.Client, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("create docker client: %w", err)
	}
	return cli, nil
}

// The engine client's transport settings, as the Docker client's own
// (github.com/docker/go-connections/sockets) has them.
const (
	engineDialTimeout  = 10 * time.Second
	engineMaxIdleConns = 6
	engineIdleTimeout  = 30 * time.Second
)

// newEngineClient returns a client for an engine given by --engine: it
// dials spec.URL, with the TLS files of spec.TLSDir when there are some,
// and reads nothing of the environment: DOCKER_HOST, DOCKER_CERT_PATH,
// DOCKER_TLS_VERIFY and DOCKER_API_VERSION are the local engine's, and no
// HTTP proxy of HTTP_PROXY/HTTPS_PROXY is put between it and the engine.
// The API version is negotiated on the first request, as [NewClient]'s is.
// extra options come last (the tests', Check's). No connection is made
// here.
func newEngineClient(spec EngineSpec, extra ...client.Opt) (*client.Client, error) {
	tr, err := engineTransport(spec)
	if err != nil {
		return nil, err
	}
	// WithHost sets the address and configures the client's default
	// transport for it, with the proxies of the environment; the transport
	// given next replaces that one, and the address stays.
	opts := append([]client.Opt{
		client.WithHost(spec.URL),
		client.WithHTTPClient(&http.Client{Transport: tr, CheckRedirect: client.CheckRedirect}),
	}, extra...)
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("create docker client: %w", err)
	}
	return cli, nil
}

// engineTransport returns the HTTP transport of an engine given by
// --engine: no proxy, a dialer for its unix socket or TCP address, and TLS
// from its directory (an https client then).
func engineTransport(spec EngineSpec) (*http.Transport, error) {
	tr := &http.Transport{
		MaxIdleConns:    engineMaxIdleConns,
		IdleConnTimeout: engineIdleTimeout,
	}
	dialer := &net.Dialer{Timeout: engineDialTimeout}
	if path, ok := strings.CutPrefix(spec.URL, "unix://"); ok {
		tr.DisableCompression = true
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		}
	} else {
		tr.DialContext = dialer.DialContext
	}
	if spec.TLSDir != "" {
		f, err := loadTLS(spec.TLSDir)
		if err != nil {
			return nil, fmt.Errorf("engine %q: %w", spec.Name, err)
		}
		tr.TLSClientConfig = f.config()
		tr.TLSHandshakeTimeout = engineDialTimeout
	}
	return tr, nil
}

// DefaultHost returns the engine address used when none is given:
// $DOCKER_HOST, else the default socket, unix:///var/run/docker.sock.
func DefaultHost() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return client.DefaultDockerHost
}

// PodmanSockets returns where Podman's API service listens when it is
// set up as its packages do: rootful (podman.socket), then rootless, in
// $XDG_RUNTIME_DIR of the user, when getenv gives one.
func PodmanSockets(getenv func(string) string) []string {
	socks := []string{"/run/podman/podman.sock"}
	if dir := getenv("XDG_RUNTIME_DIR"); strings.HasPrefix(dir, "/") {
		socks = append(socks, strings.TrimRight(dir, "/")+"/podman/podman.sock")
	}
	return socks
}

// DetectHost returns the engine address to use when none is given
// (neither --docker-host nor DOCKER_HOST): "" (the Docker default, which
// [DefaultHost] gives) when Docker's socket exists or no Podman socket
// does, else the first Podman socket of [PodmanSockets] that exists, as a
// unix:// URL. exists tells whether a file exists (os.Stat, in tests a
// fake). Docker wins where both run: it is what the default always was.
func DetectHost(getenv func(string) string, exists func(path string) bool) string {
	if getenv("DOCKER_HOST") != "" || exists(strings.TrimPrefix(client.DefaultDockerHost, "unix://")) {
		return ""
	}
	for _, sock := range PodmanSockets(getenv) {
		if exists(sock) {
			return "unix://" + sock
		}
	}
	return ""
}

// SocketPath returns the file of a unix:// engine address ("" means
// [DefaultHost]), or "" for other kinds of address.
func SocketPath(host string) string {
	if host == "" {
		host = DefaultHost()
	}
	path, _ := strings.CutPrefix(host, "unix://")
	if path == host {
		return ""
	}
	return path
}

// Explain turns the connection errors users hit most into errors that say
// how to fix them: permission denied on the Docker socket, no socket at all
// (the engine is down or restarting, or a container lacks the mount), and a
// socket that refuses connections (the engine is down, or a stale bind
// mount after it restarted). host is the engine's address
// ("unix:///var/run/docker.sock"); empty means DOCKER_HOST, or the default
// socket. Other errors, and errors for non-unix hosts, are returned
// unchanged. The explained error wraps err, so errors.Is still sees the
// cause.
func Explain(err error, host string) error {
	return explain(err, host, runningInContainer)
}

// explain is Explain with the container check injected, for tests: it is
// called only for a missing socket.
func explain(err error, host string, inContainer func() bool) error {
	if err == nil {
		return nil
	}
	var done *explainedError
	if errors.As(err, &done) {
		return err
	}
	if host == "" {
		host = os.Getenv("DOCKER_HOST")
	}
	if host == "" {
		host = client.DefaultDockerHost
	}
	sock, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		return err
	}
	// The client re-creates its permission error without wrapping the
	// cause, so its text is all there is to go on; it marks it as a
	// connection failure, which keeps an engine's own error messages (which
	// may mention files) from matching.
	connFailed := client.IsErrConnectionFailed(err)
	msg := err.Error()
	switch {
	case errors.Is(err, os.ErrPermission) || connFailed && strings.Contains(msg, "permission denied"):
		return &explainedError{
			msg: fmt.Sprintf("permission denied on %s: run the container with --group-add $(stat -c %%g %s), or as root", sock, sock),
			err: err,
		}
	case errors.Is(err, os.ErrNotExist) || connFailed && strings.Contains(msg, "no such file or directory"):
		// A dockerd that stops or restarts deletes its socket, so the
		// engine being down is always a possible cause. A missing mount
		// is one only in a container: on the host, that advice would
		// send the user looking for a problem they do not have.
		advice := fmt.Sprintf("no Docker socket at %s: the Docker engine is not running (or is restarting), "+
			"or it listens elsewhere: start it, or set --docker-host", sock)
		if strings.Contains(sock, "podman") {
			// Podman's API is a service of its own, started by
			// systemd's podman.socket, or by hand.
			advice = fmt.Sprintf("no Podman socket at %s: Podman's API service is not running: "+
				"systemctl enable --now podman.socket (rootless: systemctl --user enable --now podman.socket), "+
				"or run podman system service --time=0 unix://%s", sock, sock)
		}
		if inContainer() {
			advice = fmt.Sprintf("no Docker socket at %s: the Docker engine is not running (or is restarting), "+
				"or this container lacks the mount: mount it with -v /var/run/docker.sock:%s", sock, sock)
		}
		return &explainedError{msg: advice, err: err}
	case errors.Is(err, syscall.ECONNREFUSED) || connFailed && isSocket(sock):
		// The file is there and nothing listens on it (the client says
		// only "Cannot connect"). A bind mount of the
		// socket file pins the file the engine had when the container
		// started: once the engine restarts and makes a new one, the mount
		// still shows the old, dead one.
		return &explainedError{
			msg: fmt.Sprintf("the Docker socket at %s refuses connections: the engine is down, or it restarted "+
				"and this container's bind mount still shows the old socket file (a mounted file does not follow "+
				"the new one). Mount the socket's directory instead (-v /var/run:/var/run/docker-host "+
				"-e AMBASSADORD_DOCKER_HOST=unix:///var/run/docker-host/docker.sock), or reach the engine "+
				"through a socket proxy (deploy/socket-proxy)", sock),
			err: err,
		}
	}
	return err
}

// runningInContainer reports whether the process runs in a container. Docker
// creates /.dockerenv in the root of every container, and Podman
// /run/.containerenv; neither exists on a host unless made by hand. Two
// stats are cheap enough for an error path, and unlike [SelfCandidates]
// they do not mistake a host whose name looks like an ID for a container.
func runningInContainer() bool {
	for _, p := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// isSocket reports whether path is a unix socket file.
func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Type() == os.ModeSocket
}

// explainedError replaces a connection error's message with advice, and
// keeps the error as its cause.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }
