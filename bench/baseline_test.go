package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBuildBaseline builds the ambassadord of an older commit of a
// repository whose working tree has moved on, and of a revision that does
// not exist.
func TestBuildBaseline(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
		return strings.TrimSpace(string(out))
	}
	write := func(name, text string) {
		t.Helper()
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(repo, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(repo, name), []byte(text), 0o644))
	}
	program := func(says string) string {
		return "package main\n\nimport \"fmt\"\n\nvar version, commit string\n\nfunc main() { fmt.Println(\"" + says + "\", version, commit) }\n"
	}
	git("init", "-q")
	write("go.mod", "module example.com/amb\n\ngo 1.22\n")
	write("cmd/ambassadord/main.go", program("old"))
	git("add", ".")
	git("commit", "-q", "-m", "old")
	old := git("rev-parse", "--short", "HEAD")
	write("cmd/ambassadord/main.go", program("new"))
	git("commit", "-q", "-am", "new")
	write("cmd/ambassadord/main.go", "this does not compile")

	dir := t.TempDir()
	bin, what, err := buildBaseline(t.Context(), repo, "HEAD~1", dir)
	require.NoError(t, err)
	assert.Equal(t, "bin/ambassadord of "+old+" (HEAD~1)", what)
	out, err := exec.Command(bin).Output()
	require.NoError(t, err)
	assert.Equal(t, "old baseline-"+old+" "+old+"\n", string(out), "the old commit's program, stamped")

	_, _, err = buildBaseline(t.Context(), repo, "no-such-revision", dir)
	assert.ErrorContains(t, err, "no-such-revision")
}
