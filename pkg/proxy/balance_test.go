package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScheduleInterleavesByWeight(t *testing.T) {
	for _, tt := range []struct {
		name    string
		weights []int
		want    string // one letter per turn: a is backends[0]
	}{
		{"equal weights need no schedule", []int{1, 0, 1}, ""},
		{"5 to 1 is spread", []int{5, 1}, "aaabaa"},
		{"3, 2, 1", []int{3, 2, 1}, "abacba"},
		{"clipped to MaxWeight", []int{1000, 1}, strings.Repeat("a", 50) + "b" + strings.Repeat("a", 50)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var bs []Backend
			for i, w := range tt.weights {
				bs = append(bs, Backend{Addr: string(rune('a' + i)), Weight: w})
			}
			var got strings.Builder
			for _, i := range schedule(bs) {
				got.WriteString(bs[i].Addr)
			}
			assert.Equal(t, tt.want, got.String())
		})
	}
}

func TestWeightedOrderFallsThroughToTheOthers(t *testing.T) {
	s := newBackendSet([]Backend{{Addr: "a", Weight: 2}, {Addr: "b"}, {Addr: "c"}}, nil)
	var firsts string
	for range 8 {
		o := s.order()
		require.Len(t, o, 3)
		firsts += o[0].Addr
		assert.ElementsMatch(t, []string{"a", "b", "c"}, addrsOf(o))
	}
	assert.Equal(t, 4, strings.Count(firsts, "a"), firsts)
	assert.Equal(t, 2, strings.Count(firsts, "b"), firsts)
	assert.Equal(t, 2, strings.Count(firsts, "c"), firsts)
}

func TestLeastConnOrder(t *testing.T) {
	for _, tt := range []struct {
		name   string
		set    []Backend
		active map[string]int64
		want   []string // the first backend of successive orders
	}{
		{"fewest first", []Backend{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}},
			map[string]int64{"a": 3, "b": 1, "c": 2}, []string{"b", "b", "b"}},
		{"ties go round-robin", []Backend{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}},
			map[string]int64{"a": 1, "b": 1, "c": 1}, []string{"a", "b", "c", "a"}},
		{"ties among the fewest only", []Backend{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}},
			map[string]int64{"a": 0, "b": 4, "c": 0}, []string{"a", "c", "c", "a"}},
		{"per weight", []Backend{{Addr: "a", Weight: 4}, {Addr: "b"}},
			map[string]int64{"a": 7, "b": 2}, []string{"a", "a", "a"}},
		{"per weight, full", []Backend{{Addr: "a", Weight: 4}, {Addr: "b"}},
			map[string]int64{"a": 9, "b": 2}, []string{"b", "b"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newBackendSet(tt.set, nil)
			var got []string
			for range tt.want {
				o := s.leastConn(func(b Backend) int64 { return tt.active[b.Addr] })
				require.Len(t, o, len(tt.set))
				got = append(got, o[0].Addr)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func addrsOf(bs []Backend) (out []string) {
	for _, b := range bs {
		out = append(out, b.Addr)
	}
	return out
}

// holdOpen answers each connection with name and keeps it open until the
// client closes it.
func holdOpen(name string) func(net.Conn) {
	return func(c net.Conn) {
		c.Write([]byte(name))
		io.Copy(io.Discard, c)
	}
}

// TestLeastConnSpreadsLongConnections mixes long-lived connections with
// short ones on three real backends: round-robin would put the long ones
// where the rotation happens to be; least connections keeps them even.
func TestLeastConnSpreadsLongConnections(t *testing.T) {
	for _, path := range []struct {
		name string
		idle time.Duration // non-zero takes the goroutine path
	}{{"loops", 0}, {"goroutines", time.Minute}} {
		t.Run(path.name, func(t *testing.T) {
			bs := []Backend{{Addr: startBackend(t, holdOpen("a"))}, {Addr: startBackend(t, holdOpen("b"))}, {Addr: startBackend(t, holdOpen("c"))}}
			r := &Route{IdleTimeout: path.idle}
			r.SetBalance(LeastConn)
			r.SetBackends(bs)
			addr := startRoute(t, r)
			long := map[string]int{}
			for i := range 12 {
				// Every long connection is followed by two short ones:
				// with round-robin, every long one would land on a.
				c := dial(t, addr)
				name := readName(t, c)
				long[name]++
				waitFor(t, func() bool { return r.ActiveTo(backendNamed(bs, name)) == long[name] })
				for range 2 {
					s := dial(t, addr)
					readName(t, s)
					s.Close()
				}
				waitFor(t, func() bool { return r.Active() == i+1 })
			}
			assert.Equal(t, map[string]int{"a": 4, "b": 4, "c": 4}, long)
		})
	}
}

func readName(t *testing.T, c net.Conn) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	require.NoError(t, err)
	return string(b)
}

func backendNamed(bs []Backend, name string) Backend { return bs[name[0]-'a'] }

func TestWeightsOnRealBackends(t *testing.T) {
	bs := []Backend{{Addr: startBackend(t, holdOpen("a")), Weight: 3}, {Addr: startBackend(t, holdOpen("b"))}}
	r := &Route{}
	r.SetBackends(bs)
	addr := startRoute(t, r)
	got := map[string]int{}
	for range 40 {
		c := dial(t, addr)
		got[readName(t, c)]++
		c.Close()
	}
	assert.Equal(t, map[string]int{"a": 30, "b": 10}, got)
}

func TestEjectAfterFailures(t *testing.T) {
	obs := &recorder{}
	dead := deadAddr(t)
	live := startBackend(t, holdOpen("l"))
	r := &Route{EjectAfter: 3, EjectTime: time.Minute, Observer: obs}
	r.SetBackends([]Backend{{Addr: dead, ID: "dead"}, {Addr: live}})
	addr := startRoute(t, r)
	for range 6 {
		c := dial(t, addr)
		assert.Equal(t, "l", readName(t, c))
		c.Close()
	}
	// Round-robin puts dead first every other time: three failures, one
	// ejection, and no connect to it since.
	ev := obs.events()
	assert.Len(t, ev.failed, 3)
	assert.Equal(t, []Backend{{Addr: dead, ID: "dead"}}, ev.ejected)
	ej := r.Ejections()
	require.Len(t, ej, 1)
	assert.Equal(t, dead, ej[0].Backend.Addr)
	assert.Equal(t, 1, ej[0].Ejections)
	assert.WithinDuration(t, time.Now().Add(time.Minute), ej[0].Until, 10*time.Second)

	// A set without it, not even as a fallback, forgets it.
	r.Forget("dead")
	assert.Empty(t, r.Ejections())
}

func TestEjectedBackendIsStillTriedLast(t *testing.T) {
	dead := deadAddr(t)
	r := &Route{EjectAfter: 1, EjectTime: time.Hour}
	r.SetBackends([]Backend{{Addr: dead}})
	addr := startRoute(t, r)
	assertRejected(t, addr)
	require.Len(t, r.Ejections(), 1)
	// The only backend comes back: ejected, it is still tried.
	ln, err := net.Listen("tcp", dead)
	if err != nil {
		t.Skipf("cannot listen on the reserved address again: %v", err)
	}
	serveListener(t, ln, holdOpen("x"))
	c := dial(t, addr)
	assert.Equal(t, "x", readName(t, c))
}

func TestEjectTimeDoublesToItsCap(t *testing.T) {
	r := &Route{EjectTime: time.Second, MaxEjectTime: 5 * time.Second}
	var got []time.Duration
	for n := 1; n <= 5; n++ {
		got = append(got, r.ejectTime(n))
	}
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}, got)
	assert.Equal(t, defaultEjectTime, (&Route{}).ejectTime(1))
}

