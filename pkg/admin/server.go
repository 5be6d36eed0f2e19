package admin

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

	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// Request timeouts and the connection cap. Each listener holds at most
// Limits.MaxConns connections (see connCap), each bounded by the read,
// write and idle timeouts: whatever clients do, the admin port holds a few
// descriptors and goroutines, and the data path keeps the rest.
const (
	// requestTimeout bounds how long a rewire waits for the controller to
	// take it.
	requestTimeout = 10 * time.Second

	// defaultReadTimeout bounds reading one request, headers and body (at
	// most 64 KiB): a client that sends them slowly holds a connection,
	// or a handler waiting for the body, no longer.
	defaultReadTimeout = 5 * time.Second
	// defaultWriteTimeout bounds a request from the end of its headers to
	// the end of its answer. It exceeds requestTimeout, so that a rewire
	// waiting for a busy controller can still say so.
	defaultWriteTimeout = requestTimeout + 5*time.Second
	// defaultIdleTimeout closes a keep-alive connection this long after
	// its last answer; a Prometheus scrape every 15 s still reuses its
	// connection.
	defaultIdleTimeout = 30 * time.Second
	// defaultMaxConns is how many connections each admin listener holds:
	// a scraper, a few health checks and CLI commands at once. Its
	// descriptors are nothing next to the data path's (two per proxied
	// connection), even under --ulimit nofile=128.
	defaultMaxConns = 16
)

// Limits bound what the admin listeners hold; a zero field means its
// default.
type Limits struct {
	ReadTimeout  time.Duration // 5s
	WriteTimeout time.Duration // 15s
	IdleTimeout  time.Duration // 30s
	MaxConns     int           // per listener; 16
}

func (l Limits) readTimeout() time.Duration  { return cmp.Or(l.ReadTimeout, defaultReadTimeout) }
func (l Limits) writeTimeout() time.Duration { return cmp.Or(l.WriteTimeout, defaultWriteTimeout) }
func (l Limits) idleTimeout() time.Duration  { return cmp.Or(l.IdleTimeout, defaultIdleTimeout) }
func (l Limits) maxConns() int               { return cmp.Or(l.MaxConns, defaultMaxConns) }

// Controller is what the admin endpoint asks of the controller
// (pkg/daemon's Daemon implements it).
type Controller interface {
	// Status returns the status document with its live values read now,
	// or nil while there is none yet. The endpoint only reads it.
	Status() *api.Status
	// Rewire applies a rewire and returns the outcome. It returns an
	// error only when the request was not taken (ctx ended first, or the
	// controller has stopped): the endpoint answers 503 then.
	Rewire(ctx context.Context, req api.RewireRequest) (api.RewireReply, error)
}

// Server is the admin endpoint: the same API on a TCP listener and on a
// unix socket. Set its fields, then call Run once.
//
//   - TCP (Address): read-only unless Writable, so that publishing it for
//     Prometheus never lets anyone rewire; with it, a state change must
//     bear the token of TokenFile. It answers only to a Host that is an IP
//     address, localhost or a name of Hosts: a web page the operator
//     opens cannot read it by DNS rebinding. Nor can a page post to it: a
//     POST must be application/json and bear Authorization, which a
//     cross-origin page cannot send without a CORS preflight, and the
//     endpoint grants none.
//   - the unix socket (Socket; socket.go says where SocketAuto puts it):
//     read and write, for the CLI through `docker exec`. Only peers
//     running as the daemon's user or root are served; the others are
//     answered 403.
type Server struct {
	// Controller is what the API reports and changes. Required.
	Controller Controller

	// Address is the TCP listener's address; empty means none.
	Address string
	// Writable accepts state changes on Address, from requests bearing
	// the token of TokenFile.
	Writable bool
	// TokenFile holds that token (see readToken for what it must be).
	TokenFile string
	// Hosts are the names, lower-case, that Address answers to in the
	// Host header besides IP addresses and localhost.
	Hosts []string

	// Socket is the unix socket's path, @NAME for an abstract socket, or
	// SocketAuto; empty means none.
	Socket string

	// Metrics serves /metrics; nil answers 404 there.
	Metrics http.Handler
	// Logger receives the endpoint's logs; nil means none.
	Logger *zap.Logger
	// Limits bound the listeners' connections.
	Limits Limits

	servers []*http.Server // set by start, read by stop, in Run's goroutine
	wg      sync.WaitGroup // one per server goroutine
}

func (s *Server) logger() *zap.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return zap.NewNop()
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

// Run reads the token file, opens the listeners, and serves until ctx is
// cancelled; then it closes the listeners, gives requests in flight a
// second, and returns nil. A listener that cannot be opened, or a token
// file that cannot be used, is returned at once, with nothing left
// listening: the operator asked for them.
func (s *Server) Run(ctx context.Context) error {
	if s.Controller == nil {
		return errors.New("admin: no Controller to serve")
	}
	if err := s.start(); err != nil {
		return err
	}
	<-ctx.Done()
	s.stop()
	return nil
}

