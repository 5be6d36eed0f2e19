//go:build e2e

package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// TestClaimScope: with --claim-scope label:trusted=yes, a container that
// claims the target without the label, at a higher priority, on the same
// network, with the service listening, never receives a connection or a
// byte while a load runs, both when it starts before the load and when it
// starts in the middle of it. The trusted claimer serves everything.
func TestClaimScope(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	n := newNetwork(t, ctx, "net", false)
	svc := fullName(t, "svc")
	claimer := func(name string, labels map[string]string) harness.Spec {
		l := map[string]string{labelTarget: svc}
		for k, v := range labels {
			l[k] = v
		}
		return harness.Spec{Name: name, Networks: []string{n.Name}, Labels: l}
	}
	good := startServer(t, ctx, claimer("good", map[string]string{"trusted": "yes"}), "good")
	early := startServer(t, ctx, claimer("early", map[string]string{labelPriority: "100", "trusted": "no"}), "early")
	amb := startFollower(t, ctx, harness.Spec{
		Networks: []string{n.Name},
		Labels:   map[string]string{labelTarget: svc, labelPorts: strconv.Itoa(dataPort)},
		Cmd:      []string{"--claim-scope", "label:trusted=yes"},
	})
	target := addr(amb, dataPort)
	waitServedBy(t, ctx, target, "good")

	l := startLoad(t, target)
	_, err := l.WaitLanded(ctx, "good", time.Now(), 20)
	require.NoError(t, err)
	late := startServer(t, ctx, claimer("late", map[string]string{labelPriority: "100"}), "late")
	// Long enough after the late claimer started for the ambassador to
	// have seen it (tens of milliseconds) many times over.
	_, err = l.WaitLanded(ctx, "good", time.Now().Add(time.Second), 50)
	require.NoError(t, err)
	res := l.Stop()
	t.Logf("load: %s", res)
	requireNoFailures(t, res)

	for _, c := range []*harness.Container{early, late} {
		st, err := stats(ctx, c)
		require.NoError(t, err)
		assert.Zero(t, st.Conns, "connections %s accepted", c.Name)
		assert.Zero(t, st.Bytes, "bytes %s received", c.Name)
	}
	assert.Len(t, res.On("good"), len(res.Attempts), "every connection reached the trusted claimer")

	// explain says why the others are skipped.
	stdout, stderr, code := dockerExec(t, ctx, amb, "/ambassadord", "explain", strconv.Itoa(dataPort))
	require.Zero(t, code, stderr)
	assert.Contains(t, stdout, "outside the claim scope: no label trusted=yes")
	assert.Contains(t, stdout, good.Name)
}