func TestResetBeforeAnswerCountsAsFailure(t *testing.T) {
	obs := &recorder{}
	resetting := startBackend(t, func(c net.Conn) {
		b := make([]byte, 1)
		c.Read(b)
		c.(*net.TCPConn).SetLinger(0)
	})
	r := &Route{EjectAfter: 2, EjectTime: time.Hour, Observer: obs}
	r.SetBackends([]Backend{{Addr: resetting}})
	addr := startRoute(t, r)
	for range 2 {
		c := dial(t, addr)
		c.Write([]byte("x"))
		requireClosed(t, c)
	}
	waitFor(t, func() bool { return len(obs.events().ejected) == 1 })
}

// A backend the route's set takes out of its primary tier (the engine
// says it is paused, stopping, unhealthy) and brings back starts afresh:
// the connections it could not answer meanwhile do not keep it ejected
// once it serves again.
func TestEjectionEndsWhenTheSetBringsItBack(t *testing.T) {
	dead := deadAddr(t)
	live := startBackend(t, holdOpen("l"))
	r := &Route{EjectAfter: 1, EjectTime: time.Hour}
	b := Backend{Addr: dead, ID: "b"}
	r.SetBackends([]Backend{b})
	addr := startRoute(t, r)
	assertRejected(t, addr)
	require.Len(t, r.Ejections(), 1)

	r.SetBackends([]Backend{{Addr: live}}) // b is the fallback now
	require.Len(t, r.Ejections(), 1, "kept while it is a fallback")
	r.SetBackends([]Backend{b, {Addr: live}})
	assert.Empty(t, r.Ejections(), "back in service: afresh")

	// Its set unchanged, a failure counts again.
	r.SetBackends([]Backend{b, {Addr: live}})
	assert.Empty(t, r.Ejections())
}
