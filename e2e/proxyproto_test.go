//go:build e2e

package e2e

// The PROXY protocol (issue 19) against peers no one here wrote: Debian's
// haproxy as the backend (bind ... accept-proxy, answering each HTTP
// request with the source and destination it took from the header) and
// as an upstream load balancer (server ... send-proxy-v2), and nginx's
// stream module as the backend (listen ... proxy_protocol, returning
// $proxy_protocol_addr and logging it). The ambassadors are the binary
// the run built, on the host and on 127.0.0.1, without an engine; the
// clients connect from other loopback addresses (127.0.0.3, ...), so that
// the address the far end sees is the client's, exactly, and not any
// proxy's. proxyproto_engine_test.go drives the backend label through
// the engine. Every helper's name starts with pp.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// ppStreamModule is libnginx-mod-stream's module.
const ppStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// ppNeed skips the test when haproxy or nginx's stream module is missing,
// unless an engine is required (CI), where .ci/setup installs them.
func ppNeed(t *testing.T) {
	t.Helper()
	tlsNeed(t, "haproxy")
	if _, err := os.Stat(ppStreamModule); err != nil {
		if os.Getenv(requireEngineEnv) == "1" {
			t.Fatalf("%s=1, but nginx's stream module is not installed (.ci/setup installs nginx-light and libnginx-mod-stream)", requireEngineEnv)
		}
		t.Skip("nginx's stream module is not installed (.ci/setup installs nginx-light and libnginx-mod-stream)")
	}
}

// ppProcess is a peer (haproxy, nginx) run in the foreground on the
// host, stopped when the test ends.
type ppProcess struct {
	name   string
	cmd    *exec.Cmd
	out    *engineRestartOutput
	exited chan struct{}
}

// ppStart runs name with args, and waits until it accepts on addr.
func ppStart(t *testing.T, ctx context.Context, addr, name string, args ...string) *ppProcess {
	t.Helper()
	p := &ppProcess{name: name, cmd: exec.Command(name, args...), out: &engineRestartOutput{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	t.Logf("$ %s %s", name, strings.Join(args, " "))
	require.NoError(t, p.cmd.Start())
	go p.wait()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, p.out)
		}
	})
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	// Listening is seen by a bind that fails, not by a connection, which
	// haproxy in front of an ambassador would pass on, and the ambassador
	// count.
	require.NoError(t, harness.Poll(ctx, func(context.Context) error {
		select {
		case <-p.exited:
			return harness.Permanent(fmt.Errorf("%s exited", name))
		default:
		}
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return fmt.Errorf("nothing listens on %s yet", addr)
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		return nil
	}), "%s's output:\n%s", name, p.out)
	return p
}

// wait reaps the process; a named function so that stack dumps say what
// the goroutine is.
func (p *ppProcess) wait() {
	p.cmd.Wait()
	close(p.exited)
}

// ppHAProxy runs haproxy with conf (its global and defaults sections are
// added), and waits until it accepts on addr.
func ppHAProxy(t *testing.T, ctx context.Context, addr, conf string) *ppProcess {
	t.Helper()
	conf = `global
	maxconn 256
defaults
	timeout connect 5s
	timeout client 10s
	timeout server 10s
` + conf
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o644))
	t.Logf("$ cat %s\n%s", path, conf)
	return ppStart(t, ctx, addr, "haproxy", "-db", "-f", path)
}

// ppNginx runs nginx's stream module listening on port with
// proxy_protocol: it returns, and logs to the file it returns, the
// client's address and port from the header, then the destination's.
func ppNginx(t *testing.T, ctx context.Context, port int) (logFile string) {
	t.Helper()
	dir := t.TempDir()
	logFile = filepath.Join(dir, "access.log")
	conf := fmt.Sprintf(`load_module %s;
daemon off;
worker_processes 1;
pid %s;
error_log %s warn;
events {
	worker_connections 64;
}
stream {
	log_format pp '$proxy_protocol_addr:$proxy_protocol_port $proxy_protocol_server_addr:$proxy_protocol_server_port';
	access_log %s pp;
	server {
		listen 127.0.0.1:%d proxy_protocol;
		return "$proxy_protocol_addr:$proxy_protocol_port $proxy_protocol_server_addr:$proxy_protocol_server_port\n";
	}
}
`, ppStreamModule, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), logFile, port)
	path := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o644))
	t.Logf("$ cat %s\n%s", path, conf)
	bin := "/usr/sbin/nginx"
	if p, err := exec.LookPath("nginx"); err == nil {
		bin = p
	}
	ppStart(t, ctx, enginesListen(port), bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	return logFile
}

