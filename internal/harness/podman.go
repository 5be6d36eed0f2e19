package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// ErrNoPodman is wrapped by StartPodman's error when this machine cannot
// run a private Podman service: no podman, or not root.
var ErrNoPodman = errors.New("cannot run a private podman service")

// podmanStopTimeout bounds the service's exit on SIGTERM.
const podmanStopTimeout = 10 * time.Second

// Podman is a private, throw-away Podman API service (podman system
// service): its own storage root, run root, temporary directory (where
// its events log and its containers' exit files live), network
// configuration directory and socket, all under Dir, so that a test
// neither sees nor touches the host's Podman containers or a concurrent
// run's. It serves Podman's Docker-compatible API on Host, which the
// Docker client and the ambassador's --docker-host speak to.
//
// Its containers.conf (CONTAINERS_CONF, so no other one applies) sets what
// this machine needs: default_ulimits that do not ask the runtime to raise
// nofile and nproc (which this machine refuses: "error setting rlimit ...
// operation not permitted"), the cgroupfs cgroup manager (no systemd here)
// the file events backend (no journald), and runc, which Docker uses too
// (Debian's crun refuses this machine's hybrid cgroups: "cgroups in hybrid
// mode not supported").
//
// Its containers run under conmon, outside the service's process: Close
// removes them through the API, then stops the service, then removes the
// networks' bridges that netavark made and Dir.
type Podman struct {
	ID   string // names the network bridges; unique per service and run
	Dir  string // holds the storage, run root, tmp dir, config, socket and log
	Host string // unix://Dir/podman.sock, for clients and --docker-host

	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	waitErr error         // read after exited is closed
	bridges []string      // created by CreateNetwork
}

