// Package harness drives a real Docker Engine for ambassadord's end-to-end
// tests (e2e/, the deploy recipes' tests among them), its demo
// (e2e/cmd/demo) and the benchmark's rewires (bench/): it builds FROM-scratch images from
// in-memory tar contexts, runs containers on the default bridge or on
// networks of its own, changes them as a test needs (stop, rename,
// disconnect, ...), records the engine's events, waits by polling with
// deadlines, and removes what it created. It also starts private,
// throw-away engines (Dockerd), and plays other hosts with them: each
// with a loopback address of its own and a TLS endpoint whose
// certificates a test's PKI issues (tls.go).
//
// Everything an Engine creates carries the label Engine.Label=Engine.Run, so
// Cleanup removes exactly one run's resources and never touches anything
// else on a shared engine; Sweep removes what crashed earlier runs left.
//
// An Engine holds no mutable state after Connect and may be used from
// several goroutines (parallel tests) at once.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// Label keys: the e2e tests, the demo and the benchmark clean up
// independently (`make clean` removes all three).
const (
	E2ELabel   = "ambassadord.e2e"
	DemoLabel  = "ambassadord.demo"
	BenchLabel = "ambassadord.bench"
)

// Engine is a Docker Engine client bound to one run.
type Engine struct {
	Client *client.Client
	Label  string // label key put on every resource, e.g. E2ELabel
	Run    string // this run's ID: the label value and part of every name
}

// Connect reaches the engine configured by the environment (DOCKER_HOST,
// etc.) and checks that it answers. The client negotiates the API version
// on that first request (the default since moby client v0.5; the
// WithAPIVersionNegotiation option is a deprecated no-op), which is what
// lets it talk to older engines such as 20.10 (API 1.41).
func Connect(ctx context.Context, label string) (*Engine, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("create docker client: %w", err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("ping docker engine: %w", err)
	}
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		cli.Close()
		return nil, fmt.Errorf("generate run id: %w", err)
	}
	return &Engine{Client: cli, Label: label, Run: hex.EncodeToString(id[:])}, nil
}

// Close releases the client's connections.
func (e *Engine) Close() error { return e.Client.Close() }

// prefix is the label key in a form usable in names and tags.
func (e *Engine) prefix() string { return strings.ReplaceAll(e.Label, ".", "-") }

// labels returns the run label.
func (e *Engine) labels() map[string]string { return map[string]string{e.Label: e.Run} }

// Spec describes a container the way `docker run` would. Zero fields mean
// the image's defaults.
type Spec struct {
	Name       string   // short name; the container is called <label>-<run>-<Name>
	Image      string   // image reference
	Entrypoint []string // --entrypoint
	Cmd        []string // arguments after the image
	Env        []string // -e KEY=VALUE
	Links      []string // --link <container name>:<alias> (legacy links inject env vars and /etc/hosts)
	Expose     []uint16 // --expose PORT (TCP)

	// Publish publishes container port -> on host IP with an ephemeral host
	// port, like `-p IP::PORT`; the zero Addr leaves the host IP to the
	// engine's default (dockerd --ip, 0.0.0.0 unless set), like `-p PORT`.
	// The port is exposed too.
	Publish map[uint16]netip.Addr

	// OneShot marks a container that runs to completion. Start treats all
	// containers alike (the caller waits and removes); Command renders it
	// as --rm instead of -d.
	OneShot bool

	Labels map[string]string // -l KEY=VALUE, besides the run label
	Binds  []string          // -v HOST:CONTAINER[:OPTIONS]

	// Networks are the full names of the networks to attach the container
	// to: the first with --network, the others with `docker network
	// connect` before it starts. Empty means the default bridge.
	Networks []string

	// IPs fixes the container's IPv4 address on some of its Networks, like
	// --ip; such a network needs a subnet of its own (see CreateNetwork).
	IPs map[string]netip.Addr

	// Healthcheck replaces the image's healthcheck (--health-cmd and the
	// other --health-* flags).
	Healthcheck *container.HealthConfig
}

// Container is a started container.
type Container struct {
	ID   string
	Name string // full name, usable in Spec.Links
	// IP is the address on its first network: the default bridge unless
	// Spec.Networks named others.
	IP netip.Addr
	// IPs are its addresses by network name, as of its start.
	IPs map[string]netip.Addr
	// Gateway is the gateway of its first network: this host's own
	// address on that bridge. It is taken from the container's endpoint
	// because the bridge network's IPAM config omits it on some engines
	// (20.10).
	Gateway netip.Addr

	network string // the first network's name
}

