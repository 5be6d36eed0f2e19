package harness

import (
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseLDD(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []string
		wantErr bool
	}{
		{
			name: "debian redis-cli",
			out: "\tlinux-vdso.so.1 (0x00007fa77e217000)\n" +
				"\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007fa77dd20000)\n" +
				"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fa77d41e000)\n" +
				"\t/lib64/ld-linux-x86-64.so.2 (0x00007fa77e219000)\n",
			want: []string{"/lib/x86_64-linux-gnu/libm.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"},
		},
		{
			name:    "missing library",
			out:     "\tlibfoo.so.1 => not found\n",
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLDD(tt.out)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestCommand(t *testing.T) {
	e := &Engine{Label: E2ELabel, Run: "r1"}
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{
			name: "ambassador",
			spec: Spec{Name: "amb", Image: "img", Links: []string{"redis:redis"}, Expose: []uint16{6379}},
			want: "docker run -d --name ambassadord-e2e-r1-amb --link redis:redis --expose 6379 img",
		},
		{
			name: "published",
			spec: Spec{Name: "amb", Image: "img", Publish: map[uint16]netip.Addr{6379: netip.MustParseAddr("172.17.0.1")}},
			want: "docker run -d --name ambassadord-e2e-r1-amb -p 172.17.0.1::6379 img",
		},
		{
			name: "published on the engine's default address",
			spec: Spec{Name: "srv", Image: "img", Publish: map[uint16]netip.Addr{9000: {}}},
			want: "docker run -d --name ambassadord-e2e-r1-srv -p 9000 img",
		},
		{
			name: "networks, labels, socket and healthcheck",
			spec: Spec{
				Name: "web", Image: "img",
				Networks: []string{"net1", "net2"},
				IPs:      map[string]netip.Addr{"net1": netip.MustParseAddr("10.128.0.10"), "net2": netip.MustParseAddr("10.129.0.10")},
				Labels:   map[string]string{"ambassador.target": "web", "ambassador.priority": "10"},
				Binds:    []string{"/var/run/docker.sock:/var/run/docker.sock"},
				Healthcheck: &container.HealthConfig{
					Test: []string{"CMD", "/dataserver", "healthcheck"}, Interval: 250 * time.Millisecond, Retries: 1,
				},
			},
			want: "docker run -d --name ambassadord-e2e-r1-web --network net1 --ip 10.128.0.10 " +
				"-l ambassador.priority=10 -l ambassador.target=web -v /var/run/docker.sock:/var/run/docker.sock " +
				"--health-cmd '/dataserver healthcheck' --health-interval 250ms --health-retries 1 img" +
				" && docker network connect --ip 10.129.0.10 net2 ambassadord-e2e-r1-web",
		},
		{
			name: "one-shot client with quoting",
			spec: Spec{
				Name: "cli", Image: "img", OneShot: true, Entrypoint: []string{"/usr/bin/redis-cli"},
				Env: []string{"A=x y"}, Cmd: []string{"set", "k", "it's $HOME", ""},
			},
			want: `docker run --rm --name ambassadord-e2e-r1-cli -e 'A=x y' --entrypoint /usr/bin/redis-cli img set k 'it'\''s $HOME' ''`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, e.Command(tt.spec))
		})
	}
}

func TestNetworkAddr(t *testing.T) {
	n := &Network{Name: "n", Subnet: netip.MustParsePrefix("10.200.3.0/24")}
	assert.Equal(t, netip.MustParseAddr("10.200.3.10"), n.Addr(10))
	assert.Panics(t, func() { (&Network{Name: "auto"}).Addr(10) })
}

// TestRootfs packs a dynamically linked binary of this machine: the binary
// at its path, its libraries and the loader, all under rootfs/.
func TestRootfs(t *testing.T) {
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true binary")
	}
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("no ldd")
	}
	files, err := Rootfs(t.Context(), bin)
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		assert.NotEmpty(t, f.Data, f.Name)
	}
	assert.Contains(t, names, "rootfs"+bin)
	if len(files) > 1 { // a static true has no libraries
		assert.True(t, slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "/libc.so") }), "libc in %v", names)
	}
}
