package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handshakeTimeout bounds each handshake of a test, and each wait for the
// server's side of it.
const handshakeTimeout = 10 * time.Second

// server is a TLS echo server on loopback: it reports each handshake's
// result on results, then echoes until the client closes.
type server struct {
	addr    string
	results chan error
}

func serve(t *testing.T, cfg *tls.Config) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &server{addr: ln.Addr().String(), results: make(chan error, 64)}
	var wg sync.WaitGroup
	wg.Go(func() { s.accept(ln, cfg, &wg) })
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *server) accept(ln net.Listener, cfg *tls.Config, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Go(func() { s.echo(tls.Server(c, cfg)) })
	}
}

func (s *server) echo(c *tls.Conn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := c.HandshakeContext(ctx)
	cancel()
	s.results <- err
	if err == nil {
		io.Copy(c, c)
	}
}

// result waits for the server's side of the next handshake.
func (s *server) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.results:
		return err
	case <-time.After(handshakeTimeout):
		t.Fatal("the server reported no handshake")
		return nil
	}
}

// dial connects with cfg and exchanges a line, which tells a refusal that
// a TLS 1.3 client learns only after its handshake (its certificate is
// verified after it sent Finished). The connection is closed at the end
// of the test.
func dial(t *testing.T, cfg *tls.Config, addr string) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	require.NoError(t, err)
	c := tls.Client(raw, cfg)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(handshakeTimeout)))
	if err := c.Handshake(); err != nil {
		return c, err
	}
	return c, echoes(c)
}

// echoes reports whether a line written on c comes back.
func echoes(c *tls.Conn) error {
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ping\n" {
		return errors.New("echo: got " + string(b))
	}
	return nil
}

func load(t *testing.T, f Files) *Store {
	t.Helper()
	s, err := Load(f, nil)
	require.NoError(t, err)
	return s
}

func serverConfig(t *testing.T, s *Store) *tls.Config {
	t.Helper()
	cfg, err := s.ServerConfig()
	require.NoError(t, err)
	return cfg
}

