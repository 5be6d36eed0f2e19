package resolver

// Snapshot is the watcher's view of the Docker engine at one moment. It is
// immutable once published: the watcher builds a new one for every change and
// never mutates one it has handed out.
type Snapshot struct {
	// Self is the ambassador's own container, or nil when the ambassador
	// does not run in a container the engine knows (for example on the
	// host, or when its container could not be identified).
	Self *Container

	// Containers are the running and paused containers, sorted by Name. Self
	// is among them when it is known.
	Containers []Container
}

// Container is what the resolver needs to know of one container: plain data
// converted from the Docker API at the watcher's edge.
type Container struct {
	ID   string // full 64-hex ID
	Name string // without Docker's leading "/"

	// Labels are the container's labels, including those of its image
	// (Docker merges them), such as ambassador.role=ambassador.
	Labels map[string]string

	// State is Docker's state: "running", "paused", "restarting", ...; or
	// "stopping", which the watcher gives a running container that was
	// sent a stop signal and is draining. Only "running" takes new
	// connections.
	State string

	// Health is "" for a container without a healthcheck, else "starting",
	// "healthy" or "unhealthy".
	Health string

	// Networks are the networks the container is attached to, sorted by
	// Name, with its address on each.
	Networks []Network

	// Ports are the container's exposed ports, sorted by Port then Proto.
	Ports []Port

	// Links are the container's legacy links (HostConfig.Links). The watcher
	// fills them for Self only.
	Links []Link
}

// Network is a container's attachment to one network.
type Network struct {
	Name string
	ID   string
	IP   string // IPv4 address on this network; "" when it has none
}

// Port is one exposed port.
type Port struct {
	Port  int
	Proto string // "tcp" or "udp"
}

// Link is one legacy link of the ambassador's container: docker run
// --link NAME:ALIAS.
type Link struct {
	Name  string // the linked container's name, without "/"
	Alias string // the alias, as given (Docker upper-cases it in variables)
}

// Labels that drive resolution. They are set on backend containers, except
// LabelRole, which the ambassadord image carries, and LabelTarget and
// LabelPorts, which are also read from the ambassador's own container.
const (
	// LabelTarget on a backend claims a target name; on the ambassador it
	// names the target to serve.
	LabelTarget = "ambassador.target"
	// LabelPriority is a claimer's integer priority; the highest wins.
	// Default 0.
	LabelPriority = "ambassador.priority"
	// LabelNetwork on a backend names the network to reach it on.
	LabelNetwork = "ambassador.network"
	// LabelPort on a claimer overrides the route's backend port.
	LabelPort = "ambassador.port"
	// LabelPorts on the ambassador lists the ports to serve for its
	// target: "6379" or "6379,8080:80" (LISTEN:BACKEND).
	LabelPorts = "ambassador.ports"
	// LabelRole=ambassador marks an ambassador; ambassadors never count as
	// claimers.
	LabelRole = "ambassador.role"
)
