package metrics

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/tlsconf"
)

// testNotAfter is when the certificate of testStore expires.
var testNotAfter = time.Now().Add(48 * time.Hour).Truncate(time.Second)

// testStore returns a TLS store holding one CA certificate, subject
// CN=metrics CA, expiring at testNotAfter.
func testStore(t *testing.T) *tlsconf.Store {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "metrics CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: testNotAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	s, err := tlsconf.Load(tlsconf.Files{CA: path}, nil)
	require.NoError(t, err)
	return s
}

// TestTLSMetrics: handshakes counted by side and result, the reason of a
// failure classified; the expiry of the loaded certificates, and the
// reloads, read at each scrape.
func TestTLSMetrics(t *testing.T) {
	m := New("dev", "")
	o := m.Observer("6379")
	o.Handshake(proxy.SideListen, false, nil)
	o.Handshake(proxy.SideListen, true, nil)
	o.Handshake(proxy.SideListen, true, nil)
	o.Handshake(proxy.SideBackend, false, x509.UnknownAuthorityError{})
	o.Handshake(proxy.SideListen, false, tls.AlertError(116)) // certificate_required
	o.Rejected(proxy.RejectHandshake)
	s := testStore(t)
	m.TLS(s)

	f := scrape(t, m)
	for _, tt := range []struct {
		side, result string
		want         float64
	}{
		{proxy.SideListen, "ok", 1},
		{proxy.SideListen, "resumed", 2},
		{proxy.SideBackend, "unknown_ca", 1},
		{proxy.SideListen, "no_certificate", 1},
	} {
		assert.Equal(t, tt.want, metricstest.Value(t, f, "ambassadord_tls_handshakes_total",
			seriesLabels{"route": "6379", "side": tt.side, "result": tt.result}), "%s %s", tt.side, tt.result)
	}
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_connections_rejected_total", seriesLabels{"route": "6379", "reason": proxy.RejectHandshake}))

	expiry := f["ambassadord_tls_certificate_expiry_seconds"]
	require.NotNil(t, expiry)
	require.Len(t, expiry.GetMetric(), 1)
	assert.Equal(t, float64(testNotAfter.Unix()), expiry.GetMetric()[0].GetGauge().GetValue())
	labels := map[string]string{}
	for _, l := range expiry.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	assert.Equal(t, "ca", labels["kind"])
	assert.Equal(t, "CN=metrics CA", labels["subject"])
	assert.Equal(t, s.Certificates()[0].Path, labels["path"])
	require.NotNil(t, f["ambassadord_tls_reloads_total"])
	assert.Len(t, f["ambassadord_tls_reloads_total"].GetMetric(), 2)

	m.RouteRemoved("6379")
	assert.Empty(t, metricstest.RouteSeries(scrape(t, m), "6379"), "a removed route's series, handshakes included, go with it")
}
