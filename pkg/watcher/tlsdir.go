package watcher

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ambassadord/ambassadord/pkg/tlsconf"
)

// The files of a tls= directory, named as DOCKER_CERT_PATH names them.
const (
	caFile   = "ca.pem"   // the CA that signed the engine's certificate
	certFile = "cert.pem" // the client's certificate
	keyFile  = "key.pem"  // its key, unencrypted
)

// timeFormat is how errors give a certificate's dates.
const timeFormat = time.RFC3339

// tlsFiles is what a tls= directory holds, parsed.
type tlsFiles struct {
	dir  string
	cas  []*x509.Certificate
	cert tls.Certificate // Leaf is set
}

// Validate checks the TLS directory of a spec that has one, so that a
// mistake stops the start with its fix rather than failing every connect:
// ca.pem, cert.pem and key.pem exist and parse, ca.pem holds at least one
// certificate that has not expired, the key is cert.pem's and unencrypted,
// and the client certificate is valid now and made for client
// authentication. It reads the files; a spec without TLSDir is valid. The
// error names the engine, the file and the fix.
func (s EngineSpec) Validate() error {
	return s.validate(time.Now())
}

func (s EngineSpec) validate(now time.Time) error {
	if s.TLSDir == "" {
		return nil
	}
	f, err := loadTLS(s.TLSDir)
	if err == nil {
		err = f.check(now)
	}
	if err != nil {
		return fmt.Errorf("engine %q: %w", s.Name, err)
	}
	return nil
}

// loadTLS reads and parses a tls= directory. It checks what every
// connection would fail on, not dates: those are [EngineSpec.Validate]'s.
func loadTLS(dir string) (*tlsFiles, error) {
	f := &tlsFiles{dir: dir}
	caPEM, err := readTLSFile(dir, caFile)
	if err != nil {
		return nil, err
	}
	if f.cas, err = tlsconf.ParseCerts(caPEM); err != nil {
		return nil, fmt.Errorf("%s: %w", f.path(caFile), err)
	}
	if len(f.cas) == 0 {
		return nil, fmt.Errorf("%s holds no certificate: put there, in PEM, the certificate of the CA that signed the engine's (dockerd --tlscert)", f.path(caFile))
	}
	certPEM, err := readTLSFile(dir, certFile)
	if err != nil {
		return nil, err
	}
	certs, err := tlsconf.ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.path(certFile), err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no certificate: put there, in PEM, the client certificate the engine's CA (dockerd --tlscacert) issued", f.path(certFile))
	}
	keyPEM, err := readTLSFile(dir, keyFile)
	if err != nil {
		return nil, err
	}
	if tlsconf.EncryptedKey(keyPEM) {
		return nil, fmt.Errorf("%s is encrypted: give the key unencrypted (openssl pkey -in key.pem -out key.pem), with permissions that keep it private", f.path(keyFile))
	}
	f.cert, err = tls.X509KeyPair(certPEM, keyPEM)
	switch {
	case err != nil && strings.Contains(err.Error(), "does not match"):
		return nil, fmt.Errorf("%s is not the key of %s: give the key the client certificate was issued for", f.path(keyFile), f.path(certFile))
	case err != nil:
		return nil, fmt.Errorf("%s: %w", f.path(keyFile), err)
	}
	return f, nil
}

// check checks the dates of the certificates, and that the client's is
// made for client authentication, which dockerd requires.
func (f *tlsFiles) check(now time.Time) error {
	leaf := f.cert.Leaf
	switch {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("%s is not valid before %s (it is %s on this host): check this host's clock, or wait",
			f.path(certFile), leaf.NotBefore.UTC().Format(timeFormat), now.UTC().Format(timeFormat))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("%s expired on %s: issue a new client certificate", f.path(certFile), leaf.NotAfter.UTC().Format(timeFormat))
	case len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny):
		return fmt.Errorf("%s is not for client authentication, which the engine requires (its extended key usage lacks clientAuth): "+
			"issue it with extendedKeyUsage = clientAuth", f.path(certFile))
	}
	var last time.Time
	for _, ca := range f.cas {
		if !now.After(ca.NotAfter) {
			return nil
		}
		if ca.NotAfter.After(last) {
			last = ca.NotAfter
		}
	}
	return fmt.Errorf("%s: every certificate in it expired, the last on %s: put there the certificate of the CA that signed the engine's",
		f.path(caFile), last.UTC().Format(timeFormat))
}

// config returns the client's TLS configuration: TLS 1.2 or later, the
// engine verified against ca.pem alone (not the system's roots), by the
// host name or IP of the URL, which net/http sets as ServerName.
//
// The client certificate is sent whenever the engine asks for one, even
// when the engine's list of acceptable CAs does not name its issuer: Go's
// default would then send none, and dockerd would answer "certificate
// required", where it can say "unknown certificate authority", which Check
// turns into the fix.
func (f *tlsFiles) config() *tls.Config {
	roots := x509.NewCertPool()
	for _, ca := range f.cas {
		roots.AddCert(ca)
	}
	cert := f.cert
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
	}
}

func (f *tlsFiles) path(name string) string {
	return filepath.Join(f.dir, name)
}

// readTLSFile reads one file of a tls= directory.
func readTLSFile(dir, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w: tls=%s must hold %s, %s and %s, as DOCKER_CERT_PATH does",
			filepath.Join(dir, name), fs.ErrNotExist, dir, caFile, certFile, keyFile)
	}
	if err != nil {
		return nil, err // it names the file
	}
	return b, nil
}
