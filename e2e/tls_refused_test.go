//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// tlsSClientWait is how long an s_client is given to be closed by the
// listener that refuses it; one the listener accepted is closed by the
// test at that deadline.
const tlsSClientWait = 5 * time.Second

// tlsSClient runs `openssl s_client` against addr with args, its stdin
// kept open, and returns its output and whether it ended by itself (the
// listener closed the connection) within tlsSClientWait.
func tlsSClient(t *testing.T, ctx context.Context, addr string, args ...string) (out string, ended bool) {
	t.Helper()
	args = append([]string{"s_client", "-connect", addr, "-nocommands"}, args...)
	t.Logf("$ openssl %s", strings.Join(args, " "))
	// Killed at the deadline: a listener that accepted it keeps it open.
	sctx, cancel := context.WithTimeout(ctx, tlsSClientWait)
	defer cancel()
	cmd := exec.CommandContext(sctx, "openssl", args...)
	stdin, err := cmd.StdinPipe() // open until it ends: s_client ends at stdin's EOF
	require.NoError(t, err)
	defer stdin.Close()
	var b engineRestartOutput
	cmd.Stdout, cmd.Stderr = &b, &b
	require.NoError(t, cmd.Start())
	cmd.Wait()
	ended = sctx.Err() == nil
	return b.String(), ended
}

// tlsAlert is the line of an s_client's output that says why it ended:
// the alert it received, or its error.
func tlsAlert(out string) string {
	for _, want := range []string{"alert", "error"} {
		if line := logLine(out, want); line != "" {
			return line
		}
	}
	return "(no alert nor error)"
}

