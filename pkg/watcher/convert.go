package watcher

import (
	"cmp"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/moby/moby/api/types/container"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// This file converts the Docker API's types to the source package's at the edge,
// and derives new snapshots from old ones for the fast paths. Converted
// values are normalised (sorted, empty collections nil) so that two
// listings of the same state compare equal.

// convertContainers converts a listing of the engine named engine, sorted
// by name then ID.
func convertContainers(items []container.Summary, engine string) []source.Container {
	if len(items) == 0 {
		return nil
	}
	cs := make([]source.Container, 0, len(items))
	for _, s := range items {
		if s.ID == "" {
			continue
		}
		c := convertContainer(s)
		c.Engine = engine
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b source.Container) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return cs
}

func convertContainer(s container.Summary) source.Container {
	var labels map[string]string
	if len(s.Labels) > 0 {
		labels = maps.Clone(s.Labels)
	}
	return source.Container{
		ID:       s.ID,
		Name:     containerName(s.Names),
		Labels:   labels,
		State:    string(s.State),
		Health:   containerHealth(s),
		Networks: convertNetworks(s.NetworkSettings),
		Ports:    convertPorts(s.Ports),
	}
}

// containerName picks the container's own name among those the listing
// gives: a container that is the target of legacy links is also listed
// under each link's path ("/ambassador/redis"), and its own name is the one
// without a second slash.
func containerName(names []string) string {
	for _, n := range names {
		n = strings.TrimPrefix(n, "/")
		if n != "" && !strings.Contains(n, "/") {
			return n
		}
	}
	if len(names) > 0 {
		return strings.TrimPrefix(names[0], "/")
	}
	return ""
}

// containerHealth prefers the listing's structured health (API 1.52 and
// later) and falls back to parsing the Status text older engines give.
func containerHealth(s container.Summary) string {
	if s.Health != nil {
		switch s.Health.Status {
		case container.Starting, container.Healthy, container.Unhealthy:
			return string(s.Health.Status)
		case container.NoHealthcheck:
			return ""
		}
	}
	return parseHealth(s.Status)
}

// parseHealth extracts the health from a listing's Status text: "Up 5
// minutes (healthy)", "Up 2 seconds (health: starting)", "Up 1 hour
// (unhealthy)". It returns "" when there is no health in it. A paused
// container's status ("Up 1 hour (Paused)") carries no health.
func parseHealth(status string) string {
	switch {
	case strings.Contains(status, "(health: starting)"):
		return string(container.Starting)
	case strings.Contains(status, "(unhealthy)"):
		return string(container.Unhealthy)
	case strings.Contains(status, "(healthy)"):
		return string(container.Healthy)
	}
	return ""
}

// convertNetworks returns the container's attachments sorted by name, with
// the IPv4 address on each ("" when it has none).
func convertNetworks(ns *container.NetworkSettingsSummary) []source.Network {
	if ns == nil || len(ns.Networks) == 0 {
		return nil
	}
	out := make([]source.Network, 0, len(ns.Networks))
	for name, ep := range ns.Networks {
		if ep == nil {
			continue
		}
		ip := ""
		if a := ep.IPAddress.Unmap(); a.Is4() {
			ip = a.String()
		}
		out = append(out, source.Network{Name: name, ID: ep.NetworkID, IP: ip})
	}
	slices.SortFunc(out, func(a, b source.Network) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return nilIfEmpty(out)
}

// convertPorts returns the exposed ports, sorted by port then protocol. The
// listing repeats a published port once per host address (0.0.0.0 and
// ::): each is a Binding of the one port. Protocols other than TCP and UDP
// (SCTP) cannot be proxied and are left out.
func convertPorts(ports []container.PortSummary) []source.Port {
	var out []source.Port
	for _, p := range ports {
		proto := strings.ToLower(p.Type)
		if proto == "" {
			proto = "tcp"
		}
		if p.PrivatePort == 0 || proto != "tcp" && proto != "udp" {
			continue
		}
		i := slices.IndexFunc(out, func(o source.Port) bool { return o.Port == int(p.PrivatePort) && o.Proto == proto })
		if i < 0 {
			out = append(out, source.Port{Port: int(p.PrivatePort), Proto: proto})
			i = len(out) - 1
		}
		if p.PublicPort != 0 {
			b := source.Binding{HostPort: int(p.PublicPort)}
			if p.IP.IsValid() {
				b.HostIP = p.IP.String()
			}
			if !slices.Contains(out[i].Published, b) {
				out[i].Published = append(out[i].Published, b)
			}
		}
	}
	slices.SortFunc(out, func(a, b source.Port) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
	})
	for _, p := range out {
		slices.SortFunc(p.Published, func(a, b source.Binding) int {
			return cmp.Or(cmp.Compare(a.HostPort, b.HostPort), strings.Compare(a.HostIP, b.HostIP))
		})
	}
	return out
}

// parseLinks converts a container's HostConfig.Links, sorted by alias then
// name, skipping entries that make no sense.
func parseLinks(links []string) []source.Link {
	var out []source.Link
	for _, s := range links {
		if l, ok := parseLink(s); ok && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b source.Link) int {
		return cmp.Or(cmp.Compare(a.Alias, b.Alias), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// parseLink parses one legacy link. Inspect gives them as
// "/redis:/ambassador/redis": the linked container's name, and the link's
// path under the linking container, whose last element is the alias. The
// "redis:db" and "redis" forms of docker run --link are accepted too; a
// link without an alias is aliased by the name.
func parseLink(s string) (source.Link, bool) {
	name, alias, _ := strings.Cut(strings.TrimSpace(s), ":")
	name, alias = lastElem(name), lastElem(alias)
	if alias == "" {
		alias = name
	}
	if !validName(name) || !validName(alias) {
		return source.Link{}, false
	}
	return source.Link{Name: name, Alias: alias}, true
}

// lastElem returns the last non-empty element of a slash-separated path.
func lastElem(p string) string {
	p = strings.TrimRight(strings.TrimSpace(p), "/")
	return p[strings.LastIndexByte(p, '/')+1:]
}

// validName reports whether s can be a container name or link alias:
// Docker allows [a-zA-Z0-9][a-zA-Z0-9_.-]*.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// equalSnapshots reports whether a and b describe the same state.
func equalSnapshots(a, b *source.Snapshot) bool {
	return reflect.DeepEqual(a, b)
}

// goneIDs returns the IDs of the containers of prev that next lacks, or
// whose attachment to one of their networks next lacks or gives another
// address.
func goneIDs(prev, next *source.Snapshot) []string {
	if prev == nil {
		return nil
	}
	byID := make(map[string]*source.Container, len(next.Containers))
	for i := range next.Containers {
		byID[next.Containers[i].ID] = &next.Containers[i]
	}
	var gone []string
	for _, c := range prev.Containers {
		n, ok := byID[c.ID]
		if !ok || slices.ContainsFunc(c.Networks, func(nw source.Network) bool {
			return !slices.Contains(n.Networks, nw)
		}) {
			gone = append(gone, c.ID)
		}
	}
	return gone
}

// withoutContainer returns a copy of s without the container id, and false
// if s has no such container.
func withoutContainer(s *source.Snapshot, id string) (*source.Snapshot, bool) {
	if s == nil || id == "" {
		return nil, false
	}
	i := slices.IndexFunc(s.Containers, func(c source.Container) bool { return c.ID == id })
	if i < 0 {
		return nil, false
	}
	next := &source.Snapshot{Self: s.Self, Containers: nilIfEmpty(slices.Delete(slices.Clone(s.Containers), i, i+1))}
	if s.Self != nil && s.Self.ID == id {
		next.Self = nil
	}
	return next, true
}

// withStopping returns a copy of s in which the container id has the state
// source.StateStopping, and false if s has no such running container.
func withStopping(s *source.Snapshot, id string) (*source.Snapshot, bool) {
	if s == nil || id == "" {
		return nil, false
	}
	i := slices.IndexFunc(s.Containers, func(c source.Container) bool { return c.ID == id })
	if i < 0 || s.Containers[i].State != string(container.StateRunning) {
		return nil, false
	}
	next := &source.Snapshot{Self: s.Self, Containers: slices.Clone(s.Containers)}
	next.Containers[i].State = source.StateStopping
	if s.Self != nil && s.Self.ID == id {
		self := next.Containers[i]
		next.Self = &self
	}
	return next, true
}

// withoutAttachment returns a copy of s in which the container containerID
// is no longer attached to the network networkID, and false if it was not.
func withoutAttachment(s *source.Snapshot, containerID, networkID string) (*source.Snapshot, bool) {
	if s == nil || containerID == "" || networkID == "" {
		return nil, false
	}
	i := slices.IndexFunc(s.Containers, func(c source.Container) bool { return c.ID == containerID })
	if i < 0 {
		return nil, false
	}
	onNet := func(n source.Network) bool { return n.ID == networkID }
	if !slices.ContainsFunc(s.Containers[i].Networks, onNet) {
		return nil, false
	}
	c := s.Containers[i]
	c.Networks = nilIfEmpty(slices.DeleteFunc(slices.Clone(c.Networks), onNet))
	next := &source.Snapshot{Self: s.Self, Containers: slices.Clone(s.Containers)}
	next.Containers[i] = c
	if s.Self != nil && s.Self.ID == containerID {
		self := c
		next.Self = &self
	}
	return next, true
}

func nilIfEmpty[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
}
