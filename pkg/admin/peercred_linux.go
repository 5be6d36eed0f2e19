package admin

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCredOf reads the credentials of c's peer (SO_PEERCRED).
func peerCredOf(c net.Conn) (peerCred, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peerCred{}, fmt.Errorf("read peer credentials: %T is not a socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return peerCred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peerCred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	if credErr != nil {
		return peerCred{}, fmt.Errorf("read peer credentials: %w", credErr)
	}
	return peerCred{pid: cred.Pid, uid: cred.Uid}, nil
}
