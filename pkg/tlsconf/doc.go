// Package tlsconf owns the TLS material ambassadord loads from files (its
// certificate and key, the CA that verifies backends, the CA that verifies
// clients) and hands out *tls.Config values for mutual TLS between
// ambassadors. It knows nothing of Docker, routes or flags: pkg/proxy sees
// only *tls.Config, and the commands build a [Store] from [Files].
//
// The configurations never need replacing. Every callback they hold reads
// the material in use when it runs: a listener's handshake takes the
// configuration of the current generation from GetConfigForClient (built
// once per reload, not per handshake), a dial presents the current
// certificate from GetClientCertificate and verifies the backend in
// VerifyConnection against the current CAs (Go's own verification is
// switched off for that, InsecureSkipVerify, and VerifyConnection runs
// for resumed sessions too). So when [Store.Run] sees a file change and
// the new set is valid, the next handshake uses it, and established
// connections, whose handshakes are done, are untouched. A new set that is
// not valid is refused with one log line, and the old one stays in use
// (the refused set is tried again at each poll, silently, so that a
// certificate not yet valid comes into use when it becomes valid).
//
// A dial takes its configuration from [Store.ClientConfigFor], which keeps
// one per backend address (a map look-up; no clone per connection), so
// that the name verified is the dialled host's, IP addresses included.
// [Store.ClientConfig] is for a caller that clones it and sets ServerName.
//
// Rotation is detected by polling, once a second, each file's size,
// modification time and inode (following symlinks) and the path its
// symlinks resolve to: Kubernetes and compose update a secret by swapping
// a ..data symlink, so the path stays the same while the file behind it
// is another one.
//
// Handshake errors, on either side, are classified for metrics by
// [Reason]. Go sends a peer whose certificate VerifyConnection refuses the
// alert bad_certificate, whatever the cause: a client refused by its
// identity sees "bad_certificate" where the listener counts "identity",
// and a listener refused by a dialling ambassador sees "bad_certificate"
// where the dialler counts "unknown_ca", "expired" or "identity".
//
// Concurrency contract: a Store is safe for concurrent use, and so are the
// configurations it returns, which must not be modified (clone one to
// change it). The material is replaced whole (atomic.Pointer) and never
// mutated after publication. [Store.Run] owns the one polling goroutine,
// the caller's; it must not be called twice at once.
package tlsconf
