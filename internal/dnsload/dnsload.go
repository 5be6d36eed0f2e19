// Package dnsload is the e2e tests' DNS client over UDP: queries for the
// A record of one name, built and parsed by hand (the module has no DNS
// library, and one question with one answer needs none), and a query
// load that records every datagram it sends and what answered it. The
// test servers answer the name with an address of their own, so the
// answer says which server a datagram reached, as whoami does for the TCP
// tests.
//
// Concurrency: a Load's goroutines are its own; Stop ends them and waits.
// Its methods are safe for concurrent use.
package dnsload

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
	"time"
)

// Query returns a standard query, recursion desired, for the A records
// of name, with the given ID.
func Query(id uint16, name string) []byte {
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

// Answer returns the ID of the response b and the address of its first
// A record.
func Answer(b []byte) (uint16, netip.Addr, error) {
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
		if off, err = skipName(b, off); err != nil {
			return id, netip.Addr{}, err
		}
		off += 4 // QTYPE, QCLASS
	}
	for range an {
		if off, err = skipName(b, off); err != nil {
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

// skipName returns the offset past the (possibly compressed) name at off.
func skipName(b []byte, off int) (int, error) {
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

// Exchange sends one query for name on c, connected to a server, and
// waits up to timeout for its answer; answers to other IDs (late ones to
// an earlier query) are skipped.
func Exchange(c *net.UDPConn, name string, timeout time.Duration) (netip.Addr, error) {
	id := uint16(rand.N(1 << 16))
	if _, err := c.Write(Query(id, name)); err != nil {
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
		got, a, err := Answer(buf[:n])
		if got != id {
			continue
		}
		return a, err
	}
}

// Ask sends one query for name to addr from a fresh socket.
func Ask(ctx context.Context, addr, name string, timeout time.Duration) (netip.Addr, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return Exchange(c.(*net.UDPConn), name, timeout)
}

// Config is the shape of a query load.
type Config struct {
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

// Try is one datagram of a query and what became of it.
type Try struct {
	Flow   int       // the long-lived flow's index, or -1 for a fresh socket
	Query  int       // the query's number within its flow (fresh: all)
	Try    int       // 0 for the first datagram of the query, 1 for its retry, ...
	Sent   time.Time // when it was sent
	Took   time.Duration
	Answer netip.Addr // which server answered; invalid if none did
	Err    error      // why not
}

// Lost reports whether no answer came.
func (d Try) Lost() bool { return !d.Answer.IsValid() }

func (d Try) String() string {
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

// Load runs queries for name against one address and records every
// datagram. Its goroutines are its own; Stop ends them and waits.
type Load struct {
	addr, name string
	cfg        Config
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu    sync.Mutex
	tries []Try // guarded by mu, in the order they ended
	n     int   // guarded by mu: fresh queries started
}

// Start starts a load against addr; Stop ends it.
func Start(addr, name string, cfg Config) (*Load, error) {
	var conns []*net.UDPConn
	for range cfg.Flows {
		c, err := net.Dial("udp", addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		conns = append(conns, c.(*net.UDPConn))
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{addr: addr, name: name, cfg: cfg, cancel: cancel}
	for i, c := range conns {
		l.wg.Go(func() { l.flow(ctx, i, c) })
	}
	if cfg.Fresh > 0 {
		l.wg.Go(func() { l.fresh(ctx) })
	}
	return l, nil
}

// flow queries on one socket until ctx ends, then closes it.
func (l *Load) flow(ctx context.Context, i int, c *net.UDPConn) {
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
func (l *Load) fresh(ctx context.Context) {
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
				l.record(Try{Flow: -1, Query: q, Sent: time.Now(), Err: err})
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
func (l *Load) query(c *net.UDPConn, flow, q int) {
	for try := range l.cfg.Tries {
		sent := time.Now()
		a, err := Exchange(c, l.name, l.cfg.Timeout)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errors.New("no answer")
		}
		l.record(Try{Flow: flow, Query: q, Try: try, Sent: sent, Took: time.Since(sent), Answer: a, Err: err})
		if err == nil {
			return
		}
	}
}

func (l *Load) record(d Try) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tries = append(l.tries, d)
}

// Stop ends the load, waits for the queries in flight, and returns every
// datagram sent, in the order they were sent.
func (l *Load) Stop() Tries {
	l.cancel()
	l.wg.Wait()
	return l.Tries()
}

// Tries returns the datagrams so far, in the order they were sent.
func (l *Load) Tries() Tries {
	l.mu.Lock()
	ts := slices.Clone(l.tries)
	l.mu.Unlock()
	slices.SortStableFunc(ts, func(a, b Try) int { return a.Sent.Compare(b.Sent) })
	return ts
}

// WaitAnswered waits until n datagrams of flow sent at or after since
// (flow -1: fresh ones; -2: any) were answered by server, or ctx ends.
func (l *Load) WaitAnswered(ctx context.Context, flow int, server netip.Addr, since time.Time, n int) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		got := len(l.Tries().Filter(func(d Try) bool {
			return (flow == -2 || d.Flow == flow) && !d.Sent.Before(since) && d.Answer == server
		}))
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d datagrams of flow %d since %s answered by %s, want %d: %w", got, flow, since.Format("15:04:05.000"), server, n, ctx.Err())
		case <-t.C:
		}
	}
}

// Tries is a load's record, in the order the datagrams were sent.
type Tries []Try

// Filter returns the datagrams keep accepts.
func (ts Tries) Filter(keep func(Try) bool) Tries {
	var out Tries
	for _, d := range ts {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}

// Flow returns the datagrams of one flow (-1: the fresh ones).
func (ts Tries) Flow(flow int) Tries {
	return ts.Filter(func(d Try) bool { return d.Flow == flow })
}

// After returns the datagrams sent after at.
func (ts Tries) After(at time.Time) Tries {
	return ts.Filter(func(d Try) bool { return d.Sent.After(at) })
}

// Lost returns the datagrams no answer came to.
func (ts Tries) Lost() Tries { return ts.Filter(Try.Lost) }

// By returns the datagrams server answered.
func (ts Tries) By(server netip.Addr) Tries {
	return ts.Filter(func(d Try) bool { return d.Answer == server })
}

// First returns the first datagram keep accepts.
func (ts Tries) First(keep func(Try) bool) (Try, bool) {
	for _, d := range ts {
		if keep(d) {
			return d, true
		}
	}
	return Try{}, false
}

// LostQueries counts the queries none of whose datagrams was answered.
func (ts Tries) LostQueries() int {
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

func (ts Tries) String() string {
	return fmt.Sprintf("%d datagrams, %d lost; %d queries lost", len(ts), len(ts.Lost()), ts.LostQueries())
}

// Describe lists up to 10 datagrams, for a failure.
func (ts Tries) Describe() string {
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
