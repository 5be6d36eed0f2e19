package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
)

// The TLS alerts (RFC 8446, section 6) that Reason tells apart; any other
// is "protocol".
const (
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertAccessDenied           = 49 // a valid certificate, refused by access control
	alertCertificateRequired    = 116
)

// alertCodes maps an alert's text to its code: crypto/tls reports an alert
// received from the peer as a *net.OpError ("remote error") around a value
// of an unexported type, whose text is that of tls.AlertError.
var alertCodes = func() map[string]tls.AlertError {
	m := make(map[string]tls.AlertError, 256)
	for a := range 256 {
		m[tls.AlertError(a).Error()] = tls.AlertError(a)
	}
	return m
}()

// Reason classifies a failed handshake, on either side, for a metric's
// label: "unknown_ca" (the certificate's issuer is not trusted), "expired",
// "identity" (an [IdentityError], or the peer's access_denied),
// "bad_certificate" (another refusal of a certificate, among them Go's
// answer to any refusal by VerifyConnection: see the package doc),
// "no_certificate" (a client sent none; TLS 1.2 has no alert for it, and
// such a client sees "protocol"), "protocol" (no common version,
// another alert, not TLS at all), "timeout", or "other". A nil error has
// no reason: "".
func Reason(err error) string {
	if err == nil {
		return ""
	}
	if _, ok := errors.AsType[*IdentityError](err); ok {
		return "identity"
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return "identity"
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return "unknown_ca"
	}
	if e, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		if e.Reason == x509.Expired {
			return "expired"
		}
		return "bad_certificate"
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return "bad_certificate"
	}
	if a, ok := alert(err); ok {
		return alertReason(a)
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return "protocol"
	}
	if timeout(err) {
		return "timeout"
	}
	// What remains of crypto/tls's own refusals are plain errors: tell
	// them by their text.
	switch msg := err.Error(); {
	case strings.Contains(msg, "didn't provide a certificate"):
		return "no_certificate"
	case strings.Contains(msg, "tls: ") && strings.Contains(msg, "certificate"):
		return "bad_certificate"
	case strings.Contains(msg, "tls: "):
		return "protocol"
	}
	return "other"
}

// alert finds the TLS alert in err: one received from the peer, or a
// tls.AlertError (which QUIC connections return).
func alert(err error) (tls.AlertError, bool) {
	if a, ok := errors.AsType[tls.AlertError](err); ok {
		return a, true
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "remote error" && op.Err != nil {
		a, ok := alertCodes[op.Err.Error()]
		return a, ok
	}
	return 0, false
}

func alertReason(a tls.AlertError) string {
	switch a {
	case alertUnknownCA:
		return "unknown_ca"
	case alertCertificateExpired:
		return "expired"
	case alertAccessDenied:
		return "identity"
	case alertCertificateRequired:
		return "no_certificate"
	case alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked, alertCertificateUnknown:
		return "bad_certificate"
	}
	return "protocol"
}

// timeout reports whether err is a deadline that passed.
func timeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}
