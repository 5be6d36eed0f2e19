package soak

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
)

// The clients: per route, shortWorkers open a fresh session every
// shortInterval (whoami and a small echo), and longWorkers keep a session
// open for longMin to longMax each, streaming an echo of longChunk bytes
// every longInterval. About 200 sessions a second and 10 MB/s over three
// routes: a steady load, light enough to run beside the other parallel
// tests on a 2-core machine.
const (
	shortWorkers  = 3
	shortInterval = 40 * time.Millisecond
	shortMax      = 8 << 10 // largest short payload
	longWorkers   = 2
	longMin       = 2 * time.Second
	longMax       = 8 * time.Second
	longChunk     = 16 << 10
	longInterval  = 10 * time.Millisecond
	// A session's deadline: the longest pause and wait for a backend
	// (the test's --backend-wait, 8 s) plus generous slack for a loaded
	// machine. A session that reaches it hangs, which is a failure.
	shortTimeout = 20 * time.Second
	longSlack    = 30 * time.Second
)

// Clients runs the sessions of every route in the background and records
// them. Its methods are safe for concurrent use.
type Clients struct {
	stop chan struct{} // closed by Halt: no new session, long ones end
	once sync.Once
	wg   sync.WaitGroup

	mu       sync.Mutex
	sessions []Session // guarded by mu, in order of completion
}

// StartClients starts the short and long workers of every route, route r
// at addrs[r], their payloads drawn from seed. The caller must Halt them.
func StartClients(addrs []string, seed uint64) *Clients {
	c := &Clients{stop: make(chan struct{})}
	for r, a := range addrs {
		for w := range shortWorkers {
			c.wg.Go(func() { c.short(r, a, rand.New(rand.NewPCG(seed, uint64(100*r+w)))) })
		}
		for w := range longWorkers {
			c.wg.Go(func() { c.long(r, a, rand.New(rand.NewPCG(seed, uint64(100*r+50+w)))) })
		}
	}
	return c
}

// short opens a short session every shortInterval, one at a time.
func (c *Clients) short(route int, addr string, rng *rand.Rand) {
	tick := time.NewTicker(shortInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		c.add(Short(route, addr, rng.Uint64(), 1+rng.IntN(shortMax)))
	}
}

// long keeps one long session open at a time.
func (c *Clients) long(route int, addr string, rng *rand.Rand) {
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		c.add(Long(route, addr, rng.Uint64(), between(rng, longMin, longMax), c.stop))
	}
}

func (c *Clients) add(s Session) {
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.mu.Unlock()
}

// Count returns how many sessions have ended so far.
func (c *Clients) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

// Halt stops the workers, lets the sessions in progress end (long ones end
// their stream early, cleanly) and returns every session. It may be called
// more than once.
func (c *Clients) Halt() []Session {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sessions)
}

// Short is one short session on route at addr: a fresh connection asks
// who answers, sends size bytes of Stream(seed), half-closes and requires
// them back, then EOF.
func Short(route int, addr string, seed uint64, size int) (s Session) {
	s = Session{Route: route, Addr: addr, Start: time.Now()}
	defer func() { s.End = time.Now() }()
	c, err := net.DialTimeout("tcp", addr, shortTimeout)
	if err != nil {
		s.Err = fmt.Errorf("dial: %w", err)
		return s
	}
	defer c.Close()
	c.SetDeadline(s.Start.Add(shortTimeout))
	tc := c.(*net.TCPConn)
	payload := make([]byte, size)
	io.ReadFull(dataproto.Stream(seed), payload)
	if _, err := tc.Write(append(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode(), payload...)); err != nil {
		s.Err = fmt.Errorf("send: %w", err)
		return s
	}
	s.Sent = int64(size)
	if err := tc.CloseWrite(); err != nil {
		s.Err = fmt.Errorf("half-close: %w", err)
		return s
	}
	r := bufio.NewReader(tc)
	if s.ID, s.Err = identity(r, &s); s.Err != nil || s.Corrupt != "" {
		return s
	}
	got, err := io.ReadAll(r)
	s.Echoed = int64(len(got))
	for i := range min(len(got), size) {
		if got[i] != payload[i] {
			s.Corrupt = fmt.Sprintf("echo byte %d of %d differs", i, size)
			break
		}
	}
	switch {
	case len(got) > size && s.Corrupt == "":
		s.Corrupt = fmt.Sprintf("%d bytes echoed beyond the %d sent", len(got)-size, size)
	case err != nil:
		s.Err = fmt.Errorf("read the echo after %d of %d bytes: %w", len(got), size, err)
	case len(got) < size:
		s.Err = fmt.Errorf("echo ended after %d of %d bytes: %w", len(got), size, io.ErrUnexpectedEOF)
	}
	return s
}

