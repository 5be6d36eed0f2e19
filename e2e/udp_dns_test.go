//go:build e2e

package e2e

// The UDP tests' DNS client: queries for the A record of one name, built
// and parsed by hand (the module has no DNS library, and one question with
// one answer needs none), and a query load that records every datagram it
// sends and what answered it. The fixture servers answer the name with an
// address of their own (udpWho1, udpWho2), so the answer says which server
// a datagram reached, as whoami does for the TCP tests.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// dnsQuery returns a standard query, recursion desired, for the A records
// of name, with the given ID.
func dnsQuery(id uint16, name string) []byte {
	b := make([]byte, 12, 12+len(name)+6)
	binary.BigEndian.PutUint16(b[0:], id)
	b[2] = 0x01                          // RD
	binary.BigEndian.PutUint16(b[4:], 1) // QDCOUNT
	for l := range strings.SplitSeq(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0, 0, 1, 0, 1) // the root; QTYPE A, QCLASS IN
}

// dnsAnswer returns the ID of the response b and the address of its first
// A record.
func dnsAnswer(b []byte) (uint16, netip.Addr, error) {
	if len(b) < 12 {
		return 0, netip.Addr{}, fmt.Errorf("response of %d bytes", len(b))
	}
	id := binary.BigEndian.Uint16(b[0:])
	if b[2]&0x80 == 0 {
		return id, netip.Addr{}, errors.New("not a response")
	}
	if rcode := b[3] & 0x0f; rcode != 0 {
		return id, netip.Addr{}, fmt.Errorf("rcode %d", rcode)
	}
	qd, an := int(binary.BigEndian.Uint16(b[4:])), int(binary.BigEndian.Uint16(b[6:]))
	off := 12
	var err error
	for range qd {
		if off, err = dnsSkipName(b, off); err != nil {
			return id, netip.Addr{}, err
		}
		off += 4 // QTYPE, QCLASS
	}
	for range an {
		if off, err = dnsSkipName(b, off); err != nil {
			return id, netip.Addr{}, err
		}
		if off+10 > len(b) {
			return id, netip.Addr{}, errors.New("answer cut short")
		}
		typ, n := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10
		if off+n > len(b) {
			return id, netip.Addr{}, errors.New("answer data cut short")
		}
		if typ == 1 && n == 4 {
			return id, netip.AddrFrom4([4]byte(b[off : off+4])), nil
		}
		off += n
	}
	return id, netip.Addr{}, errors.New("no A record")
}

// dnsSkipName returns the offset past the (possibly compressed) name at off.
func dnsSkipName(b []byte, off int) (int, error) {
	for off < len(b) {
		switch l := int(b[off]); {
		case l == 0:
			return off + 1, nil
		case l&0xc0 == 0xc0:
			return off + 2, nil
		default:
			off += 1 + l
		}
	}
	return 0, errors.New("name cut short")
}

func TestDNSMessage(t *testing.T) {
	q := dnsQuery(0xbeef, "who.test")
	assert.Equal(t, []byte{0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'h', 'o', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}, q)
	// dnsmasq's answer to it: the question, then the answer with its name
	// compressed to a pointer to the question's.
	resp := append(slices.Clone(q), 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 0, 0, 2)
	resp[2], resp[3], resp[7] = 0x85, 0x80, 1
	id, a, err := dnsAnswer(resp)
	require.NoError(t, err)
	assert.Equal(t, uint16(0xbeef), id)
	assert.Equal(t, netip.MustParseAddr("10.0.0.2"), a)
	_, _, err = dnsAnswer(q)
	assert.ErrorContains(t, err, "not a response")
	_, _, err = dnsAnswer(resp[:len(resp)-2])
	assert.ErrorContains(t, err, "cut short")
}

// dnsExchange sends one query for name on c, connected to a server, and
// waits up to timeout for its answer; answers to other IDs (late ones to
// an earlier query) are skipped.
func dnsExchange(c *net.UDPConn, name string, timeout time.Duration) (netip.Addr, error) {
	id := uint16(rand.N(1 << 16))
	if _, err := c.Write(dnsQuery(id, name)); err != nil {
		return netip.Addr{}, err
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return netip.Addr{}, err
	}
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return netip.Addr{}, err
		}
		got, a, err := dnsAnswer(buf[:n])
		if got != id {
			continue
		}
		return a, err
	}
}

// dnsAsk sends one query for name to addr from a fresh socket.
func dnsAsk(ctx context.Context, addr, name string, timeout time.Duration) (netip.Addr, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return dnsExchange(c.(*net.UDPConn), name, timeout)
}

