//go:build e2e

package e2e

// The fault suite, slow and stuck peers: a backend that takes a
// connection and never reads, a client that sends and half-closes, a slow
// reader, and the idle timeout against idle and trickling connections.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// faultSysctlMax returns the maximum (third) value of a TCP buffer sysctl
// such as net/ipv4/tcp_rmem. Containers' network namespaces inherit the
// host's values.
func faultSysctlMax(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	require.NoError(t, err)
	f := strings.Fields(string(b))
	require.Len(t, f, 3, "%s: %q", name, b)
	v, err := strconv.ParseInt(f[2], 10, 64)
	require.NoError(t, err)
	return v
}

// faultRSS returns the ambassador's resident memory from its metrics.
func faultRSS(t *testing.T, ctx context.Context, amb *harness.Container) float64 {
	t.Helper()
	return faultMetric(t, ctx, amb, "process_resident_memory_bytes", nil)
}

// TestFaultStuckBackend: a client writes as fast as it can to a backend
// that has accepted its connection and then never reads (it is paused
// with docker pause after the connection is established: its kernel keeps
// the connection open but the process takes nothing).
//
// Nothing lost, and no unbounded buffering, means: the client's writes
// stop being accepted after at most what the kernel's socket buffers on
// the path can hold (client send buffer, the ambassador's receive buffer,
// its 1 MiB splice pipe and send buffer, the backend's receive buffer:
// every bound read from the sysctls), the ambassador's resident memory
// does not grow with the bytes held (it holds none in user space), and once
// the backend is unpaused every byte accepted comes back through the echo,
// in order, and the connection ends cleanly.
func TestFaultStuckBackend(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	stuck := startServer(t, ctx, harness.Spec{Name: "stuck", Networks: []string{n.Name}}, "stuck")
	amb := faultFollower(t, ctx, n, fullName(t, "stuck"))
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "stuck")

	rmem, wmem := faultSysctlMax(t, "net/ipv4/tcp_rmem"), faultSysctlMax(t, "net/ipv4/tcp_wmem")
	const clientSend, pipe = 256 << 10, 1 << 20
	// The kernel doubles SO_SNDBUF for its bookkeeping.
	bound := 2*clientSend + rmem + pipe + wmem + rmem

	s := openSession(t, ctx, target)
	require.Equal(t, "stuck", s.ID.Name)
	require.NoError(t, s.Conn.SetWriteBuffer(clientSend))
	echo(t, s, "before it gets stuck")
	rssBefore := faultRSS(t, ctx, amb)

	faultPause(t, ctx, stuck)
	// Write until no byte is taken for 2 s, or past the bound.
	const stall = 2 * time.Second
	chunk := make([]byte, 256<<10)
	src := dataproto.Stream(11)
	var accepted int64
	var pending []byte
	start := time.Now()
	for accepted <= bound+int64(len(chunk)) {
		if len(pending) == 0 {
			io.ReadFull(src, chunk)
			pending = chunk
		}
		require.NoError(t, s.Conn.SetWriteDeadline(time.Now().Add(stall)))
		w, err := s.Conn.Write(pending)
		accepted += int64(w)
		pending = pending[w:]
		if errors.Is(err, os.ErrDeadlineExceeded) && w == 0 {
			break
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			require.NoError(t, err, "write to the stuck backend")
		}
	}
	t.Logf("the client's writes stalled after %.2f MiB, in %s (kernel bound on the path: %.1f MiB: tcp_rmem max %d, tcp_wmem max %d)",
		float64(accepted)/(1<<20), time.Since(start).Round(time.Millisecond), float64(bound)/(1<<20), rmem, wmem)
	assert.LessOrEqual(t, accepted, bound, "bytes accepted while the backend never read")
	rssStuck := faultRSS(t, ctx, amb)
	t.Logf("ambassador RSS: %.1f MiB before, %.1f MiB with %.2f MiB held", rssBefore/(1<<20), rssStuck/(1<<20), float64(accepted)/(1<<20))
	assert.Less(t, rssStuck-rssBefore, float64(16<<20), "the ambassador's RSS grew with the bytes held")

	// The part of the chunk that was not accepted is never sent: the echo
	// must return exactly the accepted bytes, then EOF.
	faultUnpause(t, ctx, stuck)
	require.NoError(t, s.Conn.CloseWrite())
	require.NoError(t, s.Conn.SetReadDeadline(time.Now().Add(readyTimeout)))
	got := sha256.New()
	echoed, err := io.Copy(got, s.R)
	require.NoError(t, err, "read the echo after the unpause")
	want := sha256.New()
	io.CopyN(want, dataproto.Stream(11), accepted)
	assert.Equal(t, accepted, echoed, "bytes echoed after the unpause")
	assert.Equal(t, want.Sum(nil), got.Sum(nil), "SHA-256 of the echo")
	t.Logf("after the unpause all %.2f MiB came back, SHA-256 equal, then EOF", float64(echoed)/(1<<20))
	faultWaitActive(t, ctx, amb, 0, 10*time.Second)
}

