package ambassadord_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImportDirection guards the layering: imports flow watcher → resolver →
// proxy, and only the watcher may know Docker. It checks transitive imports,
// so a helper package cannot smuggle Docker types in.
func TestImportDirection(t *testing.T) {
	const mod = "github.com/ambassadord/ambassadord/"
	docker := []string{"github.com/moby/", "github.com/docker/"}
	for _, tt := range []struct {
		pkg       string
		forbidden []string
	}{
		{"pkg/proxy", append([]string{mod + "pkg/resolver", mod + "pkg/watcher", mod + "cmd/"}, docker...)},
		{"pkg/resolver", append([]string{mod + "pkg/watcher", mod + "cmd/"}, docker...)},
		{"pkg/watcher", []string{mod + "cmd/"}},
	} {
		t.Run(tt.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "./"+tt.pkg).CombinedOutput()
			require.NoError(t, err, "%s", out)
			deps := strings.Fields(string(out))
			require.NotEmpty(t, deps)
			for _, dep := range deps {
				for _, bad := range tt.forbidden {
					assert.False(t, strings.HasPrefix(dep, bad), "%s imports %s", tt.pkg, dep)
				}
			}
		})
	}
}

// TestDockerTypesStayInWatcher checks that only pkg/watcher imports the
// Docker client directly: the command wires the watcher without touching
// Docker API types.
func TestDockerTypesStayInWatcher(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "./cmd/...", "./pkg/...").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		if strings.HasSuffix(pkg, "/pkg/watcher") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			assert.False(t, strings.HasPrefix(imp, "github.com/moby/") || strings.HasPrefix(imp, "github.com/docker/"),
				"%s imports %s", pkg, imp)
		}
	}
}
