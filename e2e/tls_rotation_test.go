//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// tlsReloadWithin bounds the time from a certificate's change on disk to
// the first new handshake serving it: the files are polled every second;
// the rest is slack for a machine the whole suite shares.
const tlsReloadWithin = 3 * time.Second

// tlsSecret is a directory laid out as Kubernetes mounts a secret (and
// compose, some setups): each version of the files in a directory of its
// own, ..data a symlink to the current one, and each file a symlink
// through ..data. A new version is published by renaming a new symlink
// over ..data: the files change all at once.
type tlsSecret struct {
	dir      string
	versions int
}

// tlsNewSecret lays out a secret in a new directory with c's files.
func tlsNewSecret(t *testing.T, c *harness.Cert) *tlsSecret {
	t.Helper()
	s := &tlsSecret{dir: filepath.Join(t.TempDir(), "secret")}
	s.publish(t, c)
	for _, f := range []string{harness.CAFile, harness.CertFile, harness.KeyFile} {
		require.NoError(t, os.Symlink(filepath.Join("..data", f), filepath.Join(s.dir, f)))
	}
	return s
}

// publish writes c into a new version and swaps ..data to it.
func (s *tlsSecret) publish(t *testing.T, c *harness.Cert) {
	t.Helper()
	s.versions++
	version := fmt.Sprintf("..v%d", s.versions)
	require.NoError(t, c.WriteDir(filepath.Join(s.dir, version)))
	tmp := filepath.Join(s.dir, "..data_tmp")
	require.NoError(t, os.Symlink(version, tmp))
	require.NoError(t, os.Rename(tmp, filepath.Join(s.dir, "..data")))
}

// file is the path the ambassador is given for one of the files.
func (s *tlsSecret) file(name string) string { return filepath.Join(s.dir, name) }

// writeInPlace rewrites the current version's file name with data, as an
// editor or a configuration tool does: truncated, then written.
func (s *tlsSecret) writeInPlace(t *testing.T, name string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(s.dir, "..data", name), data, 0o600))
}