// TestFaultHalfCloseAndSlowReader, through an ambassador splicing (the
// default) and one copying through user space (--idle-timeout): a client
// uploads 8 MiB, half-closes and reads the 8 MiB answer, which the
// fixture only sends after it has seen the EOF; and a client uploads 4
// MiB and reads a 48 MiB answer slowly (64 KiB every 4 ms, about 15 MiB/s,
// far below what the path can carry, so every buffer on it fills).
//
// Nothing lost means: the fixture's SHA-256 of what it received equals the
// upload's, the answer's SHA-256 equals the stream's, it is exactly the
// length asked for, and it ends with EOF.
func TestFaultHalfCloseAndSlowReader(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	startServer(t, ctx, harness.Spec{Name: "data", Networks: []string{n.Name}}, "data")
	data := fullName(t, "data")
	for _, tt := range []struct {
		name  string
		flags []string
	}{
		{"splice", nil},
		{"idle-timeout", []string{"--idle-timeout", "1s"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A context of its own: parallel subtests wait for a free slot,
			// and the parent's deadline would run meanwhile.
			ctx := setup(t)
			amb := faultFollower(t, ctx, n, data, tt.flags...)
			target := addr(amb, dataPort)
			waitServedBy(t, ctx, target, "data")

			start := time.Now()
			faultExchange(t, ctx, target, 21, 8<<20, 22, 8<<20, 0)
			t.Logf("half-close: 8 MiB up, half-close, 8 MiB down in %s, both SHA-256 equal", time.Since(start).Round(time.Millisecond))

			start = time.Now()
			faultExchange(t, ctx, target, 23, 4<<20, 24, 48<<20, 4*time.Millisecond)
			took := time.Since(start)
			t.Logf("slow reader: 4 MiB up, 48 MiB down read at %.1f MiB/s in %s, both SHA-256 equal", 48/took.Seconds(), took.Round(time.Millisecond))
			faultWaitActive(t, ctx, amb, 0, 10*time.Second)
		})
	}
}

// faultExchange uploads up bytes of Stream(upSeed), half-closes, checks
// the fixture's digest of them, and reads down bytes of Stream(downSeed),
// 64 KiB per read and, with pace, one read per pace, checking their
// SHA-256 and the EOF after them.
func faultExchange(t *testing.T, ctx context.Context, addr string, upSeed uint64, up int64, downSeed uint64, down int64, pace time.Duration) {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	tc := c.(*net.TCPConn)
	require.NoError(t, tc.SetDeadline(time.Now().Add(readyTimeout)))
	_, err = tc.Write(dataproto.Header{Mode: dataproto.ModeIntegrity, Seed: downSeed, Reply: uint64(down)}.Encode())
	require.NoError(t, err)
	sent := sha256.New()
	_, err = io.CopyN(io.MultiWriter(tc, sent), dataproto.Stream(upSeed), up)
	require.NoError(t, err, "upload")
	require.NoError(t, tc.CloseWrite())

	var sum [32]byte
	_, err = io.ReadFull(tc, sum[:])
	require.NoError(t, err, "read the digest (sent only after the fixture saw the half-close)")
	assert.Equal(t, sent.Sum(nil), sum[:], "SHA-256 of what the fixture received")

	got := sha256.New()
	var r io.Reader = tc
	if pace > 0 {
		r = &faultPacedReader{r: tc, every: time.NewTicker(pace)}
	}
	buf := make([]byte, 64<<10)
	n, err := io.CopyBuffer(got, io.LimitReader(r, down+1), buf)
	require.NoError(t, err, "read the answer")
	assert.Equal(t, down, n, "answer length, then EOF")
	want := sha256.New()
	io.CopyN(want, dataproto.Stream(downSeed), down)
	assert.Equal(t, want.Sum(nil), got.Sum(nil), "SHA-256 of the answer")
}

// faultPacedReader reads at most 64 KiB per tick: a slow reader.
type faultPacedReader struct {
	r     io.Reader
	every *time.Ticker
}

func (p *faultPacedReader) Read(b []byte) (int, error) {
	<-p.every.C
	return p.r.Read(b[:min(len(b), 64<<10)])
}

