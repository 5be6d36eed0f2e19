package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tlsSampled returns a TLS bench with a few measurements: two rounds of
// SET req/s and of failed new connections, one of idle memory (none for
// direct), and a bulk CPU figure without stunnel's.
func tlsSampled(t *testing.T) *tlsBench {
	t.Helper()
	tb := newTLSBench(newBench(quick, candidates("/x/ambassadord", "")), "/x/ambassadord")
	for ci, vs := range [][]float64{{100000, 120000}, {20000, 30000}, {30000, 31000}, {50000, 60000}} {
		for _, v := range vs {
			tb.add("set-rps", ci, v)
			tb.add("newconn-failed", ci, float64(ci))
		}
	}
	for ci, v := range []float64{math.NaN(), 200, 140, 1.8} {
		if ci != tlsDirect {
			tb.add("idle-rss-kib", ci, v)
		}
	}
	tb.add("bulk-cpu", tlsAmbassadord, 1.5)
	tb.add("bulk-cpu", tlsPlain, 0.5)
	return tb
}

func TestTLSTable(t *testing.T) {
	var w strings.Builder
	tlsSampled(t).table(&w)
	want := `| metric | direct | stunnel pair | ambassadord pair (TLS) | ambassadord pair (plaintext) | TLS ÷ stunnel | TLS ÷ plaintext | issue 16 goal |
|---|---|---|---|---|---|---|---|
| bulk: both sides' CPU-s per GB | — | — | 1.500 | 0.500 |  | 3.00× | not judged: no stunnel figure |
| SET -c 50: req/s | 110,000 | 25,000 (0.23×) | 30,500 (0.28×) | 55,000 (0.50×) | 1.22× | 0.55× | met: ≥1.2× stunnel |
| new connections: failed (sum over rounds) | 0 | 2 | 4 | 6 |  |  |  |
| idle: both sides' KiB per connection (VmRSS) | — | 200.0 | 140.0 | 1.8 | 0.70× | 77.78× | **not met**: ≤2× plaintext |
`
	assert.Equal(t, want, w.String())
}

func TestTLSGoals(t *testing.T) {
	m := func(stunnel, amb, plain float64) []float64 { return []float64{1, stunnel, amb, plain} }
	for _, tc := range []struct {
		name string
		goal func([]float64) string
		m    []float64
		want string
	}{
		{"throughput met", vsStunnel(1.5, true), m(4, 6, 8), "met: ≥1.5× stunnel"},
		{"throughput short", vsStunnel(1.5, true), m(4, 5.9, 8), "**not met**: ≥1.5× stunnel"},
		{"CPU met", vsStunnel(0.7, false), m(1, 0.7, 0.3), "met: ≤0.7× stunnel"},
		{"CPU over", vsStunnel(0.7, false), m(1, 0.71, 0.3), "**not met**: ≤0.7× stunnel"},
		{"no stunnel", vsStunnel(1.0, true), m(math.NaN(), 1, 1), "not judged: no stunnel figure"},
		{"memory met", tlsVsPlain(2), m(100, 3.6, 1.8), "met: ≤2× plaintext"},
		{"memory over", tlsVsPlain(2), m(100, 3.7, 1.8), "**not met**: ≤2× plaintext"},
		{"no plaintext", tlsVsPlain(2), m(100, 3.7, math.NaN()), "not judged: no plaintext figure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.goal(tc.m))
		})
	}
}

func TestHandshakes(t *testing.T) {
	before := parseMetrics(`# HELP ambassadord_tls_handshakes_total TLS handshakes
ambassadord_tls_handshakes_total{result="ok",route="24171",side="backend"} 20
go_goroutines 12
`)
	after := parseMetrics(`ambassadord_tls_handshakes_total{result="ok",route="24171",side="backend"} 21
ambassadord_tls_handshakes_total{result="resumed",route="24171",side="backend"} 99
ambassadord_tls_handshakes_total{result="unknown_ca",route="24171",side="backend"} 5
ambassadord_tls_handshakes_total{result="resumed",route="24171",side="listen"} 7
go_goroutines 40
`)
	assert.Equal(t, 12.0, before["go_goroutines"])
	assert.Equal(t, 40.0, after["go_goroutines"])
	resumed, total := handshakes(after, before)
	assert.Equal(t, 99.0, resumed)
	assert.Equal(t, 100.0, total, "failed handshakes and the listen side are not counted")
}

// TestPKI checks that the run's certificates make a mutual TLS handshake
// with Go on both ends, the server verifying the client's certificate.
func TestPKI(t *testing.T) {
	p, err := newPKI(t.TempDir())
	require.NoError(t, err)
	for _, key := range []string{p.serverKey, p.clientKey} {
		fi, err := os.Stat(key)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), key)
	}
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	require.NoError(t, err)
	caPEM, err := os.ReadFile(p.ca)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	require.NoError(t, err)
	defer ln.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peer <- err.Error()
			return
		}
		defer c.Close()
		if err := c.(*tls.Conn).Handshake(); err != nil {
			peer <- err.Error()
			return
		}
		peer <- c.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
		io.Copy(io.Discard, c)
	}()
	cfg, err := p.clientConfig()
	require.NoError(t, err)
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "bench-client", <-peer)
	assert.Equal(t, uint16(tls.VersionTLS13), c.ConnectionState().Version)
}

// TestPingLoop runs the new-connection loop against a redis of its own
// that answers PING, and once against one that answers something else.
func TestPingLoop(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		wantOK       int
	}{
		{"pong", "+PONG\r\n", 30},
		{"wrong answer", "-ERR x\r\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
							io.WriteString(c, tc.answer)
						}
					}()
				}
			}()
			res := pingLoop(context.Background(), ln.Addr().String(), 4, 30, 0)
			assert.Equal(t, tc.wantOK, res.ok)
			assert.Equal(t, 30-tc.wantOK, res.failed)
			assert.Len(t, res.latencies, tc.wantOK)
			if tc.wantOK == 0 {
				assert.ErrorContains(t, res.err, "want +PONG")
			}
			timed := pingLoop(context.Background(), ln.Addr().String(), 2, 0, 50*time.Millisecond)
			assert.Positive(t, timed.ok+timed.failed)
			assert.GreaterOrEqual(t, timed.elapsed, 50*time.Millisecond)
		})
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	assert.Equal(t, time.Duration(99), percentile(ds, 0.99))
	assert.Equal(t, time.Duration(100), percentile(ds, 1))
	assert.Equal(t, time.Duration(0), percentile(nil, 0.99))
}
