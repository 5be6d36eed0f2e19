//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
)

// payload is the size sent in each direction; rounds is how many
// exchanges run on each path (alternating, the best kept) to damp noise
// on a shared machine.
const (
	payload = 100 << 20
	rounds  = 3
)

// TestIntegrity sends 100 MiB through an ambassador, half-closes, and
// checks the SHA-256 the fixture computed over what arrived; then checks
// 100 MiB streamed back. The fixture answers only after it sees EOF, so a
// proxy that drops the half-close fails here. The same transfer straight
// to the fixture gives the baseline throughput. Every round checks both
// digests; the best of the rounds is reported.
//
// Not parallel: Go runs it before the parallel tests, so the throughput
// numbers are not disturbed by them.
func TestIntegrity(t *testing.T) {
	ctx := setup(t)
	fixture := start(t, ctx, harness.Spec{Name: "dataserver", Image: dataImage})
	require.NoError(t, harness.WaitTCP(ctx, addr(fixture, 9000)))
	amb := startAmbassador(t, ctx, harness.Spec{
		Env: []string{fmt.Sprintf("DATA_PORT_9000_TCP=tcp://%s", addr(fixture, 9000))},
	}, 9000)

	// Generate both directions' data and touch the receive buffer before
	// timing anything, so the numbers measure the network path and not the
	// generator, the hash or page faults.
	x := exchange{up: streamBytes(t, 1), downSeed: 2, recv: streamBytes(t, 3)}
	x.upSum = sha256.Sum256(x.up)
	x.downSum = sha256.Sum256(streamBytes(t, x.downSeed))

	var direct, proxied rates
	for range rounds {
		direct = direct.best(x.run(t, ctx, addr(fixture, 9000)))
		proxied = proxied.best(x.run(t, ctx, addr(amb, 9000)))
	}

	t.Logf("%d MiB each way, best of %d:", payload>>20, rounds)
	t.Logf("direct:     upload %7.1f MiB/s, download %7.1f MiB/s", direct.up, direct.down)
	t.Logf("ambassador: upload %7.1f MiB/s, download %7.1f MiB/s", proxied.up, proxied.down)
	t.Logf("ambassador/direct: upload %.2f, download %.2f", proxied.up/direct.up, proxied.down/direct.down)
}

func streamBytes(t *testing.T, seed uint64) []byte {
	t.Helper()
	b := make([]byte, payload)
	_, err := io.ReadFull(dataproto.Stream(seed), b)
	require.NoError(t, err)
	return b
}

// rates are throughputs in MiB/s.
type rates struct{ up, down float64 }

// best returns the higher rate of r and o for each direction.
func (r rates) best(o rates) rates { return rates{max(r.up, o.up), max(r.down, o.down)} }

// exchange is one integrity exchange's data: what to send, the seed the
// fixture streams back, both expected digests, and a buffer to receive into.
type exchange struct {
	up       []byte
	upSum    [32]byte
	downSeed uint64
	downSum  [32]byte
	recv     []byte // len(recv) == payload
}

// run performs the exchange against addr and returns the throughput of
// each direction. Upload time runs until the digest arrives (the fixture
// has hashed everything); download time from there to EOF.
func (x exchange) run(t *testing.T, ctx context.Context, addr string) rates {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(2*time.Minute)))
	tc := c.(*net.TCPConn)

	start := time.Now()
	_, err = tc.Write(dataproto.Header{Mode: dataproto.ModeIntegrity, Seed: x.downSeed, Reply: payload}.Encode())
	require.NoError(t, err)
	_, err = tc.Write(x.up)
	require.NoError(t, err, "send payload to %s", addr)
	require.NoError(t, tc.CloseWrite())

	var got [32]byte
	_, err = io.ReadFull(tc, got[:])
	require.NoError(t, err, "read digest from %s (the fixture answers only after EOF: was the half-close forwarded?)", addr)
	upDone := time.Now()
	assert.Equal(t, x.upSum, got, "SHA-256 of what the fixture received via %s", addr)

	_, err = io.ReadFull(tc, x.recv)
	require.NoError(t, err, "read stream from %s", addr)
	n, err := tc.Read(got[:])
	require.Equal(t, io.EOF, err, "end of stream from %s (read %d more bytes)", addr, n)
	downDone := time.Now()
	assert.Equal(t, x.downSum, sha256.Sum256(x.recv), "SHA-256 of what arrived from %s", addr)

	mib := float64(payload) / (1 << 20)
	return rates{
		up:   mib / upDone.Sub(start).Seconds(),
		down: mib / downDone.Sub(upDone).Seconds(),
	}
}
