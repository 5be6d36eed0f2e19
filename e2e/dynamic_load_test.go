//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/ambassadord/ambassadord/internal/load"
)

// attemptTimeout bounds one connection of a load: the longest
// --backend-wait of the tests (recreateWait, 8s) plus slack for a busy
// machine.
const attemptTimeout = 12 * time.Second

// testLoad is the load a dynamic test runs while it changes the engine: a
// fresh connection every 5 ms, each asking which server answers it, at
// most 64 in flight and 20,000 in all (a bound for a load nobody stops).
var testLoad = load.Config{
	Interval:    5 * time.Millisecond,
	Concurrency: 64,
	Timeout:     attemptTimeout,
	MaxAttempts: 20000,
	WaitTimeout: readyTimeout,
}

// startLoad starts a load against addr; it stops when the test ends, if
// the test has not stopped it before.
func startLoad(t *testing.T, addr string) *load.Load {
	t.Helper()
	l := load.Start(addr, testLoad)
	t.Cleanup(func() { l.Stop() })
	return l
}