// TestFaultIdleTimeout: an ambassador with --idle-timeout 1s.
//
// Nothing lost, nothing cut early, means: an idle connection is closed
// after the timeout, not before it and not much after (1 s to 2.5 s after
// its last byte); a connection trickling one byte every 300 ms each way
// (an echo) for 4 s, over three timeouts, is not cut and every byte comes
// back; a connection trickling only upwards (the answer waits for the
// half-close) for 3.3 s is not cut either, and its upload's SHA-256 and
// its answer are whole.
func TestFaultIdleTimeout(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	startServer(t, ctx, harness.Spec{Name: "data", Networks: []string{n.Name}}, "data")
	amb := faultFollower(t, ctx, n, fullName(t, "data"), "--idle-timeout", "1s")
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "data")

	const timeout, trickle = time.Second, 300 * time.Millisecond
	// faultIdleCut reads until the connection ends and returns after how
	// long since last, the time of its last byte.
	idleCut := func(s *load.Session, last time.Time) (time.Duration, error) {
		require.NoError(t, s.Conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, err := io.Copy(io.Discard, s.R)
		require.Zero(t, n, "bytes after the last echo")
		if err == nil {
			err = io.EOF
		}
		return time.Since(last), err
	}

	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		s := openSession(t, ctx, target)
		after, err := idleCut(s, time.Now())
		t.Logf("an idle connection was closed (%s) %s after its last byte", load.How(err), after.Round(time.Millisecond))
		assert.True(t, load.Closed(err), "an idle connection ended by %v, want it closed", err)
		assert.GreaterOrEqual(t, after, timeout-50*time.Millisecond, "closed before the idle timeout")
		assert.Less(t, after, 2500*time.Millisecond, "closed long after the idle timeout")
	})

	t.Run("trickle-echo", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		s := openSession(t, ctx, target)
		require.NoError(t, s.Conn.SetDeadline(time.Now().Add(readyTimeout)))
		tick := time.NewTicker(trickle)
		defer tick.Stop()
		start := time.Now()
		var sent int
		for time.Since(start) < 4*time.Second {
			<-tick.C
			_, err := s.Conn.Write([]byte{byte('a' + sent%26)})
			require.NoError(t, err, "write byte %d, %s in", sent, time.Since(start).Round(time.Millisecond))
			b, err := s.R.ReadByte()
			require.NoError(t, err, "echo of byte %d, %s in: the trickling connection was cut", sent, time.Since(start).Round(time.Millisecond))
			require.Equal(t, byte('a'+sent%26), b)
			sent++
		}
		last := time.Now()
		t.Logf("a connection trickling a byte every %s each way lived %s (%d bytes echoed) with --idle-timeout %s", trickle, last.Sub(start).Round(time.Millisecond), sent, timeout)
		after, err := idleCut(s, last)
		t.Logf("then idle, it was closed (%s) %s after its last byte", load.How(err), after.Round(time.Millisecond))
		assert.True(t, load.Closed(err))
		assert.Less(t, after, 2500*time.Millisecond)
	})

	t.Run("trickle-up", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", target)
		require.NoError(t, err)
		defer c.Close()
		tc := c.(*net.TCPConn)
		require.NoError(t, tc.SetDeadline(time.Now().Add(readyTimeout)))
		const reply = 1 << 20
		_, err = tc.Write(dataproto.Header{Mode: dataproto.ModeIntegrity, Seed: 31, Reply: reply}.Encode())
		require.NoError(t, err)
		tick := time.NewTicker(trickle)
		defer tick.Stop()
		start := time.Now()
		var up []byte
		for time.Since(start) < 3300*time.Millisecond {
			<-tick.C
			b := []byte{byte('A' + len(up)%26)}
			_, err := tc.Write(b)
			require.NoError(t, err, "write byte %d, %s in", len(up), time.Since(start).Round(time.Millisecond))
			up = append(up, b...)
		}
		require.NoError(t, tc.CloseWrite())
		var sum [32]byte
		_, err = io.ReadFull(tc, sum[:])
		require.NoError(t, err, "read the digest after %s of upward trickle: the connection was cut", time.Since(start).Round(time.Millisecond))
		assert.Equal(t, sha256.Sum256(up), sum, "SHA-256 of the trickled upload")
		got := sha256.New()
		m, err := io.Copy(got, bufio.NewReader(tc))
		require.NoError(t, err)
		assert.Equal(t, int64(reply), m)
		want := sha256.New()
		io.CopyN(want, dataproto.Stream(31), reply)
		assert.Equal(t, want.Sum(nil), got.Sum(nil))
		t.Logf("a connection trickling %d bytes upwards only, over %s, was not cut; digest and %d KiB answer whole",
			len(up), time.Since(start).Round(time.Millisecond), reply>>10)
	})
}
