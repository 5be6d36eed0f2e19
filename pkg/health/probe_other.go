//go:build !linux

package health

import "context"

// probeRaw leaves every check to the goroutine path: the monitor's own
// connects are Linux's (probe_linux.go).
func probeRaw(_ context.Context, batch []*checker, errs []error) (rest []int) {
	for i := range batch {
		rest = append(rest, i)
	}
	return rest
}
