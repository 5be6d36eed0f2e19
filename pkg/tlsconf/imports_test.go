package tlsconf

import (
	"go/build"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestImports guards the package's contract: the standard library and
// zap, nothing else. pkg/proxy imports it, and must stay free of Docker
// and of the rest of the module.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	for _, imp := range pkg.Imports {
		first, _, _ := strings.Cut(imp, "/")
		if imp != "go.uber.org/zap" && strings.Contains(first, ".") {
			t.Errorf("tlsconf imports %s", imp)
		}
	}
}
