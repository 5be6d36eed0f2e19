// Package admin is ambassadord's admin endpoint and its client: the HTTP
// API (/healthz, /readyz, /routes, /metrics, POST /rewire) served on a TCP
// listener and on a unix socket ([Server]), and the client the CLI
// commands use over that socket ([Client]). Its documents are pkg/admin/api's.
//
// It reaches the controller through [Controller], two methods it declares
// for what it needs (the status, and rewires), and serves metrics through a
// plain http.Handler: it imports neither pkg/daemon nor pkg/metrics.
//
// The client lives here, beside the server, because the two ends of the
// socket share their checks: each reads the other's credentials with
// SO_PEERCRED (the daemon serves only root and its own user; the CLI talks
// only to a daemon it can trust), both resolve SocketAuto to the same
// sockets, and their tests run one against the other.
//
// Concurrency contract: [Server.Run] owns one goroutine per listener,
// serving HTTP, and waits for them when its context is cancelled; each
// listener holds at most [Limits].MaxConns connections, guarded by one
// mutex (connCap). Handlers call the Controller from the HTTP server's
// goroutines, so its methods must be safe for concurrent use. A [Client]
// holds no state between requests and is safe for concurrent use.
package admin
