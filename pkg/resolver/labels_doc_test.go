package resolver

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDocsListEveryLabel ties the label table of docs/routing.md to the
// label constants: every ambassador.* label this package declares has a
// row (label=VALUE, on whom, what it means), and every row names one of
// them.
func TestDocsListEveryLabel(t *testing.T) {
	declared := labelConstants(t)
	require.Contains(t, declared, LabelTarget, "the constants were found")

	b, err := os.ReadFile("../../docs/routing.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), "\n## Labels\n")
	require.True(t, ok, "docs/routing.md has no \"## Labels\" section")
	section, _, _ = strings.Cut(section, "\n## ")
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `ambassador.") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		require.Len(t, cells, 3, "a label row has 3 cells: %s", line)
		label := strings.Trim(strings.TrimSpace(cells[0]), "`")
		key, value, ok := strings.Cut(label, "=")
		assert.True(t, ok && value != "", "row %q: want `KEY=VALUE`", label)
		assert.True(t, declared[key], "docs/routing.md documents %s, which no constant declares", key)
		assert.NotEmpty(t, strings.TrimSpace(cells[1]), "%s: on whom", key)
		assert.NotEmpty(t, strings.TrimSpace(cells[2]), "%s: meaning", key)
		documented[key] = true
	}
	for key := range declared {
		assert.True(t, documented[key], "docs/routing.md has no row for the label %s", key)
	}
}

// labelConstants returns the values of the constants named Label* in
// labels.go that are ambassadord's own labels (ambassador.*).
func labelConstants(t *testing.T) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "labels.go", nil, 0)
	require.NoError(t, err)
	out := map[string]bool{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Label") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				require.NoError(t, err)
				if strings.HasPrefix(v, "ambassador.") {
					out[v] = true
				}
			}
		}
	}
	return out
}
