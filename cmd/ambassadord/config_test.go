package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/ambassadord/ambassadord/pkg/daemon"
	"github.com/ambassadord/ambassadord/pkg/proxy"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/tlsconf"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, env())
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, cfg.dialTimeout)
	assert.Equal(t, time.Duration(0), cfg.idleTimeout)
	assert.Equal(t, 0, cfg.maxConns)
	assert.Equal(t, 5*time.Second, cfg.shutdownGrace)
	assert.Equal(t, zapcore.InfoLevel, cfg.logLevel)
	assert.Equal(t, "auto", cfg.logFormat)
	assert.True(t, cfg.classic)
	assert.Empty(t, cfg.routes)
}

func TestParseConfigEnvironment(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		env     func(string) string
		check   func(t *testing.T, cfg *config)
		wantErr string
	}{
		{
			name: "env sets a flag",
			env:  env("AMBASSADORD_DIAL_TIMEOUT", "2s", "AMBASSADORD_LOG_LEVEL", "debug", "AMBASSADORD_CLASSIC", "false"),
			check: func(t *testing.T, cfg *config) {
				assert.Equal(t, 2*time.Second, cfg.dialTimeout)
				assert.Equal(t, zapcore.DebugLevel, cfg.logLevel)
				assert.False(t, cfg.classic)
			},
		},
		{
			name: "flag wins over env",
			args: []string{"--dial-timeout", "3s"},
			env:  env("AMBASSADORD_DIAL_TIMEOUT", "2s"),
			check: func(t *testing.T, cfg *config) {
				assert.Equal(t, 3*time.Second, cfg.dialTimeout)
			},
		},
		{
			name: "routes from flags and env are both kept",
			args: []string{"--route", "6379:redis:6379", "--route=8080:10.0.0.1:80"},
			env:  env("AMBASSADORD_ROUTES", "5432:db; 9000:[::1]:9001"),
			check: func(t *testing.T, cfg *config) {
				require.Len(t, cfg.routes, 2)
				require.Len(t, cfg.envRoutes, 2)
				specs, _, err := cfg.specs(nil)
				require.NoError(t, err)
				var got []string
				for _, s := range specs {
					got = append(got, s.String())
				}
				assert.Equal(t, []string{"5432:db:5432", "6379:redis:6379", "8080:10.0.0.1:80", "9000:[::1]:9001"}, got)
			},
		},
		{
			name: "replay is off by default, on for the routes named",
			args: []string{"--replay", "6379,8080"},
			check: func(t *testing.T, cfg *config) {
				assert.True(t, cfg.replay.covers(6379))
				assert.True(t, cfg.replay.covers(8080))
				assert.False(t, cfg.replay.covers(5432))
				def, err := parseConfig(nil, env())
				require.NoError(t, err)
				assert.False(t, def.replay.covers(6379), "off by default")
			},
		},
		{
			name: "replay all, from the environment",
			env:  env("AMBASSADORD_REPLAY", "all"),
			check: func(t *testing.T, cfg *config) {
				assert.True(t, cfg.replay.covers(1))
				assert.Equal(t, "all", cfg.replay.String())
			},
		},
		{
			name: "claims",
			args: []string{"--claims", "label,links"},
			check: func(t *testing.T, cfg *config) {
				assert.Equal(t, resolver.Claims{Links: true}, cfg.claims)
				def, err := parseConfig(nil, env())
				require.NoError(t, err)
				assert.Equal(t, resolver.Claims{}, def.claims, "label only by default")
			},
		},
		{
			name: "tls",
			env: env("AMBASSADORD_TLS_LISTEN", "6379,6380", "AMBASSADORD_TLS_CERT", "c.pem", "AMBASSADORD_TLS_KEY", "k.pem",
				"AMBASSADORD_TLS_CA", "ca.pem", "AMBASSADORD_TLS_ALLOW", " spiffe://prod/api , web "),
			check: func(t *testing.T, cfg *config) {
				f, any := cfg.tlsFiles()
				assert.True(t, any)
				assert.Equal(t, tlsconf.Files{Cert: "c.pem", Key: "k.pem", CA: "ca.pem", Allow: []string{"spiffe://prod/api", "web"}, MinVersion: tls.VersionTLS13}, f)
				opts := cfg.daemonOptions(nil, nil, nil, nil, nil)
				assert.Equal(t, resolver.ListenTLS{Ports: []int{6379, 6380}}, opts.ListenTLS)
				def, err := parseConfig(nil, env())
				require.NoError(t, err)
				_, any = def.tlsFiles()
				assert.False(t, any, "no TLS material by default")
			},
		},
		{
			name:  "tls 1.2 by opt-in",
			args:  []string{"--tls-min-version", "1.2"},
			check: func(t *testing.T, cfg *config) { assert.Equal(t, uint16(tls.VersionTLS12), must(cfg.tlsVersion())) },
		},
		{
			name: "proxy protocol",
			args: []string{"--send-proxy", "6379", "--send-proxy-version", "v1", "--accept-proxy", "all", "--accept-proxy-from", " 10.0.1.5, 192.168.0.0/24,::ffff:10.0.0.9,fd00::/8"},
			check: func(t *testing.T, cfg *config) {
				opts := cfg.daemonOptions(nil, nil, nil, nil, nil)
				assert.Equal(t, []int{6379}, opts.SendProxyPorts)
				assert.False(t, opts.SendProxyAll)
				assert.Equal(t, proxy.ProxyV1, opts.SendProxyVersion)
				assert.True(t, opts.AcceptProxyAll)
				assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.1.5/32"), netip.MustParsePrefix("192.168.0.0/24"),
					netip.MustParsePrefix("10.0.0.9/32"), netip.MustParsePrefix("fd00::/8")}, opts.AcceptProxyFrom)
				assert.Equal(t, 5*time.Second, opts.ProxyHeaderTimeout)
				def, err := parseConfig(nil, env())
				require.NoError(t, err)
				opts = def.daemonOptions(nil, nil, nil, nil, nil)
				assert.False(t, opts.SendProxyAll || opts.AcceptProxyAll || len(opts.SendProxyPorts)+len(opts.AcceptProxyPorts) > 0, "no PROXY protocol by default")
				assert.Equal(t, proxy.ProxyV2, opts.SendProxyVersion)
			},
		},
		{name: "accept proxy trusting no one", args: []string{"--accept-proxy", "6379"}, wantErr: "--accept-proxy needs --accept-proxy-from"},
		{name: "trusted without accept proxy", env: env("AMBASSADORD_ACCEPT_PROXY_FROM", "10.0.0.0/8"), wantErr: "--accept-proxy-from needs --accept-proxy"},
		{name: "bad trusted address", args: []string{"--accept-proxy", "all", "--accept-proxy-from", "lb.example"}, wantErr: `"lb.example": want addresses or CIDRs`},
		{name: "bad proxy version", args: []string{"--send-proxy", "all", "--send-proxy-version", "2"}, wantErr: `--send-proxy-version: PROXY protocol version "2": want v1 or v2`},
		{name: "zero header timeout", args: []string{"--proxy-header-timeout", "0s"}, wantErr: "--proxy-header-timeout must be positive"},
		{name: "tls listen without a certificate", args: []string{"--tls-listen", "all", "--tls-ca", "ca.pem"}, wantErr: "--tls-listen needs --tls-cert and --tls-key"},
		{name: "tls listen without a client CA", args: []string{"--tls-listen", "all", "--tls-cert", "c", "--tls-key", "k"}, wantErr: "--tls-listen needs --tls-client-ca (or --tls-ca)"},
		{name: "tls allow without a client CA", args: []string{"--tls-allow", "x"}, wantErr: "--tls-allow needs --tls-client-ca (or --tls-ca)"},
		{name: "tls 1.1", args: []string{"--tls-min-version", "1.1"}, wantErr: `--tls-min-version "1.1": want 1.3 (the default) or 1.2`},
		{name: "bad tls listen", args: []string{"--tls-listen", "redis"}, wantErr: `"redis": want all, or listen ports separated by commas`},
		{name: "bad replay", args: []string{"--replay", "6379,redis"}, wantErr: `"redis": want all, or listen ports separated by commas`},
		{name: "replay with idle timeout", args: []string{"--replay", "all", "--idle-timeout", "1m"}, wantErr: "--replay does not work with --idle-timeout"},
		{name: "replay with nothing to keep", args: []string{"--replay", "all", "--replay-bytes", "0"}, wantErr: "--replay needs --replay-bytes above 0"},
		{name: "bad claims", args: []string{"--claims", "everyone"}, wantErr: `"everyone" is not one of label, links, routes`},
		{name: "writable admin without a token", args: []string{"--admin-writable"}, wantErr: "--admin-writable needs --admin-token-file"},
		{name: "bad admin host", args: []string{"--admin-hosts", "a.example:9191"}, wantErr: "want host names without port"},
		{name: "bad env value names the variable", env: env("AMBASSADORD_DIAL_TIMEOUT", "soon"), wantErr: `AMBASSADORD_DIAL_TIMEOUT="soon"`},
		{name: "bad route flag", args: []string{"--route", "6379"}, wantErr: `invalid value "6379" for flag -route`},
		{name: "bad routes env", env: env("AMBASSADORD_ROUTES", "6379:redis:99999"), wantErr: "AMBASSADORD_ROUTES"},
		{name: "negative timeout", args: []string{"--idle-timeout=-1s"}, wantErr: "--idle-timeout must not be negative"},
		{name: "replay too large", args: []string{"--replay-bytes=65537"}, wantErr: "--replay-bytes must be from 0 to 65536, not 65537"},
		{name: "negative replay", env: env("AMBASSADORD_REPLAY_BYTES", "-1"), wantErr: "--replay-bytes must be from 0 to 65536, not -1"},
		{name: "zero dial timeout", args: []string{"--dial-timeout=0"}, wantErr: "--dial-timeout must be positive"},
		{name: "bad docker mode", args: []string{"--docker=maybe"}, wantErr: "--docker must be auto, on or off"},
		{name: "bad log format", args: []string{"--log-format=xml"}, wantErr: "--log-format must be auto, json or console"},
		{name: "bad log level", args: []string{"--log-level=loud"}, wantErr: "log-level"},
		{name: "stray argument", args: []string{"6379:redis"}, wantErr: `unexpected argument "6379:redis"`},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "flag provided but not defined: -nope"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			getenv := tt.env
			if getenv == nil {
				getenv = env()
			}
			cfg, err := parseConfig(tt.args, getenv)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

