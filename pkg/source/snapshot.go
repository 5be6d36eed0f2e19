package source

import "strconv"

// Snapshot is a source's view of its engine at one moment. It is
// immutable once published: a source builds a new one for every change and
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
// converted from the engine's API at the source's edge.
type Container struct {
	ID   string // full 64-hex ID
	Name string // without Docker's leading "/"

	// Labels are the container's labels, including those of its image
	// (Docker merges them), such as ambassador.role=ambassador. Whoever
	// creates the container sets them: never trust them further than the
	// resolver's policy does, nor log them whole.
	Labels map[string]string

	// State is Docker's state: "running", "paused", "restarting", ...; or
	// StateStopping, which a source gives a running container that was
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

	// Links are the container's legacy links (HostConfig.Links). A source
	// fills them for Self only.
	Links []Link

	// Engine is the name of the source that listed the container
	// (Update.Source): several engines' containers meet in one view.
	Engine string

	// Task is set when the entry is a task of a Swarm service, listed by
	// a manager: the container runs the task, and Labels are the
	// service's. nil for a plain container.
	Task *Task
}

// Task is what a source knows of a Swarm task beyond its container.
type Task struct {
	ID      string // the task's ID
	Service string // the service's name
	Slot    int    // the replica's slot; 0 for a global service's task
	Node    string // the node's host name, or its ID when it has none

	// Mesh is where the service publishes its ports through the routing
	// mesh, reached at any node's address: the way in when the
	// ambassador shares no network with the task.
	Mesh []Port
}

// String names the task as Docker names its container, without the task
// ID: "redis.2", or "redis" with the node for a global service's.
func (t *Task) String() string {
	if t.Slot > 0 {
		return t.Service + "." + strconv.Itoa(t.Slot)
	}
	return t.Service + "@" + t.Node
}

// Network is a container's attachment to one network.
type Network struct {
	Name string
	ID   string
	IP   string // IPv4 address on this network; "" when it has none

	// Overlay is set for a Swarm overlay network: its addresses are
	// reached only from a container attached to it, never from a host.
	Overlay bool
}

// Port is one exposed port.
type Port struct {
	Port  int
	Proto string // "tcp" or "udp"

	// Published are the addresses of the engine's host this port is
	// published on (docker run -p), sorted by HostPort then HostIP; empty
	// when it is not published. A container of a remote engine is reached
	// through them.
	Published []Binding
}

// Binding is one address of the engine's host that publishes a container
// port.
type Binding struct {
	// HostIP is the address the engine binds: "" or an unspecified
	// address (0.0.0.0, ::) means every address of the engine's host.
	HostIP   string
	HostPort int
}

// Link is one legacy link of the ambassador's container: docker run
// --link NAME:ALIAS.
type Link struct {
	Name  string // the linked container's name, without "/"
	Alias string // the alias, as given (Docker upper-cases it in variables)
}

// StateStopping is the Container.State a source gives a running container
// that was sent a stop signal (docker stop's TERM, or KILL, INT, QUIT): it
// is draining and about to die. It is not running for the resolver, so it
// gets no new connections, but it is not gone either: its established
// connections are kept, for the app to finish.
const StateStopping = "stopping"
