//go:build e2e

package e2e

// The multi-host recipe (deploy/multi-host/): certificates made by its
// certs.sh (openssl), a server host played by a private engine whose
// address is its bridge's gateway (so that containers of this machine's
// engine reach it, as a client host reaches a server host), its redis
// (server.yml) and its read-only TLS socket proxy (socket-proxy.yml)
// brought up on it with docker-compose, and the client side (client.yml)
// on this machine's engine, following the server host's engine through
// the proxy. Helpers start with deploy, as in deploy_test.go.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// deployNobodyUID is the user the recipes run the ambassador and the
// proxy as, who must read their keys.
const deployNobodyUID = 65534

// TestDeployMultiHost: deploy/multi-host/ end to end. The proxy, reached
// with the ambassador's client certificate, answers the watcher's
// requests and refuses writes and the other reads with 403; without a
// certificate of the CA it refuses the handshake. The client side's
// consumer, which knows nothing but the name redis, gets PONG from the
// server host's redis through its ambassador, which follows the server
// host's engine through the proxy; when the server host recreates redis
// (a new container, a new published port), new connections reach the new
// one. The proxy refused none of the ambassador's requests.
func TestDeployMultiHost(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	imgs := deployPrepare(t, ctx)
	if imgs.haproxy == "" {
		deployMissing(t, "haproxy (apt-get install haproxy)")
	}
	root, err := harness.RepoRoot(ctx)
	require.NoError(t, err)
	d, big := deployServerHost(t, ctx, imgs.redis, imgs.haproxy)
	host := d.Address.String()
	certs := deployCerts(t, ctx, root, t.TempDir(), host)
	// As the README says: the proxy and the ambassador run as nobody.
	require.NoError(t, os.Chown(filepath.Join(certs.server, "haproxy.pem"), deployNobodyUID, -1))
	clientCerts := t.TempDir()
	deployCopyDir(t, certs.client, filepath.Join(clientCerts, "big"), deployNobodyUID)

	target := eng.Name("deploy-mh-redis")
	server := deployUpOn(t, ctx, big, d.Host, "deploy/multi-host/server.yml", map[string]string{
		"REDIS_IMAGE":       imgs.redis,
		"AMBASSADOR_TARGET": target,
		"REDIS_PUBLISH":     host + ":", // IP::6379, an ephemeral port on the host's address
	})
	socket := strings.TrimPrefix(d.Host, "unix://")
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(socket, &st))
	proxy := deployUpOn(t, ctx, big, d.Host, "deploy/multi-host/socket-proxy.yml", map[string]string{
		"HAPROXY_IMAGE": imgs.haproxy,
		"DOCKER_GID":    strconv.FormatUint(uint64(st.Gid), 10),
		"DOCKER_SOCKET": socket,
		"PROXY_CERTS":   certs.server,
		"PROXY_PUBLISH": host + ":2376",
	})
	proxyC := proxy.container(t, ctx, "socket-proxy")
	insp, err := big.Inspect(ctx, proxyC.ID)
	require.NoError(t, err)
	assert.Equal(t, deployNobody, insp.Config.User, "the proxy runs as nobody")
	assert.True(t, insp.HostConfig.ReadonlyRootfs, "the proxy's root is read-only")
	base := "https://" + netip.AddrPortFrom(d.Address, 2376).String()
	withCert := deployTLSClient(t, certs.client, true)
	// Not WaitTCP: a connection closed before its handshake is logged,
	// and the proxy's log must hold only what it refused.
	ctxReady, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.Poll(ctxReady, func(ctx context.Context) error {
		code, err := deployDo(ctx, withCert, http.MethodGet, base+"/_ping")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("GET /_ping: %d", code)
		}
		return err
	}), "the proxy answers the ambassador's certificate")

	cl := deployUp(t, ctx, "deploy/multi-host/client.yml", map[string]string{
		"AMBASSADORD_IMAGE": ambassadorImage,
		"REDIS_IMAGE":       imgs.redis,
		"AMBASSADOR_TARGET": target,
		"ENGINES":           "big=tcp://" + netip.AddrPortFrom(d.Address, 2376).String() + ",tls=/certs/big",
		"CERTS_DIR":         clientCerts,
	})
	amb := cl.container(t, ctx, "ambassador")
	deployCheckConfined(t, ctx, amb.ID, false)
	cl.waitLog(t, ctx, cl.container(t, ctx, "consumer"), "PONG")
	via := netip.AddrPortFrom(amb.IP, 6379).String()
	redis := server.container(t, ctx, "redis")
	deployWaitServed(t, ctx, via, deployRunID(t, ctx, redis), "redis on the server host")
	published, err := big.HostPort(ctx, redis.ID, 6379)
	require.NoError(t, err)
	t.Logf("redis on the server host publishes %s; the client side's ambassador reaches it there", published)

	// The server host recreates redis: a new container, a new port.
	server.compose(t, ctx, "up", "-d", "--no-deps", "--force-recreate", "redis")
	recreated := server.container(t, ctx, "redis")
	require.NotEqual(t, redis.ID, recreated.ID)
	deployWaitServed(t, ctx, via, deployRunID(t, ctx, recreated), "the server host's recreated redis")
	now, err := big.HostPort(ctx, recreated.ID, 6379)
	require.NoError(t, err)
	t.Logf("recreated redis publishes %s (was %s)", now, published)

	// With dontlog-normal, haproxy logs only what it refused or what
	// failed: nothing so far, though the ambassador has pinged, listed
	// and followed the events through it all along.
	stdout, stderr, err := big.Logs(ctx, proxyC.ID)
	require.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(stdout+stderr), "the proxy refused or failed some of the ambassador's requests")

	api := "/v" + eng.Client.ClientVersion()
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodHead, "/_ping", http.StatusOK},
		{http.MethodGet, "/_ping", http.StatusOK},
		{http.MethodGet, api + "/containers/json", http.StatusOK},
		{http.MethodGet, api + "/containers/" + recreated.ID + "/json", http.StatusOK},

		{http.MethodPost, api + "/containers/create", http.StatusForbidden},
		{http.MethodPost, api + "/containers/" + recreated.ID + "/stop", http.StatusForbidden},
		{http.MethodDelete, api + "/containers/" + recreated.ID + "?force=1", http.StatusForbidden},
		{http.MethodPost, api + "/containers/" + recreated.ID + "/exec", http.StatusForbidden},
		{http.MethodGet, api + "/containers/" + recreated.ID + "/logs?stdout=1", http.StatusForbidden},
		{http.MethodGet, api + "/containers/" + recreated.ID + "/archive?path=/", http.StatusForbidden},
		{http.MethodGet, api + "/info", http.StatusForbidden},
		{http.MethodGet, api + "/images/json", http.StatusForbidden},
	} {
		got, err := deployDo(ctx, withCert, tt.method, base+tt.path)
		if assert.NoError(t, err, "%s %s", tt.method, tt.path) {
			assert.Equal(t, tt.want, got, "%s %s", tt.method, tt.path)
		}
	}
	still, err := big.Inspect(ctx, recreated.ID)
	require.NoError(t, err)
	assert.True(t, still.State != nil && still.State.Running, "redis survived the refused stop and DELETE")
	_, err = deployDo(ctx, deployTLSClient(t, certs.client, false), http.MethodGet, base+"/_ping")
	assert.Error(t, err, "a client without a certificate of the CA got through")
	t.Logf("without a client certificate: %v", err)
	proxy.waitLog(t, ctx, proxyC, "POST "+api+"/containers/create")
}

