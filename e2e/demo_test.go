//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/internal/harness"
)

// TestDemo runs `make demo`'s program, the README's first command, end to
// end, so that it cannot rot: the classic link, then the dynamic
// ambassador rewired by a label claim and by the rewire command while a
// consumer keeps running.
func TestDemo(t *testing.T) {
	t.Parallel()
	ctx := setup(t)
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("the demo runs `docker exec`, and the docker CLI is not installed")
	}
	root, err := harness.RepoRoot(ctx)
	require.NoError(t, err)
	cmd := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), "run", "./e2e/cmd/demo")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "demo output:\n%s", out)
	t.Logf("demo output:\n%s", out)

	text := string(out)
	assert.Contains(t, text, "\nPONG\n", "the classic consumer reached redis")
	assert.Contains(t, text, "hello through the ambassador")
	// The consumer's answers move a → b (claim) → a (rewire) → b (reset).
	var answers []string
	for line := range strings.Lines(text) {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "consumer: answered by "); ok {
			if len(answers) == 0 || answers[len(answers)-1] != name {
				answers = append(answers, name)
			}
		}
	}
	assert.Equal(t, []string{"redis-a", "redis-b", "redis-a", "redis-b"}, answers)
	assert.Contains(t, text, "rewired to ", "status shows the override")
}
