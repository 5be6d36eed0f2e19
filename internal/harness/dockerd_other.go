//go:build !linux

package harness

// unmount has nothing to do where a private dockerd cannot run: only
// Linux runs one (dockerdAvailable says so first).
func (d *Dockerd) unmount() error { return nil }

// unmountUnder has nothing to do where no private engine runs.
func unmountUnder(string) error { return nil }
