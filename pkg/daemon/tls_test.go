package daemon

import (
	"context"
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// TestListenTLS: a route that must listen with TLS is never served in
// plain text: without a configuration to serve it is not served at all,
// with one its proxy route listens with it; TLS backends keep their mark
// on the way to the proxy, which dials them with BackendTLS.
func TestListenTLS(t *testing.T) {
	ctx := context.Background()
	port := nettest.FreePort(t)
	rt := resolver.Route{Name: "r", Protocol: resolver.TCP, Listen: port, ListenTLS: true,
		Backends: []source.Backend{{Addr: "127.0.0.1:1", TLS: true}}}

	d, _ := newTestDaemon(t, testOptions(t))
	err := d.table.apply(ctx, []resolver.Route{rt})
	require.ErrorContains(t, err, "must listen with TLS, and there is no TLS certificate to serve: give --tls-cert, --tls-key and --tls-client-ca (or --tls-ca)")
	_, _, ok := d.table.listening(rt)
	assert.False(t, ok, "not served in plain text")

	opts := testOptions(t)
	opts.ServerTLS = &tls.Config{}
	opts.BackendTLS = func(string) *tls.Config { return nil }
	d, _ = newTestDaemon(t, opts)
	require.NoError(t, d.table.apply(ctx, []resolver.Route{rt}))
	_, p, ok := d.table.listening(rt)
	require.True(t, ok)
	assert.Same(t, opts.ServerTLS, p.(*proxy.Route).TLS())
	assert.NotNil(t, p.(*proxy.Route).BackendTLS)
	require.Len(t, p.Backends(), 1)
	assert.True(t, p.Backends()[0].TLS)

	// The route no longer wants TLS: its listener, kept, accepts plain
	// connections from now on; and TLS again.
	plain := rt
	plain.ListenTLS = false
	require.NoError(t, d.table.apply(ctx, []resolver.Route{plain}))
	_, q, ok := d.table.listening(plain)
	require.True(t, ok)
	assert.Same(t, p, q)
	assert.Nil(t, q.(*proxy.Route).TLS())
	require.NoError(t, d.table.apply(ctx, []resolver.Route{rt}))
	assert.Same(t, opts.ServerTLS, p.(*proxy.Route).TLS())

	// Without a configuration to serve it, a plain route that comes to
	// want TLS stops being served rather than go on in plain text.
	d, _ = newTestDaemon(t, testOptions(t))
	rt.Listen = nettest.FreePort(t)
	plain.Listen = rt.Listen
	require.NoError(t, d.table.apply(ctx, []resolver.Route{plain}))
	_, _, ok = d.table.listening(plain)
	require.True(t, ok)
	require.Error(t, d.table.apply(ctx, []resolver.Route{rt}))
	_, _, ok = d.table.listening(rt)
	assert.False(t, ok)
}