// podmanConf is the service's containers.conf.
const podmanConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
`

// StartPodman starts a private Podman service and returns once it answers.
// id is at most 11 characters of [a-z0-9] and must be unique on the
// machine (callers put their run ID in it). On error everything created is
// removed again.
func StartPodman(ctx context.Context, id string) (*Podman, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("%w: it needs Linux", ErrNoPodman)
	}
	if _, err := exec.LookPath("podman"); err != nil {
		return nil, fmt.Errorf("%w: %w (apt-get install podman)", ErrNoPodman, err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: it needs root (bridge networks the host can reach)", ErrNoPodman)
	}
	if len(id) == 0 || len(id) > 11 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return nil, fmt.Errorf("private podman id %q: want 1 to 11 characters of [a-z0-9]", id)
	}
	dir, err := os.MkdirTemp("", "ambp-"+id+"-")
	if err != nil {
		return nil, fmt.Errorf("create private podman dir: %w", err)
	}
	p := &Podman{ID: id, Dir: dir, Host: "unix://" + filepath.Join(dir, "podman.sock")}
	if err := p.start(ctx); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// Args returns the service's command line (without the program name).
func (p *Podman) Args() []string {
	return []string{
		"--root", filepath.Join(p.Dir, "root"),
		"--runroot", filepath.Join(p.Dir, "run"),
		"--tmpdir", filepath.Join(p.Dir, "tmp"),
		"--network-config-dir", filepath.Join(p.Dir, "networks"),
		"--storage-driver", "vfs",
		"system", "service", "--time=0", p.Host,
	}
}

// Env returns the environment the service runs with.
func (p *Podman) Env() []string {
	return []string{
		"CONTAINERS_CONF=" + filepath.Join(p.Dir, "containers.conf"),
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
}

// Command returns the shell command that starts the service.
func (p *Podman) Command() string {
	return strings.Join(p.Env(), " ") + " podman " + strings.Join(p.Args(), " ")
}

func (p *Podman) logPath() string { return filepath.Join(p.Dir, "podman.log") }

func (p *Podman) start(ctx context.Context) error {
	for _, sub := range []string{"root", "run", "tmp", "networks"} {
		if err := os.Mkdir(filepath.Join(p.Dir, sub), 0o700); err != nil {
			return fmt.Errorf("create private podman dir: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(p.Dir, "containers.conf"), []byte(podmanConf), 0o600); err != nil {
		return fmt.Errorf("write private podman containers.conf: %w", err)
	}
	log, err := os.Create(p.logPath())
	if err != nil {
		return fmt.Errorf("create private podman log: %w", err)
	}
	defer log.Close()
	cmd := exec.Command("podman", p.Args()...)
	cmd.Env = p.Env()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start podman system service: %w", err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go p.wait(cmd)

	cli, err := p.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = Poll(ctx, func(ctx context.Context) error {
		select {
		case <-p.exited:
			return Permanent(fmt.Errorf("podman system service exited: %v; log:\n%s", p.waitErr, p.LogTail()))
		default:
		}
		_, err := cli.Ping(ctx, client.PingOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("private podman %s does not answer: %w", p.ID, err)
	}
	return nil
}

// wait reaps the service; a named function so that stack dumps say what
// the goroutine is.
func (p *Podman) wait(cmd *exec.Cmd) {
	p.waitErr = cmd.Wait()
	close(p.exited)
}

func (p *Podman) client() (*client.Client, error) {
	cli, err := client.New(client.WithHost(p.Host))
	if err != nil {
		return nil, fmt.Errorf("create docker client for %s: %w", p.Host, err)
	}
	return cli, nil
}

// Engine returns an Engine for the service bound to the run label and run
// ID given, as [Dockerd.Engine] does.
func (p *Podman) Engine(ctx context.Context, label, run string) (*Engine, error) {
	cli, err := p.client()
	if err != nil {
		return nil, err
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("ping private podman %s: %w", p.ID, err)
	}
	return &Engine{Client: cli, Label: label, Run: run}, nil
}

// CreateNetwork creates on the service a bridge network named name, on a
// free /24 of 10.64.0.0/10 with its own bridge interface (named after the
// service's ID and n), so that it clashes with no other engine's. The
// host holds the gateway, .1, and reaches the containers directly.
func (p *Podman) CreateNetwork(ctx context.Context, e *Engine, name string, n int) (*Network, error) {
	bridge := fmt.Sprintf("ambp%s%d", p.ID, n)
	if len(bridge) > 15 {
		return nil, fmt.Errorf("bridge name %s is longer than an interface name may be", bridge)
	}
	var errs []error
	for range subnetAttempts {
		subnet, err := freeSubnet(ctx)
		if err != nil {
			return nil, err
		}
		res, err := e.Client.NetworkCreate(ctx, name, client.NetworkCreateOptions{
			Driver:  "bridge",
			Labels:  e.labels(),
			Options: map[string]string{"com.docker.network.bridge.name": bridge},
			IPAM:    &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet}}},
		})
		if err == nil {
			p.bridges = append(p.bridges, bridge)
			return &Network{ID: res.ID, Name: name, Subnet: subnet}, nil
		}
		// Podman also refuses the subnets of its configured networks,
		// which no route shows: its default one is 10.88.0.0/16.
		if !strings.Contains(err.Error(), "already used") {
			return nil, fmt.Errorf("create podman network %s: %w", name, err)
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("create podman network %s: no free subnet after %d attempts: %w", name, subnetAttempts, errors.Join(errs...))
}

// Running reports whether the service runs.
func (p *Podman) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// LogTail returns the end of the service's log, for failure messages.
func (p *Podman) LogTail() string { return logTail(p.logPath()) }

// Close removes everything of the service: its containers (through its API
// while it answers), the service, the bridges of its networks, and Dir. It
// goes on after an error and returns them all.
func (p *Podman) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if p.Running() {
		errs = append(errs, p.removeAll(ctx))
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(podmanStopTimeout):
			p.cmd.Process.Kill()
			<-p.exited
			errs = append(errs, fmt.Errorf("private podman %s still running %s after SIGTERM; killed", p.ID, podmanStopTimeout))
		}
	}
	for _, b := range p.bridges {
		if err := ipCommand(ctx, "link", "del", b); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	// What may outlive the service: conmon and slirp4netns of a
	// container it could not remove, and the `podman container cleanup`
	// that conmon runs when a container exits, which writes under Dir
	// after the removal returned. Their command lines name Dir, which
	// is this service's alone (it carries a random suffix).
	ctx, cancel = context.WithTimeout(ctx, dockerdKillTimeout)
	defer cancel()
	err := Poll(ctx, func(context.Context) error {
		pids := pidsNaming(p.Dir)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		// vfs leaves no mounts, but a container's shm and network
		// namespace may be mounted: unmount whatever is left.
		if err := unmountUnder(p.Dir); err != nil {
			return err
		}
		if err := os.RemoveAll(p.Dir); err != nil {
			return fmt.Errorf("remove private podman dir (processes left: %v): %w", pids, err)
		}
		return nil
	})
	errs = append(errs, err)
	return errors.Join(errs...)
}

// removeAll force-removes every container and network of the service:
// they are this test's alone.
func (p *Podman) removeAll(ctx context.Context) error {
	cli, err := p.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	errs := []error{forceRemoveContainers(ctx, cli, "private podman "+p.ID)}
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list networks of private podman %s: %w", p.ID, err))...)
	}
	for _, n := range ns.Items {
		if n.Name == "podman" || n.Name == "bridge" {
			continue // the default network (the compat API calls it bridge)
		}
		if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Healthcheck runs a container's healthcheck once, as `podman
// healthcheck run` does, through Podman's own API (the Docker API has no
// such call), and returns the health status it left. Podman schedules
// healthchecks with systemd timers: where no systemd runs (this machine,
// CI), none run unless called, and a test plays the timer.
func (p *Podman) Healthcheck(ctx context.Context, id string) (string, error) {
	path := strings.TrimPrefix(p.Host, "unix://")
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://podman/v4.0.0/libpod/containers/"+id+"/healthcheck", nil)
	if err != nil {
		return "", err
	}
	res, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("run healthcheck of %s: %w", id, err)
	}
	defer res.Body.Close()
	var out struct{ Status string }
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("run healthcheck of %s: %w", id, err)
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("run healthcheck of %s: %s: %s", id, res.Status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("run healthcheck of %s: %w", id, err)
	}
	return out.Status, nil
}
