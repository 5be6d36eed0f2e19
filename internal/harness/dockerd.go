package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// ErrNoDockerd is wrapped by StartDockerd's error when this machine cannot
// run a private engine: no dockerd or ip command, or not root.
var ErrNoDockerd = errors.New("cannot run a private dockerd")

// Bounds of a private engine's life cycle. A dockerd answers in about a
// second, and stops in one to three: with live restore it stops only its
// containerd, without it its containers too.
const (
	dockerdStopTimeout = 30 * time.Second
	dockerdKillTimeout = 10 * time.Second
)

// dockerdLogTail is how much of a daemon's log LogTail returns.
const dockerdLogTail = 8 << 10

// dockerdSubnetBase is the second octet where private bridges' /24s start,
// in 10.64.0.0/10: clear of the engine's own pools (172.17-31, 192.168)
// and of CreateNetwork's 10.128.0.0/9.
const dockerdSubnetBase = 64

// Dockerd is a private, throw-away Docker daemon: its own data root, exec
// root (with the containerd it manages), socket, default bridge and cgroup
// parent, all named after an ID, so that a test can stop and start an
// engine without touching the shared one or a concurrent run's. It runs as
// a child of the test process; its configuration file is empty, so the
// host's /etc/docker/daemon.json (data root, storage driver) never applies.
//
// It starts no iptables rules, forwarding or masquerading: the host reaches
// its containers directly on the bridge, which is all the tests need, and
// nothing global changes. Storage is vfs, which works on any file system
// and leaves no overlay mounts behind.
//
// A Dockerd is not safe for concurrent use: one test goroutine starts and
// stops it.
type Dockerd struct {
	ID          string       // names the bridge and the cgroup parent; unique per daemon and run
	Dir         string       // holds the data root, exec root, socket, config and log
	Host        string       // unix://Dir/docker.sock, for clients and --docker-host
	Bridge      string       // the default bridge, created for the daemon
	Subnet      netip.Prefix // the bridge's subnet; the host holds its .1
	LiveRestore bool         // containers outlive the daemon

	// With TLS or OnBridge (DockerdOptions), the engine is a "host" of
	// its own: Address is an address of its own (a loopback 127.x.y.z,
	// or its bridge's gateway), where its containers' published ports
	// bind unless they name another address (--ip), and where, with TLS,
	// it serves its API on TCP with --tlsverify (TCPHost). An ambassador
	// reaches it, and its published ports, there, as it would a remote
	// engine's host. Otherwise Address is invalid; without TLS, TCPHost
	// is empty.
	Address netip.Addr
	TCPHost string // tcp://Address:2376
	// TLSDir holds the server certificate the daemon starts with (ca.pem,
	// cert.pem, key.pem): its ca.pem is the CA whose clients it accepts.
	// ReissueTLS replaces it for the next Start.
	TLSDir string

	// Netns is the network namespace the daemon runs in (a name under
	// /var/run/netns, with its own host name), "" for the host's: a node
	// of a Cluster.
	Netns string

	cgroupParent string
	swarmSubnet  netip.Prefix  // the subnet of its docker_gwbridge, once SwarmInit made one
	cmd          *exec.Cmd     // the running daemon; nil while stopped
	exited       chan struct{} // closed once cmd has been waited for
	waitErr      error         // why cmd exited; read after exited is closed
}

// DockerdTLSPort is where a private engine with TLS serves its API on its
// Address: Docker's own port for TLS.
const DockerdTLSPort = 2376

// DockerdOptions are a private engine's settings. The zero value is an
// engine on its unix socket alone, without live restore.
type DockerdOptions struct {
	// LiveRestore keeps the containers running while the daemon is down.
	LiveRestore bool
	// TLS, if set, gives the engine an address of its own and a server
	// certificate TLS issues for it, and makes it serve its API there
	// too, on DockerdTLSPort with --tlsverify: it accepts clients with a
	// certificate of TLS alone.
	TLS *CA
	// OnBridge gives the engine an address of its own (with or without
	// TLS): the host's address on its bridge, the gateway, instead of a
	// loopback address. Containers of other engines on this machine
	// reach it there too, as containers of a client host reach a server
	// host; a loopback address is this machine's processes' alone.
	OnBridge bool
}

