// Package resolver turns route specifications and a snapshot of the Docker
// engine into the routes the proxy serves.
//
// It owns all routing policy: the syntax of --route, AMBASSADORD_ROUTES and
// the classic Docker link variables, which source wins a listen port, and
// which containers serve a route: claims, priorities, health, networks and
// ports. Everything here is pure: values in, values out, with no I/O, no
// goroutines and no clock, so every rule is table-tested and every parser
// is fuzzed. The functions are safe for concurrent use because they share no
// state, and the values they return are never mutated afterwards: callers may
// hand them to other goroutines as they are. Sources (the Docker watcher)
// convert their engine's types to source.Snapshot at their edge; this
// package never imports an engine's API, nor the proxy: its routes carry
// source.Backend values, which the controller hands to the proxy.
//
// # Routing model
//
// A route is a port the ambassador listens on, and either static backends
// or a target name with a backend port. Resolve computes the routes anew
// from every snapshot; the result only depends on its arguments.
//
// # Where routes come from
//
// Four sources, in this order of precedence. A later source never takes a
// listen port an earlier one holds: it is skipped with a warning, silently
// when both routes have the same target and backend port.
//
//  1. Explicit routes, --route and AMBASSADORD_ROUTES. A route whose single
//     backend is a name, such as 6379:redis:6379, has that name as its
//     target and keeps the name, resolved by DNS at connect time, as its
//     fallback: without Docker it behaves as a plain DNS route (see below
//     for when the fallback applies with Docker). Routes to IP addresses, to several
//     backends, or to a fully qualified name ending in a dot
//     (443:api.example.com.:443) are static. A single backend ENGINE/NAME,
//     6379:big/redis:6379, names the container NAME of another engine,
//     without fallback (see Several engines).
//  2. Classic link variables, <ALIAS>_PORT_<P>_TCP=tcp://HOST:PORT. When
//     the ambassador has a link of that alias (Docker spells the alias in
//     upper case with '_' for '-' and '.'), the linked container's name is
//     the target and HOST:PORT only the fallback, so a restarted container
//     with a new address is followed. Without such a link (a remote host
//     given with -e), the route is static, as with the classic ambassador.
//  3. The ambassador's own links (docker run --link redis:redis). A link
//     whose variables made no route (Docker 29 injects none) gives one
//     route per exposed TCP port of the linked container, listening on that
//     port and forwarding to it. A link to a container that is not running
//     gives no route, and a warning, until it runs.
//  4. The ambassador's own label ambassador.target=NAME. Its routes are the
//     entries of the label ambassador.ports, "6379" or "6379,8080:80"
//     (LISTEN or LISTEN:BACKEND; a bad entry is skipped with a warning), or
//     without that label the ambassador's own exposed TCP ports (docker run
//     --expose 6379). Listen ports never come from the containers that
//     claim the target: a claimer must not open listeners, nor close the
//     ones serving connections.
//
// Without a snapshot (Docker not reached yet), or when the ambassador's own
// container is unknown, only the first two sources exist, and classic
// variables are static.
//
// # How a target resolves
//
// A target name resolves, at every snapshot, to a set of backends:
//
//  1. The containers that claim it with the label ambassador.target=NAME,
//     on the routes where claims count (Options.Claims): by default only
//     the route of the ambassador's own ambassador.target label, since a
//     link or --route names one container, and never for a name with a
//     dot, which is a DNS name. While the ambassador's own networks are
//     unknown (outside a container the engine knows, or on the host
//     network), claims count only from the network Options.Network names.
//     A claimer counts only when it is within Options.ClaimScope, running
//     (a paused one gets no new connections), healthy, and reachable
//     (below). The ambassador itself
//     and ambassadors (label ambassador.role=ambassador) never claim. Of
//     the claimers that count, those with the highest ambassador.priority
//     (an integer, default 0, negative allowed; a malformed one counts as
//     0, with a warning) are all chosen, and the proxy balances among
//     them. A claimer that cannot be reached therefore never shadows a
//     lower-priority one that can.
//  2. Otherwise the container named NAME, if it is running, healthy and
//     reachable. It may be an ambassador, since a name is explicit, but
//     never the ambassador itself.
//  3. Otherwise the route's fallback, if it has one: the address given in
//     --route or in the classic variable. While the engine is watched, an
//     IP fallback (the address the target had at start) is never used,
//     since Docker gives a removed container's address to the next one at
//     once; nor is a name without a dot, which is a container name and
//     resolves from the engine. A host name with a dot (db.example.com),
//     beyond Docker's reach, falls back to DNS.
//  4. Otherwise no backend. The route is still returned, with NoBackend
//     saying why, and new connections find nothing to forward to.
//
// A container with a healthcheck counts only when healthy; one without
// counts when running. Names and label values are compared exactly, case
// included.
//
// Each backend is the container's IP address and the route's backend port,
// pinned to the container's ID, so that connections are never mistaken for
// another container's when an address is reused. A claimer's label
// ambassador.port overrides the port (for every route to it); a malformed
// one makes the claimer not count, with a warning.
//
// The address is the container's IPv4 address on a network it shares with
// the ambassador, compared by network ID, or by name where an ID is
// unknown. When the ambassador does not run in a container known to the
// engine, or runs with --network host, every network counts as shared. A
// container on no shared network is skipped, and its candidate entry names
// both sides' networks. Among several shared networks the backend's label
// ambassador.network chooses, then the ambassador's preferred network
// (Options.Network), else the lowest network name; the choice is recorded.
//
// A static backend at one of the ambassador's own listening addresses
// (Options.Local, on a route's listen port) is refused: the ambassador
// would connect to itself until its descriptors run out. SelfLoops finds
// them among the specs at start-up.
//
// # Several engines
//
// The snapshot may hold the containers of several engines, each tagged
// with the name of its source (source.Container.Engine), and
// Options.Engines says which are remote. The engine the ambassador runs on
// is LocalEngine ("local"); so is any engine Options.Engines does not
// describe. The ambassador's own container and its links are there only.
//
//   - Names: a target without an engine is looked up by name on the local
//     engine only. A route ENGINE/NAME (Spec.Engine) looks NAME up on that
//     engine only, and has no fallback; an engine that neither the options
//     nor the snapshot know leaves it without backend.
//   - Claims, where they count, come from every engine. The claim scopes
//     project and label apply to remote claimers as to local ones; the
//     default scope admits a remote claimer, whose engine the operator
//     configured, since it shares no network with the ambassador to check.
//     The rule of claims from Options.Network alone while the ambassador's
//     own networks are unknown is the local claimers'.
//   - Addresses: a local container (of an engine that is not Remote) is
//     reached on a network it shares with the ambassador, as above. A
//     remote one at the host port it publishes for the backend port (or
//     its ambassador.port): a binding to every address of its host
//     (0.0.0.0, ::) at the engine's Address, one to a specific address at
//     that address; bindings on the engine's Address first. A binding on
//     its host's loopback is reachable only when the engine's Address is
//     a loopback one too. A remote container that publishes nothing
//     reachable for the port is not a candidate, and says why.
//   - Locality: of the claimers of the top priority, the local ones alone
//     are chosen while one is usable; the remote ones serve otherwise, or
//     with them under Options.NoLocality.
//
// Label values, which whoever creates a container sets, are quoted in
// warnings and reasons clipped to 64 bytes.
//
// Every container considered for a target is reported in Route.Candidates
// with the reason it was chosen or skipped, for logs and `ambassadord
// explain`.
package resolver
