//go:build e2e

package e2e

// The deploy tests bring up the recipes in deploy/ with docker-compose,
// unchanged, on this engine: the per-run images come in through the
// recipes' variables, and a generated override file adds the run label to
// every service and network, so that everything carries it and the run's
// cleanup finds it. Each recipe a test brings up is a compose project of
// its own, taken down (`down -v --remove-orphans`) when the test ends,
// failed or not; then whatever still carries the project's label is
// removed, and reported as an error.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// deployComposeTimeout bounds one docker-compose command; `up` waits for
// the ambassador's healthcheck (2 s interval in the recipes).
const deployComposeTimeout = 2 * time.Minute

// deploySocket is the engine's socket as the recipes mount it.
const deploySocket = "/var/run/docker.sock"

// deployHAProxy is where Debian's haproxy package puts the binary the
// socket proxy's image is made of.
const deployHAProxy = "/usr/sbin/haproxy"

// deployNobody is the user the confined recipes run the ambassador as.
const deployNobody = "65534:65534"

// TestDeployCompose: deploy/docker-compose.yml as a user runs it. The
// consumer, which shares no network with redis, gets PONG through the
// ambassador; the commented redis-2, uncommented, claims the target with a
// higher priority and takes every new connection, through the consumer's
// path too; stopping it sends them back to redis.
func TestDeployCompose(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	imgs := deployPrepare(t, ctx)
	p := deployUp(t, ctx, "deploy/docker-compose.yml", map[string]string{
		"AMBASSADORD_IMAGE": ambassadorImage,
		"REDIS_IMAGE":       imgs.redis,
		"AMBASSADOR_TARGET": eng.Name("deploy-compose-redis"),
	}, "redis-2")

	redis := p.container(t, ctx, "redis")
	amb := p.container(t, ctx, "ambassador")
	consumer := p.container(t, ctx, "consumer")
	deployNoSharedNetwork(t, consumer, redis)
	p.waitLog(t, ctx, consumer, "PONG")

	via := netip.AddrPortFrom(amb.IP, 6379).String()
	id1 := deployRunID(t, ctx, redis)
	deployWaitServed(t, ctx, via, id1, "redis")

	p.compose(t, ctx, "up", "-d", "--no-deps", "redis-2")
	redis2 := p.container(t, ctx, "redis-2")
	id2 := deployRunID(t, ctx, redis2)
	deployWaitServed(t, ctx, via, id2, "redis-2")
	deployRequireServed(t, ctx, via, id2, "redis-2", 5)
	assert.Equal(t, id2, deployConsumerRunID(t, ctx, p), "run_id seen through the consumer's path")

	p.compose(t, ctx, "stop", "-t", "1", "redis-2")
	deployWaitServed(t, ctx, via, id1, "redis")
}

// TestDeployLeastPrivilege: deploy/least-privilege.yml runs the ambassador
// as nobody with the socket's group, a read-only root, no capabilities and
// no_new_privs, checked on its process; and so confined it still follows
// the engine: redis recreated under its name (new container, new address)
// takes the new connections, then the uncommented redis-2 claims the name.
func TestDeployLeastPrivilege(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	imgs := deployPrepare(t, ctx)
	name := eng.Name("deploy-lp-redis")
	p := deployUp(t, ctx, "deploy/least-privilege.yml", map[string]string{
		"AMBASSADORD_IMAGE": ambassadorImage,
		"REDIS_IMAGE":       imgs.redis,
		"REDIS_NAME":        name,
		"DOCKER_GID":        deploySocketGID(t),
	}, "redis-2")

	amb := p.container(t, ctx, "ambassador")
	deployCheckConfined(t, ctx, amb.ID, true)
	deployDynamicScenario(t, ctx, p, name)
}

