package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// TestPrintStatusWithoutEventStream: while the engine answers but its
// /events does not, `ambassadord status` says connected, and why the
// events are not followed; once a stream answers, it says no more. (That
// the controller's status says so: pkg/daemon's
// TestStatusWithoutEventStream.)
func TestPrintStatusWithoutEventStream(t *testing.T) {
	docker := api.Source{Name: "docker", Following: true, Host: "unix:///var/run/docker.sock", Connected: true, Synced: true,
		StreamError: "subscribe to events: no answer within 10s"}
	var out strings.Builder
	printStatus(&out, &api.Status{Docker: docker, Sources: []api.Source{docker}})
	assert.Contains(t, out.String(), "docker:  connected to unix:///var/run/docker.sock")
	assert.Contains(t, out.String(), "\n         EVENTS UNAVAILABLE (subscribe to events: no answer within 10s): following the engine by listing at every --resync\n")

	docker.StreamError = ""
	out.Reset()
	printStatus(&out, &api.Status{Docker: docker, Sources: []api.Source{docker}})
	assert.NotContains(t, out.String(), "EVENTS UNAVAILABLE")
}

// TestPrintStatusEngines: one line per engine, the local one's as it
// always was; a remote engine that is unreachable says since when, and
// whether its containers are still candidates, dropped, or never known;
// with none, the routes are static.
func TestPrintStatusEngines(t *testing.T) {
	lostAt := time.Date(2026, 12, 7, 7, 10, 22, 0, time.UTC)
	for _, tt := range []struct {
		name string
		doc  api.Status
		want string
	}{
		{"no engine", api.Status{Docker: api.Source{Synced: true}, Ready: true},
			"docker:  not followed (static routes)\nready:   yes\n"},
		{"docker", api.Status{
			Docker:  api.Source{Name: "docker", Following: true, Host: "unix:///d.sock", Connected: true, Self: "amb", Events: 3},
			Sources: []api.Source{{Name: "docker", Following: true, Host: "unix:///d.sock", Connected: true, Self: "amb", Events: 3}},
			Ready:   true,
		}, "docker:  connected to unix:///d.sock, own container amb; events 3, reconnects 0, resyncs 0, drift 0\nready:   yes\n"},
		{"podman", api.Status{
			Sources: []api.Source{{Name: "local", Following: true, Host: "unix:///run/podman/podman.sock", Engine: "Podman 4.3.1 (API 1.41)", Connected: true}},
			Ready:   true,
		}, "local:   connected to unix:///run/podman/podman.sock, Podman 4.3.1 (API 1.41), own container -; events 0, reconnects 0, resyncs 0, drift 0\nready:   yes\n"},
		{"two engines, one unreachable", api.Status{
			Docker: api.Source{Name: "docker", Following: true, Host: "unix:///d.sock", Connected: true},
			Sources: []api.Source{
				{Name: "docker", Following: true, Host: "unix:///d.sock", Connected: true},
				{Name: "edge-engine", Following: true, Host: "tcp://edge:2375", Error: "EOF"},
			},
			NotReady: []string{"waiting for the first sync with the edge-engine engine"},
		}, "docker:  connected to unix:///d.sock, own container -; events 0, reconnects 0, resyncs 0, drift 0\n" +
			"edge-engine: UNREACHABLE at tcp://edge:2375 (EOF); serving the last known routes\n" +
			"ready:   no (waiting for the first sync with the edge-engine engine)\n"},
		{"a remote engine lost, within its grace", api.Status{
			Sources: []api.Source{
				{Name: "local", Following: true, Host: "unix:///d.sock", Connected: true},
				{Name: "big", Following: true, Host: "tcp://192.168.1.52:2376", Remote: true, Synced: true, Error: "EOF",
					UnreachableSince: lostAt, Grace: api.Duration(5 * time.Second)},
			},
			Ready: true,
		}, "local:   connected to unix:///d.sock, own container -; events 0, reconnects 0, resyncs 0, drift 0\n" +
			"big:     UNREACHABLE at tcp://192.168.1.52:2376 (EOF) since 2026-12-07T07:10:22Z; its containers stay candidates for the 5s grace\n" +
			"ready:   yes\n"},
		{"a remote engine lost beyond its grace", api.Status{
			Sources: []api.Source{
				{Name: "big", Following: true, Host: "tcp://192.168.1.52:2376", Remote: true, Synced: true, Error: "EOF",
					UnreachableSince: lostAt, Grace: api.Duration(5 * time.Second), Dropped: true},
			},
			Ready: true,
		}, "big:     UNREACHABLE at tcp://192.168.1.52:2376 (EOF) since 2026-12-07T07:10:22Z; its containers are dropped (5s grace over) until it answers\n" +
			"ready:   yes\n"},
		{"a remote engine unreachable from the start", api.Status{
			Sources: []api.Source{
				{Name: "big", Following: true, Host: "tcp://192.168.1.52:2376", Remote: true, Error: "connection refused",
					UnreachableSince: lostAt, Grace: api.Duration(5 * time.Second)},
			},
			Ready: true,
		}, "big:     UNREACHABLE at tcp://192.168.1.52:2376 (connection refused) since 2026-12-07T07:10:22Z; never synced: none of its containers is known\n" +
			"ready:   yes\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			printStatus(&out, &tt.doc)
			head, _, _ := strings.Cut(out.String(), "\n\n")
			assert.Equal(t, tt.want, head+"\n")
		})
	}
}

// TestPrintStatusTLS: a route listening with TLS says so in its LISTEN
// column, a TLS backend has tls:// in front.
func TestPrintStatusTLS(t *testing.T) {
	var out strings.Builder
	printStatus(&out, &api.Status{Ready: true, Routes: []api.Route{
		{Name: "6379", Listen: "[::]:6379", TLS: true, Source: "--route", Backends: []api.Backend{{Addr: "127.0.0.1:16379"}}},
		{Name: "6380", Listen: "[::]:6380", Source: "--route", Backends: []api.Backend{{Addr: "10.0.0.5:6379", TLS: true}}},
	}})
	assert.Contains(t, out.String(), "6379   [::]:6379 (tls)  -       127.0.0.1:16379")
	assert.Contains(t, out.String(), "6380   [::]:6380        -       tls://10.0.0.5:6379")
}