func TestSpecs(t *testing.T) {
	linked := []string{
		"REDIS_PORT=tcp://172.17.0.2:6379",
		"REDIS_PORT_6379_TCP=tcp://172.17.0.2:6379",
		"REDIS_PORT_6379_TCP_ADDR=172.17.0.2",
		"REDIS_NAME=/amb/redis",
		"REDIS_ENV_EVIL_PORT_7777_TCP=tcp://10.9.9.9:1",
	}
	t.Run("classic link variables", func(t *testing.T) {
		cfg, err := parseConfig(nil, env())
		require.NoError(t, err)
		specs, warnings, err := cfg.specs(linked)
		require.NoError(t, err)
		require.Len(t, specs, 1)
		assert.Equal(t, "6379:172.17.0.2:6379", specs[0].String())
		assert.Len(t, warnings, 1, "the forwarded variable is reported")
	})
	t.Run("classic disabled", func(t *testing.T) {
		cfg, err := parseConfig([]string{"--classic=false", "--route", "1:a"}, env())
		require.NoError(t, err)
		specs, _, err := cfg.specs(linked)
		require.NoError(t, err)
		require.Len(t, specs, 1)
		assert.Equal(t, 1, specs[0].Listen)
	})
	t.Run("conflict", func(t *testing.T) {
		cfg, err := parseConfig([]string{"--route", "6379:other"}, env())
		require.NoError(t, err)
		_, _, err = cfg.specs(linked)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "6379")
		assert.Contains(t, err.Error(), "REDIS_PORT_6379_TCP")
	})
	t.Run("no routes without docker says how to add one", func(t *testing.T) {
		cfg, err := parseConfig([]string{"--docker=off"}, env())
		require.NoError(t, err)
		err = serve(context.Background(), cfg, nil, zaptest.NewLogger(t))
		require.ErrorIs(t, err, daemon.ErrNoRoutes)
		assert.Contains(t, err.Error(), "--link")
		assert.Contains(t, err.Error(), "--route")
		assert.Contains(t, err.Error(), "docker.sock")
	})
	t.Run("malformed classic variable", func(t *testing.T) {
		cfg, err := parseConfig(nil, env())
		require.NoError(t, err)
		_, _, err = cfg.specs([]string{"REDIS_PORT_6379_TCP=tcp://:6379"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "REDIS_PORT_6379_TCP")
	})
}

