package watcher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheck runs Check against engines served over real TLS on loopback,
// each misconfigured in one way, and checks how it classifies the failure:
// a configuration error naming the engine and the fix, or an unreachable
// engine, which is no error of the configuration.
func TestCheck(t *testing.T) {
	p := newPKI(t)
	wrongCA := newTestCA(t, "wrong CA")
	strangerClient := wrongCA.issue(t, certOpts{cn: "stranger"})
	elsewhere := p.ca.issue(t, certOpts{cn: "engine", server: true, ips: []net.IP{net.IPv4(10, 9, 8, 7)}, dns: []string{"engine.test"}})
	noSAN := p.ca.issue(t, certOpts{cn: "engine", server: true})
	past := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	expiredEngine := p.ca.issue(t, certOpts{cn: "engine", server: true, ips: []net.IP{net.IPv4(127, 0, 0, 1)},
		notBefore: past.Add(-time.Hour), notAfter: past})
	clientForServers := p.ca.issue(t, certOpts{cn: "engine", server: true, ips: []net.IP{net.IPv4(127, 0, 0, 1)}})

	// The engine's own configurations.
	tlsEngine := func() *tls.Config { return engineTLS(p.engine, p.ca) }
	clockAhead := func() *tls.Config {
		// An engine whose clock is two years ahead of ours sees our
		// certificate, valid for one, as expired.
		c := engineTLS(p.engine, p.ca)
		c.Time = func() time.Time { return time.Now().Add(2 * 365 * 24 * time.Hour) }
		return c
	}
	revoking := func() *tls.Config {
		// An engine that refuses the certificate for a reason of its
		// own (a revocation list, a socket proxy's allow list).
		c := engineTLS(p.engine, p.ca)
		c.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { return errors.New("revoked") }
		return c
	}
	tls12 := func() *tls.Config {
		c := engineTLS(p.engine, p.ca)
		c.MaxVersion = tls.VersionTLS12
		return c
	}

	ok := &fakeAPI{}
	goodDir := p.dir(t)
	for _, tt := range []struct {
		name   string
		engine func(t *testing.T) string // serves an engine, returns its URL
		dir    func(t *testing.T) string // the tls= directory; nil for insecure
		want   string                    // after `engine "big" at URL: `, with {DIR}, {URL}, {HOSTPORT}, {PORT}; "" for nil
		down   bool                      // the error wraps ErrUnreachable
	}{
		{
			name:   "TLS",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), ok) },
			dir:    func(*testing.T) string { return goodDir },
		},
		{
			name:   "TLS 1.2",
			engine: func(t *testing.T) string { return startEngine(t, tls12(), ok) },
			dir:    func(*testing.T) string { return goodDir },
		},
		{
			name:   "insecure",
			engine: func(t *testing.T) string { return startEngine(t, nil, ok) },
		},
		{
			name:   "the engine's certificate is not signed by ca.pem",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), ok) },
			dir: func(t *testing.T) string {
				return writeTLSDir(t, wrongCA.pem, p.client.certPEM, p.client.keyPEM)
			},
			want: `the engine's certificate, issued by "CN=engine CA", is not signed by a CA in {DIR}/ca.pem: ` +
				`put in {DIR}/ca.pem the certificate of the CA that signed the engine's (dockerd --tlscert)`,
		},
		{
			name:   "the engine does not trust the CA of our certificate",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), ok) },
			dir: func(t *testing.T) string {
				return writeTLSDir(t, p.ca.pem, strangerClient.certPEM, strangerClient.keyPEM)
			},
			want: "the engine refuses our client certificate {DIR}/cert.pem: it was not issued by a CA the engine trusts " +
				"(remote error: tls: unknown certificate authority): issue cert.pem from the CA of the engine's dockerd --tlscacert",
		},
		{
			name: "the engine does not trust the CA of our certificate, TLS 1.2",
			engine: func(t *testing.T) string {
				c := tls12()
				c.ClientCAs = x509.NewCertPool()
				return startEngine(t, c, ok)
			},
			dir: func(*testing.T) string { return goodDir },
			want: "the engine refuses our client certificate {DIR}/cert.pem: it was not issued by a CA the engine trusts " +
				"(remote error: tls: unknown certificate authority): issue cert.pem from the CA of the engine's dockerd --tlscacert",
		},
		{
			name:   "the engine sees our certificate expired",
			engine: func(t *testing.T) string { return startEngine(t, clockAhead(), ok) },
			dir:    func(*testing.T) string { return goodDir },
			want: "the engine refuses our client certificate {DIR}/cert.pem as expired (remote error: tls: expired certificate): " +
				"issue a new one, and check that both hosts' clocks agree",
		},
		{
			name:   "the engine refuses our certificate",
			engine: func(t *testing.T) string { return startEngine(t, revoking(), ok) },
			dir:    func(*testing.T) string { return goodDir },
			want: "the engine refuses our client certificate {DIR}/cert.pem (remote error: tls: bad certificate): " +
				"issue it from the CA of the engine's dockerd --tlscacert, for client authentication (extendedKeyUsage = clientAuth)",
		},
		{
			name:   "the engine's certificate is for another address",
			engine: func(t *testing.T) string { return startEngine(t, engineTLS(elsewhere, p.ca), ok) },
			dir:    func(*testing.T) string { return goodDir },
			want: "the engine's certificate is not valid for 127.0.0.1, only for engine.test, 10.9.8.7: " +
				"give in the URL the name or IP it was issued for (tcp://engine.test:{PORT}), and address=127.0.0.1 for the ports its containers publish; " +
				"or reissue it with 127.0.0.1 in its subjectAltName",
		},
		{
			name:   "the engine's certificate has no subjectAltName",
			engine: func(t *testing.T) string { return startEngine(t, engineTLS(noSAN, p.ca), ok) },
			dir:    func(*testing.T) string { return goodDir },
			want: "the engine's certificate is not valid for 127.0.0.1, nor any name or IP (it has no subjectAltName): " +
				"reissue it with 127.0.0.1 in its subjectAltName",
		},
		{
			name:   "the engine's certificate expired",
			engine: func(t *testing.T) string { return startEngine(t, engineTLS(expiredEngine, p.ca), ok) },
			dir:    func(*testing.T) string { return goodDir },
			want:   "the engine's certificate expired on 2025-01-02T03:04:05Z: renew it (dockerd --tlscert), and check that both hosts' clocks agree",
		},
		{
			name: "the engine's certificate is a client's",
			engine: func(t *testing.T) string {
				c := p.ca.issue(t, certOpts{cn: "engine", ips: []net.IP{net.IPv4(127, 0, 0, 1)}})
				return startEngine(t, engineTLS(c, p.ca), ok)
			},
			dir: func(*testing.T) string { return goodDir },
			want: "the engine's certificate does not verify against {DIR}/ca.pem (x509: certificate specifies an incompatible key usage): " +
				"give the engine a certificate issued for server authentication by a CA in {DIR}/ca.pem",
		},
		{
			name:   "a plain engine, tls=",
			engine: func(t *testing.T) string { return startEngine(t, nil, ok) },
			dir:    func(*testing.T) string { return goodDir },
			want: "the engine answers in plain HTTP, not TLS, and this engine has tls=: enable TLS on the engine " +
				"(dockerd --tlsverify --tlscacert --tlscert --tlskey, on port 2376), or, on a network you trust, replace tls= with insecure",
		},
		{
			name:   "something else than HTTP, tls=",
			engine: func(t *testing.T) string { return serveBanner(t, "SSH-2.0-OpenSSH_9.6\r\n") },
			dir:    func(*testing.T) string { return goodDir },
			want: "the engine does not answer in TLS, and this engine has tls=: check the port, or enable TLS on the engine " +
				"(dockerd --tlsverify --tlscacert --tlscert --tlskey, on port 2376), or, on a network you trust, replace tls= with insecure",
		},
		{
			name:   "a TLS engine, insecure",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), ok) },
			want: "the engine speaks TLS, and this engine has insecure instead of tls=: replace insecure with tls=DIR, " +
				"a directory with the engine's CA (ca.pem) and a client certificate (cert.pem, key.pem)",
		},
		{
			name:   "a TLS engine that sends an alert, insecure",
			engine: func(t *testing.T) string { return serveBanner(t, "\x15\x03\x03\x00\x02\x02\x46") },
			want: "the engine speaks TLS, and this engine has insecure instead of tls=: replace insecure with tls=DIR, " +
				"a directory with the engine's CA (ca.pem) and a client certificate (cert.pem, key.pem)",
		},
		{
			name:   "our certificate expired: Validate's",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), ok) },
			dir: func(t *testing.T) string {
				c := p.ca.issue(t, certOpts{cn: "old", notBefore: past.Add(-time.Hour), notAfter: past})
				return writeTLSDir(t, p.ca.pem, c.certPEM, c.keyPEM)
			},
			want: "{DIR}/cert.pem expired on 2025-01-02T03:04:05Z: issue a new client certificate",
		},
		{
			name:   "our certificate is for servers: Validate's",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), ok) },
			dir: func(t *testing.T) string {
				return writeTLSDir(t, p.ca.pem, clientForServers.certPEM, clientForServers.keyPEM)
			},
			want: "{DIR}/cert.pem is not for client authentication, which the engine requires (its extended key usage lacks clientAuth): " +
				"issue it with extendedKeyUsage = clientAuth",
		},
		{
			name:   "an engine too old",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), &fakeAPI{apiVersion: "1.40"}) },
			dir:    func(*testing.T) string { return goodDir },
			want:   "it speaks API 1.40, and ambassadord follows engines from API 1.41 (Docker 20.10) on: upgrade the engine",
		},
		{
			name:   "not an engine",
			engine: func(t *testing.T) string { return startEngine(t, tlsEngine(), &fakeAPI{status: http.StatusNotFound}) },
			dir:    func(*testing.T) string { return goodDir },
			want:   "ping: Error response from daemon: Not Found",
		},
		{
			name:   "refused",
			engine: func(t *testing.T) string { return "tcp://" + closedPort(t) },
			dir:    func(*testing.T) string { return goodDir },
			want:   "unreachable: Cannot connect to the Docker daemon at {URL}. Is the docker daemon running?",
			down:   true,
		},
		{
			name: "silent",
			engine: func(t *testing.T) string {
				// The kernel completes the connection; nothing
				// ever answers the handshake.
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(t, err)
				t.Cleanup(func() { ln.Close() })
				return "tcp://" + ln.Addr().String()
			},
			dir:  func(*testing.T) string { return goodDir },
			want: `unreachable: Get "https://{HOSTPORT}/_ping": context deadline exceeded`,
			down: true,
		},
		{
			name: "unavailable behind a proxy",
			engine: func(t *testing.T) string {
				return startEngine(t, tlsEngine(), &fakeAPI{status: http.StatusServiceUnavailable})
			},
			dir:  func(*testing.T) string { return goodDir },
			want: "unreachable: Error response from daemon: Service Unavailable",
			down: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.engine(t)
			spec := EngineSpec{Name: "big", URL: url, Insecure: tt.dir == nil}
			if tt.dir != nil {
				spec.TLSDir = tt.dir(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			err := Check(ctx, spec)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "tcp://"))
			want := strings.NewReplacer("{DIR}", spec.TLSDir, "{HOSTPORT}", strings.TrimPrefix(url, "tcp://"), "{URL}", url, "{PORT}", port).Replace(tt.want)
			if strings.HasPrefix(tt.want, "{DIR}/") {
				want = `engine "big": ` + want // Validate's, which has no URL
			} else {
				want = `engine "big" at ` + url + ": " + want
			}
			assert.EqualError(t, err, want)
			assert.Equal(t, tt.down, errors.Is(err, ErrUnreachable), "unreachable")
		})
	}
}