// waitAnswer waits until a query for name to addr, from a fresh socket,
// is answered with want.
func waitAnswer(t *testing.T, ctx context.Context, addr, name string, want netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := harness.Poll(ctx, func(ctx context.Context) error {
		got, err := dnsAsk(ctx, addr, name, 500*time.Millisecond)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("answered %s", got)
		}
		return nil
	})
	require.NoError(t, err, "wait for %s to answer %s with %s", addr, name, want)
}

// dnsLoadConfig is the shape of a query load.
type dnsLoadConfig struct {
	// Fresh is the pace of queries from fresh sockets, each a new flow
	// (0: none), from a port no other fresh socket had (dialFresh); at
	// most 32 are in flight, a tick finding them all busy skipped.
	Fresh time.Duration
	// Flows long-lived sockets query one after another, a query every
	// Every: flows that live through the changes.
	Flows int
	Every time.Duration
	// Tries is how many datagrams a query sends before it counts as
	// lost, each waiting Timeout for its answer, as a resolver retries.
	Tries   int
	Timeout time.Duration
}

// dnsTry is one datagram of a query and what became of it.
type dnsTry struct {
	Flow   int       // the long-lived flow's index, or -1 for a fresh socket
	Query  int       // the query's number within its flow (fresh: all)
	Try    int       // 0 for the first datagram of the query, 1 for its retry, ...
	Sent   time.Time // when it was sent
	Took   time.Duration
	Answer netip.Addr // which server answered; invalid if none did
	Err    error      // why not
}

// Lost reports whether no answer came.
func (d dnsTry) Lost() bool { return !d.Answer.IsValid() }

func (d dnsTry) String() string {
	kind := "fresh"
	if d.Flow >= 0 {
		kind = fmt.Sprintf("flow %d", d.Flow)
	}
	what := d.Answer.String()
	if d.Lost() {
		what = fmt.Sprintf("lost (%v)", d.Err)
	}
	return fmt.Sprintf("%s query %d try %d at %s: %s in %s", kind, d.Query, d.Try, d.Sent.Format("15:04:05.000"), what, d.Took.Round(100*time.Microsecond))
}

// dnsLoad runs queries for name against one address and records every
// datagram. Its goroutines are its own; Stop ends them and waits.
type dnsLoad struct {
	addr, name string
	cfg        dnsLoadConfig
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu    sync.Mutex
	tries []dnsTry // guarded by mu, in the order they ended
	n     int      // guarded by mu: fresh queries started
}

// startDNSLoad starts a load against addr; it stops when the test ends, if
// the test has not stopped it before.
func startDNSLoad(t *testing.T, addr, name string, cfg dnsLoadConfig) *dnsLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &dnsLoad{addr: addr, name: name, cfg: cfg, cancel: cancel}
	for i := range cfg.Flows {
		c, err := net.Dial("udp", addr)
		require.NoError(t, err)
		l.wg.Go(func() { l.flow(ctx, i, c.(*net.UDPConn)) })
	}
	if cfg.Fresh > 0 {
		l.wg.Go(func() { l.fresh(ctx) })
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// flow queries on one socket until ctx ends, then closes it.
func (l *dnsLoad) flow(ctx context.Context, i int, c *net.UDPConn) {
	defer c.Close()
	t := time.NewTicker(l.cfg.Every)
	defer t.Stop()
	for q := 0; ; q++ {
		l.query(c, i, q)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fresh starts a query from a fresh socket every cfg.Fresh until ctx ends.
func (l *dnsLoad) fresh(ctx context.Context) {
	const inFlight = 32
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(l.cfg.Fresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue
		}
		l.mu.Lock()
		q := l.n
		l.n++
		l.mu.Unlock()
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := dialFresh(l.addr)
			if err != nil {
				l.record(dnsTry{Flow: -1, Query: q, Sent: time.Now(), Err: err})
				return
			}
			defer c.Close()
			l.query(c, -1, q)
		})
	}
}

// Fresh sockets take their local ports from freshPorts, each port once
// in a run (until the 12,000 wrap), below the ephemeral range (32768 on
// by default) so that no socket bound to port 0 takes one: a port the
// kernel chose could be one a closed socket had, a client address the
// ambassador still holds a flow for, and the datagram would go on on that
// flow, to its backend, rather than start a new one.
const (
	freshPortBase  = 20000
	freshPortCount = 12000
)

var freshPorts atomic.Int32

// dialFresh returns a UDP socket connected to addr from a port of
// freshPorts that no other socket holds.
func dialFresh(addr string) (*net.UDPConn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	for range 100 {
		port := freshPortBase + int(freshPorts.Add(1))%freshPortCount
		c, err := net.DialUDP("udp", &net.UDPAddr{Port: port}, raddr)
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		return c, err
	}
	return nil, errors.New("no free port for a fresh socket in 100 tries")
}

