package harness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// subnetAttempts is how many random subnets CreateNetwork tries before it
// gives up: other networks on a shared engine may hold some.
const subnetAttempts = 20

// Network is a user-defined bridge network created for a run.
type Network struct {
	ID   string
	Name string // full name, usable in Spec.Networks and Spec.IPs
	// Subnet is the network's own subnet when it was created with one,
	// else the zero Prefix.
	Subnet netip.Prefix
}

// Addr returns the address with the given host number in the network's
// subnet (10 gives 10.x.y.10 in 10.x.y.0/24). It panics without a subnet.
func (n *Network) Addr(host byte) netip.Addr {
	if !n.Subnet.IsValid() {
		panic("harness: network " + n.Name + " has no subnet of its own")
	}
	a := n.Subnet.Addr().As4()
	a[3] = host
	return netip.AddrFrom4(a)
}

// CreateNetwork creates a bridge network named after short (see Name) and
// labelled with the run label. With fixedSubnet it gets a random /24 of
// 10.0.0.0/8 that no other network holds, so that containers can be given
// fixed addresses (Spec.IPs); otherwise the engine picks the subnet.
func (e *Engine) CreateNetwork(ctx context.Context, short string, fixedSubnet bool) (*Network, error) {
	name := e.Name(short)
	opts := client.NetworkCreateOptions{Driver: "bridge", Labels: e.labels()}
	if !fixedSubnet {
		res, err := e.Client.NetworkCreate(ctx, name, opts)
		if err != nil {
			return nil, fmt.Errorf("create network %s: %w", name, err)
		}
		return &Network{ID: res.ID, Name: name}, nil
	}
	var errs []error
	for range subnetAttempts {
		// 10.128.0.0/9 keeps clear of the 10.0.x networks people tend to
		// use by hand.
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + rand.N(128)), byte(rand.N(256)), 0}), 24)
		opts.IPAM = &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet}}}
		res, err := e.Client.NetworkCreate(ctx, name, opts)
		if err == nil {
			return &Network{ID: res.ID, Name: name, Subnet: subnet}, nil
		}
		if !strings.Contains(err.Error(), "overlap") {
			return nil, fmt.Errorf("create network %s with subnet %s: %w", name, subnet, err)
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("create network %s: no free subnet after %d attempts: %w", name, subnetAttempts, errors.Join(errs...))
}

// RemoveNetwork removes a network; one that is already gone is not an
// error. Its containers must be gone or disconnected first.
func (e *Engine) RemoveNetwork(ctx context.Context, id string) error {
	if _, err := e.Client.NetworkRemove(ctx, id, client.NetworkRemoveOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove network %s: %w", id, err)
	}
	return nil
}

// Connect attaches a container to a network, like `docker network
// connect [--ip IP]`; ip may be the zero Addr.
func (e *Engine) Connect(ctx context.Context, networkID, containerID string, ip netip.Addr) error {
	if _, err := e.Client.NetworkConnect(ctx, networkID, client.NetworkConnectOptions{Container: containerID, EndpointConfig: endpoint(ip)}); err != nil {
		return fmt.Errorf("connect container %s to network %s: %w", containerID, networkID, err)
	}
	return nil
}

// Disconnect detaches a running container from a network, like `docker
// network disconnect`: its interface vanishes without a FIN to its peers.
func (e *Engine) Disconnect(ctx context.Context, networkID, containerID string) error {
	if _, err := e.Client.NetworkDisconnect(ctx, networkID, client.NetworkDisconnectOptions{Container: containerID}); err != nil {
		return fmt.Errorf("disconnect container %s from network %s: %w", containerID, networkID, err)
	}
	return nil
}