// deployServerHost starts a private engine to play a server host, with
// the host's address on its bridge (containers of this machine's engine
// reach it there), holding images. It is torn down when the test ends.
func deployServerHost(t *testing.T, ctx context.Context, images ...string) (*harness.Dockerd, *harness.Engine) {
	t.Helper()
	id := privateDockerdID()
	d, err := harness.StartDockerdWith(ctx, id, harness.DockerdOptions{OnBridge: true})
	if errors.Is(err, harness.ErrNoDockerd) {
		deployMissing(t, err.Error())
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of private dockerd %s (tail):\n%s", d.ID, d.LogTail())
		}
		assert.NoError(t, d.Close(), "tear down private dockerd %s", d.ID)
	})
	t.Logf("$ %s  # the server host, at %s", d.Command(), d.Address)
	e, err := d.Engine(ctx, eng.Label, eng.Run)
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	for _, img := range images {
		require.NoError(t, eng.CopyImage(ctx, e, img))
	}
	return d, e
}

// deployCertDirs are the directories certs.sh made.
type deployCertDirs struct {
	ca, server, client string
}

// deployCerts runs deploy/multi-host/certs.sh into out, as the README
// does: a CA, a server certificate named big for addrs, a client
// certificate named ambassador.
func deployCerts(t *testing.T, ctx context.Context, root, out string, addrs ...string) deployCertDirs {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		deployMissing(t, "openssl (apt-get install openssl)")
	}
	script := filepath.Join(root, "deploy/multi-host/certs.sh")
	for _, args := range [][]string{{"ca"}, append([]string{"server", "big"}, addrs...), {"client", "ambassador"}} {
		cmd := exec.CommandContext(ctx, script, args...)
		cmd.Env = append(os.Environ(), "CERTS_OUT="+out)
		got, err := cmd.CombinedOutput()
		require.NoError(t, err, "certs.sh %s:\n%s", strings.Join(args, " "), got)
		t.Logf("$ certs.sh %s  # %s", strings.Join(args, " "), strings.TrimSpace(string(got)))
	}
	return deployCertDirs{
		ca:     filepath.Join(out, "ca"),
		server: filepath.Join(out, "server-big"),
		client: filepath.Join(out, "client-ambassador"),
	}
}