// identity reads the server's identity line. A connection that ends first
// is a failure; a line that is not an identity is corruption.
func identity(r *bufio.Reader, s *Session) (dataproto.Identity, error) {
	id, err := dataproto.ReadIdentity(r)
	switch {
	case err == nil:
		return id, nil
	case Closed(err), errors.Is(err, os.ErrDeadlineExceeded):
		return id, err
	}
	s.Corrupt = err.Error()
	return id, nil
}

// Long is one long session on route at addr: it asks who answers, then
// streams Stream(seed) for planned (or until stop), checking every echoed
// byte as it arrives, half-closes and requires every byte back, then EOF.
func Long(route int, addr string, seed uint64, planned time.Duration, stop <-chan struct{}) (s Session) {
	s = Session{Route: route, Addr: addr, Long: true, Start: time.Now()}
	defer func() {
		if s.End.IsZero() {
			s.End = time.Now()
		}
	}()
	c, err := net.DialTimeout("tcp", addr, shortTimeout)
	if err != nil {
		s.Err = fmt.Errorf("dial: %w", err)
		return s
	}
	defer c.Close()
	c.SetDeadline(s.Start.Add(planned + longSlack))
	tc := c.(*net.TCPConn)
	if _, err := tc.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
		s.Err = fmt.Errorf("send header: %w", err)
		return s
	}
	r := bufio.NewReader(tc)
	if s.ID, s.Err = identity(r, &s); s.Err != nil || s.Corrupt != "" {
		return s
	}

	var sent int64          // written by send until it reports on done
	var closing atomic.Bool // set by send before it half-closes
	done := make(chan error, 1)
	go send(tc, seed, planned, stop, &sent, &closing, done)
	want := dataproto.Stream(seed)
	buf, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	var rerr error
	for rerr == nil {
		var n int
		n, rerr = r.Read(buf)
		if n > 0 {
			io.ReadFull(want, exp[:n])
			if i := differ(buf[:n], exp[:n]); i >= 0 && s.Corrupt == "" {
				s.Corrupt = fmt.Sprintf("echo byte %d differs", s.Echoed+int64(i))
			}
			s.Echoed += int64(n)
		}
	}
	s.End = time.Now()
	// The server ends the echo only after the half-close: an end before it
	// was not the server's doing. Close, so that the sender stops.
	if !errors.Is(rerr, io.EOF) || !closing.Load() {
		tc.Close()
		if errors.Is(rerr, io.EOF) {
			rerr = fmt.Errorf("echo ended while sending: %w", io.ErrUnexpectedEOF)
		}
	}
	werr := <-done
	s.Sent = sent
	switch {
	case !errors.Is(rerr, io.EOF):
		s.Err = fmt.Errorf("read the echo after %d bytes: %w", s.Echoed, rerr)
	case werr != nil:
		s.Err = fmt.Errorf("send after %d bytes: %w", s.Sent, werr)
	case s.Echoed < s.Sent:
		s.Err = fmt.Errorf("echo ended after %d of %d bytes: %w", s.Echoed, s.Sent, io.ErrUnexpectedEOF)
	case s.Echoed > s.Sent && s.Corrupt == "":
		s.Corrupt = fmt.Sprintf("%d bytes echoed beyond the %d sent", s.Echoed-s.Sent, s.Sent)
	}
	return s
}

// send writes a chunk of Stream(seed) every longInterval for planned or
// until stop, then sets closing and half-closes, and reports on done; *n
// is the number of bytes written.
func send(c *net.TCPConn, seed uint64, planned time.Duration, stop <-chan struct{}, n *int64, closing *atomic.Bool, done chan<- error) {
	src := dataproto.Stream(seed)
	chunk := make([]byte, longChunk)
	tick := time.NewTicker(longInterval)
	defer tick.Stop()
	end := time.NewTimer(planned)
	defer end.Stop()
	for {
		select {
		case <-stop:
		case <-end.C:
		case <-tick.C:
			io.ReadFull(src, chunk)
			m, err := c.Write(chunk)
			*n += int64(m)
			if err != nil {
				done <- err
				return
			}
			continue
		}
		closing.Store(true)
		done <- c.CloseWrite()
		return
	}
}

// differ returns the index of the first byte where a and b differ, or -1.
func differ(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