// TestHandshake: mutual TLS between two Stores succeeds with a client
// certificate of the client CA that names an allowed identity (by URI,
// DNS SAN or common name), and every refusal is classified by Reason on
// both sides: the listener's handshake error and the dialler's.
func TestHandshake(t *testing.T) {
	ca, wrong := newCA(t, "ca"), newCA(t, "wrong ca")
	srvCert := ca.issue(t, certSpec{cn: "server", dns: []string{"localhost"}, ips: []string{"127.0.0.1"}})
	srvFiles := side(t, filepath.Join(t.TempDir(), "server"), srvCert, ca)
	srvFiles.Allow = []string{"spiffe://prod/redis-client", "client.internal", "legacy-client"}
	srv := serve(t, serverConfig(t, load(t, srvFiles)))

	// A server that is not a Store: with a certificate a Store refuses to
	// load, expired.
	expiredSrvCert := ca.issue(t, certSpec{cn: "expired server", ips: []string{"127.0.0.1"},
		notBefore: time.Now().Add(-2 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
	expiredPair, err := tls.X509KeyPair(expiredSrvCert.certPEM, expiredSrvCert.key)
	require.NoError(t, err)
	expiredSrv := serve(t, &tls.Config{Certificates: []tls.Certificate{expiredPair}})

	// client is a Store's configuration to dial srv, with c (nil: no
	// certificate), trusting the server certificates of trusted.
	client := func(c *testCert, trusted *testCA) *Store {
		dir := filepath.Join(t.TempDir(), "client")
		if c == nil {
			f := Files{CA: filepath.Join(dir, "ca.pem")}
			writeFile(t, f.CA, trusted.pem)
			return load(t, f)
		}
		return load(t, side(t, dir, c, trusted))
	}
	// A client that is not a Store: with a certificate a Store refuses
	// to load, expired.
	expired := ca.issue(t, certSpec{cn: "legacy-client", notBefore: time.Now().Add(-2 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
	expiredPair, err = tls.X509KeyPair(expired.certPEM, expired.key)
	require.NoError(t, err)
	expiredClient := client(nil, ca).ClientConfigFor(srv.addr).Clone()
	expiredClient.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &expiredPair, nil }

	for _, tt := range []struct {
		name                   string
		client                 *Store
		cfg                    *tls.Config // instead of client's
		srv                    *server     // nil: srv
		wantServer, wantClient string      // Reason on each side; "" means success
	}{
		{name: "allowed by URI SAN", client: client(ca.issue(t, certSpec{cn: "x", uris: []string{"spiffe://prod/redis-client"}}), ca)},
		{name: "allowed by DNS SAN", client: client(ca.issue(t, certSpec{cn: "x", dns: []string{"client.internal"}}), ca)},
		{name: "allowed by common name", client: client(ca.issue(t, certSpec{cn: "legacy-client"}), ca)},
		{
			name:       "a foreign identity",
			client:     client(ca.issue(t, certSpec{cn: "x", uris: []string{"spiffe://prod/other"}, dns: []string{"other.internal"}}), ca),
			wantServer: "identity", wantClient: "bad_certificate",
		},
		{
			name:       "a client of another CA",
			client:     client(wrong.issue(t, certSpec{cn: "legacy-client"}), ca),
			wantServer: "unknown_ca", wantClient: "unknown_ca",
		},
		{name: "an expired client certificate", cfg: expiredClient, wantServer: "expired", wantClient: "expired"},
		{name: "no client certificate", client: client(nil, ca), wantServer: "no_certificate", wantClient: "no_certificate"},
		{
			name:       "a server of another CA",
			client:     client(ca.issue(t, certSpec{cn: "legacy-client"}), wrong),
			wantServer: "bad_certificate", wantClient: "unknown_ca",
		},
		{
			name:       "an expired server certificate",
			client:     client(ca.issue(t, certSpec{cn: "legacy-client"}), ca),
			srv:        expiredSrv,
			wantServer: "bad_certificate", wantClient: "expired",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.srv
			if s == nil {
				s = srv
			}
			cfg := tt.cfg
			if cfg == nil {
				cfg = tt.client.ClientConfigFor(s.addr)
			}
			_, clientErr := dial(t, cfg, s.addr)
			serverErr := s.result(t)
			t.Logf("client: %v; server: %v", clientErr, serverErr)
			assert.Equal(t, tt.wantClient, Reason(clientErr), "client: %v", clientErr)
			assert.Equal(t, tt.wantServer, Reason(serverErr), "server: %v", serverErr)
		})
	}
}

// pki is a CA, a listener's Store for 127.0.0.1 and localhost, and a
// dialler's, each with a certificate of the CA.
type pki struct {
	ca             *testCA
	server, client Files
}

func newPKI(t *testing.T, minVersion uint16) *pki {
	t.Helper()
	ca := newCA(t, "ca")
	dir := t.TempDir()
	p := &pki{
		ca:     ca,
		server: side(t, filepath.Join(dir, "server"), ca.issue(t, certSpec{cn: "server", dns: []string{"localhost"}, ips: []string{"127.0.0.1"}}), ca),
		client: side(t, filepath.Join(dir, "client"), ca.issue(t, certSpec{cn: "client"}), ca),
	}
	p.server.MinVersion, p.client.MinVersion = minVersion, minVersion
	return p
}

// TestVersions: TLS 1.3 is the default, and a TLS 1.2 client is refused
// (a protocol failure on both sides) unless MinVersion opts in.
func TestVersions(t *testing.T) {
	for _, tt := range []struct {
		name       string
		minVersion uint16
		want       string // Reason on both sides
		wantVer    uint16
	}{
		{name: "default", want: "protocol"},
		{name: "TLS 1.2 opted in", minVersion: tls.VersionTLS12, wantVer: tls.VersionTLS12},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t, tt.minVersion)
			srv := serve(t, serverConfig(t, load(t, p.server)))
			cfg := load(t, p.client).ClientConfigFor(srv.addr).Clone()
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			c, clientErr := dial(t, cfg, srv.addr)
			serverErr := srv.result(t)
			assert.Equal(t, tt.want, Reason(clientErr), "client: %v", clientErr)
			assert.Equal(t, tt.want, Reason(serverErr), "server: %v", serverErr)
			if tt.want == "" {
				assert.Equal(t, tt.wantVer, c.ConnectionState().Version)
			}
		})
	}
	t.Run("TLS 1.3 by default", func(t *testing.T) {
		p := newPKI(t, 0)
		srv := serve(t, serverConfig(t, load(t, p.server)))
		c, err := dial(t, load(t, p.client).ClientConfigFor(srv.addr), srv.addr)
		require.NoError(t, err)
		require.NoError(t, srv.result(t))
		assert.Equal(t, uint16(tls.VersionTLS13), c.ConnectionState().Version)
	})
}

// TestResumption: a second connection to the same backend resumes its
// session (TLS 1.3), on both sides, with the configuration ClientConfigFor
// caches; and still does after the listener reloaded a new certificate of
// the same CA, its session ticket keys being the same.
func TestResumption(t *testing.T) {
	p := newPKI(t, 0)
	srvStore := load(t, p.server)
	srv := serve(t, serverConfig(t, srvStore))
	client := load(t, p.client)

	for i, wantResume := range []bool{false, true, true} {
		c, err := dial(t, client.ClientConfigFor(srv.addr), srv.addr)
		require.NoError(t, err)
		require.NoError(t, srv.result(t))
		cs := c.ConnectionState()
		assert.Equal(t, uint16(tls.VersionTLS13), cs.Version)
		assert.Equal(t, wantResume, cs.DidResume, "connection %d", i)
	}

	next := p.ca.issue(t, certSpec{cn: "server 2", ips: []string{"127.0.0.1"}})
	writeFile(t, p.server.Cert, next.certPEM)
	writeFile(t, p.server.Key, next.key)
	srvStore.poll()
	requireReloads(t, srvStore, 1, 0)
	c, err := dial(t, client.ClientConfigFor(srv.addr), srv.addr)
	require.NoError(t, err)
	require.NoError(t, srv.result(t))
	assert.True(t, c.ConnectionState().DidResume, "after a reload")
}

// TestClientConfigFor: one configuration per address, the same pointer
// each time, with the dialled host as the server name, unless ServerName
// says otherwise.
func TestClientConfigFor(t *testing.T) {
	p := newPKI(t, 0)
	s := load(t, p.client)
	a := s.ClientConfigFor("10.0.0.1:6379")
	assert.Same(t, a, s.ClientConfigFor("10.0.0.1:6379"))
	assert.NotSame(t, a, s.ClientConfigFor("10.0.0.1:6380"))
	assert.Equal(t, "10.0.0.1", a.ServerName)
	assert.Equal(t, "redis.internal", s.ClientConfigFor("redis.internal:6379").ServerName)
	assert.Equal(t, "redis.internal", s.ClientConfigFor("redis.internal").ServerName)
	assert.Equal(t, tls.RenegotiateNever, a.Renegotiation)
	assert.Equal(t, uint16(tls.VersionTLS13), a.MinVersion)

	p.client.ServerName = "redis.prod"
	s = load(t, p.client)
	assert.Equal(t, "redis.prod", s.ClientConfigFor("10.0.0.1:6379").ServerName)
}

// TestServerName: a backend's certificate that is not for the name
// verified is refused with an error that names both and says the fix;
// the dialled IP address is verified against the IP SANs.
func TestServerName(t *testing.T) {
	p := newPKI(t, 0)
	srv := serve(t, serverConfig(t, load(t, p.server)))

	_, err := dial(t, load(t, p.client).ClientConfigFor(srv.addr), srv.addr)
	require.NoError(t, err, "127.0.0.1 is in the IP SANs")
	require.NoError(t, srv.result(t))

	p.client.ServerName = "redis.internal"
	_, err = dial(t, load(t, p.client).ClientConfigFor(srv.addr), srv.addr)
	assert.EqualError(t, err, "backend's certificate is for [localhost 127.0.0.1], not redis.internal: "+
		"set --tls-server-name or issue the certificate for redis.internal")
	assert.Equal(t, "identity", Reason(err))
	assert.Equal(t, "bad_certificate", Reason(srv.result(t)))
}

// TestServerConfig: a TLS listener needs a certificate and a client CA.
func TestServerConfig(t *testing.T) {
	p := newPKI(t, 0)
	for _, tt := range []struct {
		name string
		f    Files
		want string
	}{
		{name: "no certificate", f: Files{CA: p.server.CA}, want: "a TLS listener needs this ambassador's certificate and key: give them"},
		{
			name: "no client CA", f: Files{Cert: p.server.Cert, Key: p.server.Key},
			want: "a TLS listener verifies its clients' certificates: give the CA that signs them (the client CA, or the CA)",
		},
		{name: "a client CA alone", f: Files{Cert: p.server.Cert, Key: p.server.Key, ClientCA: p.server.CA}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.f).ServerConfig()
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tt.want)
		})
	}
}

func requireReloads(t *testing.T, s *Store, wantOK, wantFailed uint64) {
	t.Helper()
	ok, failed := s.Reloads()
	require.Equal(t, [2]uint64{wantOK, wantFailed}, [2]uint64{ok, failed}, "reloads ok, failed")
}