func TestCheckUnix(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "engine.sock")
	spec := EngineSpec{Name: "small", URL: "unix://" + sock}

	err := Check(context.Background(), spec)
	assert.ErrorIs(t, err, ErrUnreachable, "no socket yet: %v", err)

	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := &http.Server{Handler: &fakeAPI{}, ReadHeaderTimeout: time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	assert.NoError(t, Check(context.Background(), spec))
}

// TestCheckCancelled: a cancelled start is not an unreachable engine.
func TestCheckCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err = Check(ctx, EngineSpec{Name: "big", URL: "tcp://" + ln.Addr().String(), Insecure: true})
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrUnreachable)
}

// TestCheckIgnoresEnvironment: the environment is the local engine's; an
// engine given by --engine is the one checked, and the local engine's TLS
// settings do not apply to it.
func TestCheckIgnoresEnvironment(t *testing.T) {
	p := newPKI(t)
	url := startEngine(t, engineTLS(p.engine, p.ca), &fakeAPI{})
	t.Setenv("DOCKER_HOST", "tcp://"+closedPort(t))
	t.Setenv("DOCKER_CERT_PATH", filepath.Join(t.TempDir(), "none"))
	t.Setenv("DOCKER_TLS_VERIFY", "")
	t.Setenv("DOCKER_API_VERSION", "1.99")
	assert.NoError(t, Check(context.Background(), EngineSpec{Name: "big", URL: url, TLSDir: p.dir(t)}))

	cli, err := newEngineClient(EngineSpec{Name: "big", URL: url, TLSDir: p.dir(t)})
	require.NoError(t, err)
	defer cli.Close()
	assert.Equal(t, url, cli.DaemonHost())
	assert.Equal(t, client.MaxAPIVersion, cli.ClientVersion(), "DOCKER_API_VERSION is the local engine's")

	tr, err := engineTransport(EngineSpec{Name: "big", URL: url, TLSDir: p.dir(t)})
	require.NoError(t, err)
	assert.Nil(t, tr.Proxy, "no proxy from HTTP_PROXY/HTTPS_PROXY between ambassadord and an engine")
	tr, err = engineTransport(EngineSpec{Name: "small", URL: "unix:///run/small.sock"})
	require.NoError(t, err)
	assert.Nil(t, tr.Proxy)
	assert.Nil(t, tr.TLSClientConfig)
}

