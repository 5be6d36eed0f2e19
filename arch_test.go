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
// API. The controller (pkg/daemon) gets its sources through
// source.Source, never a source's package; the admin endpoint and the
// metrics sit beside it behind interfaces they or it declare, and import
// neither it nor each other; the admin API's documents (pkg/admin/api)
// are the plain values the controller, the endpoint and the CLI share;
// pkg/tlsconf, the TLS material, is a leaf the command, the metrics and
// the watcher (its PEM parsing) use (the proxy sees only crypto/tls's configurations);
// pkg/health, the active health checks, runs below the controller. It checks transitive imports, so a helper package cannot smuggle
// anything in. Test files are not checked: a test may wire packages
// together.
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
		{pkg: "pkg/watcher", allowed: []string{mod + "pkg/source", mod + "pkg/tlsconf"}, forbidden: []string{mod}},
		// The controller: the leaf, the resolver, the proxy, and the admin
		// API's documents it publishes; no source, no engine, and neither
		// the admin endpoint nor the metrics (its Metrics interface).
		{pkg: "pkg/daemon", allowed: []string{mod + "pkg/source", mod + "pkg/resolver", mod + "pkg/proxy", mod + "pkg/admin/api", mod + "pkg/health"},
			forbidden: append([]string{mod}, engineAPIs...)},
		// The health checkers, below the controller: the leaf's Check and
		// the network, nothing of the proxy, nor of any engine.
		{pkg: "pkg/health", allowed: []string{mod + "pkg/source"}, forbidden: append([]string{mod}, engineAPIs...)},
		// The admin API's documents: plain values (the resolver's
		// Candidate among them).
		{pkg: "pkg/admin/api", allowed: []string{mod + "pkg/resolver", mod + "pkg/source"}, forbidden: append([]string{mod}, engineAPIs...)},
		// The admin endpoint reaches the controller through its own
		// Controller interface, and metrics through an http.Handler.
		{pkg: "pkg/admin", allowed: []string{mod + "pkg/admin/api", mod + "pkg/resolver", mod + "pkg/source"},
			forbidden: append([]string{mod}, engineAPIs...)},
		// The metrics implement the proxy's Observer and read sources'
		// Stats; the controller's sink interface is its own.
		{pkg: "pkg/metrics", allowed: []string{mod + "pkg/proxy", mod + "pkg/source", mod + "pkg/tlsconf"}, forbidden: append([]string{mod}, engineAPIs...)},
		{pkg: "pkg/tlsconf", forbidden: append([]string{mod}, engineAPIs...)},
		{pkg: "pkg/metrics/metricstest", forbidden: append([]string{mod}, engineAPIs...)},
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

// TestOnlyCommandsImportTheController: the controller is wired by
// commands (package main: cmd/ambassadord, and the tools that run a
// controller of their own, such as a demo or a benchmark), never imported
// by a library package, so that nothing below it can reach up into it.
func TestOnlyCommandsImportTheController(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{.Name}}: {{join .Imports \" \"}}", "./...").CombinedOutput()
	require.NoError(t, err, "%s", out)
	importers := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		if !slices.Contains(strings.Fields(imports), mod+"pkg/daemon") {
			continue
		}
		importers++
		path, name, _ := strings.Cut(pkg, " ")
		assert.Equal(t, "main", name, "%s imports the controller, pkg/daemon: only commands may", path)
	}
	assert.Positive(t, importers, "cmd/ambassadord imports the controller")
}
