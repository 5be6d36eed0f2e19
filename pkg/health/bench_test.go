package health

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// BenchmarkCheck measures one check's cost: a tcp check and a send/expect
// check of a loopback listener (whose accepts run in the same process,
// and count), through Go's net (the goroutine path) and through the
// monitor's own connects (probe_linux.go).
func BenchmarkCheck(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				pong(c)
				c.Close()
			}()
		}
	}()
	for _, chk := range []source.Check{
		{Kind: source.CheckTCP, Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1},
		{Kind: source.CheckSend, Send: "PING\r\n", Expect: "+PONG", Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1},
	} {
		c := &checker{target: Target{Addr: ln.Addr().String(), Check: chk}}
		b.Run(chk.Kind+"/net", func(b *testing.B) {
			m := &Monitor{}
			for b.Loop() {
				if err := m.check(context.Background(), c); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(chk.Kind+"/own", func(b *testing.B) {
			m := &Monitor{}
			for b.Loop() {
				if err := m.probe(context.Background(), []*checker{c})[0]; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
