package watcher

import (
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	p := newPKI(t)
	past := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	future := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	expired := p.ca.issue(t, certOpts{cn: "old", notBefore: past.Add(-24 * time.Hour), notAfter: past})
	early := p.ca.issue(t, certOpts{cn: "early", notBefore: future})
	serverOnly := p.ca.issue(t, certOpts{cn: "server", usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	anyUsage := p.ca.issue(t, certOpts{cn: "any", usage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	noUsage := p.ca.issue(t, certOpts{cn: "none", usage: []x509.ExtKeyUsage{}})
	oldCA := newTestCA(t, "old CA", past)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("secret")})
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("secret"),
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}})
	badCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	bundle := append(append([]byte{}, p.other.pem...), p.ca.pem...)

	for _, tt := range []struct {
		name          string
		ca, cert, key []byte
		want          string // with %[1]s for the directory; "" means valid
	}{
		{name: "valid", ca: p.ca.pem, cert: p.client.certPEM, key: p.client.keyPEM},
		{name: "a CA bundle", ca: bundle, cert: p.client.certPEM, key: p.client.keyPEM},
		{name: "any usage", ca: p.ca.pem, cert: anyUsage.certPEM, key: anyUsage.keyPEM},
		{name: "no extended usage", ca: p.ca.pem, cert: noUsage.certPEM, key: noUsage.keyPEM},
		{name: "a CA bundle with an expired CA", ca: append(append([]byte{}, oldCA.pem...), p.ca.pem...), cert: p.client.certPEM, key: p.client.keyPEM},
		{
			name: "no ca.pem", cert: p.client.certPEM, key: p.client.keyPEM,
			want: "%[1]s/ca.pem: file does not exist: tls=%[1]s must hold ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH does",
		},
		{
			name: "no cert.pem", ca: p.ca.pem, key: p.client.keyPEM,
			want: "%[1]s/cert.pem: file does not exist: tls=%[1]s must hold ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH does",
		},
		{
			name: "no key.pem", ca: p.ca.pem, cert: p.client.certPEM,
			want: "%[1]s/key.pem: file does not exist: tls=%[1]s must hold ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH does",
		},
		{
			name: "ca.pem without a certificate", ca: p.client.keyPEM, cert: p.client.certPEM, key: p.client.keyPEM,
			want: "%[1]s/ca.pem holds no certificate: put there, in PEM, the certificate of the CA that signed the engine's (dockerd --tlscert)",
		},
		{
			name: "ca.pem not PEM", ca: []byte("hello"), cert: p.client.certPEM, key: p.client.keyPEM,
			want: "%[1]s/ca.pem holds no certificate: put there, in PEM, the certificate of the CA that signed the engine's (dockerd --tlscert)",
		},
		{
			name: "ca.pem with a broken certificate", ca: append(append([]byte{}, p.ca.pem...), badCert...), cert: p.client.certPEM, key: p.client.keyPEM,
			want: "%[1]s/ca.pem: certificate 2: x509: malformed certificate",
		},
		{
			name: "cert.pem without a certificate", ca: p.ca.pem, cert: p.client.keyPEM, key: p.client.keyPEM,
			want: "%[1]s/cert.pem holds no certificate: put there, in PEM, the client certificate the engine's CA (dockerd --tlscacert) issued",
		},
		{
			name: "the key of another certificate", ca: p.ca.pem, cert: p.client.certPEM, key: p.engine.keyPEM,
			want: "%[1]s/key.pem is not the key of %[1]s/cert.pem: give the key the client certificate was issued for",
		},
		{
			name: "an encrypted key", ca: p.ca.pem, cert: p.client.certPEM, key: encrypted,
			want: "%[1]s/key.pem is encrypted: give the key unencrypted (openssl pkey -in key.pem -out key.pem), with permissions that keep it private",
		},
		{
			name: "a legacy encrypted key", ca: p.ca.pem, cert: p.client.certPEM, key: legacyEncrypted,
			want: "%[1]s/key.pem is encrypted: give the key unencrypted (openssl pkey -in key.pem -out key.pem), with permissions that keep it private",
		},
		{
			name: "key.pem not a key", ca: p.ca.pem, cert: p.client.certPEM, key: p.client.certPEM,
			want: "%[1]s/key.pem: tls: found a certificate rather than a key in the PEM for the private key",
		},
		{
			name: "an expired client certificate", ca: p.ca.pem, cert: expired.certPEM, key: expired.keyPEM,
			want: "%[1]s/cert.pem expired on 2025-01-02T03:04:05Z: issue a new client certificate",
		},
		{
			name: "a client certificate not valid yet", ca: p.ca.pem, cert: early.certPEM, key: early.keyPEM,
			want: "%[1]s/cert.pem is not valid before " + future.Format(time.RFC3339) + " (it is NOW on this host): check this host's clock, or wait",
		},
		{
			name: "a certificate for servers", ca: p.ca.pem, cert: serverOnly.certPEM, key: serverOnly.keyPEM,
			want: "%[1]s/cert.pem is not for client authentication, which the engine requires (its extended key usage lacks clientAuth): " +
				"issue it with extendedKeyUsage = clientAuth",
		},
		{
			name: "an expired CA", ca: oldCA.pem, cert: p.client.certPEM, key: p.client.keyPEM,
			want: "%[1]s/ca.pem: every certificate in it expired, the last on 2025-01-02T03:04:05Z: put there the certificate of the CA that signed the engine's",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTLSDir(t, tt.ca, tt.cert, tt.key)
			spec := EngineSpec{Name: "big", URL: "tcp://10.0.0.5:2376", TLSDir: dir}
			now := time.Now()
			err := spec.validate(now)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			want := `engine "big": ` + fmtDir(tt.want, dir, now)
			assert.EqualError(t, err, want)
		})
	}

	assert.NoError(t, EngineSpec{Name: "small", URL: "unix:///run/small.sock"}.Validate(), "no directory, nothing to check")
	err := EngineSpec{Name: "big", URL: "tcp://10.0.0.5:2376", TLSDir: filepath.Join(t.TempDir(), "none")}.Validate()
	assert.ErrorContains(t, err, "none/ca.pem: file does not exist")
}

// fmtDir puts the directory and the time into an expected message.
func fmtDir(format, dir string, now time.Time) string {
	return strings.NewReplacer("%[1]s", dir, "NOW", now.UTC().Format(time.RFC3339)).Replace(format)
}

func TestTLSConfig(t *testing.T) {
	p := newPKI(t)
	f, err := loadTLS(p.dir(t))
	require.NoError(t, err)
	cfg := f.config()
	assert.EqualValues(t, 0x0303, cfg.MinVersion, "TLS 1.2 or later")
	assert.False(t, cfg.InsecureSkipVerify, "the engine is always verified")
	require.NotNil(t, cfg.RootCAs)
	_, err = p.engine.tls.Leaf.Verify(x509.VerifyOptions{Roots: cfg.RootCAs})
	assert.NoError(t, err, "the engine's certificate verifies against ca.pem")
	got, err := cfg.GetClientCertificate(nil)
	require.NoError(t, err)
	assert.Equal(t, p.client.tls.Certificate, got.Certificate, "the client certificate is sent whatever CAs the engine lists")
}
