package tlsconf

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A layout writes a version of a set of files into dir, replacing the
// previous one as a deployment tool does.
type layout func(t *testing.T, dir, version string, files map[string][]byte)

// inPlace rewrites each file, keeping its inode, as an editor or a
// certificate tool writing over the file does.
func inPlace(t *testing.T, dir, _ string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		writeFile(t, filepath.Join(dir, name), b)
	}
}

// kubernetes lays files out as Kubernetes does a secret's volume (compose's
// secrets can be alike): the files are in dir/..VERSION, dir/..data links
// to it, and dir/NAME links to ..data/NAME. An update writes a new version
// directory, swaps ..data to it with a rename, and removes the old one:
// the paths never change, the files behind them do.
func kubernetes(t *testing.T, dir, version string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		writeFile(t, filepath.Join(dir, ".."+version, name), b)
	}
	data := filepath.Join(dir, "..data")
	old, err := os.Readlink(data)
	if errors.Is(err, fs.ErrNotExist) {
		old = ""
	} else {
		require.NoError(t, err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	require.NoError(t, os.Symlink(".."+version, tmp))
	require.NoError(t, os.Rename(tmp, data))
	if old != "" {
		require.NoError(t, os.RemoveAll(filepath.Join(dir, old)))
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); errors.Is(err, fs.ErrNotExist) {
			require.NoError(t, os.Symlink(filepath.Join("..data", name), link))
		}
	}
}

// peerName dials addr with a new client (no session to resume, so the
// server presents its certificate) and returns the common name of the
// certificate it presents.
func peerName(t *testing.T, client Files, addr string) string {
	t.Helper()
	c, err := dial(t, load(t, client).ClientConfigFor(addr), addr)
	require.NoError(t, err)
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestRotate: whether the files are rewritten in place or swapped by a
// symlink, Run's poll sees the change, and the next handshake presents
// the new certificate, while a connection established before keeps
// working. A touched file changes nothing; a bad new set (a key that does
// not match) is refused with one warning, counted, and the old material
// stays in use until a good set comes.
func TestRotate(t *testing.T) {
	for _, tt := range []struct {
		name   string
		layout layout
	}{
		{name: "in place", layout: inPlace},
		{name: "symlink swap", layout: kubernetes},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t, 0)
			dir := filepath.Join(t.TempDir(), "secret")
			set := func(version string, c *testCert, key []byte) {
				tt.layout(t, dir, version, map[string][]byte{"cert.pem": c.certPEM, "key.pem": key, "ca.pem": p.ca.pem})
			}
			issue := func(name string) *testCert {
				return p.ca.issue(t, certSpec{cn: name, ips: []string{"127.0.0.1"}})
			}
			first := issue("server 1")
			set("2026_01", first, first.key)
			f := Files{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"), CA: filepath.Join(dir, "ca.pem")}
			core, logs := observer.New(zapcore.InfoLevel)
			s, err := Load(f, zap.New(core))
			require.NoError(t, err)
			srv := serve(t, serverConfig(t, s))

			established, err := dial(t, load(t, p.client).ClientConfigFor(srv.addr), srv.addr)
			require.NoError(t, err)
			assert.Equal(t, "server 1", established.ConnectionState().PeerCertificates[0].Subject.CommonName)

			now := time.Now()
			require.NoError(t, os.Chtimes(f.Cert, now, now))
			s.poll()
			requireReloads(t, s, 0, 0)

			second := issue("server 2")
			set("2026_02", second, second.key)
			s.poll()
			requireReloads(t, s, 1, 0)
			assert.Equal(t, "server 2", peerName(t, p.client, srv.addr))
			assert.NoError(t, echoes(established), "the connection established before")
			assert.Equal(t, second.cert.NotAfter, s.Certificates()[0].NotAfter)

			third := issue("server 3")
			set("2026_03", third, first.key)
			s.poll()
			s.poll() // unchanged since: not refused again
			requireReloads(t, s, 1, 1)
			assert.Equal(t, "server 2", peerName(t, p.client, srv.addr))
			warnings := logs.FilterLevelExact(zapcore.WarnLevel).All()
			require.Len(t, warnings, 1)
			assert.Equal(t, f.Key+" does not match the certificate in "+f.Cert+": give the key the certificate was issued for",
				warnings[0].ContextMap()["error"])

			set("2026_04", third, third.key)
			s.poll()
			requireReloads(t, s, 2, 1)
			assert.Equal(t, "server 3", peerName(t, p.client, srv.addr))
			assert.NoError(t, echoes(established), "the connection established first")
			infos := logs.FilterMessage("tls material reloaded").All()
			require.Len(t, infos, 2)
			assert.Equal(t, "CN=server 3", infos[1].ContextMap()["subject"])
		})
	}
}

