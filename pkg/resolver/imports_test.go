package resolver

import (
	"go/build"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestImports guards the package's contract: it is pure and knows nothing
// of Docker. The watcher converts Docker types at the edge; this package
// must not reach for the Docker client, the network, the file system, the
// clock, or concurrency primitives.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	forbidden := []string{
		"github.com/docker/", "github.com/moby/",
		"os", "os/", "io/fs", "net/http", "time", "sync", "sync/", "syscall",
		"github.com/ambassadord/ambassadord/pkg/watcher", "github.com/ambassadord/ambassadord/cmd/",
	}
	for _, imp := range pkg.Imports {
		for _, f := range forbidden {
			if imp == f || strings.HasSuffix(f, "/") && strings.HasPrefix(imp, f) {
				t.Errorf("resolver imports %s", imp)
			}
		}
	}
}
