package ambassadord_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mod = "github.com/ambassadord/ambassadord/"

// engineAPIs are the import paths of container engines' client libraries:
// only a source may use them.
var engineAPIs = []string{"github.com/moby/", "github.com/docker/"}

// TestImportDirection guards the layering: imports flow sources →
// resolver → controller → proxy, every layer may use the leaf pkg/source,
// which uses nothing of the module, and only a source knows an engine's
// API. It checks transitive imports, so a helper package cannot smuggle
// anything in.
func TestImportDirection(t *testing.T) {
	for _, tt := range []struct {
		pkg       string
		allowed   []string // of the module, besides pkg itself
		forbidden []string // prefixes
	}{
		// The leaf and the data path use nothing of the module.
		{pkg: "pkg/source", forbidden: append([]string{mod}, engineAPIs...)},
		{pkg: "pkg/proxy", forbidden: append([]string{mod}, engineAPIs...)},
		// The resolver is pure policy on the leaf's values.
		{pkg: "pkg/resolver", allowed: []string{mod + "pkg/source"}, forbidden: append([]string{mod}, engineAPIs...)},
		// A source publishes the leaf's values, and decides nothing.
		{pkg: "pkg/watcher", allowed: []string{mod + "pkg/source"}, forbidden: []string{mod}},
	} {
		t.Run(tt.pkg, func(t *testing.T) {
			for _, dep := range deps(t, "./"+tt.pkg) {
				if dep == mod+tt.pkg || slices.Contains(tt.allowed, dep) {
					continue
				}
				for _, bad := range tt.forbidden {
					assert.False(t, strings.HasPrefix(dep, bad), "%s imports %s", tt.pkg, dep)
				}
			}
		})
	}
}

// deps lists pkg and every package it imports, transitively.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := strings.Fields(string(out))
	require.NotEmpty(t, deps)
	return deps
}

// TestEngineTypesStayInSources checks that only the Docker source,
// pkg/watcher, imports the engine's client: everything else sees
// pkg/source's plain values.
func TestEngineTypesStayInSources(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "./cmd/...", "./pkg/...").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		if strings.HasSuffix(pkg, "/pkg/watcher") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			for _, api := range engineAPIs {
				assert.False(t, strings.HasPrefix(imp, api), "%s imports %s", pkg, imp)
			}
		}
	}
}
