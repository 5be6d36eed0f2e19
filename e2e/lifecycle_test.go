//go:build e2e

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// maxImageSize is the budget for the ambassador image.
const maxImageSize = 15 << 20

// TestGracefulStop: `docker stop` (SIGTERM) with an established idle
// connection must end the ambassador cleanly within docker's default
// 10 s grace period: exit code 0 and no error in its log.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	redis := startRedis(t, ctx)
	amb := startAmbassador(t, ctx, harness.Spec{Links: []string{link(redis, "redis")}}, 6379)

	idle, err := dialRESP(ctx, addr(amb, 6379))
	require.NoError(t, err)
	defer idle.Close()
	got, err := idle.do("PING")
	require.NoError(t, err)
	require.Equal(t, "PONG", got, "the idle connection is established end to end")

	grace := 10
	stopped := time.Now()
	_, err = eng.Client.ContainerStop(ctx, amb.ID, client.ContainerStopOptions{Timeout: &grace})
	require.NoError(t, err)
	code, err := eng.Wait(ctx, amb.ID)
	require.NoError(t, err)
	t.Logf("stopped in %s", time.Since(stopped).Round(time.Millisecond))
	assert.Equal(t, int64(0), code, "exit code after SIGTERM (137 means docker had to SIGKILL it)")

	stdout, stderr, err := eng.Logs(ctx, amb.ID)
	require.NoError(t, err)
	t.Logf("ambassador log:\n%s%s", stdout, stderr)
	for line := range strings.Lines(stdout + stderr) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var entry struct {
			Level string `json:"level"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil {
			assert.Failf(t, "log line is not JSON", "%q", line)
			continue
		}
		assert.NotContains(t, []string{"error", "dpanic", "panic", "fatal"}, entry.Level, "log line %s", strings.TrimSpace(line))
	}
}

// TestImage checks the image as users get it: label, size, healthcheck,
// version stamp.
func TestImage(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	img, err := eng.Client.ImageInspect(ctx, ambassadorImage)
	require.NoError(t, err)
	require.NotNil(t, img.Config)

	assert.Equal(t, "ambassador", img.Config.Labels["ambassador.role"])
	assert.Equal(t, version, img.Config.Labels["org.opencontainers.image.version"])
	assert.Equal(t, []string{"/ambassadord"}, img.Config.Entrypoint)
	assert.Less(t, img.Size, int64(maxImageSize), "image size in bytes")
	t.Logf("image size %.1f MiB", float64(img.Size)/(1<<20))
	require.NotNil(t, img.Config.Healthcheck)
	assert.Equal(t, []string{"CMD", "/ambassadord", "healthcheck"}, img.Config.Healthcheck.Test)

	t.Run("version", func(t *testing.T) {
		t.Parallel()
		// A context of its own: parallel subtests wait for a free slot,
		// and the parent's deadline would run meanwhile.
		ctx := setup(t)
		out := runToExit(t, ctx, harness.Spec{Name: "version", Image: ambassadorImage, Cmd: []string{"version"}})
		assert.Contains(t, out, version)
	})
	// HEALTHCHECK runs `ambassadord healthcheck` without the daemon's
	// arguments, so a route given only by --route must be found too.
	for _, tt := range []struct {
		name string
		spec func(redis *harness.Container) harness.Spec
	}{
		{"healthy-link", func(redis *harness.Container) harness.Spec {
			return harness.Spec{Links: []string{link(redis, "redis")}}
		}},
		{"healthy-route-flag", func(redis *harness.Container) harness.Spec {
			return harness.Spec{Cmd: []string{"--route", "6379:" + addr(redis, 6379)}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A context of its own: parallel subtests wait for a free slot,
			// and the parent's deadline would run meanwhile.
			ctx := setup(t)
			redis := startRedis(t, ctx)
			amb := startAmbassador(t, ctx, tt.spec(redis), 6379)
			start := time.Now()
			require.NoError(t, eng.WaitHealthy(ctx, amb.ID))
			t.Logf("healthy after %s", time.Since(start).Round(time.Millisecond))
		})
	}
}
