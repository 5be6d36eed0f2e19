package main

// The spinners of the UDP latency rows "CPUs kept out of idle": a thread
// per CPU, each at SCHED_IDLE, running without end. A task of the normal
// class that wakes takes the CPU from such a thread at once, so the
// spinners take nothing from the proxies, the client and the echo; they
// keep the CPUs from going idle, whose wake-ups (on this VM, the
// hypervisor's, tens of µs each) are otherwise four of a round trip's
// costs through a proxy, paid alike by every proxy. So booting with
// idle=poll would do, machine-wide.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spinSink keeps the spinners' work from being optimised away.
var spinSink [64]uint64

// spin is the helper: bench spin N runs N spinners until killed.
func spin(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: bench spin N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return fmt.Errorf("spinners: %q is not a count", args[0])
	}
	runtime.GOMAXPROCS(n + 1) // one P left for the rest of the runtime
	failed := make(chan error, n+1)
	go func() {
		// Not left spinning if the bench is killed.
		parent := os.Getppid()
		for range time.Tick(100 * time.Millisecond) {
			if os.Getppid() != parent {
				failed <- errors.New("the bench is gone")
				return
			}
		}
	}()
	for i := range n {
		go func() {
			runtime.LockOSThread() // the policy is the thread's
			a := unix.SchedAttr{Size: uint32(unsafe.Sizeof(unix.SchedAttr{})), Policy: unix.SCHED_IDLE}
			if err := unix.SchedSetAttr(0, &a, 0); err != nil {
				failed <- fmt.Errorf("sched_setattr SCHED_IDLE: %w", err)
				return
			}
			for x := uint64(0); ; x++ {
				spinSink[i%len(spinSink)] = x
			}
		}()
	}
	return <-failed
}

// startSpinners starts a spinner per CPU and waits until each runs at
// SCHED_IDLE; the caller stops them with stop.
func startSpinners(dir string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	n := runtime.NumCPU()
	cmd := exec.Command(self, "spin", strconv.Itoa(n))
	if err := startLogged(cmd, dir, "spin"); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if idleThreads(cmd.Process.Pid) >= n {
			return cmd, nil
		}
	}
	stop([]*exec.Cmd{cmd})
	out, _ := os.ReadFile(filepath.Join(dir, "spin.log"))
	return nil, fmt.Errorf("the spinners did not start: %s", strings.TrimSpace(string(out)))
}

// idleThreads counts the threads of process pid at SCHED_IDLE, from
// /proc/PID/task/*/stat (the policy is field 41).
func idleThreads(pid int) int {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	n := 0
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		_, rest, ok := strings.Cut(string(b), ") ")
		fields := strings.Fields(rest)
		if ok && len(fields) > 38 && fields[38] == strconv.Itoa(unix.SCHED_IDLE) {
			n++
		}
	}
	return n
}