// TestTLSRefused: a server-side ambassador's TLS listener, allowing the
// client identities tlsClientID (a DNS SAN), cn-only (a CN) and
// spiffe://test/client (a URI SAN, in a certificate openssl issued with a
// CA of its own, in the --tls-client-ca bundle beside the test's CA),
// refuses with `openssl s_client`: no client certificate, a certificate
// of another CA, an expired one, one of the right CA naming another
// identity (by DNS SAN, by URI SAN), and TLS 1.2 (the default minimum is
// 1.3). Each connection is closed by the listener, none reaches the
// backend (the dataserver counts no connection), each is counted by its
// reason, and rejected. Then the allowed identities pass (Go clients):
// the backend counts them, and only them.
func TestTLSRefused(t *testing.T) {
	t.Parallel()
	tlsNeed(t, "openssl")
	ctx := setup(t)
	pki := tlsNewPKI(t)
	now := time.Now()
	wrongCA := pki.issue(t, pki.wrongCA, "wrong-ca", harness.CertSpec{Name: "client", DNS: []string{tlsClientID}, Client: true})
	expired := pki.issue(t, pki.ca, "expired", harness.CertSpec{Name: "client", DNS: []string{tlsClientID}, Client: true,
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
	intruder := pki.issue(t, pki.ca, "intruder", harness.CertSpec{Name: "intruder", DNS: []string{"intruder.ambassador.test"}, Client: true})
	cnOnly := pki.issue(t, pki.ca, "cn-only", harness.CertSpec{Name: "cn-only", Client: true})
	spiffe := tlsNewOpenSSLCA(t, ctx, "spiffe test CA")
	workload := spiffe.issue(t, ctx, "client", "spiffe://test/client")
	other := spiffe.issue(t, ctx, "other", "spiffe://test/other")
	clientCAs := filepath.Join(t.TempDir(), "client-ca.pem")
	bundle, err := os.ReadFile(spiffe.ca)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(clientCAs, append(slices.Clone(pki.ca.PEM), bundle...), 0o644))

	data := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
	port := tlsFreePort(t)
	server := tlsAmbassador(t, ctx, []int{port}, append(pki.flags(pki.server),
		"--tls-client-ca", clientCAs,
		"--tls-listen", "all",
		"--tls-allow", tlsClientID+",cn-only,spiffe://test/client",
		"--route", fmt.Sprintf("%d:%s", port, addr(data, dataPort)))...)
	listen := enginesListen(port)
	ca := pki.file(pki.server, harness.CAFile)
	withCert := func(c *harness.Cert) []string {
		return []string{"-cert", pki.file(c, harness.CertFile), "-key", pki.file(c, harness.KeyFile)}
	}

	counts := map[string]float64{} // the listen handshakes by result, so far
	for _, tt := range []struct {
		name   string
		args   []string
		reason string // the handshake's result in the metrics
	}{
		{"no client certificate", nil, "no_certificate"},
		{"certificate of another CA", withCert(wrongCA), "unknown_ca"},
		{"expired certificate", withCert(expired), "expired"},
		{"DNS identity not allowed", withCert(intruder), "identity"},
		{"URI identity not allowed", []string{"-cert", other.cert, "-key", other.key}, "identity"},
		{"TLS 1.2", append(withCert(pki.client), "-tls1_2"), "protocol"},
	} {
		// In sequence: each one's counter is checked on its own.
		out, ended := tlsSClient(t, ctx, listen, append([]string{"-CAfile", ca, "-verify_return_error"}, tt.args...)...)
		assert.True(t, ended, "%s: the listener did not close the connection within %s; s_client's output:\n%s", tt.name, tlsSClientWait, out)
		t.Logf("%s: s_client closed by the listener: %s", tt.name, tlsAlert(out))
		counts[tt.reason]++
		server.waitTLS(t, ctx, tt.name, map[string]string{"side": "listen", "result": tt.reason}, counts[tt.reason])
	}
	// Counted as rejected just after its handshake's result: wait for it.
	f := waitMetrics(t, ctx, server.admin+"/metrics", func(f families) error {
		if got := tlsSum(f, tlsRejected, map[string]string{"reason": "tls"}); got != 6 {
			return fmt.Errorf("connections rejected for TLS: %v, want 6", got)
		}
		return nil
	})
	assert.Zero(t, tlsSum(f, tlsHandshakes, map[string]string{"side": "listen", "result": "ok"}), "handshakes that succeeded")
	st, err := stats(ctx, data)
	require.NoError(t, err)
	assert.Zero(t, st.Conns, "connections that reached the backend from refused handshakes")
	t.Logf("refused: listen handshakes %s; rejected for tls: %v; the backend accepted %d connections",
		tlsHandshakeResults(f, "listen"), tlsSum(f, tlsRejected, map[string]string{"reason": "tls"}), st.Conns)

	// The allowed identities pass, and reach the backend.
	byURI, err := tls.LoadX509KeyPair(workload.cert, workload.key)
	require.NoError(t, err)
	uriConfig := tlsClientConfig(t, nil, pki.ca, tlsLoopback.String())
	uriConfig.Certificates = []tls.Certificate{byURI}
	for _, c := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"DNS SAN " + tlsClientID, tlsClientConfig(t, pki.client, pki.ca, tlsLoopback.String())},
		{"CN cn-only", tlsClientConfig(t, cnOnly, pki.ca, tlsLoopback.String())},
		{"URI SAN spiffe://test/client", uriConfig},
	} {
		id, _, err := tlsWhoami(ctx, listen, c.cfg)
		require.NoError(t, err, "whoami as %s", c.name)
		assert.Equal(t, "data", id.Name)
	}
	engineRestartCheckStats(t, ctx, data, 3, 3*dataproto.HeaderSize)
	f = tlsMetrics(t, ctx, server)
	t.Logf("then allowed (by DNS SAN, CN, URI SAN): listen handshakes %s", tlsHandshakeResults(f, "listen"))
}

// tlsOpenSSLCA is a CA made by openssl, for what harness.CertSpec cannot
// say (URI SANs): its certificate and key files, in its own directory.
type tlsOpenSSLCA struct {
	dir, ca, key string
}

// tlsOpenSSLLeaf is the files of a certificate tlsOpenSSLCA issued.
type tlsOpenSSLLeaf struct{ cert, key string }

