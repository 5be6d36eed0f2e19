package watcher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/versions"
)

// ErrUnreachable is wrapped by [Check]'s error when the engine could not
// be reached at all: nothing answered (refused, timed out, no route, a
// missing socket, a name that does not resolve), or a proxy in front of it
// answered that it is unavailable (HTTP 5xx). That is no configuration
// error: the caller starts anyway, and the Watcher follows the engine once
// it answers.
var ErrUnreachable = errors.New("unreachable")

// checkTimeout bounds Check's ping.
const checkTimeout = 5 * time.Second

// minAPIVersion is the oldest engine API the watcher follows: Docker 20.10.
const minAPIVersion = "1.41"

// Check validates spec's TLS directory ([EngineSpec.Validate]), then pings
// the engine once, for at most 5s (less if ctx says so), to tell at start a
// configuration that can never work from an engine that is merely down. It
// returns:
//
//   - nil when the engine answered;
//   - an error wrapping [ErrUnreachable] when nothing answered: the caller
//     starts anyway, logging that it follows the engine once it answers;
//   - ctx's error when ctx was cancelled;
//   - any other error when the engine cannot be followed as configured:
//     the TLS directory (`engine "NAME": ...`, Validate's), or
//     (`engine "NAME" at URL: ...`) the engine's certificate not signed by
//     ca.pem, the engine refusing the client certificate, a server name
//     the engine's certificate was not issued for, a plain engine given
//     tls= or a TLS one given insecure, an engine older than API 1.41, or
//     an engine that answers the ping with an error of its own (HTTP 4xx).
//     Those errors say what to fix.
//
// Check makes a client of its own and closes it. Checks of several engines
// may run concurrently.
func Check(ctx context.Context, spec EngineSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	var status atomic.Int64 // the last HTTP status the engine answered
	cli, err := newEngineClient(spec, client.WithHTTPResponseHook(func(r *http.Response) {
		status.Store(int64(r.StatusCode))
	}))
	if err != nil {
		return err
	}
	defer cli.Close()
	pctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	res, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true})
	if err == nil {
		if res.APIVersion != "" && versions.LessThan(res.APIVersion, minAPIVersion) {
			return fmt.Errorf("engine %q at %s: it speaks API %s, and ambassadord follows engines from API %s (Docker 20.10) on: upgrade the engine",
				spec.Name, spec.URL, res.APIVersion, minAPIVersion)
		}
		return nil
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	return spec.checkError(err, int(status.Load()))
}

// checkError turns Check's ping error into what the caller acts on. status
// is the last HTTP status the engine answered, 0 for none.
func (s EngineSpec) checkError(err error, status int) error {
	if x := s.explain(err); x != err {
		return fmt.Errorf("engine %q at %s: %w", s.Name, s.URL, x)
	}
	if status >= http.StatusInternalServerError || status == 0 && unreachable(err) {
		return fmt.Errorf("engine %q at %s: %w: %w", s.Name, s.URL, ErrUnreachable, err)
	}
	return fmt.Errorf("engine %q at %s: ping: %w", s.Name, s.URL, err)
}

// unreachable reports whether a ping failed without reaching the engine.
// The Docker client replaces the cause of a refused or timed-out connection
// by "Cannot connect to the Docker daemon", a connection failure: the
// connection errors it marks so are unreachable, once explain has picked
// out those about TLS and permissions.
func unreachable(err error) bool {
	var dnsErr *net.DNSError
	var netErr net.Error
	return client.IsErrConnectionFailed(err) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &dnsErr) ||
		errors.As(err, &netErr) && netErr.Timeout() ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, os.ErrNotExist)
}

// explain turns the errors of an engine given by --engine that a
// configuration causes into errors that say what is wrong and how to fix
// it, wrapping err; it returns other errors unchanged. It is [Explain] for
// these engines: the local engine's advice (mounts, --docker-host) is not
// theirs.
func (s EngineSpec) explain(err error) error {
	if err == nil {
		return nil
	}
	var done *explainedError
	if errors.As(err, &done) {
		return err
	}
	if msg := s.advice(err); msg != "" {
		return &explainedError{msg: msg, err: err}
	}
	return err
}

