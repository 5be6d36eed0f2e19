//go:build e2e

package e2e

// The mutual TLS hop between ambassadors (issue 16): a client-side
// ambassador dials its backend with TLS, presenting its certificate, and
// a server-side ambassador's route listens with TLS, requiring a client
// certificate its CA signed. The ambassadors are the binary the run
// built, on the host and on 127.0.0.1, as the engines tests run it,
// without an engine (--docker=off: the routes are static), except in
// TestTLSContainers, where both sides are containers of this engine. The
// backends are containers (redis, the dataserver), reached on the bridge.
// The peers no one here wrote are Debian's stunnel4 and openssl, on the
// host. Certificates are issued by the test (tlsNewPKI); every helper's
// name starts with tls so that it cannot clash with the other files.
//
// This file: the shared helpers, the chain end to end (on the host, and
// as containers) and the interop with stunnel. tls_refused_test.go: the
// handshakes a listener refuses and the configurations refused at start;
// tls_rotation_test.go: certificates swapped under load.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
)

// The TLS metrics (see docs/metrics.md).
const (
	// tlsHandshakes counts handshakes by route, side (listen: a client's
	// to a TLS listener; backend: the ambassador's to a TLS backend) and
	// result: ok, resumed, or the reason of a failure.
	tlsHandshakes = "ambassadord_tls_handshakes_total"
	// tlsExpiry is each certificate's expiry (by file and kind).
	tlsExpiry = "ambassadord_tls_certificate_expiry_seconds"
	// tlsRejected counts connections a route closed without reaching a
	// backend, by reason; reason tls for those whose handshake failed.
	tlsRejected = "ambassadord_connections_rejected_total"
	// tlsReloads counts reloads of the TLS files, by result: ok or failed.
	tlsReloads = "ambassadord_tls_reloads_total"
)

// tlsServerName is the DNS name in the server-side ambassador's
// certificate, besides 127.0.0.1 and localhost: what a client side
// verifies with --tls-server-name when it dials an address the
// certificate does not name (a container's).
const tlsServerName = "server.ambassador.test"

// tlsClientID is the client certificate's DNS name: the identity a
// server side allows with --tls-allow.
const tlsClientID = "client.ambassador.test"

// tlsLoopback is where the host's ambassadors listen and what the server
// certificate names.
var tlsLoopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// tlsPKI is a test's certificates: one CA signs the server-side
// ambassador's certificate and the client side's, as a deployment has
// them; the wrong CA is for the refusals. Each certificate is written in
// a directory of its own (ca.pem, cert.pem, key.pem; ca.pem is the CA
// that signed it). Not safe for concurrent use: a test issues its
// certificates before it starts parallel subtests.
type tlsPKI struct {
	ca, wrongCA *harness.CA
	// server: for 127.0.0.1, localhost and tlsServerName, server usage.
	server *harness.Cert
	// client: CN client, DNS SAN tlsClientID, client usage.
	client *harness.Cert
	dirs   map[*harness.Cert]string
	root   string
}

// tlsNewPKI creates the CA and the server and client certificates, in a
// directory of the test.
func tlsNewPKI(t *testing.T) *tlsPKI {
	t.Helper()
	ca, err := harness.NewCA("ambassadord tls test CA")
	require.NoError(t, err)
	wrong, err := harness.NewCA("ambassadord tls wrong CA")
	require.NoError(t, err)
	p := &tlsPKI{ca: ca, wrongCA: wrong, dirs: map[*harness.Cert]string{}, root: t.TempDir()}
	p.server = p.issue(t, ca, "server", tlsServerSpec(tlsServerName))
	p.client = p.issue(t, ca, "client", harness.CertSpec{Name: "client", DNS: []string{tlsClientID}, Client: true})
	return p
}

// tlsServerSpec is a server-side ambassador's certificate named name.
func tlsServerSpec(name string) harness.CertSpec {
	return harness.CertSpec{Name: name, IPs: []netip.Addr{tlsLoopback}, DNS: []string{tlsServerName, "localhost"}, Server: true}
}