// TestExplainEngine covers what the loopback engines cannot produce: a
// socket the ambassador may not open (the tests run as root).
func TestExplainEngine(t *testing.T) {
	spec := EngineSpec{Name: "small", URL: "unix:///run/small.sock"}
	denied := fmt.Errorf("ping docker engine: %w", &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)})
	got := spec.explain(denied)
	assert.EqualError(t, got, "permission denied on /run/small.sock: run ambassadord as a user of the socket's group "+
		"(docker run --group-add $(stat -c %g /run/small.sock)), or as root")
	assert.ErrorIs(t, got, syscall.EACCES)
	assert.Equal(t, got, spec.explain(got), "explaining twice changes nothing")
	assert.EqualError(t, spec.checkError(denied, 0), `engine "small" at unix:///run/small.sock: `+got.Error())

	// What no configuration causes is left alone.
	for _, err := range []error{io.EOF, errors.New("boom"), context.DeadlineExceeded} {
		assert.Equal(t, err, spec.explain(err))
	}
	assert.NoError(t, spec.explain(nil))
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// serveBanner serves a server that answers what a client sends first with
// banner, then closes, as an ssh server or a TLS server that sends an
// alert does; it returns its URL.
func serveBanner(t *testing.T, banner string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Read(make([]byte, 4096))
				_, _ = io.WriteString(c, banner)
			}()
		}
	}()
	return "tcp://" + ln.Addr().String()
}