// start reads the token file and opens the listeners.
func (s *Server) start() error {
	log := s.logger()
	tcp := access{writable: s.Writable, tcp: true, hosts: s.Hosts}
	if s.TokenFile != "" {
		token, err := readToken(s.TokenFile)
		if err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(token))
		tcp.token = sum[:]
		if !s.Writable && s.Address != "" {
			log.Warn("--admin-token-file without --admin-writable: the admin endpoint stays read-only")
		}
	}
	if s.Address != "" {
		ln, err := net.Listen("tcp", s.Address)
		if err != nil {
			return fmt.Errorf("listen on admin address %s: %w", s.Address, err)
		}
		s.serve(ln, s.handlerFor(tcp))
		log.Info("admin endpoint listening", zap.String("listen", ln.Addr().String()),
			zap.Bool("writable", s.Writable), zap.Strings("hosts", s.Hosts))
	}
	if s.Socket != "" {
		ln, path, err := listenSocket(log, s.Socket, SocketFile, SocketAbstract)
		if err != nil {
			s.stop()
			return fmt.Errorf("listen on admin socket %s: %w", path, err)
		}
		s.serve(&peerCheckListener{Listener: ln, log: log}, s.handlerFor(access{writable: true, peers: true}))
		log.Info("admin socket listening", zap.String("listen", path))
	}
	return nil
}

// serve serves h on ln, within the limits, and returns the cap that holds
// its connections.
func (s *Server) serve(ln net.Listener, h http.Handler) *connCap {
	capped := newConnCap(ln, s.Limits.maxConns(), s.logger())
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.Limits.readTimeout(),
		ReadTimeout:       s.Limits.readTimeout(),
		WriteTimeout:      s.Limits.writeTimeout(),
		IdleTimeout:       s.Limits.idleTimeout(),
		ConnState:         capped.track,
		ConnContext:       peerContext,
		ErrorLog:          zap.NewStdLog(s.logger()),
	}
	s.servers = append(s.servers, srv)
	s.wg.Add(1)
	go s.run(srv, capped)
	return capped
}

// run serves one listener until the server is shut down.
func (s *Server) run(srv *http.Server, ln net.Listener) {
	defer s.wg.Done()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.logger().Error("admin endpoint stopped", zap.String("error", err.Error()))
	}
}

// stop closes the listeners and waits for the servers.
func (s *Server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, srv := range s.servers {
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
	s.wg.Wait()
}

// handlerFor serves the API behind the checks of acc.
func (s *Server) handlerFor(acc access) http.Handler {
	mux := s.mux()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if acc.peers {
			if p, _ := r.Context().Value(peerKey{}).(*peerConn); p == nil || !p.allowed {
				refusePeer(w, r, p)
				return
			}
		}
		if acc.tcp && !hostAllowed(r.Host, acc.hosts) {
			writeJSON(w, http.StatusMisdirectedRequest, errorReply{Error: fmt.Sprintf("host %q is not a name this admin endpoint answers to: "+
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
		writeJSON(w, http.StatusForbidden, errorReply{Error: "state changes are accepted only over the admin socket " +
			"(docker exec CONTAINER /ambassadord rewire ...), or over TCP with --admin-writable and --admin-token-file"})
		return false
	}
	if acc.tcp && !bearsToken(r, acc.token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ambassadord"`)
		writeJSON(w, http.StatusUnauthorized, errorReply{Error: "a state change over TCP must bear the token of --admin-token-file: " +
			"Authorization: Bearer TOKEN"})
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, errorReply{Error: fmt.Sprintf(
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
func (s *Server) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		doc := s.Controller.Status()
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
		doc := s.Controller.Status()
		if doc == nil {
			writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: errStarting})
			return
		}
		writeJSON(w, http.StatusOK, doc)
	})
	mux.HandleFunc("GET /routes/{key}", func(w http.ResponseWriter, r *http.Request) {
		doc := s.Controller.Status()
		if doc == nil {
			writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: errStarting})
			return
		}
		rs, ok := doc.Route(r.PathValue("key"))
		if !ok {
			writeJSON(w, http.StatusNotFound, errorReply{Error: fmt.Sprintf("no route or target %q", r.PathValue("key"))})
			return
		}
		writeJSON(w, http.StatusOK, rs)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if s.Metrics == nil {
			http.NotFound(w, r)
			return
		}
		s.Metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /rewire", func(w http.ResponseWriter, r *http.Request) {
		var req api.RewireRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errorReply{Error: "bad request: " + err.Error()})
			return
		}
		if req.Key == "" && !req.Reset {
			writeJSON(w, http.StatusBadRequest, errorReply{Error: "bad request: no route or target to rewire"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		reply, err := s.Controller.Rewire(ctx, req)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: "the daemon is busy or shutting down"})
			return
		}
		if reply.Error != "" {
			writeJSON(w, refusalStatus(reply.Refusal), reply)
			return
		}
		writeJSON(w, http.StatusOK, reply)
	})
	return mux
}

// errStarting answers a read of the status before the controller has
// published one.
const errStarting = "the daemon is starting"

// errorReply is the body of every answer that is an error.
type errorReply struct {
	Error string `json:"error"`
}

// refusalStatus is the HTTP status of a refused rewire.
func refusalStatus(r api.Refusal) int {
	switch r {
	case api.Invalid:
		return http.StatusBadRequest
	case api.Unknown:
		return http.StatusNotFound
	case api.Unusable:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