// TestDeploySocketProxy: deploy/socket-proxy/ runs the same scenario with
// the ambassador reaching the engine only through haproxy; afterwards the
// proxy's log shows that not one of the ambassador's requests was refused,
// and requests beyond the watcher's (writes, and reads of what is inside
// containers) are refused with 403 while the watcher's are answered.
func TestDeploySocketProxy(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	imgs := deployPrepare(t, ctx)
	if imgs.haproxy == "" {
		deployMissing(t, "haproxy (apt-get install haproxy)")
	}
	name := eng.Name("deploy-sp-redis")
	p := deployUp(t, ctx, "deploy/socket-proxy/docker-compose.yml", map[string]string{
		"AMBASSADORD_IMAGE": ambassadorImage,
		"REDIS_IMAGE":       imgs.redis,
		"HAPROXY_IMAGE":     imgs.haproxy,
		"REDIS_NAME":        name,
		"DOCKER_GID":        deploySocketGID(t),
	}, "redis-2")

	amb := p.container(t, ctx, "ambassador")
	proxy := p.container(t, ctx, "socket-proxy")
	deployCheckConfined(t, ctx, amb.ID, false)
	deployCheckConfined(t, ctx, proxy.ID, true)
	p.waitLog(t, ctx, amb, `"host":"tcp://socket-proxy:2375"`)
	deployDynamicScenario(t, ctx, p, name)

	// With dontlog-normal, haproxy logs only what it refused or what
	// failed: nothing so far, though the ambassador has pinged, listed,
	// inspected and followed the events all along.
	stdout, stderr, err := eng.Logs(ctx, proxy.ID)
	require.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(stdout+stderr), "the proxy refused or failed some of the ambassador's requests")

	api := "/v" + eng.Client.ClientVersion()
	redis := p.container(t, ctx, "redis")
	base := "http://" + netip.AddrPortFrom(proxy.IP, 2375).String()
	now := strconv.FormatInt(time.Now().Unix(), 10)
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodHead, "/_ping", http.StatusOK},
		{http.MethodGet, "/_ping", http.StatusOK},
		{http.MethodGet, api + "/containers/json", http.StatusOK},
		{http.MethodGet, api + "/containers/" + amb.ID + "/json", http.StatusOK},
		{http.MethodGet, api + "/events?since=" + now + "&until=" + now, http.StatusOK},
		// Which engine it is (Docker or Podman), at every session's start.
		{http.MethodGet, api + "/version", http.StatusOK},

		{http.MethodPost, api + "/containers/create", http.StatusForbidden},
		{http.MethodHead, api + "/containers/json", http.StatusForbidden},
		{http.MethodPut, api + "/containers/" + redis.ID + "/archive?path=/", http.StatusForbidden},
		{http.MethodPost, api + "/containers/" + redis.ID + "/stop", http.StatusForbidden},
		{http.MethodDelete, api + "/containers/" + redis.ID + "?force=1", http.StatusForbidden},
		{http.MethodPost, api + "/containers/" + redis.ID + "/exec", http.StatusForbidden},
		{http.MethodPost, "/_ping", http.StatusForbidden},
		{http.MethodGet, api + "/containers/" + redis.ID + "/export", http.StatusForbidden},
		{http.MethodGet, api + "/containers/" + redis.ID + "/archive?path=/", http.StatusForbidden},
		{http.MethodGet, api + "/containers/" + redis.ID + "/logs?stdout=1", http.StatusForbidden},
		{http.MethodGet, api + "/containers/x%2F..%2F" + redis.ID + "%2Fexport/json", http.StatusForbidden},
		{http.MethodGet, api + "/info", http.StatusForbidden},
		{http.MethodGet, api + "/images/json", http.StatusForbidden},
		{http.MethodGet, api + "/networks", http.StatusForbidden},
		{http.MethodGet, api + "/containers/" + redis.ID + "/stats?stream=0", http.StatusForbidden},
		{http.MethodGet, api + "/containers/" + redis.ID + "/top", http.StatusForbidden},
		{http.MethodGet, "/containers/json", http.StatusForbidden}, // unversioned
	} {
		assert.Equal(t, tt.want, deployHTTP(t, ctx, tt.method, base+tt.path), "%s %s", tt.method, tt.path)
	}
	insp, err := eng.Inspect(ctx, redis.ID)
	require.NoError(t, err)
	assert.True(t, insp.State != nil && insp.State.Running, "redis survived the refused DELETE")
	p.waitLog(t, ctx, proxy, "POST "+api+"/containers/create")
}

// TestDeployTwoHost: deploy/two-host/ with both "hosts" on this engine. The
// server side publishes on the default bridge's address (this host's own,
// invisible from outside) on an ephemeral port; the client side, which
// knows nothing but that address, gets PONG for its consumer, and keeps
// reaching redis when the server side recreates it.
func TestDeployTwoHost(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	imgs := deployPrepare(t, ctx)
	host := deployBridgeAddr(t, ctx)
	server := deployUp(t, ctx, "deploy/two-host/server.yml", map[string]string{
		"AMBASSADORD_IMAGE": ambassadorImage,
		"REDIS_IMAGE":       imgs.redis,
		"AMBASSADOR_TARGET": eng.Name("deploy-2h-redis"),
		"REDIS_PUBLISH":     host.String() + ":", // IP::6379, an ephemeral port
	})
	port, err := eng.HostPort(ctx, server.container(t, ctx, "ambassador").ID, 6379)
	require.NoError(t, err)
	require.Equal(t, host, port.Addr())

	client := deployUp(t, ctx, "deploy/two-host/client.yml", map[string]string{
		"AMBASSADORD_IMAGE": ambassadorImage,
		"REDIS_IMAGE":       imgs.redis,
		"SERVER_HOST":       host.String(),
		"SERVER_PORT":       strconv.Itoa(int(port.Port())),
	})
	amb := client.container(t, ctx, "ambassador")
	deployCheckConfined(t, ctx, amb.ID, false)
	client.waitLog(t, ctx, client.container(t, ctx, "consumer"), "PONG")
	via := netip.AddrPortFrom(amb.IP, 6379).String()
	deployWaitServed(t, ctx, via, deployRunID(t, ctx, server.container(t, ctx, "redis")), "the server side's redis")

	// The server side recreates its redis; the client side, unchanged,
	// reaches the new one.
	server.compose(t, ctx, "up", "-d", "--no-deps", "--force-recreate", "redis")
	deployWaitServed(t, ctx, via, deployRunID(t, ctx, server.container(t, ctx, "redis")), "the server side's recreated redis")
}

// deployRecipes are the compose files in deploy/, each with the variables
// it requires and a value for each.
var deployRecipes = []struct {
	file     string
	required map[string]string
}{
	{"deploy/docker-compose.yml", nil},
	{"deploy/least-privilege.yml", map[string]string{"DOCKER_GID": "999"}},
	{"deploy/socket-proxy/docker-compose.yml", map[string]string{"DOCKER_GID": "999"}},
	{"deploy/two-host/server.yml", nil},
	{"deploy/two-host/client.yml", map[string]string{"SERVER_HOST": "10.0.0.5"}},
	{"deploy/multi-host/server.yml", nil},
	{"deploy/multi-host/client.yml", map[string]string{"ENGINES": "big=tcp://10.0.0.5:2376,tls=/certs/big", "CERTS_DIR": "/etc/ambassadord/certs"}},
	{"deploy/multi-host/socket-proxy.yml", map[string]string{"DOCKER_GID": "999", "PROXY_CERTS": "/etc/ambassadord/server-big"}},
	{"deploy/swarm/stack.yml", nil},
}

