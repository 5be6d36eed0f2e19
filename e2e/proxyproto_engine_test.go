//go:build e2e

package e2e

// The PROXY protocol through the engine (issue 19): a backend container
// says with its label ambassador.proxy-protocol=v2 that it expects a
// header, and the ambassador container that serves its target sends one;
// the backend is Debian's haproxy, packed into an image of this run,
// with accept-proxy, answering each HTTP request with the source it took
// from the header. proxyproto_test.go has the host peers and the helpers
// (pp*).

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// ppHAProxyImage builds an image of the host's haproxy serving conf.
func ppHAProxyImage(t *testing.T, ctx context.Context, conf string) string {
	t.Helper()
	tlsNeed(t, "haproxy")
	files, err := harness.Rootfs(ctx, deployHAProxy)
	require.NoError(t, err)
	tag := eng.ImageTag("pp-haproxy-" + strings.ToLower(testPrefix(t)))
	files = append(files,
		harness.File{Name: "haproxy.cfg", Mode: 0o644, Data: []byte(conf)},
		harness.File{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM scratch\nCOPY rootfs/ /\nCOPY haproxy.cfg /haproxy.cfg\n" +
			"ENTRYPOINT [\"" + deployHAProxy + "\", \"-db\", \"-f\", \"/haproxy.cfg\"]\n")})
	require.NoError(t, eng.BuildImage(ctx, tag, files, nil))
	return tag
}

// TestProxyProtocolLabel: a claimer labelled ambassador.proxy-protocol=v2
// (haproxy with accept-proxy) gets a v2 header carrying the client's
// address, exactly, from the ambassador container serving its target. A
// claimer of higher priority whose label is malformed is refused, not
// served without a header: the status says why. An ambassador accepting
// PROXY headers only from its own loopback resets a peer on the network
// that sends one (the host here, as any container there would), before
// reading it: the spoofed address never reaches the backend.
func TestProxyProtocolLabel(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	img := ppHAProxyImage(t, ctx, `global
	maxconn 256
defaults
	timeout connect 5s
	timeout client 10s
	timeout server 10s
frontend fe
	mode http
	bind :80 accept-proxy
	http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port] %[dst]:%[dst_port]"
`)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	web := start(t, ctx, harness.Spec{Name: "web", Image: img, Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: svc, "ambassador.proxy-protocol": "v2"}})
	start(t, ctx, harness.Spec{Name: "bad", Image: img, Networks: []string{n.Name},
		Labels: map[string]string{labelTarget: svc, labelPriority: "10", "ambassador.proxy-protocol": "v3"}})
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: "8080:80,8081:80"},
		Cmd:      append([]string{"--accept-proxy", "8081", "--accept-proxy-from", "127.0.0.1"}, publicAdmin...),
	})
	target := addr(amb, 8080)
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, harness.WaitTCP(wctx, target))

	// The first answer may come before the route has its backend: poll.
	var c net.Conn
	var got string
	err := harness.Poll(wctx, func(ctx context.Context) error {
		d := net.Dialer{Timeout: 5 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: pp\r\n\r\n"); err != nil {
			return err
		}
		b, err := io.ReadAll(conn)
		if err != nil {
			return err
		}
		_, body, ok := strings.Cut(string(b), "\r\n\r\n")
		if !ok {
			return errors.New("no HTTP answer yet")
		}
		c, got = conn, strings.TrimSpace(body)
		return nil
	})
	require.NoError(t, err, "an answer from haproxy through %s", target)
	want := c.LocalAddr().String() + " " + target
	t.Logf("client %s → %s; haproxy in %s took %q", c.LocalAddr(), target, web.Name, got)
	assert.Equal(t, want, got, "the client's address and the one it connected to, as haproxy took them from the header")

	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "status", "--json")
	require.Zero(t, code, stderr)
	assert.Contains(t, stdout, `malformed ambassador.proxy-protocol \"v3\": want v1 or v2`, "the refused claimer, and why")

	// A peer on the network (not the ambassador's loopback) sending a
	// header on the route that accepts them: reset, unread.
	d := net.Dialer{Timeout: 5 * time.Second}
	spoof, err := d.DialContext(ctx, "tcp", addr(amb, 8081))
	if err == nil {
		defer spoof.Close()
		spoof.SetDeadline(time.Now().Add(10 * time.Second))
		spoof.Write([]byte("PROXY TCP4 203.0.113.9 10.0.0.1 4000 80\r\nGET / HTTP/1.0\r\n\r\n"))
		var b []byte
		b, err = io.ReadAll(spoof)
		assert.Empty(t, b, "nothing from haproxy")
	}
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET, "a reset, not a timeout")
	}
	mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
	defer mcancel()
	require.NoError(t, harness.Poll(mctx, func(ctx context.Context) error {
		f, err := scrape(ctx, "http://"+addr(amb, ambAdminPort)+"/metrics")
		if err != nil {
			return err
		}
		if v := tlsSum(f, "ambassadord_proxy_headers_rejected_total", map[string]string{"route": "8081", "reason": "untrusted"}); v != 1 {
			return errors.New("untrusted: " + strconv.FormatFloat(v, 'f', -1, 64))
		}
		if v := tlsSum(f, "ambassadord_connections_total", map[string]string{"route": "8081"}); v != 0 {
			return errors.New("a connection on 8081 reached a backend")
		}
		return nil
	}))
}
