//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/dnsload"
	"github.com/ambassadord/ambassadord/internal/harness"
)

// waitAnswer waits until a query for name to addr, from a fresh socket,
// is answered with want.
func waitAnswer(t *testing.T, ctx context.Context, addr, name string, want netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := harness.Poll(ctx, func(ctx context.Context) error {
		got, err := dnsload.Ask(ctx, addr, name, 500*time.Millisecond)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("answered %s", got)
		}
		return nil
	})
	require.NoError(t, err, "wait for %s to answer %s with %s", addr, name, want)
}

// noneOf reports the datagrams, if there are any, as an error.
func noneOf(t *testing.T, ts dnsload.Tries, what string, args ...any) bool {
	t.Helper()
	if len(ts) == 0 {
		return true
	}
	t.Errorf("%d %s:\n%s", len(ts), fmt.Sprintf(what, args...), ts.Describe())
	return false
}

// startDNSLoad starts a query load against addr (dnsload.Start), stopped
// when the test ends if it has not been before.
func startDNSLoad(t *testing.T, addr, name string, cfg dnsload.Config) *dnsload.Load {
	t.Helper()
	l, err := dnsload.Start(addr, name, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { l.Stop() })
	return l
}

// waitAnswered is dnsload.Load.WaitAnswered within readyTimeout.
func waitAnswered(ctx context.Context, l *dnsload.Load, flow int, server netip.Addr, since time.Time, n int) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return l.WaitAnswered(ctx, flow, server, since, n)
}
