package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The admin endpoint serves the same API on two listeners:
//   - TCP (--admin-address, loopback by default): read-only unless
//     --admin-writable, so that publishing it for Prometheus never lets
//     anyone rewire; with it, a state change must bear the token of
//     --admin-token-file. It answers only to a Host that is an IP address,
//     localhost or a name of --admin-hosts: a web page the operator opens
//     cannot read it by DNS rebinding. Nor can a page post to it: a POST
//     must be application/json and bear Authorization, which a
//     cross-origin page cannot send without a CORS preflight, and the
//     endpoint grants none.
//   - a local unix socket (--admin-socket; admin_socket_linux.go says
//     where auto puts it): read and write, for the CLI through `docker
//     exec`. Only peers running as the daemon's user or root are served;
//     the others are answered 403.
//
// Each listener holds at most adminLimits.MaxConns connections (see
// connCap), each bounded by the read, write and idle timeouts: whatever
// clients do, the admin port holds a few descriptors and goroutines, and
// the data path keeps the rest.
const (
	// adminRequestTimeout bounds how long a rewire waits for the run loop.
	adminRequestTimeout = 10 * time.Second

	// defaultAdminReadTimeout bounds reading one request, headers and
	// body (at most 64 KiB): a client that sends them slowly holds a
	// connection, or a handler waiting for the body, no longer.
	defaultAdminReadTimeout = 5 * time.Second
	// defaultAdminWriteTimeout bounds a request from the end of its
	// headers to the end of its answer. It exceeds adminRequestTimeout, so
	// that a rewire waiting for a busy run loop can still say so.
	defaultAdminWriteTimeout = adminRequestTimeout + 5*time.Second
	// defaultAdminIdleTimeout closes a keep-alive connection this long
	// after its last answer; a Prometheus scrape every 15 s still reuses
	// its connection.
	defaultAdminIdleTimeout = 30 * time.Second
	// defaultAdminMaxConns is how many connections each admin listener
	// holds: a scraper, a few health checks and CLI commands at once. Its
	// descriptors are nothing next to the data path's (two per proxied
	// connection), even under --ulimit nofile=128.
	defaultAdminMaxConns = 16
)

// adminLimits bound what the admin listeners hold; a zero field means its
// default. They are fields so that tests can shorten them.
type adminLimits struct {
	ReadTimeout  time.Duration // defaultAdminReadTimeout
	WriteTimeout time.Duration // defaultAdminWriteTimeout
	IdleTimeout  time.Duration // defaultAdminIdleTimeout
	MaxConns     int           // per listener; defaultAdminMaxConns
}

func (l adminLimits) readTimeout() time.Duration {
	return cmp.Or(l.ReadTimeout, defaultAdminReadTimeout)
}

func (l adminLimits) writeTimeout() time.Duration {
	return cmp.Or(l.WriteTimeout, defaultAdminWriteTimeout)
}

func (l adminLimits) idleTimeout() time.Duration {
	return cmp.Or(l.IdleTimeout, defaultAdminIdleTimeout)
}

func (l adminLimits) maxConns() int { return cmp.Or(l.MaxConns, defaultAdminMaxConns) }

// admin owns the admin listeners and their HTTP servers.
type admin struct {
	log     *zap.Logger
	d       *dynamic
	metrics http.Handler // nil: /metrics answers 404
	limits  adminLimits

	servers []*http.Server
	wg      sync.WaitGroup
}

// access is what one listener asks of a request before serving it.
type access struct {
	// writable: POST /rewire is served, after the checks below.
	writable bool
	// tcp: the listener is --admin-address. A request's Host must be an
	// IP literal, localhost or one of hosts, and a POST must bear the
	// token whose SHA-256 is token: without a token none is served.
	tcp   bool
	hosts []string
	token []byte
	// peers: the listener is the socket, whose refused peers (see
	// peerCheckListener) are answered 403.
	peers bool
}

// startAdmin reads the token file and opens the admin listeners, which
// serve metrics on /metrics. A listener that cannot be opened, or a token
// file that cannot be used, stops start-up: the operator asked for it.
func startAdmin(ctx context.Context, cfg *config, log *zap.Logger, d *dynamic, metrics http.Handler) (*admin, error) {
	a := &admin{log: log, d: d, metrics: metrics}
	tcp := access{writable: cfg.adminWritable, tcp: true, hosts: cfg.adminHosts}
	if cfg.adminToken != "" {
		token, err := readToken(cfg.adminToken)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(token))
		tcp.token = sum[:]
		if !cfg.adminWritable && cfg.adminAddress != "" {
			log.Warn("--admin-token-file without --admin-writable: the admin endpoint stays read-only")
		}
	}
	if cfg.adminAddress != "" {
		ln, err := net.Listen("tcp", cfg.adminAddress)
		if err != nil {
			return nil, fmt.Errorf("listen on admin address %s: %w", cfg.adminAddress, err)
		}
		a.serve(ln, a.handlerFor(tcp))
		log.Info("admin endpoint listening", zap.String("listen", ln.Addr().String()),
			zap.Bool("writable", cfg.adminWritable), zap.Strings("hosts", cfg.adminHosts))
	}
	if cfg.adminSocket != "" {
		ln, path, err := listenAdminSocket(log, cfg.adminSocket, adminSocketFile, adminSocketAbstract)
		if err != nil {
			a.stop()
			return nil, fmt.Errorf("listen on admin socket %s: %w", path, err)
		}
		a.serve(&peerCheckListener{Listener: ln, log: log}, a.handlerFor(access{writable: true, peers: true}))
		log.Info("admin socket listening", zap.String("listen", path))
	}
	return a, nil
}

