package proxy

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkThroughput moves one large stream over loopback, directly and
// through a Route (splice, and the buffered idle-timeout path), so the three
// are measured side by side in one run: compare their MB/s.
func BenchmarkThroughput(b *testing.B) {
	const chunk = 1 << 20
	sink := func(b *testing.B) string {
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
					io.Copy(io.Discard, c)
				}()
			}
		}()
		return ln.Addr().String()
	}
	via := func(b *testing.B, backend string, idle bool) string {
		r := &Route{}
		if idle {
			r.IdleTimeout = 1 << 40
		}
		r.SetBackends([]Backend{{Addr: backend}})
		ln, err := Listen(context.Background(), "127.0.0.1:0")
		require.NoError(b, err)
		go r.Serve(ln)
		b.Cleanup(func() { r.Close() })
		return ln.Addr().String()
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
	b.Run("splice", func(b *testing.B) { run(b, via(b, sink(b), false)) })
	b.Run("buffered", func(b *testing.B) { run(b, via(b, sink(b), true)) })
}
