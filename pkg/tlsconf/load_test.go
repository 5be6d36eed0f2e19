package tlsconf

import (
	"crypto/tls"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// regexpNow matches the clock's reading in a not-yet-valid error.
var regexpNow = regexp.MustCompile(`\(it is \S+ on`)

// TestLoad: a valid set loads, and each mistake stops Load with an error
// that names the file and says the fix.
func TestLoad(t *testing.T) {
	ca, other := newCA(t, "ca"), newCA(t, "other")
	good := ca.issue(t, certSpec{cn: "amb"})
	foreign := ca.issue(t, certSpec{cn: "foreign"})
	past := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	future := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	expired := ca.issue(t, certSpec{cn: "old", notBefore: past.Add(-time.Hour), notAfter: past})
	early := ca.issue(t, certSpec{cn: "early", notBefore: future})
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("secret")})
	badCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	bundle := append(append([]byte{}, other.pem...), ca.pem...)
	oldCA := newCAUntil(t, "old ca", past)

	for _, tt := range []struct {
		name                    string
		cert, key, ca, clientCA []byte // nil: the file is not given
		noCertFile, noKeyFile   bool   // given, but absent
		minVersion              uint16
		want                    string // with %[1]s for the directory; "" means valid
		wantCerts               int
	}{
		{name: "everything", cert: good.certPEM, key: good.key, ca: ca.pem, clientCA: bundle, wantCerts: 4},
		{name: "a CA alone", ca: ca.pem, wantCerts: 1},
		{name: "nothing: the system's roots", wantCerts: 0},
		{name: "TLS 1.2 opted in", ca: ca.pem, minVersion: tls.VersionTLS12, wantCerts: 1},
		{name: "TLS 1.1", ca: ca.pem, minVersion: tls.VersionTLS11, want: "minimum TLS version 0x0302: give TLS 1.3 (the default) or TLS 1.2"},
		{name: "a certificate without key", cert: good.certPEM, want: "certificate %[1]s/cert.pem is given without its key: give the key too"},
		{name: "a key without certificate", key: good.key, want: "key %[1]s/key.pem is given without its certificate: give the certificate too"},
		{
			name: "no such certificate file", cert: good.certPEM, key: good.key, noCertFile: true,
			want: "%[1]s/cert.pem does not exist: check the path, and that the volume or secret that holds it is mounted",
		},
		{
			name: "no such key file", cert: good.certPEM, key: good.key, noKeyFile: true,
			want: "%[1]s/key.pem does not exist: check the path, and that the volume or secret that holds it is mounted",
		},
		{
			name: "the key of another certificate", cert: good.certPEM, key: foreign.key,
			want: "%[1]s/key.pem does not match the certificate in %[1]s/cert.pem: give the key the certificate was issued for",
		},
		{
			name: "a key in the certificate file", cert: good.key, key: good.key,
			want: "%[1]s/cert.pem holds no certificate: put there, in PEM, this ambassador's certificate, then its intermediates",
		},
		{
			name: "a certificate in the key file", cert: good.certPEM, key: good.certPEM,
			want: "%[1]s/key.pem holds no private key: put there, in PEM, the key of %[1]s/cert.pem",
		},
		{
			name: "an encrypted key", cert: good.certPEM, key: encrypted,
			want: "%[1]s/key.pem is encrypted: give the key unencrypted (openssl pkey -in %[1]s/key.pem -out key.pem), readable by this user alone",
		},
		{
			name: "an expired certificate", cert: expired.certPEM, key: expired.key,
			want: "%[1]s/cert.pem expired on 2025-01-02T03:04:05Z: issue a new certificate",
		},
		{
			name: "a certificate not valid yet", cert: early.certPEM, key: early.key,
			want: "%[1]s/cert.pem is not valid before " + future.Format(time.RFC3339) + " (it is NOW on this host): check this host's clock, or wait",
		},
		{
			name: "an empty CA file", ca: []byte{},
			want: "%[1]s/ca.pem holds no certificate: put there, in PEM, the certificate of the CA that signs the backends' certificates",
		},
		{
			name: "a key in the client CA file", ca: ca.pem, clientCA: good.key,
			want: "%[1]s/client-ca.pem holds no certificate: put there, in PEM, the certificate of the CA that signs the clients' certificates",
		},
		{name: "a CA bundle with an expired CA", ca: append(append([]byte{}, oldCA.pem...), ca.pem...), wantCerts: 2},
		{
			name: "a CA file of expired CAs", ca: oldCA.pem,
			want: "%[1]s/ca.pem: every certificate in it expired, the last on 2025-01-02T03:04:05Z: put there the current certificate of the CA that signs the backends' certificates",
		},
		{
			name: "a broken certificate in the CA file", ca: append(append([]byte{}, ca.pem...), badCert...),
			want: "%[1]s/ca.pem: certificate 2: x509: malformed certificate",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := Files{MinVersion: tt.minVersion}
			for _, file := range []struct {
				path   *string
				name   string
				data   []byte
				absent bool
			}{
				{&f.Cert, "cert.pem", tt.cert, tt.noCertFile},
				{&f.Key, "key.pem", tt.key, tt.noKeyFile},
				{&f.CA, "ca.pem", tt.ca, false},
				{&f.ClientCA, "client-ca.pem", tt.clientCA, false},
			} {
				if file.data == nil {
					continue
				}
				*file.path = filepath.Join(dir, file.name)
				if !file.absent {
					writeFile(t, *file.path, file.data)
				}
			}
			s, err := Load(f, nil)
			if tt.want == "" {
				require.NoError(t, err)
				assert.Len(t, s.Certificates(), tt.wantCerts)
				return
			}
			require.Error(t, err)
			msg := err.Error()
			if tt.name == "a certificate not valid yet" { // the clock's reading
				msg = regexpNow.ReplaceAllString(msg, "(it is NOW on")
			}
			assert.Equal(t, strings.ReplaceAll(tt.want, "%[1]s", dir), msg)
		})
	}
}