// ppDial connects to addr from the loopback address from.
func ppDial(t *testing.T, ctx context.Context, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	t.Cleanup(func() { c.Close() })
	return c
}

// ppAskHAProxy sends an HTTP request from the loopback address from to
// addr (haproxy, or a route to it), and returns the client and the
// answer's body: "SRC:PORT DST:PORT" as haproxy took them from its header.
func ppAskHAProxy(t *testing.T, ctx context.Context, from, addr string) (net.Conn, string) {
	t.Helper()
	c := ppDial(t, ctx, from, addr)
	_, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: pp\r\n\r\n")
	require.NoError(t, err)
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	require.True(t, ok, "not an HTTP answer: %q", b)
	require.True(t, strings.HasPrefix(string(b), "HTTP/1.0 200") || strings.HasPrefix(string(b), "HTTP/1.1 200"), "answer: %q", b)
	return c, strings.TrimSpace(body)
}

// ppAskNginx connects from the loopback address from to addr (nginx, or
// a route to it), and returns the client and what nginx returned.
func ppAskNginx(t *testing.T, ctx context.Context, from, addr string) (net.Conn, string) {
	t.Helper()
	c := ppDial(t, ctx, from, addr)
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	return c, strings.TrimSpace(string(b))
}

// ppWaitLog waits until the log file has a line equal to want.
func ppWaitLog(t *testing.T, ctx context.Context, file, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last string
	err := harness.Poll(ctx, func(context.Context) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		last = string(b)
		for line := range strings.Lines(last) {
			if strings.TrimSpace(line) == want {
				return nil
			}
		}
		return errors.New("not logged yet")
	})
	require.NoError(t, err, "nginx's log has no line %q:\n%s", want, last)
}

