package harness

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPKI: the directories NewPKI and Server write verify as they should,
// each against the CA a peer holds in its ca.pem: the server and the
// client chain to the CA, each for its own usage, the server for its
// address; the wrong CA's client does not chain to the CA, nor the CA's
// server to the wrong CA; the expired client is refused for its dates now,
// and chained while it was valid.
func TestPKI(t *testing.T) {
	p, err := NewPKI(t.TempDir())
	require.NoError(t, err)
	addr := netip.MustParseAddr("127.77.1.2")
	serverDir := filepath.Join(p.Dir, "server")
	require.NoError(t, Server(p.CA, serverDir, "engine b", addr))

	server := readDir(t, serverDir)
	client := readDir(t, p.Client)
	wrong := readDir(t, p.WrongCAClient)
	expired := readDir(t, p.Expired)
	now := time.Now()

	tests := []struct {
		name    string
		dir     dirCerts
		roots   *x509.Certificate // the CA the peer trusts
		usage   x509.ExtKeyUsage
		at      time.Time
		host    string // for a server: the address a client dials
		wantErr any    // nil, or a pointer to the error type wanted
	}{
		{name: "server chains to the CA for its address", dir: server, roots: client.ca, usage: x509.ExtKeyUsageServerAuth, at: now, host: addr.String()},
		{name: "server by localhost", dir: server, roots: client.ca, usage: x509.ExtKeyUsageServerAuth, at: now, host: "localhost"},
		{name: "server not for another address", dir: server, roots: client.ca, usage: x509.ExtKeyUsageServerAuth, at: now, host: "127.77.1.3", wantErr: &x509.HostnameError{}},
		{name: "server is no client", dir: server, roots: client.ca, usage: x509.ExtKeyUsageClientAuth, at: now, wantErr: &x509.CertificateInvalidError{}},
		{name: "client chains to the CA", dir: client, roots: server.ca, usage: x509.ExtKeyUsageClientAuth, at: now},
		{name: "client is no server", dir: client, roots: server.ca, usage: x509.ExtKeyUsageServerAuth, at: now, wantErr: &x509.CertificateInvalidError{}},
		{name: "wrong CA's client to the engine", dir: wrong, roots: server.ca, usage: x509.ExtKeyUsageClientAuth, at: now, wantErr: &x509.UnknownAuthorityError{}},
		{name: "engine to the wrong CA's client", dir: server, roots: wrong.ca, usage: x509.ExtKeyUsageServerAuth, at: now, wantErr: &x509.UnknownAuthorityError{}},
		{name: "wrong CA's client in its own chain", dir: wrong, roots: wrong.ca, usage: x509.ExtKeyUsageClientAuth, at: now},
		{name: "expired client now", dir: expired, roots: server.ca, usage: x509.ExtKeyUsageClientAuth, at: now, wantErr: &x509.CertificateInvalidError{}},
		{name: "expired client while it was valid", dir: expired, roots: server.ca, usage: x509.ExtKeyUsageClientAuth, at: now.Add(-90 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots := x509.NewCertPool()
			roots.AddCert(tt.roots)
			_, err := tt.dir.cert.Verify(x509.VerifyOptions{
				Roots: roots, CurrentTime: tt.at, DNSName: tt.host,
				KeyUsages: []x509.ExtKeyUsage{tt.usage},
			})
			if tt.wantErr == nil {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorAs(t, err, tt.wantErr)
		})
	}

	var invalid x509.CertificateInvalidError
	_, err = expired.cert.Verify(x509.VerifyOptions{Roots: pool(server.ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.ErrorAs(t, err, &invalid)
	assert.Equal(t, x509.Expired, invalid.Reason, "the expired certificate is refused for its dates")
	assert.True(t, expired.cert.NotAfter.Before(now), "NotAfter %s", expired.cert.NotAfter)

	assert.True(t, server.ca.Equal(client.ca), "server and client trust one CA")
	assert.False(t, wrong.ca.Equal(client.ca), "the wrong CA is another CA")
	assert.True(t, client.ca.IsCA && client.ca.BasicConstraintsValid)
	assert.Equal(t, []net.IP{net.IP(addr.AsSlice())}, server.cert.IPAddresses)
	for _, d := range []string{serverDir, p.Client, p.WrongCAClient, p.Expired} {
		st, err := os.Stat(filepath.Join(d, KeyFile))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "%s/%s", d, KeyFile)
	}
}

// TestPKIHandshake: a real TLS handshake on loopback with the directories
// as Docker's client and dockerd --tlsverify load them (the CA for the
// peer, the pair for oneself, client certificates required): the client
// of the CA gets through, the wrong CA's client and the expired one do
// not; and a server reissued by the wrong CA is refused by the client.
func TestPKIHandshake(t *testing.T) {
	p, err := NewPKI(t.TempDir())
	require.NoError(t, err)
	addr := netip.MustParseAddr("127.0.0.1")
	good := filepath.Join(p.Dir, "server")
	require.NoError(t, Server(p.CA, good, "engine", addr))
	other := filepath.Join(p.Dir, "server-wrong")
	require.NoError(t, Server(p.WrongCA, other, "engine", addr))

	tests := []struct {
		name    string
		server  string
		client  string
		wantErr bool
	}{
		{"client of the CA", good, p.Client, false},
		{"client of the wrong CA", good, p.WrongCAClient, true},
		{"expired client", good, p.Expired, true},
		{"server of the wrong CA", other, p.Client, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, tt.server, tt.client)
			if tt.wantErr {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

// handshake runs a TLS server with serverDir on loopback, requiring and
// verifying client certificates, dials it with clientDir, and returns the
// first error either side saw.
func handshake(t *testing.T, serverDir, clientDir string) error {
	t.Helper()
	srv := tlsConfig(t, serverDir)
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = srv.RootCAs
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	require.NoError(t, err)
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = c.Write([]byte("ok"))
		}
		served <- err
	}()
	cli := tlsConfig(t, clientDir)
	cli.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err == nil {
		// TLS 1.3: a refused client certificate shows on the first read.
		_, err = io.ReadFull(c, make([]byte, 2))
		c.Close()
	}
	return errors.Join(err, <-served)
}

// tlsConfig loads a directory as Docker's client and daemon do: the pair
// for oneself, ca.pem for the peer.
func tlsConfig(t *testing.T, dir string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	require.NoError(t, err)
	ca, err := os.ReadFile(filepath.Join(dir, CAFile))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca))
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// dirCerts is what a certificate directory holds, parsed.
type dirCerts struct {
	ca, cert *x509.Certificate
}

// readDir parses ca.pem and cert.pem of dir, and checks that key.pem
// matches cert.pem.
func readDir(t *testing.T, dir string) dirCerts {
	t.Helper()
	parse := func(name string) *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		block, rest := pem.Decode(b)
		require.NotNil(t, block, "%s/%s is not PEM", dir, name)
		require.Empty(t, rest, "%s/%s holds one block", dir, name)
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		return c
	}
	_, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	require.NoError(t, err, "%s: key.pem matches cert.pem", dir)
	return dirCerts{ca: parse(CAFile), cert: parse(CertFile)}
}

func pool(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}
