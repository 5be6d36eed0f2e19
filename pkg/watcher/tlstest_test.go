package watcher

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// This file makes the TLS material of the tests with crypto/x509 (CAs,
// engine and client certificates, good and bad), and serves a minimal
// Docker API over real TLS on loopback, as dockerd --tlsverify does.

// testCA is a certificate authority of the tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

// certOpts describes a certificate to issue. The zero value is a client
// certificate valid from an hour ago for a year.
type certOpts struct {
	cn        string
	server    bool // for server authentication, with SANs; else client
	ips       []net.IP
	dns       []string
	usage     []x509.ExtKeyUsage // overrides what server implies
	notBefore time.Time
	notAfter  time.Time
}

// testCert is an issued certificate, its key, and both in PEM.
type testCert struct {
	tls     tls.Certificate
	certPEM []byte
	keyPEM  []byte
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

var serial atomic.Int64

func nextSerial() *big.Int {
	return big.NewInt(serial.Add(1))
}

// newTestCA makes a self-signed CA valid around now, or until notAfter when
// given.
func newTestCA(t *testing.T, cn string, notAfter ...time.Time) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-2 * time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	if len(notAfter) > 0 {
		tmpl.NotBefore = notAfter[0].Add(-24 * time.Hour)
		tmpl.NotAfter = notAfter[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate signed by ca.
func (ca *testCA) issue(t *testing.T, o certOpts) testCert {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: o.cn},
		NotBefore:    o.notBefore,
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		IPAddresses:  o.ips,
		DNSNames:     o.dns,
	}
	if o.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if o.usage != nil {
		tmpl.ExtKeyUsage = o.usage
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	c := testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	c.tls, err = tls.X509KeyPair(c.certPEM, c.keyPEM)
	require.NoError(t, err)
	return c
}

// writeTLSDir writes a tls= directory: ca.pem, cert.pem, key.pem; a nil
// content leaves that file out.
func writeTLSDir(t *testing.T, ca, cert, key []byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range map[string][]byte{caFile: ca, certFile: cert, keyFile: key} {
		if b != nil {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
		}
	}
	return dir
}

// pki is the usual set: the engine's CA, which also issues the clients',
// an engine certificate for 127.0.0.1, a client certificate, and another
// CA that has nothing to do with the engine.
type pki struct {
	ca, other *testCA
	engine    testCert
	client    testCert
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: newTestCA(t, "engine CA"), other: newTestCA(t, "other CA")}
	p.engine = p.ca.issue(t, certOpts{cn: "engine", server: true, ips: []net.IP{net.IPv4(127, 0, 0, 1)}, dns: []string{"engine.test"}})
	p.client = p.ca.issue(t, certOpts{cn: "ambassadord"})
	return p
}

// dir writes a tls= directory with the engine's CA and the client's
// certificate and key.
func (p *pki) dir(t *testing.T) string {
	t.Helper()
	return writeTLSDir(t, p.ca.pem, p.client.certPEM, p.client.keyPEM)
}

// engineTLS is the TLS configuration of dockerd --tlsverify: its
// certificate, and client certificates required and verified against
// clientCA.
func engineTLS(cert testCert, clientCA *testCA) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert.tls},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
}

// fakeAPI is the part of the Docker API the tests need: the ping (at /_ping
// and /vX.Y/_ping) with the engine's API version, a listing, and an event
// stream that stays open and silent.
type fakeAPI struct {
	apiVersion string      // the Api-Version header; "" means 1.41
	status     int         // the ping's status; 0 means 200
	containers []any       // what /containers/json lists
	pinged     chan string // receives each ping's path, if not nil
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Api-Version", cmpOr(f.apiVersion, "1.41"))
	switch path := r.URL.Path; {
	case strings.HasSuffix(path, "/_ping"):
		if f.pinged != nil {
			select {
			case f.pinged <- path:
			default:
			}
		}
		status := cmpOr(f.status, http.StatusOK)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, http.StatusText(status))
	case strings.HasSuffix(path, "/containers/json"):
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.containers)
	case strings.HasSuffix(path, "/events"):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	default:
		http.NotFound(w, r)
	}
}

func cmpOr[T comparable](v, dflt T) T {
	var zero T
	if v == zero {
		return dflt
	}
	return v
}

// startEngine serves h on loopback, over TLS when cfg is not nil, and
// returns the engine's URL, tcp://127.0.0.1:PORT.
func startEngine(t *testing.T, cfg *tls.Config, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	// Handshakes the tests fail on purpose are no news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if cfg != nil {
		srv.TLS = cfg
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return "tcp://" + srv.Listener.Addr().String()
}