// TestProxyProtocolPeers: the client's address reaches the far end
// exactly, through one ambassador (--send-proxy v1) and through two
// (the first sends v1, the second accepts it from the first's address
// and sends v2 on), to haproxy and to nginx; and through haproxy as the
// upstream load balancer (send-proxy-v2) to an ambassador that accepts
// it, to nginx. The destination the far end sees is the one the client
// connected to, the first proxy's. A client of the accepting ambassador
// from an address it does not trust is reset, its spoofed header never
// taken, and one without a header too, each counted.
func TestProxyProtocolPeers(t *testing.T) {
	t.Parallel()
	ppNeed(t)
	ctx := setup(t)

	haproxyPort, nginxPort := tlsFreePort(t), tlsFreePort(t)
	haproxyAddr := enginesListen(haproxyPort)
	ppHAProxy(t, ctx, haproxyAddr, fmt.Sprintf(`frontend fe
	mode http
	bind %s accept-proxy
	http-request return status 200 content-type text/plain lf-string "%%[src]:%%[src_port] %%[dst]:%%[dst_port]"
`, haproxyAddr))
	nginxLog := ppNginx(t, ctx, nginxPort)

	// The server side: accepts headers from 127.0.0.1 only (the client
	// side's and haproxy's connections come from there), sends v2.
	sH, sN, sU := tlsFreePort(t), tlsFreePort(t), tlsFreePort(t)
	server := tlsAmbassador(t, ctx, []int{sH, sN, sU},
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", sH, haproxyPort),
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", sN, nginxPort),
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", sU, nginxPort),
		"--accept-proxy", "all", "--accept-proxy-from", "127.0.0.1",
		"--send-proxy", "all", "--send-proxy-version", "v2")
	// The client side: one hop to the peers, or two through the server
	// side; sends v1.
	cH, cN, cH2, cN2 := tlsFreePort(t), tlsFreePort(t), tlsFreePort(t), tlsFreePort(t)
	tlsAmbassador(t, ctx, []int{cH, cN, cH2, cN2},
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", cH, haproxyPort),
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", cN, nginxPort),
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", cH2, sH),
		"--route", fmt.Sprintf("%d:127.0.0.1:%d", cN2, sN),
		"--send-proxy", "all", "--send-proxy-version", "v1")
	// haproxy as the upstream load balancer, in front of the server side.
	upPort := tlsFreePort(t)
	upAddr := enginesListen(upPort)
	ppHAProxy(t, ctx, upAddr, fmt.Sprintf(`frontend up
	mode tcp
	bind %s
	default_backend amb
backend amb
	mode tcp
	server amb 127.0.0.1:%d send-proxy-v2
`, upAddr, sU))

	for _, tt := range []struct {
		name, from string
		port       int // where the client connects
		nginx      bool
	}{
		{name: "one ambassador to haproxy", from: "127.0.0.3", port: cH},
		{name: "one ambassador to nginx", from: "127.0.0.3", port: cN, nginx: true},
		{name: "two ambassadors to haproxy", from: "127.0.0.4", port: cH2},
		{name: "two ambassadors to nginx", from: "127.0.0.4", port: cN2, nginx: true},
		{name: "haproxy upstream, an ambassador, nginx", from: "127.0.0.5", port: upPort, nginx: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			to := enginesListen(tt.port)
			var c net.Conn
			var got string
			if tt.nginx {
				c, got = ppAskNginx(t, ctx, tt.from, to)
			} else {
				c, got = ppAskHAProxy(t, ctx, tt.from, to)
			}
			want := c.LocalAddr().String() + " " + to
			t.Logf("client %s → %s; the far end took %q", c.LocalAddr(), to, got)
			require.True(t, strings.HasPrefix(want, tt.from+":"), "the client's address: %s", want)
			assert.Equal(t, want, got, "the client's address and the one it connected to, as the far end took them")
			if tt.nginx {
				ppWaitLog(t, ctx, nginxLog, want)
			}
		})
	}

	f := tlsMetrics(t, ctx, server)
	assert.Equal(t, 2.0, tlsSum(f, "ambassadord_proxy_headers_accepted_total", map[string]string{"version": "v1"}), "from the client side")
	assert.Equal(t, 1.0, tlsSum(f, "ambassadord_proxy_headers_accepted_total", map[string]string{"version": "v2"}), "from haproxy")
	assert.Equal(t, 3.0, tlsSum(f, "ambassadord_proxy_headers_sent_total", map[string]string{"version": "v2"}))

	t.Run("untrusted client with a spoofed header", func(t *testing.T) {
		before := tlsSum(tlsMetrics(t, ctx, server), "ambassadord_connections_total", map[string]string{"route": strconv.Itoa(sN)})
		// The reset comes as soon as the connection is accepted: on
		// loopback, often before the connect returns.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.66")}, Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", enginesListen(sN))
		if err == nil {
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			c.Write([]byte("PROXY TCP4 203.0.113.9 127.0.0.1 4000 " + strconv.Itoa(sN) + "\r\n"))
			var b []byte
			b, err = io.ReadAll(c)
			assert.Empty(t, b, "nothing from nginx")
		}
		if err != nil {
			require.ErrorIs(t, err, syscall.ECONNRESET, "a reset, not a timeout")
		}
		ppWaitRejected(t, ctx, server, "untrusted", 1)
		f := tlsMetrics(t, ctx, server)
		assert.Equal(t, before, tlsSum(f, "ambassadord_connections_total", map[string]string{"route": strconv.Itoa(sN)}), "no backend reached")
		assert.Equal(t, 1.0, tlsSum(f, "ambassadord_connections_rejected_total", map[string]string{"route": strconv.Itoa(sN), "reason": "proxy_header"}))
	})
	t.Run("trusted client without a header", func(t *testing.T) {
		c := ppDial(t, ctx, "127.0.0.1", enginesListen(sH))
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		b, _ := io.ReadAll(c)
		assert.Empty(t, b, "nothing from haproxy")
		ppWaitRejected(t, ctx, server, "missing", 1)
	})
}

// ppWaitRejected waits until a's PROXY header rejections for reason
// count n.
func ppWaitRejected(t *testing.T, ctx context.Context, a *engineRestartAmb, reason string, n float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var got float64
	err := harness.Poll(ctx, func(ctx context.Context) error {
		f, err := scrape(ctx, a.admin+"/metrics")
		if err != nil {
			return err
		}
		if got = tlsSum(f, "ambassadord_proxy_headers_rejected_total", map[string]string{"reason": reason}); got != n {
			return fmt.Errorf("%v rejected for %s", got, reason)
		}
		return nil
	})
	require.NoError(t, err, "PROXY headers rejected for %s: %v, want %v", reason, got, n)
}
