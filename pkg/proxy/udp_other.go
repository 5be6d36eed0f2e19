//go:build !linux

package proxy

import "net"

// startLoop reports no loop: elsewhere than on Linux a UDP route is served
// by the goroutine path (udp_goroutine.go).
func (r *UDPRoute) startLoop(*net.UDPConn, *flowTable) (udpOwner, error) { return nil, nil }
