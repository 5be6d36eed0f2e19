//go:build e2e

package e2e

// The fault suite, file descriptor exhaustion: an ambassador limited to 128
// descriptors (docker run --ulimit nofile=128) and 300 clients at once.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
	"github.com/ambassadord/ambassadord/internal/load"
)

// faultNoFile is the ambassador's descriptor limit (soft and hard), and
// faultClients how many clients connect at once: more than it can serve.
const (
	faultNoFile  = 128
	faultClients = 300
)

// faultStartUlimited starts an ambassador on the default bridge with a
// descriptor limit, which harness.Spec cannot express, and the flags args;
// it waits until the route listens. It is removed when the test ends.
func faultStartUlimited(t *testing.T, ctx context.Context, name string, nofile int64, args ...string) *harness.Container {
	t.Helper()
	spec := harness.Spec{Name: short(t, name), Image: ambassadorImage, Cmd: args}
	t.Logf("$ %s", strings.Replace(eng.Command(spec), " --name ", fmt.Sprintf(" --ulimit nofile=%d:%d --name ", nofile, nofile), 1))
	full := eng.Name(spec.Name)
	created, err := eng.Client.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: full,
		Config: &container.Config{
			Image:  ambassadorImage,
			Cmd:    args,
			Labels: map[string]string{eng.Label: eng.Run},
		},
		HostConfig: &container.HostConfig{Resources: container.Resources{
			Ulimits: []*container.Ulimit{{Name: "nofile", Soft: nofile, Hard: nofile}},
		}},
	})
	require.NoError(t, err)
	c := &harness.Container{ID: created.ID, Name: full}
	t.Cleanup(func() { remove(t, c) })
	_, err = eng.Client.ContainerStart(ctx, c.ID, client.ContainerStartOptions{})
	require.NoError(t, err)
	insp, err := eng.Inspect(ctx, c.ID)
	require.NoError(t, err)
	ep := insp.NetworkSettings.Networks["bridge"]
	require.NotNil(t, ep, "%s is not on the default bridge", full)
	c.IP = ep.IPAddress
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, eng.WaitLog(wctx, c.ID, "route listening"))
	require.NoError(t, harness.WaitTCP(wctx, addr(c, dataPort)))
	return c
}

// faultClient is one of the crowd of clients: it connects, asks whoami,
// and if served echoes 16 KiB (through a splice pipe, if the ambassador
// can still get one) and holds the connection until released.
type faultClient struct {
	served    bool
	echoErr   error         // a served client's echo that failed or differed
	err       error         // why it was not served
	connected time.Duration // from the start of the crowd to the TCP connect
	ended     time.Duration // from its connect to the end of the connection, when not served
}

// faultCrowd connects n clients at once to addr. Each waits up to wait
// for an answer. It returns once every client is served (and holding) or
// has given up, with release, which closes the held connections.
func faultCrowd(ctx context.Context, addr string, n int, wait time.Duration) (cs []faultClient, release func()) {
	cs = make([]faultClient, n)
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	echo := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &cs[i]
			d := net.Dialer{Timeout: wait}
			nc, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				c.err = fmt.Errorf("dial: %w", err)
				return
			}
			connected := time.Now()
			c.connected = connected.Sub(start)
			nc.SetDeadline(connected.Add(wait))
			keep := false
			defer func() {
				if !keep {
					c.ended = time.Since(connected)
					nc.Close()
				}
			}()
			if _, err := nc.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
				c.err = err
				return
			}
			r := bufio.NewReader(nc)
			if _, err := dataproto.ReadIdentity(r); err != nil {
				c.err = err
				return
			}
			c.served, keep = true, true
			if _, err := nc.Write(echo); err != nil {
				c.echoErr = err
			} else {
				got := make([]byte, len(echo))
				if _, err := io.ReadFull(r, got); err != nil {
					c.echoErr = err
				} else if !bytes.Equal(got, echo) {
					c.echoErr = fmt.Errorf("the echo differs")
				}
			}
			nc.SetDeadline(time.Time{})
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return cs, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
}

