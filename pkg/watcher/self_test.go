package watcher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

const (
	selfA = "3f4e5d6c7b8a91a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081920"
	selfB = "aa11bb22cc33dd44ee55ff66aa77bb88cc99dd00ee11ff22aa33bb44cc55dd66"
)

// mountinfo in a container under cgroup v2 (Docker 20.10+).
var mountinfoV2 = strings.ReplaceAll(`1001 900 0:52 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X:/var/lib/docker/overlay2/l/Y
1002 1001 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1003 1001 0:56 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1009 1001 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1010 1001 8:1 /var/lib/docker/containers/ID/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw
1011 1001 8:1 /var/lib/docker/containers/ID/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw
1012 1001 8:1 /var/lib/docker/containers/ID/hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw
1013 1001 0:5 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1020 1001 0:60 / /var/run/docker.sock rw,nosuid,nodev,noexec - tmpfs tmpfs rw
`, "ID", selfA)

// mountinfo where /var/lib/docker is a filesystem of its own, and where
// another container's directory is bind-mounted elsewhere.
var mountinfoOwnFS = strings.NewReplacer("ID", selfA, "OTHER", selfB).Replace(`1001 900 0:52 / / rw,relatime - overlay overlay rw
1010 1001 8:17 /containers/ID/resolv.conf /etc/resolv.conf rw,relatime - xfs /dev/sdb1 rw
1011 1001 8:17 /containers/ID/hostname /etc/hostname rw,relatime - xfs /dev/sdb1 rw
1014 1001 8:17 /containers/OTHER/hostname /data/hostname rw,relatime - xfs /dev/sdb1 rw
`)

var cgroupV1 = strings.ReplaceAll(`12:pids:/docker/ID
11:memory:/docker/ID
10:cpu,cpuacct:/docker/ID
1:name=systemd:/docker/ID
0::/system.slice/containerd.service
`, "ID", selfA)

var cgroupSystemd = strings.ReplaceAll(`0::/system.slice/docker-ID.scope
`, "ID", selfB)

var cgroupNested = strings.NewReplacer("ID", selfA, "OTHER", selfB).Replace(`0::/docker/OTHER/docker/ID
`)

func TestSelfCandidates(t *testing.T) {
	for _, tt := range []struct {
		name      string
		mountinfo string
		cgroup    string
		hostname  string
		want      []string
	}{
		{
			name:      "cgroup v2 private namespace: mountinfo, then hostname prefix of it is dropped",
			mountinfo: mountinfoV2,
			cgroup:    "0::/\n",
			hostname:  selfA[:12],
			want:      []string{selfA},
		},
		{
			name:      "data root on its own filesystem; other mounts ignored",
			mountinfo: mountinfoOwnFS,
			want:      []string{selfA},
		},
		{
			name:   "cgroup v1",
			cgroup: cgroupV1,
			want:   []string{selfA},
		},
		{
			name:   "systemd cgroup driver",
			cgroup: cgroupSystemd,
			want:   []string{selfB},
		},
		{
			name:   "nested engine: innermost ID",
			cgroup: cgroupNested,
			want:   []string{selfA},
		},
		{
			name:      "sources disagree: strongest first",
			mountinfo: mountinfoV2,
			cgroup:    cgroupSystemd,
			hostname:  "0123456789AB",
			want:      []string{selfA, selfB, "0123456789ab"},
		},
		{
			name:     "hostname only",
			hostname: "0123456789ab",
			want:     []string{"0123456789ab"},
		},
		{
			name:     "custom hostname is no candidate",
			hostname: "ambassador",
		},
		{
			name:     "short hex hostname is no candidate",
			hostname: "cafe",
		},
		{
			name:      "on the host",
			mountinfo: "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
			cgroup:    "0::/user.slice/user-1000.slice/session-2.scope\n",
			hostname:  "laptop",
		},
		{
			name:      "garbage",
			mountinfo: "x\n\n1 2 3\n1 2 3 /containers/" + selfA + "/hostname\n",
			cgroup:    "nonsense\n::\n0::/docker/short\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			procfs := t.TempDir()
			self := filepath.Join(procfs, "self")
			require.NoError(t, os.Mkdir(self, 0o755))
			if tt.mountinfo != "" {
				require.NoError(t, os.WriteFile(filepath.Join(self, "mountinfo"), []byte(tt.mountinfo), 0o644))
			}
			if tt.cgroup != "" {
				require.NoError(t, os.WriteFile(filepath.Join(self, "cgroup"), []byte(tt.cgroup), 0o644))
			}
			assert.Equal(t, tt.want, selfCandidates(procfs, tt.hostname))
		})
	}
}

func TestSelfCandidatesOfThisProcess(t *testing.T) {
	// Whatever the machine, the result is well-formed, and a procfs that
	// does not exist leaves at most the hostname.
	for _, c := range SelfCandidates("") {
		assert.Regexp(t, `^[0-9a-f]{12,64}$`, c)
	}
	assert.LessOrEqual(t, len(SelfCandidates(filepath.Join(t.TempDir(), "missing"))), 1)
}

func TestMatchSelf(t *testing.T) {
	cs := []source.Container{{ID: selfA}, {ID: selfB}, {ID: "aa11bb22cc33ffffffffffffffffffffffffffffffffffffffffffffffffffff"}}
	for _, tt := range []struct {
		name       string
		candidates []string
		want       int
	}{
		{"none", nil, -1},
		{"full ID", []string{selfB}, 1},
		{"unique prefix", []string{selfA[:12]}, 0},
		{"upper case", []string{strings.ToUpper(selfA[:12])}, 0},
		{"ambiguous prefix skipped for the next", []string{selfB[:12], selfA}, 0},
		{"longer prefix disambiguates", []string{selfB[:14]}, 1},
		{"too short", []string{selfA[:11]}, -1},
		{"first match wins", []string{selfB, selfA}, 1},
		{"no match", []string{"0123456789ab"}, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, matchSelf(tt.candidates, cs))
		})
	}
}

func FuzzSelfParsers(f *testing.F) {
	f.Add(mountinfoV2, cgroupV1)
	f.Add(mountinfoOwnFS, cgroupNested)
	f.Add("", cgroupSystemd)
	f.Fuzz(func(t *testing.T, mountinfo, cgroup string) {
		for _, id := range append(mountinfoIDs([]byte(mountinfo)), cgroupIDs([]byte(cgroup))...) {
			if !fullID.MatchString(id) {
				t.Fatalf("not a container ID: %q", id)
			}
		}
	})
}
