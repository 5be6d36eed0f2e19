package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/moby/moby/client"
)

// Cluster is a two-node Swarm of private dockerds, a manager and a worker,
// each in a network namespace of its own with its own host name, so that
// each has its own docker_gwbridge, ingress and overlay namespaces, as
// two hosts would. The two namespaces are joined by a direct veth pair,
// which carries the cluster's traffic and VXLAN; each is joined to this
// host by a veth on a bridge of the cluster's (this host its gateway),
// where each node's Address is and where its containers' ports are
// published, so that the tests reach them. Nothing of the host's routing,
// forwarding or firewall changes: the host talks to each node directly,
// and the nodes to each other without crossing the host.
type Cluster struct {
	ID      string
	Manager *Dockerd
	Worker  *Dockerd
	Bridge  string // the host's bridge to the nodes

	netns  []string
	subnet netip.Prefix // of Bridge: the host .1, the nodes .2 and .3
}

// StartCluster starts a cluster named after id (at most 10 characters of
// [a-z0-9], unique on the machine: callers put their run ID in it). On
// error everything created is removed again.
func StartCluster(ctx context.Context, id string) (c *Cluster, err error) {
	if err := dockerdAvailable(); err != nil {
		return nil, err
	}
	if len(id) == 0 || len(id) > 10 {
		return nil, fmt.Errorf("cluster id %q: want 1 to 10 characters", id)
	}
	c = &Cluster{ID: id, Bridge: "ambk" + id}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
			c = nil
		}
	}()
	if c.subnet, err = freeSubnet(ctx); err != nil {
		return nil, err
	}
	link, err := freeSubnet(ctx)
	if err != nil {
		return nil, err
	}
	host := c.subnet.Addr().As4()
	host[3] = 1
	for _, args := range [][]string{
		{"link", "add", "name", c.Bridge, "type", "bridge"},
		{"addr", "add", netip.PrefixFrom(netip.AddrFrom4(host), 24).String(), "dev", c.Bridge},
		{"link", "set", c.Bridge, "up"},
	} {
		if err := ipCommand(ctx, args...); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", id, err)
		}
	}
	var linkAddr [2]netip.Addr
	for i, role := range []string{"m", "w"} {
		ns := "ambk" + id + role
		outer, inner := "ako"+id+role, "aki"+id+role
		addr := c.subnet.Addr().As4()
		addr[3] = byte(2 + i)
		la := link.Addr().As4()
		la[3] = byte(2 + i)
		linkAddr[i] = netip.AddrFrom4(la)
		if err := ipCommand(ctx, "netns", "add", ns); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", id, err)
		}
		c.netns = append(c.netns, ns)
		for _, args := range [][]string{
			{"link", "add", outer, "type", "veth", "peer", "name", inner},
			{"link", "set", inner, "netns", ns},
			{"link", "set", outer, "master", c.Bridge},
			{"link", "set", outer, "up"},
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", ns, "addr", "add", netip.PrefixFrom(netip.AddrFrom4(addr), 24).String(), "dev", inner},
			{"-n", ns, "link", "set", inner, "up"},
		} {
			if err := ipCommand(ctx, args...); err != nil {
				return nil, fmt.Errorf("cluster %s: %w", id, err)
			}
		}
	}
	// The nodes' own link.
	a, b := "akl"+id+"m", "akl"+id+"w"
	for _, args := range [][]string{
		{"link", "add", a, "netns", c.netns[0], "type", "veth", "peer", "name", b, "netns", c.netns[1]},
		{"-n", c.netns[0], "addr", "add", netip.PrefixFrom(linkAddr[0], 24).String(), "dev", a},
		{"-n", c.netns[1], "addr", "add", netip.PrefixFrom(linkAddr[1], 24).String(), "dev", b},
		{"-n", c.netns[0], "link", "set", a, "up"},
		{"-n", c.netns[1], "link", "set", b, "up"},
	} {
		if err := ipCommand(ctx, args...); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", id, err)
		}
	}

	for i, ns := range c.netns {
		d, err := startNode(ctx, id+[]string{"m", "w"}[i], ns, c.subnet, byte(2+i))
		if err != nil {
			return nil, err
		}
		if i == 0 {
			c.Manager = d
		} else {
			c.Worker = d
		}
	}
	manager := netip.AddrPortFrom(linkAddr[0], 2377).String()
	if err := c.Manager.swarmInit(ctx, manager, ""); err != nil {
		return nil, err
	}
	cli, err := c.Manager.client()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	sw, err := cli.SwarmInspect(ctx, client.SwarmInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: swarm inspect: %w", id, err)
	}
	worker := netip.AddrPortFrom(linkAddr[1], 2377).String()
	if err := c.Worker.swarmInit(ctx, worker, manager, sw.Swarm.JoinTokens.Worker); err != nil {
		return nil, err
	}
	return c, nil
}

// startNode starts a private dockerd in the namespace ns, its Address the
// host'th of subnet, the node's address on the cluster's bridge.
func startNode(ctx context.Context, id, ns string, subnet netip.Prefix, host byte) (*Dockerd, error) {
	dir, err := os.MkdirTemp("", "ambd-"+id+"-")
	if err != nil {
		return nil, fmt.Errorf("create private dockerd dir: %w", err)
	}
	addr := subnet.Addr().As4()
	addr[3] = host
	d := &Dockerd{
		ID: id, Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock"),
		Bridge: "ambd" + id, cgroupParent: "/ambd-" + id, Netns: ns, Address: netip.AddrFrom4(addr),
	}
	if err := d.prepare(ctx); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	if err := d.Start(ctx); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// Close tears the cluster down: its daemons, their namespaces and the
// host's bridge.
func (c *Cluster) Close() error {
	var errs []error
	for _, d := range []*Dockerd{c.Worker, c.Manager} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	ctx := context.Background()
	for _, ns := range c.netns {
		if err := ipCommand(ctx, "netns", "del", ns); err != nil && !gone(err) {
			errs = append(errs, err)
		}
	}
	if c.subnet.IsValid() {
		if err := ipCommand(ctx, "link", "del", c.Bridge); err != nil && !gone(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
