package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCA issues the certificates of the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert, key, pool}
}

// issue returns a certificate for 127.0.0.1, for both server and client
// authentication.
func (ca *testCA) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *testCA) serverConfig(t *testing.T) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "server")},
		ClientCAs:    ca.pool, ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS13,
	}
}

func (ca *testCA) clientConfig(t *testing.T, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// startTLSBackend serves handle on a TLS listener of cfg; it counts the
// connections accepted (handshake or not).
func startTLSBackend(t *testing.T, cfg *tls.Config, handle func(net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var n atomic.Int32
	serveListener(t, ln, func(c net.Conn) {
		n.Add(1)
		tc := tls.Server(c, cfg)
		if tc.Handshake() != nil {
			return
		}
		handle(tc)
	})
	return ln.Addr().String(), &n
}

// forHost returns cfg for dialling addr, as Route.BackendTLS must: its
// host verified.
func forHost(cfg *tls.Config, addr string) *tls.Config {
	c := cfg.Clone()
	c.ServerName, _, _ = net.SplitHostPort(addr)
	return c
}

// tlsEcho echoes, then passes the half-close on as close_notify.
func tlsEcho(c net.Conn) {
	io.Copy(c, c)
	c.(*tls.Conn).CloseWrite()
}

// TestTLSListener: a route listening with TLS serves a client with a
// certificate of its CA, the half-close passed on both ways; a client
// without one, or with another CA's, or not speaking TLS, is refused
// before any backend is dialled, reported as such.
func TestTLSListener(t *testing.T) {
	ca, other := newTestCA(t, "ca"), newTestCA(t, "other")
	var dialled atomic.Int32
	backend := startBackend(t, func(c net.Conn) { dialled.Add(1); echo(c) })
	obs := &recorder{}
	r := &Route{HandshakeTimeout: time.Second, Observer: obs}
	r.SetTLS(ca.serverConfig(t))
	r.SetBackends([]Backend{{Addr: backend}})
	addr := startRoute(t, r)

	good := ca.issue(t, "client")
	c, err := tls.Dial("tcp", addr, ca.clientConfig(t, &good))
	require.NoError(t, err)
	_, err = c.Write([]byte("hello over tls"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := readAll(t, c)
	require.NoError(t, err)
	assert.Equal(t, "hello over tls", got)
	c.Close()

	foreign := other.issue(t, "client")
	for name, cfg := range map[string]*tls.Config{
		"no client certificate": ca.clientConfig(t, nil),
		"another CA's":          ca.clientConfig(t, &foreign),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				// TLS 1.3: the client's handshake ends before the
				// server checks its certificate; the alert comes at the
				// first read.
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			require.Error(t, err)
		})
	}
	t.Run("not TLS", func(t *testing.T) {
		c := dial(t, addr)
		c.Write([]byte("PING\r\n"))
		got, _ := requireClosed(t, c)
		assert.NotContains(t, got, "PING")
	})
	t.Run("silent", func(t *testing.T) {
		c := dial(t, addr)
		start := time.Now()
		requireClosed(t, c)
		assert.Less(t, time.Since(start), 3*time.Second, "HandshakeTimeout 1s")
	})

	waitFor(t, func() bool { return len(obs.events().rejected) == 4 })
	ev := obs.events()
	assert.Equal(t, int32(1), dialled.Load(), "only the good client reached the backend")
	assert.Equal(t, []string{RejectHandshake, RejectHandshake, RejectHandshake, RejectHandshake}, ev.rejected)
	require.Len(t, ev.shakes, 5)
	assert.NoError(t, ev.shakes[0].err)
	for _, s := range ev.shakes {
		assert.Equal(t, SideListen, s.side)
	}
	for _, s := range ev.shakes[1:] {
		assert.Error(t, s.err)
	}
}

// TestTLSBackend: a backend marked TLS is dialled with the route's client
// config for its host, its certificate verified; the next connection
// resumes the session; a backend whose certificate does not verify is a
// failed connect of its own kind, and the next backend serves.
func TestTLSBackend(t *testing.T) {
	ca, other := newTestCA(t, "ca"), newTestCA(t, "other")
	good, _ := startTLSBackend(t, ca.serverConfig(t), tlsEcho)
	bad, badDials := startTLSBackend(t, other.serverConfig(t), tlsEcho)
	cert := ca.issue(t, "ambassador")
	cfg := ca.clientConfig(t, &cert)
	var hosts []string
	obs := &recorder{}
	r := &Route{Observer: obs, BackendTLS: func(addr string) *tls.Config {
		hosts = append(hosts, addr)
		return forHost(cfg, addr)
	}}
	r.SetBackends([]Backend{{Addr: good, TLS: true}})
	addr := startRoute(t, r)

	assert.Equal(t, "first", roundTrip(t, addr, "first"))
	assert.Equal(t, "second", roundTrip(t, addr, "second"))
	waitFor(t, func() bool { return len(obs.events().closed) == 2 })
	ev := obs.events()
	require.Len(t, ev.shakes, 2)
	assert.Equal(t, handshake{side: SideBackend}, ev.shakes[0])
	assert.Equal(t, handshake{side: SideBackend, resumed: true}, ev.shakes[1], "the second connect resumes")
	assert.Equal(t, []string{good, good}, hosts)

	// Another CA's backend first: refused, the good one serves.
	r.SetBackends([]Backend{{Addr: bad, TLS: true}})
	r.SetBackends([]Backend{{Addr: bad, TLS: true}, {Addr: good, TLS: true}})
	for range 2 {
		assert.Equal(t, "x", roundTrip(t, addr, "x"))
	}
	waitFor(t, func() bool { return len(obs.events().failed) > 0 })
	ev = obs.events()
	assert.Equal(t, DialTLS, ev.failed[0].reason)
	assert.Equal(t, Backend{Addr: bad, TLS: true}, ev.failed[0].backend)
	assert.Positive(t, badDials.Load())
}

// TestTLSResetPassesThrough: a TLS backend that resets its connection has
// the client reset, as a plain one does.
func TestTLSResetPassesThrough(t *testing.T) {
	ca := newTestCA(t, "ca")
	backend, _ := startTLSBackend(t, ca.serverConfig(t), func(c net.Conn) {
		c.Read(make([]byte, 1))
		c.(*tls.Conn).NetConn().(*net.TCPConn).SetLinger(0)
	})
	cert := ca.issue(t, "ambassador")
	cfg := ca.clientConfig(t, &cert)
	obs := &recorder{}
	r := &Route{Observer: obs, BackendTLS: func(addr string) *tls.Config { return forHost(cfg, addr) }}
	r.SetBackends([]Backend{{Addr: backend, TLS: true}})
	c := dial(t, startRoute(t, r))
	c.Write([]byte("x"))
	_, err := requireClosed(t, c)
	assert.Error(t, err, "a reset, not EOF")
	waitFor(t, func() bool { return len(obs.events().resets) == 1 })
	assert.Equal(t, []string{DirectionDown}, obs.events().resets)
}

// TestTLSBackendWithoutConfig: a TLS backend on a route without a config
// for it is a failed connect, never a plain one.
func TestTLSBackendWithoutConfig(t *testing.T) {
	var plain atomic.Int32
	backend := startBackend(t, func(c net.Conn) { plain.Add(1); echo(c) })
	obs := &recorder{}
	r := &Route{Observer: obs}
	r.SetBackends([]Backend{{Addr: backend, TLS: true}})
	assertRejected(t, startRoute(t, r))
	waitFor(t, func() bool { return len(obs.events().rejected) == 1 })
	ev := obs.events()
	require.Len(t, ev.failed, 1)
	assert.Equal(t, DialTLS, ev.failed[0].reason)
	assert.Empty(t, ev.opened)
}

// TestCopyBufferBursts: copyBuffer moves every byte, in order, whatever
// the sizes of the reads, as it switches between its small buffer and a
// pooled large one; and it gives the large one back.
func TestCopyBufferBursts(t *testing.T) {
	src, w := net.Pipe()
	r, dst := net.Pipe()
	var want []byte
	sizes := []int{1, smallBufferSize, smallBufferSize, 100 << 10, 7, smallBufferSize - 1, 3 * copyBufferSize, 1, 0}
	for i, n := range sizes {
		want = append(want, randomBytes(n, uint64(i))...)
	}
	go func() {
		off := 0
		for _, n := range sizes {
			w.Write(want[off : off+n])
			off += n
		}
		w.Close()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	n, err := copyBuffer(dst, src)
	require.NoError(t, err)
	dst.Close()
	assert.Equal(t, int64(len(want)), n)
	assert.Equal(t, want, <-got)
}

// TestTLSBackendRefusesOurCertificate: in TLS 1.3 a backend checks the
// client certificate after the client's handshake has ended, and refuses
// it with an alert the first read gets: that is a failed handshake,
// reported with the alert, and the client reset, not an ok handshake.
func TestTLSBackendRefusesOurCertificate(t *testing.T) {
	ca, other := newTestCA(t, "ca"), newTestCA(t, "other")
	srv := ca.serverConfig(t)
	srv.ClientCAs = other.pool // signed by ca, the ambassador's is refused
	backend, _ := startTLSBackend(t, srv, tlsEcho)
	cert := ca.issue(t, "ambassador")
	cfg := ca.clientConfig(t, &cert)
	obs := &recorder{}
	r := &Route{Observer: obs, BackendTLS: func(addr string) *tls.Config { return forHost(cfg, addr) }}
	r.SetBackends([]Backend{{Addr: backend, TLS: true}})
	// The refusal needs nothing from the client: its reset can come
	// before the client's connect returns.
	c, err := net.Dial("tcp", startRoute(t, r))
	if err == nil {
		defer c.Close()
		c.Write([]byte("x"))
		_, err = requireClosed(t, c)
	}
	assert.ErrorIs(t, err, syscall.ECONNRESET, "a reset, not EOF")
	waitFor(t, func() bool { return len(obs.events().shakes) == 1 })
	s := obs.events().shakes[0]
	assert.Equal(t, SideBackend, s.side)
	assert.ErrorContains(t, s.err, "remote error: tls:")
}

// TestTLSRefusalIsNotRetried: a backend whose certificate does not verify
// is not tried again for BackendWait: it will not verify any better.
func TestTLSRefusalIsNotRetried(t *testing.T) {
	ca, other := newTestCA(t, "ca"), newTestCA(t, "other")
	backend, dials := startTLSBackend(t, other.serverConfig(t), tlsEcho)
	cert := ca.issue(t, "ambassador")
	cfg := ca.clientConfig(t, &cert)
	r := &Route{BackendWait: 3 * time.Second, BackendTLS: func(addr string) *tls.Config { return forHost(cfg, addr) }}
	r.SetBackends([]Backend{{Addr: backend, TLS: true}})
	start := time.Now()
	assertRejected(t, startRoute(t, r))
	assert.Less(t, time.Since(start), time.Second)
	assert.Equal(t, int32(1), dials.Load())
}