// serve serves h on ln, within the limits, and returns the cap that holds
// its connections.
func (a *admin) serve(ln net.Listener, h http.Handler) *connCap {
	capped := newConnCap(ln, a.limits.maxConns(), a.log)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: a.limits.readTimeout(),
		ReadTimeout:       a.limits.readTimeout(),
		WriteTimeout:      a.limits.writeTimeout(),
		IdleTimeout:       a.limits.idleTimeout(),
		ConnState:         capped.track,
		ConnContext:       peerContext,
		ErrorLog:          zap.NewStdLog(a.log),
	}
	a.servers = append(a.servers, srv)
	a.wg.Add(1)
	go a.run(srv, capped)
	return capped
}

// run serves one listener until the server is shut down.
func (a *admin) run(srv *http.Server, ln net.Listener) {
	defer a.wg.Done()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("admin endpoint stopped", errorField(err))
	}
}

// stop closes the listeners and waits for the servers.
func (a *admin) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, s := range a.servers {
		if s.Shutdown(ctx) != nil {
			s.Close()
		}
	}
	a.wg.Wait()
}

// handler serves the API without a listener's checks: read-only, or, when
// writable, as the socket serves an accepted peer.
func (a *admin) handler(writable bool) http.Handler {
	return a.handlerFor(access{writable: writable})
}

// handlerFor serves the API behind the checks of acc.
func (a *admin) handlerFor(acc access) http.Handler {
	mux := a.mux()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if acc.peers {
			if p, _ := r.Context().Value(peerKey{}).(*peerConn); p == nil || !p.allowed {
				refusePeer(w, r, p)
				return
			}
		}
		if acc.tcp && !hostAllowed(r.Host, acc.hosts) {
			writeJSON(w, http.StatusMisdirectedRequest, rewireReply{Error: fmt.Sprintf("host %q is not a name this admin endpoint answers to: "+
				"it answers to IP addresses, localhost and the names of --admin-hosts (AMBASSADORD_ADMIN_HOSTS); "+
				"add the name there if it is yours (a name it does not know may be a web page's, rebound to this address)", r.Host)})
			return
		}
		if r.Method == http.MethodPost && !mayChange(w, r, acc) {
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// mayChange answers a POST (a state change) that acc does not accept, and
// reports whether it may go on.
func mayChange(w http.ResponseWriter, r *http.Request, acc access) bool {
	if !acc.writable {
		writeJSON(w, http.StatusForbidden, rewireReply{Error: "state changes are accepted only over the admin socket " +
			"(docker exec CONTAINER /ambassadord rewire ...), or over TCP with --admin-writable and --admin-token-file"})
		return false
	}
	if acc.tcp && !bearsToken(r, acc.token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ambassadord"`)
		writeJSON(w, http.StatusUnauthorized, rewireReply{Error: "a state change over TCP must bear the token of --admin-token-file: " +
			"Authorization: Bearer TOKEN"})
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, rewireReply{Error: fmt.Sprintf(
			"a state change must be sent as Content-Type: application/json, not %q", r.Header.Get("Content-Type"))})
		return false
	}
	return true
}

// bearsToken reports whether r bears the token whose SHA-256 is want.
// Comparing digests in constant time tells a guesser nothing, not even the
// token's length.
func bearsToken(r *http.Request, want []byte) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if want == nil || !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// hostAllowed reports whether the Host header hostport names the endpoint
// by an IP literal, localhost, or one of hosts (lower-case). A page that
// rebinds its own DNS name to the endpoint's address still sends its own
// name, and is refused.
func hostAllowed(hostport string, hosts []string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return host == "localhost" || slices.Contains(hosts, host)
}

// mux serves the API; handlerFor puts each listener's checks in front.
func (a *admin) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		doc := a.d.status.Load()
		if doc == nil || !doc.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			if doc != nil {
				fmt.Fprintln(w, strings.Join(doc.NotReady, "\n"))
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.d.status.Load().withLive())
	})
	mux.HandleFunc("GET /routes/{key}", func(w http.ResponseWriter, r *http.Request) {
		rs, ok := a.d.status.Load().withLive().route(r.PathValue("key"))
		if !ok {
			writeJSON(w, http.StatusNotFound, rewireReply{Error: fmt.Sprintf("no route or target %q", r.PathValue("key"))})
			return
		}
		writeJSON(w, http.StatusOK, rs)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if a.metrics == nil {
			http.NotFound(w, r)
			return
		}
		a.metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /rewire", func(w http.ResponseWriter, r *http.Request) {
		var req rewireRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, rewireReply{Error: "bad request: " + err.Error()})
			return
		}
		if req.Key == "" && !req.Reset {
			writeJSON(w, http.StatusBadRequest, rewireReply{Error: "bad request: no route or target to rewire"})
			return
		}
		req.reply = make(chan rewireReply, 1)
		ctx, cancel := context.WithTimeout(r.Context(), adminRequestTimeout)
		defer cancel()
		select {
		case a.d.requests <- req:
		case <-ctx.Done():
			writeJSON(w, http.StatusServiceUnavailable, rewireReply{Error: "the daemon is busy or shutting down"})
			return
		}
		reply := <-req.reply
		if reply.Error != "" {
			writeJSON(w, reply.status, reply)
			return
		}
		writeJSON(w, http.StatusOK, reply)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