// deployCheckCerts checks what certs.sh makes: the server certificate
// chains to the CA for each address given (IP and DNS) and for server
// authentication only, the client's for client authentication only; each
// directory's ca.pem is the CA; keys are 0600 and match their
// certificates (as Go, which ambassadord is, loads them); haproxy.pem is
// the server's certificate and key.
func deployCheckCerts(t *testing.T, ctx context.Context, root string) {
	t.Helper()
	dirs := deployCerts(t, ctx, root, t.TempDir(), "10.0.0.5", "big.example.com", "fd00::5")
	ca := deployParseCert(t, filepath.Join(dirs.ca, "ca.pem"))
	require.True(t, ca.IsCA, "the CA is a CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	server := deployParseCert(t, filepath.Join(dirs.server, harness.CertFile))
	client := deployParseCert(t, filepath.Join(dirs.client, harness.CertFile))
	for _, tt := range []struct {
		name    string
		cert    *x509.Certificate
		usage   x509.ExtKeyUsage
		host    string
		wantErr bool
	}{
		{"server by IPv4", server, x509.ExtKeyUsageServerAuth, "10.0.0.5", false},
		{"server by name", server, x509.ExtKeyUsageServerAuth, "big.example.com", false},
		{"server by IPv6", server, x509.ExtKeyUsageServerAuth, "fd00::5", false},
		{"server by another address", server, x509.ExtKeyUsageServerAuth, "10.0.0.6", true},
		{"server as a client", server, x509.ExtKeyUsageClientAuth, "", true},
		{"client", client, x509.ExtKeyUsageClientAuth, "", false},
		{"client as a server", client, x509.ExtKeyUsageServerAuth, "", true},
	} {
		_, err := tt.cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
		assert.Equal(t, tt.wantErr, err != nil, "%s: %v", tt.name, err)
	}
	for _, dir := range []string{dirs.server, dirs.client} {
		assert.True(t, deployParseCert(t, filepath.Join(dir, harness.CAFile)).Equal(ca), "%s/ca.pem is the CA", dir)
		_, err := tls.LoadX509KeyPair(filepath.Join(dir, harness.CertFile), filepath.Join(dir, harness.KeyFile))
		assert.NoError(t, err, "%s: key.pem matches cert.pem", dir)
	}
	for _, f := range []string{filepath.Join(dirs.ca, "ca-key.pem"), filepath.Join(dirs.server, harness.KeyFile),
		filepath.Join(dirs.server, "haproxy.pem"), filepath.Join(dirs.client, harness.KeyFile)} {
		fi, err := os.Stat(f)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "%s", f)
	}
	bundle, err := os.ReadFile(filepath.Join(dirs.server, "haproxy.pem"))
	require.NoError(t, err)
	_, err = tls.X509KeyPair(bundle, bundle)
	assert.NoError(t, err, "haproxy.pem holds the server's certificate and its key")
}

// deployParseCert reads the one PEM certificate of file.
func deployParseCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	block, _ := pem.Decode(b)
	require.NotNil(t, block, "%s holds no PEM block", file)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err, "%s", file)
	return c
}

// deployCopyDir copies the files of src into a new directory dst, owned
// by uid, as the README's `cp -r` and `chown -R` do.
func deployCopyDir(t *testing.T, src, dst string, uid int) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dst, 0o755))
	require.NoError(t, os.Chown(dst, uid, -1))
	ents, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		fi, err := e.Info()
		require.NoError(t, err)
		f := filepath.Join(dst, e.Name())
		require.NoError(t, os.WriteFile(f, b, fi.Mode().Perm()))
		require.NoError(t, os.Chown(f, uid, -1))
	}
}

// deployTLSClient returns an HTTP client that trusts the CA of dir, and
// presents dir's client certificate if withCert.
func deployTLSClient(t *testing.T, dir string, withCert bool) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(dir, harness.CAFile))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca))
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if withCert {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, harness.CertFile), filepath.Join(dir, harness.KeyFile))
		require.NoError(t, err)
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// deployDo makes one request with c and returns its status code.
func deployDo(ctx context.Context, c *http.Client, method, url string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, err
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}