// Name returns the full container name for a short name.
func (e *Engine) Name(short string) string { return e.prefix() + "-" + e.Run + "-" + short }

// Command renders s as the equivalent `docker run` command line, for logs
// and for the demo. Labels are left out to keep it readable.
func (e *Engine) Command(s Spec) string {
	args := []string{"docker", "run", "-d"}
	if s.OneShot {
		args[2] = "--rm"
	}
	args = append(args, "--name", e.Name(s.Name))
	var connects []string
	for i, n := range s.Networks {
		if i == 0 {
			args = append(args, "--network", n)
			if ip, ok := s.IPs[n]; ok {
				args = append(args, "--ip", ip.String())
			}
			continue
		}
		connect := "docker network connect "
		if ip, ok := s.IPs[n]; ok {
			connect += "--ip " + ip.String() + " "
		}
		connects = append(connects, connect+n+" "+e.Name(s.Name))
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		args = append(args, "-l", k+"="+s.Labels[k])
	}
	for _, b := range s.Binds {
		args = append(args, "-v", b)
	}
	if h := s.Healthcheck; h != nil {
		// The CLI runs --health-cmd through a shell; this is the closest
		// rendering of an exec-form test.
		args = append(args, "--health-cmd", strings.Join(slices.DeleteFunc(slices.Clone(h.Test), func(a string) bool { return a == "CMD" }), " "))
		if h.Interval > 0 {
			args = append(args, "--health-interval", h.Interval.String())
		}
		if h.Retries > 0 {
			args = append(args, "--health-retries", strconv.Itoa(h.Retries))
		}
	}
	for _, l := range s.Links {
		args = append(args, "--link", l)
	}
	for _, p := range s.Expose {
		args = append(args, "--expose", strconv.Itoa(int(p)))
	}
	for _, p := range slices.Sorted(maps.Keys(s.Publish)) {
		if ip := s.Publish[p]; ip.IsValid() {
			args = append(args, "-p", ip.String()+"::"+strconv.Itoa(int(p)))
		} else {
			args = append(args, "-p", strconv.Itoa(int(p)))
		}
	}
	for _, kv := range s.Env {
		args = append(args, "-e", kv)
	}
	if len(s.Entrypoint) > 0 {
		args = append(args, "--entrypoint", strings.Join(s.Entrypoint, " "))
	}
	args = append(args, s.Image)
	args = append(args, s.Cmd...)
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'$`\\;&|<>()*?[]{}!#~") {
			args[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(append([]string{strings.Join(args, " ")}, connects...), " && ")
}

// Start creates and starts a container on its networks (the default bridge
// unless s.Networks) and returns it with its addresses. If starting fails
// the container is removed.
func (e *Engine) Start(ctx context.Context, s Spec) (*Container, error) {
	c, err := e.Create(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := e.StartCreated(ctx, c); err != nil {
		return nil, errors.Join(err, e.Remove(context.WithoutCancel(ctx), c.ID))
	}
	return c, nil
}

// Create creates a container without starting it, like `docker create`
// (and `docker network connect` for its other networks); StartCreated
// starts it. A test uses the pair to start a container as soon as possible
// after another change. If creating fails the container is removed.
func (e *Engine) Create(ctx context.Context, s Spec) (*Container, error) {
	ports := network.PortSet{}
	bindings := network.PortMap{}
	for _, p := range s.Expose {
		ports[tcpPort(p)] = struct{}{}
	}
	for p, ip := range s.Publish {
		ports[tcpPort(p)] = struct{}{}
		bindings[tcpPort(p)] = []network.PortBinding{{HostIP: ip}}
	}
	labels := e.labels()
	maps.Copy(labels, s.Labels)
	labels[e.Label] = e.Run // a spec cannot take the container out of the run
	host := &container.HostConfig{
		Links:        s.Links,
		PortBindings: bindings,
		Binds:        s.Binds,
	}
	var netConfig *network.NetworkingConfig
	first := network.NetworkBridge
	if len(s.Networks) > 0 {
		first = s.Networks[0]
		host.NetworkMode = container.NetworkMode(first)
		// Modes that are no network take no endpoint: Podman refuses
		// one for its user-mode networks (slirp4netns, pasta).
		if !slices.Contains([]string{"host", "none", "slirp4netns", "pasta"}, first) {
			netConfig = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
				first: endpoint(s.IPs[first]),
			}}
		}
	}
	name := e.Name(s.Name)
	created, err := e.Client.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:        s.Image,
			Entrypoint:   s.Entrypoint,
			Cmd:          s.Cmd,
			Env:          s.Env,
			ExposedPorts: ports,
			Labels:       labels,
			Healthcheck:  s.Healthcheck,
		},
		HostConfig:       host,
		NetworkingConfig: netConfig,
	})
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", name, err)
	}
	// API 1.41 (Docker 20.10) takes one network at create; the others are
	// connected before the start, so the process sees them all at once.
	for _, n := range s.Networks[min(1, len(s.Networks)):] {
		if _, err := e.Client.NetworkConnect(ctx, n, client.NetworkConnectOptions{Container: created.ID, EndpointConfig: endpoint(s.IPs[n])}); err != nil {
			return nil, errors.Join(fmt.Errorf("connect container %s to network %s: %w", name, n, err), e.Remove(context.WithoutCancel(ctx), created.ID))
		}
	}
	return &Container{ID: created.ID, Name: name, network: first}, nil
}