// TestDeployConfig checks what the other deploy tests do not run: every
// compose file in deploy/ is in deployRecipes and validates (`config -q`),
// with each of its commented-out services uncommented too, and refuses to
// start without a variable it requires; deploy/README.md names every
// recipe; haproxy accepts the socket proxy's configuration; the systemd
// unit parses, agrees with its install instructions, and passes
// `systemd-analyze verify` where systemd is installed; and every
// AMBASSADORD_* variable the recipes mention is one the binary reads.
func TestDeployConfig(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("docker-compose"); err != nil {
		deployMissing(t, "docker-compose (apt-get install docker-compose)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	root, err := harness.RepoRoot(ctx)
	require.NoError(t, err)

	var found []string
	require.NoError(t, fs.WalkDir(os.DirFS(root), "deploy", func(path string, d fs.DirEntry, err error) error {
		if ext := filepath.Ext(path); err == nil && (ext == ".yml" || ext == ".yaml") {
			found = append(found, path)
		}
		return err
	}))
	var listed []string
	for _, r := range deployRecipes {
		listed = append(listed, r.file)
	}
	require.ElementsMatch(t, listed, found, "deployRecipes lists every compose file in deploy/")

	readme, err := os.ReadFile(filepath.Join(root, "deploy/README.md"))
	require.NoError(t, err)
	for _, r := range deployRecipes {
		assert.Contains(t, string(readme), strings.TrimPrefix(r.file, "deploy/"), "deploy/README.md names the recipe")
	}

	for _, r := range deployRecipes {
		t.Run("compose/"+strings.TrimPrefix(r.file, "deploy/"), func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(root, r.file))
			require.NoError(t, err)
			files := []string{filepath.Join(root, r.file)}
			if extra := deployCommented(string(src)); len(extra) > 0 {
				var b strings.Builder
				b.WriteString("version: \"2.4\"\nservices:\n")
				for _, name := range extra {
					block, err := deployUncomment(string(src), name)
					require.NoError(t, err)
					b.WriteString(block)
				}
				f := filepath.Join(t.TempDir(), "uncommented.yml")
				require.NoError(t, os.WriteFile(f, []byte(b.String()), 0o644))
				files = append(files, f)
				t.Logf("with the commented-out %v", extra)
			}
			// `config` validates as `config -q` does, and prints the
			// result, whose services and networks must be those deployUp
			// reads from the recipe to label them.
			p := &deployProject{name: "config", files: files, env: deployEnv(r.required)}
			config, err := p.run(ctx, "config")
			require.NoError(t, err)
			for _, section := range []string{"services", "networks"} {
				want := deploySectionKeys(string(src), section)
				if section == "services" {
					want = append(want, deployCommented(string(src))...)
				}
				assert.ElementsMatch(t, want, deploySectionKeys(config, section), "%s as deployUp reads them", section)
			}
			for k := range r.required {
				vars := maps.Clone(r.required)
				delete(vars, k)
				p.env = deployEnv(vars)
				_, err := p.run(ctx, "config", "-q")
				require.Error(t, err, "config without %s", k)
				assert.Contains(t, err.Error(), "set "+k, "the error says which variable is missing")
			}
		})
	}

	t.Run("haproxy", func(t *testing.T) {
		if _, err := os.Stat(deployHAProxy); err != nil {
			deployMissing(t, "haproxy (apt-get install haproxy)")
		}
		out, err := exec.CommandContext(ctx, deployHAProxy, "-c", "-f", filepath.Join(root, "deploy/socket-proxy/haproxy.cfg")).CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.NotRegexp(t, `\[(WARNING|ALERT)\]`, string(out))
	})

	t.Run("multi-host/haproxy", func(t *testing.T) {
		if _, err := os.Stat(deployHAProxy); err != nil {
			deployMissing(t, "haproxy (apt-get install haproxy)")
		}
		// With the certificates certs.sh makes, where socket-proxy.yml
		// mounts them (/certs), here a temporary directory.
		certs := deployCerts(t, ctx, root, t.TempDir(), "10.0.0.5")
		src, err := os.ReadFile(filepath.Join(root, "deploy/multi-host/haproxy.cfg"))
		require.NoError(t, err)
		require.Contains(t, string(src), "/certs/haproxy.pem")
		cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
		require.NoError(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(string(src), "/certs/", certs.server+"/")), 0o644))
		out, err := exec.CommandContext(ctx, deployHAProxy, "-c", "-f", cfg).CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.NotRegexp(t, `\[(WARNING|ALERT)\]`, string(out))
	})

	t.Run("multi-host/certs.sh", func(t *testing.T) {
		deployCheckCerts(t, ctx, root)
	})

	t.Run("multi-host/daemon.json", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "deploy/multi-host/daemon.json"))
		require.NoError(t, err)
		var cfg struct {
			Hosts     []string `json:"hosts"`
			TLSVerify bool     `json:"tlsverify"`
			CA        string   `json:"tlscacert"`
			Cert      string   `json:"tlscert"`
			Key       string   `json:"tlskey"`
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&cfg), "daemon.json holds dockerd's TLS settings and nothing else")
		assert.True(t, cfg.TLSVerify, "tlsverify")
		assert.Contains(t, cfg.Hosts, "unix:///var/run/docker.sock", "the local socket stays")
		assert.Contains(t, cfg.Hosts, "tcp://0.0.0.0:2376", "TLS on Docker's port")
		for name, path := range map[string]string{harness.CAFile: cfg.CA, harness.CertFile: cfg.Cert, harness.KeyFile: cfg.Key} {
			assert.Equal(t, "/etc/docker/tls/"+name, path, "where the README copies server-NAME/")
		}
	})

	t.Run("systemd", func(t *testing.T) {
		deployCheckUnit(t, ctx, root)
	})

	t.Run("environment", func(t *testing.T) {
		ctx := setup(t)
		help := runToExit(t, ctx, harness.Spec{Name: "help", Image: ambassadorImage, Cmd: []string{"--help"}})
		known := map[string]bool{}
		for _, m := range regexp.MustCompile(`\[(AMBASSADORD_[A-Z_]+)\]`).FindAllStringSubmatch(help, -1) {
			known[m[1]] = true
		}
		require.NotEmpty(t, known, "ambassadord --help lists no variable:\n%s", help)
		files := []string{"deploy/ambassadord.default", "deploy/ambassadord.service"}
		for _, r := range deployRecipes {
			files = append(files, r.file)
		}
		for _, f := range files {
			src, err := os.ReadFile(filepath.Join(root, f))
			require.NoError(t, err)
			for _, v := range regexp.MustCompile(`AMBASSADORD_[A-Z_]*[A-Z]`).FindAllString(string(src), -1) {
				if v != "AMBASSADORD_IMAGE" { // the recipes' own variable
					assert.True(t, known[v], "%s names %s, which ambassadord does not read", f, v)
				}
			}
		}
	})
}