// issue issues a certificate with ca and writes it to the directory dir
// of the PKI's.
func (p *tlsPKI) issue(t *testing.T, ca *harness.CA, dir string, s harness.CertSpec) *harness.Cert {
	t.Helper()
	c, err := ca.Issue(s)
	require.NoError(t, err)
	path := filepath.Join(p.root, dir)
	require.NoError(t, c.WriteDir(path))
	p.dirs[c] = path
	return c
}

// file is the path of one of c's files (harness.CertFile, KeyFile, CAFile).
func (p *tlsPKI) file(c *harness.Cert, name string) string { return filepath.Join(p.dirs[c], name) }

// flags are an ambassador's --tls-cert, --tls-key and --tls-ca for c.
func (p *tlsPKI) flags(c *harness.Cert) []string {
	return []string{
		"--tls-cert", p.file(c, harness.CertFile),
		"--tls-key", p.file(c, harness.KeyFile),
		"--tls-ca", p.file(c, harness.CAFile),
	}
}

// tlsPorts are the ports tlsFreePort handed out in this run: a port is
// free only until someone listens on it, and the ambassadors of a test
// listen on several, taken before any of them starts.
var tlsPorts = struct {
	sync.Mutex
	given map[int]bool // guarded by the mutex
}{given: map[int]bool{}}

// tlsFreePort returns a TCP port free on 127.0.0.1 now that it has not
// returned before.
func tlsFreePort(t *testing.T) int {
	t.Helper()
	tlsPorts.Lock()
	defer tlsPorts.Unlock()
	for {
		if p := engineRestartFreePort(t); !tlsPorts.given[p] {
			tlsPorts.given[p] = true
			return p
		}
	}
}

// tlsAmbassador starts the binary under test on the host, without an
// engine, with args and the settings every test here shares, and waits
// until every route on ports listens. It is stopped (SIGTERM, which must
// make it exit 0) when the test ends.
func tlsAmbassador(t *testing.T, ctx context.Context, ports []int, args ...string) *engineRestartAmb {
	t.Helper()
	return tlsAmbassadorEnv(t, ctx, nil, ports, args...)
}

// tlsAmbassadorEnv is tlsAmbassador with the environment env (and
// nothing else: the test's own could hold AMBASSADORD_* or link
// variables, which would change the routes).
func tlsAmbassadorEnv(t *testing.T, ctx context.Context, env []string, ports []int, args ...string) *engineRestartAmb {
	t.Helper()
	adminPort := tlsFreePort(t)
	a := &engineRestartAmb{
		admin:  "http://" + enginesListen(adminPort),
		out:    &engineRestartOutput{},
		exited: make(chan struct{}),
	}
	if len(ports) > 0 {
		a.port, a.route = ports[0], enginesListen(ports[0])
	}
	args = append([]string{"--docker=off"}, args...)
	args = append(args,
		"--listen-address", tlsLoopback.String(),
		"--admin-address", enginesListen(adminPort),
		"--admin-socket", "",
		"--shutdown-grace", "1s",
		"--log-format", "json",
	)
	var listening []string
	for _, p := range ports {
		listening = append(listening, enginesListen(p))
	}
	a.startEnv(t, ctx, env, args, listening...)
	return a
}

// tlsMetrics scrapes an ambassador's metrics once.
func tlsMetrics(t *testing.T, ctx context.Context, a *engineRestartAmb) families {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f, err := scrape(ctx, a.admin+"/metrics")
	require.NoError(t, err)
	return f
}

// tlsSum is the sum of the counters and gauges of family name whose
// labels include labels.
func tlsSum(f families, name string, labels map[string]string) float64 {
	var n float64
	for _, m := range f.series(name, labels) {
		n += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return n
}

// tlsHandshakeResults renders the handshake counters of side, by result,
// for the logs.
func tlsHandshakeResults(f families, side string) string {
	by := map[string]float64{}
	for _, m := range f.series(tlsHandshakes, map[string]string{"side": side}) {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" {
				by[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	var parts []string
	for _, r := range []string{"ok", "resumed", "unknown_ca", "expired", "identity", "bad_certificate", "no_certificate", "protocol", "timeout", "other"} {
		if n, ok := by[r]; ok {
			parts = append(parts, fmt.Sprintf("%s=%v", r, n))
			delete(by, r)
		}
	}
	for r, n := range by {
		parts = append(parts, fmt.Sprintf("%s=%v (unexpected result)", r, n))
	}
	return strings.Join(parts, " ")
}

// tlsWaitHandshakes waits until the ambassador has counted at least n
// handshakes of side with result.
func tlsWaitHandshakes(t *testing.T, ctx context.Context, a *engineRestartAmb, side, result string, n float64) families {
	t.Helper()
	return waitMetrics(t, ctx, a.admin+"/metrics", func(f families) error {
		got := tlsSum(f, tlsHandshakes, map[string]string{"side": side, "result": result})
		if got < n {
			return fmt.Errorf("%s{side=%q,result=%q} = %v, want ≥ %v; by result: %s", tlsHandshakes, side, result, got, n, tlsHandshakeResults(f, side))
		}
		return nil
	})
}

// tlsClientConfig is a Go client's configuration for a TLS listener of
// the test's: it presents cert (none if nil), verifies the server against
// ca as serverName, and keeps no session, so that every handshake is a
// full one and shows the certificate the listener serves now.
func tlsClientConfig(t *testing.T, cert *harness.Cert, ca *harness.CA, serverName string) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS13}
	if cert != nil {
		kp, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		require.NoError(t, err)
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg
}

// tlsWhoami asks, through a fresh TLS connection to addr, who serves it,
// and returns the certificate the listener presented.
func tlsWhoami(ctx context.Context, addr string, cfg *tls.Config) (dataproto.Identity, *x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return dataproto.Identity{}, nil, err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	served := tc.ConnectionState().PeerCertificates[0]
	dl, _ := ctx.Deadline()
	tc.SetDeadline(dl)
	// In TLS 1.3 the client's handshake ends before the server has
	// checked the client's certificate: a refusal shows as an alert on
	// the first read.
	if _, err := tc.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
		return dataproto.Identity{}, served, fmt.Errorf("send header: %w", err)
	}
	if err := tc.CloseWrite(); err != nil {
		return dataproto.Identity{}, served, fmt.Errorf("half-close: %w", err)
	}
	id, err := dataproto.ReadIdentity(bufio.NewReader(tc))
	return id, served, err
}

// tlsCloseWriter is a connection that can half-close: a TCP connection,
// or a TLS one (close_notify).
type tlsCloseWriter interface {
	net.Conn
	CloseWrite() error
}

// tlsExchange makes one integrity exchange on c and checks every byte: it
// sends the header and up bytes, half-closes, and requires the digest of
// exactly what it sent, then exactly reply bytes of the stream of seed,
// then EOF. It returns the bytes it sent, header included.
func tlsExchange(c tlsCloseWriter, seed uint64, up, reply int) (int, error) {
	c.SetDeadline(time.Now().Add(readyTimeout))
	payload := make([]byte, up)
	if _, err := io.ReadFull(dataproto.Stream(^seed), payload); err != nil {
		return 0, err
	}
	msg := append(dataproto.Header{Mode: dataproto.ModeIntegrity, Seed: seed, Reply: uint64(reply)}.Encode(), payload...)
	if _, err := c.Write(msg); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return 0, fmt.Errorf("half-close: %w", err)
	}
	var sum [sha256.Size]byte
	if _, err := io.ReadFull(c, sum[:]); err != nil {
		return 0, fmt.Errorf("read the digest: %w", err)
	}
	if sum != sha256.Sum256(payload) {
		return 0, errors.New("the backend received other bytes than those sent")
	}
	want := make([]byte, reply)
	if _, err := io.ReadFull(dataproto.Stream(seed), want); err != nil {
		return 0, err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return 0, fmt.Errorf("read the reply: %w", err)
	}
	if !bytes.Equal(want, got) {
		return 0, fmt.Errorf("reply: %d bytes, not the %d bytes of the stream of seed %d", len(got), reply, seed)
	}
	return len(msg), nil
}

// tlsExchangeTCP makes tlsExchange through a plain connection to addr.
func tlsExchangeTCP(ctx context.Context, addr string, seed uint64, up, reply int) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return tlsExchange(c.(*net.TCPConn), seed, up, reply)
}