// tlsNewOpenSSLCA makes a CA with openssl (ECDSA P-256, a day).
func tlsNewOpenSSLCA(t *testing.T, ctx context.Context, name string) *tlsOpenSSLCA {
	t.Helper()
	ca := &tlsOpenSSLCA{dir: t.TempDir()}
	ca.ca, ca.key = filepath.Join(ca.dir, "ca.pem"), filepath.Join(ca.dir, "ca.key")
	tlsOpenSSL(t, ctx, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", ca.key, "-out", ca.ca, "-subj", "/CN="+name, "-days", "1")
	return ca
}

// issue issues, with openssl, a client certificate named name whose only
// SAN is the URI uri.
func (ca *tlsOpenSSLCA) issue(t *testing.T, ctx context.Context, name, uri string) tlsOpenSSLLeaf {
	t.Helper()
	l := tlsOpenSSLLeaf{cert: filepath.Join(ca.dir, name+".pem"), key: filepath.Join(ca.dir, name+".key")}
	csr, ext := filepath.Join(ca.dir, name+".csr"), filepath.Join(ca.dir, name+".ext")
	require.NoError(t, os.WriteFile(ext, []byte("subjectAltName=URI:"+uri+"\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"), 0o600))
	tlsOpenSSL(t, ctx, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", l.key, "-out", csr, "-subj", "/CN="+name)
	tlsOpenSSL(t, ctx, "x509", "-req", "-in", csr, "-CA", ca.ca, "-CAkey", ca.key, "-CAcreateserial",
		"-out", l.cert, "-days", "1", "-extfile", ext)
	return l
}

// tlsOpenSSL runs openssl with args and requires it to succeed.
func tlsOpenSSL(t *testing.T, ctx context.Context, args ...string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "openssl", args...).CombinedOutput()
	require.NoError(t, err, "openssl %s:\n%s", strings.Join(args, " "), out)
}

// waitTLS waits until the sum of the handshake counters with labels is n.
func (a *engineRestartAmb) waitTLS(t *testing.T, ctx context.Context, what string, labels map[string]string, n float64) {
	t.Helper()
	waitMetrics(t, ctx, a.admin+"/metrics", func(f families) error {
		if got := tlsSum(f, tlsHandshakes, labels); got != n {
			return fmt.Errorf("%s: %s%v = %v, want %v; listen: %s; backend: %s", what, tlsHandshakes, labels, got, n,
				tlsHandshakeResults(f, "listen"), tlsHandshakeResults(f, "backend"))
		}
		return nil
	})
}

// TestTLSStartRefused: a TLS configuration that cannot work is refused at
// start, before any route listens, with a non-zero exit and an error that
// names the file and says what to do: a key that does not match the
// certificate, an empty CA file, an expired certificate, a TLS listener
// without a certificate and key, or without a CA for its clients.
func TestTLSStartRefused(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	pki := tlsNewPKI(t)
	now := time.Now()
	expired := pki.issue(t, pki.ca, "expired", harness.CertSpec{Name: tlsServerName, IPs: []netip.Addr{tlsLoopback}, Server: true,
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
	empty := filepath.Join(t.TempDir(), "empty-ca.pem")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	cert, key, ca := pki.file(pki.server, harness.CertFile), pki.file(pki.server, harness.KeyFile), pki.file(pki.server, harness.CAFile)
	otherKey := pki.file(pki.client, harness.KeyFile)

	for _, tt := range []struct {
		name string
		args []string
		file string // the file the error names; "" if none
		fix  string // a regexp the error must match
	}{
		{"key not matching the certificate", []string{"--tls-cert", cert, "--tls-key", otherKey, "--tls-ca", ca}, otherKey, `(?i)match`},
		{"empty CA file", []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", empty}, empty, `(?i)empty|no certificate`},
		{"expired certificate", []string{"--tls-cert", pki.file(expired, harness.CertFile), "--tls-key", pki.file(expired, harness.KeyFile), "--tls-ca", ca},
			pki.file(expired, harness.CertFile), `(?i)expired`},
		{"TLS listener without a certificate", []string{"--tls-ca", ca}, "", `--tls-cert`},
		{"TLS listener without a client CA", []string{"--tls-cert", cert, "--tls-key", key}, "", `--tls-(client-)?ca`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := tlsFreePort(t)
			args := append([]string{"--docker=off", "--tls-listen", "all", "--route", fmt.Sprintf("%d:127.0.0.1:%d", port, dataPort)}, tt.args...)
			out, err := enginesRefusedRun(t, ctx, args...)
			t.Logf("$ ambassadord %s\n%s", strings.Join(args, " "), out)
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "ambassadord started")
			msg := enginesError(out)
			if tt.file != "" {
				assert.Contains(t, msg, tt.file, "the error names the file")
			}
			assert.Regexp(t, regexp.MustCompile(tt.fix), msg, "the error says what to fix")
			assert.NotContains(t, out, `"msg":"route listening"`, "a route listened before the refusal")
		})
	}
}

// TestTLSServerRefused: a client-side ambassador refuses a TLS backend
// it cannot verify, whose server is stunnel4 (requiring the ambassador's
// client certificate): a certificate that does not name the dialled host
// (tls://localhost:PORT, the certificate naming 127.0.0.1 and
// tlsServerName only), an expired one, and one of a CA the ambassador
// does not trust (another client side, whose --tls-ca is another CA's).
// Each connection through such a route fails, no byte reaches the
// dataserver behind stunnel, and the client side counts the backend
// handshake's failure by its reason and logs it; the route to the same
// stunnel by its address serves.
func TestTLSServerRefused(t *testing.T) {
	t.Parallel()
	tlsNeed(t, "stunnel4")
	ctx := setup(t)
	pki := tlsNewPKI(t)
	now := time.Now()
	named := pki.issue(t, pki.ca, "named", harness.CertSpec{Name: tlsServerName, IPs: []netip.Addr{tlsLoopback}, DNS: []string{tlsServerName}, Server: true})
	expired := pki.issue(t, pki.ca, "expired", harness.CertSpec{Name: tlsServerName, IPs: []netip.Addr{tlsLoopback}, DNS: []string{tlsServerName}, Server: true,
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
	strange := pki.issue(t, pki.wrongCA, "strange", harness.CertSpec{Name: "client", DNS: []string{tlsClientID}, Client: true})
	data := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
	stunnel := func(name string, c *harness.Cert) int {
		port := tlsFreePort(t)
		tlsStartStunnel(t, ctx, fmt.Sprintf("[%s]\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\nrequireCert = yes\n",
			name, enginesListen(port), addr(data, dataPort), pki.file(c, harness.CertFile), pki.file(c, harness.KeyFile), pki.file(pki.client, harness.CAFile)))
		return port
	}
	good, old := stunnel("named", named), stunnel("expired", expired)

	byIP, byName, toExpired, untrusted := tlsFreePort(t), tlsFreePort(t), tlsFreePort(t), tlsFreePort(t)
	client := tlsAmbassador(t, ctx, []int{byIP, byName, toExpired}, append(pki.flags(pki.client),
		"--route", fmt.Sprintf("%d:tls://%s", byIP, enginesListen(good)),
		"--route", fmt.Sprintf("%d:tls://localhost:%d", byName, good),
		"--route", fmt.Sprintf("%d:tls://%s", toExpired, enginesListen(old)))...)
	// Another client side trusting another CA only.
	distrust := tlsAmbassador(t, ctx, []int{untrusted},
		"--tls-cert", pki.file(pki.client, harness.CertFile), "--tls-key", pki.file(pki.client, harness.KeyFile),
		"--tls-ca", pki.file(strange, harness.CAFile),
		"--route", fmt.Sprintf("%d:tls://%s", untrusted, enginesListen(good)))

	id, err := enginesWhoami(ctx, enginesListen(byIP))
	require.NoError(t, err, "the route to stunnel by its address")
	require.Equal(t, "data", id.Name)
	// The refusals in parallel, each on its route; then the backend's
	// count, once they are all done.
	t.Run("refused", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			amb    *engineRestartAmb
			port   int
			reason string
			fix    string // a regexp the logged error must match
		}{
			{"the certificate does not name localhost", client, byName, "identity", `--tls-server-name`},
			{"expired certificate", client, toExpired, "expired", `expired`},
			{"certificate of a CA not trusted", distrust, untrusted, "unknown_ca", regexp.QuoteMeta(pki.file(strange, harness.CAFile))},
		} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				_, err := enginesWhoami(ctx, enginesListen(tt.port))
				took := time.Since(start)
				require.Error(t, err, "a connection through route %d", tt.port)
				f := waitMetrics(t, ctx, tt.amb.admin+"/metrics", func(f families) error {
					labels := map[string]string{"side": "backend", "route": strconv.Itoa(tt.port), "result": tt.reason}
					if n := tlsSum(f, tlsHandshakes, labels); n < 1 {
						return fmt.Errorf("%s%v = %v; backend: %s", tlsHandshakes, labels, n, tlsHandshakeResults(f, "backend"))
					}
					return nil
				})
				logged := waitLogLine(t, ctx, tt.amb.out.String, `"route":"`+strconv.Itoa(tt.port)+`"`, "tls handshake")
				assert.Regexp(t, tt.fix, logged, "the ambassador's log of route %d's failed handshake; its log:\n%s", tt.port, tt.amb.out)
				t.Logf("the connection failed (%s) after %s; backend handshakes on route %d: %v %s; logged: %s",
					load.How(err), took.Round(time.Millisecond), tt.port,
					tlsSum(f, tlsHandshakes, map[string]string{"side": "backend", "route": strconv.Itoa(tt.port), "result": tt.reason}), tt.reason, logged)
			})
		}
	})
	engineRestartCheckStats(t, ctx, data, 1, dataproto.HeaderSize)
}