// TestRotateCA: a dialling ambassador whose CA file now holds another CA
// refuses the backend at the next connection, though it holds a session
// it could resume (VerifyConnection runs for resumptions too); a bundle
// of both CAs accepts it again.
func TestRotateCA(t *testing.T) {
	p := newPKI(t, 0)
	srv := serve(t, serverConfig(t, load(t, p.server)))
	s := load(t, p.client)
	cfg := s.ClientConfigFor(srv.addr)
	for range 2 {
		_, err := dial(t, cfg, srv.addr)
		require.NoError(t, err)
		require.NoError(t, srv.result(t))
	}

	other := newCA(t, "other")
	writeFile(t, p.client.CA, other.pem)
	s.poll()
	requireReloads(t, s, 1, 0)
	_, err := dial(t, cfg, srv.addr)
	assert.Equal(t, "unknown_ca", Reason(err), "%v", err)
	assert.Equal(t, "bad_certificate", Reason(srv.result(t)))

	writeFile(t, p.client.CA, append(append([]byte{}, other.pem...), p.ca.pem...))
	s.poll()
	requireReloads(t, s, 2, 0)
	_, err = dial(t, cfg, srv.addr)
	assert.NoError(t, err)
	assert.NoError(t, srv.result(t))
}

// TestRun: Run polls at its interval, reloads a changed file, and returns
// nil when its context is cancelled.
func TestRun(t *testing.T) {
	p := newPKI(t, 0)
	s := load(t, p.server)
	s.every = time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	ended := make(chan error, 1)
	go func() { ended <- s.Run(ctx) }()

	next := p.ca.issue(t, certSpec{cn: "server 2"})
	writeFile(t, p.server.Cert, next.certPEM)
	writeFile(t, p.server.Key, next.key)
	require.Eventually(t, func() bool {
		ok, _ := s.Reloads()
		return ok > 0
	}, 10*time.Second, time.Millisecond)
	assert.Equal(t, "CN=server 2", s.Certificates()[0].Subject)
	cancel()
	assert.NoError(t, <-ended)
}

// TestRotateNotYetValid: a new certificate that is not valid yet (its
// issuer's clock ahead of this host's) is refused, once, and comes into
// use when it becomes valid, without another change of the files.
func TestRotateNotYetValid(t *testing.T) {
	p := newPKI(t, 0)
	s := load(t, p.server)
	start := time.Now()
	next := p.ca.issue(t, certSpec{cn: "server 2", notBefore: start.Add(time.Minute)})
	writeFile(t, p.server.Cert, next.certPEM)
	writeFile(t, p.server.Key, next.key)
	s.poll()
	s.poll()
	requireReloads(t, s, 0, 1)
	assert.Equal(t, "CN=server", s.Certificates()[0].Subject)

	s.clock = func() time.Time { return start.Add(2 * time.Minute) }
	s.poll()
	requireReloads(t, s, 1, 1)
	assert.Equal(t, "CN=server 2", s.Certificates()[0].Subject)
}