// StartCreated starts a container made by Create and fills in its
// addresses.
func (e *Engine) StartCreated(ctx context.Context, c *Container) error {
	if _, err := e.Client.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", c.Name, err)
	}
	insp, err := e.Inspect(ctx, c.ID)
	if err != nil {
		return err
	}
	c.IPs = map[string]netip.Addr{}
	for n, ep := range insp.NetworkSettings.Networks {
		if ep != nil {
			c.IPs[n] = ep.IPAddress
		}
	}
	if ep := insp.NetworkSettings.Networks[c.network]; ep != nil {
		c.IP, c.Gateway = ep.IPAddress, ep.Gateway
	}
	return nil
}

// endpoint is the endpoint configuration for a fixed address, if ip is
// valid. The engine rejects a nil one at create.
func endpoint(ip netip.Addr) *network.EndpointSettings {
	if !ip.IsValid() {
		return &network.EndpointSettings{}
	}
	return &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}}
}

func tcpPort(p uint16) network.Port {
	port, _ := network.PortFrom(p, network.TCP)
	return port
}

// Inspect returns the engine's view of a container.
func (e *Engine) Inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	res, err := e.Client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return container.InspectResponse{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return res.Container, nil
}

// HostPort returns the host address a published container port is bound to.
func (e *Engine) HostPort(ctx context.Context, id string, port uint16) (netip.AddrPort, error) {
	insp, err := e.Inspect(ctx, id)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, b := range insp.NetworkSettings.Ports[tcpPort(port)] {
		p, err := strconv.ParseUint(b.HostPort, 10, 16)
		if err == nil && b.HostIP.Is4() {
			return netip.AddrPortFrom(b.HostIP, uint16(p)), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("container %s: port %d/tcp is not published on IPv4", id, port)
}

// Remove force-removes a container; one that is already gone is not an error.
func (e *Engine) Remove(ctx context.Context, id string) error {
	_, err := e.Client.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// Cleanup removes every container, network and image of this run.
func (e *Engine) Cleanup(ctx context.Context) error {
	return e.removeLabelled(ctx, e.Label+"="+e.Run, time.Time{})
}

// Sweep removes resources carrying e.Label (any run) created more than
// olderThan ago: what crashed or killed runs left behind. The age guard
// keeps a concurrent run on the same engine safe; olderThan should exceed
// the longest a run can take (the e2e -timeout).
func (e *Engine) Sweep(ctx context.Context, olderThan time.Duration) error {
	return e.removeLabelled(ctx, e.Label, time.Now().Add(-olderThan))
}

// removeLabelled removes containers, then networks, then images matching
// the label filter and, unless cutoff is zero, created before cutoff.
// Containers go first because they hold the others.
func (e *Engine) removeLabelled(ctx context.Context, label string, cutoff time.Time) error {
	f := make(client.Filters).Add("label", label)
	var errs []error

	cs, err := e.Client.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	errs = append(errs, err)
	for _, c := range cs.Items {
		if cutoff.IsZero() || time.Unix(c.Created, 0).Before(cutoff) {
			errs = append(errs, e.Remove(ctx, c.ID))
		}
	}

	ns, err := e.Client.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	errs = append(errs, err)
	for _, n := range ns.Items {
		if cutoff.IsZero() || n.Created.Before(cutoff) {
			if _, err := e.Client.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
			}
		}
	}

	is, err := e.Client.ImageList(ctx, client.ImageListOptions{Filters: f})
	errs = append(errs, err)
	for _, i := range is.Items {
		if cutoff.IsZero() || time.Unix(i.Created, 0).Before(cutoff) {
			// PruneChildren also deletes the untagged parent layers the
			// classic builder left behind.
			if _, err := e.Client.ImageRemove(ctx, i.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("remove image %s: %w", i.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }
