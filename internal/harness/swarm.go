package harness

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// gwBridge names the bridge of a private engine's docker_gwbridge, which
// Swarm mode creates on the host for its containers' way out: named
// after the engine, so that private swarms of concurrent runs do not
// share the host's one name, and Close finds it.
func (d *Dockerd) gwBridge() string { return "ambg" + d.ID }

// SwarmInit makes the engine a single-node Swarm manager, as `docker swarm
// init` does, without touching anything of the host's beyond the engine's
// own: its docker_gwbridge is made first, on a bridge named after the
// engine and a free subnet (Swarm would otherwise create the host-wide
// docker_gwbridge), and the cluster listens on a free loopback port. The
// routing mesh needs IPVS in the kernel; tasks on overlay networks do not.
func (d *Dockerd) SwarmInit(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return d.swarmInit(ctx, "127.0.0.1:"+strconv.Itoa(port), "")
}

// swarmInit makes the engine a manager listening and advertising addr,
// joining the cluster of manager (HOST:PORT) with token if manager is not
// empty.
func (d *Dockerd) swarmInit(ctx context.Context, addr, manager string, token ...string) error {
	cli, err := d.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	subnet, err := freeSubnet(ctx)
	if err != nil {
		return err
	}
	d.swarmSubnet = subnet
	gw := subnet.Addr().As4()
	gw[3] = 1
	if _, err := cli.NetworkCreate(ctx, "docker_gwbridge", client.NetworkCreateOptions{
		Driver: "bridge",
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{
			Subnet: subnet, Gateway: netip.AddrFrom4(gw),
		}}},
		Options: map[string]string{
			"com.docker.network.bridge.name":                 d.gwBridge(),
			"com.docker.network.bridge.enable_icc":           "false",
			"com.docker.network.bridge.enable_ip_masquerade": "false",
		},
	}); err != nil {
		return fmt.Errorf("create docker_gwbridge of private dockerd %s: %w", d.ID, err)
	}
	if manager != "" {
		if _, err := cli.SwarmJoin(ctx, client.SwarmJoinOptions{
			ListenAddr: addr, AdvertiseAddr: addr, RemoteAddrs: []string{manager}, JoinToken: token[0],
		}); err != nil {
			return fmt.Errorf("swarm join %s from private dockerd %s: %w", manager, d.ID, err)
		}
		return nil
	}
	if _, err := cli.SwarmInit(ctx, client.SwarmInitOptions{ListenAddr: addr, AdvertiseAddr: addr}); err != nil {
		return fmt.Errorf("swarm init on private dockerd %s: %w", d.ID, err)
	}
	return nil
}

// removeSwarmBridge deletes the bridge of the engine's docker_gwbridge, if
// it made one.
func (d *Dockerd) removeSwarmBridge(ctx context.Context) error {
	if !d.swarmSubnet.IsValid() {
		return nil
	}
	if err := d.ip(ctx, "link", "del", d.gwBridge()); err != nil && !gone(err) {
		return err
	}
	return nil
}