// deployCheckUnit checks deploy/ambassadord.service and its environment
// file: both parse, the unit runs the binary and reads the file where their
// install instructions put them, and systemd stops the service only after
// the shutdown grace; then, where systemd-analyze exists, the unit passes
// `systemd-analyze verify` silently (it exits 0 on mere warnings).
func deployCheckUnit(t *testing.T, ctx context.Context, root string) {
	t.Helper()
	unitSrc, err := os.ReadFile(filepath.Join(root, "deploy/ambassadord.service"))
	require.NoError(t, err)
	unit := map[string]map[string][]string{}
	var section string
	for i, line := range strings.Split(string(unitSrc), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok && section != "", "ambassadord.service:%d: not KEY=VALUE in a section: %q", i+1, line)
			unit[section][k] = append(unit[section][k], v)
		}
	}
	require.ElementsMatch(t, []string{"Unit", "Service", "Install"}, slices.Collect(maps.Keys(unit)))
	svc := unit["Service"]

	install := regexp.MustCompile(`(?m)^#\s+install -m \d+ (\S+) (\S+)`).FindAllStringSubmatch(string(unitSrc), -1)
	dest := map[string]string{}
	for _, m := range install {
		dest[m[1]] = m[2]
	}
	assert.Equal(t, []string{dest["bin/ambassadord"]}, svc["ExecStart"], "ExecStart runs the installed binary")
	assert.Equal(t, []string{"-" + dest["deploy/ambassadord.default"]}, svc["EnvironmentFile"], "EnvironmentFile is the installed default file")

	defSrc, err := os.ReadFile(filepath.Join(root, "deploy/ambassadord.default"))
	require.NoError(t, err)
	grace := 5 * time.Second
	for i, line := range strings.Split(string(defSrc), "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "#AMBASSADORD_SHUTDOWN_GRACE="); ok {
			grace, err = time.ParseDuration(v)
			require.NoError(t, err, "ambassadord.default:%d", i+1)
		}
		if line == "" || line[0] == '#' {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		assert.True(t, ok && regexp.MustCompile(`^AMBASSADORD_[A-Z_]+$`).MatchString(k), "ambassadord.default:%d: not AMBASSADORD_*=VALUE: %q", i+1, line)
	}
	require.Len(t, svc["TimeoutStopSec"], 1)
	stop, err := time.ParseDuration(svc["TimeoutStopSec"][0])
	require.NoError(t, err, "TimeoutStopSec")
	assert.Greater(t, stop, grace, "TimeoutStopSec exceeds the shutdown grace")

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is missing (Debian package systemd); checked the unit's syntax only")
	}
	// verify wants ExecStart to exist: any executable will do, this one.
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	verified := strings.Replace(string(unitSrc), "ExecStart="+dest["bin/ambassadord"], "ExecStart="+self, 1)
	f := filepath.Join(dir, "ambassadord.service")
	require.NoError(t, os.WriteFile(f, []byte(verified), 0o644))
	cmd := exec.CommandContext(ctx, analyze, "verify", f)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify:\n%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify warns")
}

// deployDynamicScenario runs the follow-by-name scenario on a recipe whose
// ambassador routes 6379 to the container named name (the redis service)
// and whose redis-2 claims that name.
func deployDynamicScenario(t *testing.T, ctx context.Context, p *deployProject, name string) {
	t.Helper()
	redis := p.container(t, ctx, "redis")
	amb := p.container(t, ctx, "ambassador")
	consumer := p.container(t, ctx, "consumer")
	require.Equal(t, name, redis.Name)
	deployNoSharedNetwork(t, consumer, redis)
	p.waitLog(t, ctx, consumer, "PONG")
	via := netip.AddrPortFrom(amb.IP, 6379).String()
	deployWaitServed(t, ctx, via, deployRunID(t, ctx, redis), "redis")

	// Recreated: a new container under the same name, on a new address.
	// The engine hands a freed address to the next container that asks for
	// one, so `up --force-recreate` would usually give the new redis the
	// old address, and an ambassador that kept forwarding to the address
	// it knew would pass. Instead the service is removed, a decoy (another
	// redis, which neither has the name nor claims it) takes the freed
	// address, and only then is the service brought back: new connections
	// must reach the new container, not whatever answers at the old
	// address.
	require.Len(t, redis.IPs, 1, "redis is on the backend network only")
	backend := slices.Collect(maps.Keys(redis.IPs))
	p.compose(t, ctx, "rm", "--stop", "--force", "redis")
	decoy := start(t, ctx, harness.Spec{Name: "decoy", Image: redisImage, Networks: backend})
	if decoy.IP != redis.IP {
		// An engine that hands out the lowest free address (Docker 20.10)
		// may free the old one only after `rm` returned: a second decoy,
		// a moment later, takes it.
		time.Sleep(500 * time.Millisecond)
		decoy2 := start(t, ctx, harness.Spec{Name: "decoy2", Image: redisImage, Networks: backend})
		t.Logf("decoy at %s, not at redis's old %s; decoy2 at %s", decoy.IP, redis.IP, decoy2.IP)
	}
	p.compose(t, ctx, "up", "-d", "--no-deps", "redis")
	recreated := p.container(t, ctx, "redis")
	t.Logf("redis recreated: %s at %s, was %s at %s; decoy %s at %s",
		recreated.ID[:12], recreated.IP, redis.ID[:12], redis.IP, decoy.ID[:12], decoy.IP)
	require.Equal(t, name, recreated.Name)
	require.NotEqual(t, redis.ID, recreated.ID)
	require.NotEqual(t, redis.IP, recreated.IP, "the decoy did not keep the engine from reusing the old address")
	decoyID := deployRunID(t, ctx, decoy)
	recreatedID := deployRunID(t, ctx, recreated)
	deployWaitServed(t, ctx, via, recreatedID, "the recreated redis")
	require.NotEqual(t, decoyID, recreatedID)

	// Claimed: redis-2 carries ambassador.target=<name>.
	p.compose(t, ctx, "up", "-d", "--no-deps", "redis-2")
	redis2 := p.container(t, ctx, "redis-2")
	id2 := deployRunID(t, ctx, redis2)
	deployWaitServed(t, ctx, via, id2, "redis-2")
	deployRequireServed(t, ctx, via, id2, "redis-2", 5)
	assert.Equal(t, id2, deployConsumerRunID(t, ctx, p), "run_id seen through the consumer's path")
}

