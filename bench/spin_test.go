package main

import (
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestIdleThreads checks that idleThreads counts a thread put at
// SCHED_IDLE, as the spinners' are: the bench waits for it.
func TestIdleThreads(t *testing.T) {
	before := idleThreads(os.Getpid())
	set, done := make(chan error), make(chan struct{})
	go func() {
		// Locked and never unlocked: the thread ends with the
		// goroutine, its policy with it.
		runtime.LockOSThread()
		a := unix.SchedAttr{Size: uint32(unsafe.Sizeof(unix.SchedAttr{})), Policy: unix.SCHED_IDLE}
		set <- unix.SchedSetAttr(0, &a, 0)
		<-done
	}()
	require.NoError(t, <-set)
	assert.Equal(t, before+1, idleThreads(os.Getpid()))
	close(done)
}

func TestSpinUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"0"}, {"x"}, {"1", "2"}} {
		assert.Error(t, spin(args), "%q", args)
	}
}