// tlsRedisCLI runs redis-cli on the host against 127.0.0.1:port and
// returns its trimmed output.
func tlsRedisCLI(t *testing.T, ctx context.Context, port int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	args = append([]string{"-h", tlsLoopback.String(), "-p", strconv.Itoa(port)}, args...)
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	require.NoError(t, err, "redis-cli %s:\n%s", strings.Join(args, " "), out)
	return strings.TrimSpace(string(out))
}

// tlsNeed skips the test when a host tool it drives is missing, unless
// an engine is required (CI), where .ci/setup installs them.
func tlsNeed(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(requireEngineEnv) == "1" {
				t.Fatalf("%s=1, but %s is not installed (.ci/setup installs it)", requireEngineEnv, tool)
			}
			t.Skipf("%s is not installed (.ci/setup installs it)", tool)
		}
	}
}

// TestTLSChain: the two-host pattern with the hop between the ambassadors
// in mutual TLS, both on this host: redis-cli → client-side ambassador
// (plain, --route P1:tls://127.0.0.1:P2, its client certificate) →
// server-side ambassador (--tls-listen all, --route P2:REDIS:6379) →
// redis. PING, SET and GET through it, and a PING through a client side
// configured by its environment alone (REDIS_PORT_P3_TCP=tls://...,
// AMBASSADORD_TLS_CERT, _KEY, _CA); a plain client on the server side's
// port gets nothing from redis; the handshakes are counted on both
// sides, and the client side's reconnects resume their sessions.
func TestTLSChain(t *testing.T) {
	t.Parallel()
	tlsNeed(t, "redis-cli")
	ctx := setup(t)
	pki := tlsNewPKI(t)
	redis := startRedis(t, ctx)
	p1, p2 := tlsFreePort(t), tlsFreePort(t)
	server := tlsAmbassador(t, ctx, []int{p2}, append(pki.flags(pki.server),
		"--tls-listen", "all",
		"--route", fmt.Sprintf("%d:%s", p2, addr(redis, 6379)))...)
	client := tlsAmbassador(t, ctx, []int{p1}, append(pki.flags(pki.client),
		"--route", fmt.Sprintf("%d:tls://%s", p1, enginesListen(p2)))...)
	// Another client side, configured by its environment alone: a
	// classic link variable with ambassadord's tls:// extension.
	p3 := tlsFreePort(t)
	byEnv := tlsAmbassadorEnv(t, ctx, []string{
		fmt.Sprintf("REDIS_PORT_%d_TCP=tls://%s", p3, enginesListen(p2)),
		"AMBASSADORD_TLS_CERT=" + pki.file(pki.client, harness.CertFile),
		"AMBASSADORD_TLS_KEY=" + pki.file(pki.client, harness.KeyFile),
		"AMBASSADORD_TLS_CA=" + pki.file(pki.client, harness.CAFile),
	}, []int{p3})

	assert.Equal(t, "PONG", tlsRedisCLI(t, ctx, p3, "PING"), "through the client side configured by its environment")
	assert.Equal(t, "PONG", tlsRedisCLI(t, ctx, p1, "PING"))
	assert.Equal(t, "OK", tlsRedisCLI(t, ctx, p1, "SET", "tls-key", "through the mutual TLS hop"))
	assert.Equal(t, "through the mutual TLS hop", tlsRedisCLI(t, ctx, p1, "GET", "tls-key"))
	const more = 10 // reconnects: the client side resumes its session
	for range more {
		assert.Equal(t, "PONG", tlsRedisCLI(t, ctx, p1, "PING"))
	}
	conns := 3 + more + 1 // and the one through byEnv

	// A plain client on the TLS port: refused before a byte reaches redis.
	err := pingRESP(ctx, enginesListen(p2))
	assert.Error(t, err, "a plain PING to the server side's TLS port")
	t.Logf("a plain PING to the server side's TLS port: %v", err)

	fc := waitMetrics(t, ctx, client.admin+"/metrics", func(f families) error {
		n := tlsSum(f, tlsHandshakes, map[string]string{"side": "backend", "result": "ok"}) +
			tlsSum(f, tlsHandshakes, map[string]string{"side": "backend", "result": "resumed"})
		if n != float64(conns-1) {
			return fmt.Errorf("client side's handshakes with the server side: %v, want %d; %s", n, conns-1, tlsHandshakeResults(f, "backend"))
		}
		return nil
	})
	tlsWaitHandshakes(t, ctx, byEnv, "backend", "ok", 1)
	fs := waitMetrics(t, ctx, server.admin+"/metrics", func(f families) error {
		ok := tlsSum(f, tlsHandshakes, map[string]string{"side": "listen", "result": "ok"}) +
			tlsSum(f, tlsHandshakes, map[string]string{"side": "listen", "result": "resumed"})
		rejected := tlsSum(f, tlsRejected, map[string]string{"reason": "tls"})
		if ok != float64(conns) || rejected != 1 {
			return fmt.Errorf("server side: handshakes ok or resumed %v, want %d; rejected for tls %v, want 1 (the plain PING); %s",
				ok, conns, rejected, tlsHandshakeResults(f, "listen"))
		}
		return nil
	})
	resumed := tlsSum(fc, tlsHandshakes, map[string]string{"side": "backend", "result": "resumed"})
	assert.Positive(t, resumed, "handshakes the client side resumed, of %d", conns)
	t.Logf("%d connections through the hop; client side (backend): %s; server side (listen): %s",
		conns, tlsHandshakeResults(fc, "backend"), tlsHandshakeResults(fs, "listen"))
}

