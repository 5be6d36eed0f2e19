package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ambassadord/ambassadord/pkg/admin/api"
	"github.com/ambassadord/ambassadord/pkg/resolver"
)

// stateFile is the format of the state file (--state-file): the
// overrides, so that they survive a restart of the ambassador. Without
// one they live in memory only: they survive engine reconnects, not
// restarts.
type stateFile struct {
	Version   int            `json:"version"`
	Overrides []api.Override `json:"overrides"`
}

const stateVersion = 1

// loadState checks that the directory of path can take the state file,
// and reads the overrides from path; a missing file means none. A
// directory that is missing or read-only is a start-up error: otherwise
// every rewire would seem to succeed and be lost at the next restart. An
// override the file holds is checked as rewire checks a new one: a bad
// entry is an error naming it, not a route silently sent nowhere.
func loadState(path string) ([]api.Override, error) {
	if path == "" {
		return nil, nil
	}
	if err := checkStateDir(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("read state file %s: version %d, want %d", path, st.Version, stateVersion)
	}
	seen := map[string]bool{}
	for i, o := range st.Overrides {
		var err error
		switch {
		case o.Key == "":
			err = errors.New("no key (a route's listen port or a target name)")
		case seen[o.Key]:
			err = fmt.Errorf("key %q a second time", o.Key)
		default:
			if perr := resolver.ParseOverride(o.Target); perr != nil {
				err = fmt.Errorf("key %q: target %q: %w", o.Key, o.Target, perr)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("read state file %s: override %d: %w (fix or remove that entry; "+
				"removing the file drops every rewire)", path, i+1, err)
		}
		seen[o.Key] = true
	}
	return st.Overrides, nil
}

// checkStateDir proves that the state file's directory exists and takes a
// new file, by creating and removing one, as saveState will.
func checkStateDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check --state-file %s: directory %s does not exist: create it, or mount a volume there", path, dir)
	}
	if err != nil {
		return fmt.Errorf("check --state-file %s: %w", path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("check --state-file %s: %s is not a directory", path, dir)
	}
	f, err := os.CreateTemp(dir, ".ambassadord-state-check-*")
	if err != nil {
		return fmt.Errorf("check --state-file %s: cannot write in %s (rewires could not be saved): %w; "+
			"make it writable by uid %d, or mount a writable volume there", path, dir, err, os.Geteuid())
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return fmt.Errorf("check --state-file %s: %w", path, err)
	}
	return nil
}

// syncDir flushes a directory's entries to disk; a variable so that a test
// can see saveState call it.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// saveState writes the overrides to path atomically: a crash leaves the old
// file or the new one, never half of one. The directory is synced after
// the rename, or a power loss could still lose the rename itself.
func saveState(path string, overrides []api.Override) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(stateFile{Version: stateVersion, Overrides: overrides}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ambassadord-state-*")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("sync state file's directory: %w", err)
	}
	return nil
}
