package main

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/metrics/metricstest"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// TestParseConfigEngines: engines come from --engine flags and from
// AMBASSADORD_ENGINES, both counted, and turn into the controller's
// options: a tcp:// engine, or one with address=, is remote, at address=
// or the URL's host; a unix:// engine without address= is on this host.
// --engine-grace and --prefer-local reach the controller and the resolver.
func TestParseConfigEngines(t *testing.T) {
	cfg, err := parseConfig([]string{
		"--engine", "big=tcp://192.168.1.52:2376,tls=/certs/big",
		"--engine=edge=tcp://edge.example:2376,tls=/certs/edge,address=10.0.0.7",
	}, env("AMBASSADORD_ENGINES", "rootless=unix:///run/user/1000/docker.sock; far=unix:///run/far.sock,address=10.0.0.9"))
	require.NoError(t, err)
	var names []string
	for _, s := range cfg.engineSpecs() {
		names = append(names, s.Name)
	}
	assert.Equal(t, []string{"big", "edge", "rootless", "far"}, names, "the flags' engines, then the variable's")
	opts := cfg.daemonOptions(nil, nil, nil, zap.NewNop(), nil)
	assert.Equal(t, map[string]resolver.Engine{
		"big":      {Remote: true, Address: "192.168.1.52"},
		"edge":     {Remote: true, Address: "10.0.0.7"},
		"rootless": {},
		"far":      {Remote: true, Address: "10.0.0.9"},
	}, opts.Engines)
	assert.Equal(t, 5*time.Second, opts.EngineGrace, "the default grace")
	assert.False(t, opts.NoLocality, "local backends first by default")

	cfg, err = parseConfig([]string{"--prefer-local=false"}, env("AMBASSADORD_ENGINE_GRACE", "2s"))
	require.NoError(t, err)
	opts = cfg.daemonOptions(nil, nil, nil, zap.NewNop(), nil)
	assert.True(t, opts.NoLocality)
	assert.Equal(t, 2*time.Second, opts.EngineGrace)
	assert.Nil(t, opts.Engines, "no engine besides the local one")

	for _, tt := range []struct {
		name    string
		args    []string
		env     func(string) string
		wantErr string
	}{
		{name: "ssh", args: []string{"--engine", "big=ssh://me@big"}, wantErr: "ssh:// is not supported"},
		{name: "plain tcp without insecure", args: []string{"--engine", "big=tcp://10.0.0.1:2375"}, wantErr: "add insecure"},
		{name: "the local engine's name", args: []string{"--engine", "local=tcp://10.0.0.1:2376,tls=/c"}, wantErr: "choose another name"},
		{name: "bad engine in the variable names it", env: env("AMBASSADORD_ENGINES", "big=ftp://x"), wantErr: "AMBASSADORD_ENGINES"},
		{name: "one name twice, flag and variable", args: []string{"--engine", "big=tcp://10.0.0.1:2376,tls=/c"},
			env: env("AMBASSADORD_ENGINES", "big=tcp://10.0.0.2:2376,tls=/c"), wantErr: `engine "big" is given twice`},
		{name: "zero grace", args: []string{"--engine-grace=0"}, wantErr: "--engine-grace must be positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			getenv := tt.env
			if getenv == nil {
				getenv = env()
			}
			_, err := parseConfig(tt.args, getenv)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

// TestEngineCheckedAtStart: an engine whose TLS files cannot work stops
// start-up, with an error naming it; one that is merely unreachable is
// logged and followed, and one without TLS is logged as a warning.
func TestEngineCheckedAtStart(t *testing.T) {
	route := []string{"--docker=off", "--admin-address=", "--admin-socket=", "--route", strconv.Itoa(nettest.FreePort(t)) + ":10.0.0.1:80"}
	missing := filepath.Join(t.TempDir(), "nothing-here")
	cfg, err := parseConfig(append(route, "--engine", "big=tcp://127.0.0.1:2376,tls="+missing), env())
	require.NoError(t, err)
	err = serve(cancelled(), cfg, nil, zap.NewNop())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `engine "big"`)

	core, logs := observer.New(zap.InfoLevel)
	down := "tcp://127.0.0.1:" + strconv.Itoa(nettest.FreePort(t))
	cfg, err = parseConfig(append(route, "--engine", "big="+down+",insecure"), env())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, nil, zap.New(core)) }()
	require.Eventually(t, func() bool { return logs.FilterMessage("following the big engine").Len() == 1 },
		10*time.Second, 10*time.Millisecond, "start-up goes on when an engine is unreachable")
	cancel()
	require.NoError(t, <-done)
	unreachable := logs.FilterMessage("engine unreachable at start; following it until it answers").FilterField(zap.String("engine", "big")).All()
	assert.Len(t, unreachable, 1)
	assert.Len(t, logs.FilterMessageSnippet("without TLS (insecure)").FilterField(zap.String("engine", "big")).All(), 1)
}

// TestServeEngines: with --docker=off, the engines of --engine are the
// sources: each has its status, by name, and its metrics, by engine label.
// A remote engine that answers nothing does not keep the ambassador
// unready: it is ready once the other engine has synced, and says that the
// remote one never synced.
func TestServeEngines(t *testing.T) {
	sock, _ := quietEngine(t)
	down := "tcp://127.0.0.1:" + strconv.Itoa(nettest.FreePort(t))
	socket, adminAddr := runDaemon(t, "--engine", "near=unix://"+sock, "--engine", "far="+down+",insecure", "--engine-grace=2s")

	var doc *api.Status
	require.Eventually(t, func() bool {
		var err error
		doc, err = client(socket).Status(context.Background())
		return err == nil && doc.Ready
	}, 10*time.Second, 10*time.Millisecond, "ready once near has synced and far has failed")
	require.Len(t, doc.Sources, 2)
	near, far := doc.Sources[0], doc.Sources[1]
	// The quiet engine does not answer /version: taken for Docker.
	assert.Equal(t, api.Source{Name: "near", Following: true, Host: "unix://" + sock, Engine: "Docker", Connected: true, Synced: true}, near)
	assert.Equal(t, near, doc.Docker, "the first engine, with --docker=off")
	assert.Equal(t, "far", far.Name)
	assert.Equal(t, down, far.Host)
	assert.True(t, far.Remote)
	assert.False(t, far.Connected)
	assert.False(t, far.Synced)
	assert.NotEmpty(t, far.Error)
	assert.Equal(t, api.Duration(2*time.Second), far.Grace)

	f := metricstest.ScrapeURL("http://" + adminAddr + "/metrics")
	require.NotNil(t, f)
	assert.Equal(t, 1.0, metricstest.Value(t, f, "ambassadord_docker_connected", seriesLabels{"engine": "near"}))
	assert.Equal(t, 0.0, metricstest.Value(t, f, "ambassadord_docker_connected", seriesLabels{"engine": "far"}))

	out, code := cli(t, socket, "status")
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "near:    connected to unix://"+sock)
	assert.Contains(t, out, "far:     UNREACHABLE at "+down)
	assert.Contains(t, out, "never synced")
}