// advice returns what is wrong and its fix, or "" for an error that is no
// configuration's.
func (s EngineSpec) advice(err error) string {
	ca, cert := filepath.Join(s.TLSDir, caFile), filepath.Join(s.TLSDir, certFile)
	var (
		hostErr  x509.HostnameError
		authErr  x509.UnknownAuthorityError
		certErr  x509.CertificateInvalidError
		verifErr *tls.CertificateVerificationError
		recErr   tls.RecordHeaderError
	)
	const enableTLS = "enable TLS on the engine (dockerd --tlsverify --tlscacert --tlscert --tlskey, on port 2376), " +
		"or, on a network you trust, replace tls= with insecure"
	switch {
	case errors.Is(err, http.ErrSchemeMismatch):
		return "the engine answers in plain HTTP, not TLS, and this engine has tls=: " + enableTLS
	case s.TLSDir != "" && errors.As(err, &recErr):
		return "the engine does not answer in TLS, and this engine has tls=: check the port, or " + enableTLS
	case errors.As(err, &authErr):
		issuer := "an unknown CA"
		if authErr.Cert != nil {
			issuer = fmt.Sprintf("%q", authErr.Cert.Issuer.String())
		}
		return fmt.Sprintf("the engine's certificate, issued by %s, is not signed by a CA in %s: "+
			"put in %s the certificate of the CA that signed the engine's (dockerd --tlscert)", issuer, ca, ca)
	case errors.As(err, &hostErr):
		return hostnameAdvice(hostErr, s.URL)
	case errors.As(err, &certErr) && certErr.Reason == x509.Expired && certErr.Cert != nil:
		if c := certErr.Cert; time.Now().Before(c.NotBefore) {
			return fmt.Sprintf("the engine's certificate is not valid before %s: check that both hosts' clocks agree",
				c.NotBefore.UTC().Format(timeFormat))
		}
		return fmt.Sprintf("the engine's certificate expired on %s: renew it (dockerd --tlscert), and check that both hosts' clocks agree",
			certErr.Cert.NotAfter.UTC().Format(timeFormat))
	case errors.As(err, &certErr) || errors.As(err, &verifErr):
		var cause error = certErr
		if verifErr != nil {
			cause = verifErr.Err
		}
		return fmt.Sprintf("the engine's certificate does not verify against %s (%v): "+
			"give the engine a certificate issued for server authentication by a CA in %s", ca, cause, ca)
	}
	if a, ok := remoteAlert(err); ok {
		switch a {
		case alertUnknownCA:
			return fmt.Sprintf("the engine refuses our client certificate %s: it was not issued by a CA the engine trusts (remote error: %v): "+
				"issue %s from the CA of the engine's dockerd --tlscacert", cert, a, certFile)
		case alertCertificateExpired:
			return fmt.Sprintf("the engine refuses our client certificate %s as expired (remote error: %v): "+
				"issue a new one, and check that both hosts' clocks agree", cert, a)
		case alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked, alertCertificateUnknown, alertCertificateRequired:
			return fmt.Sprintf("the engine refuses our client certificate %s (remote error: %v): "+
				"issue it from the CA of the engine's dockerd --tlscacert, for client authentication (extendedKeyUsage = clientAuth)", cert, a)
		case alertHandshakeFailure, alertProtocolVersion, alertInsufficientSecurity:
			return fmt.Sprintf("the engine ends the TLS handshake (remote error: %v): "+
				"it may refuse our client certificate %s, or want TLS settings this client lacks (it speaks TLS 1.2 and 1.3)", a, cert)
		}
	}
	if s.TLSDir == "" && strings.HasPrefix(s.URL, "tcp://") && answersTLS(err) {
		return "the engine speaks TLS, and this engine has insecure instead of tls=: replace insecure with tls=DIR, " +
			"a directory with the engine's CA (ca.pem) and a client certificate (cert.pem, key.pem)"
	}
	if path, ok := strings.CutPrefix(s.URL, "unix://"); ok &&
		(errors.Is(err, os.ErrPermission) || client.IsErrConnectionFailed(err) && strings.Contains(err.Error(), "permission denied")) {
		return fmt.Sprintf("permission denied on %s: run ambassadord as a user of the socket's group (docker run --group-add $(stat -c %%g %s)), or as root",
			path, path)
	}
	return ""
}

// answersTLS reports whether a plain HTTP client's error shows a TLS
// server: Go's (dockerd's) answers 400 "Client sent an HTTP request to an
// HTTPS server", nginx's 400 "The plain HTTP request was sent to HTTPS
// port", and others send a TLS alert, which is no HTTP response.
func answersTLS(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "HTTP request to an HTTPS server") ||
		strings.Contains(msg, "plain HTTP request was sent to HTTPS port") ||
		strings.Contains(msg, "malformed HTTP response \"\\x15\\x03")
}

// hostnameAdvice explains a server name the engine's certificate was not
// issued for, suggesting one it was.
func hostnameAdvice(e x509.HostnameError, url string) string {
	var names []string
	if c := e.Certificate; c != nil {
		names = append(names, c.DNSNames...)
		for _, ip := range c.IPAddresses {
			names = append(names, ip.String())
		}
	}
	if len(names) == 0 {
		return fmt.Sprintf("the engine's certificate is not valid for %s, nor any name or IP (it has no subjectAltName): "+
			"reissue it with %s in its subjectAltName", e.Host, e.Host)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "tcp://"))
	suggest := "tcp://" + net.JoinHostPort(names[0], port)
	address := ""
	if ip := net.ParseIP(e.Host); ip != nil {
		address = fmt.Sprintf(", and address=%s for the ports its containers publish", e.Host)
	}
	return fmt.Sprintf("the engine's certificate is not valid for %s, only for %s: give in the URL the name or IP it was issued for (%s)%s; "+
		"or reissue it with %s in its subjectAltName", e.Host, strings.Join(names, ", "), suggest, address, e.Host)
}

// The TLS alerts explain tells apart (RFC 8446, section 6).
const (
	alertHandshakeFailure       tls.AlertError = 40
	alertBadCertificate         tls.AlertError = 42
	alertUnsupportedCertificate tls.AlertError = 43
	alertCertificateRevoked     tls.AlertError = 44
	alertCertificateExpired     tls.AlertError = 45
	alertCertificateUnknown     tls.AlertError = 46
	alertUnknownCA              tls.AlertError = 48
	alertProtocolVersion        tls.AlertError = 70
	alertInsufficientSecurity   tls.AlertError = 71
	alertCertificateRequired    tls.AlertError = 116
)

// remoteAlert returns the TLS alert the engine sent, if err is one. Go
// reports it as a *net.OpError "remote error" around a value of an
// unexported type, whose text is the alert's: that of the tls.AlertError
// of the same number.
func remoteAlert(err error) (tls.AlertError, bool) {
	var op *net.OpError
	for e := err; e != nil; e = errors.Unwrap(e) {
		if o, ok := e.(*net.OpError); ok && o.Op == "remote error" && o.Err != nil {
			op = o
			break
		}
	}
	if op == nil {
		return 0, false
	}
	text := op.Err.Error()
	for a := range tls.AlertError(255) {
		if a.Error() == text {
			return a, true
		}
	}
	return 0, false
}
