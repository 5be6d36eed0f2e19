package proxy

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkThroughput moves one large stream over loopback, directly and
// through a Route by each of its data paths (see dataPaths), so they are
// measured side by side in one run: compare their MB/s.
func BenchmarkThroughput(b *testing.B) {
	const chunk = 1 << 20
	sink := func(b *testing.B) string {
		return benchServer(b, func(c net.Conn) { io.Copy(io.Discard, c) })
	}
	buf := make([]byte, chunk)
	run := func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		require.NoError(b, err)
		defer c.Close()
		b.SetBytes(chunk)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, sink(b)) })
	for _, path := range benchPaths {
		b.Run(path, func(b *testing.B) { run(b, benchRoute(b, sink(b), path)) })
	}
}

// BenchmarkRoundTrip measures small request/response exchanges (100 bytes
// each way, one at a time, like a redis GET) directly and through a Route
// by each of its data paths: compare their ns/op.
func BenchmarkRoundTrip(b *testing.B) {
	const size = 100
	echoServer := func(b *testing.B) string {
		return benchServer(b, func(c net.Conn) {
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		})
	}
	run := func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		require.NoError(b, err)
		defer c.Close()
		msg, got := make([]byte, size), make([]byte, size)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, echoServer(b)) })
	for _, path := range benchPaths {
		b.Run(path, func(b *testing.B) { run(b, benchRoute(b, echoServer(b), path)) })
	}
}

// benchServer serves every connection on a loopback listener with handle,
// closing it after, and returns the address.
func benchServer(b *testing.B, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// benchPaths are the names of dataPaths, in the order benchmarks run them.
var benchPaths = []string{"loop", "goroutines", "idle"}

// benchRoute serves a Route to backend on loopback, by the data path named
// path, and returns its address.
func benchRoute(b *testing.B, backend, path string) string {
	r := dataPaths[path]()
	r.SetBackends([]Backend{{Addr: backend}})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(b, err)
	go r.Serve(ln)
	b.Cleanup(func() { r.Close() })
	return ln.Addr().String()
}
