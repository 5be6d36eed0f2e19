package daemon

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// localPrefixes returns the addresses the ambassador listens on, for
// refusing a backend that is the ambassador itself: listen, or with
// listen empty or unspecified every address of the machine's (or the
// container's) interfaces, the loopback ranges whole, and the unspecified
// addresses, which reach a listener on every address too.
func localPrefixes(listen string) []netip.Prefix {
	if a, err := netip.ParseAddr(listen); err == nil && !a.IsUnspecified() {
		a = a.Unmap().WithZone("")
		return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
	}
	out := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128"),
	}
	addrs, _ := net.InterfaceAddrs() // none known: the loopback and unspecified ones still count
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				ip = ip.Unmap()
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	return out
}

// selfLoopLookupTimeout bounds the start-up lookup of a static route's
// host name for SelfLoops: a name that does not resolve at once is not
// the ambassador's own address as far as start-up can tell.
const selfLoopLookupTimeout = time.Second

// dnsLookup returns the lookup SelfLoops uses: the host names that DNS
// will resolve at connect time are resolved once. Those are the backends
// of static specs, and a target's fallback where it is used: without an
// engine, or with a dot in it (see resolver.Resolve); an engine resolves
// a plain target name.
func dnsLookup(specs []resolver.Spec, follow bool) func(string) []netip.Addr {
	names := map[string]bool{}
	for _, s := range specs {
		for _, e := range s.Backends {
			if s.Target == "" || !follow || strings.Contains(strings.TrimSuffix(e.Host, "."), ".") {
				names[e.Host] = true
			}
		}
	}
	return func(host string) []netip.Addr {
		if !names[host] {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), selfLoopLookupTimeout)
		defer cancel()
		addrs, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		return addrs
	}
}
