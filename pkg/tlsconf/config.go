package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// maxClientConfigs bounds ClientConfigFor's cache: backends come and go
// with containers' addresses, and the cache is cleared when it grows past
// this. Nothing is lost but a few allocations: sessions live in the
// shared session cache.
const maxClientConfigs = 4096

// ServerConfig returns the configuration of a TLS listener: it serves
// this ambassador's certificate, and requires a client certificate that
// the client CA (ClientCA, or else CA) signed and that names an allowed
// identity ([IdentityError] otherwise). It is an error to ask for one
// without a certificate and key, or without a client CA: a TLS listener
// that lets anyone in is not offered.
//
// Each handshake takes the configuration of the current generation, built
// once per reload, from GetConfigForClient. The session ticket keys are
// those of the returned configuration, which Go makes and rotates; the
// generations carry none, so clients keep resuming across reloads (Go
// checks a resumed client's certificate against the current client CA).
// Each call returns a new configuration, with its own ticket keys: call
// it once per listener. Settings made on it are not seen by handshakes,
// which run with the generation's.
func (s *Store) ServerConfig() (*tls.Config, error) {
	m := s.cur.Load()
	switch {
	case m.cert == nil:
		return nil, errors.New("a TLS listener needs this ambassador's certificate and key: give them")
	case m.clientCAs == nil:
		return nil, errors.New("a TLS listener verifies its clients' certificates: give the CA that signs them (the client CA, or the CA)")
	}
	return &tls.Config{
		MinVersion:         s.files.minVersion(),
		GetConfigForClient: s.configForClient,
	}, nil
}

func (s *Store) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	return s.cur.Load().server, nil
}

// serverGeneration builds the configuration of m's listener handshakes.
func (s *Store) serverGeneration(m *material) *tls.Config {
	return &tls.Config{
		MinVersion:       s.files.minVersion(),
		Certificates:     []tls.Certificate{*m.cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        m.clientCAs,
		VerifyConnection: s.verifyClient,
	}
}

// verifyClient refuses a verified client certificate that names none of
// the allowed identities. It runs for resumed sessions too.
func (s *Store) verifyClient(cs tls.ConnectionState) error {
	allow := s.files.Allow
	if len(allow) == 0 {
		return nil
	}
	var ids []string
	if len(cs.PeerCertificates) > 0 {
		ids = clientIdentities(cs.PeerCertificates[0])
	}
	for _, id := range ids {
		if slices.Contains(allow, id) {
			return nil
		}
	}
	return &IdentityError{Presented: ids, Allowed: allow}
}

// ClientConfig returns a configuration for dialling TLS backends, which
// verifies the backend against ServerName, or else the SNI name that the
// caller sets on a clone: prefer [Store.ClientConfigFor], which knows the
// dialled host, IP addresses included (an IP is not sent as SNI), and
// which needs no clone per connection.
func (s *Store) ClientConfig() *tls.Config {
	return s.clientConfig("", s.files.ServerName)
}

// ClientConfigFor returns the configuration for dialling the TLS backend
// at addr, host:port (or a host alone): it verifies the backend's
// certificate against the CA (or the system's roots) and ServerName, or
// else the host, presents this ambassador's certificate if there is one,
// and resumes sessions from the cache that all configurations share. The
// proxy calls it for each dial, with tls.Client(conn, cfg): it is a map
// look-up, and returns the same *tls.Config for the same addr.
func (s *Store) ClientConfigFor(addr string) *tls.Config {
	if c, ok := s.clients.Load(addr); ok {
		return c.(*tls.Config)
	}
	name := s.files.ServerName
	if name == "" {
		name = addr
		if host, _, err := net.SplitHostPort(addr); err == nil {
			name = host
		}
	}
	c, loaded := s.clients.LoadOrStore(addr, s.clientConfig(addr, name))
	if !loaded && s.nClients.Add(1) > maxClientConfigs {
		s.nClients.Store(0)
		s.clients.Clear()
	}
	return c.(*tls.Config)
}

// clientConfig builds a client configuration that verifies name (or, if
// empty, the SNI name), with its sessions keyed by addr as well.
func (s *Store) clientConfig(addr, name string) *tls.Config {
	b := &backend{s: s, name: name}
	return &tls.Config{
		MinVersion:           s.files.minVersion(),
		ServerName:           name,
		Renegotiation:        tls.RenegotiateNever,
		ClientSessionCache:   hostSessions{s.sessions, addr},
		GetClientCertificate: s.clientCertificate,
		// Go's verification would use a pool fixed in the
		// configuration: VerifyConnection does it with the current one.
		InsecureSkipVerify: true,
		VerifyConnection:   b.verify,
	}
}

// clientCertificate presents this ambassador's current certificate
// whenever a backend asks for one, even if the backend's list of CAs does
// not name its issuer: the backend then says what it refuses, where Go's
// default would send none.
func (s *Store) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := s.cur.Load().cert; c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// backend verifies the certificates of one dialled backend.
type backend struct {
	s    *Store
	name string // the name verified; empty means the SNI name
	// last is the leaf last verified, which spares a resumed session (it
	// keeps the *x509.Certificate) a chain verification.
	last atomic.Pointer[verified]
}

// verified is a leaf that chained to m's roots and named name, until the
// first expiry in its chain.
type verified struct {
	leaf  *x509.Certificate
	m     *material
	name  string
	until time.Time
}

// verify does what Go's verification would, against the current CAs: the
// chain, for server authentication, then the name.
func (b *backend) verify(cs tls.ConnectionState) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("the backend presented no certificate")
	}
	m, leaf, now := b.s.cur.Load(), certs[0], time.Now()
	name := b.name
	if name == "" {
		name = cs.ServerName
	}
	if name == "" {
		return errors.New("no server name to verify the backend's certificate by: set --tls-server-name, or dial with ClientConfigFor")
	}
	if v := b.last.Load(); v != nil && v.leaf == leaf && v.m == m && v.name == name && now.Before(v.until) {
		return nil
	}
	opts := x509.VerifyOptions{
		Roots:         m.roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		err = &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
		if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
			if ca := b.s.files.CA; ca != "" {
				return fmt.Errorf("%w: the backend's certificate is not signed by a CA in %s: put its CA there", err, ca)
			}
			return fmt.Errorf("%w: the backend's certificate is not signed by a CA of the system's roots: give its CA", err)
		}
		return err
	}
	if leaf.VerifyHostname(name) != nil {
		return &IdentityError{Presented: serverIdentities(leaf), Allowed: []string{name}, Backend: true}
	}
	until := leaf.NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	b.last.Store(&verified{leaf: leaf, m: m, name: name, until: until})
	return nil
}