// TestTLSRotation: the server-side ambassador's certificate and key are
// replaced while a load of fresh connections (a new one every 5 ms, each
// a new TLS connection between the ambassadors) runs through the hop and
// an established connection keeps echoing:
//
//  1. in place: the current files rewritten with certificate 2's;
//  2. by a ..data symlink swap to a new version with certificate 3;
//  3. a key that does not match the certificate, written in place, and
//  4. an expired certificate with its key, by a ..data swap: each is
//     refused with a warning that names the file and the fault, and
//     certificate 3 is still served.
//
// After each change new handshakes (a Go client's, without a session)
// see the certificate in use within tlsReloadWithin; no connection of the
// load fails; the established connection echoes after each change; the
// expiry gauge follows the certificate in use. The load's connections
// resume the client side's session, which outlives the server's
// certificate (a resumed handshake sends none): they show that a reload
// breaks no session, the Go client's full handshakes which certificate
// is served.
func TestTLSRotation(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	pki := tlsNewPKI(t)
	// Distinct names and expiries, whole seconds, as X.509 keeps them.
	base := time.Now().Truncate(time.Second).Add(24 * time.Hour)
	certs := make([]*harness.Cert, 4)
	for i := range certs {
		s := tlsServerSpec(fmt.Sprintf("server-%d", i+1))
		s.NotAfter = base.Add(time.Duration(i) * time.Hour)
		certs[i] = pki.issue(t, pki.ca, "server-"+strconv.Itoa(i+1), s)
	}
	secret := tlsNewSecret(t, certs[0])

	data := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
	p1, p2 := tlsFreePort(t), tlsFreePort(t)
	server := tlsAmbassador(t, ctx, []int{p2},
		"--tls-cert", secret.file(harness.CertFile),
		"--tls-key", secret.file(harness.KeyFile),
		"--tls-ca", secret.file(harness.CAFile),
		"--tls-listen", "all",
		"--route", fmt.Sprintf("%d:%s", p2, addr(data, dataPort)))
	client := tlsAmbassador(t, ctx, []int{p1}, append(pki.flags(pki.client),
		"--route", fmt.Sprintf("%d:tls://%s", p1, enginesListen(p2)))...)
	listen, route := enginesListen(p2), enginesListen(p1)
	probe := tlsClientConfig(t, pki.client, pki.ca, tlsLoopback.String())
	served := func(ctx context.Context) (*x509.Certificate, error) {
		_, c, err := tlsWhoami(ctx, listen, probe)
		return c, err
	}
	first, err := served(ctx)
	require.NoError(t, err)
	require.Equal(t, certs[0].Cert.SerialNumber, first.SerialNumber, "the certificate served at start")
	server.waitExpiry(t, ctx, secret.file(harness.CertFile), certs[0])

	held := openSession(t, ctx, route)
	require.NoError(t, held.Conn.SetDeadline(time.Time{}))
	require.Equal(t, "data", held.ID.Name)
	echo(t, held, "before the rotation")
	l := startLoad(t, route)
	_, err = l.WaitLanded(ctx, "data", time.Now(), 50)
	require.NoError(t, err)

	// waitServed waits until new handshakes serve want, and returns how
	// long after changed.
	waitServed := func(what string, want *harness.Cert, changed time.Time) time.Duration {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, tlsReloadWithin)
		defer cancel()
		var last *x509.Certificate
		err := harness.Poll(wctx, func(ctx context.Context) error {
			c, err := served(ctx)
			if err != nil {
				return harness.Permanent(fmt.Errorf("a new handshake failed: %w", err))
			}
			last = c
			if c.SerialNumber.Cmp(want.Cert.SerialNumber) != 0 {
				return fmt.Errorf("still serving %s", c.Subject.CommonName)
			}
			return nil
		})
		took := time.Since(changed)
		require.NoError(t, err, "%s: wait for %s to be served (last served: %v)", what, want.Cert.Subject.CommonName, subject(last))
		return took
	}

	// 1. In place: the key first, then the certificate, as a tool that
	// rewrites files one by one does.
	changed := time.Now()
	secret.writeInPlace(t, harness.KeyFile, certs[1].KeyPEM)
	secret.writeInPlace(t, harness.CertFile, certs[1].CertPEM)
	inPlace := waitServed("in place", certs[1], changed)
	echo(t, held, "after the change in place")
	server.waitExpiry(t, ctx, secret.file(harness.CertFile), certs[1])
	_, err = l.WaitLanded(ctx, "data", time.Now(), 50)
	require.NoError(t, err)

	// 2. A ..data symlink swap.
	changed = time.Now()
	secret.publish(t, certs[2])
	swapped := waitServed("..data swap", certs[2], changed)
	echo(t, held, "after the ..data swap")
	server.waitExpiry(t, ctx, secret.file(harness.CertFile), certs[2])
	_, err = l.WaitLanded(ctx, "data", time.Now(), 50)
	require.NoError(t, err)

	// refused makes a change that must be refused: it waits for the
	// warning naming file and matching fix, then requires certificate 3
	// still served, and the load and the established connection on.
	refused := func(what, file, fix string, change func()) string {
		t.Helper()
		mark := len(server.out.String())
		change()
		var warning string
		wctx, cancel := context.WithTimeout(ctx, tlsReloadWithin)
		defer cancel()
		require.NoError(t, harness.Poll(wctx, func(context.Context) error {
			// Not the first warning: a file read while it was being
			// written is refused too, for another reason.
			for line := range strings.Lines(server.out.String()[mark:]) {
				if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, file) && regexp.MustCompile(fix).MatchString(line) {
					warning = strings.TrimSpace(line)
					return nil
				}
			}
			return fmt.Errorf("no warning naming %s and matching %s yet", file, fix)
		}), "%s was not refused with a warning; the ambassador's log since:\n%s", what, server.out.String()[mark:])
		kept, err := served(ctx)
		require.NoError(t, err, "a new handshake after %s", what)
		assert.Equal(t, certs[2].Cert.SerialNumber, kept.SerialNumber, "the certificate served after %s: %s", what, subject(kept))
		server.waitExpiry(t, ctx, secret.file(harness.CertFile), certs[2])
		_, err = l.WaitLanded(ctx, "data", time.Now(), 50)
		require.NoError(t, err)
		echo(t, held, "after "+what)
		return warning
	}
	// 3. A key that does not match the certificate, in place.
	badKey := refused("a key not matching", harness.KeyFile, `(?i)match`, func() {
		secret.writeInPlace(t, harness.KeyFile, certs[3].KeyPEM)
	})
	// 4. An expired certificate and its key, by a ..data swap.
	expired := pki.issue(t, pki.ca, "server-expired", func() harness.CertSpec {
		s := tlsServerSpec("server-expired")
		s.NotBefore, s.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		return s
	}())
	badCert := refused("an expired certificate", harness.CertFile, `(?i)expired`, func() { secret.publish(t, expired) })

	res := l.Stop()
	requireNoFailures(t, res)
	fc, fs := tlsMetrics(t, ctx, client), tlsMetrics(t, ctx, server)
	// The in-place change may be read between its two writes (a key
	// without its certificate: refused, then loaded at the next poll).
	reloaded := tlsSum(fs, tlsReloads, map[string]string{"result": "ok"})
	failed := tlsSum(fs, tlsReloads, map[string]string{"result": "failed"})
	assert.Equal(t, 2.0, reloaded, "reloads that took the new material")
	assert.GreaterOrEqual(t, failed, 2.0, "reloads refused")
	t.Logf("reloads: ok=%v failed=%v", reloaded, failed)
	t.Logf("new certificate served %s after the change in place, %s after the ..data swap (files polled every second; bound %s); refused with a warning: the bad key (%s), the expired certificate (%s)",
		inPlace.Round(time.Millisecond), swapped.Round(time.Millisecond), tlsReloadWithin, badKey, badCert)
	t.Logf("load through the hop: %s; longest attempt %s; the established connection echoed after each change",
		res, res.Longest().Round(time.Millisecond))
	t.Logf("client side (backend) handshakes: %s; server side (listen): %s", tlsHandshakeResults(fc, "backend"), tlsHandshakeResults(fs, "listen"))
}

