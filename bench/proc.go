package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc/PID/stat: USER_HZ, which
// is 100 on every Linux architecture Go builds for.
const clockTick = 10 * time.Millisecond

// procStat is the part of /proc/PID/stat the bench reads.
type procStat struct {
	ppid int
	// cpu is utime+stime+cutime+cstime: the process's own CPU time and
	// that of the children it has reaped (socat's forked children).
	cpu time.Duration
}

// readStat parses /proc/PID/stat. The command name (field 2) may contain
// spaces and parentheses, so the fields are counted from its last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	// f[0] is field 3 (state); ppid is field 4, utime..cstime 14..17.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	var s procStat
	if s.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat ppid: %w", pid, err)
	}
	for _, x := range f[11:15] {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("parse /proc/%d/stat times: %w", pid, err)
		}
		s.cpu += time.Duration(n) * clockTick
	}
	return s, nil
}

// tree returns the roots and all their descendants, zombies included,
// from one pass over /proc (a socat holding 9,000 connections has 9,000
// children).
func tree(roots []int) []int {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, err := readStat(n); err == nil {
			kids[s.ppid] = append(kids[s.ppid], n)
		}
	}
	all := append([]int(nil), roots...)
	for i := 0; i < len(all); i++ {
		all = append(all, kids[all[i]]...)
	}
	return all
}

// cpuTime returns the CPU time of the roots, including children they have
// reaped. It first waits (up to a second) for the roots to have no
// children left: a child's time moves into its parent's cutime when it is
// reaped, and reading both while that happens could count it twice or not
// at all. socat reaps a child as soon as its connection ends.
func cpuTime(roots []int) (time.Duration, error) {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && len(tree(roots)) > len(roots) {
		time.Sleep(10 * time.Millisecond) // polling /proc: nothing to wait on
	}
	var total time.Duration
	for _, pid := range tree(roots) {
		s, err := readStat(pid)
		if err != nil {
			return 0, err
		}
		total += s.cpu
	}
	return total, nil
}

// footprint is the memory and descriptors a process tree holds.
type footprint struct {
	pssKiB int64 // proportional set size: shared pages split among sharers
	rssKiB int64 // resident set size (VmRSS), summed
	fds    int
	procs  int
}

// measureFootprint sums the footprint of the roots and their descendants.
// For one process PSS and RSS differ only by shared library pages; for
// socat, which forks a process per connection, summing RSS would count the
// shared pages of every child again, so PSS is the fair measure.
func measureFootprint(roots []int) (footprint, error) {
	var f footprint
	for _, pid := range tree(roots) {
		pss, rss, err := memory(pid)
		if err != nil {
			return footprint{}, err
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return footprint{}, fmt.Errorf("count fds of %d: %w", pid, err)
		}
		f.pssKiB += pss
		f.rssKiB += rss
		f.fds += len(fds)
		f.procs++
	}
	return f, nil
}

// memory reads Pss and Rss (KiB) from /proc/PID/smaps_rollup.
func memory(pid int) (pss, rss int64, err error) {
	fh, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0, 0, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Pss:":
			pss = n
		case "Rss:":
			rss = n
		}
	}
	return pss, rss, sc.Err()
}

// listening reports whether something listens on 127.0.0.1:port or on the
// wildcard address, from /proc/net/tcp. Checking the socket table instead
// of connecting keeps readiness checks from reaching the backends (an
// iperf3 server counts a bare connection as a failed test).
func listening(port int) bool { return socketIn("tcp", "0A", port) } // 0A: LISTEN

// socketIn reports whether a socket of proto (the /proc/net file: tcp,
// udp) on port is in state (hexadecimal, as those files say it), over
// IPv4 and IPv6, in the caller's network namespace.
func socketIn(proto, state string, port int) bool {
	for _, file := range []string{"/proc/net/" + proto, "/proc/net/" + proto + "6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		suffix := fmt.Sprintf(":%04X", port)
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			// f[1] is local_address (HEX_IP:HEX_PORT), f[3] the state.
			if len(f) > 3 && f[3] == state && strings.HasSuffix(f[1], suffix) {
				return true
			}
		}
	}
	return false
}