// TestUsageDocumentsEveryFlag guards the help text: every flag appears with
// its environment variable.
func TestUsageDocumentsEveryFlag(t *testing.T) {
	var buf bytes.Buffer
	fs := flagSet(&config{})
	usage(&buf, fs)
	help := buf.String()
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		assert.Contains(t, help, "--"+f.Name+" ")
		assert.Contains(t, help, "["+envName(f.Name)+"]")
		assert.True(t, strings.HasPrefix(envName(f.Name), envPrefix))
	})
	assert.Greater(t, n, 5)
}

// TestDocsListEveryFlag keeps the flag table, docs/flags.md, in step with
// the code: every flag has one row, with its environment variable, its
// default and a meaning, and no row names a flag that does not exist.
func TestDocsListEveryFlag(t *testing.T) {
	b, err := os.ReadFile("../../docs/flags.md")
	require.NoError(t, err)
	rows := map[string][]string{} // by flag name: the row's cells
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| `--") {
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "| `--"), " ")
			cells := strings.Split(strings.Trim(line, "|"), "|")
			require.Len(t, cells, 4, "docs/flags.md: a flag row has 4 cells: %s", line)
			rows[strings.TrimSuffix(name, "`")] = cells
		}
	}
	flagSet(&config{}).VisitAll(func(f *flag.Flag) {
		cells, ok := rows[f.Name]
		delete(rows, f.Name)
		if !assert.True(t, ok, "docs/flags.md has no row for --%s", f.Name) {
			return
		}
		assert.Equal(t, "`"+envName(f.Name)+"`", strings.TrimSpace(cells[1]), "--%s: environment", f.Name)
		assert.NotEmpty(t, strings.TrimSpace(cells[3]), "--%s: meaning", f.Name)
		// The default: the flag's own, first in the cell. A flag without
		// one may say what empty means (every interface, $DOCKER_HOST),
		// but not show a value of its own.
		def, cell := f.DefValue, strings.TrimSpace(cells[2])
		if def == "0s" {
			def = "0"
		}
		if def == "" {
			if strings.HasPrefix(cell, "`") {
				assert.True(t, strings.HasPrefix(cell, "`$"), "--%s has no default, yet the docs show %s", f.Name, cell)
			}
			return
		}
		assert.True(t, strings.HasPrefix(cell, "`"+def+"`"), "--%s: default %q, the docs say %s", f.Name, def, cell)
	})
	assert.Empty(t, rows, "docs/flags.md documents flags that do not exist")
}

