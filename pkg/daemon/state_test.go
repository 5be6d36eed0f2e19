package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
)

// TestLoadState: at start-up the state file's directory must exist and
// take a file, and every override read back must be one rewire would
// accept; an error names the file (and the entry).
func TestLoadState(t *testing.T) {
	const good = `{"version": 1, "overrides": [{"key": "6379", "target": "cache", "since": "2026-01-01T00:00:00Z"},
		{"key": "db", "target": "10.0.0.7:5432", "since": "2026-01-01T00:00:00Z", "drain": "30s"}]}`
	for _, tt := range []struct {
		name    string
		path    func(t *testing.T) string // the state file
		content string                    // written there when not empty
		want    []string                  // override keys
		errHas  []string
	}{
		{name: "none", path: func(t *testing.T) string { return "" }},
		{name: "no file yet", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "state.json") }},
		{name: "overrides", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "state.json") },
			content: good, want: []string{"6379", "db"}},
		{name: "a missing directory", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nosuch", "state.json") },
			errHas: []string{"nosuch does not exist", "mount a volume"}},
		{name: "a file for a directory", path: func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "file")
			require.NoError(t, os.WriteFile(f, nil, 0o600))
			return filepath.Join(f, "state.json")
		}, errHas: []string{"is not a directory"}},
		{name: "a read-only directory", path: readOnlyStateFile,
			errHas: []string{"cannot write in", "rewires could not be saved"}},
		{name: "a target rewire refuses", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "state.json") },
			content: `{"version": 1, "overrides": [{"key": "6379", "target": "cache"}, {"key": "80", "target": "bad host"}]}`,
			errHas:  []string{"override 2", `key "80": target "bad host"`, "fix or remove that entry"}},
		{name: "a bad port", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "state.json") },
			content: `{"version": 1, "overrides": [{"key": "6379", "target": "10.0.0.7:99999"}]}`,
			errHas:  []string{"override 1", `target "10.0.0.7:99999"`}},
		{name: "an empty target", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "state.json") },
			content: `{"version": 1, "overrides": [{"key": "6379", "target": ""}]}`,
			errHas:  []string{"override 1", `key "6379": target ""`}},
		{name: "no key", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "state.json") },
			content: `{"version": 1, "overrides": [{"target": "cache"}]}`,
			errHas:  []string{"override 1: no key"}},
		{name: "a key twice", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "state.json") },
			content: `{"version": 1, "overrides": [{"key": "6379", "target": "a"}, {"key": "6379", "target": "b"}]}`,
			errHas:  []string{"override 2", `key "6379" a second time`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t)
			if tt.content != "" {
				require.NoError(t, os.WriteFile(path, []byte(tt.content), 0o600))
			}
			got, err := loadState(path)
			if len(tt.errHas) > 0 {
				require.Error(t, err)
				for _, s := range append(tt.errHas, path) {
					assert.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			var keys []string
			for _, o := range got {
				keys = append(keys, o.Key)
			}
			assert.Equal(t, tt.want, keys)
			if path != "" {
				// The check of the directory leaves nothing behind.
				entries, err := os.ReadDir(filepath.Dir(path))
				require.NoError(t, err)
				for _, e := range entries {
					assert.Equal(t, "state.json", e.Name())
				}
			}
		})
	}
}

// readOnlyStateFile returns a state file in a directory the test cannot
// write in: root writes anywhere a mode allows nothing, but not in /sys.
func readOnlyStateFile(t *testing.T) string {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/sys/kernel"); err != nil {
			t.Skip("needs /sys, which even root cannot write in")
		}
		return "/sys/ambassadord-state.json"
	}
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o500))
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	return filepath.Join(dir, "state.json")
}

// TestSaveStateSyncsDirectory: saveState syncs the directory once the new
// file is in place, and says so when it cannot.
func TestSaveStateSyncsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	var synced []string
	var syncErr error
	old := syncDir
	t.Cleanup(func() { syncDir = old })
	syncDir = func(dir string) error {
		saved, err := loadState(path)
		require.NoError(t, err)
		require.Len(t, saved, 1, "the state file is in place when its directory is synced")
		synced = append(synced, dir)
		return syncErr
	}
	require.NoError(t, saveState(path, []api.Override{{Key: "6379", Target: "cache"}}))
	assert.Equal(t, []string{filepath.Dir(path)}, synced)

	syncErr = errors.New("input/output error")
	assert.ErrorContains(t, saveState(path, []api.Override{{Key: "6379", Target: "cache"}}), "sync state file's directory: input/output error")
}