// deployImages are the images the recipes run besides the ambassador.
type deployImages struct {
	// redis is the redis fixture with DNS enabled: the recipes name
	// services, which Docker's DNS resolves, and the fixture's own
	// nsswitch.conf allows /etc/hosts only.
	redis string
	// haproxy is Debian's haproxy packed FROM scratch, or "" when this
	// machine has none.
	haproxy string
}

// The deploy tests' images, built by the first test that needs them.
var (
	deployMu       sync.Mutex // guards deployBuilt and deployBuildErr
	deployBuilt    *deployImages
	deployBuildErr error
)

// deployPrepare skips (or, when CI requires the engine, fails) the test
// without docker-compose, and builds the images once for all deploy tests.
func deployPrepare(t *testing.T, ctx context.Context) deployImages {
	t.Helper()
	if _, err := exec.LookPath("docker-compose"); err != nil {
		deployMissing(t, "docker-compose (apt-get install docker-compose)")
	}
	if host := eng.Client.DaemonHost(); host != "unix://"+deploySocket {
		t.Skipf("the engine is at %s; the recipes mount %s", host, deploySocket)
	}
	deployMu.Lock()
	defer deployMu.Unlock()
	if deployBuilt == nil && deployBuildErr == nil {
		deployBuilt, deployBuildErr = deployBuildImages(ctx)
	}
	require.NoError(t, deployBuildErr)
	return *deployBuilt
}

// deployMissing skips the test for want, a missing tool, unless CI
// requires everything (AMBASSADORD_E2E_REQUIRE_ENGINE=1).
func deployMissing(t *testing.T, want string) {
	t.Helper()
	if os.Getenv(requireEngineEnv) == "1" {
		t.Fatalf("%s is missing (.ci/setup installs it)", want)
	}
	t.Skipf("%s is missing; set %s=1 to fail instead", want, requireEngineEnv)
}

