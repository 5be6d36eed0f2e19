//go:build !linux

package admin

import (
	"errors"
	"net"
)

// peerCredOf cannot read a peer's credentials on this system: SO_PEERCRED
// is Linux's. The socket then serves no peer (each is answered 403) and
// the CLI trusts no socket: refusing is the safe side of a check that
// cannot be made.
func peerCredOf(net.Conn) (peerCred, error) {
	return peerCred{}, errors.New("read peer credentials: not supported on this system")
}
