package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// override is one rewire made by hand with `ambassadord rewire`: the route
// (by name) or the target named Key is served by Target instead.
type override struct {
	Key    string    `json:"key"`
	Target string    `json:"target"`
	Since  time.Time `json:"since"`
	// Drain is how long connections on the previous backends were given
	// before being closed; zero keeps them.
	Drain duration `json:"drain,omitempty"`
}

// duration is a time.Duration that reads and writes as "30s" in JSON.
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

// stateFile is the format of --state-file: the overrides, so that they
// survive a restart of the ambassador. Without --state-file they live in
// memory only: they survive engine reconnects, not restarts.
type stateFile struct {
	Version   int        `json:"version"`
	Overrides []override `json:"overrides"`
}

const stateVersion = 1

// loadState reads the overrides from path; a missing file means none.
func loadState(path string) ([]override, error) {
	if path == "" {
		return nil, nil
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
	return st.Overrides, nil
}

// saveState writes the overrides to path atomically: a crash leaves the old
// file or the new one, never half of one.
func saveState(path string, overrides []override) error {
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
	return nil
}
