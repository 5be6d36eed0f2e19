package daemon

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// proxyReader is a backend that reads a PROXY header (go-proxyproto's
// parser) from each connection, sends its source address on the channel
// ("" for a connection without a valid header), and echoes the rest.
func proxyReader(t *testing.T) (addr string, sources <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srcs := make(chan string, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil || h.SourceAddr == nil {
					srcs <- ""
					return
				}
				srcs <- h.SourceAddr.String() + " v" + strconv.Itoa(int(h.Version))
				io.Copy(c, br)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), srcs
}

// TestProxyProtocolChain: two daemons chained as two ambassadors on two
// hosts: the client side sends a v1 header (--send-proxy), the server
// side accepts it from its trusted address (--accept-proxy,
// --accept-proxy-from) and sends the first client's address on, as v2,
// to a backend labelled ambassador.proxy-protocol=v2. A client that
// reaches the server side without a header is reset and counted.
func TestProxyProtocolChain(t *testing.T) {
	backend, sources := proxyReader(t)
	clientSide, serverSide := nettest.FreePort(t), nettest.FreePort(t)
	opts := testOptions(t, strconv.Itoa(serverSide)+":svc:1")
	opts.AcceptProxyPorts = []int{serverSide}
	opts.AcceptProxyFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	d, m := newTestDaemon(t, opts)
	claimer := loopbackContainer("svc", nettest.Port(t, backend), map[string]string{resolver.LabelTarget: "svc", resolver.LabelProxyProtocol: "v2"})
	d.update(context.Background(), 0, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{claimer}}})

	copts := testOptions(t, strconv.Itoa(clientSide)+":127.0.0.1:"+strconv.Itoa(serverSide))
	copts.SendProxyPorts, copts.SendProxyVersion = []int{clientSide}, proxy.ProxyV1
	cd, cm := newTestDaemon(t, copts)
	cd.update(context.Background(), 0, source.Update{Connected: true, Snapshot: &source.Snapshot{}})

	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(clientSide))
	require.NoError(t, err)
	defer c.Close()
	requireEcho(t, c)
	select {
	case src := <-sources:
		assert.Equal(t, c.LocalAddr().String()+" v2", src, "the backend sees the first client's address")
	case <-time.After(5 * time.Second):
		t.Fatal("the backend saw no connection")
	}
	assert.Equal(t, 1.0, metricstest.Value(t, metricstest.Scrape(t, cm.Handler()), "ambassadord_proxy_headers_sent_total", metricstest.Labels{"route": strconv.Itoa(clientSide), "version": "v1"}))
	f := metricstest.Scrape(t, m.Handler())
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_proxy_headers_accepted_total", metricstest.Labels{"route": strconv.Itoa(serverSide), "version": "v1"}))
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_proxy_headers_sent_total", metricstest.Labels{"route": strconv.Itoa(serverSide), "version": "v2"}))

	// A client straight to the server side, without a header: reset.
	direct, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(serverSide))
	require.NoError(t, err)
	defer direct.Close()
	direct.Write([]byte("ping"))
	require.NoError(t, direct.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := direct.Read(make([]byte, 4))
	assert.Zero(t, n)
	assert.Error(t, err)
	require.Eventually(t, func() bool {
		v, ok := metricstest.Sample(metricstest.Gather(m.Handler()), "ambassadord_proxy_headers_rejected_total", metricstest.Labels{"route": strconv.Itoa(serverSide), "reason": "missing"})
		return ok && v == 1
	}, 5*time.Second, 10*time.Millisecond)
	select {
	case src := <-sources:
		t.Fatalf("the backend saw a connection without a header: %q", src)
	default:
	}
}