func deployBuildImages(ctx context.Context) (*deployImages, error) {
	var imgs deployImages
	imgs.redis = eng.ImageTag("redis-dns")
	err := eng.BuildImage(ctx, imgs.redis, []harness.File{
		{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM " + redisImage + "\nCOPY nsswitch.conf /etc/nsswitch.conf\n")},
		{Name: "nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
	}, nil)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(deployHAProxy); err != nil {
		return &imgs, nil
	}
	files, err := harness.Rootfs(ctx, deployHAProxy)
	if err != nil {
		return nil, err
	}
	imgs.haproxy = eng.ImageTag("haproxy")
	files = append(files, harness.File{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"" + deployHAProxy + "\"]\n")})
	return &imgs, eng.BuildImage(ctx, imgs.haproxy, files, nil)
}

// deployProject is one recipe brought up as a compose project of its own.
type deployProject struct {
	name  string   // -p: unique to the test and the run
	files []string // -f, in order: the recipe, its uncommented services, the labels
	env   []string // the environment docker-compose runs with
	// engine is where the project runs: nil for the run's engine (eng),
	// else a private one, which docker-compose reaches by DOCKER_HOST.
	engine *harness.Engine
}

// eng returns the engine the project runs on.
func (p *deployProject) eng() *harness.Engine {
	if p.engine != nil {
		return p.engine
	}
	return eng
}

// deployUp brings up recipe (a path from the repository's root) as a
// project of its own with the variables vars, and takes it down when the
// test ends. Each service named in extra is taken from a commented-out
// block of the recipe ("  #NAME:" and the lines after it), uncommented,
// and added to the project without being started.
func deployUp(t *testing.T, ctx context.Context, recipe string, vars map[string]string, extra ...string) *deployProject {
	t.Helper()
	return deployUpOn(t, ctx, nil, "", recipe, vars, extra...)
}

// deployUpOn is deployUp on the engine e at host (its DOCKER_HOST), or on
// the run's engine if e is nil.
func deployUpOn(t *testing.T, ctx context.Context, e *harness.Engine, host, recipe string, vars map[string]string, extra ...string) *deployProject {
	t.Helper()
	root, err := harness.RepoRoot(ctx)
	require.NoError(t, err)
	dir := t.TempDir()
	p := &deployProject{
		name:   deployProjectName(t, recipe),
		files:  []string{filepath.Join(root, recipe)},
		engine: e,
	}
	p.env = deployEnv(vars)
	if host != "" {
		// exec keeps the last of duplicate variables.
		p.env = append(p.env, "DOCKER_HOST="+host)
	}
	src, err := os.ReadFile(p.files[0])
	require.NoError(t, err)
	if len(extra) > 0 {
		var b strings.Builder
		b.WriteString("version: \"2.4\"\nservices:\n")
		for _, name := range extra {
			block, err := deployUncomment(string(src), name)
			require.NoError(t, err, "%s", recipe)
			b.WriteString(block)
		}
		f := filepath.Join(dir, "uncommented.yml")
		require.NoError(t, os.WriteFile(f, []byte(b.String()), 0o644))
		p.files = append(p.files, f)
	}

	// Label every service and network with the run label. They are read
	// from the recipe rather than from `docker-compose config`, which
	// would cost one more slow start of docker-compose; TestDeployConfig
	// checks that both agree.
	services := append(deploySectionKeys(string(src), "services"), extra...)
	networks := deploySectionKeys(string(src), "networks")
	require.NotEmpty(t, services)
	label := fmt.Sprintf("{%q: %q}", eng.Label, eng.Run)
	var b strings.Builder
	b.WriteString("version: \"2.4\"\nservices:\n")
	for _, s := range services {
		fmt.Fprintf(&b, "  %s:\n    labels: %s\n", s, label)
	}
	if len(networks) > 0 {
		b.WriteString("networks:\n")
		for _, n := range networks {
			fmt.Fprintf(&b, "  %s:\n    labels: %s\n", n, label)
		}
	}
	f := filepath.Join(dir, "labels.yml")
	require.NoError(t, os.WriteFile(f, []byte(b.String()), 0o644))
	p.files = append(p.files, f)

	t.Cleanup(func() { p.down(t) })
	p.compose(t, ctx, append([]string{"up", "-d"}, slices.DeleteFunc(services, func(s string) bool { return slices.Contains(extra, s) })...)...)
	return p
}

// deployEnv is the environment docker-compose runs with: this process's,
// without the caller's compose settings or any of the recipes' variables,
// and with vars.
func deployEnv(vars map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "COMPOSE_") && !deployRecipeVar(k) {
			env = append(env, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	return env
}

// deployRecipeVar tells whether k is one of the variables the recipes read.
func deployRecipeVar(k string) bool {
	switch k {
	case "DOCKER_GID", "SERVER_HOST", "SERVER_PORT", "REDIS_IMAGE", "REDIS_NAME", "REDIS_PUBLISH", "HAPROXY_IMAGE",
		"ENGINES", "CERTS_DIR", "PROXY_CERTS", "PROXY_PUBLISH", "DOCKER_SOCKET", "CERTS_OUT", "CERTS_DAYS", "CA_DAYS":
		return true
	}
	return strings.HasPrefix(k, "AMBASSADOR")
}

// deployCommented returns the names of the commented-out services of a
// compose file ("  #NAME:" lines), which [deployUncomment] restores.
func deployCommented(src string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  #([A-Za-z0-9_.-]+):$`).FindAllStringSubmatch(src, -1) {
		names = append(names, m[1])
	}
	return names
}

// deployProjectName names the project of one recipe in one test. The
// recipe is part of it: a test that brings up two recipes (the two-host
// one) must not put them in one project, where services of the same name
// (both sides have an "ambassador") are one service, and the second `up`
// would recreate the first side's container as its own.
func deployProjectName(t *testing.T, recipe string) string {
	t.Helper()
	short := strings.TrimSuffix(strings.TrimPrefix(recipe, "deploy/"), ".yml")
	short = strings.TrimSuffix(short, "/docker-compose")
	return eng.Name(unsafeName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "TestDeploy")+"-"+short), "-"))
}

// compose runs docker-compose with the project's name, files and
// environment, logs how long it took, requires success and returns its
// stdout.
func (p *deployProject) compose(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	start := time.Now()
	out, err := p.run(ctx, args...)
	t.Logf("$ docker-compose -p %s %s (%s)", p.name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	require.NoError(t, err)
	return out
}

func (p *deployProject) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, deployComposeTimeout)
	defer cancel()
	full := []string{"--ansi", "never", "-p", p.name}
	for _, f := range p.files {
		full = append(full, "-f", f)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "docker-compose", full...)
	cmd.Env = p.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker-compose %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// down takes the project down, printing its logs first if the test
// failed, then removes whatever still carries the project's label: compose
// labels every container and network it creates with it.
func (p *deployProject) down(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), deployComposeTimeout)
	defer cancel()
	if t.Failed() {
		out, err := p.run(ctx, "logs", "--no-color", "--timestamps")
		t.Logf("logs of project %s (err %v):\n%s", p.name, err, out)
	}
	start := time.Now()
	if _, err := p.run(ctx, "down", "-v", "--remove-orphans", "-t", "1"); err != nil {
		t.Errorf("take project %s down: %v", p.name, err)
	}
	t.Logf("$ docker-compose -p %s down (%s)", p.name, time.Since(start).Round(time.Millisecond))
	e := p.eng()
	f := make(client.Filters).Add("label", "com.docker.compose.project="+p.name)
	cs, err := e.Client.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if assert.NoError(t, err) {
		for _, c := range cs.Items {
			t.Errorf("container %v of project %s survived down", c.Names, p.name)
			assert.NoError(t, e.Remove(ctx, c.ID))
		}
	}
	ns, err := e.Client.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if assert.NoError(t, err) {
		for _, n := range ns.Items {
			t.Errorf("network %s of project %s survived down", n.Name, p.name)
			assert.NoError(t, e.RemoveNetwork(ctx, n.ID))
		}
	}
}

