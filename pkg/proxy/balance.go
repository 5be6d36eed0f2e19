package proxy

import (
	"errors"
	"slices"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

const (
	// defaultEjectTime is the first ejection's length when
	// Route.EjectTime is zero; each ejection since the backend last
	// answered doubles it, up to defaultMaxEjectTime.
	defaultEjectTime    = 5 * time.Second
	defaultMaxEjectTime = 2 * time.Minute
)

// tally holds a route's counts per backend that outlive its backend sets:
// the active connections, which LeastConn compares, and the failures of
// passive outlier detection (Route.EjectAfter). Keys are addresses and
// IDs, so a weight change keeps them.
type tally struct {
	mu sync.Mutex
	// The fields below are guarded by mu.
	active   map[backendKey]int64 // entries removed at zero
	outliers map[backendKey]*outlier
	ejected  int // outliers with an ejection, ended or not, for a fast path
}

// outlier is the failure record of one backend of a route.
type outlier struct {
	backend   Backend
	failures  int       // consecutive failures since the last answer or ejection
	ejections int       // ejections since the backend last answered
	until     time.Time // the current ejection's end; zero if never ejected
	total     int       // ejections ever, for the status
}

// Ejection is a backend that passive outlier detection took out of the
// rotation (Route.EjectAfter): it is tried only after every other backend
// until Until.
type Ejection struct {
	Backend Backend
	// Until is when the ejection ends.
	Until time.Time
	// Ejections is how many times in a row the backend was ejected
	// without answering a connection in between; each doubles the time.
	Ejections int
	// Total is how many times the route ejected the backend.
	Total int
}

// SetBalance sets how new connections pick their backend, from the next
// accept on. The zero Balance is RoundRobin.
func (r *Route) SetBalance(b Balance) { r.balance.Store(int32(b)) }

// Balance returns how new connections pick their backend.
func (r *Route) Balance() Balance { return Balance(r.balance.Load()) }

// order returns the order in which a new connection tries set's backends:
// by the route's Balance, with the backends ejected now moved to the end,
// so that they are tried only when every other one failed.
func (r *Route) order(set *backendSet) []Backend {
	var bs []Backend
	if r.Balance() == LeastConn && len(set.backends) > 1 {
		r.tally.mu.Lock()
		bs = set.leastConn(func(b Backend) int64 { return r.tally.active[b.key()] })
		r.tally.mu.Unlock()
	} else {
		bs = set.order()
	}
	return r.ejectedLast(bs)
}

// ejectedNow reports whether b is ejected now.
func (r *Route) ejectedNow(b Backend) bool {
	r.tally.mu.Lock()
	defer r.tally.mu.Unlock()
	o := r.tally.outliers[b.key()]
	return o != nil && time.Now().Before(o.until)
}

// ejectedLast returns bs with the backends ejected now moved to the end,
// in their order.
func (r *Route) ejectedLast(bs []Backend) []Backend {
	if len(bs) < 2 {
		return bs
	}
	r.tally.mu.Lock()
	defer r.tally.mu.Unlock()
	if r.tally.ejected == 0 {
		return bs
	}
	now := time.Now()
	ejected := func(b Backend) bool {
		o := r.tally.outliers[b.key()]
		return o != nil && now.Before(o.until)
	}
	if !slices.ContainsFunc(bs, ejected) {
		return bs
	}
	out := make([]Backend, 0, len(bs))
	for _, b := range bs {
		if !ejected(b) {
			out = append(out, b)
		}
	}
	for _, b := range bs {
		if ejected(b) {
			out = append(out, b)
		}
	}
	return out
}

// opened counts a connection established with b.
func (r *Route) opened(b Backend) {
	r.tally.mu.Lock()
	if r.tally.active == nil {
		r.tally.active = make(map[backendKey]int64)
	}
	r.tally.active[b.key()]++
	r.tally.mu.Unlock()
}

// closed counts the end of a connection to b that opened counted: down is
// what b sent, reset whether b reset it. One that b answered clears b's
// failures; one that b reset before answering is a failure.
func (r *Route) closed(b Backend, down int64, reset bool) {
	r.tally.mu.Lock()
	k := b.key()
	if r.tally.active[k]--; r.tally.active[k] <= 0 {
		delete(r.tally.active, k)
	}
	r.tally.mu.Unlock()
	switch {
	case down > 0:
		r.answered(b)
	case reset:
		r.failed(b)
	}
}

// isReset reports whether err is a connection reset by its peer.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// answered clears b's failures: it works.
func (r *Route) answered(b Backend) {
	r.tally.mu.Lock()
	defer r.tally.mu.Unlock()
	o := r.tally.outliers[b.key()]
	if o == nil || time.Now().Before(o.until) {
		return
	}
	if o.ejections > 0 {
		r.tally.ejected--
	}
	delete(r.tally.outliers, b.key())
}

// failed counts a failure of b: a connect that failed, or a connection b
// reset before answering. EjectAfter of them in a row eject it.
func (r *Route) failed(b Backend) {
	after := r.EjectAfter
	if after <= 0 {
		return
	}
	r.tally.mu.Lock()
	if r.tally.outliers == nil {
		r.tally.outliers = make(map[backendKey]*outlier)
	}
	o := r.tally.outliers[b.key()]
	if o == nil {
		o = &outlier{backend: b}
		r.tally.outliers[b.key()] = o
	}
	now := time.Now()
	if now.Before(o.until) {
		// Ejected already: the connections that tried it anyway (every
		// other backend failed too) do not lengthen the ejection.
		r.tally.mu.Unlock()
		return
	}
	o.failures++
	if o.failures < after {
		r.tally.mu.Unlock()
		return
	}
	if o.ejections == 0 {
		r.tally.ejected++
	}
	o.failures = 0
	o.ejections++
	o.total++
	d := r.ejectTime(o.ejections)
	o.until = now.Add(d)
	n := o.ejections
	r.tally.mu.Unlock()
	r.logger().Warn("backend ejected: it failed connections in a row; tried only after the others meanwhile",
		zap.Stringer("backend", b), zap.Int("failures", after), zap.Duration("for", d), zap.Int("ejections", n))
	r.observer().Ejected(b, d)
}

// ejectTime is the length of the nth ejection in a row: EjectTime doubled
// n-1 times, at most MaxEjectTime.
func (r *Route) ejectTime(n int) time.Duration {
	base := r.EjectTime
	if base <= 0 {
		base = defaultEjectTime
	}
	limit := r.MaxEjectTime
	if limit <= 0 {
		limit = defaultMaxEjectTime
	}
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// Ejections returns the backends ejected now, in no particular order.
func (r *Route) Ejections() []Ejection {
	r.tally.mu.Lock()
	defer r.tally.mu.Unlock()
	now := time.Now()
	var out []Ejection
	for _, o := range r.tally.outliers {
		if now.Before(o.until) {
			out = append(out, Ejection{Backend: o.backend, Until: o.until, Ejections: o.ejections, Total: o.total})
		}
	}
	return out
}

// ActiveTo returns the number of connections established with b now.
func (r *Route) ActiveTo(b Backend) int {
	r.tally.mu.Lock()
	defer r.tally.mu.Unlock()
	return int(r.tally.active[b.key()])
}

// pruneTallyLocked drops the failure records of backends that set has
// no more, not even as a fallback, and of those set brings (back) into
// its primary tier from old's fallback or from nowhere: the engine says
// they serve again (unpaused, restarted, healthy), so they start afresh,
// whatever the connections they could not answer meanwhile. Active
// counts go on until their connections end. r.mu must be held.
func (r *Route) pruneTallyLocked(old, set *backendSet) {
	r.tally.mu.Lock()
	defer r.tally.mu.Unlock()
	has := func(bs []Backend, k backendKey) bool {
		return slices.ContainsFunc(bs, func(b Backend) bool { return b.key() == k })
	}
	for k, o := range r.tally.outliers {
		back := has(set.backends, k) && (old == nil || !has(old.backends, k))
		if back || !has(set.backends, k) && !has(set.fallback, k) {
			if o.ejections > 0 {
				r.tally.ejected--
			}
			delete(r.tally.outliers, k)
		}
	}
}
