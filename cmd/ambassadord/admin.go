package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The admin endpoint serves the same API on two listeners:
//   - TCP (--admin-address, loopback by default): read-only unless
//     --admin-writable, so that publishing it for Prometheus never lets
//     anyone rewire;
//   - a local unix socket (--admin-socket, by default the abstract socket
//     @ambassadord, which needs no writable file system): read and write,
//     for the CLI through `docker exec`. Only peers running as the daemon's
//     user or root are served.
const (
	adminReadTimeout = 10 * time.Second
	// adminRequestTimeout bounds how long a rewire waits for the run loop.
	adminRequestTimeout = 10 * time.Second
)

// admin owns the admin listeners and their HTTP servers.
type admin struct {
	log     *zap.Logger
	d       *dynamic
	metrics http.Handler // nil: /metrics answers 404

	servers []*http.Server
	wg      sync.WaitGroup
}

// startAdmin opens the admin listeners, which serve metrics on /metrics. A
// listener that cannot be opened stops start-up: the operator asked for it.
func startAdmin(ctx context.Context, cfg *config, log *zap.Logger, d *dynamic, metrics http.Handler) (*admin, error) {
	a := &admin{log: log, d: d, metrics: metrics}
	if cfg.adminAddress != "" {
		ln, err := net.Listen("tcp", cfg.adminAddress)
		if err != nil {
			return nil, fmt.Errorf("admin endpoint on %s: %w", cfg.adminAddress, err)
		}
		a.serve(ln, cfg.adminWritable)
		log.Info("admin endpoint listening", zap.String("listen", ln.Addr().String()), zap.Bool("writable", cfg.adminWritable))
	}
	if cfg.adminSocket != "" {
		ln, err := listenUnix(cfg.adminSocket)
		if err != nil {
			a.stop()
			return nil, fmt.Errorf("admin socket %s: %w", cfg.adminSocket, err)
		}
		a.serve(&peerCheckListener{Listener: ln, log: log}, true)
		log.Info("admin socket listening", zap.String("listen", cfg.adminSocket))
	}
	return a, nil
}

// listenUnix listens on a unix socket; a name starting with @ is in the
// abstract namespace (no file). A stale socket file is replaced.
func listenUnix(path string) (net.Listener, error) {
	if !strings.HasPrefix(path, "@") {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path)
		}
	}
	return net.Listen("unix", path)
}

func (a *admin) serve(ln net.Listener, writable bool) {
	srv := &http.Server{Handler: a.handler(writable), ReadHeaderTimeout: adminReadTimeout, ErrorLog: zap.NewStdLog(a.log)}
	a.servers = append(a.servers, srv)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin endpoint stopped", errorField(err))
		}
	}()
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

func (a *admin) handler(writable bool) http.Handler {
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
		if !writable {
			writeJSON(w, http.StatusForbidden, rewireReply{Error: "state changes are accepted only over the admin socket " +
				"(docker exec CONTAINER /ambassadord rewire ...), or over TCP with --admin-writable"})
			return
		}
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

// peerCheckListener serves only unix-socket peers that run as the daemon's
// user or as root (SO_PEERCRED): an abstract socket has no file permissions
// to do that, and a container sharing the network namespace could reach it.
type peerCheckListener struct {
	net.Listener
	log *zap.Logger
}

func (l *peerCheckListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if uid, ok := peerUID(c); ok && (uid == 0 || uid == uint32(os.Getuid())) {
			return c, nil
		}
		l.log.Warn("admin socket: refused a peer running as another user")
		c.Close()
	}
}

func peerUID(c net.Conn) (uint32, bool) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return 0, false
	}
	return cred.Uid, true
}
