package watcher

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// minSelfPrefix is the shortest ID prefix matched against the listing:
// Docker's short IDs, and the default hostname of a container, are 12 hex
// digits.
const minSelfPrefix = 12

var (
	// mountinfoID matches the source, within its filesystem, of the files
	// Docker bind-mounts into every container: its data root's
	// containers/<id>/ directory, wherever the data root is.
	mountinfoID = regexp.MustCompile(`/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$`)

	// scopeID matches a container's cgroup with the systemd driver.
	scopeID = regexp.MustCompile(`^docker-([0-9a-f]{64})\.scope$`)

	fullID = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hexID  = regexp.MustCompile(`^[0-9a-f]{12,64}$`)
)

// SelfCandidates returns the candidate IDs of the container the current
// process runs in, strongest first and without duplicates, for
// [Watcher].SelfIDs. procfs is where proc is mounted; "" means /proc.
//
// The candidates come, in order, from the sources of the /etc/hostname,
// /etc/hosts and /etc/resolv.conf mounts in procfs/self/mountinfo (reliable
// under cgroup v1 and v2 alike), from procfs/self/cgroup (cgroup v1
// "/docker/<id>", systemd "docker-<id>.scope"; a private cgroup v2
// namespace shows only "/"), and last from the hostname, which is the
// container's 12-digit short ID unless --hostname changed it. Outside a
// container it usually returns nothing, or a hostname that matches no
// container.
func SelfCandidates(procfs string) []string {
	host, _ := os.Hostname()
	return selfCandidates(procfs, host)
}

func selfCandidates(procfs, hostname string) []string {
	if procfs == "" {
		procfs = "/proc"
	}
	var out []string
	add := func(id string) {
		if !slices.ContainsFunc(out, func(c string) bool { return strings.HasPrefix(c, id) }) {
			out = append(out, id)
		}
	}
	if b, err := os.ReadFile(filepath.Join(procfs, "self", "mountinfo")); err == nil {
		for _, id := range mountinfoIDs(b) {
			add(id)
		}
	}
	if b, err := os.ReadFile(filepath.Join(procfs, "self", "cgroup")); err == nil {
		for _, id := range cgroupIDs(b) {
			add(id)
		}
	}
	if h := strings.ToLower(strings.TrimSpace(hostname)); hexID.MatchString(h) {
		add(h)
	}
	return out
}

// mountinfoIDs returns the container IDs found in a mountinfo file, in
// order. Each line is "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...": ROOT
// is the mounted path within its filesystem.
func mountinfoIDs(b []byte) []string {
	var ids []string
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 5 {
			continue
		}
		switch f[4] {
		case "/etc/hostname", "/etc/hosts", "/etc/resolv.conf":
		default:
			continue
		}
		if m := mountinfoID.FindStringSubmatch(f[3]); m != nil && !slices.Contains(ids, m[1]) {
			ids = append(ids, m[1])
		}
	}
	return ids
}

// cgroupIDs returns the container IDs found in a cgroup file, in order. Each
// line is "HIERARCHY:CONTROLLERS:PATH"; in a nested engine the innermost
// (last) ID of a path is the process's own container.
func cgroupIDs(b []byte) []string {
	var ids []string
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) < 3 {
			continue
		}
		if id := cgroupPathID(parts[2]); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// cgroupPathID returns the last container ID in a cgroup path: the element
// after "docker" with the cgroupfs driver (/docker/<id>), or a
// "docker-<id>.scope" element with the systemd driver.
func cgroupPathID(path string) string {
	id := ""
	elems := strings.Split(path, "/")
	for i, e := range elems {
		if i > 0 && elems[i-1] == "docker" && fullID.MatchString(e) {
			id = e
		} else if m := scopeID.FindStringSubmatch(e); m != nil {
			id = m[1]
		}
	}
	return id
}

// matchSelf returns the index in cs of the container the first candidate
// names, by full ID or by a prefix of at least 12 digits that only one
// container has, or -1.
func matchSelf(candidates []string, cs []source.Container) int {
	for _, cand := range candidates {
		cand = strings.ToLower(strings.TrimSpace(cand))
		if len(cand) < minSelfPrefix {
			continue
		}
		match, n := -1, 0
		for i, c := range cs {
			if strings.HasPrefix(c.ID, cand) {
				match, n = i, n+1
			}
		}
		if n == 1 {
			return match
		}
	}
	return -1
}