// container returns the running container of a service, with its
// addresses; IP is the one on the first of its networks by name. It asks
// the engine for the labels compose puts on the service's containers
// rather than running `docker-compose ps`, which is slower and lists the
// service's one-off (`run`) containers too.
func (p *deployProject) container(t *testing.T, ctx context.Context, service string) *harness.Container {
	t.Helper()
	f := make(client.Filters).Add("label",
		"com.docker.compose.project="+p.name,
		"com.docker.compose.service="+service,
		"com.docker.compose.oneoff=False")
	cs, err := p.eng().Client.ContainerList(ctx, client.ContainerListOptions{Filters: f})
	require.NoError(t, err)
	require.Len(t, cs.Items, 1, "running containers of service %s", service)
	return deployInspectOn(t, ctx, p.eng(), cs.Items[0].ID)
}

// deployInspect returns a running container of a project by ID or name,
// with its addresses as [deployProject.container] does.
func deployInspect(t *testing.T, ctx context.Context, id string) *harness.Container {
	t.Helper()
	return deployInspectOn(t, ctx, eng, id)
}

// deployInspectOn is deployInspect on the engine e.
func deployInspectOn(t *testing.T, ctx context.Context, e *harness.Engine, id string) *harness.Container {
	t.Helper()
	insp, err := e.Inspect(ctx, id)
	require.NoError(t, err)
	name := strings.TrimPrefix(insp.Name, "/")
	require.True(t, insp.State != nil && insp.State.Running, "%s is not running", name)
	c := &harness.Container{ID: insp.ID, Name: name, IPs: map[string]netip.Addr{}}
	assert.Equal(t, e.Run, insp.Config.Labels[e.Label], "%s carries the run label", name)
	for n, ep := range insp.NetworkSettings.Networks {
		if ep != nil {
			c.IPs[n] = ep.IPAddress
		}
	}
	if names := slices.Sorted(maps.Keys(c.IPs)); len(names) > 0 {
		c.IP = c.IPs[names[0]]
	}
	return c
}

// waitLog waits for a container of the project to log substr.
func (p *deployProject) waitLog(t *testing.T, ctx context.Context, c *harness.Container, substr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	require.NoError(t, p.eng().WaitLog(ctx, c.ID, substr))
}

// deployUncomment returns the commented-out service name of a compose
// file, uncommented: the line "  #name:" and the "  #  ..." lines after it.
func deployUncomment(src, name string) (string, error) {
	var b strings.Builder
	in := false
	for line := range strings.Lines(src) {
		switch {
		case strings.TrimRight(line, "\n") == "  #"+name+":":
			in = true
		case in && strings.HasPrefix(line, "  #  "):
		default:
			if in {
				return b.String(), nil
			}
			continue
		}
		b.WriteString("  " + strings.TrimPrefix(line, "  #"))
	}
	if !in {
		return "", fmt.Errorf("no commented-out service %q", name)
	}
	return b.String(), nil
}

// deploySectionKeys returns the keys of a top-level section of a compose
// file with two-space indents, as the recipes and what `docker-compose
// config` prints have; commented-out keys are not keys.
func deploySectionKeys(yaml, section string) []string {
	var keys []string
	in := false
	key := regexp.MustCompile(`^  ([A-Za-z0-9_.-]+):`)
	for line := range strings.Lines(yaml) {
		switch {
		case strings.TrimRight(line, "\n") == section+":":
			in = true
		case line != "" && line[0] != ' ' && line[0] != '\n' && line[0] != '#':
			in = false
		case in:
			if m := key.FindStringSubmatch(line); m != nil {
				keys = append(keys, m[1])
			}
		}
	}
	return keys
}

// deploySocketGID returns the group of the engine's socket, for DOCKER_GID.
func deploySocketGID(t *testing.T) string {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(deploySocket, &st), "stat the docker socket")
	return strconv.FormatUint(uint64(st.Gid), 10)
}

// deployBridgeAddr returns this host's address on the default bridge.
func deployBridgeAddr(t *testing.T, ctx context.Context) netip.Addr {
	t.Helper()
	res, err := eng.Client.NetworkInspect(ctx, "bridge", client.NetworkInspectOptions{})
	require.NoError(t, err)
	for _, c := range res.Network.IPAM.Config {
		if c.Gateway.Is4() {
			return c.Gateway
		}
	}
	// 20.10 leaves the gateway out of the IPAM config: ask the interface.
	ifname := res.Network.Options["com.docker.network.bridge.name"]
	iface, err := net.InterfaceByName(ifname)
	require.NoError(t, err, "default bridge interface %q", ifname)
	addrs, err := iface.Addrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr()
		}
	}
	t.Fatalf("default bridge %s has no IPv4 address", ifname)
	return netip.Addr{}
}

// deployCheckConfined checks, on the container's configuration and on its
// main process as the kernel sees it, that it runs as nobody without
// capabilities, without privilege gain, on a read-only root; with socket,
// that the Docker socket is mounted and its group added, else that it is
// not mounted at all.
func deployCheckConfined(t *testing.T, ctx context.Context, id string, socket bool) {
	t.Helper()
	insp, err := eng.Inspect(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, deployNobody, insp.Config.User)
	hc := insp.HostConfig
	assert.True(t, hc.ReadonlyRootfs, "read-only root")
	assert.Equal(t, []string{"ALL"}, []string(hc.CapDrop))
	assert.Contains(t, hc.SecurityOpt, "no-new-privileges:true")
	mounted := false
	for _, m := range insp.Mounts {
		mounted = mounted || m.Destination == deploySocket
	}
	assert.Equal(t, socket, mounted, "docker socket mounted")
	if socket {
		assert.Equal(t, []string{deploySocketGID(t)}, hc.GroupAdd)
	}

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", insp.State.Pid))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
		t.Logf("cannot read the process's status (%v); checked the configuration only", err)
		return
	}
	require.NoError(t, err)
	fields := map[string]string{}
	for line := range strings.Lines(string(status)) {
		k, v, _ := strings.Cut(line, ":")
		fields[k] = strings.Join(strings.Fields(v), " ")
	}
	assert.Equal(t, "65534 65534 65534 65534", fields["Uid"])
	assert.Equal(t, "65534 65534 65534 65534", fields["Gid"])
	for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		assert.Equal(t, "0000000000000000", fields[c], c)
	}
	assert.Equal(t, "1", fields["NoNewPrivs"])
}