// TestTLSContainers: the same chain as containers of this engine, each
// side's certificates mounted read-only: the server-side ambassador,
// labelled ambassador.tls=true with ambassador.target=redis, listens with
// TLS on its own label's route; the client-side ambassador follows it by
// its label ambassador.target=<server side> and dials it with TLS because
// the server side is labelled so, verifying it as tlsServerName
// (--tls-server-name: the certificate cannot name a container's address,
// known only once it runs). A consumer linked to the client side PINGs,
// SETs and GETs.
func TestTLSContainers(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	pki := tlsNewPKI(t)
	redis := startRedis(t, ctx)
	const mount = "/tls"
	inside := []string{
		"--tls-cert", mount + "/" + harness.CertFile,
		"--tls-key", mount + "/" + harness.KeyFile,
		"--tls-ca", mount + "/" + harness.CAFile,
	}
	// The client side counts the server side only once it is healthy:
	// a healthcheck of 250 ms rather than the image's 10 s.
	health := *fastHealth
	health.Test = []string{"CMD", "/ambassadord", "healthcheck"}
	server := startFollower(t, ctx, harness.Spec{
		Name:        "server",
		Labels:      map[string]string{labelTarget: redis.Name, labelPorts: "6379", tlsLabel: "true"},
		Binds:       []string{pki.dirs[pki.server] + ":" + mount + ":ro"},
		Cmd:         inside,
		Healthcheck: &health,
	})
	client := startFollower(t, ctx, harness.Spec{
		Name:   "client",
		Labels: map[string]string{labelTarget: server.Name, labelPorts: "6379"},
		Binds:  []string{pki.dirs[pki.client] + ":" + mount + ":ro"},
		Cmd:    append(append(slices.Clone(inside), publicAdmin...), "--tls-server-name", tlsServerName),
	})
	admin := "http://" + addr(client, ambAdminPort)
	took := waitRouteServes(t, ctx, admin, "the client side", 6379, readyTimeout, server)
	t.Logf("the client side served the server side %s after it listened (once the server side was healthy)", took.Round(time.Millisecond))

	assert.Equal(t, "PONG", redisCLI(t, ctx, client, "ping"))
	assert.Equal(t, "OK", redisCLI(t, ctx, client, "set", "tls-key", "between two ambassador containers"))
	assert.Equal(t, "between two ambassador containers", redisCLI(t, ctx, client, "get", "tls-key"))

	// The server side's port speaks TLS only: a plain PING gets nothing.
	err := pingRESP(ctx, addr(server, 6379))
	assert.Error(t, err, "a plain PING to the server-side container's port")
	t.Logf("a plain PING to the server-side container's port: %v", err)

	// Each side's status says TLS where it is.
	var cst, sst tlsStatus
	require.NoError(t, fetchJSON(ctx, admin+"/routes", &cst))
	require.NoError(t, tlsStatusIn(t, ctx, server, &sst))
	require.Len(t, cst.Routes, 1)
	require.Len(t, sst.Routes, 1)
	assert.False(t, cst.Routes[0].TLS, "the client side's route listens with TLS")
	require.Len(t, cst.Routes[0].Backends, 1)
	assert.True(t, cst.Routes[0].Backends[0].TLS, "the client side's backend (the server side) is dialled with TLS")
	assert.True(t, sst.Routes[0].TLS, "the server side's route listens with TLS")
	require.Len(t, sst.Routes[0].Backends, 1)
	assert.False(t, sst.Routes[0].Backends[0].TLS, "the server side's backend (redis) is dialled with TLS")
	t.Logf("client side's route: %+v; server side's: %+v", cst.Routes[0], sst.Routes[0])
	f, err := scrape(ctx, admin+"/metrics")
	require.NoError(t, err)
	t.Logf("the client side's handshakes with the server side: %s", tlsHandshakeResults(f, "backend"))
}