// subject is c's subject's common name, or "none".
func subject(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	return c.Subject.CommonName
}

// waitExpiry waits until the expiry gauge of the certificate file path is
// want's expiry.
func (a *engineRestartAmb) waitExpiry(t *testing.T, ctx context.Context, path string, want *harness.Cert) {
	t.Helper()
	exp := float64(want.Cert.NotAfter.Unix())
	waitMetrics(t, ctx, a.admin+"/metrics", func(f families) error {
		var seen []string
		for _, m := range f[tlsExpiry].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["path"] == path && m.GetGauge().GetValue() == exp {
				return nil
			}
			seen = append(seen, fmt.Sprintf("%v=%v", labels, m.GetGauge().GetValue()))
		}
		return fmt.Errorf("%s{path=%q} is not %v (%s's expiry); the series: %s", tlsExpiry, path, exp, want.Cert.Subject.CommonName, strings.Join(seen, ", "))
	})
}

// tlsReplace replaces the file path with data atomically (a new file
// renamed over it), as most tools that update certificates do.
func tlsReplace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// TestTLSRotationCA: the CAs and the client side's certificate rotate,
// each side's files replaced (renamed over), with a connection
// established through the hop before it all:
//
//  1. the server side's client CA is replaced by a new CA's: the client
//     side's next connections, whose sessions were made with a
//     certificate of the old CA, are refused (no resumption of a session
//     whose certificate the new client CA did not sign), before a byte
//     reaches the backend;
//  2. the client side's certificate and key are replaced by the new
//     CA's: its new connections pass again.
//
// The established connection echoes throughout: refusing new clients
// never cuts the connections already made.
func TestTLSRotationCA(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	pki := tlsNewPKI(t)
	next, err := harness.NewCA("ambassadord tls next CA")
	require.NoError(t, err)
	renewed := pki.issue(t, next, "renewed", harness.CertSpec{Name: "client", DNS: []string{tlsClientID}, Client: true})
	// Each side's files, in a directory of its own, replaced in place.
	dir := t.TempDir()
	clientCA := filepath.Join(dir, "client-ca.pem")
	require.NoError(t, os.WriteFile(clientCA, pki.ca.PEM, 0o644))
	cert, key := filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem")
	require.NoError(t, os.WriteFile(cert, pki.client.CertPEM, 0o644))
	require.NoError(t, os.WriteFile(key, pki.client.KeyPEM, 0o600))

	data := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
	p1, p2 := tlsFreePort(t), tlsFreePort(t)
	server := tlsAmbassador(t, ctx, []int{p2}, append(pki.flags(pki.server),
		"--tls-client-ca", clientCA,
		"--tls-listen", "all",
		"--route", fmt.Sprintf("%d:%s", p2, addr(data, dataPort)))...)
	client := tlsAmbassador(t, ctx, []int{p1},
		"--tls-cert", cert, "--tls-key", key, "--tls-ca", pki.file(pki.client, harness.CAFile),
		// A refused connection is not held for the default 3 s.
		"--backend-wait", "500ms",
		"--route", fmt.Sprintf("%d:tls://%s", p1, enginesListen(p2)))
	route := enginesListen(p1)
	const warm = 5 // connections before the rotation, resumed but the first
	for i := range warm {
		_, err := enginesWhoami(ctx, route)
		require.NoError(t, err, "connection %d before the rotation", i)
	}
	held := openSession(t, ctx, route)
	require.NoError(t, held.Conn.SetDeadline(time.Time{}))
	echo(t, held, "before the rotation")
	before := tlsMetrics(t, ctx, server)

	// 1. The server side trusts clients of the next CA only.
	tlsReplace(t, clientCA, next.PEM)
	waitMetrics(t, ctx, server.admin+"/metrics", want(tlsReloads, map[string]string{"result": "ok"}, 1))
	st, err := stats(ctx, data)
	require.NoError(t, err)
	conns := st.Conns
	mark := len(client.out.String())
	_, refused := enginesWhoami(ctx, route)
	require.Error(t, refused, "a new connection of a client whose certificate the new client CA did not sign")
	// The server counts the handshake once its side of it has returned,
	// after the alert the client may already have read: wait for it.
	refusedAt := waitMetrics(t, ctx, server.admin+"/metrics", func(f families) error {
		if tlsSum(f, tlsHandshakes, map[string]string{"side": "listen", "result": "unknown_ca"}) == 0 {
			return fmt.Errorf("no handshake refused for an unknown CA yet: %s", tlsHandshakeResults(f, "listen"))
		}
		return nil
	})
	resumed := func(f families) float64 {
		return tlsSum(f, tlsHandshakes, map[string]string{"side": "listen", "result": "resumed"})
	}
	assert.Equal(t, resumed(before), resumed(refusedAt), "sessions resumed after the client CA changed: %s", tlsHandshakeResults(refusedAt, "listen"))
	st, err = stats(ctx, data)
	require.NoError(t, err)
	assert.Equal(t, conns, st.Conns, "connections that reached the backend while the client was refused")
	echo(t, held, "after the client CA changed")
	// The client side sees the refusal too: in TLS 1.3 its handshake ends
	// before the server has checked its certificate, and the server's
	// alert comes with the first read; it must be counted as a failed
	// handshake, by reason, and logged, not counted ok and left unsaid.
	fc := tlsMetrics(t, ctx, client)
	failed := 0.0
	for _, m := range fc.series(tlsHandshakes, map[string]string{"side": "backend"}) {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" && l.GetValue() != "ok" && l.GetValue() != "resumed" {
				failed += m.GetCounter().GetValue()
			}
		}
	}
	assert.Positive(t, failed, "the client side's backend handshakes the server refused, counted by reason: %s", tlsHandshakeResults(fc, "backend"))
	assert.NotEmpty(t, waitLogLine(t, ctx, func() string { return client.out.String()[mark:] }, `"level":"warn"`, `"route":"`+strconv.Itoa(p1)+`"`),
		"the client side's warning about the connection the server refused; its log since:\n%s", client.out.String()[mark:])

	// 2. The client side's certificate and key of the next CA: the key
	// first, then the certificate.
	changed := time.Now()
	tlsReplace(t, key, renewed.KeyPEM)
	tlsReplace(t, cert, renewed.CertPEM)
	wctx, cancel := context.WithTimeout(ctx, tlsReloadWithin+time.Second)
	defer cancel()
	var last error
	require.NoError(t, harness.Poll(wctx, func(ctx context.Context) error {
		_, last = enginesWhoami(ctx, route)
		return last
	}), "new connections with the client side's new certificate; last: %v", last)
	passed := time.Since(changed)
	echo(t, held, "after the client's certificate changed")

	fc, fs := tlsMetrics(t, ctx, client), tlsMetrics(t, ctx, server)
	t.Logf("client CA replaced: new connections refused (%s), none resumed, none reached the backend; client certificate replaced: new connections passed %s after (files polled every second); the connection established before both echoed after each",
		load.How(refused), passed.Round(time.Millisecond))
	t.Logf("the client side's log since the client CA changed:\n%s", client.out.String()[mark:])
	t.Logf("server side (listen) handshakes: %s; reloads ok=%v failed=%v", tlsHandshakeResults(fs, "listen"),
		tlsSum(fs, tlsReloads, map[string]string{"result": "ok"}), tlsSum(fs, tlsReloads, map[string]string{"result": "failed"}))
	t.Logf("client side (backend) handshakes: %s; reloads ok=%v failed=%v", tlsHandshakeResults(fc, "backend"),
		tlsSum(fc, tlsReloads, map[string]string{"result": "ok"}), tlsSum(fc, tlsReloads, map[string]string{"result": "failed"}))
}
