package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// The files of a certificate directory, in Docker's layout: what
// DOCKER_CERT_PATH holds for a client, and what dockerd's --tlscacert,
// --tlscert and --tlskey name for a server.
const (
	CAFile   = "ca.pem"
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// certValidity is how long a certificate issued with a zero NotAfter is
// valid: a test run's length, with a margin.
const certValidity = 24 * time.Hour

// certBackdate is how far before now a certificate with a zero NotBefore
// starts: clocks of a container and the host agree, but a margin costs
// nothing.
const certBackdate = time.Hour

// CA is a certificate authority of a test: it issues the certificates of
// private engines (servers) and of the clients that reach them. Its key
// never leaves memory. A CA is immutable after NewCA and safe for
// concurrent use.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte // Cert, PEM-encoded: what a ca.pem holds
	key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA named name (its subject's common name),
// valid from a day ago for a day to come: a certificate it issued that has
// expired (backdated, for a test of the refusal) chained while it was
// valid.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key of CA %s: %w", name, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ambassadord tests"}},
		NotBefore:             now.Add(-certValidity),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate of CA %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate of CA %s: %w", name, err)
	}
	return &CA{Cert: cert, PEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// CertSpec describes a certificate for CA.Issue. Zero times mean valid
// from an hour ago for a day.
type CertSpec struct {
	Name string       // the subject's common name
	IPs  []netip.Addr // IP subject alternative names: a server's addresses
	DNS  []string     // DNS subject alternative names
	// Server and Client are the extended key usages: a server
	// authenticates to clients, a client to servers (dockerd
	// --tlsverify requires client authentication).
	Server, Client      bool
	NotBefore, NotAfter time.Time
}

// Cert is a certificate with its key and the CA that issued it.
type Cert struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte // the key, PEM-encoded PKCS #8 ("PRIVATE KEY"), which Go, dockerd, HAProxy and OpenSSL all read
	CA      *CA
}

// Issue issues a certificate signed by ca.
func (ca *CA) Issue(s CertSpec) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key of %s: %w", s.Name, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: s.Name, Organization: []string{"ambassadord tests"}},
		NotBefore:    s.NotBefore,
		NotAfter:     s.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     s.DNS,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-certBackdate)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(certValidity)
	}
	for _, ip := range s.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	if s.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("create certificate of %s: %w", s.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate of %s: %w", s.Name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key of %s: %w", s.Name, err)
	}
	return &Cert{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", keyDER), CA: ca}, nil
}

// WriteDir writes c into dir in Docker's layout: ca.pem (c's CA, the one
// the holder trusts), cert.pem and key.pem. dir is created, mode 0700;
// the key is 0600.
func (c *Cert) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create certificate dir: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, c.CA.PEM, 0o644},
		{CertFile, c.CertPEM, 0o644},
		{KeyFile, c.KeyPEM, 0o600},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// serialNumber returns a random 128-bit serial number, as RFC 5280 allows
// (at most 20 octets, positive).
func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// PKI is the certificates of a test's engines, as a real deployment has
// them: one CA that issues every engine's server certificate and the
// ambassador's client certificate; besides, for the refusals, a wrong CA
// and an expired client certificate. Its directories are in Docker's
// layout, for `--engine NAME=URL,tls=DIR` and DOCKER_CERT_PATH.
type PKI struct {
	Dir     string // holds every directory below; the caller removes it
	CA      *CA
	WrongCA *CA
	// Client holds a client certificate of CA: what reaches the engines.
	Client string
	// WrongCAClient trusts, and holds a client certificate of, WrongCA: a
	// client of another deployment, which recognises no engine of this
	// one (nor they it).
	WrongCAClient string
	// Expired holds a client certificate of CA that expired an hour ago.
	Expired string
}

// NewPKI creates the CAs and the client directories under dir.
func NewPKI(dir string) (*PKI, error) {
	ca, err := NewCA("ambassadord test CA")
	if err != nil {
		return nil, err
	}
	wrong, err := NewCA("ambassadord wrong CA")
	if err != nil {
		return nil, err
	}
	p := &PKI{
		Dir: dir, CA: ca, WrongCA: wrong,
		Client:        filepath.Join(dir, "client"),
		WrongCAClient: filepath.Join(dir, "wrong-ca"),
		Expired:       filepath.Join(dir, "expired"),
	}
	now := time.Now()
	for _, c := range []struct {
		ca   *CA
		spec CertSpec
		dir  string
	}{
		{ca, CertSpec{Name: "ambassadord", Client: true}, p.Client},
		{wrong, CertSpec{Name: "ambassadord", Client: true}, p.WrongCAClient},
		{ca, CertSpec{Name: "ambassadord expired", Client: true, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, p.Expired},
	} {
		cert, err := c.ca.Issue(c.spec)
		if err != nil {
			return nil, err
		}
		if err := cert.WriteDir(c.dir); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Server issues, with ca, a server certificate for an engine at the
// addresses ips (and the name localhost), and writes it to dir in
// Docker's layout, for dockerd --tlscacert, --tlscert and --tlskey. Its
// ca.pem is ca's: the engine trusts clients of ca alone.
func Server(ca *CA, dir, name string, ips ...netip.Addr) error {
	if len(ips) == 0 {
		return errors.New("issue server certificate: no address")
	}
	cert, err := ca.Issue(CertSpec{Name: name, IPs: ips, DNS: []string{"localhost"}, Server: true})
	if err != nil {
		return err
	}
	return cert.WriteDir(dir)
}