// tlsLabel on a backend has it dialled with TLS; on an ambassador, the
// routes of its own label and links listen with TLS.
const tlsLabel = "ambassador.tls"

// tlsStatus is the part of GET /routes the TLS tests read.
type tlsStatus struct {
	Routes []struct {
		Listen   string `json:"listen"`
		TLS      bool   `json:"tls"`
		Backends []struct {
			Addr string `json:"addr"`
			TLS  bool   `json:"tls"`
		} `json:"backends"`
	} `json:"routes"`
}

// tlsStatusIn reads the status of an ambassador container whose admin
// endpoint is on its loopback, with `ambassadord status --json` in it.
func tlsStatusIn(t *testing.T, ctx context.Context, c *harness.Container, v any) error {
	t.Helper()
	stdout, stderr, code := dockerExec(t, ctx, c, "/ambassadord", "status", "--json")
	if code != 0 {
		return fmt.Errorf("ambassadord status --json exited %d: %s", code, stderr)
	}
	return json.Unmarshal([]byte(stdout), v)
}

// tlsStunnel is stunnel4 running on the host, in the foreground.
type tlsStunnel struct {
	out    *engineRestartOutput
	cmd    *exec.Cmd
	exited chan struct{}
}

// tlsStartStunnel runs stunnel4 with the service conf (one [section]),
// logging at info, and waits until it accepts. It is stopped when the
// test ends.
func tlsStartStunnel(t *testing.T, ctx context.Context, conf string) *tlsStunnel {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stunnel.conf")
	conf = "foreground = yes\npid =\ndebug = info\n" + conf
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	t.Logf("$ cat %s\n%s$ stunnel4 %s", path, conf, path)
	s := &tlsStunnel{out: &engineRestartOutput{}, cmd: exec.Command("stunnel4", path), exited: make(chan struct{})}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	require.NoError(t, s.cmd.Start())
	go s.wait()
	t.Cleanup(func() {
		s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("stunnel's log:\n%s", s.out)
		}
	})
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.Poll(ctx, func(context.Context) error {
		select {
		case <-s.exited:
			return harness.Permanent(errors.New("stunnel exited"))
		default:
		}
		if !strings.Contains(s.out.String(), "Accepting new connections") {
			return errors.New("not accepting yet")
		}
		return nil
	}), "stunnel's log:\n%s", s.out)
	return s
}

// wait reaps stunnel; a named function so that stack dumps say what the
// goroutine is.
func (s *tlsStunnel) wait() {
	s.cmd.Wait()
	close(s.exited)
}

// tlsStunnelExchanges makes n integrity exchanges through addr, each
// with its own seed and sizes, and returns the bytes sent in all.
func tlsStunnelExchanges(t *testing.T, ctx context.Context, addr string, n int) int {
	t.Helper()
	sent := 0
	for i := range n {
		up, reply := 1<<20+i*1000, 2<<20-i*777
		s, err := tlsExchangeTCP(ctx, addr, uint64(1000+i), up, reply)
		require.NoError(t, err, "exchange %d through %s", i, addr)
		sent += s
	}
	return sent
}

