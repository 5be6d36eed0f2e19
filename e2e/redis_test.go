//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// TestClassicLink is the classic ambassador pattern on one host:
//
//	docker run -d --name redis redis
//	docker run -d --name ambassador --link redis:redis --expose 6379 ambassadord
//	docker run --link ambassador:redis redis redis-cli -h redis ping
func TestClassicLink(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	redis := startRedis(t, ctx)
	amb := startAmbassador(t, ctx, harness.Spec{
		Links:  []string{link(redis, "redis")},
		Expose: []uint16{6379},
	}, 6379)

	assert.Equal(t, "PONG", redisCLI(t, ctx, amb, "ping"))
	assert.Equal(t, "OK", redisCLI(t, ctx, amb, "set", "e2e-key", "through the ambassador"))
	assert.Equal(t, "through the ambassador", redisCLI(t, ctx, amb, "get", "e2e-key"))
}

// TestTwoHosts runs the two-host ambassador pattern with both "hosts" on
// this engine: a server-side ambassador publishes redis on the bridge
// gateway (this host's own bridge address, so nothing outside sees it) and
// a client-side ambassador is configured only by an environment variable
// pointing at that published port.
func TestTwoHosts(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	redis := startRedis(t, ctx)
	gw := redis.Gateway
	require.True(t, gw.Is4(), "bridge gateway %v", gw)
	server := startAmbassador(t, ctx, harness.Spec{
		Name:    "server-ambassador",
		Links:   []string{link(redis, "redis")},
		Publish: map[uint16]netip.Addr{6379: gw},
	}, 6379)

	target, err := eng.HostPort(ctx, server.ID, 6379)
	if err == nil {
		err = harness.WaitTCP(ctx, target.String())
	}
	if err != nil {
		// Engines without the userland proxy may not hairpin from a
		// container to the gateway; the container address still proves
		// the env-only client side.
		t.Logf("publishing on the bridge gateway does not work here (%v); using the server ambassador's container address", err)
		target = netip.AddrPortFrom(server.IP, 6379)
	}
	t.Logf("server-side ambassador published at %s", target)

	client := startAmbassador(t, ctx, harness.Spec{
		Name:   "client-ambassador",
		Env:    []string{"REDIS_PORT_6379_TCP=tcp://" + target.String()},
		Expose: []uint16{6379},
	}, 6379)

	assert.Equal(t, "PONG", redisCLI(t, ctx, client, "ping"))
}

// TestManyConcurrentClients holds 200 connections open through one
// ambassador at the same time, checks that redis sees them all as separate
// clients, then has each do its own SET and GET.
func TestManyConcurrentClients(t *testing.T) {
	t.Parallel()
	const clients = 200
	ctx := setup(t)
	redis := startRedis(t, ctx)
	amb := startAmbassador(t, ctx, harness.Spec{Links: []string{link(redis, "redis")}}, 6379)

	var (
		connected sync.WaitGroup // every client has connected and PINGed
		release   = make(chan struct{})
		done      sync.WaitGroup
		errs      = make(chan error, clients)
	)
	connected.Add(clients)
	done.Add(clients)
	for i := range clients {
		go func() {
			defer done.Done()
			errs <- concurrentClient(ctx, addr(amb, 6379), i, &connected, release)
		}()
	}
	connected.Wait()

	// All 200 are open now: redis must count 200 clients besides this one.
	info, err := dialRESP(ctx, addr(redis, 6379))
	require.NoError(t, err)
	defer info.Close()
	out, err := info.do("INFO", "clients")
	require.NoError(t, err)
	m := regexp.MustCompile(`connected_clients:(\d+)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	n, _ := strconv.Atoi(m[1])
	assert.GreaterOrEqual(t, n, clients+1, "redis connected_clients while all ambassador clients are open")

	close(release)
	done.Wait()
	close(errs)
	failures := 0
	for err := range errs {
		if err != nil {
			failures++
			if failures <= 5 {
				t.Error(err)
			}
		}
	}
	assert.Equal(t, 0, failures, "failed clients out of %d", clients)
}

// concurrentClient connects and PINGs, reports that on connected, waits
// for release, then SETs and GETs its own key. It always calls
// connected.Done exactly once.
func concurrentClient(ctx context.Context, addr string, i int, connected *sync.WaitGroup, release <-chan struct{}) error {
	signalled := false
	defer func() {
		if !signalled {
			connected.Done()
		}
	}()
	rc, err := dialRESP(ctx, addr)
	if err != nil {
		return fmt.Errorf("client %d: %w", i, err)
	}
	defer rc.Close()
	if got, err := rc.do("PING"); err != nil || got != "PONG" {
		return fmt.Errorf("client %d: PING = %q, %v", i, got, err)
	}
	signalled = true
	connected.Done()
	select {
	case <-release:
	case <-ctx.Done():
		return ctx.Err()
	}
	key, val := fmt.Sprintf("client-%d", i), fmt.Sprintf("value-%d", i)
	if got, err := rc.do("SET", key, val); err != nil || got != "OK" {
		return fmt.Errorf("client %d: SET = %q, %v", i, got, err)
	}
	if got, err := rc.do("GET", key); err != nil || got != val {
		return fmt.Errorf("client %d: GET = %q, %v; want %q", i, got, err, val)
	}
	return nil
}

// TestExplicitRoutes covers the two ways to configure routes without
// links: the --route flag and $AMBASSADORD_ROUTES.
func TestExplicitRoutes(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	redis := startRedis(t, ctx)
	backend := redis.IP.String() + ":6379"

	tests := []struct {
		name string
		spec harness.Spec
		port uint16
	}{
		{"flag", harness.Spec{Cmd: []string{"--route", "7001:" + backend}}, 7001},
		{"env", harness.Spec{Env: []string{"AMBASSADORD_ROUTES=7002:" + backend + " 7003:" + backend}}, 7003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Name = "ambassador-" + tt.name
			amb := startAmbassador(t, ctx, tt.spec, tt.port)
			assert.NoError(t, pingRESP(ctx, addr(amb, tt.port)))
		})
	}
}
