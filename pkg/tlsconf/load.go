package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// timeFormat is how errors and logs give a certificate's dates.
const timeFormat = time.RFC3339

// material is one generation of the files, loaded and checked. It is
// immutable once published.
type material struct {
	cert      *tls.Certificate // this ambassador's; nil without Files.Cert; Leaf is set
	roots     *x509.CertPool   // verifies backends; nil means the system's roots
	clientCAs *x509.CertPool   // verifies clients; nil without ClientCA and CA
	server    *tls.Config      // a listener's handshakes' configuration; nil without cert or clientCAs
	infos     []CertInfo
	sum       [sha256.Size]byte // of the files' contents, to skip a reload that changes nothing
}

// fields are the log fields that say which material is in use.
func (m *material) fields() []zap.Field {
	fs := []zap.Field{zap.Int("certificates", len(m.infos))}
	if m.cert != nil {
		fs = append(fs, zap.String("subject", m.cert.Leaf.Subject.String()),
			zap.String("not_after", m.cert.Leaf.NotAfter.UTC().Format(timeFormat)))
	}
	return fs
}

// load reads and checks the files, as they are at now.
func (s *Store) load(now time.Time) (*material, error) {
	f := s.files
	m := &material{}
	h := sha256.New()
	var err error
	if f.Cert != "" {
		if m.cert, err = loadKeyPair(h, f.Cert, f.Key, now); err != nil {
			return nil, err
		}
		m.infos = append(m.infos, CertInfo{Path: f.Cert, Kind: "cert", Subject: m.cert.Leaf.Subject.String(), NotAfter: m.cert.Leaf.NotAfter})
	}
	if f.CA != "" {
		if m.roots, err = loadCAs(h, m, f.CA, "ca", now); err != nil {
			return nil, err
		}
		m.clientCAs = m.roots
	}
	if f.ClientCA != "" {
		if m.clientCAs, err = loadCAs(h, m, f.ClientCA, "client_ca", now); err != nil {
			return nil, err
		}
	}
	h.Sum(m.sum[:0])
	if m.cert != nil && m.clientCAs != nil {
		m.server = s.serverGeneration(m)
	}
	return m, nil
}

// loadKeyPair reads a certificate and its key, and checks that they match
// and that the certificate is valid now.
func loadKeyPair(h hash.Hash, certPath, keyPath string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := readFile(h, certPath)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no certificate: put there, in PEM, this ambassador's certificate, then its intermediates", certPath)
	}
	keyPEM, err := readFile(h, keyPath)
	if err != nil {
		return nil, err
	}
	if EncryptedKey(keyPEM) {
		return nil, fmt.Errorf("%s is encrypted: give the key unencrypted (openssl pkey -in %[1]s -out key.pem), readable by this user alone", keyPath)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	switch {
	case err != nil && strings.Contains(err.Error(), "does not match"):
		return nil, fmt.Errorf("%s does not match the certificate in %s: give the key the certificate was issued for", keyPath, certPath)
	case err != nil && (strings.Contains(err.Error(), "failed to find") || strings.Contains(err.Error(), "rather than a key")):
		return nil, fmt.Errorf("%s holds no private key: put there, in PEM, the key of %s", keyPath, certPath)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	leaf := cert.Leaf
	switch {
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("%s is not valid before %s (it is %s on this host): check this host's clock, or wait",
			certPath, leaf.NotBefore.UTC().Format(timeFormat), now.UTC().Format(timeFormat))
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("%s expired on %s: issue a new certificate", certPath, leaf.NotAfter.UTC().Format(timeFormat))
	}
	return &cert, nil
}

// loadCAs reads a CA bundle, which must hold a certificate that has not
// expired, and adds its certificates to m's infos as kind.
func loadCAs(h hash.Hash, m *material, path, kind string, now time.Time) (*x509.CertPool, error) {
	whose := "backends'"
	if kind == "client_ca" {
		whose = "clients'"
	}
	b, err := readFile(h, path)
	if err != nil {
		return nil, err
	}
	cas, err := ParseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("%s holds no certificate: put there, in PEM, the certificate of the CA that signs the %s certificates", path, whose)
	}
	last := slices.MaxFunc(cas, func(a, b *x509.Certificate) int { return a.NotAfter.Compare(b.NotAfter) }).NotAfter
	if now.After(last) {
		return nil, fmt.Errorf("%s: every certificate in it expired, the last on %s: put there the current certificate of the CA that signs the %s certificates",
			path, last.UTC().Format(timeFormat), whose)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
		m.infos = append(m.infos, CertInfo{Path: path, Kind: kind, Subject: ca.Subject.String(), NotAfter: ca.NotAfter})
	}
	return pool, nil
}

// readFile reads a file and adds it to h; its errors say what to do.
func readFile(h hash.Hash, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s does not exist: check the path, and that the volume or secret that holds it is mounted", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, permissionError(path)
	case err != nil:
		return nil, err // it names the file
	}
	fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
	h.Write(b)
	return b, nil
}

// permissionError says who this process runs as, and who may read the
// file it could not.
func permissionError(path string) error {
	who := "uid " + strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		who += " (" + u.Username + ")"
	}
	var file string
	if fi, err := os.Stat(path); err == nil {
		file = fmt.Sprintf(" (mode %v", fi.Mode())
		if uid, gid, ok := owner(fi); ok {
			file += fmt.Sprintf(", owner uid %d, gid %d", uid, gid)
		}
		file += ")"
	}
	return fmt.Errorf("%s is not readable%s by this process, which runs as %s, gid %d: "+
		"make the file, and the directories to it, readable by that user (chown, chmod), or run as its owner", path, file, who, os.Getgid())
}

// ParseCerts parses every CERTIFICATE block of a PEM file, in order,
// skipping blocks of other types; an error numbers the certificate that
// does not parse. The watcher reads an engine's TLS files with it too.
func ParseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
}

// EncryptedKey reports whether a PEM key is encrypted: PKCS #8's
// ENCRYPTED PRIVATE KEY, or OpenSSL's legacy Proc-Type header.
func EncryptedKey(b []byte) bool {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return false
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
			return true
		}
	}
}
