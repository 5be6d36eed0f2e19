package watcher

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/source"
)

// await returns the next update, waiting at most 10s for it.
func await(t *testing.T, w *Watcher) source.Update {
	t.Helper()
	select {
	case u, ok := <-w.Updates():
		require.True(t, ok, "mailbox closed")
		return u
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no update")
		return source.Update{}
	}
}

// TestWatcherFollowsTLSEngine runs a Watcher for an EngineSpec against an
// engine served over TLS with client certificates required: it pings,
// lists, and publishes the engine's containers tagged with its name, with
// the ports they publish on the engine's host, whatever DOCKER_HOST says.
func TestWatcherFollowsTLSEngine(t *testing.T) {
	p := newPKI(t)
	redis := id64("redis")
	api := &fakeAPI{
		pinged: make(chan string, 16),
		containers: []any{container.Summary{
			ID: redis, Names: []string{"/redis"}, State: container.StateRunning, Status: "Up 1 hour",
			Labels: map[string]string{"ambassador.target": "redis"},
			Ports: []container.PortSummary{
				{IP: netip.MustParseAddr("0.0.0.0"), PrivatePort: 6379, PublicPort: 16379, Type: "tcp"},
				{IP: netip.MustParseAddr("::"), PrivatePort: 6379, PublicPort: 16379, Type: "tcp"},
				{IP: netip.MustParseAddr("192.168.1.52"), PrivatePort: 80, PublicPort: 8080, Type: "tcp"},
				{PrivatePort: 9000, Type: "tcp"},
			},
		}},
	}
	url := startEngine(t, engineTLS(p.engine, p.ca), api)
	t.Setenv("DOCKER_HOST", "tcp://"+closedPort(t))
	t.Setenv("DOCKER_CERT_PATH", filepath.Join(t.TempDir(), "none"))

	spec := EngineSpec{Name: "big", URL: url, TLSDir: p.dir(t)}
	w := &Watcher{Spec: &spec}
	assert.Equal(t, "big", w.Name())
	assert.Equal(t, url, w.URL())
	start(t, w)

	u := await(t, w)
	require.True(t, u.Connected, "%v", u.Err)
	assert.Equal(t, "big", u.Source)
	assert.Equal(t, &source.Snapshot{Containers: []source.Container{{
		ID: redis, Name: "redis", State: "running", Engine: "big",
		Labels: map[string]string{"ambassador.target": "redis"},
		Ports: []source.Port{
			{Port: 80, Proto: "tcp", Published: []source.Binding{{HostIP: "192.168.1.52", HostPort: 8080}}},
			{Port: 6379, Proto: "tcp", Published: []source.Binding{{HostIP: "0.0.0.0", HostPort: 16379}, {HostIP: "::", HostPort: 16379}}},
			{Port: 9000, Proto: "tcp"},
		},
	}}}, u.Snapshot)
	assert.Equal(t, "/_ping", <-api.pinged, "the first ping negotiates the API version")
}

// TestWatcherExplainsTLSFailures: a Watcher whose engine refuses the
// connection as configured says why, with the fix, in Update.Err, and
// keeps trying.
func TestWatcherExplainsTLSFailures(t *testing.T) {
	p := newPKI(t)
	wrong := newTestCA(t, "wrong CA")
	url := startEngine(t, engineTLS(p.engine, p.ca), &fakeAPI{})
	dir := writeTLSDir(t, wrong.pem, p.client.certPEM, p.client.keyPEM)
	w := &Watcher{Spec: &EngineSpec{Name: "big", URL: url, TLSDir: dir}}
	start(t, w)

	u := await(t, w)
	assert.False(t, u.Connected)
	assert.Nil(t, u.Snapshot)
	assert.EqualError(t, u.Err, `the engine's certificate, issued by "CN=engine CA", is not signed by a CA in `+dir+
		`/ca.pem: put in `+dir+`/ca.pem the certificate of the CA that signed the engine's (dockerd --tlscert)`)
}

func TestWatcherSpecFilesMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	w := &Watcher{Spec: &EngineSpec{Name: "big", URL: "tcp://127.0.0.1:2376", TLSDir: dir}}
	err := w.Run(context.Background())
	assert.EqualError(t, err, `engine "big": `+dir+`/ca.pem: file does not exist: tls=`+dir+
		` must hold ca.pem, cert.pem and key.pem, as DOCKER_CERT_PATH does`)
	_, open := <-w.Updates()
	assert.False(t, open, "the mailbox is closed when Run returns")
}

func TestWatcherNameAndURL(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///from/env.sock")
	spec := &EngineSpec{Name: "big", URL: "tcp://10.0.0.5:2376", TLSDir: "/c"}
	for _, tt := range []struct {
		w         *Watcher
		name, url string
	}{
		{&Watcher{}, "docker", "unix:///from/env.sock"},
		{&Watcher{Host: "unix:///run/d.sock"}, "docker", "unix:///run/d.sock"},
		{&Watcher{Engine: "local", Host: "unix:///run/d.sock"}, "local", "unix:///run/d.sock"},
		{&Watcher{Spec: spec}, "big", "tcp://10.0.0.5:2376"},
		{&Watcher{Spec: spec, Engine: "other", Host: "unix:///ignored"}, "other", "tcp://10.0.0.5:2376"},
	} {
		assert.Equal(t, tt.name, tt.w.Name())
		assert.Equal(t, tt.url, tt.w.URL())
	}
}
