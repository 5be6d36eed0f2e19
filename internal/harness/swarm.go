package harness

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)
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
	if err := ipCommand(ctx, "link", "del", d.gwBridge()); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		return err
	}
	return nil
}
