//go:build e2e

package e2e

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// TestMalformedVariable: an ambassador whose link variable has no host
// must refuse to start and say which variable is wrong.
func TestMalformedVariable(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	amb := start(t, ctx, harness.Spec{
		Name:  "ambassador",
		Image: ambassadorImage,
		Env:   []string{"REDIS_PORT_6379_TCP=tcp://:6379"},
	})
	code, err := eng.Wait(ctx, amb.ID)
	require.NoError(t, err)
	stdout, stderr, err := eng.Logs(ctx, amb.ID)
	require.NoError(t, err)
	t.Logf("exit %d; output:\n%s%s", code, stdout, stderr)
	assert.NotEqual(t, int64(0), code, "exit code")
	assert.Contains(t, stdout+stderr, "REDIS_PORT_6379_TCP", "the log names the bad variable")
}

// TestLinkForwardedVariableIgnored: legacy links also copy the linked
// container's own environment as <ALIAS>_ENV_<NAME>. A variable that merely
// looks like a link there (REDIS_ENV_EVIL_PORT_7777_TCP) is the linked
// container's data, not configuration, and must not open a listener.
func TestLinkForwardedVariableIgnored(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	redis := startRedis(t, ctx, "EVIL_PORT_7777_TCP=tcp://127.0.0.1:1")

	// Precondition: the same link really injects the variable. (Link
	// variables are added at start and do not show in inspect's Config.Env.)
	env := runToExit(t, ctx, harness.Spec{
		Name:  "env-probe",
		Image: dataImage,
		Links: []string{link(redis, "redis")},
		Cmd:   []string{"-printenv"},
	})
	require.Contains(t, strings.Split(env, "\n"), "REDIS_ENV_EVIL_PORT_7777_TCP=tcp://127.0.0.1:1")

	amb := startAmbassador(t, ctx, harness.Spec{Links: []string{link(redis, "redis")}}, 6379)

	assert.NoError(t, pingRESP(ctx, addr(amb, 6379)), "the real link works")
	c, err := net.DialTimeout("tcp", addr(amb, 7777), 5*time.Second)
	if err == nil {
		c.Close()
	}
	assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "connect to :7777 must be refused, got %v", err)
}
