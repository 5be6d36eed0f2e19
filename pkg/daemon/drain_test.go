package daemon

import (
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ambassadord/ambassadord/internal/nettest"
	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/resolver"
	"github.com/ambassadord/ambassadord/pkg/source"
)

// TestDrain: after a rewire, Options.Drain closes the connections still
// on the previous backend once it is over, and says so, counting them;
// the connections on the new backend are untouched. A rewire by hand with
// a drain of its own uses it instead, shorter or longer; without any
// drain the previous backend's connections are kept.
func TestDrain(t *testing.T) {
	const drain = 300 * time.Millisecond
	for _, tt := range []struct {
		name       string
		option     time.Duration // Options.Drain (--drain)
		byHand     bool          // rewire by hand, else by an engine event
		request    time.Duration // the rewire's own drain (rewire --drain)
		wantClosed time.Duration // when the previous backend's connection is closed; 0: it is kept
	}{
		{name: "by an event", option: drain, wantClosed: drain},
		{name: "by hand", option: drain, byHand: true, wantClosed: drain},
		{name: "by hand with its own drain", byHand: true, request: drain, wantClosed: drain},
		{name: "by hand with a shorter drain than the option", option: time.Hour, byHand: true, request: drain, wantClosed: drain},
		{name: "by hand with a longer drain than the option", option: drain, byHand: true, request: time.Hour},
		{name: "no drain", byHand: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			oldAddr, newAddr := echoBackend(t, "old"), echoBackend(t, "new")
			listen := nettest.FreePort(t)
			route, addr := strconv.Itoa(listen), "127.0.0.1:"+strconv.Itoa(listen)
			core, logs := observer.New(zapcore.InfoLevel)
			opts := testOptions(t, route+":svc:1")
			opts.Drain = tt.option
			opts.Logger = zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
				return zapcore.NewTee(c, core)
			})))
			src := opts.Sources[0].(*fakeSource)
			d, _ := runDaemon(t, opts)

			claim := func(prio string) map[string]string {
				return map[string]string{resolver.LabelTarget: "svc", resolver.LabelPriority: prio}
			}
			old := loopbackContainer("old", nettest.Port(t, oldAddr), claim("10"))
			next := loopbackContainer("new", nettest.Port(t, newAddr), claim("0"))
			src.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{old, next}}})
			requireBackends(t, d, route, old.ID)
			previous, name := dialBackend(t, addr)
			require.Equal(t, "old", name)

			start := time.Now()
			if tt.byHand {
				reply, err := d.Rewire(t.Context(), api.RewireRequest{Key: route, Target: newAddr, Drain: tt.request})
				require.NoError(t, err)
				require.Empty(t, reply.Error)
			} else {
				// The previous backend loses its claim; it still runs.
				old.Labels = map[string]string{resolver.LabelPort: old.Labels[resolver.LabelPort]}
				src.publish(t, source.Update{Connected: true, Snapshot: &source.Snapshot{Containers: []source.Container{old, next}}})
				requireBackends(t, d, route, next.ID)
			}
			current, name := dialBackend(t, addr)
			require.Equal(t, "new", name)

			if tt.wantClosed == 0 {
				// Kept: still open well past the drain it was not given.
				require.NoError(t, previous.SetReadDeadline(time.Now().Add(3*drain)))
				_, err := previous.Read(make([]byte, 1))
				require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "the previous backend's connection ended: %v", err)
				requireEcho(t, previous, "the previous backend's connection")
				requireEcho(t, current, "the new backend's connection")
				assert.Empty(t, logs.FilterMessageSnippet("drain over").All())
				return
			}
			nettest.RequireClosed(t, previous, "the previous backend's connection at the end of the drain")
			took := time.Since(start)
			assert.GreaterOrEqual(t, took, tt.wantClosed, "closed before the drain was over")
			t.Logf("closed after %s", took.Round(time.Millisecond))
			requireEcho(t, current, "the new backend's connection")
			require.Eventually(t, func() bool { return logs.FilterMessageSnippet("drain over").Len() > 0 }, 5*time.Second, time.Millisecond)
			lines := logs.FilterMessageSnippet("drain over").All()
			require.Len(t, lines, 1)
			assert.Equal(t, "drain over; closed connections to previous backends", lines[0].Message)
			assert.Equal(t, map[string]any{"route": route, "closed": int64(1)}, lines[0].ContextMap())
		})
	}
}
