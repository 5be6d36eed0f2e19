package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// The admin socket, and who may be at either end of it.
//
// SocketAuto, the default, puts it at SocketFile in a directory only the
// daemon's user may enter, when it can be made, else at SocketAbstract.
// An abstract socket (@NAME) lives in the network namespace, not in the
// file system: any process of the namespace may bind the name first (on the
// host network, any process of the host). The daemon would then fail to
// start, while the CLI talked to the squatter. So:
//   - --admin-socket auto (the default) puts the socket in a directory only
//     the daemon's user may enter (SocketFile), where nobody else can
//     put one first, and falls back to the abstract name only when that
//     directory cannot be had (a read-only root, a user that cannot create
//     it, a directory open to others), saying why;
//   - a socket that is taken stops start-up with the name of its holder;
//   - each end checks the other's credentials (SO_PEERCRED): the daemon
//     serves root and its own user, and the CLI talks only to a daemon
//     running as root, as its own user, or as the owner of the private
//     directory that holds the socket file.

// peerCred is who is at the other end of a unix socket: for the daemon,
// the client's process when it connected; for the CLI, the daemon's when
// it listened.
type peerCred struct {
	pid int32 // 0 when the process is in another PID namespace
	uid uint32
}

func (c peerCred) String() string { return fmt.Sprintf("pid %d uid %d", c.pid, c.uid) }

// The admin socket's default: SocketFile in a directory only the daemon's
// user may enter, when it can be made, else SocketAbstract. An abstract
// socket lives in the network namespace, where any process of it can bind
// the name first (on the host network, any process of the host); a file
// in a private directory cannot be taken.
const (
	SocketAuto     = "auto"
	SocketFile     = "/run/ambassadord/admin.sock"
	SocketAbstract = "@ambassadord"
)

// listenSocket listens on the admin socket path, or, for SocketAuto, on
// file in its private directory, else on abstract. It returns the
// listener and the socket it listens on (on error, the one that failed).
func listenSocket(log *zap.Logger, path, file, abstract string) (net.Listener, string, error) {
	if path != SocketAuto {
		ln, err := listenUnix(path)
		return ln, path, err
	}
	ln, err := listenPrivate(file)
	if err == nil {
		return ln, file, nil
	}
	var inUse *socketInUseError
	if errors.As(err, &inUse) {
		// Another process serves the socket the CLI tries first: a second
		// daemon on the abstract name would not be the one it reaches.
		return nil, file, err
	}
	log.Info("admin socket: using the abstract socket, which any process of this network namespace could take first",
		zap.String("listen", abstract), zap.String("reason", err.Error()))
	ln, err = listenUnix(abstract)
	return ln, abstract, err
}

// listenPrivate listens on the file socket path in a directory only the
// daemon's user may enter.
func listenPrivate(path string) (net.Listener, error) {
	if err := privateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return listenUnix(path)
}

// privateDir makes sure dir is a directory that only the daemon's user may
// enter: it creates it (mode 0700) if it is missing, and refuses one owned
// by another user or open to others, in which another user could have put
// a socket first, or could replace the daemon's.
func privateDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("check %s: not a directory (%s)", dir, fi.Mode().Type())
	}
	owner, euid := fi.Sys().(*syscall.Stat_t).Uid, uint32(os.Geteuid())
	if owner != euid {
		return fmt.Errorf("check %s: owned by uid %d, not by the daemon's user (uid %d)", dir, owner, euid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("check %s: mode %04o lets others in (chmod 700 %s)", dir, perm, dir)
	}
	return nil
}

// listenUnix listens on a unix socket; a name starting with @ is in the
// abstract namespace (no file). A stale socket file, which no process
// answers on, is replaced; a socket that is in use is an error naming its
// holder.
func listenUnix(path string) (net.Listener, error) {
	if !strings.HasPrefix(path, "@") {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if holder, err := socketHolder(path); err == nil {
				return nil, &socketInUseError{holder: holder}
			}
			os.Remove(path)
		}
	}
	ln, err := net.Listen("unix", path)
	if errors.Is(err, syscall.EADDRINUSE) {
		holder, herr := socketHolder(path)
		if herr != nil {
			return nil, fmt.Errorf("%w (and asking who holds it: %v)", err, herr)
		}
		return nil, &socketInUseError{holder: holder}
	}
	return ln, err
}

// socketHolder connects to the socket at path and returns who listens on it.
func socketHolder(path string) (peerCred, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return peerCred{}, err
	}
	defer c.Close()
	return peerCredOf(c)
}

// socketInUseError is a start-up error: another process holds the admin
// socket.
type socketInUseError struct{ holder peerCred }

func (e *socketInUseError) Error() string {
	return fmt.Sprintf("in use by %s (another ambassadord, or a process that took the name first): "+
		"stop that process, or give this daemon another --admin-socket (AMBASSADORD_ADMIN_SOCKET), or --admin-socket= for none", e.holder)
}

// peerCheckListener marks each connection with whether its peer may be
// served: one that runs as the daemon's user or as root (SO_PEERCRED). An
// abstract socket has no file permissions to do that, and a process
// sharing the network namespace could reach it.
//
// A refused peer is still served: its request is read and answered 403
// (see refusePeer), so that it is told why. Closing its connection at once,
// with its request unread, would reach it as a "connection reset".
type peerCheckListener struct {
	net.Listener
	log *zap.Logger
	// allow reports whether a peer running as uid is served; nil means
	// root or the daemon's user.
	allow   func(uid uint32) bool
	refused rateLog
}

