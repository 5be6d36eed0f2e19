package main

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// tcpULP is TCP_ULP from linux/tcp.h: the socket option that attaches an
// upper-layer protocol, such as kernel TLS, to a TCP socket.
const tcpULP = 31

// kernelTLS reports whether this kernel offers kernel TLS (the "tls" TCP
// upper-layer protocol), which would let a proxy hand a connection's
// record encryption to the kernel after a user-space handshake and keep
// splice(2) on the TLS side. It changes nothing on the system: it reads
// what the kernel lists, and tries setsockopt(TCP_ULP, "tls") on a
// connected loopback socket (on port, one of the bench's) only when that
// cannot load a module, since as root the kernel would load tls.ko for it.
func kernelTLS(port int) string {
	ulps := "unreadable"
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp"); err == nil {
		ulps = strings.TrimSpace(string(b))
		if ulps == "" {
			ulps = "none"
		}
	}
	var facts []string
	facts = append(facts, fmt.Sprintf("tcp_available_ulp lists %q", ulps))
	if _, err := os.Stat("/proc/modules"); err != nil {
		facts = append(facts, "no /proc/modules (modules not supported)")
	}
	if c := kernelConfig("CONFIG_TLS"); c != "" {
		facts = append(facts, c)
	}
	listed := strings.Contains(" "+ulps+" ", " tls ")
	if !listed {
		rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
		mods, _ := filepath.Glob(filepath.Join("/lib/modules", strings.TrimSpace(string(rel)), "kernel/net/tls/tls.ko*"))
		if len(mods) > 0 {
			return fmt.Sprintf("Kernel TLS: the tls module is there (%s) but not loaded (%s); not tried, since trying would load it. Whether it pays is not measured here.",
				mods[0], strings.Join(facts, ", "))
		}
	}
	err := attachTLS(port)
	switch {
	case err == nil:
		return fmt.Sprintf("Kernel TLS: offered: setsockopt(TCP_ULP, \"tls\") on a connected loopback socket succeeded (%s).", strings.Join(facts, ", "))
	case errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("Kernel TLS: not offered by this kernel: setsockopt(TCP_ULP, \"tls\") on a connected loopback socket fails with ENOENT (%s), so it cannot pay here: the TLS side's bytes are copied and encrypted in user space.", strings.Join(facts, ", "))
	default:
		return fmt.Sprintf("Kernel TLS: setsockopt(TCP_ULP, \"tls\") on a connected loopback socket fails: %v (%s).", err, strings.Join(facts, ", "))
	}
}

// attachTLS connects to a listener of its own on 127.0.0.1:port and tries
// to attach the "tls" ULP to the connected socket. The socket is closed
// after, with or without it: no key is ever installed.
func attachTLS(port int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	if s, err := ln.Accept(); err == nil {
		defer s.Close()
	}
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, tcpULP, "tls")
	}); err != nil {
		return err
	}
	return serr
}

// kernelConfig returns the line of /proc/config.gz that sets (or leaves
// unset) option, or "" when the kernel does not expose its configuration.
func kernelConfig(option string) string {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return ""
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, option+"=") || line == "# "+option+" is not set" {
			return "/proc/config.gz: " + line
		}
	}
	return ""
}