// hostSessions keys the shared session cache by the dialled address as
// well: Go keys it by the server name alone, so backends behind one
// ServerName, or on two ports of one host, would evict each other's
// sessions and offer each other tickets they cannot decrypt.
type hostSessions struct {
	cache tls.ClientSessionCache
	addr  string
}

func (h hostSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return h.cache.Get(h.addr + "|" + key)
}

func (h hostSessions) Put(key string, cs *tls.ClientSessionState) {
	h.cache.Put(h.addr+"|"+key, cs)
}

// IdentityError is a peer's certificate refused for what it names, its
// signature being good: a client certificate that names no allowed
// identity, or a backend's certificate not issued for the server name
// verified. [Reason] classifies it as "identity".
type IdentityError struct {
	// Presented are the identities the certificate names: a client's URI
	// SANs, DNS SANs and subject common name; a backend's DNS and IP SANs.
	Presented []string
	// Allowed are the identities accepted: Files.Allow, or the one
	// server name verified.
	Allowed []string
	// Backend tells a backend's certificate, refused by a dialling
	// ambassador, from a client's, refused by a listener.
	Backend bool
}

// Error names the identities and says the fix.
func (e *IdentityError) Error() string {
	if e.Backend {
		name := strings.Join(e.Allowed, " ")
		return fmt.Sprintf("backend's certificate is for %v, not %s: set --tls-server-name or issue the certificate for %s", e.Presented, name, name)
	}
	return fmt.Sprintf("client certificate is for %v, and only %v are allowed: issue the client a certificate for an allowed identity, or allow one of its own",
		e.Presented, e.Allowed)
}

// clientIdentities are what Files.Allow may match in a client's
// certificate.
func clientIdentities(c *x509.Certificate) []string {
	var ids []string
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	ids = append(ids, c.DNSNames...)
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	return ids
}

// serverIdentities are the names a backend's certificate is valid for (Go
// ignores the common name).
func serverIdentities(c *x509.Certificate) []string {
	ids := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		ids = append(ids, ip.String())
	}
	return ids
}