// faultCount summarises a crowd: how many were served, and how the others
// ended.
func faultCount(cs []faultClient) (served int, others map[string]int) {
	others = map[string]int{}
	for _, c := range cs {
		if c.served {
			served++
		} else {
			others[load.How(c.err)]++
		}
	}
	return served, others
}

// faultLogFDs logs what the ambassador's descriptors are (sockets, pipes,
// others), read from /proc on the host when the test can see its process.
func faultLogFDs(t *testing.T, ctx context.Context, amb *harness.Container) {
	t.Helper()
	insp, err := eng.Inspect(ctx, amb.ID)
	require.NoError(t, err)
	n, kinds, err := fdKinds(insp.State.Pid)
	if err != nil {
		t.Logf("descriptors of %s: %v", amb.Name, err)
		return
	}
	t.Logf("descriptors of %s now: %d, by kind %v", amb.Name, n, kinds)
}

// fdKinds counts the descriptors of process pid, in all and by kind
// (socket, pipe, anon_inode, or the file's path).
func fdKinds(pid int) (int, map[string]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, nil, err
	}
	kinds := map[string]int{}
	for _, e := range entries {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		kind, _, _ := strings.Cut(link, ":")
		kinds[kind]++
	}
	return len(entries), kinds, nil
}

// faultLogCount counts the ambassador's log lines containing substr.
func faultLogCount(t *testing.T, ctx context.Context, amb *harness.Container, substr string) int {
	t.Helper()
	stdout, stderr, err := eng.Logs(ctx, amb.ID)
	require.NoError(t, err)
	return strings.Count(stdout+stderr, substr)
}

