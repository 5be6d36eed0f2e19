package dnsload

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMessage: a query, and dnsmasq's answer to it parsed.
func TestMessage(t *testing.T) {
	q := Query(0xbeef, "who.test")
	assert.Equal(t, []byte{0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'h', 'o', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}, q)
	// dnsmasq's answer to it: the question, then the answer with its name
	// compressed to a pointer to the question's.
	resp := append(slices.Clone(q), 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 0, 0, 2)
	resp[2], resp[3], resp[7] = 0x85, 0x80, 1
	id, a, err := Answer(resp)
	require.NoError(t, err)
	assert.Equal(t, uint16(0xbeef), id)
	assert.Equal(t, netip.MustParseAddr("10.0.0.2"), a)
	_, _, err = Answer(q)
	assert.ErrorContains(t, err, "not a response")
	_, _, err = Answer(resp[:len(resp)-2])
	assert.ErrorContains(t, err, "cut short")
}

// answering serves DNS on loopback: every query is answered with addr,
// except the first skip ones, which are dropped.
func answering(t *testing.T, addr netip.Addr, skip int) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for n := 0; ; n++ {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < skip {
				continue
			}
			resp := append(slices.Clone(buf[:m]), 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4)
			resp = append(resp, addr.AsSlice()...)
			resp[2], resp[3], resp[7] = 0x85, 0x80, 1
			pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestLoad: a load's long-lived flows and fresh sockets are answered and
// recorded; a dropped datagram is retried and counted lost, its query
// not.
func TestLoad(t *testing.T) {
	who := netip.MustParseAddr("10.0.0.7")
	addr := answering(t, who, 1)
	l, err := Start(addr, "who.test", Config{Fresh: 5 * time.Millisecond, Flows: 2, Every: 5 * time.Millisecond, Tries: 2, Timeout: 200 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, l.WaitAnswered(ctx, 0, who, time.Time{}, 5))
	require.NoError(t, l.WaitAnswered(ctx, -1, who, time.Time{}, 5))
	ts := l.Stop()
	assert.Len(t, ts.Lost(), 1, "the dropped datagram: %s", ts.Describe())
	assert.Zero(t, ts.LostQueries(), "its retry answered")
	assert.Equal(t, len(ts), len(ts.By(who))+1)
	assert.NotEmpty(t, ts.Flow(1))
	ip, err := Ask(ctx, addr, "who.test", time.Second)
	require.NoError(t, err)
	assert.Equal(t, who, ip)
}