// StartDockerd starts a private engine on its unix socket, with or
// without live restore, as StartDockerdWith does.
func StartDockerd(ctx context.Context, id string, liveRestore bool) (*Dockerd, error) {
	return StartDockerdWith(ctx, id, DockerdOptions{LiveRestore: liveRestore})
}

// StartDockerdWith creates a private engine's directory and bridge (and,
// with TLS or OnBridge, its address; with TLS, its server certificate) and
// starts it; it returns
// once the engine answers on its socket and, with TLS, accepts on its TCP
// address. id is at most 11 characters of [a-z0-9] (it names a network
// interface) and must be unique on the machine: callers put their run ID
// in it. On error everything created is removed again.
func StartDockerdWith(ctx context.Context, id string, opts DockerdOptions) (*Dockerd, error) {
	if err := dockerdAvailable(); err != nil {
		return nil, err
	}
	if len(id) == 0 || len(id) > 11 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return nil, fmt.Errorf("private dockerd id %q: want 1 to 11 characters of [a-z0-9]", id)
	}
	// A short path: a unix socket's may have at most 108 bytes, which a
	// test's own temporary directory, named after the test, can exceed.
	dir, err := os.MkdirTemp("", "ambd-"+id+"-")
	if err != nil {
		return nil, fmt.Errorf("create private dockerd dir: %w", err)
	}
	d := &Dockerd{
		ID: id, Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock"),
		Bridge: "ambd" + id, LiveRestore: opts.LiveRestore, cgroupParent: "/ambd-" + id,
	}
	if err := d.prepare(ctx); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	if opts.TLS != nil || opts.OnBridge {
		if err := d.prepareAddress(opts.TLS, opts.OnBridge); err != nil {
			return nil, errors.Join(err, d.Close())
		}
	}
	if err := d.Start(ctx); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// dockerdAvailable says why this machine cannot run a private engine, or
// returns nil.
func dockerdAvailable() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: it needs Linux (bridges, mounts, cgroups)", ErrNoDockerd)
	}
	for _, cmd := range []string{"dockerd", "containerd", "ip"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return fmt.Errorf("%w: %w (apt-get install docker.io iproute2)", ErrNoDockerd, err)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: it needs root (a bridge, mounts, cgroups)", ErrNoDockerd)
	}
	return nil
}

// prepare writes the empty configuration and creates the bridge on a
// subnet that no route of the host's uses.
func (d *Dockerd) prepare(ctx context.Context) error {
	for _, sub := range []string{"data", "exec"} {
		if err := os.Mkdir(filepath.Join(d.Dir, sub), 0o700); err != nil {
			return fmt.Errorf("create private dockerd dir: %w", err)
		}
	}
	if err := os.WriteFile(d.config(), []byte("{}\n"), 0o600); err != nil {
		return fmt.Errorf("write private dockerd config: %w", err)
	}
	subnet, err := freeSubnet(ctx)
	if err != nil {
		return err
	}
	// Subnet is set before the bridge exists so that Close deletes a
	// half-made one too.
	d.Subnet = subnet
	for _, args := range [][]string{
		{"link", "add", "name", d.Bridge, "type", "bridge"},
		{"addr", "add", netip.PrefixFrom(d.gateway(), subnet.Bits()).String(), "dev", d.Bridge},
		{"link", "set", d.Bridge, "up"},
	} {
		if err := d.ip(ctx, args...); err != nil {
			return fmt.Errorf("create bridge %s: %w", d.Bridge, err)
		}
	}
	return nil
}

// prepareAddress picks the engine's address, on its bridge or a free
// loopback one, and with a CA writes its server certificate, issued by
// ca, to TLSDir.
func (d *Dockerd) prepareAddress(ca *CA, onBridge bool) error {
	if onBridge {
		d.Address = d.gateway()
	} else {
		addr, err := freeLoopback()
		if err != nil {
			return err
		}
		d.Address = addr
	}
	if ca == nil {
		return nil
	}
	d.TCPHost = "tcp://" + netip.AddrPortFrom(d.Address, DockerdTLSPort).String()
	d.TLSDir = filepath.Join(d.Dir, "tls")
	return d.ReissueTLS(ca)
}