// peerConn is an admin socket connection and what the peer check found.
// It embeds *net.UnixConn so that the HTTP server can half-close it.
type peerConn struct {
	*net.UnixConn
	cred    peerCred
	allowed bool
}

// peerKey is the context key of a request's *peerConn.
type peerKey struct{}

// peerContext is the admin servers' ConnContext: it hands a socket
// connection's peer to the handler.
func peerContext(ctx context.Context, c net.Conn) context.Context {
	if p, ok := c.(*peerConn); ok {
		return context.WithValue(ctx, peerKey{}, p)
	}
	return ctx
}

func (l *peerCheckListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		p := &peerConn{UnixConn: uc}
		cred, err := peerCredOf(uc)
		p.cred, p.allowed = cred, err == nil && l.allows(cred.uid)
		if !p.allowed {
			if n, ok := l.refused.event(time.Now()); ok {
				l.log.Warn("admin socket: refused a peer running as another user",
					zap.Uint32("uid", cred.uid), zap.Int32("pid", cred.pid), zap.Int("refused", n))
			}
		}
		return p, nil
	}
}

func (l *peerCheckListener) allows(uid uint32) bool {
	if l.allow != nil {
		return l.allow(uid)
	}
	return uid == 0 || uid == uint32(os.Geteuid())
}

// refusePeer answers a refused peer 403, naming the users served. It reads
// the request's body first: a unix socket closed with unread data reaches
// the peer as a reset instead of the answer.
func refusePeer(w http.ResponseWriter, r *http.Request, p *peerConn) {
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
	w.Header().Set("Connection", "close")
	who := "this peer"
	if p != nil {
		who = fmt.Sprintf("this peer runs as uid %d (pid %d)", p.cred.uid, p.cred.pid)
	}
	served := "root (uid 0)"
	if euid := os.Geteuid(); euid != 0 {
		served = fmt.Sprintf("root (uid 0) and the daemon's user (uid %d)", euid)
	}
	writeJSON(w, http.StatusForbidden, errorReply{Error: fmt.Sprintf(
		"this admin socket serves only %s; %s: run the command as one of them (docker exec -u UID ...)", served, who)})
}

// socketPaths returns the sockets the CLI tries for the socket path, in
// order: for SocketAuto, SocketFile then SocketAbstract.
func socketPaths(socket string) []string {
	if socket == SocketAuto {
		return []string{SocketFile, SocketAbstract}
	}
	return []string{socket}
}

// dialFirst connects to the first of paths that accepts, and checks who
// holds it: root, the CLI's own user, or the owner of the private
// directory that holds the socket file (a daemon run by systemd as a
// DynamicUser in its RuntimeDirectory). Anyone else took the name first,
// and is refused rather than skipped: the CLI must not talk to it, and the
// operator must hear of it.
func dialFirst(ctx context.Context, paths []string) (net.Conn, error) {
	var errs []error
	self := uint32(os.Geteuid())
	for _, path := range paths {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cred, err := peerCredOf(c)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("check admin socket %s: %w", path, err)
		}
		owner, private := socketDirOwner(path, self)
		if !trustedHolder(cred.uid, self, owner, private) {
			c.Close()
			return nil, &untrustedSocketError{path: path, holder: cred, self: self}
		}
		return c, nil
	}
	return nil, errors.Join(errs...)
}

// trustedHolder reports whether a CLI running as self may trust a socket
// held by uid, in a directory that is private to owner when private.
func trustedHolder(uid, self, owner uint32, private bool) bool {
	return uid == 0 || uid == self || (private && uid == owner)
}

// socketDirOwner returns the owner of the directory holding the file
// socket path, and whether that directory is private to its owner (no
// access for group or others, not a symbolic link) and was made by root or
// by self (its parent is theirs, and nobody else may write there). Only
// its owner, or root, could then have put the socket there.
func socketDirOwner(path string, self uint32) (owner uint32, private bool) {
	if path == "" || strings.HasPrefix(path, "@") {
		return 0, false
	}
	dir := filepath.Dir(path)
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return 0, false
	}
	parent, err := os.Stat(filepath.Dir(dir))
	if err != nil || parent.Mode().Perm()&0o022 != 0 {
		return 0, false
	}
	if p := parent.Sys().(*syscall.Stat_t).Uid; p != 0 && p != self {
		return 0, false
	}
	return fi.Sys().(*syscall.Stat_t).Uid, true
}

// untrustedSocketError is the CLI's refusal of a socket held by a process
// that is not the daemon, as far as it can tell.
type untrustedSocketError struct {
	path   string
	holder peerCred
	self   uint32
}

func (e *untrustedSocketError) Error() string {
	return fmt.Sprintf("the admin socket %s is held by %s, not by the daemon: this command trusts only a daemon running as root, "+
		"as its own user (uid %d), or as the owner of the private directory holding the socket file. "+
		"If another process took the socket's name, stop it (and restart the daemon); if that process is the daemon, run this command as uid %d",
		e.path, e.holder, e.self, e.holder.uid)
}