// TestFaultFDExhaustion: an ambassador with --ulimit nofile=128 (a static
// route, no Docker socket: the fewest descriptors of its own) and 300
// clients connecting at once, each holding its connection once served.
//
// Without a limit ("exhaustion"), nothing lost means: the ambassador
// serves what its descriptors allow, each served client's echo is whole
// (the splice path falls back to copying when no pipe can be had), the
// accept loop backs off (a bounded number of "accept failed" warnings,
// not a spin) and names the exhaustion, the process survives, and once the
// clients go away new connections are served again, 40 at once, with
// whole echoes.
//
// With --max-conns 40 ("limit"), sized by the README's rule (two
// descriptors per connection, at most an eighth of the limit for splice
// pipes, a few of the process's own: (128·7/8 − 16)/2 = 48), nothing lost
// means: exactly 40 clients are served, the 260 others are closed at once
// (EOF or reset within 2 s of connecting, none left waiting), the
// rejections are counted by
// ambassadord_connections_rejected_total{reason="limit"}, descriptors never
// run out (no accept failure at all), and new connections work afterwards.
func TestFaultFDExhaustion(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	backend := startServer(t, ctx, harness.Spec{Name: "data"}, "data")
	route := fmt.Sprintf("%d:%s", dataPort, addr(backend, dataPort))
	base := []string{"--route", route, "--docker", "off", "--backend-wait", "1s"}
	base = append(base, publicAdmin...)

	t.Run("exhaustion", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		amb := faultStartUlimited(t, ctx, "amb", faultNoFile, base...)
		target := addr(amb, dataPort)
		waitServedBy(t, ctx, target, "data")
		fdsBefore := faultMetric(t, ctx, amb, "process_open_fds", nil)

		start := time.Now()
		cs, release := faultCrowd(ctx, target, faultClients, 6*time.Second)
		served, others := faultCount(cs)
		t.Logf("%d clients at once against %d descriptors (%v open before): %d served, the others %v, in %s",
			faultClients, faultNoFile, fdsBefore, served, others, time.Since(start).Round(time.Millisecond))
		assert.Positive(t, served, "clients served while descriptors ran out")
		for i, c := range cs {
			assert.NoErrorf(t, c.echoErr, "served client %d: echo", i)
		}
		faultLogFDs(t, ctx, amb)
		warnings := faultLogCount(t, ctx, amb, "accept failed; backing off")
		exhausted := faultLogCount(t, ctx, amb, `"fd_exhaustion":true`)
		t.Logf("the ambassador logged %d accept failures, %d naming fd exhaustion, over %s", warnings, exhausted, time.Since(start).Round(time.Millisecond))
		assert.Positive(t, exhausted, "the accept loop never reported fd exhaustion: were descriptors exhausted?")
		assert.Less(t, warnings, 200, "the accept loop does not back off")

		released := time.Now()
		release()
		id := waitServedBy(t, ctx, target, "data")
		t.Logf("served again %s after the clients went away", id.Accepted.Sub(released).Round(time.Millisecond))
		// The crowd's connections end as the ambassador reads their
		// clients' close: until they have, its descriptors are still
		// near the limit, and a new client may find none (in CI, 1 of
		// 40 reset: "fcntl: too many open files").
		faultWaitActive(t, ctx, amb, 0, 10*time.Second)
		cs, release = faultCrowd(ctx, target, 40, 10*time.Second)
		served, others = faultCount(cs)
		release()
		assert.Equal(t, 40, served, "of 40 new clients after the recovery; the others %v", others)
		for i, c := range cs {
			assert.NoErrorf(t, c.echoErr, "client %d after the recovery: echo", i)
		}
		faultWaitActive(t, ctx, amb, 0, 10*time.Second)
		t.Logf("open descriptors: %v before the crowd, %v after it left", fdsBefore, faultMetric(t, ctx, amb, "process_open_fds", nil))
	})

	t.Run("limit", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		const limit = 40
		amb := faultStartUlimited(t, ctx, "amb-limited", faultNoFile, append(base, "--max-conns", strconv.Itoa(limit))...)
		target := addr(amb, dataPort)
		waitServedBy(t, ctx, target, "data")
		rejectedBefore := faultMetric(t, ctx, amb, "ambassadord_connections_rejected_total", map[string]string{"route": faultRoute, "reason": "limit"})

		start := time.Now()
		cs, release := faultCrowd(ctx, target, faultClients, 6*time.Second)
		served, others := faultCount(cs)
		var slowest time.Duration
		for _, c := range cs {
			if !c.served {
				slowest = max(slowest, c.ended)
				assert.Truef(t, load.Closed(c.err), "a client beyond the limit ended by %v (%s), want it closed", c.err, load.How(c.err))
			}
		}
		t.Logf("%d clients at once, --max-conns %d, %d descriptors: %d served, the others %v, the slowest closed %s after connecting, in %s",
			faultClients, limit, faultNoFile, served, others, slowest.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		assert.Equal(t, limit, served, "clients served")
		assert.Less(t, slowest, 2*time.Second, "a client beyond the limit waited to be closed")
		for i, c := range cs {
			assert.NoErrorf(t, c.echoErr, "served client %d: echo", i)
		}
		faultLogFDs(t, ctx, amb)
		rejected := faultMetric(t, ctx, amb, "ambassadord_connections_rejected_total", map[string]string{"route": faultRoute, "reason": "limit"}) - rejectedBefore
		assert.Equal(t, float64(faultClients-limit), rejected, "connections rejected for the limit")
		assert.Zero(t, faultLogCount(t, ctx, amb, "accept failed"), "accept failures: the limit did not prevent exhaustion")

		release()
		faultWaitActive(t, ctx, amb, 0, 10*time.Second)
		cs, release = faultCrowd(ctx, target, limit, 10*time.Second)
		served, others = faultCount(cs)
		release()
		assert.Equal(t, limit, served, "of %d new clients after the crowd left; the others %v", limit, others)
	})
}
