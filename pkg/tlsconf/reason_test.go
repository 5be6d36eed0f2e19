package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestReason: each kind of handshake error, as either side sees it, has
// its label. TestHandshake and TestVersions check the real ones of a
// handshake; these are the others, and the wrapped forms.
func TestReason(t *testing.T) {
	// received is an alert as crypto/tls reports one from the peer: a
	// value of an unexported type, whose text is tls.AlertError's.
	received := func(a uint8) error {
		return &net.OpError{Op: "remote error", Err: errors.New(tls.AlertError(a).Error())}
	}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{name: "none", err: nil, want: ""},
		{name: "identity refused", err: fmt.Errorf("handshake: %w", &IdentityError{}), want: "identity"},
		{name: "host name", err: &tls.CertificateVerificationError{Err: x509.HostnameError{Host: "x"}}, want: "identity"},
		{name: "unknown CA", err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, want: "unknown_ca"},
		{name: "expired", err: &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}, want: "expired"},
		{name: "not for this use", err: &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.IncompatibleUsage}}, want: "bad_certificate"},
		{name: "another verification error", err: &tls.CertificateVerificationError{Err: errors.New("x509: too many intermediates")}, want: "bad_certificate"},
		{name: "unknown_ca received", err: received(48), want: "unknown_ca"},
		{name: "certificate_expired received", err: received(45), want: "expired"},
		{name: "bad_certificate received", err: received(42), want: "bad_certificate"},
		{name: "unsupported_certificate received", err: received(43), want: "bad_certificate"},
		{name: "certificate_required received", err: received(116), want: "no_certificate"},
		{name: "access_denied received", err: received(49), want: "identity"},
		{name: "protocol_version received", err: received(70), want: "protocol"},
		{name: "handshake_failure received", err: received(40), want: "protocol"},
		{name: "an AlertError", err: fmt.Errorf("quic: %w", tls.AlertError(48)), want: "unknown_ca"},
		{name: "no certificate sent", err: errors.New("tls: client didn't provide a certificate"), want: "no_certificate"},
		{name: "no common version", err: errors.New("tls: client offered only unsupported versions: [303]"), want: "protocol"},
		{name: "an unparsable certificate", err: errors.New("tls: failed to parse client certificate: x509: malformed"), want: "bad_certificate"},
		{name: "not TLS", err: tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, want: "protocol"},
		{name: "deadline", err: &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, want: "timeout"},
		{name: "context deadline", err: context.DeadlineExceeded, want: "timeout"},
		{name: "closed", err: io.EOF, want: "other"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Reason(tt.err))
		})
	}
}

// TestReasonOfPeers: a handshake with a peer that does not speak TLS is a
// protocol failure, one that does not answer a timeout.
func TestReasonOfPeers(t *testing.T) {
	for _, tt := range []struct {
		name string
		peer func(net.Conn)
		want string
	}{
		{name: "not TLS", peer: func(c net.Conn) { io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n") }, want: "protocol"},
		{name: "silent", peer: func(net.Conn) {}, want: "timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, peer := net.Pipe()
			defer c.Close()
			defer peer.Close()
			go io.Copy(io.Discard, peer) // the ClientHello: a pipe's writes wait for their reader
			go tt.peer(peer)
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			err := tls.Client(c, &tls.Config{InsecureSkipVerify: true}).HandshakeContext(ctx)
			assert.Equal(t, tt.want, Reason(err), "%v", err)
		})
	}
}