// TestCertificates: each loaded certificate is described for the expiry
// gauge, with its file and kind; a CA that verifies clients too is listed
// once.
func TestCertificates(t *testing.T) {
	ca, clients := newCA(t, "backends CA"), newCA(t, "clients CA")
	c := ca.issue(t, certSpec{cn: "amb"})
	dir := t.TempDir()
	f := side(t, dir, c, ca)
	s, err := Load(f, nil)
	require.NoError(t, err)
	assert.Equal(t, []CertInfo{
		{Path: f.Cert, Kind: "cert", Subject: "CN=amb", NotAfter: c.cert.NotAfter},
		{Path: f.CA, Kind: "ca", Subject: "CN=backends CA", NotAfter: ca.cert.NotAfter},
	}, s.Certificates())

	f.ClientCA = filepath.Join(dir, "client-ca.pem")
	writeFile(t, f.ClientCA, clients.pem)
	s, err = Load(f, nil)
	require.NoError(t, err)
	assert.Equal(t, CertInfo{Path: f.ClientCA, Kind: "client_ca", Subject: "CN=clients CA", NotAfter: clients.cert.NotAfter}, s.Certificates()[2])
}

// TestPermissionError: a file this process cannot read is named with its
// mode and owner, and who this process runs as. (The read itself cannot be
// refused to root, which the tests may run as.)
func TestPermissionError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	writeFile(t, path, []byte("secret"))
	require.NoError(t, os.Chmod(path, 0o000))
	err := permissionError(path)
	assert.Regexp(t, `^.*/key.pem is not readable \(mode -{10}, owner uid \d+, gid \d+\) by this process, which runs as uid \d+.*, gid \d+: `+
		`make the file, and the directories to it, readable by that user \(chown, chmod\), or run as its owner$`, err.Error())
}