func TestDockerEngineMode(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		env        func(string) string
		wantFollow bool
		wantHost   string
	}{
		{args: []string{"--docker=off"}, env: env("DOCKER_HOST", "unix:///x.sock"), wantFollow: false},
		{args: []string{"--docker=on"}, env: env(), wantFollow: true},
		{args: []string{"--docker-host=tcp://127.0.0.1:2375"}, env: env(), wantFollow: true, wantHost: "tcp://127.0.0.1:2375"},
		{args: nil, env: env("DOCKER_HOST", "unix:///x.sock"), wantFollow: true},
	} {
		cfg, err := parseConfig(tt.args, tt.env)
		require.NoError(t, err)
		host, follow := cfg.dockerEngine(tt.env)
		assert.Equal(t, tt.wantFollow, follow, "%v", tt.args)
		assert.Equal(t, tt.wantHost, host, "%v", tt.args)
	}
}

// TestDockerEngineFindsPodman: without --docker-host and DOCKER_HOST, the
// engine is Docker's socket when it exists, else Podman's, rootful then
// rootless ($XDG_RUNTIME_DIR/podman/podman.sock), in auto mode as with
// --docker=on.
func TestDockerEngineFindsPodman(t *testing.T) {
	for _, tt := range []struct {
		name       string
		args       []string
		env        func(string) string
		files      []string
		wantFollow bool
		wantHost   string
	}{
		{"nothing", nil, env(), nil, false, ""},
		{"docker", nil, env(), []string{"/var/run/docker.sock"}, true, ""},
		{"docker and podman: docker", nil, env(), []string{"/var/run/docker.sock", "/run/podman/podman.sock"}, true, ""},
		{"rootful podman", nil, env(), []string{"/run/podman/podman.sock"}, true, "unix:///run/podman/podman.sock"},
		{"rootless podman", nil, env("XDG_RUNTIME_DIR", "/run/user/1000"), []string{"/run/user/1000/podman/podman.sock"},
			true, "unix:///run/user/1000/podman/podman.sock"},
		{"rootful before rootless", nil, env("XDG_RUNTIME_DIR", "/run/user/1000"),
			[]string{"/run/user/1000/podman/podman.sock", "/run/podman/podman.sock"}, true, "unix:///run/podman/podman.sock"},
		{"on, podman", []string{"--docker=on"}, env(), []string{"/run/podman/podman.sock"}, true, "unix:///run/podman/podman.sock"},
		{"off", []string{"--docker=off"}, env(), []string{"/run/podman/podman.sock"}, false, ""},
		{"DOCKER_HOST wins", nil, env("DOCKER_HOST", "unix:///x.sock"), []string{"/run/podman/podman.sock"}, true, ""},
		{"--docker-host wins", []string{"--docker-host=unix:///y.sock"}, env(), []string{"/run/podman/podman.sock"}, true, "unix:///y.sock"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old := fileExists
			t.Cleanup(func() { fileExists = old })
			fileExists = func(p string) bool { return slices.Contains(tt.files, p) }
			cfg, err := parseConfig(tt.args, tt.env)
			require.NoError(t, err)
			host, follow := cfg.dockerEngine(tt.env)
			assert.Equal(t, tt.wantFollow, follow)
			assert.Equal(t, tt.wantHost, host)
		})
	}
}

// must returns v, and panics on err: for one-liners in tables, where err
// is never expected.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