// query makes query q of flow (-1: fresh) on c, up to cfg.Tries datagrams.
func (l *dnsLoad) query(c *net.UDPConn, flow, q int) {
	for try := range l.cfg.Tries {
		sent := time.Now()
		a, err := dnsExchange(c, l.name, l.cfg.Timeout)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errors.New("no answer")
		}
		l.record(dnsTry{Flow: flow, Query: q, Try: try, Sent: sent, Took: time.Since(sent), Answer: a, Err: err})
		if err == nil {
			return
		}
	}
}

func (l *dnsLoad) record(d dnsTry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tries = append(l.tries, d)
}

// Stop ends the load, waits for the queries in flight, and returns every
// datagram sent, in the order they were sent.
func (l *dnsLoad) Stop() dnsTries {
	l.cancel()
	l.wg.Wait()
	return l.Tries()
}

// Tries returns the datagrams so far, in the order they were sent.
func (l *dnsLoad) Tries() dnsTries {
	l.mu.Lock()
	ts := slices.Clone(l.tries)
	l.mu.Unlock()
	slices.SortStableFunc(ts, func(a, b dnsTry) int { return a.Sent.Compare(b.Sent) })
	return ts
}

// WaitAnswered waits until n datagrams of flow sent at or after since
// (flow -1: fresh ones; -2: any) were answered by server.
func (l *dnsLoad) WaitAnswered(ctx context.Context, flow int, server netip.Addr, since time.Time, n int) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return harness.Poll(ctx, func(context.Context) error {
		got := len(l.Tries().Filter(func(d dnsTry) bool {
			return (flow == -2 || d.Flow == flow) && !d.Sent.Before(since) && d.Answer == server
		}))
		if got < n {
			return fmt.Errorf("%d datagrams of flow %d since %s answered by %s, want %d", got, flow, since.Format("15:04:05.000"), server, n)
		}
		return nil
	})
}

// dnsTries is a load's record, in the order the datagrams were sent.
type dnsTries []dnsTry

// Filter returns the datagrams keep accepts.
func (ts dnsTries) Filter(keep func(dnsTry) bool) dnsTries {
	var out dnsTries
	for _, d := range ts {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}

// Flow returns the datagrams of one flow (-1: the fresh ones).
func (ts dnsTries) Flow(flow int) dnsTries {
	return ts.Filter(func(d dnsTry) bool { return d.Flow == flow })
}

// After returns the datagrams sent after at.
func (ts dnsTries) After(at time.Time) dnsTries {
	return ts.Filter(func(d dnsTry) bool { return d.Sent.After(at) })
}

// Lost returns the datagrams no answer came to.
func (ts dnsTries) Lost() dnsTries { return ts.Filter(dnsTry.Lost) }

// By returns the datagrams server answered.
func (ts dnsTries) By(server netip.Addr) dnsTries {
	return ts.Filter(func(d dnsTry) bool { return d.Answer == server })
}

// First returns the first datagram keep accepts.
func (ts dnsTries) First(keep func(dnsTry) bool) (dnsTry, bool) {
	for _, d := range ts {
		if keep(d) {
			return d, true
		}
	}
	return dnsTry{}, false
}

// LostQueries counts the queries none of whose datagrams was answered.
func (ts dnsTries) LostQueries() int {
	type key struct{ flow, query int }
	answered := map[key]bool{}
	for _, d := range ts {
		k := key{d.Flow, d.Query}
		answered[k] = answered[k] || !d.Lost()
	}
	n := 0
	for _, ok := range answered {
		if !ok {
			n++
		}
	}
	return n
}

func (ts dnsTries) String() string {
	return fmt.Sprintf("%d datagrams, %d lost; %d queries lost", len(ts), len(ts.Lost()), ts.LostQueries())
}

// describe lists up to 10 datagrams, for a failure.
func (ts dnsTries) describe() string {
	var b strings.Builder
	for i, d := range ts {
		if i == 10 {
			fmt.Fprintf(&b, "... and %d more\n", len(ts)-i)
			break
		}
		fmt.Fprintf(&b, "%s\n", d)
	}
	return b.String()
}

// noneOf reports the datagrams, if there are any, as an error.
func noneOf(t *testing.T, ts dnsTries, what string, args ...any) bool {
	t.Helper()
	if len(ts) == 0 {
		return true
	}
	t.Errorf("%d %s:\n%s", len(ts), fmt.Sprintf(what, args...), ts.describe())
	return false
}