// gateway is the host's address on the engine's bridge.
func (d *Dockerd) gateway() netip.Addr {
	gw := d.Subnet.Addr().As4()
	gw[3] = 1
	return netip.AddrFrom4(gw)
}

// ReissueTLS replaces the engine's server certificate with one ca issues,
// its ca.pem with ca's: from the next Start, the engine presents a
// certificate of ca and accepts clients of ca alone. A test restarts an
// engine with another CA to misconfigure it.
func (d *Dockerd) ReissueTLS(ca *CA) error {
	if !d.Address.IsValid() {
		return fmt.Errorf("private dockerd %s has no TLS", d.ID)
	}
	if err := Server(ca, d.TLSDir, "ambassadord private engine "+d.ID, d.Address); err != nil {
		return fmt.Errorf("private dockerd %s: %w", d.ID, err)
	}
	return nil
}

// freeLoopback picks a random loopback address in 127.64.0.0/10, clear of
// 127.0.0.0/16 where services usually listen, on which nothing listens on
// DockerdTLSPort. Concurrent runs pick among four million addresses.
func freeLoopback() (netip.Addr, error) {
	for range subnetAttempts {
		a := netip.AddrFrom4([4]byte{127, byte(64 + rand.N(64)), byte(rand.N(256)), byte(1 + rand.N(254))})
		ln, err := net.Listen("tcp", netip.AddrPortFrom(a, DockerdTLSPort).String())
		if err != nil {
			continue
		}
		ln.Close()
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("no free loopback address for port %d after %d attempts", DockerdTLSPort, subnetAttempts)
}

// ip runs ip(8) with args in the daemon's network namespace.
func (d *Dockerd) ip(ctx context.Context, args ...string) error {
	if d.Netns != "" {
		args = append([]string{"-n", d.Netns}, args...)
	}
	return ipCommand(ctx, args...)
}

// gone reports whether an ip(8) error says that the device or namespace
// is not there (any more).
func gone(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Cannot find device") || strings.Contains(msg, "No such file or directory")
}

// ipCommand runs ip(8) with args.
func ipCommand(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// freeSubnet picks a random /24 in 10.64.0.0/10 that overlaps no address
// or prefix in the host's IPv4 routing tables (other engines' bridges,
// concurrent runs' private ones, the host's own networks).
func freeSubnet(ctx context.Context) (netip.Prefix, error) {
	out, err := exec.CommandContext(ctx, "ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list routes: %w", err)
	}
	var used []netip.Prefix
	for _, f := range strings.Fields(string(out)) {
		if p, err := netip.ParsePrefix(f); err == nil {
			used = append(used, p.Masked())
		} else if a, err := netip.ParseAddr(f); err == nil {
			used = append(used, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	for range subnetAttempts {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(dockerdSubnetBase + rand.N(64)), byte(rand.N(256)), 0}), 24)
		if !slices.ContainsFunc(used, p.Overlaps) {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 in 10.%d.0.0/10 after %d attempts", dockerdSubnetBase, subnetAttempts)
}

func (d *Dockerd) config() string  { return filepath.Join(d.Dir, "daemon.json") }
func (d *Dockerd) logPath() string { return filepath.Join(d.Dir, "dockerd.log") }

// Args returns the daemon's command line (without the program name).
func (d *Dockerd) Args() []string {
	args := []string{
		"--config-file", d.config(),
		"--data-root", filepath.Join(d.Dir, "data"),
		"--exec-root", filepath.Join(d.Dir, "exec"),
		"--pidfile", filepath.Join(d.Dir, "docker.pid"),
		"--host", d.Host,
		"--bridge", d.Bridge,
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--storage-driver", "vfs",
		// cgroupfs with an absolute parent puts every container under
		// /sys/fs/cgroup/[CONTROLLER/]<parent>, whatever the host's
		// default driver: Close finds them there.
		"--exec-opt", "native.cgroupdriver=cgroupfs",
		"--cgroup-parent", d.cgroupParent,
	}
	if d.LiveRestore {
		args = append(args, "--live-restore")
	}
	if d.TCPHost != "" {
		args = append(args,
			"--host", d.TCPHost,
			"--tlsverify",
			"--tlscacert", filepath.Join(d.TLSDir, CAFile),
			"--tlscert", filepath.Join(d.TLSDir, CertFile),
			"--tlskey", filepath.Join(d.TLSDir, KeyFile),
		)
	}
	if d.Address.IsValid() {
		// Published ports bind to the engine's address, as they would
		// to its host's: -p 9000 is Address:<ephemeral>.
		args = append(args, "--ip", d.Address.String())
	}
	return args
}

// Command renders the daemon's command line, for logs.
func (d *Dockerd) Command() string { return "dockerd " + strings.Join(d.Args(), " ") }

// Running reports whether the daemon process runs: it was started, has
// not been stopped and has not exited on its own.
func (d *Dockerd) Running() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Start starts the daemon, with the same paths each time, and returns once
// it answers a ping. It fails at once if the daemon exits.
func (d *Dockerd) Start(ctx context.Context) error {
	if d.cmd != nil {
		return errors.New("start private dockerd: already running")
	}
	log, err := os.OpenFile(d.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open private dockerd log: %w", err)
	}
	// Not CommandContext: the daemon lives until Stop or Close, not until
	// the caller's context ends.
	cmd := exec.Command("dockerd", d.Args()...)
	if d.Netns != "" {
		// nsenter rather than ip netns exec, which remounts /sys and
		// hides the cgroup hierarchies from the daemon; a UTS namespace
		// of its own gives the node its host name.
		cmd = exec.Command("unshare", append([]string{"--uts", "sh", "-c", `hostname "$0" && exec nsenter --net=/var/run/netns/"$0" dockerd "$@"`, d.Netns}, d.Args()...)...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	err = cmd.Start()
	log.Close() // the child holds its own descriptor
	if err != nil {
		return fmt.Errorf("start private dockerd: %w", err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go d.wait(cmd, d.exited)

	cli, err := d.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	err = Poll(ctx, func(ctx context.Context) error {
		select {
		case <-d.exited:
			return Permanent(fmt.Errorf("exited: %v; log:\n%s", d.waitErr, d.LogTail()))
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := cli.Ping(pctx, client.PingOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("wait for private dockerd %s to answer: %w", d.ID, err)
	}
	if d.TCPHost != "" {
		// The daemon serves every host it was given once it answers on
		// one; a TCP connect (no handshake: the test may have given it
		// a CA no client of the harness has) confirms it.
		addr := strings.TrimPrefix(d.TCPHost, "tcp://")
		if err := WaitTCP(ctx, addr); err != nil {
			return fmt.Errorf("private dockerd %s: %w", d.ID, err)
		}
	}
	return nil
}

// wait reaps the daemon; a named function so that stack dumps say what
// the goroutine is.
func (d *Dockerd) wait(cmd *exec.Cmd, exited chan<- struct{}) {
	d.waitErr = cmd.Wait()
	close(exited)
}

// Stop sends the daemon SIGTERM, as systemd does, and returns once it has
// exited. With live restore its containers keep running. If it has not
// exited when ctx ends (or within dockerdStopTimeout) it is killed and
// Stop fails.
func (d *Dockerd) Stop(ctx context.Context) error {
	if d.cmd == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, dockerdStopTimeout)
	defer cancel()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop private dockerd %s: %w", d.ID, err)
	}
	select {
	case <-d.exited:
		d.cmd = nil
		return nil
	case <-ctx.Done():
	}
	d.kill()
	return fmt.Errorf("stop private dockerd %s: still running after SIGTERM, killed: %w", d.ID, ctx.Err())
}

// Kill kills the daemon (SIGKILL), as a crash would, and the containerd
// it manages, which would not outlive it for long (its log is a pipe to
// the daemon) and which, half dead, would keep the next Start from
// starting one of its own. It returns once both are gone. The containers
// outlive them, held by their shims; their docker-proxy processes, which
// publish their ports, die with the daemon (their parent-death signal).
// Start starts the engine again with the same paths; with live restore it
// takes the running containers back.
func (d *Dockerd) Kill(ctx context.Context) error {
	if d.cmd == nil {
		return nil
	}
	if err := d.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill private dockerd %s: %w", d.ID, err)
	}
	select {
	case <-d.exited:
	case <-time.After(dockerdKillTimeout):
		return fmt.Errorf("kill private dockerd %s: not reaped after %s", d.ID, dockerdKillTimeout)
	}
	d.cmd = nil
	ctx, cancel := context.WithTimeout(ctx, dockerdKillTimeout)
	defer cancel()
	err := Poll(ctx, func(context.Context) error {
		pid, ok := d.containerdPID()
		if !ok {
			return nil
		}
		syscall.Kill(pid, syscall.SIGKILL)
		return fmt.Errorf("containerd %d still running", pid)
	})
	if err != nil {
		return fmt.Errorf("kill private dockerd %s's containerd: %w", d.ID, err)
	}
	// An orphan is reaped by init, which may be slow to, or not do it
	// at all in a container: a zombie containerd would pass the next
	// daemon's check that the one of its pid file still runs, and the
	// daemon would wait for it instead of starting its own.
	if err := os.Remove(d.containerdPIDFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("kill private dockerd %s: %w", d.ID, err)
	}
	return nil
}

func (d *Dockerd) containerdPIDFile() string {
	return filepath.Join(d.Dir, "exec", "containerd", "containerd.pid")
}

// containerdPID returns the pid of the containerd the daemon started, if
// it runs: the pid its pid file names, if that process's command line
// names Dir (a pid reused by another process does not).
func (d *Dockerd) containerdPID() (int, bool) {
	b, err := os.ReadFile(d.containerdPIDFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, slices.Contains(d.dirPIDs(), pid)
}

// kill sends SIGKILL and waits for the daemon to be reaped.
func (d *Dockerd) kill() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Kill()
	select {
	case <-d.exited:
	case <-time.After(dockerdKillTimeout):
	}
	d.cmd = nil
}

// client returns a client for the daemon. It negotiates the API version
// on its first request.
func (d *Dockerd) client() (*client.Client, error) {
	cli, err := client.New(client.WithHost(d.Host))
	if err != nil {
		return nil, fmt.Errorf("create docker client for %s: %w", d.Host, err)
	}
	return cli, nil
}

// PingTLS pings the daemon over TCP with TLS, as a client holding the
// certificate directory certDir (ca.pem, cert.pem, key.pem) would: nil if
// the engine answers, else why the handshake or the request failed.
func (d *Dockerd) PingTLS(ctx context.Context, certDir string) error {
	if d.TCPHost == "" {
		return fmt.Errorf("private dockerd %s has no TLS", d.ID)
	}
	cli, err := client.New(client.WithHost(d.TCPHost), client.WithTLSClientConfig(
		filepath.Join(certDir, CAFile), filepath.Join(certDir, CertFile), filepath.Join(certDir, KeyFile)))
	if err != nil {
		return fmt.Errorf("create docker client for %s: %w", d.TCPHost, err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("ping %s with %s: %w", d.TCPHost, certDir, err)
	}
	return nil
}

// Engine returns an Engine for the daemon bound to the run label and run
// ID given (those of the shared engine's run, so names say which run they
// belong to). Its client outlives restarts of the daemon.
func (d *Dockerd) Engine(ctx context.Context, label, run string) (*Engine, error) {
	cli, err := d.client()
	if err != nil {
		return nil, err
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("ping private dockerd %s: %w", d.ID, err)
	}
	return &Engine{Client: cli, Label: label, Run: run}, nil
}

// LogTail returns the end of the daemon's log, for failure messages.
func (d *Dockerd) LogTail() string { return logTail(d.logPath()) }

// logTail returns the last dockerdLogTail bytes of the log at path.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > dockerdLogTail {
		f.Seek(fi.Size()-dockerdLogTail, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// Close tears the engine down and leaves nothing behind: its containers
// (removed through its API while it answers, else killed through their
// cgroups), the daemon, the containerd it manages and their shims, every
// mount under Dir, the bridge, the cgroup parent and Dir. It goes on after
// an error and returns them all.
func (d *Dockerd) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if d.Running() {
		errs = append(errs, d.removeContainers(ctx))
	}
	errs = append(errs, d.Stop(ctx))
	errs = append(errs, d.killLeftovers(ctx))
	errs = append(errs, d.unmount())
	if d.Subnet.IsValid() {
		if err := d.ip(ctx, "link", "del", d.Bridge); err != nil && !gone(err) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.removeSwarmBridge(ctx))
	errs = append(errs, d.removeCgroups())
	if err := os.RemoveAll(d.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove private dockerd dir: %w", err))
	}
	return errors.Join(errs...)
}

// removeContainers force-removes every container of the engine: it is
// this test's alone.
func (d *Dockerd) removeContainers(ctx context.Context) error {
	cli, err := d.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	return forceRemoveContainers(ctx, cli, "private dockerd "+d.ID)
}

// forceRemoveContainers force-removes every container cli lists, of the
// engine named engine.
func forceRemoveContainers(ctx context.Context, cli *client.Client, engine string) error {
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return fmt.Errorf("list containers of %s: %w", engine, err)
	}
	var errs []error
	for _, c := range cs.Items {
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID, err))
		}
	}
	return errors.Join(errs...)
}

// killLeftovers kills what outlived the daemon: processes in its cgroup
// parent (containers it did not remove) and processes whose command line
// names Dir (its containerd, and the shims, which reparent to init). Both
// are this daemon's alone: the cgroup parent and Dir carry its ID, and
// Dir a random suffix. It waits until they are gone.
func (d *Dockerd) killLeftovers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dockerdKillTimeout)
	defer cancel()
	err := Poll(ctx, func(context.Context) error {
		pids := append(d.cgroupPIDs(), d.dirPIDs()...)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if len(pids) > 0 {
			return fmt.Errorf("processes left: %v", pids)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kill what private dockerd %s left: %w", d.ID, err)
	}
	return nil
}

// cgroupDirs returns the daemon's cgroup parent in every hierarchy: under
// cgroup v1 one per controller, under v2 one.
func (d *Dockerd) cgroupDirs() []string {
	v1, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.cgroupParent))
	v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", d.cgroupParent))
	return append(v1, v2...)
}

// cgroupPIDs returns the processes in the daemon's cgroup parent or below.
func (d *Dockerd) cgroupPIDs() []int {
	var pids []int
	for _, root := range d.cgroupDirs() {
		filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// dirPIDs returns the processes, other than this one, with an argument
// under Dir.
func (d *Dockerd) dirPIDs() []int { return pidsNaming(d.Dir) }

// pidsNaming returns the processes, other than this one, with an argument
// that is dir, a path under it, or a URL of one.
func pidsNaming(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(b, []byte{0}) {
			if s := string(arg); s == dir || strings.HasPrefix(s, dir+"/") || strings.Contains(s, "://"+dir+"/") {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the daemon's cgroup parent and what is left below
// it, deepest first; runc removes a container's own cgroup, not the
// parent.
func (d *Dockerd) removeCgroups() error {
	var errs []error
	for _, root := range d.cgroupDirs() {
		var dirs []string
		filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for _, dir := range slices.Backward(dirs) {
			if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// CopyImage copies the image ref from e to dst, like `docker save ref |
// docker -H dst load`: a private engine starts empty and cannot pull.
func (e *Engine) CopyImage(ctx context.Context, dst *Engine, ref string) error {
	saved, err := e.Client.ImageSave(ctx, []string{ref})
	if err != nil {
		return fmt.Errorf("save image %s: %w", ref, err)
	}
	defer saved.Close()
	res, err := dst.Client.ImageLoad(ctx, saved, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("load image %s: %w", ref, err)
	}
	defer res.Close()
	// The load reports failure in a JSON message stream.
	dec := json.NewDecoder(res)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("load image %s: read progress: %w", ref, err)
		}
		if m.Error != nil {
			return fmt.Errorf("load image %s: %s", ref, m.Error.Message)
		}
	}
}
