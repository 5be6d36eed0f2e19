package tlsconf

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// pollInterval is how often Run compares the files' stamps.
const pollInterval = time.Second

// Files names the TLS material. Empty fields are unused.
type Files struct {
	// Cert and Key are this ambassador's certificate (followed by its
	// intermediates) and its key, unencrypted, in PEM: served by TLS
	// listeners, and presented as the client certificate when dialling
	// TLS backends. One without the other is an error.
	Cert, Key string
	// CA is a bundle of CA certificates, in PEM, that verifies TLS
	// backends' certificates. Empty means the system's roots.
	CA string
	// ClientCA is a bundle of CA certificates that verifies client
	// certificates on TLS listeners. Empty means CA.
	ClientCA string
	// Allow are the identities accepted from clients on TLS listeners:
	// each one matches exactly a URI SAN of the client's certificate
	// (such as spiffe://prod/redis-client), a DNS SAN, or the subject's
	// common name. Empty means any certificate the client CA signed.
	Allow []string
	// ServerName is the name verified in TLS backends' certificates, and
	// sent as SNI. Empty means the dialled host: a DNS name, or an IP
	// address checked against the IP SANs.
	ServerName string
	// MinVersion is tls.VersionTLS13, the default when zero, or
	// tls.VersionTLS12, an opt-in for peers that lack 1.3.
	MinVersion uint16
}

// minVersion is MinVersion with its default.
func (f Files) minVersion() uint16 {
	if f.MinVersion == 0 {
		return tls.VersionTLS13
	}
	return f.MinVersion
}

// paths lists the files that are used, in a fixed order.
func (f Files) paths() []string {
	var ps []string
	for _, p := range []string{f.Cert, f.Key, f.CA, f.ClientCA} {
		if p != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

// CertInfo describes one loaded certificate, for a gauge of expiry times.
type CertInfo struct {
	Path     string    // the file it was read from
	Kind     string    // "cert" (this ambassador's), "ca" (verifies backends) or "client_ca" (verifies clients)
	Subject  string    // the subject's distinguished name
	NotAfter time.Time // when it expires
}

// Store holds the current TLS material and hands out configurations that
// always use it. Build one with [Load]; [Store.Run] keeps it current.
type Store struct {
	files Files
	log   *zap.Logger
	cur   atomic.Pointer[material]

	ok, failed atomic.Uint64 // reloads, for Reloads

	// sessions is the client session cache that every client
	// configuration shares (through hostSessions), so that a reconnect
	// storm resumes sessions instead of paying full handshakes.
	sessions tls.ClientSessionCache

	// clients caches ClientConfigFor's configurations by address, and
	// nClients counts them, to bound the map.
	clients  sync.Map // string → *tls.Config
	nClients atomic.Int64

	// every is the polling period; zero means pollInterval.
	every time.Duration

	// stamps are the files' stamps taken before the material in use, or
	// the last refused one, was read, and refused tells which. Load sets
	// them, then only Run's goroutine reads and writes them.
	stamps  []stamp
	refused bool

	// clock is what poll checks the certificates' dates by; nil means
	// time.Now. Tests set it.
	clock func() time.Time
}

// sessionCacheSize is how many client sessions are kept: one per backend
// address (host:port and server name), the least recently used evicted.
const sessionCacheSize = 1024

// Load reads and checks every file now, so that a mistake stops the start
// with its fix rather than failing every handshake: the certificate and
// key exist, parse, match and are valid now, and each CA bundle holds a
// certificate that has not expired. The error names the file and the fix.
// A nil log means no logs.
func Load(f Files, log *zap.Logger) (*Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch {
	case f.Cert != "" && f.Key == "":
		return nil, fmt.Errorf("certificate %s is given without its key: give the key too", f.Cert)
	case f.Key != "" && f.Cert == "":
		return nil, fmt.Errorf("key %s is given without its certificate: give the certificate too", f.Key)
	case f.MinVersion != 0 && f.MinVersion != tls.VersionTLS12 && f.MinVersion != tls.VersionTLS13:
		return nil, fmt.Errorf("minimum TLS version %#04x: give TLS 1.3 (the default) or TLS 1.2", f.MinVersion)
	}
	f.Allow = slices.Clone(f.Allow)
	s := &Store{files: f, log: log, sessions: tls.NewLRUClientSessionCache(sessionCacheSize)}
	s.stamps = stamps(f.paths())
	m, err := s.load(s.now())
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	s.log.Info("tls material loaded", m.fields()...)
	return s, nil
}

// Run checks the files for changes, once a second, until ctx is
// cancelled, and then returns nil. A change loads the whole set again: if
// it is valid, new handshakes use it at once; if not, one warning says
// why, and the material in use stays. Files whose content is unchanged
// (touched, or rewritten the same) change nothing.
func (s *Store) Run(ctx context.Context) error {
	every := s.every
	if every == 0 {
		every = pollInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.poll()
		}
	}
}

// poll reloads the material if a file changed since it was last read. The
// stamps are taken before the files are read: a file that changes while
// it is read is then read again at the next poll. A refused set is tried
// again at each poll, without a word until a file changes again: a
// certificate that was not yet valid (the issuer's clock a little ahead)
// then comes into use when it becomes valid.
func (s *Store) poll() {
	now := stamps(s.files.paths())
	changed := !slices.Equal(now, s.stamps)
	if !changed && !s.refused {
		return
	}
	s.stamps = now
	m, err := s.load(s.now())
	if err != nil {
		if changed {
			s.failed.Add(1)
			s.log.Warn("tls files changed, refused: keeping the material in use", zap.Error(err))
		}
		s.refused = true
		return
	}
	s.refused = false
	if m.sum == s.cur.Load().sum {
		return
	}
	s.cur.Store(m)
	s.ok.Add(1)
	s.log.Info("tls material reloaded", m.fields()...)
}

func (s *Store) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}

// Reloads counts the reloads since Load: ok were swapped in, failed were
// refused (the old material kept).
func (s *Store) Reloads() (ok, failed uint64) {
	return s.ok.Load(), s.failed.Load()
}

// Certificates describes the certificates in use: this ambassador's
// (Kind "cert", its leaf alone), then each one of the CA bundles ("ca", "client_ca"). A
// CA bundle used for both is listed once, as "ca".
func (s *Store) Certificates() []CertInfo {
	return slices.Clone(s.cur.Load().infos)
}

// stamp tells whether a file changed without reading it. os.Stat follows
// symlinks, so size, mtime and inode are those of the file read; target
// is the path that the symlinks resolve to, which changes when a ..data
// symlink is swapped even if the new file looks the same. A file that
// cannot be stat'ed has its error as the stamp. (On kernels without fine
// grained timestamps, two writes of the same size in one clock tick, a
// few milliseconds, look alike; real rotations are further apart.)
type stamp struct {
	target string
	size   int64
	mtime  int64 // nanoseconds since the epoch
	inode  uint64
	err    string
}

func stamps(paths []string) []stamp {
	st := make([]stamp, len(paths))
	for i, p := range paths {
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			st[i].err = err.Error()
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			st[i].err = err.Error()
			continue
		}
		st[i] = stamp{target: target, size: fi.Size(), mtime: fi.ModTime().UnixNano(), inode: inode(fi)}
	}
	return st
}