// TestTLSStunnel: interop with a TLS peer no one here wrote, both ways.
//
//   - in front: stunnel4 as the TLS client (client = yes, its own client
//     certificate, verifyChain and checkIP on the ambassador's) in front
//     of a server-side ambassador listening with TLS, which forwards to
//     a dataserver; with TLS 1.3, and with TLS 1.2 where the ambassador
//     opts in (--tls-min-version 1.2) and stunnel offers no more;
//   - behind: a client-side ambassador dialling tls://127.0.0.1:PORT,
//     where stunnel4 is the TLS server (verifyChain and requireCert: it
//     checks the ambassador's client certificate) in front of the
//     dataserver.
//
// Every byte is checked both ways (a digest of what was sent, the reply
// stream byte for byte), the dataserver counts exactly the connections
// and bytes sent, and stunnel's log says which version it negotiated.
func TestTLSStunnel(t *testing.T) {
	t.Parallel()
	tlsNeed(t, "stunnel4")
	ctx := setup(t)
	pki := tlsNewPKI(t)
	const exchanges = 3

	for _, tt := range []struct {
		name    string
		version string   // what stunnel negotiates
		stunnel string   // more of stunnel's service
		amb     []string // more of the ambassador's flags
	}{
		{"in front", "TLSv1.3", "", nil},
		{"in front, TLS 1.2 by opt-in", "TLSv1.2", "sslVersionMax = TLSv1.2\n", []string{"--tls-min-version", "1.2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
			p2, ps := tlsFreePort(t), tlsFreePort(t)
			server := tlsAmbassador(t, ctx, []int{p2}, append(append(pki.flags(pki.server), tt.amb...),
				"--tls-listen", strconv.Itoa(p2),
				"--route", fmt.Sprintf("%d:%s", p2, addr(data, dataPort)))...)
			st := tlsStartStunnel(t, ctx, fmt.Sprintf(`[front]
client = yes
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkIP = %s
%s`, enginesListen(ps), enginesListen(p2), pki.file(pki.client, harness.CertFile), pki.file(pki.client, harness.KeyFile),
				pki.file(pki.client, harness.CAFile), tlsLoopback, tt.stunnel))
			sent := tlsStunnelExchanges(t, ctx, enginesListen(ps), exchanges)
			engineRestartCheckStats(t, ctx, data, exchanges, sent)
			negotiated := waitLogLine(t, ctx, st.out.String, " ciphersuite: ")
			assert.Contains(t, negotiated, tt.version, "what stunnel negotiated; its log:\n%s", st.out)
			f := tlsWaitHandshakes(t, ctx, server, "listen", "ok", 1)
			t.Logf("stunnel → ambassador: %d exchanges, %d bytes up checked by digest and the replies byte for byte; stunnel: %q; the ambassador's listen handshakes: %s",
				exchanges, sent, negotiated, tlsHandshakeResults(f, "listen"))
		})
	}

	t.Run("behind", func(t *testing.T) {
		t.Parallel()
		data := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
		p1, pt := tlsFreePort(t), tlsFreePort(t)
		st := tlsStartStunnel(t, ctx, fmt.Sprintf(`[behind]
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
requireCert = yes
`, enginesListen(pt), addr(data, dataPort), pki.file(pki.server, harness.CertFile), pki.file(pki.server, harness.KeyFile),
			pki.file(pki.server, harness.CAFile)))
		client := tlsAmbassador(t, ctx, []int{p1}, append(pki.flags(pki.client),
			"--route", fmt.Sprintf("%d:tls://%s", p1, enginesListen(pt)))...)
		sent := tlsStunnelExchanges(t, ctx, enginesListen(p1), exchanges)
		engineRestartCheckStats(t, ctx, data, exchanges, sent)
		accepted := waitLogLine(t, ctx, st.out.String, "Certificate accepted at depth=0")
		assert.Contains(t, accepted, "CN=client", "stunnel verified the ambassador's client certificate; its log:\n%s", st.out)
		negotiated := waitLogLine(t, ctx, st.out.String, " ciphersuite: ")
		assert.Contains(t, negotiated, "TLSv1.3", "what stunnel negotiated; its log:\n%s", st.out)
		f := tlsWaitHandshakes(t, ctx, client, "backend", "ok", 1)
		t.Logf("ambassador → stunnel: %d exchanges, %d bytes up checked by digest and the replies byte for byte; stunnel: %q, %q; the ambassador's backend handshakes: %s",
			exchanges, sent, accepted, negotiated, tlsHandshakeResults(f, "backend"))
	})
}
