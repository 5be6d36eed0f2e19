package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ambassadord/ambassadord/internal/dataproto"
	"github.com/ambassadord/ambassadord/internal/harness"
)

// attempt is one fresh connection of the load.
type attempt struct {
	start time.Time
	took  time.Duration
	id    dataproto.Identity // who answered; zero if err
	err   error
}

// load makes a fresh connection to addr every loadInterval, at most
// loadConcurrency at once, each asking the server who it is.
type load struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	attempts []attempt // guarded by mu
}

func startLoad(addr string) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{addr: addr, cancel: cancel, done: make(chan struct{})}
	go l.run(ctx)
	return l
}

// run starts attempts until ctx ends, then waits for those in flight: a
// cut attempt would count as a failure of the ambassador.
func (l *load) run(ctx context.Context) {
	defer close(l.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, loadConcurrency)
	tick := time.NewTicker(loadInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // all slots busy: skip a beat rather than queue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			a := attempt{start: time.Now()}
			a.id, a.err = whoami(l.addr)
			a.took = time.Since(a.start)
			l.mu.Lock()
			l.attempts = append(l.attempts, a)
			l.mu.Unlock()
		})
	}
}

// stop ends the load and waits for the attempts in flight.
func (l *load) stop() {
	l.cancel()
	<-l.done
}

// reset forgets the attempts so far, to start a new kind of rewire.
func (l *load) reset() {
	l.mu.Lock()
	l.attempts = nil
	l.mu.Unlock()
}

// waitLanded waits until the server name accepted a connection at or after
// after.
func (l *load) waitLanded(ctx context.Context, name string, after time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := harness.Poll(ctx, func(context.Context) error {
		if _, ok := l.firstAccepted(name, after); !ok {
			return fmt.Errorf("no connection on %s yet", name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("wait for connections on %s: %w", name, err)
	}
	return nil
}

// firstAccepted returns the identity name gave the first connection it
// accepted at or after after.
func (l *load) firstAccepted(name string, after time.Time) (dataproto.Identity, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first dataproto.Identity
	for _, a := range l.attempts {
		if a.err == nil && a.id.Name == name && !a.id.Accepted.Before(after) &&
			(first.Accepted.IsZero() || a.id.Accepted.Before(first.Accepted)) {
			first = a.id
		}
	}
	return first, !first.Accepted.IsZero()
}

// change is one rewire: from at, new connections should land on to.
type change struct {
	to string
	at time.Time
}

// window is a span of time in which the old backend was being stopped:
// the connections still in its accept queue when it closes its listener
// are reset (ambassadord replays them: it runs with --replay), and the failures
// of that span are counted apart.
type window struct{ from, to time.Time }

// summarize turns the changes and the attempts so far into a kind.
// Failures of attempts that started inside one of stops are counted apart.
func (l *load) summarize(name, column string, changes []change, stops []window) kind {
	// lat runs from the change; own from when the new backend listened,
	// if that was later: the part no proxy could have saved is the
	// backend's own start-up.
	var lat, own []time.Duration
	for _, c := range changes {
		if first, ok := l.firstAccepted(c.to, c.at); ok {
			lat = append(lat, first.Accepted.Sub(c.at))
			own = append(own, first.Accepted.Sub(later(c.at, first.Listening)))
			fmt.Fprintf(os.Stderr, "rewirebench: %s: start %s, listening +%v, first connection +%v\n",
				c.to, c.at.Format("15:04:05.000"), first.Listening.Sub(c.at).Round(10*time.Microsecond),
				first.Accepted.Sub(c.at).Round(10*time.Microsecond))
		}
	}
	slices.Sort(lat)
	slices.Sort(own)
	fmt.Fprintf(os.Stderr, "rewirebench: %s: latencies %v; after the new backend listened %v\n", name, lat, own)
	l.mu.Lock()
	defer l.mu.Unlock()
	k := kind{Name: name, Column: column, Rewires: len(lat), Attempts: len(l.attempts)}
	reasons := map[string]int{}
	inStop := map[int][]time.Duration{} // how long each failure in each stop took
	for _, a := range l.attempts {
		if a.err == nil {
			continue
		}
		k.Failed++
		stop := slices.IndexFunc(stops, func(w window) bool { return !a.start.Before(w.from) && !a.start.After(w.to) })
		during := stop >= 0
		if during {
			k.FailedInStop++
			inStop[stop] = append(inStop[stop], a.took.Round(time.Millisecond))
		}
		// The error's last part, without addresses, names the reason.
		msg := a.err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		reasons[fmt.Sprintf("%s (during a backend stop: %v)", msg, during)]++
	}
	for _, r := range slices.Sorted(maps.Keys(reasons)) {
		fmt.Fprintf(os.Stderr, "rewirebench: %s: %d failed: %s\n", name, reasons[r], r)
	}
	for _, i := range slices.Sorted(maps.Keys(inStop)) {
		fmt.Fprintf(os.Stderr, "rewirebench: %s: stop %d of %d: failures after %v\n", name, i, len(stops), inStop[i])
	}
	if len(lat) > 0 {
		k.MedianMS, k.P99MS, k.MaxMS = median(lat), p99(lat), ms(lat[len(lat)-1])
		k.OwnMedianMS, k.OwnP99MS = median(own), p99(own)
	}
	return k
}

// median and p99 (nearest rank) of sorted, in milliseconds.
func median(sorted []time.Duration) float64 { return ms(sorted[(len(sorted)-1)/2]) }
func p99(sorted []time.Duration) float64 {
	return ms(sorted[max((99*len(sorted)+99)/100, 1)-1])
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// whoami asks the server behind addr who it is, on a fresh connection.
func whoami(addr string) (dataproto.Identity, error) {
	c, err := net.DialTimeout("tcp", addr, attemptTimeout)
	if err != nil {
		return dataproto.Identity{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(attemptTimeout))
	if _, err := c.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
		return dataproto.Identity{}, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return dataproto.Identity{}, err
	}
	return dataproto.ReadIdentity(bufio.NewReader(c))
}

// waitServed waits until a fresh connection to addr is answered by name.
func waitServed(ctx context.Context, addr, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return harness.Poll(ctx, func(context.Context) error {
		id, err := whoami(addr)
		if err != nil {
			return err
		}
		if id.Name != name {
			return fmt.Errorf("served by %s, not %s", id.Name, name)
		}
		return nil
	})
}

// openEstablished opens the long-lived connections whose fate a kind of
// rewire reports: whoami, then echoes.
func openEstablished(ctx context.Context, addr string) ([]net.Conn, error) {
	var conns []net.Conn
	for range established {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("open established connection: %w", err)
		}
		conns = append(conns, c)
		if _, err := c.Write(dataproto.Header{Mode: dataproto.ModeWhoami}.Encode()); err != nil {
			closeAll(conns)
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(attemptTimeout))
		if _, err := dataproto.ReadIdentity(bufio.NewReader(c)); err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("established connection: %w", err)
		}
	}
	return conns, nil
}

// checkEstablished says how many of conns still echo a byte, and closes
// them.
func checkEstablished(conns []net.Conn) string {
	defer closeAll(conns)
	alive := 0
	for _, c := range conns {
		if echoes(c) == nil {
			alive++
		}
	}
	return fmt.Sprintf("%d of %d kept", alive, len(conns))
}

func echoes(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return err
	}
	if b[0] != 'x' {
		return errors.New("echo mismatch")
	}
	return nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}