// deployNoSharedNetwork requires that a and b share no network: a reaches
// b only through the ambassador.
func deployNoSharedNetwork(t *testing.T, a, b *harness.Container) {
	t.Helper()
	for n := range a.IPs {
		_, shared := b.IPs[n]
		require.False(t, shared, "%s and %s share network %s", a.Name, b.Name, n)
	}
}

// deployRunID returns the run_id of the redis server in c, asked directly.
func deployRunID(t *testing.T, ctx context.Context, c *harness.Container) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var id string
	require.NoError(t, harness.Poll(ctx, func(ctx context.Context) error {
		var err error
		id, err = deployAskRunID(ctx, netip.AddrPortFrom(c.IP, 6379).String())
		return err
	}), "run_id of %s", c.Name)
	return id
}

var deployRunIDLine = regexp.MustCompile(`(?m)^run_id:([0-9a-f]+)\r?$`)

// deployAskRunID opens a new connection to addr and returns the run_id of
// the redis server that answers INFO server on it.
func deployAskRunID(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rc, err := dialRESP(ctx, addr)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	info, err := rc.do("INFO", "server")
	if err != nil {
		return "", err
	}
	m := deployRunIDLine.FindStringSubmatch(info)
	if m == nil {
		return "", harness.Permanent(fmt.Errorf("no run_id in INFO server: %q", info))
	}
	return m[1], nil
}

// deployWaitServed waits until a new connection to addr reaches the redis
// server whose run_id is want.
func deployWaitServed(t *testing.T, ctx context.Context, addr, want, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	start := time.Now()
	require.NoError(t, harness.Poll(ctx, func(ctx context.Context) error {
		got, err := deployAskRunID(ctx, addr)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("served by run_id %s", got)
		}
		return nil
	}), "wait for new connections to %s to reach %s (run_id %s)", addr, what, want)
	t.Logf("new connections to %s reach %s after %s", addr, what, time.Since(start).Round(time.Millisecond))
}

// deployRequireServed requires that n new connections in a row to addr
// all reach the redis server whose run_id is want.
func deployRequireServed(t *testing.T, ctx context.Context, addr, want, what string, n int) {
	t.Helper()
	for i := range n {
		got, err := deployAskRunID(ctx, addr)
		require.NoError(t, err)
		require.Equal(t, want, got, "connection %d of %d reaches %s", i+1, n, what)
	}
}

// deployConsumerRunID runs `redis-cli -h redis info server` in the
// project's running consumer, which reaches redis only through the
// ambassador, and returns the run_id it printed. It execs in the container
// through the engine: `docker-compose exec` would need a TTY or -T, and
// `run` a new container, several times slower on a busy machine.
func deployConsumerRunID(t *testing.T, ctx context.Context, p *deployProject) string {
	t.Helper()
	consumer := p.container(t, ctx, "consumer")
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	// The consumer's redis-cli exits when the ambassador closes its
	// connection, as it does when the backend is removed, and its restart
	// policy starts it again: an exec meanwhile is refused, or fails to
	// start in the container as it stops (exit code 126, "OCI runtime exec
	// failed"), and is tried again.
	var stdout, stderr bytes.Buffer
	var res client.ExecInspectResult
	require.NoError(t, harness.Poll(ctx, func(ctx context.Context) error {
		stdout.Reset()
		stderr.Reset()
		ex, err := eng.Client.ExecCreate(ctx, consumer.ID, client.ExecCreateOptions{
			Cmd:          []string{harness.RedisCLI, "-h", "redis", "info", "server"},
			AttachStdout: true,
			AttachStderr: true,
		})
		if err != nil {
			if strings.Contains(err.Error(), "is restarting") || strings.Contains(err.Error(), "is not running") {
				return err
			}
			return harness.Permanent(err)
		}
		att, err := eng.Client.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
		if err != nil {
			return harness.Permanent(err)
		}
		_, err = stdcopy.StdCopy(&stdout, &stderr, att.Reader)
		att.Close()
		if err != nil {
			return harness.Permanent(err)
		}
		// The output ends before the engine records the exit code.
		if err := harness.Poll(ctx, func(ctx context.Context) error {
			res, err = eng.Client.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
			if err == nil && res.Running {
				return errors.New("still running")
			}
			return err
		}); err != nil {
			return harness.Permanent(err)
		}
		if res.ExitCode == 126 && strings.Contains(stdout.String()+stderr.String(), "OCI runtime exec failed") {
			return fmt.Errorf("exec cut by the consumer's restart: %s", strings.TrimSpace(stdout.String()+stderr.String()))
		}
		return nil
	}), "exec in the consumer")
	require.Zero(t, res.ExitCode, "redis-cli in the consumer:\n%s%s", stdout.String(), stderr.String())
	m := deployRunIDLine.FindStringSubmatch(stdout.String())
	require.NotNil(t, m, "no run_id in the consumer's output:\n%s%s", stdout.String(), stderr.String())
	return m[1]
}

// deployHTTP makes one request and returns its status code.
func deployHTTP(t *testing.T, ctx context.Context, method, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	require.NoError(t, err)
	res, err := httpClient.Do(req)
	require.NoError(t, err, "%s %s", method, url)
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}
